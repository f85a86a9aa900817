use std::net::Ipv4Addr;

use ipam::state::Predefined;
use ipam::{Container, NetworkSpec, PortProtocol, PublishedPort, State};

use super::*;

const OURS: &str = "/run/tapswitch/ov.sock";

fn state() -> State {
    let mut state = State::new(Predefined {
        bridge_id: "b".repeat(64),
        host_id: "h".repeat(64),
        none_id: "n".repeat(64),
        created: String::new(),
    });
    let spec = NetworkSpec {
        subnet: "10.50.0.0/24".into(),
        internal: true,
        ..NetworkSpec::default()
    };
    state
        .create_network("ov", "o".repeat(64), String::new(), &spec)
        .unwrap();
    state
}

/// A container of network `ov` on the host with `boot_id`, behind the
/// switch of `control`, publishing host port `host_port`.
fn container(name: &str, last: u8, boot_id: &str, control: &str, host_port: u16) -> Container {
    Container {
        name: name.into(),
        network: "ov".into(),
        ipv4: Some(Ipv4Addr::new(10, 50, 0, last)),
        boot_id: boot_id.into(),
        control: Some(PathBuf::from(control)),
        ports: vec![PublishedPort {
            host_ip: Ipv4Addr::UNSPECIFIED,
            host_port,
            container_port: 80,
            protocol: PortProtocol::Tcp,
        }],
        ..Container::default()
    }
}

fn this_host() -> ThisHost {
    ThisHost {
        control: PathBuf::from(OURS),
        boot_id: "boot-a".into(),
    }
}

fn shared_state() -> State {
    let mut state = state();
    state.containers = vec![
        container("here", 2, "boot-a", OURS, 8080),
        container("there", 3, "boot-b", OURS, 8081),
        // Same machine, another switch (hosts that are namespaces).
        container("next-door", 4, "boot-a", "/tmp/other.sock", 8082),
    ];
    state
}

fn host_ports(setup: &ServicesSetup) -> Vec<u16> {
    setup.published.iter().map(|p| p.host.port()).collect()
}

#[test]
fn on_a_shared_store_every_container_is_named_but_only_ours_are_published() {
    let state = shared_state();
    let setup = setup(
        &ServicesArgs::default(),
        Some(&state),
        "ov",
        Some(&this_host()),
    );
    let mut names: Vec<&str> = setup.names.iter().map(|(n, _)| n.as_str()).collect();
    names.sort_unstable();
    assert_eq!(names, ["here", "next-door", "there"]);
    assert_eq!(host_ports(&setup), [8080]);
}

#[test]
fn the_local_store_publishes_every_container_of_the_network() {
    let state = shared_state();
    let setup = setup(&ServicesArgs::default(), Some(&state), "ov", None);
    assert_eq!(host_ports(&setup), [8080, 8081, 8082]);
}

#[test]
fn an_internal_network_has_no_outbound_whatever_the_store() {
    let state = shared_state();
    for host in [None, Some(this_host())] {
        let setup = setup(&ServicesArgs::default(), Some(&state), "ov", host.as_ref());
        assert!(!setup.outbound);
    }
    let setup = setup(&ServicesArgs::default(), Some(&state), "bridge", None);
    assert!(setup.outbound, "bridge is not internal");
}

#[test]
fn a_record_names_its_host_by_boot_and_switch() {
    let host = this_host();
    assert!(host.owns(&container("a", 2, "boot-a", OURS, 1)));
    assert!(!host.owns(&container("b", 2, "boot-b", OURS, 1)));
    assert!(!host.owns(&container("c", 2, "boot-a", "/x.sock", 1)));
    let unattached = Container {
        control: None,
        ..container("d", 2, "boot-a", OURS, 1)
    };
    assert!(!host.owns(&unattached));
}

#[test]
fn removed_containers_are_left_out() {
    let dir = tempfile::tempdir().unwrap();
    let store = ipam::Store::open(dir.path()).unwrap();
    store
        .update(|s| {
            *s = shared_state();
            Ok(())
        })
        .unwrap();
    let source = ServicesSource::new(
        ServicesArgs::default(),
        StateSource::Local(Some(dir.path().to_path_buf())),
        "ov",
        Path::new(OURS),
    );
    assert_eq!(source.this_host, None, "the local store has no hosts");
    let removed: HashSet<String> = ["there".to_string()].into();
    let setup = source.setup_without(&removed).unwrap();
    assert_eq!(setup.names.len(), 2);
    assert!(source.setup_with("here", &removed).unwrap().is_some());
    assert!(source.setup_with("nobody", &removed).unwrap().is_none());
}
