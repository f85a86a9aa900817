//! What `container ls` and `tapswitch ports` say about published ports
//! (issue 14): which ones the running switch really listens on, and that
//! the switch is not running once it stopped. As root, in a namespace this
//! test makes for the switch.

use std::time::Duration;

use tapswitch_tests::gateway_kit::{Container, tapswitch_in, tapswitch_ok};
use tapswitch_tests::lab::TempDir;
use tapswitch_tests::poll::within;
use tapswitch_tests::{Netns, SwitchProcess, require_root, unique_name};

#[test]
fn container_ls_and_ports_show_the_live_listeners() {
    require_root();
    let ns = Netns::new("tsl");
    let state = TempDir::new("publs");
    let state_arg = state.path().display().to_string();
    let switch = SwitchProcess::start(&ns.name, &["--state-dir".into(), state_arg.clone()]);
    let control = switch.control.display().to_string();
    let name = unique_name("pl");
    let guard = Container {
        name: name.clone(),
        switch_ns: &ns,
        state: &state,
    };
    tapswitch_ok(
        &ns,
        &[
            "container",
            "create",
            &name,
            "--control",
            &control,
            "--state-dir",
            &state_arg,
            "-p",
            "18080:80",
            "-p",
            "127.0.0.1:18053:53/udp",
        ],
    );
    let published = "0.0.0.0:18080->80/tcp, 127.0.0.1:18053->53/udp";
    // The switch opens the ports once it has the container's record.
    let mut row = String::new();
    let listed = within(Duration::from_secs(10), || {
        let ls = tapswitch_ok(&ns, &["container", "ls", "--state-dir", &state_arg]);
        row = ls
            .lines()
            .find(|line| line.contains(&name))
            .unwrap_or_else(|| panic!("{name} in {ls}"))
            .to_string();
        row.ends_with(published)
    });
    assert!(listed, "{row}\n{}", switch.log());

    let ports = tapswitch_ok(&ns, &["ports", "--control", &control]);
    assert!(
        ports.contains("    published, listening: 0.0.0.0:18080->80/tcp, 127.0.0.1:18053->53/udp"),
        "{ports}"
    );
    let json = tapswitch_ok(
        &ns,
        &["container", "ls", "--json", "--state-dir", &state_arg],
    );
    let rows: serde_json::Value = serde_json::from_str(&json).expect("ls --json");
    let mine = rows
        .as_array()
        .and_then(|rows| rows.iter().find(|row| row["Name"] == name.as_str()))
        .unwrap_or_else(|| panic!("{name} in {rows}"));
    assert_eq!(
        mine["PortsListening"],
        serde_json::json!(["0.0.0.0:18080->80/tcp", "127.0.0.1:18053->53/udp"]),
        "{mine}"
    );

    // Stopped: the ports are closed, and `container ls` says why.
    switch.stop();
    let ls = tapswitch_ok(&ns, &["container", "ls", "--state-dir", &state_arg]);
    assert!(
        ls.lines().any(|line| line.contains(&name)
            && line.ends_with(&format!("{published} (switch not running)"))),
        "{ls}"
    );
    let json = tapswitch_ok(
        &ns,
        &["container", "ls", "--json", "--state-dir", &state_arg],
    );
    assert!(json.contains(r#""PortsListening": null"#), "{json}");
    let refused = tapswitch_in(&ns, &["ports", "--control", &control]);
    assert!(!refused.status.success(), "ports without a switch fails");
    drop(guard);
}
