//! The MQTT data representations (section 1.5 of both specifications): a bounds-checked
//! reader over one packet's body and the matching writers. Every read failure is a
//! Malformed Packet naming the packet it happened in.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use bytestring::ByteString;

use super::error::CodecError;
use super::packet::PacketKind;

/// Largest value a Variable Byte Integer can carry (four bytes of seven bits).
pub(crate) const VARINT_MAX: u32 = 268_435_455;

/// Result of parsing a Variable Byte Integer from a buffer that may be incomplete.
pub(crate) enum Varint {
    /// The value and how many bytes encoded it.
    Complete(u32, usize),
    /// The buffer ended before the last byte of the integer.
    Incomplete,
}

/// Parses a Variable Byte Integer at the start of `bytes`, rejecting a fifth byte and
/// non-minimal encodings ([MQTT-1.5.5-1]).
#[inline]
pub(crate) fn parse_varint(bytes: &[u8], kind: PacketKind, what: &str) -> Result<Varint, CodecError> {
    let mut value: u32 = 0;
    for (index, &byte) in bytes.iter().enumerate().take(4) {
        value |= u32::from(byte & 0x7F) << (7 * index);
        if byte & 0x80 == 0 {
            if index > 0 && byte == 0 {
                return Err(CodecError::malformed(kind, format!("{what} is not minimally encoded")));
            }
            return Ok(Varint::Complete(value, index + 1));
        }
    }
    if bytes.len() >= 4 {
        Err(CodecError::malformed(kind, format!("{what} is longer than four bytes")))
    } else {
        Ok(Varint::Incomplete)
    }
}

/// Number of bytes `value` takes as a Variable Byte Integer.
#[inline]
pub(crate) fn varint_len(value: u32) -> usize {
    match value {
        0..=127 => 1,
        128..=16_383 => 2,
        16_384..=2_097_151 => 3,
        _ => 4,
    }
}

/// Writes `value` (at most [`VARINT_MAX`], which callers check) as a Variable Byte Integer.
#[inline]
pub(crate) fn put_varint(buf: &mut BytesMut, mut value: u32) {
    debug_assert!(value <= VARINT_MAX, "varint {value} out of range");
    loop {
        let mut byte = (value & 0x7F) as u8;
        value >>= 7;
        if value > 0 {
            byte |= 0x80;
        }
        buf.put_u8(byte);
        if value == 0 {
            return;
        }
    }
}

/// Writes a length-prefixed UTF-8 string; the caller has checked that it fits in 65,535 bytes.
#[inline]
pub(crate) fn put_string(buf: &mut BytesMut, value: &str) {
    put_binary(buf, value.as_bytes());
}

/// Writes length-prefixed binary data; the caller has checked that it fits in 65,535 bytes.
#[inline]
pub(crate) fn put_binary(buf: &mut BytesMut, value: &[u8]) {
    debug_assert!(value.len() <= usize::from(u16::MAX));
    buf.put_u16(value.len() as u16);
    buf.put_slice(value);
}

/// A cursor over one packet's body. Strings and binary data come out as slices of the
/// underlying [`Bytes`], so decoding copies no payload.
pub(crate) struct Reader {
    bytes: Bytes,
    position: usize,
    pub(crate) kind: PacketKind,
}

impl Reader {
    #[inline]
    pub(crate) fn new(bytes: Bytes, kind: PacketKind) -> Self {
        Reader { bytes, position: 0, kind }
    }

    #[inline]
    pub(crate) fn remaining(&self) -> usize {
        self.bytes.len() - self.position
    }

    #[inline]
    pub(crate) fn is_empty(&self) -> bool {
        self.remaining() == 0
    }

    fn short(&self, what: &str, needed: usize) -> CodecError {
        CodecError::malformed(
            self.kind,
            format!("{what} needs {needed} bytes but only {} remain in the packet", self.remaining()),
        )
    }

    fn take_slice(&mut self, len: usize, what: &str) -> Result<&[u8], CodecError> {
        if self.remaining() < len {
            return Err(self.short(what, len));
        }
        let start = self.position;
        self.position += len;
        Ok(&self.bytes[start..self.position])
    }

    #[inline]
    pub(crate) fn u8(&mut self, what: &str) -> Result<u8, CodecError> {
        Ok(self.take_slice(1, what)?[0])
    }

    #[inline]
    pub(crate) fn u16(&mut self, what: &str) -> Result<u16, CodecError> {
        let slice = self.take_slice(2, what)?;
        Ok(u16::from_be_bytes([slice[0], slice[1]]))
    }

    #[inline]
    pub(crate) fn u32(&mut self, what: &str) -> Result<u32, CodecError> {
        let slice = self.take_slice(4, what)?;
        Ok(u32::from_be_bytes([slice[0], slice[1], slice[2], slice[3]]))
    }

    #[inline]
    pub(crate) fn varint(&mut self, what: &str) -> Result<u32, CodecError> {
        match parse_varint(&self.bytes[self.position..], self.kind, what)? {
            Varint::Complete(value, len) => {
                self.position += len;
                Ok(value)
            }
            Varint::Incomplete => Err(CodecError::malformed(self.kind, format!("{what} is cut off by the packet end"))),
        }
    }

    /// Takes the next `len` bytes as a zero-copy slice.
    #[inline]
    pub(crate) fn bytes(&mut self, len: usize, what: &str) -> Result<Bytes, CodecError> {
        if self.remaining() < len {
            return Err(self.short(what, len));
        }
        let slice = self.bytes.slice(self.position..self.position + len);
        self.position += len;
        Ok(slice)
    }

    /// Takes everything left (a PUBLISH payload) as a zero-copy slice. The reader hands over
    /// its own reference instead of cloning one, which saves two atomic operations per packet.
    #[inline]
    pub(crate) fn rest(&mut self) -> Bytes {
        let mut rest = std::mem::take(&mut self.bytes);
        rest.advance(self.position);
        self.position = 0;
        rest
    }

    /// Splits off the next `len` bytes as a reader of their own (a property block).
    #[inline]
    pub(crate) fn sub_reader(&mut self, len: usize, what: &str) -> Result<Reader, CodecError> {
        let kind = self.kind;
        Ok(Reader::new(self.bytes(len, what)?, kind))
    }

    /// Binary Data: a two-byte length, then that many bytes.
    #[inline]
    pub(crate) fn binary(&mut self, what: &str) -> Result<Bytes, CodecError> {
        let len = self.u16(what)?;
        self.bytes(usize::from(len), what)
    }

    /// UTF-8 Encoded String: well-formed UTF-8 without U+0000 ([MQTT-1.5.4-1], [MQTT-1.5.4-2]).
    #[inline]
    pub(crate) fn string(&mut self, what: &str) -> Result<ByteString, CodecError> {
        let raw = self.binary(what)?;
        if raw.contains(&0) {
            return Err(CodecError::malformed(self.kind, format!("{what} contains the null character U+0000")));
        }
        ByteString::try_from(raw)
            .map_err(|error| CodecError::malformed(self.kind, format!("{what} is not valid UTF-8: {error}")))
    }
}
