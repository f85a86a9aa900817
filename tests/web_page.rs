//! `serve --web`: the page in headless Chromium, against a live switch.
//!
//! ```text
//!   th..(h1) eth0 ═══ p1 ─ tapswitch serve --web 127.0.0.1:8080 (in tsw..)
//!                          Chromium (in tsw.., on its loopback) ─┘
//! ```
//!
//! Chromium is driven through Selenium by `browser/driver.py`. Without
//! Chromium, chromedriver or Selenium the tests print a SKIPPED line and
//! pass; CI installs them (.ci/run), so there they run.

use std::io::Write;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use tapswitch_tests::child::read_lines;
use tapswitch_tests::frames::{mac, mac_text, probe};
use tapswitch_tests::poll::within;
use tapswitch_tests::traffic::Station;
use tapswitch_tests::{Netns, SwitchProcess, Topology, require_root};

/// Where the page is served, on the switch namespace's own loopback.
const WEB: &str = "127.0.0.1:8080";
/// Any one step of a test; the page follows the switch within a second or two.
const STEP_SECS: u32 = 20;

/// The browser, one command at a time (see `browser/driver.py`).
struct Browser {
    child: Child,
    stdin: ChildStdin,
    answers: mpsc::Receiver<String>,
}

impl Browser {
    /// Starts Chromium inside `ns`; `None` (and a SKIPPED line) when this
    /// machine has no Chromium, chromedriver or Selenium.
    fn start(ns: &Netns, test: &str) -> Option<Browser> {
        let missing: Vec<&str> = [
            (
                "chromium",
                has_program("chromium") || has_program("chromium-browser"),
            ),
            ("chromedriver", has_program("chromedriver")),
            ("python3 with selenium", python_has_selenium()),
        ]
        .into_iter()
        .filter(|(_, there)| !there)
        .map(|(what, _)| what)
        .collect();
        if !missing.is_empty() {
            println!(
                "SKIPPED {test}: no {} here (CI installs chromium, chromium-driver and selenium)",
                missing.join(", ")
            );
            return None;
        }
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/browser/driver.py");
        let mut child = Command::new("ip")
            .args(["netns", "exec", &ns.name, "python3", script])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("starting the browser driver");
        let stdin = child.stdin.take().expect("piped");
        let answers = read_lines(child.stdout.take().expect("piped"));
        let mut browser = Browser {
            child,
            stdin,
            answers,
        };
        let first = browser.answer("starting Chromium");
        assert!(
            first.starts_with("ok"),
            "the browser did not start: {first}"
        );
        Some(browser)
    }

    fn answer(&mut self, doing: &str) -> String {
        self.answers
            .recv_timeout(Duration::from_secs(u64::from(STEP_SECS) + 40))
            .unwrap_or_else(|_| panic!("the browser driver did not answer while {doing}"))
    }

    /// Sends one command and asserts it succeeded.
    fn must(&mut self, command: &str) -> String {
        writeln!(self.stdin, "{command}").expect("writing to the driver");
        let answer = self.answer(command);
        assert!(answer.starts_with("ok"), "{command}: {answer}");
        answer
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = writeln!(self.stdin, "quit");
        let ended = within(Duration::from_secs(15), || {
            matches!(self.child.try_wait(), Ok(Some(_)))
        });
        if !ended {
            // Our own child, by its id.
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn has_program(name: &str) -> bool {
    tapswitch_tests::lab::have_program(name)
}

fn python_has_selenium() -> bool {
    Command::new("python3")
        .args(["-c", "import selenium"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn serve_with_web(topo: &Topology) -> SwitchProcess {
    let mut args = topo.iface_args();
    args.extend(["--ageing-time", "3", "--web", WEB].map(String::from));
    SwitchProcess::start(&topo.switch_ns.name, &args)
}

#[test]
fn a_new_mac_appears_on_the_page_without_a_reload_and_ages_out() {
    require_root();
    let topo = Topology::veth_star(1);
    let switch = serve_with_web(&topo);
    let Some(mut browser) = Browser::start(&topo.switch_ns, "web page: a new MAC") else {
        return;
    };
    browser.must(&format!("open http://{WEB}/"));
    browser.must(&format!("wait_status connected {STEP_SECS}"));
    let host = "02:00:5e:10:00:42";
    browser.must(&format!("wait_mac {host} absent 1"));

    let station = Station::open(&topo.hosts[0].ns, "eth0");
    station.send(&probe(mac("ff:ff:ff:ff:ff:ff"), mac(host), 1, 64));
    browser.must(&format!("wait_mac {host} present {STEP_SECS}"));
    browser.must("same_page");
    assert_eq!(switch.port_of(host).as_deref(), Some("p1"));
    // Three seconds of silence and the switch forgets it; so does the page.
    browser.must(&format!("wait_mac {host} absent {STEP_SECS}"));
    browser.must("same_page");
    assert_eq!(mac_text(&mac(host)), host);
}

#[test]
fn the_page_says_disconnected_when_the_switch_goes_and_reconnects_when_it_returns() {
    require_root();
    let topo = Topology::veth_star(1);
    let switch = serve_with_web(&topo);
    let Some(mut browser) = Browser::start(&topo.switch_ns, "web page: disconnected") else {
        return;
    };
    browser.must(&format!("open http://{WEB}/"));
    browser.must(&format!("wait_status connected {STEP_SECS}"));
    assert!(switch.stop().success());
    browser.must(&format!("wait_status disconnected {STEP_SECS}"));

    let again = serve_with_web(&topo);
    browser.must(&format!("wait_status connected {STEP_SECS}"));
    browser.must("same_page");
    // The page shows the new switch's table: a host heard now appears.
    let host = "02:00:5e:10:00:43";
    Station::open(&topo.hosts[0].ns, "eth0").send(&probe(
        mac("ff:ff:ff:ff:ff:ff"),
        mac(host),
        2,
        64,
    ));
    browser.must(&format!("wait_mac {host} present {STEP_SECS}"));
    drop(again);
}
