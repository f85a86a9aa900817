//! The `tapswitch` command's library: each command in its own module, so
//! `main.rs` stays a table of contents.

pub mod attach;
pub mod container;
pub mod control;
pub mod control_server;
pub mod demo;
pub mod lab;
pub mod logging;
pub mod netlink;
pub mod network;
pub mod overlay;
pub mod pcap_cmd;
pub mod query;
pub mod rootless;
pub mod running;
pub mod serve;
pub mod show;
pub mod signals;
pub mod statedir;
pub mod traffic;
