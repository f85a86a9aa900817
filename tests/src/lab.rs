//! Helpers for the frame-lab tests (replay, fixtures, pcap): temp dirs,
//! running `tapswitch replay` in-process and capturing what it prints.

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use clap::Parser;
use tools::lab::replay::{self, ReplayArgs};

/// A directory under the system's temp dir, removed on drop (on every exit
/// path, panics included). Unique per process and per call.
#[derive(Debug)]
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("tapswitch-test-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("the temp dir is writable");
        TempDir(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    pub fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A writer whose bytes can be read after it was handed away.
#[derive(Debug, Clone, Default)]
pub struct SharedBuf(Arc<Mutex<Vec<u8>>>);

impl SharedBuf {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap_or_else(PoisonError::into_inner)).into_owned()
    }
}

impl Write for SharedBuf {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[derive(Debug, Parser)]
struct ReplayCli {
    #[command(flatten)]
    args: ReplayArgs,
}

/// Parses `tapswitch replay` options as the command line would.
pub fn replay_args<S: AsRef<str>>(args: &[S]) -> ReplayArgs {
    let argv = std::iter::once("replay").chain(args.iter().map(AsRef::as_ref));
    match ReplayCli::try_parse_from(argv) {
        Ok(cli) => cli.args,
        Err(err) => panic!(
            "bad replay options {:?}: {err}",
            args.iter().map(AsRef::as_ref).collect::<Vec<_>>()
        ),
    }
}

/// `--port NAME=DIR/NAME.pcap` for each of `ports`: a scenario's captures
/// as `replay` options.
pub fn port_args(scenario: &Path, ports: &[&str]) -> Vec<String> {
    ports
        .iter()
        .flat_map(|p| {
            [
                "--port".to_string(),
                format!("{p}={}", scenario.join(format!("{p}.pcap")).display()),
            ]
        })
        .collect()
}

/// Runs `tapswitch replay` with `args`; returns its exit code (or error)
/// and what it printed on stdout.
pub fn replay(args: ReplayArgs) -> (anyhow::Result<ExitCode>, String) {
    let run = replay_both(args);
    (run.result, run.stdout)
}

/// What a replay returned and printed on each stream.
#[derive(Debug)]
pub struct ReplayRun {
    pub result: anyhow::Result<ExitCode>,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `tapswitch replay` with `args`, keeping stdout and stderr apart.
pub fn replay_both(args: ReplayArgs) -> ReplayRun {
    let (out, err) = (SharedBuf::default(), SharedBuf::default());
    let result = replay::run_to(
        args,
        replay::Streams {
            out: Box::new(out.clone()),
            err: Box::new(err.clone()),
            progress: false,
        },
    );
    ReplayRun {
        result,
        stdout: out.text(),
        stderr: err.text(),
    }
}

/// The workspace's `tests/fixtures` directory.
pub fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures")
}

/// `true` when the run should rewrite generated fixture files.
pub fn updating_fixtures() -> bool {
    std::env::var_os("UPDATE_FIXTURES").is_some_and(|v| v == "1")
}

/// Whether a program is on PATH (for the tshark/tcpdump checks).
pub fn have_program(name: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(name).is_file()))
}
