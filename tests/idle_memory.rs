//! An idle switch holds little memory, also after traffic: the pages large
//! frames made resident in the workers' receive batches (64 KiB slots, as
//! a TAP hands over TCP in segments of up to 64 KiB) go back to the kernel
//! once the switch is quiet (no frame read for two seconds). Needs root;
//! CI runs it as root.
//!
//! ```text
//!   h1 eth0 (TAP t1) ┐
//!                    ├─ serve --tap t1 --tap t2
//!   h2 eth0 (TAP t2) ┘
//! ```

use std::io::Write;
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::time::Duration;

use tapswitch_tests::poll::within;
use tapswitch_tests::traffic::tcp_transfer;
use tapswitch_tests::{Netns, require_root, tap_pair};

/// The least growth bulk TCP through TAP ports gives the switch's anonymous
/// memory: half a worker's batch of 64 KiB slots filled.
const GROWTH_KIB: u64 = 1024;

/// Sends `bytes` zero bytes over TCP from `client` to `server` at
/// `server_ip`, as fast as the sender's stack takes them (the load is the
/// point, not the data: `tcp_transfer` checks data, and its hashing makes
/// a slow sender of small segments in a debug build).
fn bulk(client: &Netns, server: &Netns, server_ip: Ipv4Addr, bytes: usize) {
    let listener = server
        .run(|| TcpListener::bind((server_ip, 0)))
        .expect("listening in the server's namespace");
    let port = listener.local_addr().unwrap().port();
    let sink = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept()?;
        std::io::copy(&mut stream, &mut std::io::sink())
    });
    client
        .run(|| -> std::io::Result<()> {
            let mut stream = TcpStream::connect((server_ip, port))?;
            stream.set_write_timeout(Some(Duration::from_secs(30)))?;
            let chunk = vec![0u8; 256 * 1024];
            for _ in 0..bytes / chunk.len() {
                stream.write_all(&chunk)?;
            }
            Ok(())
        })
        .expect("sending through the switch");
    let received = sink.join().expect("the sink").expect("receiving");
    assert_eq!(received, bytes as u64, "every byte arrived");
}

#[test]
fn after_a_transfer_the_idle_switch_gives_its_receive_slots_back() {
    require_root();
    let (_switch_ns, switch, hosts) = tap_pair(&[]);
    let h2 = Ipv4Addr::new(172, 17, 0, 3);
    let before = switch.memory_kib("RssAnon");
    // A bulk sender that does nothing else fills a TAP's queue with
    // segments of up to 64 KiB, and a worker's batch with them.
    let h1 = Ipv4Addr::new(172, 17, 0, 2);
    let mut busy = before;
    for (from, to, at) in [(0, 1, h2), (1, 0, h1)].into_iter().cycle().take(10) {
        bulk(&hosts[from], &hosts[to], at, 256 << 20);
        busy = switch.memory_kib("RssAnon");
        if busy >= before + GROWTH_KIB {
            break;
        }
    }
    assert!(
        busy >= before + GROWTH_KIB,
        "bulk transfers should have filled receive slots: {before} KiB before, {busy} KiB after"
    );
    // The batches give their pages back once the switch is quiet: most of
    // the growth goes (the rest is the heap's: flows, buffers).
    let kept = before + (busy - before) / 2;
    let given_back = within(Duration::from_secs(10), || {
        switch.memory_kib("RssAnon") <= kept
    });
    assert!(
        given_back,
        "an idle switch kept what traffic made resident: {before} KiB before the transfers, \
         {busy} KiB right after, {} KiB ten seconds later",
        switch.memory_kib("RssAnon")
    );
    // And the switch forwards on, into pages it faults in again.
    tcp_transfer(&hosts[1], h2, &hosts[0], 8 << 20).expect("8 MB after the pages went back");
}
