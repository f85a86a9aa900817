//! `tapswitch monitor` run as a child process against a test's switch,
//! its lines read with a deadline.

use crate::child::send_lines;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::SwitchProcess;
use crate::frames::probe;
use crate::switch_process::binary;
use crate::traffic::Station;

/// Long enough for any step here; a passing test never waits this long.
pub const PATIENCE: Duration = Duration::from_secs(20);

/// `tapswitch monitor` as a child process, its lines on a channel.
#[derive(Debug)]
pub struct Monitor {
    pub child: Child,
    lines: mpsc::Receiver<String>,
}

impl Monitor {
    pub fn start(switch: &SwitchProcess, extra: &[&str]) -> Monitor {
        let mut child = Command::new(binary())
            .arg("monitor")
            .args(extra)
            .arg("--control")
            .arg(&switch.control)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting tapswitch monitor");
        let (tx, lines) = mpsc::channel();
        let stdout = child.stdout.take().expect("piped");
        let stderr = child.stderr.take().expect("piped");
        send_lines(stdout, tx.clone());
        send_lines(stderr, tx);
        Monitor { child, lines }
    }

    /// The next line, if one comes within `wait`.
    pub fn next_line(&self, wait: Duration) -> Option<String> {
        self.lines.recv_timeout(wait).ok()
    }

    /// Waits until every one of `monitors` is subscribed (they subscribe
    /// in their own time): `station` speaks from new addresses
    /// `prefix:NN` until each has printed a learned line (a host already
    /// learned makes no event).
    pub fn wait_listening(monitors: &[&Monitor], station: &Station, prefix: [u8; 5]) {
        let broadcast = [0xff; 6];
        let deadline = Instant::now() + PATIENCE;
        for n in 0u8.. {
            let [a, b, c, d, e] = prefix;
            station.send(&probe(broadcast, [a, b, c, d, e, n], 1, 64));
            let seen = |m: &&Monitor| {
                m.next_line(Duration::from_millis(200))
                    .is_some_and(|l| l.contains("learned"))
            };
            if monitors.iter().all(seen) {
                return;
            }
            assert!(Instant::now() < deadline, "the monitors printed nothing");
        }
    }

    /// Reads lines until one satisfies `want`; returns it.
    pub fn expect(&self, what: &str, mut want: impl FnMut(&str) -> bool) -> String {
        let deadline = Instant::now() + PATIENCE;
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if want(&line) => return line,
                Ok(line) => seen.push(line),
                Err(_) => panic!(
                    "monitor never printed {what}; it printed:\n{}",
                    seen.join("\n")
                ),
            }
        }
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        // Our own child, by its id.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
