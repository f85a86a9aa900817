//! The `tapswitch` command's library: each command in its own module, so
//! `main.rs` stays a table of contents.

pub mod control;
pub mod logging;
pub mod pcap_cmd;
pub mod pcap_text;
pub mod query;
pub mod replay;
pub mod serve;
