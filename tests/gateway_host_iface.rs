//! `serve --host-iface NAME` (issue 14, the host's own leg), as root in
//! namespaces this test makes: the switch runs in a namespace the test
//! created, which plays the host; through the TAP the switch adds there,
//! the host pings a container and connects to it by its address, as it
//! does through docker0. The interface is listed, its address kept from
//! leases, and it is gone once the switch stops; a name in use is refused.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use tapswitch_tests::switch_process::binary;
use tapswitch_tests::traffic::ping;
use tapswitch_tests::{Netns, SwitchProcess, lab::TempDir, require_root};

/// The last usable address of 172.17.0.0/16.
const HOST_ADDRESS: Ipv4Addr = Ipv4Addr::new(172, 17, 255, 254);

/// Runs `tapswitch ARGS` in `ns`'s network namespace (this process's mount
/// namespace, so a container's namespace mount is visible to the test).
fn tapswitch(ns: &Netns, args: &[&str]) -> std::process::Output {
    let binary = binary();
    ns.run(|| {
        std::process::Command::new(&binary)
            .args(args)
            .output()
            .expect("running tapswitch")
    })
}

/// A container made with `container create`, removed when dropped.
struct Container<'a> {
    name: String,
    ns: &'a Netns,
    state: String,
}

impl Container<'_> {
    fn netns(&self) -> String {
        format!("tapswitch-{}", self.name)
    }
}

impl Drop for Container<'_> {
    fn drop(&mut self) {
        let _ = tapswitch(
            self.ns,
            &["container", "rm", &self.name, "--state-dir", &self.state],
        );
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", &self.netns()])
            .stderr(std::process::Stdio::null())
            .status();
    }
}

fn link_exists(ns: &Netns, name: &str) -> bool {
    ns.exec("ip", &["link", "show", name]).status.success()
}

#[test]
fn the_host_reaches_containers_by_address_through_its_own_interface() {
    require_root();
    let ns = Netns::new("thi");
    let state = TempDir::new("hostif");
    let state_arg = state.path().display().to_string();
    let iface = tapswitch_tests::unique_name("tsh");
    let switch = SwitchProcess::start(
        &ns.name,
        &[
            "--state-dir".to_string(),
            state_arg.clone(),
            "--host-iface".to_string(),
            iface.clone(),
        ],
    );
    let control = switch.control.display().to_string();

    // The interface is there with the network's last usable address.
    let addresses = String::from_utf8_lossy(
        &ns.exec("ip", &["-4", "-o", "addr", "show", "dev", &iface])
            .stdout,
    )
    .to_string();
    assert!(
        addresses.contains(&format!("{HOST_ADDRESS}/16")),
        "{addresses}\n{}",
        switch.log()
    );
    // `ports` lists it; IPAM keeps its address from leases.
    let ports = switch.ports();
    assert!(
        ports
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["name"] == iface.as_str()),
        "{ports}"
    );
    let record = ipam::Store::open(state.path()).unwrap().load().unwrap();
    assert_eq!(
        record
            .network("bridge")
            .unwrap()
            .ipam()
            .unwrap()
            .aux_addresses["host-iface"],
        HOST_ADDRESS
    );
    let shown = tapswitch(
        &ns,
        &["show", "--state-dir", &state_arg, "--control", &control],
    );
    assert!(
        String::from_utf8_lossy(&shown.stdout).contains(&iface),
        "show lists the host interface:\n{}",
        String::from_utf8_lossy(&shown.stdout)
    );
    let ports = tapswitch(&ns, &["ports", "--control", &control]);
    let ports = String::from_utf8_lossy(&ports.stdout);
    assert!(
        ports
            .lines()
            .any(|l| l.contains(&format!(": {iface} (tap,"))),
        "ports lists the host interface as a tap:\n{ports}"
    );

    let container = Container {
        name: tapswitch_tests::unique_name("hc"),
        ns: &ns,
        state: state_arg.clone(),
    };
    let created = tapswitch(
        &ns,
        &[
            "container",
            "create",
            &container.name,
            "--control",
            &control,
            "--state-dir",
            &state_arg,
        ],
    );
    assert!(
        created.status.success(),
        "container create: {}",
        String::from_utf8_lossy(&created.stderr)
    );
    let record = ipam::Store::open(state.path()).unwrap().load().unwrap();
    let address = record.container(&container.name).unwrap().ipv4.unwrap();
    assert_ne!(address, HOST_ADDRESS);

    // The host pings the container by its address...
    assert_eq!(
        ping(&ns, address, 3, Duration::from_secs(3)),
        3,
        "the host pings the container\n{}",
        switch.log()
    );
    // ... and connects to its server, which sees the host's address.
    let listener = tapswitch_tests::in_netns(&container.netns(), || {
        TcpListener::bind("0.0.0.0:8080").expect("listening in the container")
    });
    let server = std::thread::spawn(move || {
        let (mut stream, peer) = listener.accept().expect("the host connects");
        stream.write_all(peer.ip().to_string().as_bytes()).unwrap();
    });
    let seen = ns.run(|| {
        let to = SocketAddr::from((address, 8080));
        let mut stream = TcpStream::connect_timeout(&to, Duration::from_secs(5))
            .expect("connecting to the container from the host");
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut seen = String::new();
        stream.read_to_string(&mut seen).unwrap();
        seen
    });
    server.join().unwrap();
    assert_eq!(seen, HOST_ADDRESS.to_string());
    drop(container);

    // Stopping the switch takes the interface away.
    assert!(switch.stop().success());
    assert!(
        !link_exists(&ns, &iface),
        "the host interface outlived the switch"
    );
}

#[test]
fn a_name_in_use_is_refused_with_one_line() {
    require_root();
    let ns = Netns::new("thn");
    let state = TempDir::new("hostin");
    let taken = tapswitch_tests::unique_name("tsd");
    let peer = format!("{taken}p");
    ns.ip(&["link", "add", &taken, "type", "veth", "peer", "name", &peer]);
    let control = state.join("switch.sock").display().to_string();
    let out = tapswitch(
        &ns,
        &[
            "serve",
            "--state-dir",
            &state.path().display().to_string(),
            "--control",
            &control,
            "--host-iface",
            &taken,
        ],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "serve started anyway: {stderr}");
    assert!(
        stderr.contains(&format!(
            "--host-iface {taken}: an interface with that name already exists"
        )),
        "{stderr}"
    );
    // Refused before anything was made: the veth is untouched, no socket.
    assert!(link_exists(&ns, &taken));
    assert!(!std::path::Path::new(&control).exists());
}
