//! What a capture holds, shared by every format: a frame and its time, the
//! direction it went, which interface of a file to read, and the limits and
//! link type the switch accepts.

use std::fmt;
use std::ops::Range;

/// Ethernet, the one link type the switch takes.
pub const LINKTYPE_ETHERNET: u32 = 1;

/// The longest record accepted and the snap length written: libpcap's
/// `MAXIMUM_SNAPLEN`, which holds a 64 KiB GSO frame with room to spare.
pub const MAX_SNAPLEN: u32 = 262_144;

/// The last second a classic pcap record can hold (2106-02-07 06:28:15 UTC).
pub const CLASSIC_MAX_SECS: u64 = u32::MAX as u64;

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

/// A record as a format's reader found it: where its bytes are in the
/// reader's buffer, and its link type (the caller makes it Ethernet).
#[derive(Debug, Clone)]
pub(crate) struct RawFrame {
    pub(crate) timestamp_ns: u64,
    pub(crate) range: Range<usize>,
    pub(crate) original_len: u32,
    pub(crate) offset: u64,
    pub(crate) direction: Option<Direction>,
    pub(crate) linktype: u32,
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

/// Which way a frame went through a port, as pcapng's `epb_flags` says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// The port received it (from the host or container behind it).
    Inbound,
    /// The switch sent it out of the port.
    Outbound,
}

impl Direction {
    /// The direction bits of `epb_flags` (bits 0-1).
    pub fn flags(self) -> u32 {
        match self {
            Direction::Inbound => 1,
            Direction::Outbound => 2,
        }
    }
}
