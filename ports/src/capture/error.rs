//! What can go wrong with a capture file: a [`ReadError`] names the byte
//! offset of the header, record or block at fault, so a user can look at it
//! with a hex dump; a [`TimestampTooLate`] is a time the chosen output format
//! cannot hold.

use std::fmt;
use std::io;

use super::frame::{InterfaceChoice, MAX_SNAPLEN};

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
    /// A pcapng file with more than one interface, and none chosen: the
    /// interfaces declared so far (`#0 eth0`, `#1`, ...).
    SeveralInterfaces {
        interfaces: Vec<String>,
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
                    "link type {linktype} ({}), which replay cannot read: it reads Ethernet, and \
                     Linux cooked, raw IP and BSD loopback captures (given an Ethernet header)",
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
            ReadErrorKind::SeveralInterfaces { interfaces } => write!(
                f,
                "the file has several interfaces ({}); choose one with FILE#N (by number) or FILE#NAME",
                interfaces.join(", ")
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
        0 | 108 => "BSD loopback",
        12 | 14 => "raw IP",
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
