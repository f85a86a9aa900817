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
//! The gateway-services test starts the user's commands in a network
//! namespace of its own, routed to a "remote" one (`RootlessUser::in_netns`,
//! `remote::Remote`): the switch's host sockets live there, never on the
//! machine's real network.
//!
//! CI runs as root; each test switches to its own uid with `setpriv`, with
//! its own HOME and XDG directories, and its guard removes what the user
//! made (containers, switch, holder: by PID).

use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use tapswitch_tests::rootless_user::RootlessUser;
use tapswitch_tests::{require_root, unique_name};

/// Pings `target` once from inside container `name`; true if answered.
fn pings(user: &RootlessUser, name: &str, target: &str) -> bool {
    user.tapswitch(&[
        "container",
        "exec",
        name,
        "--",
        "ping",
        "-c",
        "1",
        "-W",
        "3",
        target,
    ])
    .status
    .success()
}

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
    let deadline = Instant::now() + Duration::from_secs(10);
    while user.ok(&["container", "ls"]).contains("gone") {
        assert!(
            Instant::now() < deadline,
            "the lease outlived its namespace"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

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

/// Rootless Podman's options that work on a machine without a registry,
/// systemd or a cgroup v2 delegation: runc, cgroupfs, vfs, file events.
fn podman(user: &RootlessUser, args: &[&str]) -> std::process::Output {
    let runtime = if tapswitch_tests::lab::have_program("runc") {
        "runc"
    } else {
        "crun"
    };
    user.command("podman")
        .args([
            "--runtime",
            runtime,
            "--cgroup-manager",
            "cgroupfs",
            "--storage-driver",
            "vfs",
            "--events-backend",
            "file",
        ])
        .args(args)
        .output()
        .expect("running podman")
}

/// Ends what rootless Podman left running: the container's process and
/// Podman's pause process (its user namespace's holder), by PID.
struct PodmanLeftovers {
    uid: u32,
    /// Podman's runtime directory when it finds XDG_RUNTIME_DIR unusable.
    tmp_dir: std::path::PathBuf,
    pause_files: [std::path::PathBuf; 2],
    container: Option<u32>,
}

impl Drop for PodmanLeftovers {
    fn drop(&mut self) {
        let pauses = self.pause_files.iter().filter_map(|file| {
            std::fs::read_to_string(file)
                .ok()
                .and_then(|t| t.trim().parse::<u32>().ok())
        });
        for pid in self.container.into_iter().chain(pauses) {
            let owned = std::fs::metadata(format!("/proc/{pid}"))
                .is_ok_and(|m| std::os::unix::fs::MetadataExt::uid(&m) == self.uid);
            if owned {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid as i32),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
        // Podman's own clean-up process (started by conmon when the
        // container exits) may still be writing there: let it finish.
        let deadline = Instant::now() + Duration::from_secs(10);
        while podman_runs_as(self.uid) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = std::fs::remove_dir_all(&self.tmp_dir);
    }
}

/// Whether a live (not zombie) Podman process (podman, conmon, runc) runs as `uid`.
fn podman_runs_as(uid: u32) -> bool {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return false;
    };
    entries.flatten().any(|entry| {
        let status = std::fs::read_to_string(entry.path().join("status")).unwrap_or_default();
        let uid_line = status.lines().find(|l| l.starts_with("Uid:"));
        let zombie = status
            .lines()
            .any(|l| l.starts_with("State:") && l.contains('Z'));
        // The first line is `Name:\t<comm>`.
        let name = status.lines().next().unwrap_or_default();
        let podman = ["podman", "conmon", "runc"]
            .iter()
            .any(|p| name.split_whitespace().nth(1) == Some(*p));
        podman
            && !zombie
            && uid_line.is_some_and(|l| l.split_whitespace().nth(1) == Some(&uid.to_string()))
    })
}

#[test]
fn a_rootless_podman_container_is_attached_by_pid() {
    require_root();
    let skip = |why: &str| println!("SKIPPED: attaching a rootless Podman container: {why}");
    if !tapswitch_tests::lab::have_program("podman") {
        return skip("podman is not installed");
    }
    let Some(busybox) = ["/bin/busybox", "/usr/bin/busybox"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
    else {
        return skip("no busybox (busybox-static) to make an image from");
    };
    let mut user = RootlessUser::new(5);
    let tmp_dir = std::path::PathBuf::from(format!("/tmp/podman-run-{}", user.uid));
    let mut leftovers = PodmanLeftovers {
        uid: user.uid,
        pause_files: [
            user.runtime_dir().join("libpod/tmp/pause.pid"),
            tmp_dir.join("libpod/tmp/pause.pid"),
        ],
        tmp_dir,
        container: None,
    };
    // An image without a registry: a busybox root filesystem, imported.
    let rootfs = user.dir().join("rootfs");
    std::fs::create_dir_all(rootfs.join("bin")).unwrap();
    std::fs::copy(busybox, rootfs.join("bin/busybox")).unwrap();
    for applet in ["sh", "sleep", "ping", "ip"] {
        std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(applet)).unwrap();
    }
    let tarball = user.dir().join("rootfs.tar");
    let tar = std::process::Command::new("tar")
        .args(["--numeric-owner", "--owner=0", "--group=0", "-C"])
        .arg(&rootfs)
        .arg("-cf")
        .arg(&tarball)
        .arg(".")
        .status()
        .unwrap();
    assert!(tar.success());
    nix::unistd::chown(&tarball, Some(nix::unistd::Uid::from_raw(user.uid)), None).unwrap();
    let imported = podman(
        &user,
        &["import", tarball.to_str().unwrap(), "localhost/tsbusybox"],
    );
    if !imported.status.success() {
        return skip(&format!(
            "podman import failed: {}",
            String::from_utf8_lossy(&imported.stderr).trim()
        ));
    }
    let run = podman(
        &user,
        &[
            "run",
            "-d",
            "--name",
            "tsp",
            "--network",
            "none",
            "--cap-add",
            "NET_RAW",
            "localhost/tsbusybox",
            "/bin/sleep",
            "300",
        ],
    );
    if !run.status.success() {
        return skip(&format!(
            "podman run failed here: {}",
            String::from_utf8_lossy(&run.stderr).trim()
        ));
    }
    let pid = podman(&user, &["inspect", "-f", "{{.State.Pid}}", "tsp"]);
    let pid = String::from_utf8_lossy(&pid.stdout).trim().to_string();
    leftovers.container = pid.parse().ok();

    user.serve(&[]);
    user.ok(&["container", "create", "made"]);
    let out = user.tapswitch(&["container", "attach", "tsp", "--pid", &pid]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ping = podman(
        &user,
        &["exec", "tsp", "ping", "-c", "1", "-W", "3", "172.17.0.2"],
    );
    assert!(
        ping.status.success(),
        "the Podman container reaches a created one: {}{}",
        String::from_utf8_lossy(&ping.stdout),
        String::from_utf8_lossy(&ping.stderr)
    );
    assert!(pings(&user, "made", "172.17.0.3"), "and back");
    assert!(
        pings(&user, "tsp", "172.17.0.1"),
        "exec enters Podman's namespaces too"
    );
    assert_eq!(user.ok(&["container", "detach", "tsp"]).trim(), "tsp");
    let removed = podman(&user, &["rm", "-f", "-t", "0", "tsp"]);
    assert!(removed.status.success());
}

/// Waits until process `pid` (an `unshare ... --net sleep` the user
/// started, through `nsenter` and `setpriv` when the user has a namespace
/// of its own) has entered a network namespace other than `from`, with
/// its id maps written: its program is `sleep` only once `unshare` has
/// done all that (earlier, the PID may still be nsenter's, in another
/// namespace than the user's, or unshare's between its steps).
fn wait_for_new_netns(pid: u32, from: &std::path::Path) {
    use std::os::unix::fs::MetadataExt;
    let inode = |path: &std::path::Path| std::fs::metadata(path).map(|m| m.ino()).ok();
    let before = inode(from).expect("the namespace the user started in");
    let deadline = Instant::now() + Duration::from_secs(10);
    let ns = std::path::PathBuf::from(format!("/proc/{pid}/ns/net"));
    let comm = format!("/proc/{pid}/comm");
    while inode(&ns).is_none_or(|ino| ino == before)
        || std::fs::read_to_string(&comm).unwrap_or_default().trim() != "sleep"
    {
        assert!(
            Instant::now() < deadline,
            "unshare did not enter a namespace"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn gateway_services_work_rootless_from_the_users_own_network_namespace() {
    use std::io::{Read, Write};
    use std::net::{SocketAddr, TcpListener, TcpStream};
    use tapswitch_tests::remote::{
        DNS_ANSWER, DNS_PORT, REMOTE_IP, Remote, TCP_ECHO_PORT, UDP_ECHO_PORT,
    };

    require_root();
    // The user's "host" network: a namespace routed to a remote one, so
    // the switch's host sockets never touch the machine's real network.
    let user_ns = tapswitch_tests::Netns::new("trl");
    let remote = Remote::new(&user_ns);
    let mut user = RootlessUser::new(6).in_netns(&user_ns.name);
    let serve = user.serve(&[]);
    // A new namespace's ping_group_range is "1 0": ping sockets are closed
    // there, and serve says so in one line with the fix.
    let log = user.serve_log(serve);
    assert!(
        log.lines().any(
            |l| l.contains("rootless: ping sockets are closed to your group")
                && l.contains("sudo sysctl -w net.ipv4.ping_group_range='0 2147483647'")
        ),
        "{log}"
    );

    user.ok(&["container", "create", "c1"]);
    let ping = user.tapswitch(&[
        "container",
        "exec",
        "c1",
        "--",
        "ping",
        "-c",
        "1",
        "-W",
        "3",
        &REMOTE_IP.to_string(),
    ]);
    let said = String::from_utf8_lossy(&ping.stdout);
    assert!(
        !ping.status.success() && said.contains("From 172.17.0.1"),
        "the gateway refuses ping out without ping sockets: {said}"
    );
    // The fix the line gives, in the namespace serve runs in, opens them
    // for a switch started after it (serve looks once, at its start).
    user_ns.sysctl("net.ipv4.ping_group_range", "0 2147483647");
    user.stop(serve);
    let upstream = format!("{REMOTE_IP}:{DNS_PORT}");
    let serve = user.serve(&["--dns-upstream", &upstream]);
    assert!(
        !user
            .serve_log(serve)
            .contains("rootless: ping sockets are closed"),
        "{}",
        user.serve_log(serve)
    );
    assert!(
        pings(&user, "c1", &REMOTE_IP.to_string()),
        "ping out once ping_group_range lets the user's group in\n{}",
        user.serve_log(serve)
    );

    // Outbound TCP from a rootless container (bash's /dev/tcp), through the switch's socket
    // in the user's namespace, to the remote's echo server.
    let script = format!(
        "exec 3<>/dev/tcp/{REMOTE_IP}/{TCP_ECHO_PORT} && printf rootless >&3 && head -c 8 <&3"
    );
    let out = user.tapswitch(&[
        "container",
        "exec",
        "c1",
        "--",
        "timeout",
        "10",
        "bash",
        "-c",
        &script,
    ]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "rootless",
        "the echo through the gateway: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        user.serve_log(serve)
    );

    // And UDP: the remote's echo answers through the same namespace.
    let script = format!(
        "exec 3<>/dev/udp/{REMOTE_IP}/{UDP_ECHO_PORT} && printf datagram >&3 && head -c 8 <&3"
    );
    let out = user.tapswitch(&[
        "container",
        "exec",
        "c1",
        "--",
        "timeout",
        "10",
        "bash",
        "-c",
        &script,
    ]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "datagram",
        "the UDP echo through the gateway: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    // DNS: exec shows the container its own resolv.conf (the gateway), in
    // a mount namespace of its own; the gateway answers the network's
    // names and forwards the rest to the remote's server.
    let resolv = user.ok(&["container", "exec", "c1", "--", "cat", "/etc/resolv.conf"]);
    assert!(resolv.contains("nameserver 172.17.0.1"), "{resolv}");
    let outside = user
        .command("cat")
        .arg("/etc/resolv.conf")
        .output()
        .unwrap();
    assert!(
        !String::from_utf8_lossy(&outside.stdout).contains("172.17.0.1"),
        "the bind mount stays inside exec"
    );
    let lookup = |name: &str| {
        let out = user.tapswitch(&["container", "exec", "c1", "--", "getent", "ahostsv4", name]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let answer = lookup("www.example.test");
    assert!(
        answer.contains(&DNS_ANSWER.to_string()),
        "a name forwarded to the remote's DNS server: {answer:?}\n{}",
        user.serve_log(serve)
    );
    let answer = lookup("c1");
    assert!(
        answer.contains("172.17.0.2"),
        "the container's own name: {answer:?}"
    );

    // A published port of an attached namespace, reached from the remote
    // namespace: the container sees the client's own address.
    let pid = user.spawn(
        "unshare",
        &["--user", "--map-root-user", "--net", "sleep", "300"],
    );
    wait_for_new_netns(pid, &std::path::Path::new("/run/netns").join(&user_ns.name));
    let pid = pid.to_string();
    // Ports below 1024 need a sysctl: one clear line, and nothing recorded.
    let err = user.fails(&["container", "attach", "web", "--pid", &pid, "-p", "80:80"]);
    assert!(
        err.contains("host port 0.0.0.0:80/tcp needs privileges")
            && err.contains("net.ipv4.ip_unprivileged_port_start"),
        "{err}"
    );
    assert!(!user.ok(&["container", "ls"]).contains("web"));
    user.ok(&["container", "attach", "web", "--pid", &pid, "-p", "8082:80"]);
    assert!(
        user.ok(&["container", "ls"])
            .lines()
            .any(|l| l.contains("web") && l.contains("0.0.0.0:8082->80/tcp"))
    );
    // And a container `create -p` made.
    user.ok(&["container", "create", "pub", "-p", "8084:80"]);
    let inspect: serde_json::Value =
        serde_json::from_str(&user.ok(&["container", "inspect", "pub"])).unwrap();
    let pub_ns = inspect[0]["NetworkSettings"]["SandboxKey"]
        .as_str()
        .expect("the container's namespace")
        .to_string();
    // Root may enter the user's namespaces to listen in there for the
    // test: each server answers `clients` clients with their address.
    let serve_in = |ns: std::path::PathBuf, clients: usize| {
        let listener = tools::netlink::netns::run_in(&ns, || {
            Ok(TcpListener::bind("0.0.0.0:80").expect("listening in the container"))
        })
        .unwrap();
        std::thread::spawn(move || {
            for _ in 0..clients {
                let (mut stream, peer) = listener.accept().expect("a client");
                stream.write_all(peer.to_string().as_bytes()).unwrap();
            }
        })
    };
    let server = serve_in(format!("/proc/{pid}/ns/net").into(), 2);
    let created_server = serve_in(pub_ns.into(), 1);
    let connect_to = |port: u16| {
        let to = SocketAddr::from(([10, 201, 0, 1], port));
        let mut tries = 0;
        let mut stream = loop {
            match TcpStream::connect_timeout(&to, Duration::from_secs(5)) {
                Ok(stream) => break stream,
                Err(err) if err.kind() == std::io::ErrorKind::ConnectionRefused && tries < 100 => {
                    tries += 1;
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(err) => panic!("connecting to the published port: {err}"),
            }
        };
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut seen = String::new();
        stream.read_to_string(&mut seen).expect("the answer");
        (seen, stream.local_addr().unwrap().to_string())
    };
    let (seen, local) = remote.ns.run(|| connect_to(8082));
    assert_eq!(seen, local, "{}", user.serve_log(serve));
    // And from the user's own namespace, the host side, to its address.
    let (seen, local) = user_ns.run(|| connect_to(8082));
    assert_eq!(seen, local, "{}", user.serve_log(serve));
    server.join().expect("the attached namespace's server");
    let (seen, local) = remote.ns.run(|| connect_to(8084));
    assert_eq!(seen, local, "{}", user.serve_log(serve));
    created_server
        .join()
        .expect("the created container's server");

    // Detach closes the host port.
    assert_eq!(user.ok(&["container", "detach", "web"]).trim(), "web");
    let refused = remote.ns.run(|| {
        TcpStream::connect_timeout(&"10.201.0.1:8082".parse().unwrap(), Duration::from_secs(5))
    });
    assert_eq!(
        refused.err().map(|e| e.kind()),
        Some(std::io::ErrorKind::ConnectionRefused),
        "{}",
        user.serve_log(serve)
    );
    drop(user);
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
    let deadline = Instant::now() + Duration::from_secs(20);
    while !no_runtime(&user)
        .arg("stats")
        .output()
        .unwrap()
        .status
        .success()
    {
        assert!(Instant::now() < deadline, "serve did not come up");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(mode(&runtime), 0o700);
    assert_eq!(mode(&socket), 0o600);
    assert_eq!(std::fs::metadata(&runtime).unwrap().uid(), user.uid);
    user.stop(serve);
}

/// `(interface, mtu)` for every link but `lo` of the network namespace at
/// `netns` (root reads any namespace).
fn link_mtus(netns: &str) -> Vec<(String, String)> {
    let out = std::process::Command::new("nsenter")
        .arg(format!("--net={netns}"))
        .args(["--", "ip", "-o", "link", "show"])
        .output()
        .expect("ip link show in the namespace");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            let name = words.nth(1)?.trim_end_matches(':');
            let name = name.split('@').next()?.to_string();
            let mtu = words.skip_while(|w| *w != "mtu").nth(1)?.to_string();
            (name != "lo").then_some((name, mtu))
        })
        .collect()
}

/// Sends `bytes` from the network namespace at `netns` to the remote's TCP
/// echo server and reads the echo back: (sent, received).
fn echo_from(netns: &str, bytes: usize) -> std::io::Result<(Vec<u8>, Vec<u8>)> {
    use std::io::{Read, Write};
    use std::net::{Shutdown, SocketAddrV4, TcpStream};
    use tapswitch_tests::remote::{REMOTE_IP, TCP_ECHO_PORT};
    tools::netlink::netns::run_in(std::path::Path::new(netns), move || {
        let to = SocketAddrV4::new(REMOTE_IP, TCP_ECHO_PORT);
        let stream = TcpStream::connect_timeout(&to.into(), Duration::from_secs(5))?;
        stream.set_read_timeout(Some(Duration::from_secs(20)))?;
        let sent: Vec<u8> = (0..bytes).map(|i| (i * 13 % 251) as u8).collect();
        let mut writer = stream.try_clone()?;
        let data = sent.clone();
        let writing = std::thread::spawn(move || -> std::io::Result<()> {
            writer.write_all(&data)?;
            writer.shutdown(Shutdown::Write)
        });
        let mut back = Vec::new();
        (&stream).read_to_end(&mut back)?;
        writing.join().expect("writer thread")?;
        Ok((sent, back))
    })
}

#[test]
fn a_rootless_network_with_an_mtu_gives_it_to_created_and_attached_containers() {
    const MTU: &str = "65520";
    require_root();
    // The user's "host" network, routed to a remote namespace (as in the
    // gateway-services test).
    let user_ns = tapswitch_tests::Netns::new("trj");
    let remote = tapswitch_tests::remote::Remote::new(&user_ns);
    let mut user = RootlessUser::new(9).in_netns(&user_ns.name);
    user.ok(&[
        "network",
        "create",
        "jumbo",
        "--subnet",
        "10.80.0.0/24",
        "--mtu",
        MTU,
    ]);
    let serve = user.serve(&["--network", "jumbo"]);
    user.ok(&["container", "create", "j1", "--network", "jumbo"]);
    let inspect: serde_json::Value =
        serde_json::from_str(&user.ok(&["container", "inspect", "j1"])).unwrap();
    let j1_ns = inspect[0]["NetworkSettings"]["SandboxKey"]
        .as_str()
        .expect("the container's namespace")
        .to_string();
    // Both ends of the veth live in the container's namespace: eth0 and
    // the switch's end, each with the network's MTU.
    let links = link_mtus(&j1_ns);
    assert_eq!(links.len(), 2, "eth0 and the switch's end: {links:?}");
    assert!(links.iter().any(|(name, _)| name == "eth0"), "{links:?}");
    assert!(links.iter().all(|(_, mtu)| mtu == MTU), "{links:?}");

    // A namespace the user made by hand, attached: its eth0 too.
    let pid = user.spawn(
        "unshare",
        &["--user", "--map-root-user", "--net", "sleep", "300"],
    );
    wait_for_new_netns(pid, &std::path::Path::new("/run/netns").join(&user_ns.name));
    user.ok(&[
        "container",
        "attach",
        "ja",
        "--pid",
        &pid.to_string(),
        "--network",
        "jumbo",
    ]);
    let ja_ns = format!("/proc/{pid}/ns/net");
    let links = link_mtus(&ja_ns);
    assert_eq!(links.len(), 2, "eth0 and the switch's end: {links:?}");
    assert!(links.iter().all(|(_, mtu)| mtu == MTU), "{links:?}");

    // Every port of the switch, the gateway's included, carries it.
    let ports: serde_json::Value =
        serde_json::from_str(&user.ok(&["ports", "--json", "--network", "jumbo"])).unwrap();
    let ports = ports.as_array().expect("a list of ports");
    assert_eq!(ports.len(), 3, "the gateway, j1 and ja: {ports:?}");
    for port in ports {
        assert_eq!(port["mtu"], 65520, "{port}");
    }

    // A 60,000-byte ping that may not be fragmented crosses the switch
    // whole, from one container to the other.
    let ping = user.tapswitch(&[
        "container",
        "exec",
        "j1",
        "--",
        "ping",
        "-c",
        "1",
        "-W",
        "3",
        "-M",
        "do",
        "-s",
        "60000",
        "10.80.0.3",
    ]);
    assert!(
        ping.status.success(),
        "j1 -> ja in one 60 kB frame: {}{}\n{}",
        String::from_utf8_lossy(&ping.stdout),
        String::from_utf8_lossy(&ping.stderr),
        user.serve_log(serve)
    );

    // 1 MB from the container through the gateway to the remote and back.
    let (sent, back) = echo_from(&j1_ns, 1 << 20)
        .unwrap_or_else(|e| panic!("1 MB through the gateway: {e}\n{}", user.serve_log(serve)));
    assert_eq!(back.len(), sent.len(), "{}", user.serve_log(serve));
    assert!(back == sent, "the echo comes back intact");

    assert_eq!(user.ok(&["container", "detach", "ja"]).trim(), "ja");
    drop(user);
    drop(remote);
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
