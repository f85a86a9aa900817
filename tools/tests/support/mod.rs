//! What the command-line tests share: `tapswitch` run against a private
//! state directory.

use std::path::Path;
use std::process::{Command, Output, Stdio};

/// Runs `tapswitch ARGS` with `TAPSWITCH_STATE_DIR=state`.
pub(crate) fn tapswitch(state: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tapswitch"))
        .args(args)
        .env("TAPSWITCH_STATE_DIR", state)
        .stdin(Stdio::null())
        .output()
        .expect("running tapswitch")
}

/// Runs `tapswitch ARGS` and expects success; returns stdout.
pub(crate) fn ok(state: &Path, args: &[&str]) -> String {
    let out = tapswitch(state, args);
    assert!(
        out.status.success(),
        "tapswitch {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs `tapswitch ARGS`, expects it to fail with one line on stderr;
/// returns that line.
// Not every test file that shares this module checks refusals.
#[allow(dead_code)]
pub(crate) fn error_line(state: &Path, args: &[&str]) -> String {
    let out = tapswitch(state, args);
    assert!(
        !out.status.success(),
        "tapswitch {} should fail",
        args.join(" ")
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one line: {stderr}");
    lines[0].to_string()
}
