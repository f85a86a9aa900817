//! `tapswitch network ...` as a user meets it: Docker's views, and each
//! mistake answered in one line that says what to do. No root needed: these
//! only touch a private state directory.

mod support;

use support::{error_line, ok};

#[test]
fn ls_and_inspect_show_the_predefined_networks_like_docker() {
    let dir = tempfile::tempdir().unwrap();
    let ls = ok(dir.path(), &["network", "ls"]);
    let lines: Vec<&str> = ls.lines().collect();
    assert_eq!(lines[0], "NETWORK ID     NAME      DRIVER    SCOPE");
    assert!(lines[1].ends_with("   bridge    bridge    local"), "{ls}");
    assert!(lines[2].ends_with("   host      host      local"), "{ls}");
    assert!(lines[3].ends_with("   none      null      local"), "{ls}");
    // Ids are stable from one command to the next.
    assert_eq!(ok(dir.path(), &["network", "ls"]), ls);

    let id = ok(
        dir.path(),
        &[
            "network",
            "create",
            "web",
            "--subnet",
            "10.50.0.0/16",
            "--gateway",
            "10.50.0.254",
            "--ip-range",
            "10.50.1.0/24",
            "--aux-address",
            "db=10.50.0.5",
        ],
    );
    assert_eq!(id.trim().len(), 64);
    let inspect: serde_json::Value =
        serde_json::from_str(&ok(dir.path(), &["network", "inspect", "web"])).unwrap();
    let net = &inspect[0];
    assert_eq!(net["Name"], "web");
    assert_eq!(net["Id"], id.trim());
    assert_eq!(net["Driver"], "bridge");
    let config = &net["IPAM"]["Config"][0];
    assert_eq!(config["Subnet"], "10.50.0.0/16");
    assert_eq!(config["Gateway"], "10.50.0.254");
    assert_eq!(config["IPRange"], "10.50.1.0/24");
    assert_eq!(config["AuxiliaryAddresses"]["db"], "10.50.0.5");
    assert_eq!(net["Containers"], serde_json::json!({}));

    // Without --subnet, Docker's next default pool.
    ok(dir.path(), &["network", "create", "auto"]);
    let auto: serde_json::Value =
        serde_json::from_str(&ok(dir.path(), &["network", "inspect", "auto"])).unwrap();
    assert_eq!(auto[0]["IPAM"]["Config"][0]["Subnet"], "172.18.0.0/16");
    assert_eq!(auto[0]["IPAM"]["Config"][0]["Gateway"], "172.18.0.1");

    assert_eq!(
        ok(dir.path(), &["network", "rm", "web", "auto"]),
        "web\nauto\n"
    );
    assert_eq!(ok(dir.path(), &["network", "ls", "-q"]).lines().count(), 3);
}

#[test]
fn mistakes_get_one_line_that_says_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path();
    ok(
        state,
        &["network", "create", "one", "--subnet", "10.60.0.0/16"],
    );
    assert_eq!(
        error_line(
            state,
            &["network", "create", "two", "--subnet", "10.60.4.0/24"]
        ),
        "tapswitch: subnet 10.60.4.0/24 overlaps subnet 10.60.0.0/16 of network one: choose a subnet that does not overlap (see `tapswitch network inspect one`)"
    );
    assert_eq!(
        error_line(
            state,
            &[
                "network",
                "create",
                "two",
                "--subnet",
                "10.61.0.0/24",
                "--gateway",
                "10.62.0.1"
            ]
        ),
        "tapswitch: gateway 10.62.0.1 is outside subnet 10.61.0.0/24: pick an address inside it (or leave --gateway out to use the first one)"
    );
    assert_eq!(
        error_line(
            state,
            &[
                "network",
                "create",
                "two",
                "--subnet",
                "10.61.0.0/24",
                "--ip-range",
                "10.61.1.0/25"
            ]
        ),
        "tapswitch: --ip-range 10.61.1.0/25 is not inside subnet 10.61.0.0/24: give a range within the subnet"
    );
    assert_eq!(
        error_line(
            state,
            &["network", "create", "two", "--subnet", "10.61.0.1/24"]
        ),
        "tapswitch: --subnet: 10.61.0.1/24 has host bits set: did you mean 10.61.0.0/24?"
    );
    assert!(
        error_line(
            state,
            &["network", "create", "one", "--subnet", "10.70.0.0/16"]
        )
        .contains("network one already exists")
    );
    assert!(error_line(state, &["network", "rm", "bridge"]).contains("predefined"));
    assert!(
        error_line(state, &["network", "inspect", "nope"])
            .starts_with("tapswitch: network nope does not exist")
    );
    assert!(
        error_line(state, &["network", "create", "x", "--driver", "macvlan"])
            .contains("only `bridge` and `overlay` can")
    );
    // Overlay networks need a shared store; the state directory is refused
    // in one line that says what to give.
    let overlay = error_line(state, &["network", "create", "x", "--driver", "overlay"]);
    assert!(
        overlay.starts_with("tapswitch: overlay networks span several hosts")
            && overlay.contains("give --store etcd://HOST:PORT[,...]"),
        "{overlay}"
    );
}

#[test]
fn a_corrupt_state_file_is_named_and_never_overwritten() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path();
    ok(state, &["network", "ls"]);
    let file = state.join("state.json");
    std::fs::write(&file, "{ \"version\": 1, \"networks\": [ oops").unwrap();
    for args in [
        &["network", "ls"][..],
        &["network", "create", "x", "--subnet", "10.9.0.0/24"],
        &["container", "ls"],
    ] {
        let err = error_line(state, args);
        assert!(
            err.starts_with(&format!(
                "tapswitch: the state file {} is corrupt (",
                file.display()
            )),
            "{err}"
        );
        assert!(err.contains("move it aside"), "{err}");
    }
    assert_eq!(
        std::fs::read_to_string(&file).unwrap(),
        "{ \"version\": 1, \"networks\": [ oops"
    );
}
