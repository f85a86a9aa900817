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
