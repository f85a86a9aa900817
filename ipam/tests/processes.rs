//! The state directory under real processes: many allocating at once, and
//! processes killed with SIGKILL in the middle of allocating.
//!
//! The child processes are this same test binary, run again with
//! [`CHILD_ENV`] set so that only [`child_process_entry`] does anything.
//! A child prints `LEASE <ip>` after each allocation it committed, so the
//! parent knows what each one was promised.

use std::collections::BTreeSet;
use std::hash::{BuildHasher, RandomState};
use std::io::Write;
use std::net::Ipv4Addr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use ipam::store::{now, random_id};
use ipam::{Container, NetworkSpec, Store};

/// `<state dir>|<network>|<count>|<name prefix>`: what a child allocates.
const CHILD_ENV: &str = "IPAM_TEST_CHILD_JOB";

/// Not a test of its own: the body of the child processes the tests below
/// start. Without [`CHILD_ENV`] it returns at once.
#[test]
fn child_process_entry() {
    let Ok(job) = std::env::var(CHILD_ENV) else {
        return;
    };
    let parts: Vec<&str> = job.split('|').collect();
    let [dir, network, count, prefix] = parts[..] else {
        panic!("bad {CHILD_ENV}: {job}");
    };
    let count: usize = count.parse().unwrap();
    let store = Store::open(dir).unwrap();
    let mut out = std::io::stdout().lock();
    for i in 0..count {
        let ip = store
            .update(|state| {
                let record = container(&format!("{prefix}-{i}"), network);
                Ok(state.add_container(record, None)?.ipv4)
            })
            .unwrap()
            .unwrap();
        writeln!(out, "LEASE {ip}").unwrap();
        out.flush().unwrap();
    }
}

#[test]
fn eight_processes_allocating_fifty_each_get_four_hundred_distinct_addresses() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    create_network(&store, "conc", "10.77.0.0/16");

    let children: Vec<Child> = (0..8)
        .map(|n| spawn_child(dir.path(), "conc", 50, &format!("p{n}")))
        .collect();
    let mut reported = Vec::new();
    for child in children {
        let output = child.wait_with_output().unwrap();
        assert!(output.status.success(), "a child failed: {output:?}");
        reported.extend(leases_in(&output.stdout));
    }

    assert_eq!(reported.len(), 400);
    let distinct: BTreeSet<Ipv4Addr> = reported.iter().copied().collect();
    assert_eq!(distinct.len(), 400, "an address was handed out twice");
    // Lowest free first and nothing released: exactly .0.2 up to .1.145.
    let expected: BTreeSet<Ipv4Addr> = (u32::from(Ipv4Addr::new(10, 77, 0, 2))..)
        .take(400)
        .map(Ipv4Addr::from)
        .collect();
    assert_eq!(distinct, expected);

    let state = store.load().expect("the state must still be valid");
    let saved: BTreeSet<Ipv4Addr> = state.leases("conc").into_keys().collect();
    assert_eq!(saved, distinct);
}

#[test]
fn processes_killed_while_allocating_leave_a_valid_state_and_no_double_lease() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    create_network(&store, "crash", "10.78.0.0/16");
    let random = RandomState::new();

    let mut promised: BTreeSet<Ipv4Addr> = BTreeSet::new();
    for round in 0..8u64 {
        // Bounded: each child would stop by itself after 2,000 allocations.
        let mut children: Vec<Child> = (0..3)
            .map(|n| spawn_child(dir.path(), "crash", 2000, &format!("r{round}c{n}")))
            .collect();
        for child in &mut children {
            // A random moment: somewhere in a read, a write, an fsync or a rename.
            let pause = 5 + random.hash_one((round, child.id())) % 60;
            std::thread::sleep(Duration::from_millis(pause));
            child.kill().unwrap(); // SIGKILL
        }
        for child in children {
            let output = child.wait_with_output().unwrap();
            for ip in leases_in(&output.stdout) {
                assert!(promised.insert(ip), "{ip} was promised twice");
            }
        }

        let state = store
            .load()
            .unwrap_or_else(|e| panic!("round {round}: the state must load after SIGKILL: {e}"));
        let saved: BTreeSet<Ipv4Addr> = state.leases("crash").into_keys().collect();
        let lost: Vec<_> = promised.difference(&saved).collect();
        assert!(lost.is_empty(), "committed leases were lost: {lost:?}");
    }

    // After the crashes, new allocations never repeat a lease that exists.
    let before: BTreeSet<Ipv4Addr> = store.load().unwrap().leases("crash").into_keys().collect();
    for i in 0..20 {
        let ip = store
            .update(|s| {
                Ok(
                    s.add_container(container(&format!("after-{i}"), "crash"), None)?
                        .ipv4,
                )
            })
            .unwrap()
            .unwrap();
        assert!(
            !before.contains(&ip),
            "{ip} handed out again after the crashes"
        );
    }
    let after = store.load().unwrap().leases("crash");
    assert_eq!(after.len(), before.len() + 20);
}

fn create_network(store: &Store, name: &str, subnet: &str) {
    store
        .update(|s| {
            let spec = NetworkSpec {
                subnet: subnet.into(),
                ..NetworkSpec::default()
            };
            s.create_network(name, random_id()?, now(), &spec)
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
        boot_id: "test".into(),
        ..Default::default()
    }
}

fn spawn_child(dir: &Path, network: &str, count: usize, prefix: &str) -> Child {
    let job = format!("{}|{network}|{count}|{prefix}", dir.display());
    Command::new(std::env::current_exe().unwrap())
        .args([
            "child_process_entry",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, job)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

fn leases_in(stdout: &[u8]) -> Vec<Ipv4Addr> {
    String::from_utf8_lossy(stdout)
        .lines()
        // libtest may print "test child_process_entry ... " in front of the first.
        .filter_map(|line| line.split_once("LEASE ").map(|(_, ip)| ip))
        .map(|ip| ip.trim().parse().unwrap())
        .collect()
}
