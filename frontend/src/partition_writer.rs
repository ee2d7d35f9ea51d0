//! The single writer of a partition. Connections hand it records through a bounded channel
//! (a full channel holds the publisher back, so a fast publisher cannot grow memory); it
//! takes everything waiting, appends it as one batch, waits until the batch is durable per
//! the flush policy, and only then tells each publisher its offset.
//!
//! It runs on a dedicated thread because `Log::append` and an fsync are blocking calls.

use std::sync::Arc;
use std::thread;

use strata_log::{Log, Record};
use tokio::sync::{mpsc, oneshot};

/// Most records appended as one batch.
const MAX_BATCH_RECORDS: usize = 4096;
/// A batch stops growing past this many payload bytes.
const MAX_BATCH_BYTES: usize = 4 << 20;

/// The outcome a publisher waits for: the record's offset once durable, or why it is not.
pub type AppendResult = Result<u64, String>;

/// One record to append, and where to report it durable (QoS 1/2 publishers only).
#[derive(Debug)]
pub struct AppendRequest {
    /// The record.
    pub record: Record,
    /// Completed after the record is durable; `None` for QoS 0.
    pub durable: Option<oneshot::Sender<AppendResult>>,
}

/// Starts the writer thread of `log`, fed by a channel of `capacity` requests. The thread
/// ends when every sender is dropped.
pub fn spawn(log: Arc<Log>, capacity: usize, name: String) -> std::io::Result<mpsc::Sender<AppendRequest>> {
    let (tx, rx) = mpsc::channel(capacity.max(1));
    thread::Builder::new().name(name).spawn(move || run(&log, rx))?;
    Ok(tx)
}

fn run(log: &Log, mut rx: mpsc::Receiver<AppendRequest>) {
    let mut records = Vec::new();
    let mut waiting = Vec::new();
    // Blocks only while nothing is waiting: a lone publish is appended at once.
    while let Some(first) = rx.blocking_recv() {
        let mut bytes = 0;
        let mut next = Some(first);
        while let Some(request) = next {
            bytes += request.record.value.len();
            records.push(request.record);
            waiting.push(request.durable);
            next = if records.len() < MAX_BATCH_RECORDS && bytes < MAX_BATCH_BYTES { rx.try_recv().ok() } else { None };
        }
        let outcome = log
            .append(&records, 0)
            .and_then(|info| log.wait_durable_blocking(info.last_offset).map(|()| info.base_offset));
        match outcome {
            Ok(base_offset) => {
                for (i, durable) in waiting.drain(..).enumerate() {
                    if let Some(durable) = durable {
                        let _ = durable.send(Ok(base_offset + i as u64));
                    }
                }
            }
            Err(error) => {
                tracing::error!(partition = %log.dir().display(), %error, "append failed");
                let message = error.to_string();
                for durable in waiting.drain(..).flatten() {
                    let _ = durable.send(Err(message.clone()));
                }
            }
        }
        records.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata_log::LogConfig;

    #[test]
    fn requests_waiting_together_share_one_batch_and_get_their_offsets() {
        let dir = tempfile::tempdir().unwrap();
        let log = Arc::new(Log::open(dir.path(), LogConfig::default()).unwrap());
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let tx = spawn(Arc::clone(&log), 16, "test-writer".into()).unwrap();
        let offsets = runtime.block_on(async {
            let mut receivers = Vec::new();
            for i in 0..11 {
                let (done, rx) = oneshot::channel();
                let durable = if i % 2 == 0 { Some(done) } else { None };
                tx.send(AppendRequest { record: Record::new(1, format!("v{i}")), durable }).await.unwrap();
                receivers.push(rx);
            }
            let mut offsets = Vec::new();
            for rx in receivers.into_iter().step_by(2) {
                offsets.push(rx.await.unwrap().unwrap());
            }
            offsets
        });
        assert_eq!(offsets, vec![0, 2, 4, 6, 8, 10]);
        drop(tx);
        let records = log.read(0, 1 << 20).unwrap().records(0).unwrap();
        assert_eq!(records.len(), 11);
        assert_eq!(&records[3].value[..], b"v3");
    }
}
