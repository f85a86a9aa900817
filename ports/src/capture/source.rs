//! The input of a reader, counted: every error names the byte offset where
//! its header, record or block starts. Also the byte-order reads and the
//! length rules both formats apply.

use std::io::{self, Read};

use super::error::{ReadError, ReadErrorKind};
use super::frame::MAX_SNAPLEN;

/// A snap length of 0 or beyond the maximum means "no limit" in practice.
pub(crate) fn effective_snaplen(snaplen: u32) -> u32 {
    if snaplen == 0 || snaplen > MAX_SNAPLEN {
        MAX_SNAPLEN
    } else {
        snaplen
    }
}

/// Refuses records longer than the snap length (`limit`) or than any capture.
pub(crate) fn check_record_len(offset: u64, len: u64, limit: u32) -> Result<(), ReadError> {
    if len > u64::from(MAX_SNAPLEN) {
        return Err(ReadError::new(offset, ReadErrorKind::RecordAbsurd { len }));
    }
    if len > u64::from(limit) {
        return Err(ReadError::new(
            offset,
            ReadErrorKind::RecordTooLong {
                len,
                snaplen: limit,
            },
        ));
    }
    Ok(())
}

pub(crate) fn read_u16(big_endian: bool, b: &[u8]) -> u16 {
    let b = [b[0], b[1]];
    if big_endian {
        u16::from_be_bytes(b)
    } else {
        u16::from_le_bytes(b)
    }
}

pub(crate) fn read_u32(big_endian: bool, b: &[u8]) -> u32 {
    let b = [b[0], b[1], b[2], b[3]];
    if big_endian {
        u32::from_be_bytes(b)
    } else {
        u32::from_le_bytes(b)
    }
}

/// The input with the count of bytes read so far, for error offsets.
#[derive(Debug)]
pub(crate) struct Source<R> {
    inner: R,
    pub(crate) offset: u64,
}

impl<R: Read> Source<R> {
    pub(crate) fn new(inner: R) -> Self {
        Source { inner, offset: 0 }
    }

    /// Reads until `buf` is full or the input ends; returns how many bytes.
    pub(crate) fn fill(&mut self, buf: &mut [u8]) -> Result<usize, ReadError> {
        let mut n = 0;
        while n < buf.len() {
            match self.inner.read(&mut buf[n..]) {
                Ok(0) => break,
                Ok(k) => n += k,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(err) => {
                    return Err(ReadError::new(
                        self.offset + n as u64,
                        ReadErrorKind::Io(err),
                    ));
                }
            }
        }
        self.offset += n as u64;
        Ok(n)
    }

    /// Fills `buf` completely: anything less is a truncated `what` (of
    /// `needed` bytes, of which `before` were read already) at `record`.
    pub(crate) fn fill_exact(
        &mut self,
        buf: &mut [u8],
        record: u64,
        what: &'static str,
        before: u64,
    ) -> Result<(), ReadError> {
        let n = self.fill(buf)?;
        if n < buf.len() {
            return Err(truncated(
                record,
                what,
                before + buf.len() as u64,
                before + n as u64,
            ));
        }
        Ok(())
    }

    /// Skips `len` bytes, like [`Source::fill_exact`] without keeping them.
    pub(crate) fn skip_exact(
        &mut self,
        len: u64,
        record: u64,
        what: &'static str,
        before: u64,
    ) -> Result<(), ReadError> {
        let skipped = io::copy(&mut (&mut self.inner).take(len), &mut io::sink())
            .map_err(|err| ReadError::new(self.offset, ReadErrorKind::Io(err)))?;
        self.offset += skipped;
        if skipped < len {
            return Err(truncated(record, what, before + len, before + skipped));
        }
        Ok(())
    }
}

pub(crate) fn truncated(record: u64, what: &'static str, needed: u64, got: u64) -> ReadError {
    ReadError::new(record, ReadErrorKind::Truncated { what, needed, got })
}
