//! Rootless mode end to end: the real `tapswitch` run by an unprivileged
//! uid (see `RootlessUser`), on namespaces that user makes.
//!
//! ```text
//!   user namespace of the holder (the user is root in it)
//!   ┌──────────────────────────────────────────────────────────────┐
//!   │ keeper c1: eth0 172.17.0.2 ═ ts-<id1>    keeper c2: eth0 ... │
//!   └──────────────────────────── ║ ──────────────────── ║ ────────┘
//!        packet sockets opened in there, passed over SCM_RIGHTS
//!   tapswitch serve (the user's own network namespace) + gateway 172.17.0.1
//! ```
//!
//! The gateway's services and MTUs rootless are in `rootless_gateway.rs`,
//! Podman in `rootless_podman.rs`; the user and its helpers in
//! `tests/src/rootless_user.rs`.
//!
//! CI runs as root; each test switches to its own uid with `setpriv`, with
//! its own HOME and XDG directories, and its guard removes what the user
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use tapswitch_tests::lane_order::{
    KeptBy, moving_sender_keeps_its_order, veth_cpus_for_a_moving_sender,
};
use tapswitch_tests::poll::within;
use tapswitch_tests::rootless_user::{RootlessUser, pings, wait_for_new_netns};
use tapswitch_tests::traffic::Station;
use tapswitch_tests::worker_threads::{slices_granted_and_shown, worker_threads};
use tapswitch_tests::{require_root, unique_name};

#[test]
fn serve_and_two_containers_ping_each_other_and_the_gateway_and_survive_a_switch_restart() {
    require_root();
    let mut user = RootlessUser::new(0);
    let serve = user.serve(&[]);
    let log = user.serve_log(serve);
    assert!(
        log.lines()
            .next()
            .unwrap_or_default()
            .contains("in rootless mode"),
        "serve's first line says the mode:\n{log}"
    );
    assert!(user.ok(&["stats"]).contains("mode         rootless"));

    let c1_id = user.ok(&["container", "create", "c1"]).trim().to_string();
    user.ok(&["container", "create", "c2"]);
    // c1's own resolv.conf (exec shows it as /etc/resolv.conf), in the
    // user's runtime directory.
    let c1_etc = user
        .runtime_dir()
        .join("tapswitch/containers")
        .join(&c1_id)
        .join("etc");
    let resolv = std::fs::read_to_string(c1_etc.join("resolv.conf")).unwrap_or_default();
    assert!(resolv.contains("nameserver 172.17.0.1"), "{resolv:?}");
    let ls = user.ok(&["container", "ls"]);
    assert!(
        ls.lines()
            .any(|l| l.contains("c1") && l.contains("172.17.0.2/16")),
        "{ls}"
    );
    assert!(
        ls.lines()
            .any(|l| l.contains("c2") && l.contains("172.17.0.3/16")),
        "{ls}"
    );
    assert!(pings(&user, "c1", "172.17.0.3"), "c1 -> c2");
    assert!(pings(&user, "c2", "172.17.0.1"), "c2 -> gateway");
    let fdb = user.ok(&["fdb"]);
    assert!(
        fdb.contains("02:42:ac:11:00:02") && fdb.contains("02:42:ac:11:00:03"),
        "{fdb}"
    );
    let ports = user.ok(&["ports"]);
    assert!(
        ports.contains("container c1") && ports.contains("container c2"),
        "{ports}"
    );

    // The other commands, as for root: show, flows, and a network of the
    // user's own with its own switch.
    let show = user.ok(&["show"]);
    assert!(show.contains("c1") && show.contains("c2"), "{show}");
    user.ok(&["flows"]);
    user.ok(&["network", "create", "lab", "--subnet", "10.77.0.0/24"]);
    assert!(user.ok(&["network", "ls"]).contains("lab"));
    let lab = user.serve(&["--network", "lab"]);
    user.ok(&["container", "create", "l1", "--network", "lab"]);
    assert!(pings(&user, "l1", "10.77.0.1"), "l1 -> lab's gateway");
    assert!(!pings(&user, "l1", "172.17.0.2"), "networks stay apart");
    let inspect = user.ok(&["network", "inspect", "lab"]);
    assert!(
        inspect.contains("l1") && inspect.contains("10.77.0.2"),
        "{inspect}"
    );
    assert_eq!(user.ok(&["container", "rm", "l1"]).trim(), "l1");
    user.stop(lab);
    user.ok(&["network", "rm", "lab"]);
    assert!(!user.ok(&["network", "ls"]).contains("lab"));

    // exec runs as root of the user namespace and passes the exit status.
    let out = user.tapswitch(&["container", "exec", "c1", "--", "sh", "-c", "id -u; exit 7"]);
    assert_eq!(out.status.code(), Some(7));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "0");

    // State and runtime files are the user's alone.
    for dir in [
        user.data_dir().join("tapswitch"),
        user.runtime_dir().join("tapswitch"),
    ] {
        let mode = std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700, "{}", dir.display());
    }
    let socket = user.runtime_dir().join("tapswitch/bridge.sock");
    assert_eq!(
        std::fs::metadata(&socket).unwrap().permissions().mode() & 0o777,
        0o600
    );

    // The switch restarts; the holder and the containers stay, and the
    // new switch takes their ports back.
    let holder = user.holder_pid().expect("a holder record");
    user.stop(serve);
    assert!(user.owns_process(holder), "the holder outlives the switch");
    assert!(user.ok(&["container", "ls"]).contains("c2"));
    let again = user.serve(&[]);
    assert!(
        user.serve_log(again).contains("re-attached container c1"),
        "{}",
        user.serve_log(again)
    );
    assert_eq!(user.holder_pid(), Some(holder), "the same holder");
    assert!(
        pings(&user, "c2", "172.17.0.2"),
        "c2 -> c1 after the restart"
    );

    // rm ends the namespace: the address is free for the next container.
    assert_eq!(user.ok(&["container", "rm", "c1"]).trim(), "c1");
    assert!(
        !c1_etc.exists(),
        "rm takes the container's resolv.conf with it"
    );
    user.ok(&["container", "create", "c3"]);
    assert!(
        user.ok(&["container", "ls"])
            .lines()
            .any(|l| l.contains("c3") && l.contains("172.17.0.2/16"))
    );
}

#[test]
fn another_uid_is_refused_by_the_control_socket() {
    require_root();
    let mut owner = RootlessUser::new(1);
    owner.serve(&[]);
    let intruder = RootlessUser::new(2);
    let socket = owner.runtime_dir().join("tapswitch/bridge.sock");
    let err = intruder.fails(&["stats", "--control", socket.to_str().unwrap()]);
    assert!(
        err.contains("permission denied on the control socket"),
        "{err}"
    );
    let err = intruder.fails(&["port", "rm", "gw", "--control", socket.to_str().unwrap()]);
    assert!(
        err.contains("permission denied on the control socket"),
        "{err}"
    );
    // The owner still gets its answers.
    assert!(owner.ok(&["stats"]).contains("rootless"));
}

#[test]
fn a_users_own_namespace_is_attached_by_pid_and_roots_is_refused() {
    require_root();
    let mut user = RootlessUser::new(3);
    user.serve(&[]);
    user.ok(&["container", "create", "made"]);
    // What a user does by hand (or Podman with --network none): a network
    // namespace inside a user namespace of their own.
    let pid = user.spawn(
        "unshare",
        &["--user", "--map-root-user", "--net", "sleep", "300"],
    );
    wait_for_new_netns(pid, std::path::Path::new("/proc/self/ns/net"));
    let out = user.tapswitch(&["container", "attach", "byhand", "--pid", &pid.to_string()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("use 172.17.0.1 as its DNS server"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        pings(&user, "made", "172.17.0.3"),
        "made -> the attached namespace"
    );
    assert!(pings(&user, "byhand", "172.17.0.1"), "attached -> gateway");
    assert_eq!(user.ok(&["container", "detach", "byhand"]).trim(), "byhand");
    assert!(!user.ok(&["container", "ls"]).contains("byhand"));

    // A namespace that goes by itself (its last process ends) takes its
    // record with it at the next command.
    let pid = user.spawn(
        "unshare",
        &["--user", "--map-root-user", "--net", "sleep", "300"],
    );
    wait_for_new_netns(pid, std::path::Path::new("/proc/self/ns/net"));
    user.ok(&["container", "attach", "gone", "--pid", &pid.to_string()]);
    assert!(user.ok(&["container", "ls"]).contains("gone"));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("ending the namespace's process (ours)");
    let gone = within(Duration::from_secs(10), || {
        !user.ok(&["container", "ls"]).contains("gone")
    });
    assert!(gone, "the lease outlived its namespace");

    // A namespace root made is not the user's to attach.
    let name = unique_name("tsrl");
    tapswitch_tests::netns::ip(&["netns", "add", &name]);
    let err = user.fails(&[
        "container",
        "attach",
        "theirs",
        "--netns",
        &format!("/run/netns/{name}"),
    ]);
    tapswitch_tests::netns::ip(&["netns", "delete", &name]);
    assert!(err.contains("belongs to root"), "{err}");
    assert!(err.contains("not to you"), "{err}");
    assert!(!user.ok(&["container", "ls"]).contains("theirs"));
}

#[test]
fn the_demo_runs_rootless_with_a_tap_port_when_dev_net_tun_allows() {
    require_root();
    let user = RootlessUser::new(4);
    // The user is neither owner nor group of /dev/net/tun: "others" decides.
    let tun_open =
        std::fs::metadata("/dev/net/tun").is_ok_and(|m| m.permissions().mode() & 0o006 == 0o006);
    let out = user.tapswitch(&["demo", "--tcp-mb", "4"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("runs inside a user namespace of yours"),
        "{stdout}"
    );
    assert!(
        stdout.contains("a -> b (veth)   172.17.0.3   3/3 replies"),
        "{stdout}"
    );
    assert!(stdout.contains("nothing is left behind"), "{stdout}");
    if tun_open {
        assert!(
            stdout.contains("b -> c (TAP)    172.17.0.4   3/3 replies"),
            "{stdout}"
        );
    } else {
        assert!(stdout.contains("sudo chmod 0666 /dev/net/tun"), "{stdout}");
        assert!(stdout.contains("b -> c (veth)"), "{stdout}");
        println!(
            "SKIPPED: the rootless TAP port (/dev/net/tun is not open to other users here; `chmod 0666 /dev/net/tun` enables it); the demo ran with veth ports only"
        );
    }
}

#[test]
fn port_add_and_rm_as_an_ordinary_user_in_namespaces_of_theirs() {
    require_root();
    let user_ns = tapswitch_tests::Netns::new("trp");
    let mut user = RootlessUser::new(7).in_netns(&user_ns.name);
    let serve = user.serve(&[]);
    user.ok(&["container", "create", "c1"]);
    // A namespace of the user's, and a veth pair the user makes in it.
    let pid = user.spawn(
        "unshare",
        &["--user", "--map-root-user", "--net", "sleep", "300"],
    );
    wait_for_new_netns(pid, &std::path::Path::new("/run/netns").join(&user_ns.name));
    let pid = pid.to_string();
    let inside = |args: &[&str]| {
        user.command("nsenter")
            .args(["--preserve-credentials", "--user", "--net", "-t", &pid])
            .args(args)
            .output()
            .expect("running nsenter as the user")
    };
    for step in [
        "ip link add va type veth peer name vb",
        "ip addr add 172.17.0.200/16 dev vb",
        "ip link set vb up",
        "ip link set va up",
    ] {
        let out = inside(&step.split(' ').collect::<Vec<_>>());
        assert!(
            out.status.success(),
            "{step}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    let added = user.ok(&["port", "add", "--iface", "va", "--pid", &pid]);
    assert!(
        added.starts_with("added port") && added.contains(" va "),
        "{added}"
    );
    // Its sockets come from a helper, steered by classic BPF: no ledger,
    // so read per CPU its lanes' frames are put back in the order they
    // arrived (docs/switch-and-ports.md), and the list says so.
    let listed = user.ok(&["ports"]);
    let va = listed
        .lines()
        .find(|line| line.contains(" va "))
        .unwrap_or("");
    assert!(
        !va.contains("lanes")
            || va.contains("read per CPU, in the order frames arrived (no ledger)"),
        "{listed}"
    );
    assert!(
        pings(&user, "c1", "172.17.0.200"),
        "c1 -> the user's namespace through port va\n{}",
        user.serve_log(serve)
    );
    // In the user's own namespace: one line saying what to do instead.
    let err = user.fails(&["port", "add", "--iface", "lo"]);
    assert!(
        err.contains("cannot open lo in your own network namespace") && err.contains("--pid PID"),
        "{err}"
    );

    // TAP ports, when /dev/net/tun is open to the user ("others" decide).
    let tun_open =
        std::fs::metadata("/dev/net/tun").is_ok_and(|m| m.permissions().mode() & 0o006 == 0o006);
    if tun_open {
        // Made by a helper in the user's namespace, as root of its user
        // namespace; gone with the port.
        let added = user.ok(&["port", "add", "--tap", "tsr0", "--pid", &pid]);
        assert!(added.contains(" tsr0 "), "{added}");
        let out = inside(&["ip", "addr", "add", "172.17.0.201/16", "dev", "tsr0"]);
        assert!(out.status.success(), "{out:?}");
        assert!(
            pings(&user, "c1", "172.17.0.201"),
            "c1 -> the TAP in the user's namespace\n{}",
            user.serve_log(serve)
        );
        assert_eq!(user.ok(&["port", "rm", "tsr0"]).trim(), "removed port tsr0");
        assert!(
            !inside(&["ip", "link", "show", "tsr0"]).status.success(),
            "the TAP the switch made goes with its port"
        );
        // The user's own namespace: no new TAP there, one line with both ways out...
        let err = user.fails(&["port", "add", "--tap", "tsr1"]);
        assert!(
            err.contains("cannot create TAP tsr1 in your own network namespace")
                && err.contains("sudo ip tuntap add tsr1 mode tap user"),
            "{err}"
        );
        // ...and a persistent TAP root made for the user opens there.
        let uid = user.uid.to_string();
        user_ns.ip(&["tuntap", "add", "tsu0", "mode", "tap", "user", &uid]);
        user_ns.ip(&["addr", "add", "172.17.0.202/16", "dev", "tsu0"]);
        user_ns.ip(&["link", "set", "tsu0", "up"]);
        let added = user.ok(&["port", "add", "--tap", "tsu0"]);
        assert!(added.contains(" tsu0 "), "{added}");
        assert!(
            pings(&user, "c1", "172.17.0.202"),
            "c1 -> the user's persistent TAP\n{}",
            user.serve_log(serve)
        );
    } else {
        let err = user.fails(&["port", "add", "--tap", "tsr0", "--pid", &pid]);
        assert!(err.contains("sudo chmod 0666 /dev/net/tun"), "{err}");
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        println!(
            "SKIPPED: rootless TAP ports (/dev/net/tun is not open to other users here; `chmod 0666 /dev/net/tun` enables them); the refusal is one line"
        );
    }

    // port rm: the port leaves the switch, and c1 no longer reaches vb.
    assert_eq!(user.ok(&["port", "rm", "va"]).trim(), "removed port va");
    assert!(!user.ok(&["ports"]).contains(" va "));
    assert!(!pings(&user, "c1", "172.17.0.200"), "va is gone");
    drop(user);
}

#[test]
fn default_directories_without_xdg_and_the_state_dir_override() {
    use std::os::unix::fs::MetadataExt;
    require_root();
    let mut user = RootlessUser::new(8);
    let mode = |path: &std::path::Path| {
        std::fs::metadata(path)
            .unwrap_or_else(|err| panic!("{}: {err}", path.display()))
            .mode()
            & 0o777
    };
    // No XDG_DATA_HOME: state under ~/.local/share/tapswitch, 0700.
    let out = user
        .command(tapswitch_tests::switch_process::binary())
        .env_remove("XDG_DATA_HOME")
        .args(["network", "create", "homed", "--subnet", "10.78.0.0/24"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let state = user.home().join(".local/share/tapswitch");
    assert!(state.join("state.json").exists(), "{}", state.display());
    assert_eq!(mode(&state), 0o700);
    // TAPSWITCH_STATE_DIR still chooses another one.
    let elsewhere = user.dir().join("elsewhere");
    let out = user
        .command(tapswitch_tests::switch_process::binary())
        .env("TAPSWITCH_STATE_DIR", &elsewhere)
        .args(["network", "create", "other", "--subnet", "10.79.0.0/24"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(
        std::fs::read_to_string(elsewhere.join("state.json"))
            .unwrap()
            .contains("other")
    );
    assert!(!user.ok(&["network", "ls"]).contains("other"));

    // No XDG_RUNTIME_DIR (su, cron): the control socket goes to
    // /tmp/tapswitch-<uid>, 0700, the socket 0600.
    let runtime = user.fallback_runtime_dir();
    let _ = std::fs::remove_dir_all(&runtime);
    let no_runtime = |user: &RootlessUser| {
        let mut command = user.command(tapswitch_tests::switch_process::binary());
        command.env_remove("XDG_RUNTIME_DIR");
        command
    };
    let serve = no_runtime(&user)
        .arg("serve")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let serve = user.keep(serve);
    let socket = runtime.join("bridge.sock");
    let up = within(Duration::from_secs(20), || {
        let stats = no_runtime(&user).arg("stats").output().unwrap();
        stats.status.success()
    });
    assert!(up, "serve did not come up");
    assert_eq!(mode(&runtime), 0o700);
    assert_eq!(mode(&socket), 0o600);
    assert_eq!(std::fs::metadata(&runtime).unwrap().uid(), user.uid);
    user.stop(serve);
}

#[test]
fn serve_host_iface_is_refused_to_an_ordinary_user_in_one_line() {
    require_root();
    let user = RootlessUser::new(10);
    let name = unique_name("tsh");
    let err = user.fails(&["serve", "--host-iface", &name]);
    // serve's log lines (the mode, missing prerequisites) may come first;
    // the error itself is one line, the last.
    let is_log = |l: &&str| l.starts_with("tapswitch: info:") || l.starts_with("tapswitch: warn:");
    let lines: Vec<&str> = err
        .lines()
        .filter(|l| !l.trim().is_empty() && !is_log(l))
        .collect();
    assert_eq!(lines.len(), 1, "one line: {err}");
    assert_eq!(err.trim_end().lines().last(), Some(lines[0]), "{err}");
    assert!(
        lines[0].contains("--host-iface needs root") && lines[0].contains("published ports (-p)"),
        "{err}"
    );
    // Nothing was made: no interface, and no switch answering.
    assert!(
        tools::netlink::Netlink::open()
            .and_then(|mut nl| nl.link_index(&name))
            .expect("asking netlink")
            .is_none(),
        "no {name} in the user's namespace"
    );
    assert!(!user.tapswitch(&["stats"]).status.success(), "no switch");
}

#[test]
fn a_rootless_switchs_workers_take_the_shortest_time_slices_while_traffic_is_light() {
    require_root();
    let mut user = RootlessUser::new(11);
    let serve = user.serve(&[]);
    let log = user.serve_log(serve);
    assert!(
        log.contains("workers run at ordinary priority, with the shortest time slices"),
        "serve says why and what instead:\n{log}"
    );
    // Workers ask as they start; no frame is needed (traffic is light).
    // Not settled after that: the checks below say what is missing.
    let mut workers = Vec::new();
    let _ = within(Duration::from_secs(10), || {
        workers = worker_threads(user.serve_pid(serve));
        !workers.is_empty() && workers.iter().all(|w| w.slice_ns == Some(100_000))
    });
    assert!(!workers.is_empty(), "the switch has worker threads");
    let stats = user.ok(&["stats"]);
    assert!(
        stats.contains(
            "while traffic is light: ordinary with 0.1 ms time slices (real-time was refused)"
        ),
        "{stats}"
    );
    if !slices_granted_and_shown(&workers) {
        eprintln!("skipped: this kernel shows no time slices it grants (Linux 6.12+)");
        return;
    }
    for worker in &workers {
        assert_eq!(
            worker.slice_ns,
            Some(100_000),
            "{}: 0.1 ms slices while light",
            worker.name
        );
    }
}

/// Rootless lanes keep no ledger (a user namespace cannot load eBPF), so
/// a rootless port read per CPU has its lanes' frames put back in the
/// order the kernel received them: one sender that moves between CPUs
/// every few frames, at a light pace, still gets its frames across once
/// and in order. Reading per CPU without either overtook frames here.
#[test]
fn a_sender_that_moves_between_cpus_keeps_its_order_through_a_rootless_switch() {
    require_root();
    let Some(cpus) = veth_cpus_for_a_moving_sender() else {
        return;
    };
    let mut user = RootlessUser::new(12);
    let serve = user.serve(&["--workers", "2"]);
    let mut netns = Vec::new();
    for name in ["m1", "m2"] {
        user.ok(&["container", "create", name]);
        let inspect: serde_json::Value =
            serde_json::from_str(&user.ok(&["container", "inspect", name])).unwrap();
        let key = inspect[0]["NetworkSettings"]["SandboxKey"]
            .as_str()
            .expect("the container's namespace");
        netns.push(std::path::PathBuf::from(key));
    }
    let ports = user.ok(&["ports"]);
    assert!(
        ports.lines().filter(|l| l.contains("2 lanes")).count() >= 2,
        "both containers' ports are read in two lanes:\n{ports}\n{}",
        user.serve_log(serve)
    );
    let stations = (
        Station::open_at(&netns[0], "eth0"),
        Station::open_at(&netns[1], "eth0"),
    );
    moving_sender_keeps_its_order(&user, stations, &cpus, KeptBy::ArrivalTimes);
}
