//! Back-pressure through the gateway (issue 14: "a slow reader on either
//! side never grows memory without bound"), as root in namespaces this
//! test makes: a remote that writes to a container that does not read,
//! and a container that writes to a remote that does not read. Each writer
//! is stopped by full buffers (the switch stops reading the other side),
//! not by the switch's memory; once the reader reads, every byte arrives.
//!
//! Nothing here asserts a timing: a writer counts as stopped when one
//! write has made no progress for a while.

use std::io::{self, Read, Write};
use std::net::{SocketAddrV4, TcpListener, TcpStream};
use std::time::Duration;

use tapswitch_tests::remote::{REMOTE_IP, Remote};
use tapswitch_tests::{Netns, SwitchProcess, Topology, require_root};

/// What the switch may hold for one stalled flow, with every buffer on the
/// way (its relay buffers, the smoltcp socket's window, allocator slack).
const RSS_BUDGET_KIB: u64 = 32 * 1024;
/// More than every buffer on the path together (the kernels' socket
/// buffers on both sides, the switch's): a writer that gets this far is
/// not held back.
const UNBOUNDED: usize = 256 << 20;

/// The switch's resident memory, in KiB (`VmRSS`).
fn rss_kib(switch: &SwitchProcess) -> u64 {
    switch.memory_kib("VmRSS")
}

/// Writes a counting pattern into `stream` until a write makes no
/// progress for 2 s (the reader's buffers and everything between are
/// full) or [`UNBOUNDED`] bytes went; returns how many bytes went.
fn write_until_stalled(stream: &mut TcpStream) -> usize {
    stream
        .set_write_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let chunk: Vec<u8> = (0..65_536u32).map(|i| (i % 251) as u8).collect();
    let mut sent = 0;
    while sent < UNBOUNDED {
        let at = sent % 251;
        match stream.write(&chunk[at..]) {
            Ok(n) => sent += n,
            Err(err)
                if matches!(
                    err.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                break;
            }
            Err(err) => panic!("writing: {err}"),
        }
    }
    sent
}

/// Reads `stream` to its end, checking the counting pattern; returns the
/// byte count.
fn read_pattern(stream: &mut TcpStream) -> usize {
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut buf = vec![0u8; 65_536];
    let mut got = 0;
    loop {
        let n = stream.read(&mut buf).expect("reading");
        if n == 0 {
            return got;
        }
        for (i, byte) in buf[..n].iter().enumerate() {
            assert_eq!(
                usize::from(*byte),
                (got + i) % 251,
                "byte {} intact",
                got + i
            );
        }
        got += n;
    }
}

/// A listener in the remote namespace on `port`.
fn remote_listener(remote: &Remote, port: u16) -> TcpListener {
    remote.ns.run(|| {
        TcpListener::bind(SocketAddrV4::new(REMOTE_IP, port)).expect("binding in the remote")
    })
}

fn connect_from(ns: &Netns, port: u16) -> TcpStream {
    ns.run(|| {
        TcpStream::connect_timeout(
            &SocketAddrV4::new(REMOTE_IP, port).into(),
            Duration::from_secs(10),
        )
        .expect("connecting to the remote through the gateway")
    })
}

#[test]
fn a_reader_that_does_not_read_stops_the_writer_not_the_switchs_memory() {
    require_root();
    let topo = Topology::veth_star(1);
    let remote = Remote::new(&topo.switch_ns);
    let switch = SwitchProcess::start(&topo.switch_ns.name, &topo.iface_args());
    let container = &topo.hosts[0].ns;

    // The remote writes, the container does not read.
    let listener = remote_listener(&remote, 7600);
    let writer = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().expect("the container's connection");
        let sent = write_until_stalled(&mut stream);
        (stream, sent)
    });
    let mut slow = connect_from(container, 7600);
    let before = rss_kib(&switch);
    let (stream, sent) = writer.join().expect("the remote's writer");
    let grown = rss_kib(&switch).saturating_sub(before);
    assert!(
        sent < UNBOUNDED,
        "the remote was never held back\n{}",
        switch.log()
    );
    assert!(
        grown < RSS_BUDGET_KIB,
        "the switch grew by {grown} KiB holding a stalled flow"
    );
    drop(stream); // a FIN after the bytes
    assert_eq!(
        read_pattern(&mut slow),
        sent,
        "every byte arrives once read"
    );

    // The container writes, the remote does not read.
    let listener = remote_listener(&remote, 7601);
    let accepted = std::thread::spawn(move || listener.accept().expect("a connection").0);
    let mut fast = connect_from(container, 7601);
    let mut held = accepted.join().expect("the remote's listener");
    let before = rss_kib(&switch);
    let sent = container.run(|| write_until_stalled(&mut fast));
    let grown = rss_kib(&switch).saturating_sub(before);
    assert!(
        sent < UNBOUNDED,
        "the container was never held back\n{}",
        switch.log()
    );
    assert!(
        grown < RSS_BUDGET_KIB,
        "the switch grew by {grown} KiB holding a stalled flow"
    );
    fast.shutdown(std::net::Shutdown::Write).unwrap();
    assert_eq!(
        read_pattern(&mut held),
        sent,
        "every byte arrives once read"
    );
}
