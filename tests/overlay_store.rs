//! The shared store against a real etcd (one private etcd per test, see
//! `tapswitch_tests::etcd_server`; without `/usr/bin/etcd` each test prints
//! a SKIPPED line and returns): overlay networks made through the
//! `tapswitch` command, concurrent allocation from two "hosts" (threads with
//! their own connections), etcd stopped and restarted, a switch's
//! registration under its lease, and the membership events a switch reads.

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddr};
use std::process::{Command, Output};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use ipam::membership::{Action, Event, Membership, Registration};
use ipam::registry::{MembershipFeed, Registrar, Registry};
use ipam::store::{now, random_id};
use ipam::{Container, EtcdUrl, NetworkSpec, OverlaySpec, Store};
use tapswitch_tests::etcd_server::EtcdServer;
use tapswitch_tests::switch_process::binary;

/// Runs `tapswitch ARGS` with `TAPSWITCH_STORE=store`.
fn tapswitch(store: &str, args: &[&str]) -> Output {
    Command::new(binary())
        .env("TAPSWITCH_STORE", store)
        .env_remove("TAPSWITCH_STATE_DIR")
        .args(args)
        .output()
        .expect("tapswitch runs")
}

fn ok(output: Output) -> String {
    assert!(
        output.status.success(),
        "tapswitch failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

fn failed(output: Output) -> String {
    assert!(
        !output.status.success(),
        "tapswitch should have failed; it printed {}",
        String::from_utf8_lossy(&output.stdout)
    );
    String::from_utf8(output.stderr).unwrap()
}

fn open(etcd: &EtcdServer) -> Store {
    let url: EtcdUrl = etcd.store_url().parse().unwrap();
    Store::open_etcd(&url).unwrap()
}

fn create_overlay(store: &Store, name: &str, subnet: &str) {
    store
        .update(|s| {
            let spec = NetworkSpec {
                subnet: subnet.into(),
                ..NetworkSpec::default()
            };
            s.create_overlay_network(name, random_id()?, now(), &spec, OverlaySpec::default())
                .map(|_| ())
        })
        .unwrap();
}

fn container(name: &str, network: &str) -> Container {
    Container {
        name: name.into(),
        id: random_id().unwrap(),
        network: network.into(),
        created: now(),
        boot_id: "another-host".into(),
        ..Default::default()
    }
}

#[test]
fn overlay_networks_are_created_listed_and_inspected_through_etcd() {
    let Some(etcd) =
        EtcdServer::start("overlay_networks_are_created_listed_and_inspected_through_etcd")
    else {
        return;
    };
    let url = etcd.store_url();
    ok(tapswitch(
        &url,
        &[
            "network",
            "create",
            "ov",
            "--driver",
            "overlay",
            "--subnet",
            "10.200.0.0/24",
        ],
    ));
    ok(tapswitch(
        &url,
        &[
            "network",
            "create",
            "ov2",
            "--driver",
            "overlay",
            "--subnet",
            "10.201.0.0/24",
            "--vni",
            "77",
            "--vxlan-port",
            "8472",
            "--mtu",
            "8950",
        ],
    ));
    let err = failed(tapswitch(
        &url,
        &[
            "network",
            "create",
            "ov3",
            "--driver",
            "overlay",
            "--subnet",
            "10.202.0.0/24",
            "--vni",
            "77",
        ],
    ));
    assert_eq!(
        err,
        "tapswitch: VNI 77 is already used by network ov2: pick another --vni, or leave it out to get a free one\n"
    );
    assert_eq!(
        ok(tapswitch(
            &url,
            &["network", "peer", "add", "ov", "192.0.2.50"]
        )),
        "192.0.2.50:4789\n"
    );
    // A switch registered under its lease is a member too.
    let switch = Registration {
        network: "ov".into(),
        vni: 4096,
        endpoint: "192.0.2.1:4789".parse().unwrap(),
        hostname: "host-one".into(),
        macs: vec!["02:42:0a:c8:00:02".parse().unwrap()],
        lease: 0,
        registered: now(),
    };
    let registry = Registry::new(&open(&etcd), "ov").unwrap();
    let lease = registry.register(&switch, Duration::from_secs(60)).unwrap();

    // A second endpoint that is down first: the client moves on to the live one.
    let both = format!("etcd://127.0.0.1:1,{}", etcd.endpoint());
    let ls = ok(tapswitch(&both, &["network", "ls"]));
    let row = |name: &str| {
        ls.lines()
            .find(|l| l.split_whitespace().nth(1) == Some(name))
            .unwrap_or_else(|| panic!("no row for {name} in\n{ls}"))
            .split_whitespace()
            .skip(1)
            .collect::<Vec<_>>()
    };
    assert!(ls.starts_with("NETWORK ID"), "{ls}");
    assert!(
        ls.lines()
            .next()
            .unwrap()
            .ends_with("VNI       PORT      MEMBERS"),
        "{ls}"
    );
    assert_eq!(
        row("ov"),
        [
            "ov",
            "overlay",
            "global",
            "4096",
            "4789",
            "192.0.2.1:4789,192.0.2.50:4789"
        ]
    );
    assert_eq!(row("ov2"), ["ov2", "overlay", "global", "77", "8472"]);
    assert_eq!(row("bridge"), ["bridge", "bridge", "local"]);

    let inspect: serde_json::Value =
        serde_json::from_str(&ok(tapswitch(&url, &["network", "inspect", "ov", "ov2"]))).unwrap();
    let ov = &inspect[0];
    assert_eq!(ov["Driver"], "overlay");
    assert_eq!(ov["Scope"], "global");
    assert_eq!(ov["IPAM"]["Config"][0]["Subnet"], "10.200.0.0/24");
    assert_eq!(
        ov["Options"]["com.docker.network.driver.overlay.vxlanid_list"],
        "4096"
    );
    assert_eq!(ov["Options"]["com.docker.network.driver.mtu"], "1450");
    assert_eq!(ov["Options"]["tapswitch.vxlan_port"], "4789");
    assert_eq!(
        ov["Peers"],
        serde_json::json!([
            {"Name": "host-one", "IP": "192.0.2.1", "Port": 4789, "Kind": "switch",
             "Macs": ["02:42:0a:c8:00:02"]},
            {"Name": "peer", "IP": "192.0.2.50", "Port": 4789, "Kind": "peer", "Macs": []},
        ])
    );
    assert_eq!(
        inspect[1]["Options"]["com.docker.network.driver.mtu"],
        "8950"
    );

    assert_eq!(
        ok(tapswitch(
            &url,
            &["network", "peer", "rm", "ov", "192.0.2.50"]
        )),
        "192.0.2.50:4789\n"
    );
    registry.unregister(lease).unwrap();
    let inspect: serde_json::Value =
        serde_json::from_str(&ok(tapswitch(&url, &["network", "inspect", "ov"]))).unwrap();
    assert_eq!(inspect[0]["Peers"], serde_json::json!([]));

    // The local state directory serves one host: no overlay networks there.
    let dir = tempfile::tempdir().unwrap();
    let local = Command::new(binary())
        .env_remove("TAPSWITCH_STORE")
        .args([
            "network",
            "create",
            "ov",
            "--driver",
            "overlay",
            "--subnet",
            "10.200.0.0/24",
        ])
        .arg("--state-dir")
        .arg(dir.path())
        .output()
        .unwrap();
    let err = failed(local);
    assert!(err.contains("give --store etcd://HOST:PORT[,...]"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
}

/// How a "host" saves its allocations.
#[derive(Debug, Clone, Copy)]
enum Writes {
    /// Compare-and-swap, retried on conflict (`Store::update`).
    CompareAndSwap,
    /// Under the store lock (`Store::lock` + `commit`, as `container create`).
    Locked,
}

/// Two hosts, each with its own store and connections, allocate eight
/// addresses each on `network`, starting at the same moment.
fn two_hosts_allocate_eight_each(
    url: &EtcdUrl,
    network: &str,
    modes: [Writes; 2],
) -> Vec<Ipv4Addr> {
    let start = Arc::new(Barrier::new(2));
    let hosts: Vec<_> = modes
        .into_iter()
        .enumerate()
        .map(|(host, mode)| {
            let (url, start, network) = (url.clone(), Arc::clone(&start), network.to_string());
            std::thread::spawn(move || {
                let store = Store::open_etcd(&url).unwrap();
                start.wait();
                (0..8)
                    .map(|i| {
                        let record = container(&format!("{network}-h{host}-c{i}"), &network);
                        let ip = match mode {
                            Writes::CompareAndSwap => store
                                .update(|s| Ok(s.add_container(record.clone(), None)?.ipv4))
                                .unwrap(),
                            Writes::Locked => {
                                let mut tx = store.lock().unwrap();
                                let ip = tx.state.add_container(record, None).unwrap().ipv4;
                                tx.commit().unwrap();
                                ip
                            }
                        };
                        ip.expect("an overlay network gives addresses")
                    })
                    .collect::<Vec<Ipv4Addr>>()
            })
        })
        .collect();
    hosts
        .into_iter()
        .flat_map(|h| h.join().expect("a host thread panicked"))
        .collect()
}

#[test]
fn two_hosts_allocating_eight_addresses_each_at_once_get_sixteen_distinct_ones() {
    let Some(etcd) = EtcdServer::start(
        "two_hosts_allocating_eight_addresses_each_at_once_get_sixteen_distinct_ones",
    ) else {
        return;
    };
    let url: EtcdUrl = etcd.store_url().parse().unwrap();
    let store = open(&etcd);
    let runs = [
        ("cas", [Writes::CompareAndSwap, Writes::CompareAndSwap]),
        ("locked", [Writes::Locked, Writes::Locked]),
        ("mixed", [Writes::CompareAndSwap, Writes::Locked]),
    ];
    for (n, (network, modes)) in (0u8..).zip(runs) {
        create_overlay(&store, network, &format!("10.21{n}.0.0/24"));
        let got = two_hosts_allocate_eight_each(&url, network, modes);
        let distinct: BTreeSet<Ipv4Addr> = got.iter().copied().collect();
        assert_eq!(got.len(), 16, "{network}");
        assert_eq!(
            distinct.len(),
            16,
            "{network}: an address was handed out twice: {got:?}"
        );
        // Lowest free first: exactly .2 to .17.
        let expected: BTreeSet<Ipv4Addr> =
            (2..18).map(|i| Ipv4Addr::new(10, 210 + n, 0, i)).collect();
        assert_eq!(distinct, expected, "{network}");
        let saved: BTreeSet<Ipv4Addr> = store.load().unwrap().leases(network).into_keys().collect();
        assert_eq!(
            saved, distinct,
            "{network}: what was promised is what is stored"
        );
    }
}

#[test]
fn a_write_that_lost_the_race_is_recomputed_on_the_newer_state() {
    let Some(etcd) =
        EtcdServer::start("a_write_that_lost_the_race_is_recomputed_on_the_newer_state")
    else {
        return;
    };
    let (host_a, host_b) = (open(&etcd), open(&etcd));
    create_overlay(&host_a, "ov", "10.211.0.0/24");
    let mut runs = 0;
    let got_a = host_a
        .update(|s| {
            runs += 1;
            if runs == 1 {
                // Host B takes the same "lowest free" address in between.
                let got_b = host_b
                    .update(|s| Ok(s.add_container(container("b", "ov"), None)?.ipv4))
                    .unwrap();
                assert_eq!(got_b, Some(Ipv4Addr::new(10, 211, 0, 2)));
            }
            Ok(s.add_container(container("a", "ov"), None)?.ipv4)
        })
        .unwrap();
    assert_eq!(
        runs, 2,
        "the first write must have been refused and retried"
    );
    assert_eq!(got_a, Some(Ipv4Addr::new(10, 211, 0, 3)));
}

#[test]
fn etcd_stopped_is_one_clear_line_and_restarted_works_again() {
    let Some(mut etcd) =
        EtcdServer::start("etcd_stopped_is_one_clear_line_and_restarted_works_again")
    else {
        return;
    };
    let url = etcd.store_url();
    ok(tapswitch(
        &url,
        &["network", "create", "kept", "--subnet", "10.220.0.0/24"],
    ));

    etcd.stop();
    let err = failed(tapswitch(&url, &["network", "ls"]));
    let expected_start = format!("tapswitch: cannot reach etcd at {} (", etcd.endpoint());
    assert!(err.starts_with(&expected_start), "{err}");
    assert!(
        err.ends_with(
            "): start etcd there, or point --store / TAPSWITCH_STORE at running members\n"
        ),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
    let err = failed(tapswitch(
        &url,
        &["network", "create", "new", "--subnet", "10.221.0.0/24"],
    ));
    assert!(err.starts_with(&expected_start), "{err}");

    etcd.restart();
    let ls = ok(tapswitch(&url, &["network", "ls"]));
    assert!(ls.lines().any(|l| l.contains(" kept ")), "{ls}");
    ok(tapswitch(
        &url,
        &["network", "create", "new", "--subnet", "10.221.0.0/24"],
    ));
}

#[test]
fn a_switch_registration_lives_under_its_lease_and_returns_after_an_outage() {
    let Some(mut etcd) = EtcdServer::start(
        "a_switch_registration_lives_under_its_lease_and_returns_after_an_outage",
    ) else {
        return;
    };
    let store = open(&etcd);
    create_overlay(&store, "ov", "10.230.0.0/24");
    let registry = Registry::new(&store, "ov").expect("an etcd store has a registry");
    let (listed, revision) = registry.list().unwrap();
    assert!(listed.is_empty());

    let endpoint: SocketAddr = "192.0.2.1:4789".parse().unwrap();
    let record = Registration {
        network: "ov".into(),
        vni: 4096,
        endpoint,
        hostname: "h1".into(),
        macs: vec![],
        lease: 0,
        registered: now(),
    };
    let ttl = Duration::from_secs(3);
    let t0 = Instant::now();
    let mut registrar = Registrar::new(registry.clone(), record, ttl, t0);
    registrar.tick(t0).unwrap();
    let lease = registrar.lease(t0).expect("registered");

    let (listed, _) = registry.list().unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!((listed[0].endpoint, listed[0].lease), (endpoint, lease));
    let mut seen_by_b = Membership::new(4096, Some("192.0.2.2:4789".parse().unwrap()));
    assert_eq!(
        seen_by_b.handle(Event::Snapshot {
            registrations: listed,
            peers: vec![]
        }),
        vec![Action::AddVtep(endpoint)]
    );
    let (events, revision) = registry
        .watch(revision + 1, Duration::from_secs(1))
        .unwrap();
    assert!(
        matches!(&events[..], [Event::Registered(r)] if r.endpoint == endpoint),
        "{events:?}"
    );

    // etcd forgets the lease (as when it expires): the key goes, watchers
    // see the departure, and the next renewal registers afresh.
    etcd.client().revoke_lease(lease).unwrap();
    let (events, _) = registry.watch(revision, Duration::from_secs(1)).unwrap();
    assert_eq!(events, vec![Event::Unregistered(endpoint)]);
    assert_eq!(
        seen_by_b.handle(events[0].clone()),
        vec![
            Action::RemoveVtep(endpoint),
            Action::FlushMacsBehind(endpoint)
        ]
    );
    let renew_at = registrar.next_wakeup();
    registrar.tick(renew_at).unwrap();
    let second = registrar.lease(renew_at).expect("registered again");
    assert_ne!(second, lease);
    assert_eq!(registry.list().unwrap().0.len(), 1);

    // etcd away: renewals fail with the one-line error; back: all is well.
    etcd.stop();
    let at = registrar.next_wakeup();
    let err = registrar.tick(at).unwrap_err().to_string();
    assert!(err.starts_with("cannot reach etcd at"), "{err}");
    etcd.restart();
    let at = registrar.next_wakeup();
    registrar.tick(at).unwrap();
    let (listed, _) = registry.list().unwrap();
    assert_eq!(listed.len(), 1, "the registration must be back");
    assert_eq!(listed[0].endpoint, endpoint);

    // A clean stop removes the registration at once.
    registrar.unregister(at).unwrap();
    assert!(registry.list().unwrap().0.is_empty());
}

/// Waits (up to a few polls) for the feed's next non-empty batch.
fn next_events(feed: &mut MembershipFeed) -> Vec<Event> {
    for _ in 0..20 {
        let events = feed.poll(Duration::from_millis(500)).unwrap();
        if !events.is_empty() {
            return events;
        }
    }
    panic!("no membership events arrived");
}

#[test]
fn a_membership_feed_follows_switches_and_peers_and_resyncs_after_an_outage() {
    let Some(mut etcd) = EtcdServer::start(
        "a_membership_feed_follows_switches_and_peers_and_resyncs_after_an_outage",
    ) else {
        return;
    };
    let store = open(&etcd);
    create_overlay(&store, "ov", "10.240.0.0/24");
    create_overlay(&store, "other", "10.241.0.0/24");
    let own: SocketAddr = "192.0.2.1:4789".parse().unwrap();
    let switch_b: SocketAddr = "192.0.2.2:4789".parse().unwrap();
    let peer: SocketAddr = "198.51.100.9:4789".parse().unwrap();
    let registry = |network: &str| Registry::new(&store, network).unwrap();
    let mut feed = MembershipFeed::new(registry("ov"));
    let mut membership = Membership::new(4096, Some(own));

    assert_eq!(
        feed.poll(Duration::from_millis(100)).unwrap(),
        vec![Event::Snapshot {
            registrations: vec![],
            peers: vec![]
        }]
    );

    // A peer added with `network peer add` arrives through the state document.
    store
        .update(|s| s.add_peer("ov", peer.ip(), None).map(|_| ()))
        .unwrap();
    let events = next_events(&mut feed);
    assert_eq!(events, vec![Event::PeersChanged(vec![peer])]);
    assert_eq!(
        membership.handle(events[0].clone()),
        vec![Action::AddVtep(peer)]
    );

    // Switch B registers on ov; a switch on another network does not show.
    let record = |network: &str, vni, endpoint| Registration {
        network: network.into(),
        vni,
        endpoint,
        hostname: "b".into(),
        macs: vec![],
        lease: 0,
        registered: now(),
    };
    registry("other")
        .register(&record("other", 4097, switch_b), Duration::from_secs(30))
        .unwrap();
    let lease_b = registry("ov")
        .register(&record("ov", 4096, switch_b), Duration::from_secs(30))
        .unwrap();
    let events = next_events(&mut feed);
    assert!(
        matches!(&events[..], [Event::Registered(r)] if r.endpoint == switch_b && r.lease == lease_b),
        "{events:?}"
    );
    assert_eq!(
        membership.handle(events[0].clone()),
        vec![Action::AddVtep(switch_b)]
    );

    // etcd goes away; meanwhile (as far as the feed can tell) B leaves.
    etcd.stop();
    let err = feed
        .poll(Duration::from_millis(100))
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("cannot reach etcd at"), "{err}");
    etcd.restart();
    etcd.client().revoke_lease(lease_b).unwrap();
    // Back: a snapshot, whose difference says B is gone.
    let events = feed.poll(Duration::from_millis(100)).unwrap();
    assert_eq!(
        events,
        vec![Event::Snapshot {
            registrations: vec![],
            peers: vec![peer]
        }]
    );
    assert_eq!(
        membership.handle(events[0].clone()),
        vec![
            Action::RemoveVtep(switch_b),
            Action::FlushMacsBehind(switch_b)
        ]
    );
    assert_eq!(membership.flood_list(), [peer].into());
}

#[test]
fn a_held_lock_keeps_compare_and_swap_writers_out_until_it_is_released() {
    let Some(etcd) =
        EtcdServer::start("a_held_lock_keeps_compare_and_swap_writers_out_until_it_is_released")
    else {
        return;
    };
    let (host_a, url) = (open(&etcd), etcd.store_url().parse::<EtcdUrl>().unwrap());
    create_overlay(&host_a, "ov", "10.250.0.0/24");

    // Host A builds a container under the lock (as `container create` does).
    let mut tx = host_a.lock().unwrap();
    let got_a = tx
        .state
        .add_container(container("a", "ov"), None)
        .unwrap()
        .ipv4;
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let host_b = std::thread::spawn(move || {
        let store = Store::open_etcd(&url).unwrap();
        let got = store
            .update(|s| Ok(s.add_container(container("b", "ov"), None)?.ipv4))
            .unwrap();
        done_tx.send(()).unwrap();
        got
    });
    // However long B tries, it cannot save while A holds the lock.
    assert!(
        done_rx.recv_timeout(Duration::from_millis(300)).is_err(),
        "host B saved while host A held the lock"
    );
    tx.commit().unwrap();
    let got_b = host_b.join().unwrap();
    assert_eq!(got_a, Some(Ipv4Addr::new(10, 250, 0, 2)));
    assert_eq!(
        got_b,
        Some(Ipv4Addr::new(10, 250, 0, 3)),
        "B must see A's lease"
    );
    // Committing released the lock: a second lock is taken at once.
    drop(host_a.lock().unwrap());
}
