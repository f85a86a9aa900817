//! Rootless Podman with tapswitch: a container of an unprivileged user's
//! Podman (runc, cgroupfs, an image imported from a tarball: no registry)
//! attached by PID to a rootless switch. See `tests/rootless.rs` for how
//! the user is made and cleaned up.

use std::time::Duration;

use tapswitch_tests::poll::within;
use tapswitch_tests::require_root;
use tapswitch_tests::rootless_user::{RootlessUser, pings};

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
        let _ = within(Duration::from_secs(10), || !podman_runs_as(self.uid));
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
