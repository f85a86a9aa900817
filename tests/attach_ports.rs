//! `container attach -p` (issue 15), as root in namespaces this test
//! makes: a namespace held by `unshare --net sleep`, attached to a switch
//! with a published port, reached from a "remote" namespace through that
//! port; the attached namespace's server sees the client's own address,
//! and detach closes the port.
//!
//! ```text
//!   remote ns (10.201.0.2) ──veth── switch ns: tapswitch serve, 10.201.0.1:8081
//!                                        │ ts-<id>
//!                                   unshare --net sleep: eth0 172.17.0.2, :80
//! ```

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Output};
use std::time::Duration;

use tapswitch_tests::child::NetnsHolder;
use tapswitch_tests::remote::Remote;
use tapswitch_tests::{Netns, SwitchProcess, lab::TempDir, require_root};

/// The published address, on the switch namespace's uplink.
const PUBLISHED: &str = "10.201.0.1:8081";

/// `tapswitch ARGS --state-dir DIR` in the switch's network namespace
/// (this process's mount namespace).
fn tapswitch(switch_ns: &Netns, state: &TempDir, args: &[&str]) -> Output {
    let binary = tapswitch_tests::switch_process::binary();
    switch_ns.run(|| {
        Command::new(&binary)
            .args(args)
            .arg("--state-dir")
            .arg(state.path())
            .output()
            .expect("running tapswitch")
    })
}

/// Connects from the remote namespace, retrying refusals while the switch
/// opens the port (it does once attach has recorded the container).
fn connect(remote: &Remote) -> io::Result<TcpStream> {
    remote.ns.run(|| {
        let to: SocketAddr = PUBLISHED.parse().unwrap();
        let mut tries = 0;
        loop {
            match TcpStream::connect_timeout(&to, Duration::from_secs(5)) {
                Err(err) if err.kind() == io::ErrorKind::ConnectionRefused && tries < 100 => {
                    tries += 1;
                    std::thread::sleep(Duration::from_millis(50));
                }
                other => return other,
            }
        }
    })
}

#[test]
fn attach_publishes_a_port_that_shows_the_client_and_detach_closes_it() {
    require_root();
    let switch_ns = Netns::new("tsw");
    let remote = Remote::new(&switch_ns);
    let state = TempDir::new("atpub");
    let state_arg = state.path().display().to_string();
    let switch = SwitchProcess::start(&switch_ns.name, &["--state-dir".into(), state_arg]);
    let control = switch.control.display().to_string();
    let holder = NetnsHolder::start();
    let netns = holder.netns().display().to_string();
    let name = tapswitch_tests::unique_name("ap");

    // A malformed or conflicting -p is refused before anything is built.
    let bad = tapswitch(
        &switch_ns,
        &state,
        &[
            "container",
            "attach",
            &name,
            "--netns",
            &netns,
            "--control",
            &control,
            "-p",
            "8081",
        ],
    );
    assert!(!bad.status.success());
    assert!(
        !String::from_utf8_lossy(&tapswitch(&switch_ns, &state, &["container", "ls"]).stdout)
            .contains(&name)
    );

    let attached = tapswitch(
        &switch_ns,
        &state,
        &[
            "container",
            "attach",
            &name,
            "--netns",
            &netns,
            "--control",
            &control,
            "-p",
            &format!("{PUBLISHED}:80"),
        ],
    );
    assert!(
        attached.status.success(),
        "container attach -p: {}",
        String::from_utf8_lossy(&attached.stderr)
    );
    let ls = String::from_utf8_lossy(&tapswitch(&switch_ns, &state, &["container", "ls"]).stdout)
        .into_owned();
    assert!(
        ls.lines()
            .any(|l| l.contains(&name) && l.contains("10.201.0.1:8081->80/tcp")),
        "{ls}"
    );

    // A second namespace may not publish the same host port.
    let other = NetnsHolder::start();
    let taken = tapswitch(
        &switch_ns,
        &state,
        &[
            "container",
            "attach",
            "other",
            "--pid",
            &other.pid(),
            "--control",
            &control,
            "-p",
            &format!("{PUBLISHED}:80"),
        ],
    );
    assert!(!taken.status.success());
    let err = String::from_utf8_lossy(&taken.stderr);
    assert!(err.contains(&name), "the error names the owner: {err}");

    // The attached namespace's server tells each client the address it sees.
    let listener = holder.run(|| TcpListener::bind("0.0.0.0:80").expect("listening in there"));
    let server = std::thread::spawn(move || {
        let (mut stream, peer) = listener.accept().expect("a client");
        stream.write_all(peer.to_string().as_bytes()).unwrap();
    });
    let mut stream = connect(&remote).expect("connecting to the published port");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut seen = String::new();
    stream.read_to_string(&mut seen).expect("the answer");
    server.join().expect("the attached namespace's server");
    assert_eq!(
        seen,
        stream.local_addr().unwrap().to_string(),
        "the attached namespace sees the client's own address\n{}",
        switch.log()
    );

    // Detach closes the published port at once.
    let detached = tapswitch(&switch_ns, &state, &["container", "detach", &name]);
    assert!(
        detached.status.success(),
        "{}",
        String::from_utf8_lossy(&detached.stderr)
    );
    let refused = remote
        .ns
        .run(|| TcpStream::connect_timeout(&PUBLISHED.parse().unwrap(), Duration::from_secs(5)));
    assert_eq!(
        refused.err().map(|e| e.kind()),
        Some(io::ErrorKind::ConnectionRefused),
        "the host port is closed after detach\n{}",
        switch.log()
    );
}
