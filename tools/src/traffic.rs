//! Traffic between namespaces for the demo and the tests: ping (raw ICMP,
//! so no `ping` binary is needed) and a checked TCP transfer. Everything
//! runs on threads that entered the namespaces; nothing leaves them.

use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, Socket, Type};

use crate::netlink::netns;

/// What a ping run saw.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PingResult {
    pub sent: u16,
    /// Round-trip times of the replies that came back.
    pub rtts: Vec<Duration>,
}

impl PingResult {
    pub fn received(&self) -> u16 {
        self.rtts.len() as u16
    }

    pub fn median(&self) -> Option<Duration> {
        let mut rtts = self.rtts.clone();
        rtts.sort();
        rtts.get(rtts.len() / 2).copied()
    }
}

/// Sends `count` ICMP echo requests to `dst` from inside namespace `ns`,
/// waiting up to `timeout` for each reply.
pub fn ping(ns: &Path, dst: Ipv4Addr, count: u16, timeout: Duration) -> io::Result<PingResult> {
    netns::run_in(ns, move || {
        let socket = Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::ICMPV4))?;
        socket.set_read_timeout(Some(Duration::from_millis(50)))?;
        let ident = (std::process::id() as u16) ^ 0x5a5a;
        let target = SocketAddr::from((dst, 0)).into();
        let mut result = PingResult {
            sent: 0,
            rtts: Vec::new(),
        };
        for seq in 0..count {
            let started = Instant::now();
            socket.send_to(&echo_request(ident, seq), &target)?;
            result.sent += 1;
            let mut buf = [0u8; 2048];
            while started.elapsed() < timeout {
                let Ok(n) = (&socket).read(&mut buf) else {
                    continue;
                };
                if is_echo_reply(&buf[..n], dst, ident, seq) {
                    result.rtts.push(started.elapsed());
                    break;
                }
            }
        }
        Ok(result)
    })
}

fn echo_request(ident: u16, seq: u16) -> Vec<u8> {
    let mut icmp = vec![8, 0, 0, 0];
    icmp.extend_from_slice(&ident.to_be_bytes());
    icmp.extend_from_slice(&seq.to_be_bytes());
    icmp.extend((0..56u8).map(|b| b ^ 0x33));
    let sum = ports::vnet::rfc1071_checksum(&icmp);
    icmp[2..4].copy_from_slice(&sum.to_be_bytes());
    icmp
}

/// A raw ICMP socket gets the IP header too; the reply must come from
/// `from` and carry our identifier and sequence number.
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

/// Sends `bytes` bytes over TCP from namespace `client` to a listener in
/// namespace `server` at `server_ip`, and checks every byte arrived in
/// order. Returns how long the transfer took.
pub fn tcp_transfer(
    server: &Path,
    server_ip: Ipv4Addr,
    client: &Path,
    bytes: usize,
) -> io::Result<Duration> {
    let (port_tx, port_rx) = std::sync::mpsc::channel::<u16>();
    std::thread::scope(|scope| {
        let receiver = scope.spawn(|| {
            netns::run_in(server, move || -> io::Result<(usize, u64)> {
                let listener = TcpListener::bind((server_ip, 0))?;
                port_tx
                    .send(listener.local_addr()?.port())
                    .map_err(io::Error::other)?;
                let mut stream = accept_within(&listener, Duration::from_secs(30))?;
                stream.set_read_timeout(Some(Duration::from_secs(30)))?;
                let mut buf = vec![0u8; 256 * 1024];
                let (mut total, mut hash) = (0usize, FNV_OFFSET);
                loop {
                    let n = stream.read(&mut buf)?;
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
            .map_err(|_| io::Error::other("the TCP listener did not start"))?;
        let started = Instant::now();
        let sent_hash = netns::run_in(client, move || -> io::Result<u64> {
            let addr = SocketAddr::from((server_ip, port));
            let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(10))?;
            stream.set_write_timeout(Some(Duration::from_secs(30)))?;
            let chunk: Vec<u8> = (0..64 * 1024).map(|i| (i * 7 + 3) as u8).collect();
            let (mut left, mut hash) = (bytes, FNV_OFFSET);
            while left > 0 {
                let piece = &chunk[..left.min(chunk.len())];
                stream.write_all(piece)?;
                hash = fnv(hash, piece);
                left -= piece.len();
            }
            stream.shutdown(std::net::Shutdown::Write)?;
            Ok(hash)
        })?;
        let (received, received_hash) = receiver
            .join()
            .map_err(|_| io::Error::other("the TCP receiver panicked"))??;
        let elapsed = started.elapsed();
        if received != bytes || received_hash != sent_hash {
            return Err(io::Error::other(format!(
                "received {received} of {bytes} bytes ({})",
                if received_hash == sent_hash {
                    "content equal"
                } else {
                    "content differs"
                }
            )));
        }
        Ok(elapsed)
    })
}

fn accept_within(listener: &TcpListener, limit: Duration) -> io::Result<TcpStream> {
    listener.set_nonblocking(true)?;
    let deadline = Instant::now() + limit;
    loop {
        match listener.accept() {
            Ok((stream, _)) => {
                stream.set_nonblocking(false)?;
                return Ok(stream);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(2));
            }
            Err(e) => return Err(e),
        }
    }
}

/// FNV-1a's starting value.
pub(crate) const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

/// FNV-1a over `data`, continuing from `hash`.
pub(crate) fn fnv(mut hash: u64, data: &[u8]) -> u64 {
    for &b in data {
        hash = (hash ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
    }
    hash
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echo_requests_carry_a_valid_checksum() {
        let request = echo_request(7, 9);
        assert_eq!(ports::vnet::rfc1071_checksum(&request), 0);
        assert_eq!(&request[4..8], &[0, 7, 0, 9]);
    }
}
