//! The `tapswitch` command's library: each command in its own module, so
//! `main.rs` stays a table of contents.

// Every line goes through `pipe::stdout()` (see `pipe`).
#![deny(clippy::print_stdout)]

pub mod attach;
pub mod client_loop;
pub mod container;
pub mod container_steps;
pub mod control;
pub mod control_server;
pub mod demo;
pub mod event_feed;
pub mod gateway_services;
pub mod host_iface;
pub mod lab;
pub mod logging;
pub mod manuals;
pub mod monitor;
pub mod netlink;
pub mod network;
pub mod overlay;
pub mod overlay_link;
pub mod pcap_cmd;
pub mod pipe;
pub mod query;
pub mod rootless;
pub mod running;
pub mod sandbox;
pub mod serve;
pub mod show;
pub mod signals;
pub mod statedir;
pub mod store_follower;
pub mod traffic;
pub mod tunnel_report;
pub mod underlay_fit;
pub mod web;
