//! Traffic inside test namespaces: raw frames in and out of a host's
//! interface, ping, and a TCP transfer. Nothing here leaves the namespaces.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use ports::packet::{PacketRx, PacketTx};
use ports::{PortRx, PortTx, RxBatch, VnetHdr};
use socket2::{Domain, Protocol, Socket, Type};

use crate::frames::probe_id;
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
        let (rx, tx) = ns
            .run(|| ports::packet::open(ifname))
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

/// Pings `dst` from inside `ns` `count` times (raw ICMP, so no `ping`
/// binary is needed); returns how many echo replies came back.
pub fn ping(ns: &Netns, dst: Ipv4Addr, count: u16, timeout: Duration) -> u16 {
    ns.run(move || {
        let socket = Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::ICMPV4))
            .expect("a raw ICMP socket (needs root)");
        socket
            .set_read_timeout(Some(Duration::from_millis(100)))
            .expect("socket timeout");
        let ident = (std::process::id() as u16) ^ 0x5a5a;
        let target = SocketAddr::from((dst, 0)).into();
        let mut replies = 0;
        for seq in 0..count {
            let request = echo_request(ident, seq);
            socket
                .send_to(&request, &target)
                .expect("sending an echo request");
            let deadline = Instant::now() + timeout;
            while Instant::now() < deadline {
                let mut buf = [0u8; 2048];
                let Ok(n) = (&socket).read(&mut buf) else {
                    continue;
                };
                if is_echo_reply(&buf[..n], dst, ident, seq) {
                    replies += 1;
                    break;
                }
            }
        }
        replies
    })
}

fn echo_request(ident: u16, seq: u16) -> Vec<u8> {
    let mut icmp = vec![8, 0, 0, 0];
    icmp.extend_from_slice(&ident.to_be_bytes());
    icmp.extend_from_slice(&seq.to_be_bytes());
    icmp.extend((0..56u8).map(|b| b ^ 0x33));
    let sum = internet_checksum(&icmp);
    icmp[2..4].copy_from_slice(&sum.to_be_bytes());
    icmp
}

fn is_echo_reply(packet: &[u8], from: Ipv4Addr, ident: u16, seq: u16) -> bool {
    let Some(&first) = packet.first() else {
        return false;
    };
    let ihl = usize::from(first & 0x0f) * 4;
    let Some(icmp) = packet.get(ihl..) else {
        return false;
    };
    packet.get(12..16) == Some(&from.octets()[..])
        && icmp.len() >= 8
        && icmp[0] == 0
        && icmp[4..6] == ident.to_be_bytes()
        && icmp[6..8] == seq.to_be_bytes()
}

/// RFC 1071 checksum.
pub fn internet_checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = data
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Sends `bytes` bytes over TCP from `client` to a listener in `server` at
/// `server_ip`, and checks every byte arrived in order. Returns how long it took.
pub fn tcp_transfer(
    server: &Netns,
    server_ip: Ipv4Addr,
    client: &Netns,
    bytes: usize,
) -> Result<Duration, String> {
    let (port_tx, port_rx) = std::sync::mpsc::channel::<u16>();
    let started = Instant::now();
    std::thread::scope(|scope| {
        let receiver = scope.spawn(|| {
            server.run(move || -> Result<(usize, u64), String> {
                let listener =
                    TcpListener::bind((server_ip, 0)).map_err(|e| format!("listen: {e}"))?;
                port_tx
                    .send(listener.local_addr().map_err(|e| e.to_string())?.port())
                    .map_err(|e| e.to_string())?;
                listener.set_nonblocking(true).map_err(|e| e.to_string())?;
                let deadline = Instant::now() + Duration::from_secs(30);
                let mut stream = loop {
                    match listener.accept() {
                        Ok((stream, _)) => break stream,
                        Err(e)
                            if e.kind() == std::io::ErrorKind::WouldBlock
                                && Instant::now() < deadline =>
                        {
                            std::thread::sleep(Duration::from_millis(5));
                        }
                        Err(e) => return Err(format!("accept: {e}")),
                    }
                };
                stream.set_nonblocking(false).map_err(|e| e.to_string())?;
                stream
                    .set_read_timeout(Some(Duration::from_secs(30)))
                    .map_err(|e| e.to_string())?;
                let mut buf = vec![0u8; 256 * 1024];
                let (mut total, mut hash) = (0usize, FNV_OFFSET);
                loop {
                    let n = stream
                        .read(&mut buf)
                        .map_err(|e| format!("read after {total} bytes: {e}"))?;
                    if n == 0 {
                        return Ok((total, hash));
                    }
                    hash = fnv(hash, &buf[..n]);
                    total += n;
                }
            })
        });
        let port = port_rx
            .recv_timeout(Duration::from_secs(10))
            .map_err(|_| "the listener did not start".to_string())?;
        let sent_hash = client.run(move || -> Result<u64, String> {
            let addr = SocketAddr::from((server_ip, port));
            let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(10))
                .map_err(|e| format!("connect: {e}"))?;
            stream
                .set_write_timeout(Some(Duration::from_secs(30)))
                .map_err(|e| e.to_string())?;
            let chunk: Vec<u8> = (0..64 * 1024).map(|i| (i * 7 + 3) as u8).collect();
            let (mut left, mut hash) = (bytes, FNV_OFFSET);
            while left > 0 {
                let piece = &chunk[..left.min(chunk.len())];
                stream
                    .write_all(piece)
                    .map_err(|e| format!("write with {left} bytes left: {e}"))?;
                hash = fnv(hash, piece);
                left -= piece.len();
            }
            stream
                .shutdown(std::net::Shutdown::Write)
                .map_err(|e| e.to_string())?;
            Ok(hash)
        })?;
        let (received, received_hash) = receiver
            .join()
            .map_err(|_| "the receiver panicked".to_string())??;
        if received != bytes || received_hash != sent_hash {
            return Err(format!(
                "received {received} of {bytes} bytes, content {}",
                if received_hash == sent_hash {
                    "equal"
                } else {
                    "different"
                }
            ));
        }
        Ok(started.elapsed())
    })
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

fn fnv(mut hash: u64, data: &[u8]) -> u64 {
    for &b in data {
        hash = (hash ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
    }
    hash
}
