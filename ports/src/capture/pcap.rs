//! Classic pcap (libpcap's savefile): a 24-byte file header, then records of
//! a 16-byte header and the frame.
//!
//! **Reading** takes microsecond or nanosecond timestamps in either byte
//! order, and cuts off a frame check sequence the header declares.
//!
//! **Writing** uses the nanosecond magic (`0xa1b23c4d`), this machine's byte
//! order (the reader of a pcap swaps as needed, as libpcap does), a snap
//! length of [`MAX_SNAPLEN`] so 64 KiB frames fit, and nothing taken from the
//! wall clock, so the same frames always give the same bytes. A record stores
//! seconds in 32 bits, so it cannot hold a time after 2106-02-07 06:28:15 UTC
//! ([`CLASSIC_MAX_SECS`](super::frame::CLASSIC_MAX_SECS)): such a time is a
//! [`TimestampTooLate`], never wrapped around to 1970.

use std::io::Read;

use super::error::{ReadError, ReadErrorKind, TimestampTooLate};
use super::frame::{LINKTYPE_ETHERNET, MAX_SNAPLEN, RawFrame};
use super::link;
use super::source::{Source, check_record_len, effective_snaplen, read_u16, read_u32, truncated};

/// Classic pcap, timestamps in microseconds.
pub(crate) const MAGIC_MICROS: u32 = 0xa1b2_c3d4;
/// Classic pcap, timestamps in nanoseconds.
pub(crate) const MAGIC_NANOS: u32 = 0xa1b2_3c4d;

const CLASSIC_HEADER_LEN: usize = 24;
const RECORD_HEADER_LEN: usize = 16;

/// Reading state for a classic pcap file: what its header said.
#[derive(Debug)]
pub(crate) struct ClassicReader {
    pub(crate) big_endian: bool,
    pub(crate) nanos: bool,
    /// Records longer than this are damage.
    limit: u32,
    /// Bytes of frame check sequence at the end of each frame, cut off.
    fcs_len: u32,
    linktype: u32,
}

impl ClassicReader {
    /// Reads the rest of the file header, whose first four bytes (`magic`)
    /// were read already.
    pub(crate) fn read_header<R: Read>(
        source: &mut Source<R>,
        magic: [u8; 4],
    ) -> Result<Self, ReadError> {
        let (big_endian, nanos) = match (u32::from_le_bytes(magic), u32::from_be_bytes(magic)) {
            (MAGIC_MICROS, _) => (false, false),
            (MAGIC_NANOS, _) => (false, true),
            (_, MAGIC_MICROS) => (true, false),
            (_, MAGIC_NANOS) => (true, true),
            _ => {
                return Err(ReadError::new(
                    0,
                    ReadErrorKind::BadMagic(u32::from_be_bytes(magic)),
                ));
            }
        };
        let mut rest = [0u8; CLASSIC_HEADER_LEN - 4];
        source.fill_exact(&mut rest, 0, "pcap file header", 4)?;
        // Fields by their offset in the whole header (the magic took 0..4).
        let u16_at = |i: usize| read_u16(big_endian, &rest[i - 4..]);
        let u32_at = |i: usize| read_u32(big_endian, &rest[i - 4..]);
        let (major, minor) = (u16_at(4), u16_at(6));
        if major != 2 {
            return Err(ReadError::new(
                0,
                ReadErrorKind::BadVersion { major, minor },
            ));
        }
        let snaplen = u32_at(16);
        let network = u32_at(20);
        // The link type is the low 26 bits; the top bits may say the frames end
        // in a frame check sequence of so many 16-bit words (pcap-linktype(7)).
        let linktype = network & 0x03ff_ffff;
        if !link::is_supported(linktype) {
            return Err(ReadError::new(
                20,
                ReadErrorKind::NotEthernet {
                    linktype,
                    interface: None,
                },
            ));
        }
        let fcs_len = if network & 0x0400_0000 != 0 {
            (network >> 28) * 2
        } else {
            0
        };
        Ok(ClassicReader {
            big_endian,
            nanos,
            limit: effective_snaplen(snaplen),
            fcs_len,
            linktype,
        })
    }

    /// Reads the next record into `buf`, or `None` at a clean end of file.
    pub(crate) fn next_frame<R: Read>(
        &self,
        source: &mut Source<R>,
        buf: &mut Vec<u8>,
    ) -> Result<Option<RawFrame>, ReadError> {
        let offset = source.offset;
        let mut header = [0u8; RECORD_HEADER_LEN];
        match source.fill(&mut header)? {
            0 => return Ok(None),
            RECORD_HEADER_LEN => {}
            got => {
                let needed = RECORD_HEADER_LEN as u64;
                return Err(truncated(offset, "record header", needed, got as u64));
            }
        }
        let be = self.big_endian;
        let secs = u64::from(read_u32(be, &header[0..4]));
        let frac = u64::from(read_u32(be, &header[4..8]));
        let len = read_u32(be, &header[8..12]);
        let original_len = read_u32(be, &header[12..16]);
        check_record_len(offset, u64::from(len), self.limit)?;
        let len = len as usize;
        buf.resize(len, 0);
        source.fill_exact(&mut buf[..len], offset, "frame", 0)?;
        let frac_ns = if self.nanos { frac } else { frac * 1_000 };
        let timestamp_ns = secs * 1_000_000_000 + frac_ns;
        let fcs = self.fcs_len as usize;
        let (len, original_len) = if fcs > 0 && len >= fcs {
            (len - fcs, original_len.saturating_sub(self.fcs_len))
        } else {
            (len, original_len)
        };
        Ok(Some(RawFrame {
            timestamp_ns,
            range: 0..len,
            original_len,
            offset,
            direction: None,
            linktype: self.linktype,
        }))
    }
}

/// Appends the file header: nanosecond magic, version 2.4, UTC, snap length
/// [`MAX_SNAPLEN`], Ethernet.
pub(crate) fn write_file_header(out: &mut Vec<u8>) {
    out.extend_from_slice(&MAGIC_NANOS.to_ne_bytes());
    out.extend_from_slice(&2u16.to_ne_bytes());
    out.extend_from_slice(&4u16.to_ne_bytes());
    out.extend_from_slice(&0i32.to_ne_bytes()); // thiszone: UTC
    out.extend_from_slice(&0u32.to_ne_bytes()); // sigfigs
    out.extend_from_slice(&MAX_SNAPLEN.to_ne_bytes());
    out.extend_from_slice(&LINKTYPE_ETHERNET.to_ne_bytes());
}

/// Appends one record, the frame cut to [`MAX_SNAPLEN`] if longer.
pub(crate) fn write_record(
    out: &mut Vec<u8>,
    timestamp_ns: u64,
    frame: &[u8],
) -> Result<(), TimestampTooLate> {
    let secs = timestamp_ns / 1_000_000_000;
    let secs = u32::try_from(secs).map_err(|_| TimestampTooLate { timestamp_ns })?;
    let nanos = (timestamp_ns % 1_000_000_000) as u32;
    let captured = frame.len().min(MAX_SNAPLEN as usize);
    let original = u32::try_from(frame.len()).unwrap_or(u32::MAX);
    // One 16-byte copy: this runs for every frame replay writes.
    let mut header = [0u8; RECORD_HEADER_LEN];
    header[0..4].copy_from_slice(&secs.to_ne_bytes());
    header[4..8].copy_from_slice(&nanos.to_ne_bytes());
    header[8..12].copy_from_slice(&(captured as u32).to_ne_bytes());
    header[12..16].copy_from_slice(&original.to_ne_bytes());
    out.reserve(RECORD_HEADER_LEN + captured);
    out.extend_from_slice(&header);
    out.extend_from_slice(&frame[..captured]);
    Ok(())
}

#[cfg(test)]
mod tests;
