//! The gateway's host sockets: the switch's own sockets in its network
//! namespace (the host's) that carry the containers' translated flows out,
//! as slirp4netns and pasta do.
//!
//! Every socket here is non-blocking and owns its descriptor (dropping it
//! gives the descriptor back). The switch registers [`AsRawFd::as_raw_fd`]
//! with its gateway thread's poller and reads until `WouldBlock`.
//!
//! - [`HostUdp`]: a UDP socket connected to one remote endpoint (one per
//!   flow: the kernel then filters what comes back, and ICMP errors from
//!   the path arrive as socket errors on the flow they belong to).
//! - [`HostEcho`]: a ping socket to one remote address. Unprivileged ICMP
//!   echo sockets (`SOCK_DGRAM, IPPROTO_ICMP`) where
//!   `net.ipv4.ping_group_range` allows them; otherwise a raw ICMP socket
//!   where the process may open one (`CAP_NET_RAW`). [`EchoKind`] says
//!   which, for `tapswitch stats`.
//! - [`HostTcp`]: a non-blocking TCP connect, then a stream.
//! - [`HostListener`]: a published TCP port.
//! - [`HostDatagram`]: an unconnected UDP socket on an ephemeral port (the
//!   DNS forwarder's queries to the upstream resolvers).

use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, SocketAddrV4, TcpListener, TcpStream, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};

use serde::Serialize;
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

pub use crate::sys::rlimit::{
    HARD_LIMIT_CAP, HARD_LIMIT_WANTED, NofileLimits, RaisedNofile, nofile_attempts,
};

/// Raises this process's limit on open descriptors (1,024 soft by default,
/// where every translated flow holds one host socket): the soft limit to
/// the hard one, and a low hard limit too where the process may (see
/// `sys/rlimit.rs`); returns the soft limit now in force.
pub fn raise_descriptor_limit() -> io::Result<u64> {
    Ok(crate::sys::rlimit::raise_nofile()?.limits.soft)
}

/// The one start-up line when `limit` descriptors cannot hold
/// `flows_wanted` flows (one host socket each) beside the descriptors the
/// process holds now; `None` when they fit.
pub fn descriptor_limit_warning(limit: u64, flows_wanted: u64) -> Option<String> {
    let in_use = std::fs::read_dir("/proc/self/fd").map_or(0, |dir| dir.count() as u64);
    descriptor_limit_advice(limit, in_use, flows_wanted)
}

/// [`descriptor_limit_warning`] with the descriptors in use given. Pure.
pub fn descriptor_limit_advice(limit: u64, in_use: u64, flows_wanted: u64) -> Option<String> {
    // Published ports, their clients, DNS and the ports take some too.
    const RESERVE: u64 = 64;
    let flows = limit.saturating_sub(in_use + RESERVE);
    (flows < flows_wanted).then(|| {
        format!(
            "at most {limit} open descriptors allow about {flows} flows (of {flows_wanted}); \
             raise the limit before starting, e.g. `ulimit -n {HARD_LIMIT_WANTED}` as root \
             (`LimitNOFILE=` in a systemd unit, `nofile` in /etc/security/limits.conf)"
        )
    })
}

/// ICMP echo request and reply types (RFC 792).
const ECHO_REQUEST: u8 = 8;
const ECHO_REPLY: u8 = 0;
/// The ICMP echo header: type, code, checksum, identifier, sequence.
const ECHO_HEADER: usize = 8;

/// A UDP socket connected to one remote endpoint.
#[derive(Debug)]
pub struct HostUdp(UdpSocket);

impl HostUdp {
    /// A non-blocking socket on an ephemeral port, connected to `remote`.
    pub fn connect(remote: SocketAddrV4) -> io::Result<HostUdp> {
        let socket = Socket::new(Domain::IPV4, Type::DGRAM.nonblocking(), Some(Protocol::UDP))?;
        socket.connect(&SockAddr::from(remote))?;
        Ok(HostUdp(socket.into()))
    }

    /// Sends one datagram.
    pub fn send(&self, payload: &[u8]) -> io::Result<usize> {
        self.0.send(payload)
    }

    /// Reads one datagram; `WouldBlock` when none waits. An ICMP error
    /// from the path comes as an error (`ConnectionRefused`, ...).
    pub fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.recv(buf)
    }
}

impl AsRawFd for HostUdp {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}

/// Which kind of socket carries pings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EchoKind {
    /// `SOCK_DGRAM, IPPROTO_ICMP`: unprivileged, allowed by
    /// `net.ipv4.ping_group_range`; the kernel picks the identifier.
    Datagram,
    /// `SOCK_RAW, IPPROTO_ICMP`: needs `CAP_NET_RAW`; sees every ICMP
    /// message the host receives, so replies are filtered by identifier.
    Raw,
}

impl EchoKind {
    /// The first kind this process may open, trying the unprivileged one
    /// first; `None` when neither is allowed (pings are then refused).
    pub fn probe() -> Option<EchoKind> {
        [EchoKind::Datagram, EchoKind::Raw]
            .into_iter()
            .find(|kind| open_icmp(*kind).is_ok())
    }
}

fn open_icmp(kind: EchoKind) -> io::Result<Socket> {
    let ty = match kind {
        EchoKind::Datagram => Type::DGRAM,
        EchoKind::Raw => Type::RAW,
    };
    Socket::new(Domain::IPV4, ty.nonblocking(), Some(Protocol::ICMPV4))
}

/// A ping socket toward one remote address.
#[derive(Debug)]
pub struct HostEcho {
    socket: Socket,
    kind: EchoKind,
    /// The identifier requests carry on a raw socket (replies with another
    /// one belong to someone else); the kernel's own on a datagram socket.
    ident: u16,
}

/// An echo reply read from a [`HostEcho`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EchoReply {
    pub seq_no: u16,
    /// Where the reply's data starts and ends in the caller's buffer.
    pub data: (usize, usize),
}

impl HostEcho {
    /// A socket of `kind` connected to `remote`; `ident` is the identifier
    /// used on a raw socket (choose one per flow).
    pub fn open(kind: EchoKind, remote: Ipv4Addr, ident: u16) -> io::Result<HostEcho> {
        let socket = open_icmp(kind)?;
        socket.connect(&SockAddr::from(SocketAddrV4::new(remote, 0)))?;
        Ok(HostEcho {
            socket,
            kind,
            ident,
        })
    }

    pub fn kind(&self) -> EchoKind {
        self.kind
    }

    /// Sends an echo request with `seq_no` and `data`.
    pub fn send(&self, seq_no: u16, data: &[u8]) -> io::Result<usize> {
        let mut packet = Vec::with_capacity(ECHO_HEADER + data.len());
        packet.extend_from_slice(&[ECHO_REQUEST, 0, 0, 0]);
        packet.extend_from_slice(&self.ident.to_be_bytes());
        packet.extend_from_slice(&seq_no.to_be_bytes());
        packet.extend_from_slice(data);
        // The kernel fills the checksum of a datagram ICMP socket, not of a
        // raw one.
        if self.kind == EchoKind::Raw {
            let sum = internet_checksum(&packet);
            packet[2..4].copy_from_slice(&sum.to_be_bytes());
        }
        (&self.socket).write(&packet)
    }

    /// Reads one message into `buf`: `Ok(Some(reply))` for an echo reply of
    /// this socket, `Ok(None)` for anything else (skipped), `WouldBlock`
    /// when nothing waits.
    pub fn recv(&self, buf: &mut [u8]) -> io::Result<Option<EchoReply>> {
        let len = (&self.socket).read(buf)?;
        let start = match self.kind {
            EchoKind::Datagram => 0,
            // A raw socket's message starts with the IPv4 header.
            EchoKind::Raw => match buf.first() {
                Some(first) if len >= 20 => usize::from(first & 0x0f) * 4,
                _ => return Ok(None),
            },
        };
        let Some(icmp) = buf.get(start..len) else {
            return Ok(None);
        };
        if icmp.len() < ECHO_HEADER || icmp[0] != ECHO_REPLY || icmp[1] != 0 {
            return Ok(None);
        }
        let ident = u16::from_be_bytes([icmp[4], icmp[5]]);
        if self.kind == EchoKind::Raw && ident != self.ident {
            return Ok(None);
        }
        Ok(Some(EchoReply {
            seq_no: u16::from_be_bytes([icmp[6], icmp[7]]),
            data: (start + ECHO_HEADER, len),
        }))
    }

    /// The error queued on the socket, if any (an ICMP error for a
    /// datagram socket).
    pub fn take_error(&self) -> io::Result<Option<io::Error>> {
        self.socket.take_error()
    }
}

impl AsRawFd for HostEcho {
    fn as_raw_fd(&self) -> RawFd {
        self.socket.as_raw_fd()
    }
}

/// The ones' complement sum of RFC 1071.
fn internet_checksum(bytes: &[u8]) -> u16 {
    let mut sum: u32 = bytes
        .chunks(2)
        .map(|pair| u32::from(u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// A TCP connection to a remote endpoint, opened without blocking.
#[derive(Debug)]
pub struct HostTcp(TcpStream);

impl HostTcp {
    /// Starts connecting to `remote` (keepalive on): the socket becomes
    /// writable when the connect resolved; [`HostTcp::connect_result`] then
    /// says how.
    pub fn connect(remote: SocketAddrV4) -> io::Result<HostTcp> {
        let socket = Socket::new(
            Domain::IPV4,
            Type::STREAM.nonblocking(),
            Some(Protocol::TCP),
        )?;
        socket.set_keepalive(true)?;
        socket.set_tcp_nodelay(true)?;
        match socket.connect(&SockAddr::from(remote)) {
            Ok(()) => {}
            Err(err) if err.raw_os_error() == Some(libc::EINPROGRESS) => {}
            Err(err) => return Err(err),
        }
        Ok(HostTcp(socket.into()))
    }

    /// Once writable: `Ok(())` when connected, the connect's error if not.
    /// `WouldBlock` while it is still under way.
    pub fn connect_result(&self) -> io::Result<()> {
        if let Some(err) = self.0.take_error()? {
            return Err(err);
        }
        match self.0.peer_addr() {
            Ok(_) => Ok(()),
            Err(err) if err.kind() == io::ErrorKind::NotConnected => {
                Err(io::Error::from(io::ErrorKind::WouldBlock))
            }
            Err(err) => Err(err),
        }
    }

    pub fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        (&self.0).read(buf)
    }

    pub fn write(&self, buf: &[u8]) -> io::Result<usize> {
        (&self.0).write(buf)
    }

    /// Sends a FIN (the container closed its sending half).
    pub fn shutdown_write(&self) -> io::Result<()> {
        self.0.shutdown(Shutdown::Write)
    }

    /// Closes with a RST (`SO_LINGER` 0), consuming the socket.
    pub fn reset(self) {
        let socket = Socket::from(self.0);
        let _ = socket.set_linger(Some(std::time::Duration::ZERO));
    }
}

impl AsRawFd for HostTcp {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}

impl From<TcpStream> for HostTcp {
    /// An accepted connection (a published port's client), made
    /// non-blocking.
    fn from(stream: TcpStream) -> HostTcp {
        let _ = stream.set_nonblocking(true);
        let _ = stream.set_nodelay(true);
        HostTcp(stream)
    }
}

/// A listening TCP socket (a published port).
#[derive(Debug)]
pub struct HostListener(TcpListener);

impl HostListener {
    /// Listens on `address`, non-blocking.
    pub fn bind(address: SocketAddrV4) -> io::Result<HostListener> {
        let listener = TcpListener::bind(address)?;
        listener.set_nonblocking(true)?;
        Ok(HostListener(listener))
    }

    /// The next client; `WouldBlock` when none waits.
    pub fn accept(&self) -> io::Result<(HostTcp, SocketAddrV4)> {
        let (stream, from) = self.0.accept()?;
        match from {
            SocketAddr::V4(from) => Ok((HostTcp::from(stream), from)),
            SocketAddr::V6(_) => Err(io::Error::from(io::ErrorKind::Unsupported)),
        }
    }
}

impl AsRawFd for HostListener {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}

/// An unconnected UDP socket on an ephemeral port.
#[derive(Debug)]
pub struct HostDatagram(UdpSocket);

impl HostDatagram {
    /// Bound to `0.0.0.0:0`, non-blocking.
    pub fn bind_any() -> io::Result<HostDatagram> {
        let socket = UdpSocket::bind(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0))?;
        socket.set_nonblocking(true)?;
        Ok(HostDatagram(socket))
    }

    /// Bound to `address` (a published UDP port), non-blocking.
    pub fn bind(address: SocketAddrV4) -> io::Result<HostDatagram> {
        let socket = UdpSocket::bind(address)?;
        socket.set_nonblocking(true)?;
        Ok(HostDatagram(socket))
    }

    pub fn send_to(&self, payload: &[u8], to: SocketAddr) -> io::Result<usize> {
        self.0.send_to(payload, to)
    }

    pub fn recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        self.0.recv_from(buf)
    }
}

impl AsRawFd for HostDatagram {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wait_readable<T>(mut f: impl FnMut() -> io::Result<T>) -> T {
        for _ in 0..200 {
            match f() {
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => {
                    std::thread::sleep(std::time::Duration::from_millis(5))
                }
                other => return other.expect("socket error"),
            }
        }
        panic!("nothing arrived within a second");
    }

    #[test]
    fn checksum_matches_rfc_1071_example() {
        // RFC 1071's example bytes sum to 0xddf2; the checksum is its complement.
        let bytes = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(internet_checksum(&bytes), !0xddf2);
        assert_eq!(internet_checksum(&[0xff]), !0xff00);
    }

    #[test]
    fn udp_flow_socket_talks_to_its_remote_on_loopback() {
        let server = UdpSocket::bind("127.0.0.1:0").unwrap();
        let SocketAddr::V4(addr) = server.local_addr().unwrap() else {
            unreachable!()
        };
        let flow = HostUdp::connect(addr).unwrap();
        flow.send(b"hello").unwrap();
        let mut buf = [0u8; 64];
        let (n, from) = server.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"hello");
        server.send_to(b"back", from).unwrap();
        let n = wait_readable(|| flow.recv(&mut buf));
        assert_eq!(&buf[..n], b"back");
    }

    #[test]
    fn udp_to_a_closed_port_reports_refused() {
        let closed = UdpSocket::bind("127.0.0.1:0").unwrap();
        let SocketAddr::V4(addr) = closed.local_addr().unwrap() else {
            unreachable!()
        };
        drop(closed);
        let flow = HostUdp::connect(addr).unwrap();
        flow.send(b"anyone?").unwrap();
        let mut buf = [0u8; 16];
        let err = (0..200)
            .find_map(|_| match flow.recv(&mut buf) {
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => {
                    std::thread::sleep(std::time::Duration::from_millis(5));
                    None
                }
                Err(err) => Some(err),
                Ok(_) => panic!("a datagram from a closed port"),
            })
            .expect("an error within a second");
        assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused);
    }

    #[test]
    fn tcp_connect_resolves_both_ways() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let SocketAddr::V4(addr) = listener.local_addr().unwrap() else {
            unreachable!()
        };
        let tcp = HostTcp::connect(addr).unwrap();
        let result = (0..200).find_map(|_| match tcp.connect_result() {
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => {
                std::thread::sleep(std::time::Duration::from_millis(5));
                None
            }
            other => Some(other),
        });
        assert!(matches!(result, Some(Ok(()))), "{result:?}");
        drop(listener);
        let refused = HostTcp::connect(addr).unwrap();
        let result = (0..200).find_map(|_| match refused.connect_result() {
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => {
                std::thread::sleep(std::time::Duration::from_millis(5));
                None
            }
            other => Some(other),
        });
        let err = result.expect("resolved").expect_err("refused");
        assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused);
    }

    #[test]
    fn ping_to_loopback_gets_its_reply() {
        let Some(kind) = EchoKind::probe() else {
            eprintln!("skipped: this process may open no ICMP socket");
            return;
        };
        let echo = HostEcho::open(kind, Ipv4Addr::LOCALHOST, 0x4242).unwrap();
        echo.send(7, b"tapswitch").unwrap();
        let mut buf = [0u8; 256];
        let reply = wait_readable(|| match echo.recv(&mut buf)? {
            Some(reply) => Ok(reply),
            // A raw socket also sees our own request on loopback.
            None => Err(io::Error::from(io::ErrorKind::WouldBlock)),
        });
        assert_eq!(reply.seq_no, 7);
        assert_eq!(&buf[reply.data.0..reply.data.1], b"tapswitch");
    }

    #[test]
    fn the_warning_says_how_many_flows_fit_and_how_to_raise_the_limit() {
        let line = descriptor_limit_advice(1024, 36, 16_384).expect("too few");
        assert!(line.contains("at most 1024 open descriptors"), "{line}");
        assert!(line.contains("about 924 flows (of 16384)"), "{line}");
        assert!(line.contains("ulimit -n 65536"), "{line}");
        assert!(!line.contains('\n'), "one line");
        assert_eq!(descriptor_limit_advice(1 << 20, 36, 16_384), None);
        let none_left = descriptor_limit_advice(10, 36, 16_384).unwrap();
        assert!(none_left.contains("about 0 flows"), "{none_left}");
    }

    #[test]
    fn the_descriptor_limit_is_raised_to_the_hard_limit() {
        let hard = std::fs::read_to_string("/proc/self/limits")
            .unwrap()
            .lines()
            .find(|l| l.starts_with("Max open files"))
            .and_then(|l| l.split_whitespace().nth(4).map(str::to_string))
            .expect("Max open files in /proc/self/limits");
        let now = raise_descriptor_limit().unwrap();
        if hard != "unlimited" {
            // Root (these tests' user) raises a low hard limit as well.
            let hard = hard.parse::<u64>().unwrap();
            assert!(now >= hard, "{now} < {hard}");
            assert!(now >= hard.min(HARD_LIMIT_WANTED));
        }
        // Twice is the same.
        assert_eq!(raise_descriptor_limit().unwrap(), now);
    }
}
