//! A private etcd for one test: Debian's `/usr/bin/etcd` (package
//! `etcd-server`; `$TAPSWITCH_TEST_ETCD` names another binary) with its own
//! data directory in a temp dir, client and peer URLs on free loopback
//! ports, stopped by PID when dropped, also when the test fails.
//!
//! Without the binary, [`EtcdServer::start`] prints one `SKIPPED` line
//! saying what is missing and returns `None`; the test then returns early.
//! CI installs the package (`.ci/run`), so there the tests always run.

use std::fs::File;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// Where Debian installs etcd.
pub const DEFAULT_ETCD: &str = "/usr/bin/etcd";
/// How long etcd may take to answer after starting.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// A running (or stopped, between [`stop`](EtcdServer::stop) and
/// [`restart`](EtcdServer::restart)) etcd of one member.
#[derive(Debug)]
pub struct EtcdServer {
    binary: PathBuf,
    child: Option<Child>,
    dir: tempfile::TempDir,
    client_port: u16,
    peer_port: u16,
    /// Where it listens: loopback, or an address in `netns`.
    host: std::net::Ipv4Addr,
    /// The namespace it runs in (`ip netns exec`), if not the test's own.
    netns: Option<String>,
}

impl EtcdServer {
    /// Starts etcd and waits until it answers; `None` (after a `SKIPPED`
    /// line naming `test`) when there is no etcd binary on this machine.
    pub fn start(test: &str) -> Option<EtcdServer> {
        Self::start_at(test, None, std::net::Ipv4Addr::LOCALHOST)
    }

    /// [`start`](EtcdServer::start) inside namespace `netns`, listening on
    /// `host` (an address of that namespace), so hosts built as other
    /// namespaces reach it over their network. Its client answers only on
    /// threads inside `netns` (or a namespace routed to it).
    pub fn start_in(test: &str, netns: &str, host: std::net::Ipv4Addr) -> Option<EtcdServer> {
        Self::start_at(test, Some(netns.to_string()), host)
    }

    fn start_at(test: &str, netns: Option<String>, host: std::net::Ipv4Addr) -> Option<EtcdServer> {
        let binary = std::env::var_os("TAPSWITCH_TEST_ETCD")
            .map_or_else(|| PathBuf::from(DEFAULT_ETCD), PathBuf::from);
        if !binary.exists() {
            println!(
                "SKIPPED {test}: {} not found (install Debian's etcd-server, or set TAPSWITCH_TEST_ETCD)",
                binary.display()
            );
            return None;
        }
        let mut server = EtcdServer {
            binary,
            child: None,
            dir: tempfile::tempdir().expect("a temp dir for etcd"),
            // A namespace of its own has every port free.
            client_port: if netns.is_some() { 2379 } else { free_port() },
            peer_port: if netns.is_some() { 2380 } else { free_port() },
            host,
            netns,
        };
        server.restart();
        Some(server)
    }

    /// `HOST:PORT` (`127.0.0.1:PORT` by default), the client endpoint.
    pub fn endpoint(&self) -> String {
        format!("{}:{}", self.host, self.client_port)
    }

    /// `etcd://127.0.0.1:PORT`, for `--store` / `TAPSWITCH_STORE`.
    pub fn store_url(&self) -> String {
        format!("etcd://{}", self.endpoint())
    }

    /// A client for this server with a short timeout.
    pub fn client(&self) -> ipam::etcd::Client {
        ipam::etcd::Client::with_timeout(vec![self.endpoint()], Duration::from_secs(2))
    }

    /// Kills etcd (SIGKILL, by PID) and waits for it; the data stays.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let pid = Pid::from_raw(i32::try_from(child.id()).expect("a pid fits in i32"));
            let _ = kill(pid, Signal::SIGKILL);
            let _ = child.wait();
        }
    }

    /// Starts etcd again on the same data and ports, and waits until it answers.
    pub fn restart(&mut self) {
        self.stop();
        let peer = format!("http://{}:{}", self.host, self.peer_port);
        let client = format!("http://{}", self.endpoint());
        let log_path = self.log_path();
        let log = File::options()
            .create(true)
            .append(true)
            .open(&log_path)
            .expect("etcd's log file");
        let mut command = match &self.netns {
            // `ip netns exec` execs etcd: the PID stays the one to kill.
            Some(netns) => {
                let mut command = Command::new("ip");
                command.args(["netns", "exec", netns]).arg(&self.binary);
                command
            }
            None => Command::new(&self.binary),
        };
        let child = command
            .arg("--name=test")
            .arg(format!(
                "--data-dir={}",
                self.dir.path().join("data").display()
            ))
            .arg(format!("--listen-client-urls={client}"))
            .arg(format!("--advertise-client-urls={client}"))
            .arg(format!("--listen-peer-urls={peer}"))
            .arg(format!("--initial-advertise-peer-urls={peer}"))
            .arg(format!("--initial-cluster=test={peer}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("etcd's log file"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", self.binary.display()));
        self.child = Some(child);
        let started = Instant::now();
        let probe = self.client();
        let answer = || match &self.netns {
            Some(netns) => crate::in_netns(netns, || probe.get(b"/probe").map(drop)),
            None => probe.get(b"/probe").map(drop),
        };
        while let Err(err) = answer() {
            if started.elapsed() > START_TIMEOUT {
                let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                let tail: String = log.lines().rev().take(20).collect::<Vec<_>>().join("\n");
                panic!(
                    "etcd did not answer within {START_TIMEOUT:?} ({err}); its log ends:\n{tail}"
                );
            }
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                panic!("etcd exited at start ({status}); its log:\n{log}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("etcd.log")
    }
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A loopback port nothing listens on right now.
fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("a free loopback port");
    listener.local_addr().expect("its address").port()
}
