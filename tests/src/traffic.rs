//! Traffic inside test namespaces: raw frames in and out of a host's
//! interface, ping, and a TCP transfer. Nothing here leaves the namespaces.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use ports::packet::{PacketRx, PacketTx};
use ports::{PortRx, PortTx, RxBatch, VnetHdr};

use crate::frames::{probe, probe_id};
use crate::netns::Netns;

/// A raw view of one host interface: inject frames as if the host sent them,
/// and see every frame that reaches it.
#[derive(Debug)]
pub struct Station {
    rx: PacketRx,
    tx: PacketTx,
    batch: RxBatch,
}

impl Station {
    /// Opens `ifname` inside `ns`.
    pub fn open(ns: &Netns, ifname: &str) -> Station {
        Station::open_at(&crate::netns::netns_path(&ns.name), ifname)
    }

    /// Opens `ifname` inside the namespace at `netns` (a process's
    /// `/proc/PID/ns/net`, or a container's `SandboxKey`).
    pub fn open_at(netns: &std::path::Path, ifname: &str) -> Station {
        let (rx, tx) = crate::netns::in_netns_at(netns, || ports::packet::open(ifname))
            .unwrap_or_else(|e| panic!("{e}"));
        Station {
            rx,
            tx,
            batch: RxBatch::new(64, ports::MAX_FRAME_LEN),
        }
    }

    /// Sends one frame out of the interface (into the switch).
    pub fn send(&self, frame: &[u8]) {
        self.tx
            .send(&VnetHdr::default(), frame)
            .unwrap_or_else(|e| panic!("sending a test frame: {e}"));
    }

    /// Sends one frame; a full queue (ENOBUFS) is the caller's to judge.
    pub fn try_send(&self, frame: &[u8]) -> std::io::Result<()> {
        self.tx.send(&VnetHdr::default(), frame)
    }

    /// Sends frames, retrying briefly when the kernel's queue is full.
    pub fn send_all<'a>(&self, frames: impl IntoIterator<Item = &'a [u8]>) {
        for frame in frames {
            let deadline = Instant::now() + Duration::from_secs(5);
            while let Err(err) = self.tx.send(&VnetHdr::default(), frame) {
                assert!(Instant::now() < deadline, "sending a test frame: {err}");
                std::thread::sleep(Duration::from_micros(200));
            }
        }
    }

    /// Every frame that arrived within `window` (the window restarts while
    /// frames keep coming, up to 10 s).
    pub fn collect(&mut self, window: Duration) -> Vec<Vec<u8>> {
        let mut frames = Vec::new();
        let hard_stop = Instant::now() + Duration::from_secs(10);
        let mut quiet_until = Instant::now() + window;
        loop {
            let n = self
                .rx
                .recv_batch(&mut self.batch)
                .expect("receiving test frames");
            for i in 0..n {
                frames.push(self.batch.get(i).1.to_vec());
            }
            let now = Instant::now();
            if n > 0 {
                quiet_until = now + window;
            } else if now >= quiet_until || now >= hard_stop {
                return frames;
            } else {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    }

    /// The probes among the frames that arrive within `window`.
    pub fn collect_probes(&mut self, window: Duration) -> Vec<(u32, Vec<u8>)> {
        self.collect(window)
            .into_iter()
            .filter_map(|f| probe_id(&f).map(|id| (id, f)))
            .collect()
    }

    /// Makes the switch learn `mac` on this station's port (a broadcast
    /// from it), waits `window`, and throws away what that left queued here
    /// and at `other`.
    pub fn teach(&mut self, mac: [u8; 6], other: &mut Station, window: Duration) {
        self.send(&probe([0xff; 6], mac, 0, 60));
        std::thread::sleep(window);
        self.drain();
        other.drain();
    }

    /// Throws away whatever is queued.
    pub fn drain(&mut self) {
        while self
            .rx
            .recv_batch(&mut self.batch)
            .map(|n| n > 0)
            .unwrap_or(false)
        {}
    }
}

/// Pings `dst` from inside `ns` `count` times; returns how many echo
/// replies came back (raw ICMP, so no `ping` binary is needed).
pub fn ping(ns: &Netns, dst: Ipv4Addr, count: u16, timeout: Duration) -> u16 {
    tools::traffic::ping(&ns_path(ns), dst, count, timeout)
        .unwrap_or_else(|e| panic!("pinging {dst} from {}: {e}", ns.name))
        .received()
}

/// Sends `bytes` bytes over TCP from `client` to a listener in `server` at
/// `server_ip`, and checks every byte arrived in order.
pub fn tcp_transfer(
    server: &Netns,
    server_ip: Ipv4Addr,
    client: &Netns,
    bytes: usize,
) -> Result<Duration, String> {
    tools::traffic::tcp_transfer(&ns_path(server), server_ip, &ns_path(client), bytes)
        .map_err(|e| e.to_string())
}

fn ns_path(ns: &Netns) -> std::path::PathBuf {
    std::path::Path::new("/run/netns").join(&ns.name)
}
