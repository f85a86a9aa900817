//! A `tapswitch serve` process started by a test, stopped (by PID) when dropped.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::poll::within;
pub use crate::tapswitch_binary::binary;

/// A running `tapswitch serve`.
#[derive(Debug)]
pub struct SwitchProcess {
    child: Option<Child>,
    pub control: PathBuf,
    log: PathBuf,
    dir: PathBuf,
    /// How it was started, for [`SwitchProcess::restart`].
    ns: String,
    args: Vec<String>,
}

impl SwitchProcess {
    /// Starts `tapswitch serve ARGS --control <private socket>` inside
    /// namespace `ns` and waits until its control socket answers.
    pub fn start(ns: &str, args: &[String]) -> SwitchProcess {
        let dir = std::env::temp_dir().join(format!("tapswitch-test-{}", crate::unique_name("s")));
        std::fs::create_dir_all(&dir).expect("creating the test's temporary directory");
        let control = dir.join("switch.sock");
        let log = dir.join("serve.log");
        let mut switch = SwitchProcess {
            child: None,
            control,
            log,
            dir,
            ns: ns.to_string(),
            args: args.to_vec(),
        };
        switch.spawn();
        switch
    }

    fn spawn(&mut self) {
        let log_file = std::fs::File::options()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("creating the switch log");
        let child = Command::new("ip")
            .args(["netns", "exec", &self.ns])
            .arg(binary())
            .arg("serve")
            .args(&self.args)
            .arg("--control")
            .arg(&self.control)
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().expect("log fd"))
            .stderr(log_file)
            .spawn()
            .expect("starting tapswitch serve");
        self.child = Some(child);
        self.wait_ready();
    }

    /// Stops the switch (SIGTERM), runs `between` while it is down, and
    /// starts it again with the same arguments and control socket, as an
    /// operator restarting `serve` would; the log goes on in the same file.
    /// The stopped switch's exit status.
    pub fn restart(&mut self, between: impl FnOnce()) -> Option<ExitStatus> {
        let status = self.terminate();
        between();
        self.spawn();
        status
    }

    fn wait_ready(&mut self) {
        let answers = within(Duration::from_secs(20), || {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!("tapswitch serve exited early ({status}):\n{}", self.log());
            }
            self.try_call(r#"{"cmd":"info"}"#).is_ok()
        });
        assert!(
            answers,
            "tapswitch serve did not answer on {} within 20 s:\n{}",
            self.control.display(),
            self.log()
        );
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// A memory figure of the switch's process in KiB: `field` of
    /// `/proc/PID/status` (`VmRSS`, resident; `RssAnon`, of it anonymous).
    pub fn memory_kib(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .expect("the switch runs");
        status
            .lines()
            .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
            .and_then(|kib| kib.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("{field} in /proc/PID/status"))
    }

    /// Everything the switch logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn try_call(&self, request: &str) -> Result<serde_json::Value, String> {
        let stream = UnixStream::connect(&self.control).map_err(|e| e.to_string())?;
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .map_err(|e| e.to_string())?;
        (&stream)
            .write_all(format!("{request}\n").as_bytes())
            .map_err(|e| e.to_string())?;
        let mut line = String::new();
        BufReader::new(&stream)
            .read_line(&mut line)
            .map_err(|e| e.to_string())?;
        let reply: serde_json::Value =
            serde_json::from_str(&line).map_err(|e| format!("{e}: {line}"))?;
        if reply["ok"] == true {
            Ok(reply["data"].clone())
        } else {
            Err(reply["error"]
                .as_str()
                .unwrap_or("unknown error")
                .to_string())
        }
    }

    /// Sends a control request (one JSON object) and returns its data.
    pub fn call(&self, request: &str) -> Result<serde_json::Value, String> {
        self.try_call(request)
    }

    /// The switch's `info` (mode, counts, the kernel shortcut's state).
    pub fn info(&self) -> serde_json::Value {
        self.call(r#"{"cmd":"info"}"#).expect("info request")
    }

    /// Runs `tapswitch ARGS... --control SOCKET` against this switch, as a
    /// user types it, and returns what it did.
    pub fn command(&self, args: &[&str]) -> std::process::Output {
        std::process::Command::new(binary())
            .args(args)
            .arg("--control")
            .arg(&self.control)
            .output()
            .unwrap_or_else(|e| panic!("running tapswitch {args:?}: {e}"))
    }

    /// The MAC table as JSON (`tapswitch fdb --json`).
    pub fn fdb(&self) -> serde_json::Value {
        self.call(r#"{"cmd":"fdb"}"#).expect("fdb request")
    }

    /// The port on which `mac` is learned, if any.
    pub fn port_of(&self, mac: &str) -> Option<String> {
        let fdb = self.fdb();
        fdb["entries"]
            .as_array()?
            .iter()
            .find(|e| e["mac"] == mac)
            .and_then(|e| e["port"].as_str().map(str::to_string))
    }

    /// The ports as JSON (`tapswitch ports --json`).
    pub fn ports(&self) -> serde_json::Value {
        self.call(r#"{"cmd":"ports"}"#).expect("ports request")
    }

    /// Port `name`'s row of [`SwitchProcess::ports`]; panics if there is none.
    pub fn port(&self, name: &str) -> serde_json::Value {
        let ports = self.ports();
        ports
            .as_array()
            .and_then(|all| all.iter().find(|p| p["name"] == name).cloned())
            .unwrap_or_else(|| panic!("no port {name} in {ports}"))
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Sends SIGTERM and waits for the exit (SIGKILL after 10 s).
    pub fn stop(mut self) -> ExitStatus {
        self.terminate().expect("the switch was running")
    }

    fn terminate(&mut self) -> Option<ExitStatus> {
        let mut child = self.child.take()?;
        let pid = Pid::from_raw(i32::try_from(child.id()).ok()?);
        let _ = kill(pid, Signal::SIGTERM);
        let ended = within(Duration::from_secs(10), || {
            matches!(child.try_wait(), Ok(Some(_)))
        });
        if !ended {
            let _ = child.kill();
        }
        // The status `try_wait` saw, or the killed child's.
        child.wait().ok()
    }
}

impl Drop for SwitchProcess {
    fn drop(&mut self) {
        self.terminate();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
