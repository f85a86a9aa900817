//! IP protocol numbers (IPv4 protocol, IPv6 next header; IANA registry).

pub const HOPOPTS: u8 = 0;
pub const ICMP: u8 = 1;
pub const TCP: u8 = 6;
pub const UDP: u8 = 17;
pub const ROUTING: u8 = 43;
pub const FRAGMENT: u8 = 44;
pub const ICMPV6: u8 = 58;
pub const DSTOPTS: u8 = 60;
pub const SCTP: u8 = 132;
