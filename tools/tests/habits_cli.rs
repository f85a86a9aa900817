//! Habits users bring from Docker, iproute2 and brctl: aliases, `--json`,
//! completions and manual pages, and the small things the review found
//! (argument descriptions, advice that fits the options given). No root
//! needed: a private state directory, no switch.

mod support;

use support::{ok, tapswitch};

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

#[test]
fn aliases_do_what_the_commands_do() {
    let dir = tempfile::tempdir().unwrap();
    let ls = ok(dir.path(), &["network", "ls"]);
    assert_eq!(ok(dir.path(), &["network", "list"]), ls);
    let containers = ok(dir.path(), &["container", "ls"]);
    assert_eq!(ok(dir.path(), &["container", "list"]), containers);
    assert_eq!(ok(dir.path(), &["container", "ps"]), containers);
    for (alias, command) in [
        (
            vec!["network", "remove", "nosuch"],
            vec!["network", "rm", "nosuch"],
        ),
        (
            vec!["port", "ls", "--network", "nosuch"],
            vec!["ports", "--network", "nosuch"],
        ),
        (
            vec!["fdb", "show", "--network", "nosuch"],
            vec!["fdb", "--network", "nosuch"],
        ),
    ] {
        let a = tapswitch(dir.path(), &alias);
        let b = tapswitch(dir.path(), &command);
        assert_eq!(
            (a.status.code(), a.stderr),
            (b.status.code(), b.stderr),
            "{alias:?} vs {command:?}"
        );
    }
}

#[test]
fn json_on_every_listing() {
    let dir = tempfile::tempdir().unwrap();
    let networks = json(&ok(dir.path(), &["network", "ls", "--json"]));
    let names: Vec<&str> = networks
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["Name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["bridge", "host", "none"]);
    assert_eq!(networks[2]["Driver"], "null");
    assert_eq!(networks[0]["Scope"], "local");
    assert_eq!(networks[0]["ID"].as_str().unwrap().len(), 64, "whole ids");
    assert_eq!(
        json(&ok(dir.path(), &["container", "ls", "--json"])),
        serde_json::json!([])
    );
    assert!(json(&ok(dir.path(), &["show", "--json"])).is_array());
}

#[test]
fn port_add_without_arguments_names_both_kinds_of_port() {
    let dir = tempfile::tempdir().unwrap();
    let out = tapswitch(dir.path(), &["port", "add"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--iface <IFNAME>|--tap <NAME>"), "{stderr}");
}

#[test]
fn positional_arguments_are_described() {
    let dir = tempfile::tempdir().unwrap();
    for (command, argument) in [
        (vec!["capture", "stop"], "<PORT>"),
        (vec!["network", "rm"], "<NAMES>..."),
        (vec!["container", "create"], "<NAME>"),
        (vec!["container", "exec"], "<NAME>"),
        (vec!["container", "rm"], "<NAMES>..."),
        (vec!["fdb", "add"], "<PORT>"),
    ] {
        let mut args = command.clone();
        args.push("--help");
        let help = ok(dir.path(), &args);
        let line = help
            .lines()
            .find(|l| l.trim_start().starts_with(argument))
            .unwrap_or_else(|| panic!("{command:?}: no {argument} in\n{help}"));
        assert!(
            line.trim_start().len() > argument.len() + 4,
            "{command:?}: {argument} has no description: {line:?}"
        );
    }
}

#[test]
fn advice_to_start_a_switch_names_the_network_asked_for() {
    let dir = tempfile::tempdir().unwrap();
    let network = format!("nosuch{}", std::process::id());
    let out = tapswitch(dir.path(), &["fdb", "--network", &network]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains(&format!(
            "start one with `tapswitch serve --network {network}`"
        )),
        "{stderr}"
    );
}

#[test]
fn a_bad_mac_address_is_refused_before_asking_the_switch() {
    let dir = tempfile::tempdir().unwrap();
    let out = tapswitch(dir.path(), &["fdb", "add", "02:00:00:00:00", "p1"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("'02:00:00:00:00' is not a MAC address"),
        "{stderr}"
    );
}

#[test]
fn completions_for_three_shells_and_manual_pages() {
    let dir = tempfile::tempdir().unwrap();
    for shell in ["bash", "zsh", "fish"] {
        let script = ok(dir.path(), &["completions", shell]);
        assert!(
            script.contains("fdb") && script.contains("flush"),
            "{shell}"
        );
    }
    let out = tapswitch(dir.path(), &["completions", "tcsh"]);
    assert!(!out.status.success(), "an unknown shell is refused");

    let page = ok(dir.path(), &["man"]);
    assert!(page.contains(".TH tapswitch 1"), "{page}");
    let pages = dir.path().join("man1");
    let said = ok(dir.path(), &["man", "--out", pages.to_str().unwrap()]);
    assert!(said.starts_with("wrote "), "{said}");
    for name in [
        "tapswitch.1",
        "tapswitch-fdb.1",
        "tapswitch-fdb-add.1",
        "tapswitch-completions.1",
    ] {
        assert!(pages.join(name).is_file(), "{name} missing");
    }
}
