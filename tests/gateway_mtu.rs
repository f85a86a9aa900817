//! `network create --mtu` applied end to end (issue 14), as root in
//! namespaces this test makes: on a 65520-byte network the container's
//! interface (made by `container create` or `attach`), its veth's switch
//! end, the host's own leg (`--host-iface`) and the gateway all carry
//! 65520, and a 1 MB TCP transfer from the container reaches the "remote"
//! namespace and comes back intact through the gateway (its super-frames
//! taken whole).

use std::net::SocketAddrV4;

use tapswitch_tests::gateway_kit::tcp_echo_in;
use tapswitch_tests::remote::{REMOTE_IP, Remote, TCP_ECHO_PORT};
use tapswitch_tests::switch_process::binary;
use tapswitch_tests::{Netns, SwitchProcess, lab::TempDir, require_root};

const MTU: &str = "65520";

fn tapswitch(ns: &Netns, args: &[&str]) -> std::process::Output {
    let binary = binary();
    let output = ns.run(|| {
        std::process::Command::new(&binary)
            .args(args)
            .output()
            .expect("running tapswitch")
    });
    assert!(
        output.status.success(),
        "tapswitch {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// The container, removed when dropped.
struct Container<'a> {
    name: String,
    ns: &'a Netns,
    state: String,
}

impl Drop for Container<'_> {
    fn drop(&mut self) {
        let binary = binary();
        let args = ["container", "rm", &self.name, "--state-dir", &self.state];
        let _ = self
            .ns
            .run(|| std::process::Command::new(&binary).args(args).output());
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", &format!("tapswitch-{}", self.name)])
            .stderr(std::process::Stdio::null())
            .status();
    }
}

/// The MTU `ip link` shows for `iface` in namespace `netns`.
fn link_mtu(netns: &str, iface: &str) -> String {
    let out = std::process::Command::new("ip")
        .args(["-n", netns, "-o", "link", "show", iface])
        .output()
        .expect("ip link show");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    text.split_whitespace()
        .skip_while(|word| *word != "mtu")
        .nth(1)
        .unwrap_or_else(|| panic!("no mtu for {iface} in {netns}: {text}"))
        .to_string()
}

#[test]
fn a_65520_byte_network_carries_it_from_the_container_to_the_remote() {
    require_root();
    let switch_ns = Netns::new("tmt");
    let remote = Remote::new(&switch_ns);
    let state = TempDir::new("gwmtu");
    let state_arg = state.path().display().to_string();
    let network = tapswitch_tests::unique_name("jumbo");
    tapswitch(
        &switch_ns,
        &[
            "network",
            "create",
            &network,
            "--subnet",
            "10.213.0.0/24",
            "--mtu",
            MTU,
            "--state-dir",
            &state_arg,
        ],
    );
    let switch = SwitchProcess::start(
        &switch_ns.name,
        &[
            "--network".to_string(),
            network.clone(),
            "--state-dir".to_string(),
            state_arg.clone(),
            // The host's own leg, a TAP the switch makes and sets to the
            // network's MTU after it opened it.
            "--host-iface".to_string(),
            "tsjumbo0".to_string(),
        ],
    );
    let control = switch.control.display().to_string();
    let container = Container {
        name: tapswitch_tests::unique_name("jc"),
        ns: &switch_ns,
        state: state_arg.clone(),
    };
    tapswitch(
        &switch_ns,
        &[
            "container",
            "create",
            &container.name,
            "--network",
            &network,
            "--control",
            &control,
            "--state-dir",
            &state_arg,
        ],
    );
    let netns = format!("tapswitch-{}", container.name);

    // `ip link` in the container, and the switch's end of its veth.
    assert_eq!(link_mtu(&netns, "eth0"), MTU);
    let record = ipam::Store::open(state.path()).unwrap().load().unwrap();
    let host_end = record
        .container(&container.name)
        .unwrap()
        .host_iface
        .clone()
        .unwrap();
    assert_eq!(link_mtu(&switch_ns.name, &host_end), MTU);
    assert_eq!(link_mtu(&switch_ns.name, "tsjumbo0"), MTU);
    // The switch's ports, the gateway's and the host leg's included, carry
    // it too.
    let ports = switch.ports();
    for port in ports.as_array().unwrap() {
        assert_eq!(port["mtu"], 65520, "{ports}");
    }

    let (sent, back) = tcp_echo_in(&netns, SocketAddrV4::new(REMOTE_IP, TCP_ECHO_PORT), 1 << 20)
        .unwrap_or_else(|e| panic!("1 MB through the gateway: {e}\n{}", switch.log()));
    assert_eq!(back.len(), sent.len(), "{}", switch.log());
    assert!(back == sent, "the echo comes back intact");
    let services = switch.call(r#"{"cmd":"services"}"#).expect("services");
    assert!(
        services["flows"]["opened"].as_u64().unwrap() >= 1,
        "{services}"
    );

    // A namespace made elsewhere and attached gets the network's MTU too.
    let outside = Netns::new("tma");
    let attached = tapswitch_tests::unique_name("ja");
    tapswitch(
        &switch_ns,
        &[
            "container",
            "attach",
            &attached,
            "--netns",
            &format!("/run/netns/{}", outside.name),
            "--network",
            &network,
            "--control",
            &control,
            "--state-dir",
            &state_arg,
        ],
    );
    assert_eq!(link_mtu(&outside.name, "eth0"), MTU);
    tapswitch(
        &switch_ns,
        &["container", "detach", &attached, "--state-dir", &state_arg],
    );
    drop(container);
    drop(remote);
}
