//! One thread that serves many clients, short and long-lived: the control
//! socket (one JSON line in, one out; `monitor` streams) and the web page's
//! HTTP server (the page, and its server-sent event stream).
//!
//! A thread per client (what the control socket did first) costs a thread
//! and its stack per idle connection and has no limit. Here one `mio` loop
//! owns every connection, with non-blocking reads and writes:
//!
//! - **At most [`MAX_CLIENTS`] clients.** Past that, a new client takes the
//!   place of the client that has been idle longest (connected, or done
//!   with its last request, the longest time ago, without a stream), which
//!   is told why and closed; when every client is streaming, the new one is
//!   refused with one clear line. So a crowd of idle or slow connections
//!   cannot keep `tapswitch fdb` out.
//! - **A request is at most [`MAX_REQUEST_BYTES`].** A client that sends
//!   more without finishing its request is told so and closed.
//! - **Idle clients are closed** after [`IDLE_TIMEOUT`] without a request.
//! - **Streams are fed at most every [`STREAM_TICK`]** and only while their
//!   unsent output is under [`MAX_UNSENT_BYTES`]: a reader that does not
//!   read leaves its events in its queue, where the newest are lost and
//!   counted (see `switch::events`), instead of in this process's memory.
//!
//! A request is answered on this thread, so answers must be quick (the
//! control socket's are: table dumps, adding a port).

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use mio::event::Source;
use mio::{Events, Interest, Poll, Token, Waker};

/// The most clients served at once.
pub const MAX_CLIENTS: usize = 256;

/// The longest request accepted (the control protocol's are a few dozen
/// bytes; an HTTP request head is well under this).
pub const MAX_REQUEST_BYTES: usize = 64 * 1024;

/// A client that sends no request for this long is closed (a stream never is).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// How often streams are asked for new output.
pub const STREAM_TICK: Duration = Duration::from_millis(50);

/// A stream whose reader leaves this much unread is not fed until it reads.
pub const MAX_UNSENT_BYTES: usize = 1 << 20;

const LISTENER: Token = Token(0);
const WAKER: Token = Token(1);
const FIRST_CLIENT: usize = 2;

/// What a server speaks: how requests are framed, answered and refused.
pub trait Service: Send + 'static {
    /// The length of the first complete request at the start of `input`
    /// (terminator included), or `None` while it is incomplete.
    fn request_len(&self, input: &[u8]) -> Option<usize>;
    /// The answer to one complete request.
    fn answer(&mut self, request: &[u8]) -> Answer;
    /// The bytes that tell a client why it is closed (too many clients,
    /// request too long, idle), sent before closing.
    fn refusal(&self, why: &str) -> Vec<u8>;
}

/// What to do with one request.
pub enum Answer {
    /// Send `bytes`; then close if `close`, else wait for the next request.
    Reply { bytes: Vec<u8>, close: bool },
    /// Send `head`, then what `feed` produces, until it ends or the client goes.
    Stream { head: Vec<u8>, feed: Box<dyn Feed> },
}

impl std::fmt::Debug for Answer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Answer::Reply { bytes, close } => {
                write!(f, "Reply({} bytes, close {close})", bytes.len())
            }
            Answer::Stream { head, .. } => write!(f, "Stream({} bytes, ...)", head.len()),
        }
    }
}

/// The source of a long-lived answer.
pub trait Feed: Send {
    /// Appends what is new to `out`; false once the stream has ended (what
    /// was appended is still sent).
    fn pull(&mut self, out: &mut Vec<u8>) -> bool;
}

/// A listening socket the loop accepts from (Unix or TCP).
pub trait Listener: Source + Send + 'static {
    type Stream: Source + Read + Write + Send + 'static;
    fn accept_one(&self) -> io::Result<Self::Stream>;
}

impl Listener for mio::net::UnixListener {
    type Stream = mio::net::UnixStream;
    fn accept_one(&self) -> io::Result<Self::Stream> {
        self.accept().map(|(stream, _)| stream)
    }
}

impl Listener for mio::net::TcpListener {
    type Stream = mio::net::TcpStream;
    fn accept_one(&self) -> io::Result<Self::Stream> {
        self.accept().map(|(stream, _)| stream)
    }
}

/// A running loop; dropping the handle leaves it running, `stop` ends it.
#[derive(Debug)]
pub struct LoopHandle {
    waker: Arc<Waker>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl LoopHandle {
    /// Closes every connection and the listener, and waits for the thread.
    pub fn stop(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.waker.wake();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Serves `listener` with `service` on a new thread named `name`.
pub fn spawn<L: Listener, S: Service>(
    name: &str,
    mut listener: L,
    service: S,
) -> io::Result<LoopHandle> {
    let poll = Poll::new()?;
    poll.registry()
        .register(&mut listener, LISTENER, Interest::READABLE)?;
    let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
    let stop = Arc::new(AtomicBool::new(false));
    let mut server = Server {
        poll,
        listener,
        service,
        clients: HashMap::new(),
        next_token: FIRST_CLIENT,
        stop: stop.clone(),
    };
    let thread = std::thread::Builder::new()
        .name(name.to_string())
        .spawn(move || server.run())?;
    Ok(LoopHandle {
        waker,
        stop,
        thread: Some(thread),
    })
}

struct Client<S> {
    stream: S,
    input: Vec<u8>,
    output: Vec<u8>,
    feed: Option<Box<dyn Feed>>,
    /// When it connected or finished its last request.
    since: Instant,
    /// Close once the output is sent.
    closing: bool,
}

struct Server<L: Listener, S> {
    poll: Poll,
    listener: L,
    service: S,
    clients: HashMap<Token, Client<L::Stream>>,
    next_token: usize,
    stop: Arc<AtomicBool>,
}

impl<L: Listener, S: Service> Server<L, S> {
    fn run(&mut self) {
        let mut events = Events::with_capacity(256);
        let mut last_tick = Instant::now();
        while !self.stop.load(Ordering::Relaxed) {
            let now = Instant::now();
            let streaming = self.clients.values().any(|c| c.feed.is_some());
            let longest_idle = self
                .clients
                .values()
                .filter(|c| c.feed.is_none())
                .map(|c| now.saturating_duration_since(c.since))
                .max();
            let timeout = wait_for(
                streaming,
                now.saturating_duration_since(last_tick),
                longest_idle,
            );
            if let Err(err) = self.poll.poll(&mut events, timeout) {
                if err.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                log::error!("client loop stopped: {err}");
                return;
            }
            for event in events.iter() {
                match event.token() {
                    LISTENER => self.accept_all(),
                    WAKER => {}
                    token => self.client_ready(token),
                }
            }
            if last_tick.elapsed() >= STREAM_TICK {
                last_tick = Instant::now();
                self.tick();
            }
        }
    }

    fn accept_all(&mut self) {
        loop {
            match self.listener.accept_one() {
                Ok(stream) => self.admit(stream),
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => return,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                Err(err) => {
                    // Out of file descriptors, typically: the waiting
                    // clients stay queued in the kernel until one closes.
                    log::warn!("accepting a client failed: {err}");
                    return;
                }
            }
        }
    }

    fn admit(&mut self, mut stream: L::Stream) {
        if self.clients.len() >= MAX_CLIENTS && !self.close_longest_idle() {
            let why = format!(
                "the switch serves {MAX_CLIENTS} clients already, all of them streaming; try again when one has gone"
            );
            let _ = stream.write(&self.service.refusal(&why));
            return;
        }
        let token = Token(self.next_token);
        self.next_token += 1;
        if let Err(err) = self.poll.registry().register(
            &mut stream,
            token,
            Interest::READABLE | Interest::WRITABLE,
        ) {
            log::warn!("cannot wait for a client: {err}");
            return;
        }
        self.clients.insert(
            token,
            Client {
                stream,
                input: Vec::new(),
                output: Vec::new(),
                feed: None,
                since: Instant::now(),
                closing: false,
            },
        );
    }

    /// Makes room for a new client: closes the one idle longest. False if
    /// every client is streaming.
    fn close_longest_idle(&mut self) -> bool {
        let Some(token) = self
            .clients
            .iter()
            .filter(|(_, c)| c.feed.is_none())
            .min_by_key(|(_, c)| c.since)
            .map(|(token, _)| *token)
        else {
            return false;
        };
        let why = format!(
            "closed to make room: the switch serves at most {MAX_CLIENTS} clients and this one was idle longest"
        );
        self.refuse(token, &why);
        self.close(token);
        true
    }

    /// Reads what the client sent and answers it. Called on every event
    /// of the client (readable or writable): epoll is edge-triggered, so
    /// the socket is read until it would block, except while the client
    /// leaves too many answers unread (then a writable event resumes it).
    fn client_ready(&mut self, token: Token) {
        self.flush(token);
        let mut buf = [0u8; 16 * 1024];
        loop {
            let Some(client) = self.clients.get_mut(&token) else {
                return;
            };
            // Enough unsent: read no more requests until it went, but send
            // what we can now (the socket is writable already and its
            // edge-triggered readiness will not say so again).
            if client.output.len() > MAX_UNSENT_BYTES {
                break;
            }
            match client.stream.read(&mut buf) {
                Ok(0) => {
                    // A client that closed its sending half still gets its
                    // answers (a stream goes on until it cannot be written).
                    if client.feed.is_none() {
                        client.closing = true;
                    }
                    break;
                }
                // A streaming or closing client has nothing more to ask.
                Ok(_) if client.feed.is_some() || client.closing => {}
                Ok(n) => {
                    client.input.extend_from_slice(&buf[..n]);
                    self.take_requests(token);
                }
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => break,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => {
                    self.close(token);
                    return;
                }
            }
        }
        self.flush(token);
    }

    /// Answers every complete request in the client's input.
    fn take_requests(&mut self, token: Token) {
        loop {
            let Some(client) = self.clients.get_mut(&token) else {
                return;
            };
            if client.feed.is_some() || client.closing {
                client.input.clear();
                return;
            }
            let Some(len) = self.service.request_len(&client.input) else {
                if client.input.len() > MAX_REQUEST_BYTES {
                    let why = format!("request longer than {MAX_REQUEST_BYTES} bytes");
                    self.refuse(token, &why);
                    if let Some(client) = self.clients.get_mut(&token) {
                        client.closing = true;
                    }
                }
                return;
            };
            if len > MAX_REQUEST_BYTES {
                let why = format!("request longer than {MAX_REQUEST_BYTES} bytes");
                self.refuse(token, &why);
                client_closing(&mut self.clients, token);
                return;
            }
            let request: Vec<u8> = client.input.drain(..len).collect();
            client.since = Instant::now();
            match self.service.answer(&request) {
                Answer::Reply { bytes, close } => {
                    let client = self
                        .clients
                        .get_mut(&token)
                        .expect("only close() removes a client, and answering does not close");
                    client.output.extend_from_slice(&bytes);
                    client.closing |= close;
                }
                Answer::Stream { head, mut feed } => {
                    let client = self
                        .clients
                        .get_mut(&token)
                        .expect("only close() removes a client, and answering does not close");
                    client.output.extend_from_slice(&head);
                    if !feed.pull(&mut client.output) {
                        client.closing = true;
                    } else {
                        client.feed = Some(feed);
                    }
                }
            }
        }
    }

    /// Queues the service's refusal for `token`.
    fn refuse(&mut self, token: Token, why: &str) {
        let bytes = self.service.refusal(why);
        if let Some(client) = self.clients.get_mut(&token) {
            client.output.extend_from_slice(&bytes);
            // One try: a client being closed gets no second chance to read.
            let _ = write_some(&mut client.stream, &mut client.output);
        }
    }

    /// Feeds the streams and closes idle clients.
    fn tick(&mut self) {
        let now = Instant::now();
        let tokens: Vec<Token> = self.clients.keys().copied().collect();
        for token in tokens {
            let client = self.clients.get_mut(&token).expect("listed above");
            if let Some(feed) = client.feed.as_mut() {
                if client.output.len() < MAX_UNSENT_BYTES && !feed.pull(&mut client.output) {
                    client.feed = None;
                    client.closing = true;
                }
                self.flush(token);
            } else if now.saturating_duration_since(client.since) >= IDLE_TIMEOUT {
                if !client.closing {
                    self.refuse(token, "closed: no request for a minute");
                }
                self.close(token);
            }
        }
    }

    /// Sends what the client's output holds; closes it when done and closing.
    fn flush(&mut self, token: Token) {
        let Some(client) = self.clients.get_mut(&token) else {
            return;
        };
        match write_some(&mut client.stream, &mut client.output) {
            Ok(()) if client.output.is_empty() && client.closing => self.close(token),
            Ok(()) => {}
            Err(_) => self.close(token),
        }
    }

    fn close(&mut self, token: Token) {
        if let Some(mut client) = self.clients.remove(&token) {
            let _ = self.poll.registry().deregister(&mut client.stream);
        }
    }
}

/// How long the loop may wait for events before it has work of its own
/// (the tick, which runs at most every [`STREAM_TICK`]): while a client
/// streams, until the next tick; else, while any client is connected, until
/// the one idle longest reaches [`IDLE_TIMEOUT`]; with no client, until
/// something happens (a client connects, or `stop` wakes it). A switch
/// nobody talks to wakes for nobody.
fn wait_for(
    streaming: bool,
    since_tick: Duration,
    longest_idle: Option<Duration>,
) -> Option<Duration> {
    let until_tick = STREAM_TICK.saturating_sub(since_tick);
    if streaming {
        return Some(until_tick);
    }
    longest_idle.map(|idle| IDLE_TIMEOUT.saturating_sub(idle).max(until_tick))
}

fn client_closing<S>(clients: &mut HashMap<Token, Client<S>>, token: Token) {
    if let Some(client) = clients.get_mut(&token) {
        client.closing = true;
    }
}

/// Writes as much of `output` as the socket takes now, removing what went.
fn write_some(stream: &mut impl Write, output: &mut Vec<u8>) -> io::Result<()> {
    let mut sent = 0;
    while sent < output.len() {
        match stream.write(&output[sent..]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => sent += n,
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => break,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            Err(err) => return Err(err),
        }
    }
    output.drain(..sent);
    Ok(())
}

#[cfg(test)]
mod tests;
