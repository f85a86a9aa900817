//! One overlay network across hosts: two tapswitch hosts and a host with a
//! kernel `vxlan` device, each a namespace on one underlay, a private etcd
//! on it (see `tapswitch_tests::overlay_lab`), containers on every host.
//!
//! ```text
//!   container A ── tapswitch serve (h0, 10.99.0.1) ─╮
//!   container B ── tapswitch serve (h1, 10.99.0.2) ─┼─ underlay ─ etcd
//!   container K ── br0 + vx0 (kernel, h2, 10.99.0.3)─╯
//!   stranger (h3, 10.99.0.4): no member, sends stray VXLAN
//! ```
//!
//! Skipped with a `SKIPPED` line when the etcd binary is missing (CI
//! installs it). Every process is ours and stopped by PID; every namespace
//! is removed by a guard, also when an assertion fails.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use ports::PortRx;

use tapswitch_tests::overlay_lab::OverlayLab;
use tapswitch_tests::poll::wait_for;
use tapswitch_tests::{in_netns, require_root, unique_name};

use tapswitch_tests::overlay_hosts::*;

#[test]
fn two_switches_and_a_kernel_vxlan_host_share_one_segment() {
    require_root();
    let Some(mut lab) = OverlayLab::new("two_switches_and_a_kernel_vxlan_host", 4) else {
        return;
    };
    lab.ok(
        0,
        &[
            "network", "create", "ov", "--driver", "overlay", "--subnet", SUBNET, "--vni", VNI,
        ],
    );
    lab.ok(0, &["network", "peer", "add", "ov", "10.99.0.3"]);
    let mut a = serve(&lab, 0);
    let mut b = serve(&lab, 1);
    let (_kernel_container_ns, kernel) = kernel_host(&lab, 2, &[0, 1]);
    let on_a = create_container(&mut lab, 0, &a);
    let on_b = create_container(&mut lab, 1, &b);
    assert_ne!(on_a.ip, on_b.ip, "one pool across hosts");

    // Each switch floods to the other and to the kernel host.
    for (switch, other) in [(&a, "10.99.0.2:4789"), (&b, "10.99.0.1:4789")] {
        wait_for("the members known", Duration::from_secs(15), || {
            let m = members(switch);
            m.contains(&other.to_string()) && m.contains(&"10.99.0.3:4789".to_string())
        });
    }

    // Every pair of hosts, and the gateway on each tapswitch host.
    ping_ok(&on_a, Ipv4Addr::new(10, 50, 0, 1));
    ping_ok(&on_b, Ipv4Addr::new(10, 50, 0, 1));
    ping_ok(&on_a, on_b.ip);
    ping_ok(&on_b, on_a.ip);
    ping_ok(&on_a, kernel.ip);
    ping_ok(&kernel, on_a.ip);
    ping_ok(&on_b, kernel.ip);
    ping_ok(&kernel, on_b.ip);
    // What the switches send into the underlay: between them TCP crosses
    // with partial inner checksums (the outer UDP checksum covers it); the
    // kernel host gets full ones (its TCP drops others: the transfer to it
    // would stall).
    let sent = InnerChecksums::start(&lab, &["h0", "h1"]);
    transfer_ok(&on_b, &on_a);
    transfer_ok(&kernel, &on_a);
    transfer_ok(&on_b, &kernel);
    let sent = sent.stop();
    let between_switches: u64 = [OverlayLab::underlay_ip(0), OverlayLab::underlay_ip(1)]
        .iter()
        .filter_map(|switch| sent.get(switch))
        .map(|(_, partial)| partial)
        .sum();
    assert!(
        between_switches > 0,
        "partial checksums between the switches: {sent:?}"
    );
    let to_kernel = sent.get(&OverlayLab::underlay_ip(2)).copied();
    assert!(
        to_kernel.is_some_and(|(full, partial)| full > 0 && partial == 0),
        "to the kernel host, full checksums only: {sent:?}"
    );

    // Learning across: each switch knows which host each remote MAC is behind.
    assert_eq!(via(&a, &on_b.mac).as_deref(), Some("10.99.0.2:4789"));
    assert_eq!(via(&a, &kernel.mac).as_deref(), Some("10.99.0.3:4789"));
    assert_eq!(via(&b, &on_a.mac).as_deref(), Some("10.99.0.1:4789"));
    assert_eq!(
        via(&a, &on_a.mac),
        None,
        "a local container is on its own port"
    );
    let kernel_fdb = std::process::Command::new("bridge")
        .args(["-n", &lab.hosts[2].name, "fdb", "show", "dev", "vx0"])
        .output()
        .expect("bridge fdb show");
    let kernel_fdb = String::from_utf8_lossy(&kernel_fdb.stdout);
    assert!(
        kernel_fdb
            .lines()
            .any(|l| l.starts_with(&on_a.mac) && l.contains("dst 10.99.0.1")),
        "the kernel learned A's container behind 10.99.0.1:\n{kernel_fdb}"
    );
    let text = lab.ok(0, &["fdb", "--control", &a.control.display().to_string()]);
    assert!(
        text.contains(&format!("vxlan0 via 10.99.0.2:4789  {}", on_b.mac)),
        "{text}"
    );

    // A stray VXLAN datagram from an address that is no member: dropped, counted.
    let stray_mac = "02:00:de:ad:be:ef";
    send_broadcast_arp(&lab.hosts[3].name, "10.99.0.4:4789", 4242, stray_mac);
    wait_for("the stray datagram counted", Duration::from_secs(5), || {
        tunnel(&a)["stats"]["rx_dropped_not_member"].as_u64() == Some(1)
    });
    assert_eq!(
        a.port_of(stray_mac),
        None,
        "nothing learned from a stranger"
    );
    // From a member, but with another VNI: dropped and counted too.
    // Any source port: the kernel's vx0 holds 4789 there.
    send_broadcast_arp(&lab.hosts[2].name, "10.99.0.3:0", 4243, stray_mac);
    wait_for("the wrong VNI counted", Duration::from_secs(5), || {
        tunnel(&a)["stats"]["rx_dropped_wrong_vni"].as_u64() == Some(1)
    });
    assert_eq!(a.port_of(stray_mac), None, "nothing learned from it");

    // etcd away: forwarding between known hosts goes on; back: re-registers.
    lab.etcd.stop();
    wait_for(
        "the switch noticing etcd away",
        Duration::from_secs(15),
        || a.log().contains("etcd does not answer"),
    );
    ping_ok(&on_a, on_b.ip);
    ping_ok(&on_a, kernel.ip);
    lab.etcd.restart();
    wait_for(
        "the switch noticing etcd back",
        Duration::from_secs(20),
        || a.log().contains("etcd answers again") && b.log().contains("etcd answers again"),
    );

    // A switch restarted: registers again, re-attaches its container
    // (same address), and the others take it back.
    a.restart(|| {});
    wait_for("A back in B's members", Duration::from_secs(15), || {
        members(&b).contains(&"10.99.0.1:4789".to_string())
    });
    assert_eq!(inspect_container(&on_a.ns).ip, on_a.ip);
    assert!(a.log().contains("re-attached container"), "{}", a.log());
    ping_ok(&on_a, on_b.ip);
    ping_ok(&kernel, on_a.ip);

    // A host killed: within its lease the others stop flooding to it and
    // forget its MACs.
    let pid = nix::unistd::Pid::from_raw(i32::try_from(b.pid()).unwrap());
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL).unwrap();
    wait_for("B's lease expiring at A", Duration::from_secs(20), || {
        !members(&a).contains(&"10.99.0.2:4789".to_string())
    });
    assert!(!b.is_running());
    assert_eq!(a.port_of(&on_b.mac), None, "B's container forgotten");
    assert!(
        tunnel(&a)["remotes"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r[1] != "10.99.0.2:4789"),
        "{}",
        tunnel(&a)
    );
    assert!(
        a.log().contains("member 10.99.0.2:4789 left"),
        "{}",
        a.log()
    );
    // The kernel host is still reached.
    ping_ok(&on_a, kernel.ip);
}

/// Per underlay destination, how many VXLAN datagrams carrying an inner
/// IPv4 TCP segment had a complete TCP checksum and how many did not (left
/// partial for the receiving switch).
type ChecksumsByDestination = BTreeMap<Ipv4Addr, (u64, u64)>;

/// Reads what hosts send into the underlay (on their bridge ports, in the
/// underlay namespace) and counts the inner TCP checksums, until stopped.
struct InnerChecksums {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<ChecksumsByDestination>,
}

impl InnerChecksums {
    fn start(lab: &OverlayLab, bridge_ports: &[&str]) -> Self {
        let mut lanes: Vec<ports::packet::PacketRx> = in_netns(&lab.underlay.name, || {
            bridge_ports
                .iter()
                .map(|port| ports::packet::open(port).expect("a packet socket").0)
                .collect()
        });
        let stop = Arc::new(AtomicBool::new(false));
        let thread = std::thread::spawn({
            let stop = stop.clone();
            move || {
                let mut counts = ChecksumsByDestination::new();
                let mut batch = ports::RxBatch::new(64, 65_536 + 256);
                while !stop.load(Ordering::Relaxed) {
                    let mut read = 0;
                    for lane in &mut lanes {
                        let n = lane.recv_batch(&mut batch).unwrap_or(0);
                        for i in 0..n {
                            if let Some((to, full)) = inner_tcp_checksum(batch.get(i).1) {
                                let count = counts.entry(to).or_default();
                                if full { count.0 += 1 } else { count.1 += 1 }
                            }
                        }
                        read += n;
                    }
                    if read == 0 {
                        std::thread::sleep(Duration::from_millis(1));
                    }
                }
                counts
            }
        });
        InnerChecksums { stop, thread }
    }

    fn stop(self) -> ChecksumsByDestination {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().expect("the capture thread")
    }
}

/// The outer destination of a VXLAN datagram to port 4789 whose inner
/// frame is IPv4 TCP, and whether that segment's checksum is complete. A
/// GSO packet holds several datagrams: the first one stands for them.
fn inner_tcp_checksum(frame: &[u8]) -> Option<(Ipv4Addr, bool)> {
    let be16 = |at: usize| Some(u16::from_be_bytes(frame.get(at..at + 2)?.try_into().ok()?));
    let address = |at: usize| -> Option<[u8; 4]> { frame.get(at..at + 4)?.try_into().ok() };
    let ip = 14;
    if be16(12)? != 0x0800 || *frame.get(ip + 9)? != 17 {
        return None;
    }
    let udp = ip + usize::from(frame[ip] & 0x0f) * 4;
    if be16(udp + 2)? != 4789 {
        return None;
    }
    let inner = udp + 8 + 8;
    let inner_ip = inner + 14;
    if be16(inner + 12)? != 0x0800 || *frame.get(inner_ip + 9)? != 6 {
        return None;
    }
    let header_len = usize::from(frame[inner_ip] & 0x0f) * 4;
    let total_len = usize::from(be16(inner_ip + 2)?);
    let segment = frame.get(inner_ip + header_len..inner_ip + total_len)?;
    // RFC 793: the ones' complement sum over the pseudo-header and the
    // segment, its checksum included, is all ones when complete.
    let mut pseudo = Vec::with_capacity(12);
    pseudo.extend_from_slice(&address(inner_ip + 12)?);
    pseudo.extend_from_slice(&address(inner_ip + 16)?);
    pseudo.extend_from_slice(&[0, 6]);
    pseudo.extend_from_slice(&u16::try_from(segment.len()).ok()?.to_be_bytes());
    let mut sum: u32 = pseudo
        .chunks(2)
        .chain(segment.chunks(2))
        .map(|pair| u32::from(u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    Some((Ipv4Addr::from(address(ip + 16)?), sum == 0xffff))
}

#[test]
fn two_hosts_creating_eight_containers_each_at_once_get_sixteen_addresses() {
    require_root();
    let Some(mut lab) = OverlayLab::new("two_hosts_creating_eight_containers_each", 2) else {
        return;
    };
    lab.ok(
        0,
        &[
            "network", "create", "ov", "--driver", "overlay", "--subnet", SUBNET,
        ],
    );
    let switches = [serve(&lab, 0), serve(&lab, 1)];
    let names: Vec<(usize, String)> = (0..16).map(|i| (i % 2, unique_name("cc"))).collect();
    for (_, name) in &names {
        lab.adopt_container(name);
    }
    let lab = &lab;
    let created: Vec<Container> = std::thread::scope(|scope| {
        let handles: Vec<_> = names
            .iter()
            .map(|(host, name)| {
                let control = switches[*host].control.display().to_string();
                scope.spawn(move || {
                    lab.ok(
                        *host,
                        &[
                            "container",
                            "create",
                            name,
                            "--network",
                            "ov",
                            "--control",
                            &control,
                        ],
                    );
                    inspect_container(&OverlayLab::container_ns(name))
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let distinct: std::collections::BTreeSet<Ipv4Addr> = created.iter().map(|c| c.ip).collect();
    assert_eq!(distinct.len(), 16, "{created:?}");
    // And they reach each other across the hosts.
    ping_ok(&created[0], created[1].ip);
}

/// Sends host A's tunnel, from namespace `ns` and local address `from`,
/// one VXLAN datagram with `vni` carrying a broadcast ARP frame from
/// `source_mac` (its body zeros).
fn send_broadcast_arp(ns: &str, from: &str, vni: u32, source_mac: &str) {
    in_netns(ns, || {
        let socket = UdpSocket::bind(from).unwrap();
        let mut datagram = ports::wire::vxlan::header(vni).to_vec();
        datagram.extend_from_slice(&[0xff; 6]);
        datagram.extend_from_slice(&tapswitch_tests::frames::mac(source_mac));
        datagram.extend_from_slice(&[0x08, 0x06]);
        datagram.extend_from_slice(&[0; 46]);
        socket
            .send_to(
                &datagram,
                SocketAddrV4::new(OverlayLab::underlay_ip(0), 4789),
            )
            .unwrap();
    });
}
