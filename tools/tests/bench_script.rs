//! The benchmark script's own unit tests (parsing iperf3 and ping output,
//! the report), run with the rest of the suite. Python 3 is on every
//! machine of this kind; the benchmark itself is not run here (it needs
//! iperf3 and minutes of quiet, and has no place in a test).

use std::process::Command;

#[test]
fn the_benchmark_scripts_unit_tests_pass() {
    let bench = concat!(env!("CARGO_MANIFEST_DIR"), "/bench");
    let out = Command::new("python3")
        .args(["-m", "unittest", "discover", "-s", bench])
        .output()
        .expect("python3 is needed to test tools/bench");
    assert!(
        out.status.success(),
        "python3 -m unittest discover -s {bench} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
