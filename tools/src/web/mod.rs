//! `serve --web ADDR`: a read-only page that shows the switch learning
//! (ports with live rates, the MAC table with each entry's ageing bar, the
//! event log, and the topology as a picture), pushed from the switch by
//! server-sent events.
//!
//! **Why a server of our own.** The page needs three static files and one
//! long-lived `text/event-stream` response; no crate in the workspace
//! serves HTTP, and the light ones (`tiny_http`) spend a thread per
//! streaming response, which is what the control socket just stopped doing.
//! So the same one-thread loop ([`crate::client_loop`], same limits) serves
//! a minimal HTTP/1.1: `GET` only, one request per connection
//! (`Connection: close`), no request bodies.
//!
//! **Loopback only, unless asked.** The page has no login and shows every
//! MAC address on the network, so `--web` takes a loopback address
//! (`127.0.0.1:PORT`, `[::1]:PORT`, `localhost:PORT`) and refuses any other
//! unless `--web-allow-remote` is given too. On loopback, a request must
//! name a loopback host in its `Host` header, so a web site the browser
//! visits cannot read the page through a name it points at 127.0.0.1 (DNS
//! rebinding).
//!
//! The page, its script and its style are embedded in the binary
//! (`include_str!`): no CDN, nothing to build.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde::Serialize;

use crate::client_loop::{self, Answer, Feed, LoopHandle, Service};
use crate::control::{FdbRow, PortInfo};
use crate::event_feed::EventFeed;
use crate::running::RunningSwitch;

const PAGE_HTML: &str = include_str!("page.html");
const PAGE_JS: &str = include_str!("page.js");
const PAGE_CSS: &str = include_str!("page.css");

/// How often the page gets the ports' counters and the table.
const STATE_INTERVAL: Duration = Duration::from_secs(1);

/// The page reconnects this long after the switch went away (ms, for the
/// browser's `EventSource`).
const RETRY_MS: u32 = 1000;

/// Parses `--web ADDR`: `127.0.0.1:8080`, `[::1]:8080`, `localhost:8080`;
/// a non-loopback address only with `allow_remote`.
pub fn parse_addr(text: &str, allow_remote: bool) -> Result<SocketAddr> {
    let addr = match text.strip_prefix("localhost:") {
        Some(port) => port
            .parse::<u16>()
            .map(|port| SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port))
            .ok(),
        None => text.parse::<SocketAddr>().ok(),
    };
    let Some(addr) = addr else {
        bail!("--web {text}: expected an address and port such as 127.0.0.1:8080");
    };
    if !addr.ip().is_loopback() && !allow_remote {
        bail!(
            "--web {text}: not a loopback address; the page has no login and shows every host on the network to whoever reaches it. Use 127.0.0.1:PORT (over SSH: ssh -L PORT:127.0.0.1:PORT), or add --web-allow-remote if you mean it"
        );
    }
    Ok(addr)
}

/// Binds `addr` and serves the page until the process exits.
pub fn spawn(addr: SocketAddr, switch: Arc<RunningSwitch>) -> Result<(SocketAddr, LoopHandle)> {
    let listener = std::net::TcpListener::bind(addr)
        .with_context(|| format!("--web {addr}: cannot listen there"))?;
    let bound = listener.local_addr()?;
    listener.set_nonblocking(true)?;
    let service = WebService {
        switch,
        loopback_only: addr.ip().is_loopback(),
    };
    let handle = client_loop::spawn(
        "tapswitch-web",
        mio::net::TcpListener::from_std(listener),
        service,
    )
    .context("starting the web page's thread")?;
    Ok((bound, handle))
}

/// The page's HTTP server (see the module documentation).
#[derive(Debug)]
pub struct WebService {
    switch: Arc<RunningSwitch>,
    loopback_only: bool,
}

impl WebService {
    pub fn new(switch: Arc<RunningSwitch>, loopback_only: bool) -> Self {
        WebService {
            switch,
            loopback_only,
        }
    }
}

impl Service for WebService {
    fn request_len(&self, input: &[u8]) -> Option<usize> {
        input
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .map(|i| i + 4)
            .or_else(|| input.windows(2).position(|w| w == b"\n\n").map(|i| i + 2))
    }

    fn answer(&mut self, request: &[u8]) -> Answer {
        let request = String::from_utf8_lossy(request);
        let Some(head) = Head::parse(&request) else {
            return response(400, "text/plain", "bad request\n");
        };
        if self.loopback_only && !head.host_is_loopback() {
            return response(
                403,
                "text/plain",
                "this page answers only to a loopback host name (127.0.0.1, localhost)\n",
            );
        }
        if head.method != "GET" {
            return response(405, "text/plain", "the page is read-only: GET only\n");
        }
        match head.path {
            "/" | "/index.html" => response(200, "text/html; charset=utf-8", PAGE_HTML),
            "/page.js" => response(200, "text/javascript; charset=utf-8", PAGE_JS),
            "/page.css" => response(200, "text/css; charset=utf-8", PAGE_CSS),
            "/state" => match state(&self.switch) {
                Ok(state) => response(200, "application/json", &state),
                Err(err) => response(503, "text/plain", &format!("{err:#}\n")),
            },
            "/events" => match WebFeed::new(self.switch.clone()) {
                Ok(feed) => Answer::Stream {
                    head: format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-store\r\nConnection: close\r\n\r\nretry: {RETRY_MS}\n\n"
                    )
                    .into_bytes(),
                    feed: Box::new(feed),
                },
                Err(err) => response(503, "text/plain", &format!("{err:#}\n")),
            },
            _ => response(404, "text/plain", "no such page\n"),
        }
    }

    fn refusal(&self, why: &str) -> Vec<u8> {
        match response(503, "text/plain", &format!("{why}\n")) {
            Answer::Reply { bytes, .. } => bytes,
            Answer::Stream { head, .. } => head,
        }
    }
}

/// The parts of a request head the server looks at.
#[derive(Debug, PartialEq, Eq)]
struct Head<'a> {
    method: &'a str,
    path: &'a str,
    host: Option<&'a str>,
}

impl<'a> Head<'a> {
    fn parse(text: &'a str) -> Option<Head<'a>> {
        let mut lines = text.lines();
        let mut words = lines.next()?.split(' ');
        let (method, target, version) = (words.next()?, words.next()?, words.next()?);
        if !version.starts_with("HTTP/1.") {
            return None;
        }
        let path = target.split('?').next().unwrap_or(target);
        let host = lines
            .filter_map(|l| l.split_once(':'))
            .find(|(name, _)| name.trim().eq_ignore_ascii_case("host"))
            .map(|(_, value)| value.trim());
        Some(Head { method, path, host })
    }

    /// Whether the Host header names a loopback host (any port).
    fn host_is_loopback(&self) -> bool {
        let Some(host) = self.host else {
            return false;
        };
        let name = match host.strip_prefix('[') {
            Some(v6) => v6.split(']').next().unwrap_or(""),
            None => host.rsplit_once(':').map_or(host, |(name, _)| name),
        };
        name.eq_ignore_ascii_case("localhost")
            || name.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
    }
}

fn response(status: u16, content_type: &str, body: &str) -> Answer {
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        _ => "Service Unavailable",
    };
    let head = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let mut bytes = head.into_bytes();
    bytes.extend_from_slice(body.as_bytes());
    Answer::Reply { bytes, close: true }
}

/// What the page draws from: sent when it connects and every second.
#[derive(Debug, Serialize)]
struct State {
    event: &'static str,
    /// Seconds on the switch's clock.
    time: f64,
    network: String,
    /// Seconds; 0 = entries never age.
    ageing_time: u64,
    ports: Vec<PortInfo>,
    fdb: Vec<FdbRow>,
}

fn state(switch: &RunningSwitch) -> Result<String> {
    let state = State {
        event: "state",
        time: switch.now_secs(),
        network: switch.info().network.clone(),
        ageing_time: switch.info().ageing_time,
        ports: switch.ports()?,
        fdb: switch.fdb()?.entries,
    };
    Ok(serde_json::to_string(&state)?)
}

/// The page's event stream: the switch's events as they come, and the
/// state every [`STATE_INTERVAL`].
struct WebFeed {
    events: EventFeed,
    switch: Arc<RunningSwitch>,
    last_state: Option<Instant>,
}

impl WebFeed {
    fn new(switch: Arc<RunningSwitch>) -> Result<Self> {
        Ok(WebFeed {
            events: EventFeed::new(switch.clone(), sse_frame)?,
            switch,
            last_state: None,
        })
    }
}

impl Feed for WebFeed {
    fn pull(&mut self, out: &mut Vec<u8>) -> bool {
        self.events.write_events(out);
        if self
            .last_state
            .is_none_or(|at| at.elapsed() >= STATE_INTERVAL)
        {
            self.last_state = Some(Instant::now());
            match state(&self.switch) {
                Ok(state) => sse_frame(&state, out),
                // The switch is shutting down: end the stream.
                Err(_) => return false,
            }
        }
        true
    }
}

/// Frames one JSON line as a server-sent event.
fn sse_frame(line: &str, out: &mut Vec<u8>) {
    out.extend_from_slice(b"data: ");
    out.extend_from_slice(line.as_bytes());
    out.extend_from_slice(b"\n\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn web_addresses_are_loopback_unless_asked() {
        assert_eq!(
            parse_addr("127.0.0.1:8080", false).unwrap(),
            "127.0.0.1:8080".parse().unwrap()
        );
        assert_eq!(
            parse_addr("localhost:9", false).unwrap(),
            "127.0.0.1:9".parse().unwrap()
        );
        assert!(parse_addr("[::1]:8080", false).is_ok());
        let err = parse_addr("0.0.0.0:8080", false).unwrap_err().to_string();
        assert!(err.contains("--web-allow-remote"), "{err}");
        assert!(parse_addr("0.0.0.0:8080", true).is_ok());
        assert!(parse_addr("8080", false).is_err());
    }

    #[test]
    fn request_heads_are_read_and_hosts_checked() {
        let head = Head::parse("GET /events?x=1 HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\n").unwrap();
        assert_eq!((head.method, head.path), ("GET", "/events"));
        assert!(head.host_is_loopback());
        for (host, loopback) in [
            ("localhost:1", true),
            ("[::1]:8080", true),
            ("127.0.0.1", true),
            ("evil.example:8080", false),
            ("10.0.0.1:80", false),
        ] {
            let text = format!("GET / HTTP/1.1\r\nhost: {host}\r\n\r\n");
            assert_eq!(
                Head::parse(&text).unwrap().host_is_loopback(),
                loopback,
                "{host}"
            );
        }
        assert!(
            !Head::parse("GET / HTTP/1.1\r\n\r\n")
                .unwrap()
                .host_is_loopback()
        );
        assert_eq!(Head::parse("GARBAGE\r\n\r\n"), None);
    }

    fn get(service: &mut WebService, request: &str) -> (String, Answer) {
        let answer = service.answer(request.as_bytes());
        let head = match &answer {
            Answer::Reply { bytes, .. } => String::from_utf8_lossy(bytes).into_owned(),
            Answer::Stream { head, .. } => String::from_utf8_lossy(head).into_owned(),
        };
        (head, answer)
    }

    #[test]
    fn the_server_serves_the_page_its_state_and_its_stream_read_only() {
        let switch = crate::control_server::tests::portless_switch();
        let mut service = WebService::new(switch.clone(), true);
        let host = "Host: 127.0.0.1:8080\r\n\r\n";
        let (page, _) = get(&mut service, &format!("GET / HTTP/1.1\r\n{host}"));
        assert!(page.starts_with("HTTP/1.1 200 OK\r\n"), "{page}");
        assert!(page.contains("text/html") && page.ends_with(PAGE_HTML));
        let (script, _) = get(&mut service, &format!("GET /page.js HTTP/1.1\r\n{host}"));
        assert!(script.ends_with(PAGE_JS));
        let (state, _) = get(&mut service, &format!("GET /state HTTP/1.1\r\n{host}"));
        let body = state.split("\r\n\r\n").nth(1).unwrap();
        let json: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(
            (&json["event"], &json["network"]),
            (&"state".into(), &"test".into())
        );
        assert!(json["fdb"].is_array() && json["ports"].is_array());
        let (stream, answer) = get(&mut service, &format!("GET /events HTTP/1.1\r\n{host}"));
        assert!(
            stream.contains("Content-Type: text/event-stream"),
            "{stream}"
        );
        assert!(stream.ends_with("retry: 1000\n\n"));
        let Answer::Stream { mut feed, .. } = answer else {
            panic!("/events is a stream")
        };
        let mut out = Vec::new();
        assert!(feed.pull(&mut out));
        let first = String::from_utf8(out).unwrap();
        assert!(first.starts_with("data: {\"event\":\"state\""), "{first}");
        assert!(first.ends_with("\n\n"));
        for (request, status) in [
            (format!("GET /nope HTTP/1.1\r\n{host}"), "404"),
            (format!("POST / HTTP/1.1\r\n{host}"), "405"),
            (
                "GET / HTTP/1.1\r\nHost: evil.example\r\n\r\n".to_string(),
                "403",
            ),
            ("nonsense\r\n\r\n".to_string(), "400"),
        ] {
            let (head, _) = get(&mut service, &request);
            assert!(
                head.starts_with(&format!("HTTP/1.1 {status} ")),
                "{request}: {head}"
            );
        }
        switch.shutdown();
    }

    #[test]
    fn the_page_is_self_contained() {
        for file in [PAGE_HTML, PAGE_JS, PAGE_CSS] {
            // SVG's namespace is a name, not something fetched.
            let file = file.replace("http://www.w3.org/2000/svg", "");
            assert!(
                !file.contains("http://") && !file.contains("https://"),
                "no CDN"
            );
        }
        assert!(PAGE_HTML.contains("/page.js") && PAGE_HTML.contains("/page.css"));
        assert!(PAGE_JS.contains("new EventSource(\"/events\")"));
    }
}
