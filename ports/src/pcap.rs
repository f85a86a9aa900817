//! Capture files: reading classic pcap and pcapng, writing both.
//!
//! `replay` reads its inputs here and writes its outputs here; `serve
//! --capture` writes pcapng through [`crate::capture`], which uses the same
//! block encoders.
//!
//! **Reading.** [`PcapReader`] takes any `Read` and tells the format from the
//! first four bytes: classic pcap with microsecond or nanosecond timestamps
//! in either byte order, or pcapng (see [`crate::pcapng`] for blocks,
//! interfaces and timestamp resolutions). Only Ethernet (link type 1) is
//! accepted, because the switch forwards Ethernet frames.
//!
//! Capture files come from anywhere, so the reader treats them as hostile:
//! it never panics, never allocates more than a record may hold
//! ([`MAX_SNAPLEN`], the most libpcap itself accepts for Ethernet), and every
//! problem is a [`ReadError`] that names the byte offset of the header or
//! record at fault, so a user can look at it with a hex dump. A file that
//! ends in the middle of a record is an error, not a silent end: replaying
//! half a capture would give answers that look right and are not.
//!
//! **Writing.** [`Encoder`] appends file headers and records to a byte
//! buffer and [`PcapWriter`] writes them to a file. Classic output uses the
//! nanosecond magic (`0xa1b23c4d`), this machine's byte order (the reader
//! of a pcap swaps as needed, as libpcap does), a snap length of
//! [`MAX_SNAPLEN`] so 64 KiB frames fit, and nothing taken from the wall
//! clock, so the same frames always give the same bytes.
//!
//! A classic pcap record stores seconds in 32 bits, so it cannot hold a time
//! after 2106-02-07 06:28:15 UTC ([`CLASSIC_MAX_SECS`]); pcapng stores 64
//! bits. Real captures do carry such times (a clock set wrong), so the
//! encoder refuses them with [`TimestampTooLate`] rather than wrapping them
//! around to 1970, and the caller can choose pcapng instead.
//!
//! Why not the `pcap-file` crate: its errors do not say where in the file
//! the problem is, which is the first thing a user needs, and a reader of
//! hostile input is best kept small enough to read in one sitting (and to
//! fuzz: see `fuzz/`). The tests check our files against what `pcap-file`,
//! tcpdump and tshark read.

use std::fmt;
use std::io::{self, Read, Write};

use crate::pcapng::{self, Direction, NgReader};

/// Ethernet, the one link type the switch takes.
pub const LINKTYPE_ETHERNET: u32 = 1;

/// The longest record accepted and the snap length written: libpcap's
/// `MAXIMUM_SNAPLEN`, which holds a 64 KiB GSO frame with room to spare.
pub const MAX_SNAPLEN: u32 = 262_144;

/// The last second a classic pcap record can hold (2106-02-07 06:28:15 UTC).
pub const CLASSIC_MAX_SECS: u64 = u32::MAX as u64;

/// Classic pcap, timestamps in microseconds.
pub const MAGIC_MICROS: u32 = 0xa1b2_c3d4;
/// Classic pcap, timestamps in nanoseconds.
pub const MAGIC_NANOS: u32 = 0xa1b2_3c4d;

const CLASSIC_HEADER_LEN: usize = 24;
const RECORD_HEADER_LEN: usize = 16;

/// The format of a capture file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Classic pcap (libpcap's savefile).
    Pcap { nanos: bool, big_endian: bool },
    /// pcapng.
    PcapNg,
}

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

/// One frame read from a capture file. `data` borrows the reader's buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame<'a> {
    /// Nanoseconds since the Unix epoch.
    pub timestamp_ns: u64,
    pub data: &'a [u8],
    /// The frame's length on the wire (more than `data` if it was cut).
    pub original_len: u32,
    /// Where the frame's record or block starts in the file.
    pub offset: u64,
    /// The direction pcapng's `epb_flags` gives, if any.
    pub direction: Option<Direction>,
}

/// A frame that owns its bytes (for tests and comparisons).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnedFrame {
    pub timestamp_ns: u64,
    pub data: Vec<u8>,
}

/// Which interface of a pcapng file to read (a classic file has one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InterfaceChoice {
    /// The n-th interface in the file, counted from 0 across sections.
    Index(u32),
    /// The first interface with this `if_name`.
    Name(String),
}

impl fmt::Display for InterfaceChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InterfaceChoice::Index(i) => write!(f, "#{i}"),
            InterfaceChoice::Name(name) => write!(f, "#{name}"),
        }
    }
}

impl std::str::FromStr for InterfaceChoice {
    type Err = std::convert::Infallible;
    /// A number is an index, anything else a name.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s.parse::<u32>() {
            Ok(i) => InterfaceChoice::Index(i),
            Err(_) => InterfaceChoice::Name(s.to_string()),
        })
    }
}

/// A problem in a capture file, at a byte offset.
#[derive(Debug)]
pub struct ReadError {
    /// Where the header, record or block at fault starts.
    pub offset: u64,
    pub kind: ReadErrorKind,
}

/// What is wrong with a capture file.
#[derive(Debug)]
pub enum ReadErrorKind {
    Io(io::Error),
    Empty,
    /// The file ends `got` bytes into a `needed`-byte `what`.
    Truncated {
        what: &'static str,
        needed: u64,
        got: u64,
    },
    BadMagic(u32),
    BadVersion {
        major: u16,
        minor: u16,
    },
    NotEthernet {
        linktype: u32,
        interface: Option<u32>,
    },
    /// A record longer than the file's own snap length.
    RecordTooLong {
        len: u64,
        snaplen: u32,
    },
    /// A record longer than any capture of Ethernet can be.
    RecordAbsurd {
        len: u64,
    },
    /// A pcapng block whose length cannot be right.
    BadBlock {
        block_type: u32,
        why: String,
    },
    UnknownInterface {
        id: u32,
        known: u32,
    },
    /// A pcapng file with more than one interface, and none chosen.
    SeveralInterfaces {
        first: String,
        second: String,
    },
    /// The chosen interface is not in the file.
    NoSuchInterface {
        choice: InterfaceChoice,
        count: u32,
    },
    /// A timestamp before 1970 or after 2554 (what 64-bit nanoseconds hold).
    TimestampOutOfRange,
}

impl fmt::Display for ReadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "byte {}: ", self.offset)?;
        match &self.kind {
            ReadErrorKind::Io(err) => write!(f, "read failed: {err}"),
            ReadErrorKind::Empty => write!(f, "the file is empty, not a pcap or pcapng file"),
            ReadErrorKind::Truncated { what, needed, got } => write!(
                f,
                "truncated: the file ends {got} bytes into a {needed}-byte {what}"
            ),
            ReadErrorKind::BadMagic(magic) => write!(
                f,
                "bad magic number 0x{magic:08x}: not a pcap (a1b2c3d4, a1b23c4d) or pcapng (0a0d0d0a) file"
            ),
            ReadErrorKind::BadVersion { major, minor } => write!(
                f,
                "unsupported format version {major}.{minor} (pcap 2.x and pcapng 1.x are read)"
            ),
            ReadErrorKind::NotEthernet {
                linktype,
                interface,
            } => {
                if let Some(i) = interface {
                    write!(f, "interface #{i} has ")?;
                }
                write!(
                    f,
                    "link type {linktype} ({}), not Ethernet (1): only Ethernet frames can be replayed",
                    linktype_name(*linktype)
                )
            }
            ReadErrorKind::RecordTooLong { len, snaplen } => write!(
                f,
                "a record of {len} bytes is longer than the file's snap length ({snaplen}): the file is damaged"
            ),
            ReadErrorKind::RecordAbsurd { len } => write!(
                f,
                "a record of {len} bytes is larger than any Ethernet capture ({MAX_SNAPLEN} bytes): the file is damaged"
            ),
            ReadErrorKind::BadBlock { block_type, why } => {
                write!(f, "bad pcapng block (type 0x{block_type:08x}): {why}")
            }
            ReadErrorKind::UnknownInterface { id, known } => write!(
                f,
                "a packet names interface {id}, but its section declares {known}: the file is damaged"
            ),
            ReadErrorKind::SeveralInterfaces { first, second } => write!(
                f,
                "the file has several interfaces ({first}, {second}, ...); choose one with FILE#N (by number) or FILE#NAME"
            ),
            ReadErrorKind::NoSuchInterface { choice, count } => write!(
                f,
                "no interface {choice} in this file (it has {count}: #0 to #{})",
                count.saturating_sub(1)
            ),
            ReadErrorKind::TimestampOutOfRange => write!(
                f,
                "a timestamp before 1970 or after 2554, which replay cannot place on its clock"
            ),
        }
    }
}

impl std::error::Error for ReadError {}

impl ReadError {
    pub(crate) fn new(offset: u64, kind: ReadErrorKind) -> Self {
        ReadError { offset, kind }
    }
}

/// A few link types by name, for error messages.
fn linktype_name(linktype: u32) -> &'static str {
    match linktype {
        0 => "BSD loopback",
        1 => "Ethernet",
        101 => "raw IP",
        105 => "802.11",
        113 => "Linux cooked capture",
        127 => "802.11 radiotap",
        228 => "raw IPv4",
        229 => "raw IPv6",
        276 => "Linux cooked capture v2",
        _ => "see the tcpdump.org link-layer list",
    }
}

/// Reads a classic pcap or pcapng file frame by frame.
#[derive(Debug)]
pub struct PcapReader<R> {
    source: Source<R>,
    kind: ReaderKind,
    buf: Vec<u8>,
}

#[derive(Debug)]
enum ReaderKind {
    Classic(Classic),
    Ng(NgReader),
}

#[derive(Debug)]
struct Classic {
    big_endian: bool,
    nanos: bool,
    /// Records longer than this are damage.
    limit: u32,
    /// Bytes of frame check sequence at the end of each frame, cut off.
    fcs_len: u32,
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
        let kind = if magic == pcapng::SHB_TYPE.to_le_bytes() {
            ReaderKind::Ng(NgReader::new(choice))
        } else {
            let classic = read_classic_header(&mut source, magic)?;
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
        match &mut self.kind {
            ReaderKind::Classic(classic) => next_classic(classic, &mut self.source, &mut self.buf)
                .map(|found| {
                    found.map(|(timestamp_ns, len, original_len, offset)| Frame {
                        timestamp_ns,
                        data: &self.buf[..len],
                        original_len,
                        offset,
                        direction: None,
                    })
                }),
            ReaderKind::Ng(ng) => ng.next_frame(&mut self.source, &mut self.buf),
        }
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

fn read_classic_header<R: Read>(
    source: &mut Source<R>,
    magic: [u8; 4],
) -> Result<Classic, ReadError> {
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
    if linktype != LINKTYPE_ETHERNET {
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
    Ok(Classic {
        big_endian,
        nanos,
        limit: effective_snaplen(snaplen),
        fcs_len,
    })
}

/// A snap length of 0 or beyond the maximum means "no limit" in practice.
pub(crate) fn effective_snaplen(snaplen: u32) -> u32 {
    if snaplen == 0 || snaplen > MAX_SNAPLEN {
        MAX_SNAPLEN
    } else {
        snaplen
    }
}

/// Reads one classic record into `buf`: (timestamp, length, original length,
/// offset), or `None` at a clean end of file.
fn next_classic<R: Read>(
    classic: &Classic,
    source: &mut Source<R>,
    buf: &mut Vec<u8>,
) -> Result<Option<(u64, usize, u32, u64)>, ReadError> {
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
    let be = classic.big_endian;
    let secs = u64::from(read_u32(be, &header[0..4]));
    let frac = u64::from(read_u32(be, &header[4..8]));
    let len = read_u32(be, &header[8..12]);
    let original_len = read_u32(be, &header[12..16]);
    check_record_len(offset, u64::from(len), classic.limit)?;
    let len = len as usize;
    buf.resize(len, 0);
    source.fill_exact(&mut buf[..len], offset, "frame", 0)?;
    let frac_ns = if classic.nanos { frac } else { frac * 1_000 };
    let timestamp_ns = secs * 1_000_000_000 + frac_ns;
    let fcs = classic.fcs_len as usize;
    let (len, original_len) = if fcs > 0 && len >= fcs {
        (len - fcs, original_len.saturating_sub(classic.fcs_len))
    } else {
        (len, original_len)
    };
    Ok(Some((timestamp_ns, len, original_len, offset)))
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

/// A timestamp that does not fit the chosen output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimestampTooLate {
    pub timestamp_ns: u64,
}

impl fmt::Display for TimestampTooLate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "time {}.{:09} is after 2106-02-07 06:28:15 UTC, the last time a classic pcap can hold; write pcapng instead",
            self.timestamp_ns / 1_000_000_000,
            self.timestamp_ns % 1_000_000_000
        )
    }
}

impl std::error::Error for TimestampTooLate {}

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
            OutputFormat::Pcap => {
                out.extend_from_slice(&MAGIC_NANOS.to_ne_bytes());
                out.extend_from_slice(&2u16.to_ne_bytes());
                out.extend_from_slice(&4u16.to_ne_bytes());
                out.extend_from_slice(&0i32.to_ne_bytes()); // thiszone: UTC
                out.extend_from_slice(&0u32.to_ne_bytes()); // sigfigs
                out.extend_from_slice(&MAX_SNAPLEN.to_ne_bytes());
                out.extend_from_slice(&LINKTYPE_ETHERNET.to_ne_bytes());
            }
            OutputFormat::PcapNg => {
                pcapng::write_section_header(out);
                pcapng::write_interface(out, interface);
            }
        }
    }

    /// One frame, cut to [`MAX_SNAPLEN`] if longer. `direction` is recorded
    /// in pcapng only (classic pcap has no place for it).
    pub fn frame(
        &self,
        out: &mut Vec<u8>,
        timestamp_ns: u64,
        frame: &[u8],
        direction: Option<Direction>,
    ) -> Result<(), TimestampTooLate> {
        match self.format {
            OutputFormat::Pcap => {
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
            }
            OutputFormat::PcapNg => {
                pcapng::write_packet(out, 0, timestamp_ns, frame, direction);
            }
        }
        Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(n: u8, len: usize) -> Vec<u8> {
        (0..len).map(|i| n.wrapping_add(i as u8)).collect()
    }

    fn write(format: OutputFormat, frames: &[(u64, Vec<u8>)]) -> Vec<u8> {
        let mut w = PcapWriter::new(Vec::new(), format, "p1").unwrap();
        for (ts, data) in frames {
            w.write_frame(*ts, data, None).unwrap();
        }
        w.into_inner()
    }

    fn read(bytes: &[u8]) -> Result<Vec<OwnedFrame>, ReadError> {
        PcapReader::new(bytes)?.read_all()
    }

    fn classic_header(magic: u32, big_endian: bool, snaplen: u32, linktype: u32) -> Vec<u8> {
        let mut h = Vec::new();
        let put32 = |h: &mut Vec<u8>, v: u32| {
            h.extend_from_slice(&if big_endian {
                v.to_be_bytes()
            } else {
                v.to_le_bytes()
            })
        };
        put32(&mut h, magic);
        let version = if big_endian {
            [0, 2, 0, 4]
        } else {
            [2, 0, 4, 0]
        };
        h.extend_from_slice(&version);
        put32(&mut h, 0);
        put32(&mut h, 0);
        put32(&mut h, snaplen);
        put32(&mut h, linktype);
        h
    }

    fn classic_record(big_endian: bool, secs: u32, frac: u32, data: &[u8]) -> Vec<u8> {
        let mut r = Vec::new();
        for v in [secs, frac, data.len() as u32, data.len() as u32] {
            r.extend_from_slice(&if big_endian {
                v.to_be_bytes()
            } else {
                v.to_le_bytes()
            });
        }
        r.extend_from_slice(data);
        r
    }

    #[test]
    fn classic_round_trip_keeps_nanoseconds_and_64k_frames() {
        let frames = vec![
            (1_700_000_000_123_456_789, frame(1, 60)),
            (1_700_000_001_000_000_001, frame(2, 65_535 + 18)),
            (0, frame(3, 14)),
        ];
        let bytes = write(OutputFormat::Pcap, &frames);
        assert_eq!(&bytes[..4], &MAGIC_NANOS.to_ne_bytes());
        assert_eq!(&bytes[16..20], &MAX_SNAPLEN.to_ne_bytes());
        let back = read(&bytes).unwrap();
        let back: Vec<_> = back.into_iter().map(|f| (f.timestamp_ns, f.data)).collect();
        assert_eq!(back, frames);
    }

    #[test]
    fn pcapng_round_trip_keeps_times_past_2106() {
        let late = (CLASSIC_MAX_SECS + 10) * 1_000_000_000 + 7;
        let frames = vec![(5, frame(1, 60)), (late, frame(9, 70_000))];
        let bytes = write(OutputFormat::PcapNg, &frames);
        let back = read(&bytes).unwrap();
        let back: Vec<_> = back.into_iter().map(|f| (f.timestamp_ns, f.data)).collect();
        assert_eq!(back, frames);
    }

    #[test]
    fn classic_refuses_times_it_cannot_hold() {
        let late = (CLASSIC_MAX_SECS + 1) * 1_000_000_000;
        let encoder = Encoder::new(OutputFormat::Pcap);
        assert!(encoder.fits(late - 1));
        assert!(!encoder.fits(late));
        let err = encoder.frame(&mut Vec::new(), late, &[0; 60], None);
        assert_eq!(err, Err(TimestampTooLate { timestamp_ns: late }));
        assert!(err.unwrap_err().to_string().contains("2106"));
    }

    #[test]
    fn reads_microsecond_and_big_endian_files() {
        for big_endian in [false, true] {
            for (magic, frac, want_ns) in [(MAGIC_MICROS, 250, 250_000), (MAGIC_NANOS, 250, 250)] {
                let mut bytes = classic_header(magic, big_endian, 65_535, 1);
                bytes.extend(classic_record(big_endian, 10, frac, &frame(0, 42)));
                let reader = PcapReader::new(&bytes[..]).unwrap();
                assert_eq!(
                    reader.format(),
                    Format::Pcap {
                        nanos: magic == MAGIC_NANOS,
                        big_endian
                    }
                );
                let frames = read(&bytes).unwrap();
                assert_eq!(frames[0].timestamp_ns, 10_000_000_000 + want_ns);
                assert_eq!(frames[0].data, frame(0, 42));
            }
        }
    }

    #[test]
    fn cuts_off_a_frame_check_sequence() {
        // FCS present (bit 26), 2 words (4 bytes).
        let mut bytes = classic_header(MAGIC_MICROS, false, 65_535, 1 | 0x0400_0000 | (2 << 28));
        bytes.extend(classic_record(false, 1, 0, &frame(0, 64)));
        assert_eq!(read(&bytes).unwrap()[0].data, frame(0, 60));
    }

    fn error_of(bytes: &[u8]) -> ReadError {
        match PcapReader::new(bytes).and_then(|mut r| r.read_all()) {
            Ok(frames) => panic!("read {} frames from bad input", frames.len()),
            Err(err) => err,
        }
    }

    #[test]
    fn every_kind_of_bad_input_is_an_error_at_its_offset() {
        let good = {
            let mut b = classic_header(MAGIC_NANOS, false, 100, 1);
            b.extend(classic_record(false, 1, 0, &frame(0, 60)));
            b.extend(classic_record(false, 2, 0, &frame(0, 60)));
            b
        };
        assert_eq!(read(&good).unwrap().len(), 2);

        let err = error_of(&[]);
        assert!(matches!(err.kind, ReadErrorKind::Empty));

        let err = error_of(b"GIF89a trailing bytes");
        assert!(matches!(err.kind, ReadErrorKind::BadMagic(0x4749_4638)));
        assert_eq!(err.to_string().split(':').next(), Some("byte 0"));

        let err = error_of(&good[..10]);
        assert!(
            matches!(
                err.kind,
                ReadErrorKind::Truncated {
                    needed: 24,
                    got: 10,
                    ..
                }
            ),
            "{err}"
        );

        // Cut inside the second record's header, then inside its frame.
        let second = 24 + 16 + 60;
        let err = error_of(&good[..second + 5]);
        assert_eq!(err.offset, second as u64);
        assert!(matches!(
            err.kind,
            ReadErrorKind::Truncated {
                needed: 16,
                got: 5,
                ..
            }
        ));
        let err = error_of(&good[..second + 16 + 30]);
        assert_eq!(err.offset, second as u64);
        assert!(matches!(
            err.kind,
            ReadErrorKind::Truncated {
                needed: 60,
                got: 30,
                ..
            }
        ));
        assert_eq!(
            err.to_string(),
            "byte 100: truncated: the file ends 30 bytes into a 60-byte frame"
        );

        let mut long = classic_header(MAGIC_NANOS, false, 100, 1);
        long.extend(classic_record(false, 1, 0, &frame(0, 101)));
        let err = error_of(&long);
        assert_eq!(err.offset, 24);
        assert!(matches!(
            err.kind,
            ReadErrorKind::RecordTooLong {
                len: 101,
                snaplen: 100
            }
        ));

        let mut absurd = classic_header(MAGIC_NANOS, false, 0, 1);
        absurd.extend(classic_record(false, 1, 0, &[]));
        absurd[24 + 8..24 + 12].copy_from_slice(&0x7fff_ffffu32.to_le_bytes());
        let err = error_of(&absurd);
        assert!(matches!(
            err.kind,
            ReadErrorKind::RecordAbsurd { len: 0x7fff_ffff }
        ));

        let err = error_of(&classic_header(MAGIC_NANOS, false, 100, 113));
        assert!(matches!(
            err.kind,
            ReadErrorKind::NotEthernet { linktype: 113, .. }
        ));
        assert!(err.to_string().contains("Linux cooked capture"), "{err}");

        let mut version = classic_header(MAGIC_NANOS, false, 100, 1);
        version[4] = 3;
        assert!(matches!(
            error_of(&version).kind,
            ReadErrorKind::BadVersion { major: 3, .. }
        ));
    }

    #[test]
    fn a_classic_file_has_only_interface_zero() {
        let bytes = write(OutputFormat::Pcap, &[(1, frame(0, 60))]);
        assert!(PcapReader::with_interface(&bytes[..], Some(InterfaceChoice::Index(0))).is_ok());
        let err =
            PcapReader::with_interface(&bytes[..], Some(InterfaceChoice::Index(1))).unwrap_err();
        assert!(matches!(err.kind, ReadErrorKind::NoSuchInterface { .. }));
    }

    /// Random and cut-up inputs: errors are fine, panics and runaway
    /// allocations are not. (The fuzz target in fuzz/ goes further.)
    #[test]
    fn random_and_truncated_bytes_never_panic() {
        let mut seeds = vec![
            write(OutputFormat::Pcap, &[(1, frame(0, 60)), (2, frame(1, 100))]),
            write(
                OutputFormat::PcapNg,
                &[(1, frame(0, 60)), (2, frame(1, 100))],
            ),
        ];
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for seed in seeds.drain(..) {
            for cut in 0..seed.len() {
                let _ = PcapReader::new(&seed[..cut]).and_then(|mut r| r.read_all());
            }
            for _ in 0..2_000 {
                let mut bytes = seed.clone();
                for _ in 0..1 + next() % 4 {
                    let i = (next() as usize) % bytes.len();
                    bytes[i] = next() as u8;
                }
                let _ = PcapReader::new(&bytes[..]).and_then(|mut r| r.read_all());
            }
        }
    }
}
