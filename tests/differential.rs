//! Differential tests: the same scenarios against the Linux kernel bridge
//! (the oracle) and against tapswitch, on the same topology, and the
//! observations compared. Behaviour is compared, not guessed.
//!
//! ```text
//!   h1 eth0 ═ p1 ┐
//!   h2 eth0 ═ p2 ├─ switch ns: either `br0` (kernel bridge, ageing 2 s, 172.17.0.1 on br0)
//!   h3 eth0 ═ p3 │             or `tapswitch serve --iface p1..p4 --ageing-time 2`
//!   h4 eth0 ═ p4 ┘
//! ```
//!
//! An observation is, for every host, the list of probe frames that reached
//! its `eth0` (see `frames`), bytes included. Probes use an experimental
//! EtherType that no kernel stack answers, so only the switch decides where
//! they go. Needs root; CI runs it as root.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use tapswitch_tests::frames::{mac_text, probe, probe_vlan};
use tapswitch_tests::poll::within;
use tapswitch_tests::traffic::{Station, ping, tcp_transfer};
use tapswitch_tests::{SwitchProcess, Topology, require_root};

const AGEING_SECS: u64 = 2;
/// For scenarios about something else than ageing that take long under
/// load (a storm): learned hosts must not age out while they run.
const LONG_AGEING_SECS: u64 = 300;
const GATEWAY: Ipv4Addr = Ipv4Addr::new(172, 17, 0, 1);

/// Source addresses the probes use; none is a host's real `eth0` address.
fn station_mac(i: usize) -> [u8; 6] {
    [0x02, 0x00, 0x00, 0x00, 0xaa, i as u8 + 1]
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    KernelBridge,
    Tapswitch,
}

/// One switch under test with its four hosts.
struct Rig {
    kind: Kind,
    stations: Vec<Station>,
    switch: Option<SwitchProcess>,
    topo: Topology,
}

impl Rig {
    fn new(kind: Kind) -> Rig {
        Rig::with_ageing(kind, AGEING_SECS)
    }

    fn with_ageing(kind: Kind, ageing_secs: u64) -> Rig {
        let topo = Topology::veth_star(4);
        let switch = match kind {
            Kind::KernelBridge => {
                let ns = &topo.switch_ns;
                let centis = (ageing_secs * 100).to_string();
                ns.ip(&[
                    "link",
                    "add",
                    "br0",
                    "type",
                    "bridge",
                    "ageing_time",
                    &centis,
                    "stp_state",
                    "0",
                ]);
                for host in &topo.hosts {
                    ns.ip(&["link", "set", &host.port, "master", "br0"]);
                }
                ns.ip(&["addr", "add", "172.17.0.1/16", "dev", "br0"]);
                ns.ip(&["link", "set", "br0", "up"]);
                None
            }
            Kind::Tapswitch => {
                let mut args = topo.iface_args();
                args.extend(["--ageing-time".to_string(), ageing_secs.to_string()]);
                Some(SwitchProcess::start(&topo.switch_ns.name, &args))
            }
        };
        let stations = topo
            .hosts
            .iter()
            .map(|h| Station::open(&h.ns, "eth0"))
            .collect();
        let mut rig = Rig {
            kind,
            stations,
            switch,
            topo,
        };
        // The kernel bridge forwards only once its ports are in forwarding
        // state; a first frame through both proves the switch is ready.
        rig.wait_until_forwarding();
        rig
    }

    fn wait_until_forwarding(&mut self) {
        let forwarded = within(Duration::from_secs(30), || {
            self.send(0, &probe([0xff; 6], station_mac(0), 0, 60));
            self.observe()[1].iter().any(|(id, _)| *id == 0)
        });
        assert!(forwarded, "{:?} never started forwarding", self.kind);
    }

    fn send(&self, host: usize, frame: &[u8]) {
        self.stations[host].send(frame);
    }

    /// The probes each host received since the last observation.
    fn observe(&mut self) -> Vec<Vec<(u32, Vec<u8>)>> {
        let window = Duration::from_millis(200);
        let mut seen: Vec<Vec<(u32, Vec<u8>)>> = vec![Vec::new(); self.stations.len()];
        let mut quiet_until = Instant::now() + window;
        while Instant::now() < quiet_until {
            let mut any = false;
            for (host, station) in self.stations.iter_mut().enumerate() {
                let probes = station.collect_probes(Duration::ZERO);
                any |= !probes.is_empty();
                seen[host].extend(probes);
            }
            if any {
                quiet_until = Instant::now() + window;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        seen
    }

    /// Which hosts received probe `id` (and how many copies each).
    fn receivers(&mut self, id: u32) -> Vec<usize> {
        let seen = self.observe();
        let mut who = Vec::new();
        for (host, probes) in seen.iter().enumerate() {
            for _ in probes.iter().filter(|(p, _)| *p == id) {
                who.push(host + 1);
            }
        }
        who
    }

    fn is_alive(&mut self) -> bool {
        self.switch.as_mut().is_none_or(SwitchProcess::is_running)
    }

    /// Pins `mac` to host `host`'s port: `bridge fdb replace ... static sticky`
    /// on the kernel bridge (a plain Linux `static` entry moves with
    /// traffic, see `linux_plain_static_entries_move`), `fdb add` on ours.
    fn add_static(&self, mac: [u8; 6], host: usize) {
        let (mac, port) = (mac_text(&mac), &self.topo.hosts[host].port);
        match &self.switch {
            None => self.bridge(&[
                "fdb", "replace", &mac, "dev", port, "master", "static", "sticky",
            ]),
            Some(switch) => {
                let request = format!(r#"{{"cmd":"fdb_add","mac":"{mac}","port":"{port}"}}"#);
                switch.call(&request).expect("fdb add");
            }
        }
    }

    /// `bridge fdb del` / `fdb del`.
    fn del(&self, mac: [u8; 6], host: usize) {
        let (mac, port) = (mac_text(&mac), &self.topo.hosts[host].port);
        match &self.switch {
            None => self.bridge(&["fdb", "del", &mac, "dev", port, "master"]),
            Some(switch) => {
                let request = format!(r#"{{"cmd":"fdb_del","mac":"{mac}"}}"#);
                switch.call(&request).expect("fdb del");
            }
        }
    }

    /// Forgets the learned entries of host `host`'s port: the kernel's
    /// port flush (`ip link set PORT type bridge_slave fdb_flush`), `fdb
    /// flush --port` on ours.
    fn flush_port(&self, host: usize) {
        let port = &self.topo.hosts[host].port;
        match &self.switch {
            None => self.topo.switch_ns.ip(&[
                "link",
                "set",
                "dev",
                port,
                "type",
                "bridge_slave",
                "fdb_flush",
            ]),
            Some(switch) => {
                let request = format!(r#"{{"cmd":"fdb_flush","port":"{port}"}}"#);
                switch.call(&request).expect("fdb flush");
            }
        }
    }

    fn bridge(&self, args: &[&str]) {
        let out = self.topo.switch_ns.exec("bridge", args);
        assert!(
            out.status.success(),
            "bridge {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Runs `scenario` against the kernel bridge and tapswitch and requires the
/// same observations. Returns tapswitch's for further checks.
fn compare<T: PartialEq + std::fmt::Debug>(scenario: impl Fn(&mut Rig) -> T) -> T {
    compare_with_ageing(AGEING_SECS, scenario)
}

fn compare_with_ageing<T: PartialEq + std::fmt::Debug>(
    ageing_secs: u64,
    scenario: impl Fn(&mut Rig) -> T,
) -> T {
    require_root();
    let oracle = scenario(&mut Rig::with_ageing(Kind::KernelBridge, ageing_secs));
    let ours = scenario(&mut Rig::with_ageing(Kind::Tapswitch, ageing_secs));
    assert_eq!(
        ours, oracle,
        "tapswitch (left) behaved differently from the kernel bridge (right)"
    );
    ours
}

#[test]
fn flooding_learning_and_moves() {
    let seen = compare(|rig| {
        let [a1, a2, a3] = [station_mac(0), station_mac(1), station_mac(2)];
        let mut out = Vec::new();
        // Unknown unicast and broadcast flood to every other port.
        rig.send(0, &probe(a2, a1, 1, 60));
        out.push(rig.receivers(1));
        rig.send(0, &probe([0xff; 6], a1, 2, 60));
        out.push(rig.receivers(2));
        // h2 answers a1: a1 was learned on p1, so only h1 gets it...
        rig.send(1, &probe(a1, a2, 3, 60));
        out.push(rig.receivers(3));
        // ...and now a2 is known on p2.
        rig.send(0, &probe(a2, a1, 4, 60));
        out.push(rig.receivers(4));
        // a2 moves to p3: frames for it follow.
        rig.send(2, &probe([0xff; 6], a2, 5, 60));
        out.push(rig.receivers(5));
        rig.send(0, &probe(a2, a1, 6, 60));
        out.push(rig.receivers(6));
        // a3 is unknown: multicast and unknown unicast both flood.
        rig.send(
            3,
            &probe([0x01, 0x00, 0x5e, 0x00, 0x00, 0x7b], station_mac(3), 7, 60),
        );
        out.push(rig.receivers(7));
        rig.send(3, &probe(a3, station_mac(3), 8, 60));
        out.push(rig.receivers(8));
        out
    });
    let expected: Vec<Vec<usize>> = vec![
        vec![2, 3, 4],
        vec![2, 3, 4],
        vec![1],
        vec![2],
        vec![1, 2, 4],
        vec![3],
        vec![1, 2, 3],
        vec![1, 2, 3],
    ];
    assert_eq!(seen, expected);
}

#[test]
fn aging_forgets_silent_hosts() {
    let seen = compare(|rig| {
        let [a1, a2] = [station_mac(0), station_mac(1)];
        rig.send(1, &probe([0xff; 6], a2, 1, 60));
        rig.observe();
        rig.send(0, &probe(a2, a1, 2, 60));
        let before = rig.receivers(2);
        // Silence past the ageing time: a2 is forgotten, frames flood again.
        std::thread::sleep(Duration::from_millis(AGEING_SECS * 1000 + 1500));
        rig.send(0, &probe(a2, a1, 3, 60));
        let after = rig.receivers(3);
        (before, after)
    });
    assert_eq!(seen, (vec![2], vec![2, 3, 4]));
}

#[test]
fn link_local_group_sources_and_hairpin() {
    let seen = compare(|rig| {
        let [a1, a2] = [station_mac(0), station_mac(1)];
        let mut out = Vec::new();
        // IEEE 802.1D link-local destinations: pause, LACP, 802.1X, LLDP,
        // ... are never forwarded; the STP group address (00) floods on a
        // bridge without STP.
        for (id, last) in [0x00u8, 0x01, 0x02, 0x03, 0x0e, 0x0f].iter().enumerate() {
            rig.send(
                0,
                &probe(
                    [0x01, 0x80, 0xc2, 0x00, 0x00, *last],
                    a1,
                    10 + id as u32,
                    60,
                ),
            );
            out.push(rig.receivers(10 + id as u32));
        }
        // A group source address is dropped, and not learned.
        let group = [0x01, 0x00, 0x5e, 0x00, 0x00, 0x01];
        rig.send(0, &probe(a2, group, 20, 60));
        out.push(rig.receivers(20));
        rig.send(1, &probe(group, a2, 21, 60));
        out.push(rig.receivers(21));
        // Hairpin: b lives on p1, so a frame from p1 to b goes nowhere.
        let b = station_mac(9);
        rig.send(0, &probe([0xff; 6], b, 22, 60));
        rig.observe();
        rig.send(0, &probe(b, a1, 23, 60));
        out.push(rig.receivers(23));
        out
    });
    assert_eq!(
        seen[0],
        vec![2, 3, 4],
        "STP BPDU group address floods without STP"
    );
    assert!(
        seen[1..6].iter().all(Vec::is_empty),
        "link-local frames stay put: {seen:?}"
    );
    assert_eq!(seen[6], Vec::<usize>::new(), "group source dropped");
    assert_eq!(seen[7], vec![1, 3, 4], "group destination floods");
    assert_eq!(seen[8], Vec::<usize>::new(), "no hairpin");
}

#[test]
fn static_entries_stay_put_and_survive_a_port_flush() {
    let seen = compare(|rig| {
        let [a1, a2, a3] = [station_mac(0), station_mac(1), station_mac(2)];
        let mut out = Vec::new();
        // a1 is pinned to p1 before it ever speaks: no flood to reach it.
        rig.add_static(a1, 0);
        rig.send(2, &probe(a1, a3, 1, 60));
        out.push(rig.receivers(1));
        // a1's address arrives on p2: the frame floods, the entry stays.
        rig.send(1, &probe([0xff; 6], a1, 2, 60));
        out.push(rig.receivers(2));
        rig.send(2, &probe(a1, a3, 3, 60));
        out.push(rig.receivers(3));
        // Deleted, a1 is unknown again and frames to it flood.
        rig.del(a1, 0);
        rig.send(2, &probe(a1, a3, 4, 60));
        out.push(rig.receivers(4));
        // A port flush forgets what p2 learned, not what is pinned there.
        rig.send(1, &probe([0xff; 6], a2, 5, 60));
        rig.observe();
        rig.add_static(a1, 1);
        rig.flush_port(1);
        rig.send(0, &probe(a2, station_mac(3), 6, 60));
        out.push(rig.receivers(6));
        rig.send(0, &probe(a1, station_mac(3), 7, 60));
        out.push(rig.receivers(7));
        out
    });
    assert_eq!(
        seen,
        vec![
            vec![1],
            vec![1, 3, 4],
            vec![1],
            vec![1, 2, 4],
            vec![2, 3, 4],
            vec![2]
        ]
    );
}

/// The kernel side alone: why ours are compared with `static sticky`. A
/// plain Linux `static` entry follows its address to another port.
#[test]
fn linux_plain_static_entries_move() {
    require_root();
    let mut rig = Rig::new(Kind::KernelBridge);
    let [a1, a3] = [station_mac(0), station_mac(2)];
    let port = rig.topo.hosts[0].port.clone();
    rig.bridge(&[
        "fdb",
        "replace",
        &mac_text(&a1),
        "dev",
        &port,
        "master",
        "static",
    ]);
    rig.send(1, &probe([0xff; 6], a1, 1, 60));
    rig.observe();
    rig.send(2, &probe(a1, a3, 2, 60));
    assert_eq!(rig.receivers(2), vec![2], "the static entry moved to p2");
}

#[test]
fn vlan_tags_and_every_frame_size_pass_byte_for_byte() {
    let seen = compare(|rig| {
        let [a1, a2] = [station_mac(0), station_mac(1)];
        rig.send(1, &probe([0xff; 6], a2, 0, 60));
        rig.observe();
        let mut frames = Vec::new();
        for (n, len) in (60..=1514).step_by(113).chain([1514]).enumerate() {
            frames.push(probe(a2, a1, 100 + n as u32, len));
        }
        frames.push(probe_vlan(a2, a1, 100, 200, 64));
        frames.push(probe_vlan(a2, a1, 2000, 201, 1518));
        for frame in &frames {
            rig.send(0, frame);
        }
        let seen = rig.observe();
        assert_eq!(
            seen[1].iter().map(|(_, f)| f.clone()).collect::<Vec<_>>(),
            frames,
            "{:?}",
            rig.kind
        );
        seen.into_iter()
            .map(|probes| probes.into_iter().map(|(id, _)| id).collect::<Vec<_>>())
            .collect::<Vec<_>>()
    });
    assert!(seen[0].is_empty() && seen[2].is_empty() && seen[3].is_empty());
}

#[test]
fn gateway_ping_and_tcp_with_default_offloads() {
    let (to_gateway, between, tcp) = compare(|rig| {
        let hosts = &rig.topo.hosts;
        let to_gateway = ping(&hosts[0].ns, GATEWAY, 3, Duration::from_secs(2));
        let between = ping(&hosts[0].ns, hosts[1].ip, 3, Duration::from_secs(2));
        let tcp =
            tcp_transfer(&hosts[1].ns, hosts[1].ip, &hosts[0].ns, 10 << 20).map(|_| "10 MB intact");
        (to_gateway, between, tcp)
    });
    assert_eq!((to_gateway, between, tcp), (3, 3, Ok("10 MB intact")));
}

#[test]
fn broadcast_storm_and_mac_flood_do_not_make_it_forget_learned_hosts() {
    // Ageing long enough that only the storm and the flood could make the
    // switch forget (under load, sending 25,000 frames took over 2 s).
    let outcome = compare_with_ageing(LONG_AGEING_SECS, |rig| {
        let [a1, a2] = [station_mac(0), station_mac(1)];
        rig.send(0, &probe([0xff; 6], a1, 1, 60));
        rig.send(1, &probe([0xff; 6], a2, 2, 60));
        rig.observe();

        // 20,000 broadcast frames from h3, as fast as the kernel takes them.
        let storm: Vec<Vec<u8>> = (0..20_000)
            .map(|n| probe([0xff; 6], station_mac(2), 1_000 + n, 60))
            .collect();
        rig.stations[2].send_all(storm.iter().map(Vec::as_slice));
        let delivered = rig.observe()[0].len();
        assert!(
            delivered > 10_000,
            "{:?} delivered only {delivered} of 20000 storm frames to h1",
            rig.kind
        );

        // 5,000 new source addresses from h4.
        let flood: Vec<Vec<u8>> = (0..5_000u32)
            .map(|n| {
                let b = n.to_be_bytes();
                probe(
                    [0xff; 6],
                    [0x02, 0x01, 0x00, b[1], b[2], b[3]],
                    30_000 + n,
                    60,
                )
            })
            .collect();
        rig.stations[3].send_all(flood.iter().map(Vec::as_slice));
        rig.observe();

        // Learned hosts are still known: unicast reaches only its port.
        rig.send(0, &probe(a2, a1, 3, 60));
        let to_a2 = rig.receivers(3);
        rig.send(1, &probe(a1, a2, 4, 60));
        let to_a1 = rig.receivers(4);
        (rig.is_alive(), to_a2, to_a1)
    });
    assert_eq!(outcome, (true, vec![2], vec![1]));
}
