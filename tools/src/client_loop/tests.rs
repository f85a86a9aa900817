//! The loop on a temporary Unix socket with a fake service: limits,
//! refusals, and a quick answer while thousands of clients idle or crawl.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::Duration;

use super::*;

/// Lines in, lines out: `ask` → `answer`, `stream` → numbered lines for ever.
struct Lines;

struct Counter(u64);

impl Feed for Counter {
    fn pull(&mut self, out: &mut Vec<u8>) -> bool {
        for _ in 0..64 {
            self.0 += 1;
            out.extend_from_slice(format!("event {}\n", self.0).as_bytes());
        }
        true
    }
}

impl Service for Lines {
    fn request_len(&self, input: &[u8]) -> Option<usize> {
        input.iter().position(|&b| b == b'\n').map(|i| i + 1)
    }

    fn answer(&mut self, request: &[u8]) -> Answer {
        match request {
            b"stream\n" => Answer::Stream {
                head: b"streaming\n".to_vec(),
                feed: Box::new(Counter(0)),
            },
            b"bye\n" => Answer::Reply {
                bytes: b"bye\n".to_vec(),
                close: true,
            },
            b"big\n" => Answer::Reply {
                bytes: big_answer(),
                close: false,
            },
            other => Answer::Reply {
                bytes: format!("answer to {}", String::from_utf8_lossy(other)).into_bytes(),
                close: false,
            },
        }
    }

    fn refusal(&self, why: &str) -> Vec<u8> {
        format!("refused: {why}\n").into_bytes()
    }
}

/// An answer well past [`MAX_UNSENT_BYTES`] (4 MiB and a newline).
fn big_answer() -> Vec<u8> {
    let mut bytes = vec![b'x'; 4 << 20];
    bytes.push(b'\n');
    bytes
}

struct Fixture {
    _dir: tempfile::TempDir,
    path: PathBuf,
    handle: Option<LoopHandle>,
}

impl Fixture {
    fn start() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("control.sock");
        let listener = mio::net::UnixListener::bind(&path).unwrap();
        let handle = spawn("test-loop", listener, Lines).unwrap();
        Fixture {
            _dir: dir,
            path,
            handle: Some(handle),
        }
    }

    fn connect(&self) -> UnixStream {
        let stream = UnixStream::connect(&self.path).unwrap();
        // A bound on every test: an answer that never comes fails, not hangs.
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        stream
    }

    /// One request on a new connection, and its one-line answer.
    /// The first line of the answer to `request`. A refused client may be
    /// told so and closed before its request is written (the write then
    /// fails with a broken pipe); the refusal is still there to read.
    fn ask(&self, request: &str) -> String {
        let mut stream = self.connect();
        let _ = stream.write_all(request.as_bytes());
        read_line(&stream)
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        if let Some(handle) = self.handle.take() {
            handle.stop();
        }
    }
}

fn read_line(stream: &UnixStream) -> String {
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line).unwrap();
    line
}

/// The tests that open hundreds of connections take turns, so that
/// together they stay under the process's descriptor limit.
static CROWDED: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// How many connections this process may hold besides the ones it has.
fn spare_descriptors() -> usize {
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
    let soft = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|n| n.parse::<usize>().ok())
        .unwrap_or(1024);
    // Both ends of each connection live in this process, plus the other
    // (small) tests' connections running at the same time.
    soft.saturating_sub(300) / 2
}

#[test]
fn requests_are_answered_in_order_and_after_a_half_close() {
    let fx = Fixture::start();
    let mut stream = fx.connect();
    stream.write_all(b"one\ntwo\n").unwrap();
    let mut reader = BufReader::new(&stream);
    let mut lines = [String::new(), String::new()];
    for line in &mut lines {
        reader.read_line(line).unwrap();
    }
    assert_eq!(lines, ["answer to one\n", "answer to two\n"]);
    (&stream).write_all(b"three\n").unwrap();
    stream.shutdown(std::net::Shutdown::Write).unwrap();
    let mut rest = String::new();
    reader.read_to_string(&mut rest).unwrap();
    assert_eq!(rest, "answer to three\n", "answered, then closed");
}

#[test]
fn a_request_over_the_limit_is_refused_and_closed() {
    let fx = Fixture::start();
    let mut stream = fx.connect();
    let big = vec![b'x'; MAX_REQUEST_BYTES + 1];
    // The server may close before all of it is written.
    let _ = stream.write_all(&big);
    let line = read_line(&stream);
    assert_eq!(
        line,
        format!("refused: request longer than {MAX_REQUEST_BYTES} bytes\n")
    );
    assert_eq!(fx.ask("still\n"), "answer to still\n", "others are served");
}

#[test]
fn thousands_of_idle_and_slow_clients_do_not_keep_a_request_out() {
    let _turn = CROWDED
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let fx = Fixture::start();
    let crowd = spare_descriptors().min(3000);
    assert!(
        crowd > MAX_CLIENTS,
        "this test needs {MAX_CLIENTS}+ descriptors"
    );
    let mut idle = Vec::with_capacity(crowd);
    for n in 0..crowd {
        let mut stream = fx.connect();
        // Every third one crawls: half a request, never finished.
        if n % 3 == 0 {
            stream.write_all(b"half a requ").unwrap();
        }
        idle.push(stream);
    }
    // Streams whose readers never read: their output piles up unread.
    let mut deaf = Vec::new();
    for _ in 0..8 {
        let mut stream = fx.connect();
        stream.write_all(b"stream\n").unwrap();
        deaf.push(stream);
    }
    assert_eq!(fx.ask("fdb\n"), "answer to fdb\n");
    // The crowd was cut to the limit: the oldest were told why and closed.
    let mut told = 0;
    for stream in &idle[..crowd - MAX_CLIENTS] {
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        if read_line(stream).starts_with("refused: closed to make room") {
            told += 1;
        }
    }
    assert_eq!(
        told,
        crowd - MAX_CLIENTS,
        "every client past the limit was told"
    );
    assert_eq!(fx.ask("fdb again\n"), "answer to fdb again\n");
}

#[test]
fn when_every_place_streams_a_newcomer_is_refused_clearly() {
    let _turn = CROWDED
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let fx = Fixture::start();
    let mut streams = Vec::new();
    for _ in 0..MAX_CLIENTS {
        let mut stream = fx.connect();
        stream.write_all(b"stream\n").unwrap();
        assert_eq!(read_line(&stream), "streaming\n");
        streams.push(stream);
    }
    let line = fx.ask("fdb\n");
    assert!(
        line.starts_with(&format!(
            "refused: the switch serves {MAX_CLIENTS} clients already"
        )),
        "{line}"
    );
    drop(streams.pop());
    // The loop notices the closed stream when it next writes to it.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let line = fx.ask("fdb\n");
        if line == "answer to fdb\n" {
            break;
        }
        assert!(Instant::now() < deadline, "no place freed: {line}");
        std::thread::sleep(STREAM_TICK);
    }
}

#[test]
fn a_stream_flows_until_its_reader_goes() {
    let fx = Fixture::start();
    let mut stream = fx.connect();
    stream.write_all(b"stream\n").unwrap();
    let mut reader = BufReader::new(&stream);
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    assert_eq!(line, "streaming\n");
    for n in 1..=100 {
        line.clear();
        reader.read_line(&mut line).unwrap();
        assert_eq!(line, format!("event {n}\n"));
    }
    let mut closing = fx.connect();
    closing.write_all(b"bye\n").unwrap();
    let mut rest = String::new();
    closing.read_to_string(&mut rest).unwrap();
    assert_eq!(rest, "bye\n", "a reply that closes");
}

#[test]
fn an_answer_larger_than_the_unsent_bound_arrives_whole() {
    let fixture = Fixture::start();
    let mut client = fixture.connect();
    client.write_all(b"big\n").unwrap();
    let mut reader = BufReader::new(client.try_clone().unwrap());
    let mut line = Vec::new();
    reader.read_until(b'\n', &mut line).unwrap();
    assert_eq!(line, big_answer());
    // And the connection still answers.
    client.write_all(b"ask\n").unwrap();
    let mut next = String::new();
    reader.read_line(&mut next).unwrap();
    assert_eq!(next, "answer to ask\n");
}

#[test]
fn the_loop_wakes_only_for_a_stream_an_idle_deadline_or_an_event() {
    const MS: Duration = Duration::from_millis(1);
    let s = Duration::from_secs;
    // Nobody connected: no timeout at all.
    assert_eq!(wait_for(false, s(5), None), None);
    // A client idle 10 s is closed 50 s later, not looked at every second.
    assert_eq!(
        wait_for(false, s(1), Some(s(10))),
        Some(IDLE_TIMEOUT - s(10))
    );
    // Past its deadline: at once, but not before the tick may run again
    // (no spinning until it does).
    assert_eq!(
        wait_for(false, s(1), Some(IDLE_TIMEOUT + s(1))),
        Some(Duration::ZERO)
    );
    assert_eq!(
        wait_for(false, 10 * MS, Some(IDLE_TIMEOUT)),
        Some(STREAM_TICK - 10 * MS)
    );
    // A stream is fed every tick, whatever the idle clients.
    assert_eq!(
        wait_for(true, 20 * MS, Some(s(1))),
        Some(STREAM_TICK - 20 * MS)
    );
    assert_eq!(wait_for(true, s(1), None), Some(Duration::ZERO));
}
