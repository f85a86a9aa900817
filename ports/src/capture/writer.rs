//! Writing captures: [`Encoder`] appends file headers and records in either
//! format to a byte buffer the caller owns (so the frame path never waits
//! for a disk), and [`PcapWriter`] writes them to a file.
//!
//! Output is reproducible: nothing in it comes from the wall clock or the
//! host. Classic pcap cannot hold a time after 2106 ([`Encoder::fits`]); the
//! caller can choose pcapng instead, which stores 64 bits.

use std::io::{self, Write};

use super::error::TimestampTooLate;
use super::frame::{CLASSIC_MAX_SECS, Direction};
use super::{pcap, pcapng};

/// Which output format to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OutputFormat {
    /// Classic pcap, nanosecond timestamps, native byte order.
    #[default]
    Pcap,
    /// pcapng: one section, one Ethernet interface, nanosecond timestamps.
    PcapNg,
}

impl OutputFormat {
    /// The usual file extension, without the dot.
    pub fn extension(self) -> &'static str {
        match self {
            OutputFormat::Pcap => "pcap",
            OutputFormat::PcapNg => "pcapng",
        }
    }
}

/// Turns frames into capture-file bytes, appended to a buffer the caller
/// owns (so the frame path never waits for a disk).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Encoder {
    pub format: OutputFormat,
}

impl Encoder {
    pub fn new(format: OutputFormat) -> Self {
        Encoder { format }
    }

    /// Whether a frame at this time can be written in this format.
    pub fn fits(&self, timestamp_ns: u64) -> bool {
        self.format == OutputFormat::PcapNg || timestamp_ns / 1_000_000_000 <= CLASSIC_MAX_SECS
    }

    /// The file header: a classic header, or a pcapng section header and
    /// one Ethernet interface named `interface`.
    pub fn header(&self, out: &mut Vec<u8>, interface: &str) {
        match self.format {
            OutputFormat::Pcap => pcap::write_file_header(out),
            OutputFormat::PcapNg => {
                pcapng::write_section_header(out);
                pcapng::write_interface(out, interface);
            }
        }
    }

    /// One frame, cut to [`MAX_SNAPLEN`](super::frame::MAX_SNAPLEN) if longer. `direction` is recorded
    /// in pcapng only (classic pcap has no place for it).
    pub fn frame(
        &self,
        out: &mut Vec<u8>,
        timestamp_ns: u64,
        frame: &[u8],
        direction: Option<Direction>,
    ) -> Result<(), TimestampTooLate> {
        match self.format {
            OutputFormat::Pcap => pcap::write_record(out, timestamp_ns, frame),
            OutputFormat::PcapNg => {
                pcapng::write_packet(out, 0, timestamp_ns, frame, direction);
                Ok(())
            }
        }
    }
}

/// Writes a capture file: the header on creation, then frames.
#[derive(Debug)]
pub struct PcapWriter<W: Write> {
    inner: W,
    encoder: Encoder,
    scratch: Vec<u8>,
}

impl<W: Write> PcapWriter<W> {
    /// Writes the header of a file in `format`; `interface` names the one
    /// interface of a pcapng file.
    pub fn new(mut inner: W, format: OutputFormat, interface: &str) -> io::Result<Self> {
        let encoder = Encoder::new(format);
        let mut scratch = Vec::new();
        encoder.header(&mut scratch, interface);
        inner.write_all(&scratch)?;
        Ok(PcapWriter {
            inner,
            encoder,
            scratch,
        })
    }

    pub fn write_frame(
        &mut self,
        timestamp_ns: u64,
        frame: &[u8],
        direction: Option<Direction>,
    ) -> io::Result<()> {
        self.scratch.clear();
        self.encoder
            .frame(&mut self.scratch, timestamp_ns, frame, direction)
            .map_err(|err| io::Error::new(io::ErrorKind::InvalidInput, err))?;
        self.inner.write_all(&self.scratch)
    }

    pub fn into_inner(self) -> W {
        self.inner
    }
}
