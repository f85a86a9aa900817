//! `tapswitch demo`, the README's first command, run as root the way a new
//! user runs it: it must end well, show every step, hand the veth
//! containers to the kernel shortcut before its TCP step (so the `ports`
//! table shows what the kernel carried), and leave no namespace behind.
//! The demo makes its own namespaces, named by its PID; CI runs this as
//! root.

use std::process::Command;

use tapswitch_tests::require_root;
use tapswitch_tests::switch_process::binary;

#[test]
fn the_demo_shows_every_step_hands_veth_containers_to_the_kernel_and_cleans_up() {
    require_root();
    let out = Command::new(binary())
        .args(["demo", "--tcp-mb", "8"])
        .output()
        .expect("running tapswitch demo");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the demo failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for step in ["[1/5]", "[2/5]", "[3/5]", "[4/5]", "[5/5]"] {
        assert!(stdout.contains(step), "no step {step}:\n{stdout}");
    }
    assert!(
        stdout.contains("nothing went to or from a and b for 20 ms"),
        "the veth containers never went to the kernel:\n{stdout}"
    );
    // Their TCP went by the kernel: veth-a's row has a kernel line with
    // frames in it, and the demo explains it.
    let kernel_lines: Vec<&str> = stdout
        .lines()
        .filter(|line| line.trim_start().starts_with("by the kernel: RX"))
        .collect();
    assert!(
        kernel_lines
            .iter()
            .any(|line| !line.contains("RX 0 packets")),
        "no frames by the kernel:\n{stdout}"
    );
    assert!(stdout.contains("\"by the kernel\": once the switch knew a and b"));
    assert!(
        stdout.contains("nothing is left behind"),
        "the demo did not clean up:\n{stdout}"
    );
    let pid = out_pid_tag(&stdout);
    let left = Command::new("ip").args(["netns", "list"]).output().unwrap();
    let left = String::from_utf8_lossy(&left.stdout);
    assert!(
        !left.contains(&format!("-{pid}")),
        "namespaces of the demo are left:\n{left}"
    );
}

/// The PID the demo tags its namespaces with (`tsdemo-a-<pid>`).
fn out_pid_tag(stdout: &str) -> String {
    let at = stdout
        .find("tsdemo-a-")
        .expect("the demo names its namespaces");
    stdout[at + "tsdemo-a-".len()..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect()
}
