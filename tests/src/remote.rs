//! A "remote" namespace for the gateway's services: reached from the
//! switch's namespace through a veth pair and a route, like a host's
//! uplink, with a UDP echo server, a tiny DNS server and a TCP server on
//! [`REMOTE_IP`]. Nothing leaves the namespaces the test made.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use crate::netns::Netns;

/// The servers' address: on the remote namespace's loopback, reached by a
/// route through the veth (documentation range, RFC 5737).
pub const REMOTE_IP: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 7);
pub const UDP_ECHO_PORT: u16 = 7007;
pub const DNS_PORT: u16 = 5353;
pub const TCP_ECHO_PORT: u16 = 7008;
/// A TCP port nobody listens on (connects are refused).
pub const CLOSED_PORT: u16 = 7009;
/// A TCP port whose listener never accepts: connections wait, established,
/// in its accept queue (sized for thousands), so a test can hold many idle
/// flows without a descriptor per connection on the remote side.
pub const HOLD_PORT: u16 = 7010;
/// An address on the remote's route that nobody has: the remote namespace
/// does not forward, so SYNs to it vanish and connects hang (a black hole).
pub const BLACK_HOLE: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 99);
/// A TCP server that closes first: it sends [`HALF_CLOSE_GREETING`], shuts
/// its sending half, then reads until the client closes and records how
/// many bytes came ([`Remote::half_close_received`]).
pub const HALF_CLOSE_PORT: u16 = 7011;
pub const HALF_CLOSE_GREETING: &[u8] = b"closing my half first\n";
/// How long a server's accept loop naps when nobody is waiting (it checks
/// its stop flag in between): short, so a test of many short connections
/// measures the switch rather than this nap.
const ACCEPT_NAP: Duration = Duration::from_millis(1);
/// The accept queue of [`HOLD_PORT`].
const HOLD_BACKLOG: i32 = 65_535;
/// What the DNS server answers for every A question.
pub const DNS_ANSWER: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 9);
/// Names under `big.` are answered with these three addresses over TCP;
/// over UDP the answer is truncated (TC set, no records), so a resolver
/// must ask again over TCP. The DNS server listens on TCP [`DNS_PORT`] too.
pub const BIG_ANSWERS: [Ipv4Addr; 3] = [
    DNS_ANSWER,
    Ipv4Addr::new(203, 0, 113, 10),
    Ipv4Addr::new(203, 0, 113, 11),
];

/// The remote namespace and its servers; dropping it stops them and
/// removes the namespace.
#[derive(Debug)]
pub struct Remote {
    pub ns: Netns,
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
    /// The listener of [`HOLD_PORT`] (until [`Remote::close_hold_port`]).
    hold: Option<socket2::Socket>,
    half_close_received: Arc<Mutex<Vec<usize>>>,
    dns_tcp_queries: Arc<AtomicUsize>,
}

impl Remote {
    /// Joins a new namespace to `switch_ns` (10.201.0.1 there, 10.201.0.2
    /// here; `REMOTE_IP/32` on loopback; routes both ways) and starts the
    /// servers.
    pub fn new(switch_ns: &Netns) -> Remote {
        let ns = Netns::new("trm");
        ns.ip(&[
            "link",
            "add",
            "eth0",
            "type",
            "veth",
            "peer",
            "name",
            "uplink",
            "netns",
            &switch_ns.name,
        ]);
        ns.ip(&["addr", "add", "10.201.0.2/24", "dev", "eth0"]);
        ns.ip(&["link", "set", "eth0", "up"]);
        ns.ip(&["addr", "add", &format!("{REMOTE_IP}/32"), "dev", "lo"]);
        ns.ip(&["route", "add", "default", "via", "10.201.0.1"]);
        switch_ns.ip(&["addr", "add", "10.201.0.1/24", "dev", "uplink"]);
        switch_ns.ip(&["link", "set", "uplink", "up"]);
        switch_ns.ip(&["route", "add", "198.51.100.0/24", "via", "10.201.0.2"]);
        ns.sysctl("net.core.somaxconn", &HOLD_BACKLOG.to_string());
        ns.sysctl("net.ipv4.tcp_max_syn_backlog", &HOLD_BACKLOG.to_string());
        let stop = Arc::new(AtomicBool::new(false));
        let (udp, dns, tcp, hold, half, dns_tcp) = ns.run(|| {
            (
                UdpSocket::bind(SocketAddrV4::new(REMOTE_IP, UDP_ECHO_PORT)).unwrap(),
                UdpSocket::bind(SocketAddrV4::new(REMOTE_IP, DNS_PORT)).unwrap(),
                TcpListener::bind(SocketAddrV4::new(REMOTE_IP, TCP_ECHO_PORT)).unwrap(),
                hold_listener(),
                TcpListener::bind(SocketAddrV4::new(REMOTE_IP, HALF_CLOSE_PORT)).unwrap(),
                TcpListener::bind(SocketAddrV4::new(REMOTE_IP, DNS_PORT)).unwrap(),
            )
        });
        let dns_tcp_queries = Arc::new(AtomicUsize::new(0));
        let half_close_received = Arc::new(Mutex::new(Vec::new()));
        let threads = vec![
            spawn_udp(udp, stop.clone(), |query| Some(query.to_vec())),
            spawn_udp(dns, stop.clone(), dns_answer),
            spawn_tcp_echo(tcp, stop.clone()),
            spawn_half_close(half, stop.clone(), half_close_received.clone()),
            spawn_dns_tcp(dns_tcp, stop.clone(), dns_tcp_queries.clone()),
        ];
        Remote {
            ns,
            stop,
            threads,
            hold: Some(hold),
            half_close_received,
            dns_tcp_queries,
        }
    }

    /// Closes the listener of [`HOLD_PORT`]: the kernel resets every
    /// connection still waiting in its accept queue.
    pub fn close_hold_port(&mut self) {
        self.hold = None;
    }

    /// Queries the DNS server answered over TCP so far.
    pub fn dns_tcp_queries(&self) -> usize {
        self.dns_tcp_queries.load(Ordering::Relaxed)
    }

    /// What each finished connection to [`HALF_CLOSE_PORT`] brought, in
    /// the order they finished.
    pub fn half_close_received(&self) -> Vec<usize> {
        self.half_close_received
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// The listener of [`HOLD_PORT`] (std's listeners have a fixed backlog).
fn hold_listener() -> socket2::Socket {
    use socket2::{Domain, SockAddr, Socket, Type};
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    socket.set_reuse_address(true).unwrap();
    socket
        .bind(&SockAddr::from(SocketAddrV4::new(REMOTE_IP, HOLD_PORT)))
        .unwrap();
    socket.listen(HOLD_BACKLOG).unwrap();
    socket
}

impl Drop for Remote {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

fn spawn_udp(
    socket: UdpSocket,
    stop: Arc<AtomicBool>,
    answer: fn(&[u8]) -> Option<Vec<u8>>,
) -> std::thread::JoinHandle<()> {
    socket
        .set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 65_535];
        while !stop.load(Ordering::Relaxed) {
            if let Ok((n, from)) = socket.recv_from(&mut buf)
                && let Some(reply) = answer(&buf[..n])
            {
                let _ = socket.send_to(&reply, from);
            }
        }
    })
}

/// Accepts connections on `listener` until `stop`, serving each in a
/// thread of its own (blocking, reads timing out after `read_timeout`).
fn serve_connections(
    listener: TcpListener,
    stop: Arc<AtomicBool>,
    read_timeout: Option<Duration>,
    serve: impl Fn(TcpStream) + Clone + Send + 'static,
) -> std::thread::JoinHandle<()> {
    listener.set_nonblocking(true).unwrap();
    std::thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            match listener.accept() {
                Ok((stream, _)) => {
                    stream.set_nonblocking(false).unwrap();
                    stream.set_read_timeout(read_timeout).unwrap();
                    let serve = serve.clone();
                    std::thread::spawn(move || serve(stream));
                }
                Err(_) => std::thread::sleep(ACCEPT_NAP),
            }
        }
    })
}

/// Echoes each connection's bytes back until its client closes, then
/// closes too.
fn spawn_tcp_echo(listener: TcpListener, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<()> {
    serve_connections(listener, stop, None, |mut stream| {
        let mut buf = vec![0u8; 65_536];
        while let Ok(n) = stream.read(&mut buf) {
            if n == 0 || stream.write_all(&buf[..n]).is_err() {
                break;
            }
        }
    })
}

/// The server of [`HALF_CLOSE_PORT`].
fn spawn_half_close(
    listener: TcpListener,
    stop: Arc<AtomicBool>,
    received: Arc<Mutex<Vec<usize>>>,
) -> std::thread::JoinHandle<()> {
    let timeout = Some(Duration::from_secs(30));
    serve_connections(listener, stop, timeout, move |mut stream| {
        if stream.write_all(HALF_CLOSE_GREETING).is_err()
            || stream.shutdown(std::net::Shutdown::Write).is_err()
        {
            return;
        }
        let mut sink = Vec::new();
        if stream.read_to_end(&mut sink).is_ok() {
            received
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(sink.len());
        }
    })
}

/// The tiny DNS server over UDP: every A question gets [`DNS_ANSWER`];
/// names under `big.` get a truncated answer ([`BIG_ANSWERS`]).
fn dns_answer(query: &[u8]) -> Option<Vec<u8>> {
    if query_name(query)?.starts_with("big.") {
        return answer_with(query, &[], true);
    }
    answer_with(query, &[DNS_ANSWER], false)
}

/// The same server over TCP: nothing is truncated.
fn dns_answer_tcp(query: &[u8]) -> Option<Vec<u8>> {
    if query_name(query)?.starts_with("big.") {
        return answer_with(query, &BIG_ANSWERS, false);
    }
    answer_with(query, &[DNS_ANSWER], false)
}

/// The question's name, dotted.
fn query_name(query: &[u8]) -> Option<String> {
    let mut at = 12;
    let mut labels = Vec::new();
    while *query.get(at)? != 0 {
        let len = usize::from(query[at]);
        labels.push(String::from_utf8_lossy(query.get(at + 1..at + 1 + len)?).into_owned());
        at += len + 1;
    }
    Some(labels.join(".") + ".")
}

/// An answer in raw bytes: the question copied, one record per address,
/// each pointing back at the question's name; TC set if `truncated`.
fn answer_with(query: &[u8], addresses: &[Ipv4Addr], truncated: bool) -> Option<Vec<u8>> {
    if query.len() < 12 {
        return None;
    }
    let mut end = 12;
    while *query.get(end)? != 0 {
        end += usize::from(query[end]) + 1;
    }
    let question_end = end + 5;
    let mut reply = query.get(..question_end)?.to_vec();
    reply[2] = if truncated { 0x83 } else { 0x81 }; // QR, (TC,) RD
    reply[3] = 0x80; // RA, NOERROR
    let count = u16::try_from(addresses.len()).ok()?.to_be_bytes();
    reply[6..12].copy_from_slice(&[count[0], count[1], 0, 0, 0, 0]);
    for address in addresses {
        reply.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4]);
        reply.extend_from_slice(&address.octets());
    }
    Some(reply)
}

/// The DNS server over TCP: length-prefixed queries, one thread per
/// connection, answers until the client closes; counts the queries.
fn spawn_dns_tcp(
    listener: TcpListener,
    stop: Arc<AtomicBool>,
    queries: Arc<AtomicUsize>,
) -> std::thread::JoinHandle<()> {
    let timeout = Some(Duration::from_secs(10));
    serve_connections(listener, stop, timeout, move |mut stream| {
        let mut len = [0u8; 2];
        while stream.read_exact(&mut len).is_ok() {
            let mut query = vec![0u8; usize::from(u16::from_be_bytes(len))];
            if stream.read_exact(&mut query).is_err() {
                return;
            }
            queries.fetch_add(1, Ordering::Relaxed);
            let Some(answer) = dns_answer_tcp(&query) else {
                return;
            };
            let mut framed = u16::try_from(answer.len()).unwrap().to_be_bytes().to_vec();
            framed.extend_from_slice(&answer);
            if stream.write_all(&framed).is_err() {
                return;
            }
        }
    })
}

/// A DNS query for `name`'s A record with id `id`.
pub fn dns_query(id: u16, name: &str) -> Vec<u8> {
    let mut query = id.to_be_bytes().to_vec();
    query.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.split('.') {
        query.push(u8::try_from(label.len()).unwrap());
        query.extend_from_slice(label.as_bytes());
    }
    query.extend_from_slice(&[0, 0, 1, 0, 1]);
    query
}

/// The A records of a DNS answer (answers right after the one question).
pub fn dns_addresses(reply: &[u8]) -> Vec<Ipv4Addr> {
    let count = usize::from(u16::from_be_bytes([reply[6], reply[7]]));
    let mut at = 12;
    while reply[at] != 0 {
        at += usize::from(reply[at]) + 1;
    }
    at += 5;
    let mut out = Vec::new();
    for _ in 0..count {
        // A name: a pointer (2 bytes) or labels.
        if reply[at] & 0xc0 == 0xc0 {
            at += 2;
        } else {
            while reply[at] != 0 {
                at += usize::from(reply[at]) + 1;
            }
            at += 1;
        }
        let ty = u16::from_be_bytes([reply[at], reply[at + 1]]);
        let len = usize::from(u16::from_be_bytes([reply[at + 8], reply[at + 9]]));
        at += 10;
        if ty == 1 && len == 4 {
            out.push(Ipv4Addr::new(
                reply[at],
                reply[at + 1],
                reply[at + 2],
                reply[at + 3],
            ));
        }
        at += len;
    }
    out
}
