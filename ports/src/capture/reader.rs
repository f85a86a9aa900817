//! The one entry point that reads a capture: [`PcapReader`] takes any `Read`
//! and tells the format from the first four bytes, classic pcap
//! ([`super::pcap`]) or pcapng ([`super::pcapng`]), then hands out frames.
//! Every frame it hands out is Ethernet, because the switch forwards
//! Ethernet frames: captures of Linux cooked, raw IP and BSD loopback
//! packets are given an Ethernet header ([`super::link`]), other link types
//! are refused.
//!
//! Capture files come from anywhere, so the reader treats them as hostile:
//! it never panics, never allocates more than a record may hold
//! ([`MAX_SNAPLEN`](super::frame::MAX_SNAPLEN), the most libpcap itself
//! accepts for Ethernet), and every problem is a [`ReadError`] that names the
//! byte offset of the header or record at fault. A file that ends in the
//! middle of a record is an error, not a silent end: replaying half a capture
//! would give answers that look right and are not.

use std::io::Read;

use super::error::{ReadError, ReadErrorKind};
use super::frame::{Frame, InterfaceChoice, LINKTYPE_ETHERNET, OwnedFrame, RawFrame};
use super::link;
use super::pcap::ClassicReader;
use super::pcapng::{NgReader, SHB_TYPE};
use super::source::{Source, truncated};

/// The format of a capture file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Classic pcap (libpcap's savefile).
    Pcap { nanos: bool, big_endian: bool },
    /// pcapng.
    PcapNg,
}

fn frame<'a>(raw: &RawFrame, data: &'a [u8], original_len: u32) -> Frame<'a> {
    Frame {
        timestamp_ns: raw.timestamp_ns,
        data,
        original_len,
        offset: raw.offset,
        direction: raw.direction,
    }
}

/// Reads a classic pcap or pcapng file frame by frame.
#[derive(Debug)]
pub struct PcapReader<R> {
    source: Source<R>,
    kind: ReaderKind,
    buf: Vec<u8>,
    /// A frame given an Ethernet header is built here.
    converted: Vec<u8>,
    headers_added: u64,
    frames_skipped: u64,
}

#[derive(Debug)]
enum ReaderKind {
    Classic(ClassicReader),
    Ng(NgReader),
}

impl<R: Read> PcapReader<R> {
    /// Opens a capture of any supported format with one Ethernet interface.
    pub fn new(reader: R) -> Result<Self, ReadError> {
        Self::with_interface(reader, None)
    }

    /// Opens a capture and reads only the chosen interface (pcapng); `None`
    /// refuses a file with several interfaces.
    pub fn with_interface(reader: R, choice: Option<InterfaceChoice>) -> Result<Self, ReadError> {
        let mut source = Source::new(reader);
        let mut magic = [0u8; 4];
        match source.fill(&mut magic)? {
            0 => return Err(ReadError::new(0, ReadErrorKind::Empty)),
            4 => {}
            got => return Err(truncated(0, "file header", 4, got as u64)),
        }
        let kind = if magic == SHB_TYPE.to_le_bytes() {
            ReaderKind::Ng(NgReader::new(choice))
        } else {
            let classic = ClassicReader::read_header(&mut source, magic)?;
            if let Some(choice) = choice
                && choice != InterfaceChoice::Index(0)
            {
                return Err(ReadError::new(
                    0,
                    ReadErrorKind::NoSuchInterface { choice, count: 1 },
                ));
            }
            ReaderKind::Classic(classic)
        };
        let mut reader = PcapReader {
            source,
            kind,
            buf: Vec::new(),
            converted: Vec::new(),
            headers_added: 0,
            frames_skipped: 0,
        };
        if let ReaderKind::Ng(ng) = &mut reader.kind {
            // The rest of the section header block whose type we just read.
            let mut raw_len = [0u8; 4];
            reader
                .source
                .fill_exact(&mut raw_len, 0, "section header block", 4)?;
            ng.read_section_header(&mut reader.source, 0, raw_len)?;
        }
        Ok(reader)
    }

    /// Frames of a non-Ethernet capture given an Ethernet header so far.
    pub fn headers_added(&self) -> u64 {
        self.headers_added
    }

    /// Frames of a non-Ethernet capture left out so far: they could not be
    /// given an Ethernet header (not IP, or too short for their link header).
    pub fn frames_skipped(&self) -> u64 {
        self.frames_skipped
    }

    pub fn format(&self) -> Format {
        match &self.kind {
            ReaderKind::Classic(c) => Format::Pcap {
                nanos: c.nanos,
                big_endian: c.big_endian,
            },
            ReaderKind::Ng(_) => Format::PcapNg,
        }
    }

    /// The next frame, or `None` at the end of the file.
    pub fn next_frame(&mut self) -> Result<Option<Frame<'_>>, ReadError> {
        // The frame is found first and borrowed after the loop: a borrow
        // returned from inside it would hold the buffers across iterations.
        let (raw, converted_len) = loop {
            let raw = match &mut self.kind {
                ReaderKind::Classic(classic) => classic.next_frame(&mut self.source, &mut self.buf),
                ReaderKind::Ng(ng) => ng.next_frame(&mut self.source, &mut self.buf),
            }?;
            let Some(raw) = raw else {
                return Ok(None);
            };
            if raw.linktype == LINKTYPE_ETHERNET {
                break (raw, None);
            }
            let packet = &self.buf[raw.range.clone()];
            match link::to_ethernet(raw.linktype, packet, &mut self.converted) {
                None => self.frames_skipped += 1,
                Some(replaced) => {
                    self.headers_added += 1;
                    let len = (raw.original_len as usize).saturating_sub(replaced) + 14;
                    break (raw, Some(u32::try_from(len).unwrap_or(u32::MAX)));
                }
            }
        };
        Ok(Some(match converted_len {
            None => frame(&raw, &self.buf[raw.range.clone()], raw.original_len),
            Some(original_len) => frame(&raw, &self.converted, original_len),
        }))
    }

    /// Every remaining frame, owned.
    pub fn read_all(&mut self) -> Result<Vec<OwnedFrame>, ReadError> {
        let mut frames = Vec::new();
        while let Some(frame) = self.next_frame()? {
            frames.push(OwnedFrame {
                timestamp_ns: frame.timestamp_ns,
                data: frame.data.to_vec(),
            });
        }
        Ok(frames)
    }
}
