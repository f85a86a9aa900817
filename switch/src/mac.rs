//! Ethernet (MAC) addresses.
//!
//! The type lives with the other wire formats in `ports::wire` (one home,
//! shared with the address manager); the frame path knows it as
//! `switch::MacAddr`.

pub use ports::wire::mac::{MacAddr, ParseMacError};
