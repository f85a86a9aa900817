//! The gateway's DNS (issue 14), as root in namespaces this test makes:
//! DNS over TCP for container names and forwarded names, and the
//! resolv.conf `container exec` shows a container.

use std::time::Duration;

use tapswitch_tests::gateway_kit::{
    Container, GATEWAY, create_container, record_address, resolve_tcp_in, start_switch,
};
use tapswitch_tests::remote::{DNS_ANSWER, Remote};
use tapswitch_tests::{Netns, lab::TempDir, require_root};

#[test]
fn dns_over_tcp_answers_container_names_and_forwards_the_rest() {
    require_root();
    let switch_ns = Netns::new("tsw");
    let _remote = Remote::new(&switch_ns);
    let state = TempDir::new("gwdt");
    let switch = start_switch(&switch_ns, &state);
    let control = switch.control.display().to_string();
    let name = tapswitch_tests::unique_name("dt");
    let container = create_container(&switch_ns, &state, &control, &name, &[]);
    let address = record_address(&state, &name);
    // The switch learns the container's name once create has recorded it.
    let mut answers = Vec::new();
    for _ in 0..100 {
        answers =
            resolve_tcp_in(&container.netns(), &[&name, "www.example.test"]).unwrap_or_else(|e| {
                panic!(
                    "DNS over TCP: {e}\n{}\n{:?}",
                    switch.log(),
                    switch.call(r#"{"cmd":"services"}"#)
                )
            });
        if answers[0] == vec![address] {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        answers,
        vec![vec![address], vec![DNS_ANSWER]],
        "the container's name locally, the rest from the upstream\n{}",
        switch.log()
    );
    drop(container);
}

#[test]
fn container_exec_sees_the_gateway_in_resolv_conf() {
    require_root();
    let switch_ns = Netns::new("tsw");
    let state = TempDir::new("gwrc");
    let switch = start_switch(&switch_ns, &state);
    let control = switch.control.display().to_string();
    let name = tapswitch_tests::unique_name("rc");
    let container = create_container(&switch_ns, &state, &control, &name, &[]);
    let etc = format!("/etc/netns/{}/resolv.conf", container.netns());
    let written = std::fs::read_to_string(&etc).expect("create writes the namespace's resolv.conf");
    assert!(
        written.contains(&format!("nameserver {GATEWAY}\n")),
        "{written}"
    );

    let state_arg = state.path().display().to_string();
    let shown = Container::tapswitch(
        &switch_ns,
        &[
            "container",
            "exec",
            &name,
            "--state-dir",
            &state_arg,
            "--",
            "cat",
            "/etc/resolv.conf",
        ],
    );
    let text = String::from_utf8_lossy(&shown.stdout);
    assert!(
        shown.status.success(),
        "container exec: {}",
        String::from_utf8_lossy(&shown.stderr)
    );
    assert!(
        text.contains(&format!("nameserver {GATEWAY}\n"))
            && text.contains("search tapswitch.internal"),
        "the container's /etc/resolv.conf names its gateway: {text}"
    );
    // Only inside: this process's own /etc/resolv.conf is untouched.
    let own = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    assert!(!own.contains("Written by tapswitch"), "{own}");

    drop(container);
    assert!(
        !std::path::Path::new(&etc).exists(),
        "container rm removes {etc}"
    );
}
