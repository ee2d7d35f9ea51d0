//! A partition's Raft snapshot: the segment files themselves, as one byte stream
//! (docs/format.md, "Snapshots"). openraft sends it in chunks over the InstallSnapshot RPC,
//! reading it from the leader's [`SegmentSnapshot`] by offset, and writes the chunks at
//! their offsets into the follower's, which puts the files in the partition's staging
//! directory for [`strata_log::Log::install_segments`].
//!
//! The stream is a header, then each file's bytes in order:
//!
//! ```text
//! magic "STRSNAP1" | body length u32 | body | (file bytes)...
//! body: end u64 | last term u64 | log start u64 | cleaned up to u64
//!       | has last purged u8 | last purged term u64 | last purged offset u64
//!       | file count u32 | (base offset u64 | length u64) * count | CRC-32 of the above u32
//! ```
//!
//! All integers little-endian. Because the header gives every file's length, any stream
//! offset maps to one file and position: a chunk sent again (openraft retries at the same
//! offset) lands where it did the first time.
//!
//! The file reads and writes happen inside `poll_read`/`poll_write`, on the task that polls
//! them (openraft's snapshot sender, the follower's Raft core): each is at most one chunk
//! (1 MiB, `raft_config`) through the page cache, far cheaper than a hop to a blocking
//! thread per chunk would make it worth.

use std::{
    fs::{self, File},
    io::{self, SeekFrom},
    os::unix::fs::FileExt,
    path::PathBuf,
    pin::Pin,
    task::{Context, Poll},
};

use strata_log::{SnapshotFiles, SnapshotInfo};
use tokio::io::{AsyncRead, AsyncSeek, AsyncWrite, ReadBuf};

const MAGIC: &[u8; 8] = b"STRSNAP1";
/// Magic and body length.
const PREFIX_LEN: usize = 12;
/// The body without its file list: offsets, last purged, file count, CRC.
const BODY_FIXED_LEN: usize = 8 * 4 + 1 + 8 * 2 + 4 + 4;
const FILE_ENTRY_LEN: usize = 16;
/// More segment files than a partition has (at the default 128 MiB, 8 TiB); bounds what a
/// bad header makes a follower buffer and create.
const MAX_FILES: usize = 1 << 16;
/// At most this much of a file is read per `poll_read`.
const MAX_READ: usize = 1 << 20;

/// A snapshot being sent (segment files open for reading) or received (files being written
/// into the staging directory).
#[derive(Debug)]
pub struct SegmentSnapshot {
    inner: Inner,
}

#[derive(Debug)]
enum Inner {
    Send(Sender),
    Receive(Receiver),
}

#[derive(Debug)]
struct Sender {
    header: Vec<u8>,
    /// Each file with where its bytes start in the stream, and how many there are.
    files: Vec<(File, u64, u64)>,
    total: u64,
    position: u64,
}

#[derive(Debug)]
struct Receiver {
    staging: PathBuf,
    header: Vec<u8>,
    parsed: Option<Parsed>,
    position: u64,
}

#[derive(Debug)]
struct Parsed {
    info: SnapshotInfo,
    /// Each staged file with its base offset, where its bytes start in the stream, and how
    /// many there are.
    files: Vec<(u64, File, u64, u64)>,
    total: u64,
}

/// What a received snapshot holds, once every byte arrived.
#[derive(Debug)]
pub(crate) struct Received {
    pub(crate) info: SnapshotInfo,
    /// Whether it carries segment files (a leader with no whole batch to send sends none).
    pub(crate) has_files: bool,
}

fn encode_header(info: &SnapshotInfo, files: &[(u64, u64)]) -> Vec<u8> {
    let mut body = Vec::with_capacity(BODY_FIXED_LEN + files.len() * FILE_ENTRY_LEN);
    for value in [info.end, info.last_term, info.log_start, info.cleaned_up_to] {
        body.extend_from_slice(&value.to_le_bytes());
    }
    let (has_purged, purged_term, purged_offset) = match info.last_purged {
        Some((term, offset)) => (1u8, term, offset),
        None => (0, 0, 0),
    };
    body.push(has_purged);
    body.extend_from_slice(&purged_term.to_le_bytes());
    body.extend_from_slice(&purged_offset.to_le_bytes());
    body.extend_from_slice(&(files.len() as u32).to_le_bytes());
    for &(base, len) in files {
        body.extend_from_slice(&base.to_le_bytes());
        body.extend_from_slice(&len.to_le_bytes());
    }
    let crc = crc32fast::hash(&body);
    body.extend_from_slice(&crc.to_le_bytes());
    let mut header = Vec::with_capacity(PREFIX_LEN + body.len());
    header.extend_from_slice(MAGIC);
    header.extend_from_slice(&(body.len() as u32).to_le_bytes());
    header.extend_from_slice(&body);
    header
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn invalid(what: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("snapshot stream: {}", what.into()))
}

/// The length of the whole header, from its first 12 bytes.
fn header_len(prefix: &[u8]) -> io::Result<usize> {
    if &prefix[..8] != MAGIC {
        return Err(invalid("bad magic"));
    }
    let body_len = u32_at(prefix, 8) as usize;
    if !(BODY_FIXED_LEN..=BODY_FIXED_LEN + MAX_FILES * FILE_ENTRY_LEN).contains(&body_len) {
        return Err(invalid(format!("implausible header length {body_len}")));
    }
    if !(body_len - BODY_FIXED_LEN).is_multiple_of(FILE_ENTRY_LEN) {
        return Err(invalid(format!("header length {body_len} does not fit whole file entries")));
    }
    Ok(PREFIX_LEN + body_len)
}

fn decode_header(header: &[u8]) -> io::Result<(SnapshotInfo, Vec<(u64, u64)>)> {
    let body = &header[PREFIX_LEN..];
    let (content, crc) = body.split_at(body.len() - 4);
    if crc32fast::hash(content) != u32_at(crc, 0) {
        return Err(invalid("header CRC mismatch"));
    }
    let purged = (content[32] == 1).then(|| (u64_at(content, 33), u64_at(content, 41)));
    let info = SnapshotInfo {
        end: u64_at(content, 0),
        last_term: u64_at(content, 8),
        log_start: u64_at(content, 16),
        cleaned_up_to: u64_at(content, 24),
        last_purged: purged,
    };
    let count = u32_at(content, 49) as usize;
    let entries = &content[53..];
    if entries.len() != count * FILE_ENTRY_LEN {
        return Err(invalid(format!("header names {count} files but has room for another number")));
    }
    let files: Vec<(u64, u64)> = entries.chunks(FILE_ENTRY_LEN).map(|e| (u64_at(e, 0), u64_at(e, 8))).collect();
    if files.windows(2).any(|pair| pair[0].0 >= pair[1].0) {
        return Err(invalid("segment base offsets out of order"));
    }
    Ok((info, files))
}

impl SegmentSnapshot {
    /// A snapshot to send: the segment files, streamed from the open handles (which keep them
    /// readable whatever retention does meanwhile).
    pub(crate) fn send(files: SnapshotFiles) -> SegmentSnapshot {
        let listed: Vec<(u64, u64)> = files.files.iter().map(|f| (f.base_offset, f.len)).collect();
        let header = encode_header(&files.info, &listed);
        let mut start = header.len() as u64;
        let mut open = Vec::with_capacity(files.files.len());
        for file in files.files {
            open.push((file.file, start, file.len));
            start += file.len;
        }
        SegmentSnapshot { inner: Inner::Send(Sender { header, files: open, total: start, position: 0 }) }
    }

    /// A snapshot without segment files: the state at an offset only, for a leader that holds
    /// no whole batch up to it. The follower starts an empty log after `info.end - 1`.
    pub(crate) fn send_empty(info: SnapshotInfo) -> SegmentSnapshot {
        let header = encode_header(&info, &[]);
        let total = header.len() as u64;
        SegmentSnapshot { inner: Inner::Send(Sender { header, files: Vec::new(), total, position: 0 }) }
    }

    /// A snapshot to receive into `staging`, which is emptied first.
    pub(crate) fn receive(staging: PathBuf) -> io::Result<SegmentSnapshot> {
        match fs::remove_dir_all(&staging) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        fs::create_dir_all(&staging)?;
        Ok(SegmentSnapshot {
            inner: Inner::Receive(Receiver { staging, header: Vec::new(), parsed: None, position: 0 }),
        })
    }

    /// What a received snapshot holds, with its files synced; an error if it is not a
    /// received snapshot or not every byte of it arrived.
    pub(crate) fn finish_receiving(&self) -> io::Result<Received> {
        let Inner::Receive(receiver) = &self.inner else { return Err(invalid("not a received snapshot")) };
        let Some(parsed) = &receiver.parsed else { return Err(invalid("the header never arrived")) };
        for (base, file, _, len) in &parsed.files {
            let written = file.metadata()?.len();
            if written != *len {
                return Err(invalid(format!("segment {base}: {written} of {len} bytes arrived")));
            }
            file.sync_all()?;
        }
        Ok(Received { info: parsed.info, has_files: !parsed.files.is_empty() })
    }
}

impl Receiver {
    fn write_at(&mut self, mut data: &[u8]) -> io::Result<()> {
        while !data.is_empty() {
            if self.parsed.is_none() {
                // The header arrives first and in order; a resent chunk starts over at 0.
                if self.position < self.header.len() as u64 {
                    self.header.truncate(self.position as usize);
                }
                if self.position != self.header.len() as u64 {
                    return Err(invalid(format!("a write at {} before the header arrived", self.position)));
                }
                let wanted = if self.header.len() < PREFIX_LEN { PREFIX_LEN } else { header_len(&self.header)? };
                let take = (wanted - self.header.len()).min(data.len());
                self.header.extend_from_slice(&data[..take]);
                self.position += take as u64;
                data = &data[take..];
                if self.header.len() >= PREFIX_LEN && self.header.len() == header_len(&self.header)? {
                    self.parse()?;
                }
                continue;
            }
            let parsed = self.parsed.as_ref().expect("parsed above");
            let header_len = self.header.len() as u64;
            if self.position < header_len {
                // The header again: it was parsed already.
                let skip = ((header_len - self.position) as usize).min(data.len());
                self.position += skip as u64;
                data = &data[skip..];
                continue;
            }
            let Some((base, file, start, len)) =
                parsed.files.iter().find(|(_, _, start, len)| (*start..start + len).contains(&self.position))
            else {
                return Err(invalid(format!("a write at {} past the end ({})", self.position, parsed.total)));
            };
            let at = self.position - start;
            let take = ((len - at) as usize).min(data.len());
            file.write_all_at(&data[..take], at)
                .map_err(|e| io::Error::new(e.kind(), format!("writing staged segment {base} of the snapshot: {e}")))?;
            self.position += take as u64;
            data = &data[take..];
        }
        Ok(())
    }

    fn parse(&mut self) -> io::Result<()> {
        let (info, listed) = decode_header(&self.header)?;
        let mut start = self.header.len() as u64;
        let mut files = Vec::with_capacity(listed.len());
        for (base, len) in listed {
            let path = self.staging.join(format!("{base:020}.log"));
            let file = File::create(&path)?;
            files.push((base, file, start, len));
            start += len;
        }
        self.parsed = Some(Parsed { info, files, total: start });
        Ok(())
    }
}

impl Sender {
    fn read_into(&mut self, buf: &mut ReadBuf<'_>) -> io::Result<()> {
        if self.position >= self.total || buf.remaining() == 0 {
            return Ok(());
        }
        let header_len = self.header.len() as u64;
        if self.position < header_len {
            let from = self.position as usize;
            let take = (self.header.len() - from).min(buf.remaining());
            buf.put_slice(&self.header[from..from + take]);
            self.position += take as u64;
            return Ok(());
        }
        let position = self.position;
        let Some((file, start, len)) =
            self.files.iter().find(|(_, start, len)| (*start..start + len).contains(&position))
        else {
            return Ok(());
        };
        let at = position - start;
        let take = ((len - at) as usize).min(buf.remaining()).min(MAX_READ);
        let dst = buf.initialize_unfilled_to(take);
        let read = file.read_at(&mut dst[..take], at)?;
        if read == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "a snapshot segment file is shorter than listed"));
        }
        buf.advance(read);
        self.position += read as u64;
        Ok(())
    }
}

impl AsyncRead for SegmentSnapshot {
    fn poll_read(self: Pin<&mut Self>, _cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().inner {
            Inner::Send(sender) => Poll::Ready(sender.read_into(buf)),
            Inner::Receive(_) => Poll::Ready(Err(invalid("a received snapshot is not read back"))),
        }
    }
}

impl AsyncWrite for SegmentSnapshot {
    fn poll_write(self: Pin<&mut Self>, _cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().inner {
            Inner::Receive(receiver) => Poll::Ready(receiver.write_at(data).map(|()| data.len())),
            Inner::Send(_) => Poll::Ready(Err(invalid("a snapshot being sent is not written"))),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

impl AsyncSeek for SegmentSnapshot {
    fn start_seek(self: Pin<&mut Self>, to: SeekFrom) -> io::Result<()> {
        let this = self.get_mut();
        let (position, total) = match &this.inner {
            Inner::Send(sender) => (sender.position, Some(sender.total)),
            Inner::Receive(receiver) => (receiver.position, receiver.parsed.as_ref().map(|p| p.total)),
        };
        let target = match to {
            SeekFrom::Start(at) => Some(at),
            SeekFrom::Current(delta) => position.checked_add_signed(delta),
            SeekFrom::End(delta) => total.ok_or_else(|| invalid("no end before the header"))?.checked_add_signed(delta),
        };
        let target = target.ok_or_else(|| invalid("a seek before the start"))?;
        match &mut this.inner {
            Inner::Send(sender) => sender.position = target,
            Inner::Receive(receiver) => receiver.position = target,
        }
        Ok(())
    }

    fn poll_complete(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<u64>> {
        Poll::Ready(Ok(match &self.inner {
            Inner::Send(sender) => sender.position,
            Inner::Receive(receiver) => receiver.position,
        }))
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

    use super::*;

    fn info() -> SnapshotInfo {
        SnapshotInfo { end: 300, last_term: 4, log_start: 100, cleaned_up_to: 120, last_purged: Some((2, 99)) }
    }

    #[test]
    fn the_header_round_trips_and_damage_is_refused() {
        let files = [(100, 4096), (180, 10)];
        let header = encode_header(&info(), &files);
        assert_eq!(header_len(&header[..PREFIX_LEN]).unwrap(), header.len());
        assert_eq!(decode_header(&header).unwrap(), (info(), files.to_vec()));
        let mut damaged = header.clone();
        damaged[PREFIX_LEN + 3] ^= 1;
        assert!(decode_header(&damaged).unwrap_err().to_string().contains("CRC"));
        let mut bad_magic = header.clone();
        bad_magic[0] = b'X';
        assert!(header_len(&bad_magic[..PREFIX_LEN]).is_err());
        let mut huge = header;
        huge[8..12].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(header_len(&huge[..PREFIX_LEN]).is_err());
    }

    /// Streams two files through a sender and a receiver in small chunks, one of them sent
    /// twice (a retry), and checks the staged files hold the sent bytes.
    #[tokio::test]
    async fn files_stream_into_the_staging_directory_in_chunks_with_retries() {
        let source = tempfile::tempdir().unwrap();
        let scratch = tempfile::tempdir().unwrap();
        let staging = scratch.path().join("staging");
        let contents = [(100u64, vec![7u8; 5000]), (180, (0..=255u8).cycle().take(3000).collect::<Vec<_>>())];
        let mut files = Vec::new();
        for (base, bytes) in &contents {
            let path = source.path().join(format!("{base}"));
            // One more byte than listed: only the listed prefix travels.
            fs::write(&path, [bytes.as_slice(), &[9]].concat()).unwrap();
            files.push(strata_log::SnapshotFile {
                base_offset: *base,
                file: File::open(&path).unwrap(),
                len: bytes.len() as u64,
            });
        }
        let mut sender = SegmentSnapshot::send(SnapshotFiles { files, info: info() });
        let mut receiver = SegmentSnapshot::receive(staging.clone()).unwrap();
        let end = sender.seek(SeekFrom::End(0)).await.unwrap();
        let mut offset = 0;
        let mut retried = false;
        while offset < end {
            sender.seek(SeekFrom::Start(offset)).await.unwrap();
            let mut chunk = vec![0; 1000];
            let n = sender.read(&mut chunk).await.unwrap();
            assert!(n > 0);
            receiver.seek(SeekFrom::Start(offset)).await.unwrap();
            receiver.write_all(&chunk[..n]).await.unwrap();
            if offset > 2000 && !retried {
                retried = true;
                continue;
            }
            offset += n as u64;
        }
        let received = receiver.finish_receiving().unwrap();
        assert_eq!(received.info, info());
        assert!(received.has_files);
        for (base, bytes) in &contents {
            assert_eq!(&fs::read(staging.join(format!("{base:020}.log"))).unwrap(), bytes);
        }
    }

    #[tokio::test]
    async fn a_snapshot_cut_short_is_refused() {
        let scratch = tempfile::tempdir().unwrap();
        let staging = scratch.path().join("staging");
        let header = encode_header(&info(), &[(100, 50)]);
        let mut receiver = SegmentSnapshot::receive(staging).unwrap();
        receiver.write_all(&header).await.unwrap();
        receiver.write_all(&[1; 20]).await.unwrap();
        let err = receiver.finish_receiving().unwrap_err();
        assert!(err.to_string().contains("20 of 50 bytes"), "{err}");
    }
}
