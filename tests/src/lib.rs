//! Shared helpers for the workspace tests that use the real kernel:
//! network namespaces, veth pairs and TAP devices the tests create (and
//! always remove), a switch process, and traffic that stays inside those
//! namespaces.
//!
//! ```text
//!   host ns h1 ── eth0 ═╗                    ╔═ eth0 ── host ns h2
//!                       ╚═ p1 ─ switch ns ─ p2 ═╝
//!                          (tapswitch serve --iface p1 --iface p2 ...)
//! ```
//!
//! Every name carries the test process id and a counter, so tests run in
//! parallel without meeting each other. Namespaces are created with
//! `ip netns add` (iproute2 is on every machine of this kind) and deleted by
//! a guard's `Drop`, also when a test fails. Everything that runs "in" a
//! namespace runs on a fresh thread that entered it with `setns`.

pub mod child;
pub mod etcd_server;
pub mod frames;
pub mod gateway_kit;
pub mod golden;
pub mod lab;
pub mod lane_order;
pub mod monitor;
pub mod netns;
pub mod overlay_hosts;
pub mod overlay_lab;
pub mod poll;
pub mod remote;
pub mod rootless_user;
pub mod switch_process;
pub mod tapswitch_binary;
pub mod topology;
pub mod traffic;
pub mod worker_threads;

pub use netns::{Netns, in_netns, unique_name};
pub use switch_process::SwitchProcess;
pub use topology::{Host, Topology, tap_hosts, tap_pair};

/// Fails the test unless it runs with the privileges the kernel tests need.
/// CI runs as root, so this never skips there: it fails loudly instead.
pub fn require_root() {
    let uid = std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m))
        .unwrap_or(1);
    assert_eq!(
        uid, 0,
        "this test creates network namespaces, veth pairs and TAP devices and needs root (CAP_NET_ADMIN); run it as root"
    );
}
