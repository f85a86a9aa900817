//! Capture files: reading classic pcap and pcapng, writing both, and the
//! live per-port capture of a running switch.
//!
//! `replay` reads its inputs and writes its outputs here; `serve --capture`
//! writes pcapng through [`CaptureDir`], with the same block encoders.
//!
//! The pieces, each depending only on those listed before it:
//!
//! - `frame` and `error`: what every format holds ([`Frame`], [`Direction`],
//!   [`InterfaceChoice`], the link type and limits), and what goes wrong
//!   ([`ReadError`], [`TimestampTooLate`]);
//! - `source`: the counted input behind every error's byte offset;
//! - [`link`]: an Ethernet header for captures of other link types;
//! - `pcap` and `pcapng`: each format's reading state and encoders;
//! - [`PcapReader`]: the one entry point that reads either format;
//! - [`Encoder`] and [`PcapWriter`]: writing either format;
//! - [`CaptureDir`] and [`PortCapture`]: a pcapng file per port of a live
//!   switch, written by a thread of its own.
//!
//! Why not the `pcap-file` crate: its errors do not say where in the file
//! the problem is, which is the first thing a user needs, and a reader of
//! hostile input is best kept small enough to read in one sitting (and to
//! fuzz: see `fuzz/`). The tests check our files against what `pcap-file`,
//! tcpdump and tshark read.

mod error;
mod frame;
pub mod link;
mod live;
mod pcap;
mod pcapng;
mod reader;
mod source;
mod writer;

pub use error::{ReadError, ReadErrorKind, TimestampTooLate};
pub use frame::{
    CLASSIC_MAX_SECS, Direction, Frame, InterfaceChoice, LINKTYPE_ETHERNET, MAX_SNAPLEN, OwnedFrame,
};
pub use live::{
    CaptureDir, CaptureStats, FLUSH_INTERVAL, MAX_PENDING_BYTES, PortCapture, WAKE_BYTES,
    wall_clock_ns,
};
pub use reader::{Format, PcapReader};
pub use writer::{Encoder, OutputFormat, PcapWriter};
