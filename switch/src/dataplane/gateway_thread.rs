//! The gateway's thread: frames the switch sent to the gateway port go
//! through the gateway's services first ([`HostSide`]: DNS, outbound flows
//! through host sockets), the rest to smoltcp; what either sends is
//! forwarded like any port's frames.
//!
//! The thread waits in one `mio` poll on its host sockets and a waker,
//! until the next timer of smoltcp or the services; with none, until
//! something arrives (an idle gateway costs nothing).
//! Workers queue frames on a bounded channel and wake the thread only when
//! it is about to sleep (a flag it sets before sleeping and they clear), so
//! a burst of frames costs one wake-up, not one per frame. The channel
//! keeps a little room ([`CONTROL_RESERVE`]) that only TCP segments
//! carrying SYN, FIN or RST may take: a full queue drops data, which the
//! container sends again, but never the segment that opens or ends a flow
//! (a lost RST is never sent again).
//!
//! The gateway port takes offloads: frames come as the containers sent
//! them. A TCP super-frame (the container's TSO) has its checksum completed
//! and goes to smoltcp whole; other GSO frames (UDP runs the switch
//! coalesced) are cut here, as the fabric would have; partial checksums
//! are completed. smoltcp's own TCP frames leave with partial checksums and
//! as super-frames, which the fabric resolves per egress port.

use std::io;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender, TryRecvError, TrySendError};
use mio::{Events, Poll, Token, Waker};
use ports::{PortKind, VnetHdr};

use super::Shared;
use crate::fabric::{Fabric, PortHandle, TraceSink};
use crate::flows::FlowInfo;
use crate::gateway::{GATEWAY_QUEUE_FRAMES, Gateway};
use crate::host_side::{HostSide, Published, ServicesReport, ServicesSetup};
use crate::mac::MacAddr;
use crate::port::{GATEWAY_PORT_NAME, GatewayQueue, GatewayTx, PortId};
use crate::services::Verdict;
use crate::stats::{DropReason, PortCounters};
use crate::time::Instant;

/// The longest the gateway sleeps while a timer is set: the switch's clock
/// may be a test's, which moves without waking anyone.
const MAX_IDLE: Duration = Duration::from_secs(1);
const WAKER: Token = Token(0);
/// Room in the gateway's queue beyond [`GATEWAY_QUEUE_FRAMES`] that only
/// TCP segments carrying SYN, FIN or RST take (see the module docs).
const CONTROL_RESERVE: usize = 64;

/// What the control side asks the gateway thread.
#[derive(Debug)]
pub(super) enum GatewayQuery {
    Report(Sender<ServicesReport>),
    Flows(Sender<Vec<FlowInfo>>),
    /// The network's containers changed: names for DNS, the published
    /// ports to listen on (those already open stay, the others close);
    /// answered with the ports that could not be opened.
    Update {
        names: Vec<(String, Ipv4Addr)>,
        published: Vec<Published>,
        reply: Sender<Vec<String>>,
    },
}

enum Message {
    Frame(VnetHdr, Vec<u8>),
    Query(GatewayQuery),
    Stop,
}

/// The channel into the gateway thread and its wake-up.
#[derive(Debug)]
struct Inbox {
    queue: Sender<Message>,
    waker: Waker,
    /// Set by the thread just before it sleeps; whoever queues something
    /// and finds it set wakes the thread.
    sleeping: AtomicBool,
    /// Frames refused because the queue was full (each also counted as a
    /// drop on port `gw`): the thread looks once a round and, when it grew,
    /// asks the containers again about their flows (a lost RST is never
    /// sent again; see `host_side/recheck.rs`).
    overflows: AtomicU64,
}

impl Inbox {
    fn new(capacity: usize, waker: Waker) -> (Inbox, Receiver<Message>) {
        let (queue, messages) = crossbeam_channel::bounded(capacity + CONTROL_RESERVE);
        let inbox = Inbox {
            queue,
            waker,
            sleeping: AtomicBool::new(false),
            overflows: AtomicU64::new(0),
        };
        (inbox, messages)
    }

    /// Queues a frame: a TCP control segment while the channel has room
    /// at all, any other only while fewer than `capacity` messages wait.
    /// (Two workers may both see the last free place: the reserve, many
    /// times the number of workers, absorbs that.)
    fn send_frame(&self, vnet: VnetHdr, frame: &[u8], capacity: usize) -> io::Result<()> {
        if self.queue.len() >= capacity && !is_tcp_control(frame) {
            return Err(self.overflowed());
        }
        match self.send(Message::Frame(vnet, frame.to_vec())) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(_)) => Err(self.overflowed()),
            Err(TrySendError::Disconnected(_)) => Err(io::Error::from(io::ErrorKind::BrokenPipe)),
        }
    }

    fn overflowed(&self) -> io::Error {
        // No wake-up: a thread with a full queue does not sleep (the
        // queue filled after the frame that woke it), and reads the count
        // at the end of the round.
        self.overflows.fetch_add(1, Ordering::Relaxed);
        io::Error::from(io::ErrorKind::WouldBlock)
    }

    fn wake_if_sleeping(&self) {
        if self.sleeping.swap(false, Ordering::SeqCst) {
            let _ = self.waker.wake();
        }
    }

    fn send(&self, message: Message) -> Result<(), TrySendError<Message>> {
        self.queue.try_send(message)?;
        self.wake_if_sleeping();
        Ok(())
    }
}

pub(super) struct GatewayThread {
    pub(super) address: Ipv4Addr,
    pub(super) prefix_len: u8,
    pub(super) mac: MacAddr,
    inbox: Arc<Inbox>,
    thread: JoinHandle<()>,
}

impl GatewayThread {
    pub(super) fn stop(self) {
        // The queue may be full: keep trying until the thread takes it.
        let mut stop = Message::Stop;
        loop {
            match self.inbox.queue.try_send(stop) {
                Ok(()) | Err(TrySendError::Disconnected(_)) => break,
                Err(TrySendError::Full(back)) => {
                    stop = back;
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        }
        let _ = self.inbox.waker.wake();
        let _ = self.thread.join();
    }

    /// Asks the thread something; `None` if it does not answer in time.
    pub(super) fn query<T>(&self, make: impl FnOnce(Sender<T>) -> GatewayQuery) -> Option<T> {
        let (tx, rx) = crossbeam_channel::bounded(1);
        let mut message = Message::Query(make(tx));
        for _ in 0..100 {
            match self.inbox.send(message) {
                Ok(()) => return rx.recv_timeout(Duration::from_secs(2)).ok(),
                Err(TrySendError::Full(back)) => {
                    message = back;
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(TrySendError::Disconnected(_)) => return None,
            }
        }
        None
    }
}

/// The gateway port's queue: a bounded channel to the gateway thread, for
/// frames as they came (offloads) up to the network's MTU.
#[derive(Debug)]
struct Channel {
    inbox: Arc<Inbox>,
    mtu: usize,
    /// Messages the queue holds before only TCP control segments may
    /// join (see [`Inbox::send_frame`]).
    capacity: usize,
}

impl GatewayQueue for Channel {
    fn push(&self, frame: &[u8]) -> io::Result<()> {
        self.push_offloaded(&VnetHdr::default(), frame)
    }

    fn push_offloaded(&self, vnet: &VnetHdr, frame: &[u8]) -> io::Result<()> {
        self.inbox.send_frame(*vnet, frame, self.capacity)
    }

    fn offloads(&self) -> bool {
        true
    }

    fn mtu(&self) -> usize {
        self.mtu
    }
}

pub(super) fn spawn(
    mut gateway: Gateway,
    setup: ServicesSetup,
    shared: Arc<Shared>,
) -> io::Result<GatewayThread> {
    gateway.enable_flows();
    let poll = Poll::new()?;
    let (inbox, messages) = Inbox::new(GATEWAY_QUEUE_FRAMES, Waker::new(poll.registry(), WAKER)?);
    let inbox = Arc::new(inbox);
    let config = setup.config(gateway.address(), gateway.prefix_len(), gateway.mac());
    let counters = Arc::new(PortCounters::default());
    let host = HostSide::new(
        config,
        poll.registry().try_clone()?,
        setup.allow_host_loopback,
        counters.clone(),
    )?;
    let handle = Arc::new(PortHandle {
        id: PortId::GATEWAY,
        name: GATEWAY_PORT_NAME.to_string(),
        kind: PortKind::Gateway,
        tx: Arc::new(GatewayTx(Channel {
            inbox: inbox.clone(),
            mtu: gateway.link().mtu,
            capacity: GATEWAY_QUEUE_FRAMES,
        })),
        counters,
        capture: shared.capture_port(GATEWAY_PORT_NAME),
    });
    {
        let _guard = shared
            .membership
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        shared.engine.add_local(gateway.mac(), PortId::GATEWAY);
        shared.publish(shared.snapshot().with(handle.clone()), None);
    }
    let (address, prefix_len, mac) = (gateway.address(), gateway.prefix_len(), gateway.mac());
    let mut host = host;
    // The generation first: a change between the two is caught next round.
    let thread_generation = shared.live_trace.generation();
    let trace = shared.live_trace.sink();
    host.set_trace(trace.is_some());
    if setup.outbound {
        for (port, err) in host.publish(&setup.published) {
            log::warn!(
                "cannot listen on published port {} (container {}): {err}",
                port.host,
                port.container
            );
        }
    }
    let thread_inbox = inbox.clone();
    let outbound = setup.outbound;
    let thread = std::thread::Builder::new()
        .name("tapswitch-gw".into())
        .spawn(move || {
            let mut thread = Thread {
                gateway,
                host,
                outbound,
                shared,
                handle,
                overflows_seen: 0,
                trace_generation: thread_generation,
                trace,
                frames: Vec::new(),
                out: Vec::new(),
                scratch: Vec::new(),
            };
            thread.run(poll, &thread_inbox, &messages);
        })?;
    Ok(GatewayThread {
        address,
        prefix_len,
        mac,
        inbox,
        thread,
    })
}

struct Thread {
    gateway: Gateway,
    host: HostSide,
    outbound: bool,
    shared: Arc<Shared>,
    handle: Arc<PortHandle>,
    /// The inbox's overflow count the services last heard of.
    overflows_seen: u64,
    /// The trace settings `trace` was made for (see `live_trace.rs`).
    trace_generation: u64,
    /// Where the fabric's decisions and the flows' lines go; `None` while
    /// tracing is off.
    trace: Option<Arc<TraceSink>>,
    /// Plain frames the services made, moved to `out` after each call.
    frames: Vec<Vec<u8>>,
    /// Frames for the switch, in order, sent at the end of each round.
    out: Vec<(VnetHdr, Vec<u8>)>,
    /// Reused when a GSO frame is cut in software.
    scratch: Vec<u8>,
}

impl Thread {
    fn run(&mut self, mut poll: Poll, inbox: &Inbox, messages: &Receiver<Message>) {
        let mut fabric = Fabric::new(self.trace.clone());
        let mut events = Events::with_capacity(256);
        loop {
            let now = self.shared.clock.now();
            let mut wait = self.wait(now);
            inbox.sleeping.store(true, Ordering::SeqCst);
            if !messages.is_empty() {
                wait = Some(Duration::ZERO);
            }
            let polled = poll.poll(&mut events, wait);
            inbox.sleeping.store(false, Ordering::SeqCst);
            if let Err(err) = polled
                && err.kind() != io::ErrorKind::Interrupted
            {
                log::error!("gateway: poll failed: {err}; the gateway stops");
                return;
            }
            // Before the round's frames: a trace or a monitor that began
            // while the thread slept sees them.
            self.follow_trace(&mut fabric);
            let now = self.shared.clock.now();
            for event in events.iter() {
                if event.token() != WAKER {
                    self.host
                        .ready(now, event, &mut self.gateway, &mut self.frames);
                    self.take_services_frames();
                }
            }
            // At most as many frames as the stack's own queue holds: the
            // rest wait in the channel for the next round.
            for _ in 0..GATEWAY_QUEUE_FRAMES {
                match messages.try_recv() {
                    Ok(Message::Frame(vnet, frame)) => self.take_frame(now, vnet, frame),
                    Ok(Message::Query(query)) => self.answer(now, query),
                    Ok(Message::Stop) | Err(TryRecvError::Disconnected) => return,
                    Err(TryRecvError::Empty) => break,
                }
            }
            self.notice_overflows(now, inbox);
            self.host.timers(now, &mut self.gateway, &mut self.frames);
            self.take_services_frames();
            self.gateway.poll_offloaded(now, &mut self.out);
            self.host
                .after_stack(now, &mut self.gateway, &mut self.frames);
            self.take_services_frames();
            // What the relay queued for the stack goes out in this round.
            self.gateway.poll_offloaded(now, &mut self.out);
            self.send(&mut fabric, now);
            self.report_flow_events(now);
        }
    }

    /// Frames dropped at the full queue since the last round: the services
    /// ask the containers again about their flows.
    fn notice_overflows(&mut self, now: Instant, inbox: &Inbox) {
        let overflows = inbox.overflows.load(Ordering::Relaxed);
        if overflows != self.overflows_seen {
            self.overflows_seen = overflows;
            self.host.queue_overflowed(now);
        }
    }

    /// `tapswitch trace on|off` while the switch runs: as a worker does, the
    /// thread makes its fabric again when the settings changed (one atomic
    /// load a round otherwise). The flow table records its events while a
    /// trace or a monitor wants them.
    fn follow_trace(&mut self, fabric: &mut Fabric) {
        let generation = self.shared.live_trace.generation();
        self.host
            .set_trace(self.trace.is_some() || self.shared.bus.is_listening());
        if generation == self.trace_generation {
            return;
        }
        self.trace_generation = generation;
        self.trace = self.shared.live_trace.sink();
        *fabric = Fabric::new(self.trace.clone());
    }

    /// Flow events go to `--trace` and, opened and closed flows, to the
    /// event stream (`tapswitch monitor`); the flow table records them only
    /// while one of the two wants them (see [`Thread::follow_trace`]).
    fn report_flow_events(&mut self, now: Instant) {
        let bus = &self.shared.bus;
        let listening = bus.is_listening();
        for (line, event) in self.host.take_flow_events() {
            if let Some(trace) = &self.trace {
                trace(&line);
            }
            if let Some(event) = event
                && listening
            {
                bus.publish(Some(now), event);
            }
        }
    }

    /// How long to sleep: until smoltcp's or the services' next timer, at
    /// most [`MAX_IDLE`]; with no timer, until woken.
    fn wait(&mut self, now: Instant) -> Option<Duration> {
        let stack = self.gateway.poll_delay(now);
        let services = self.host.next_deadline().map(|at| at.saturating_since(now));
        sleep_for(stack, services)
    }

    /// The services' plain frames join the round's output, in order.
    fn take_services_frames(&mut self) {
        let plain = self.frames.drain(..).map(|f| (VnetHdr::default(), f));
        self.out.extend(plain);
    }

    /// A frame as the switch delivered it: resolved into what smoltcp and
    /// the services take (see the module documentation).
    fn take_frame(&mut self, now: Instant, vnet: VnetHdr, mut frame: Vec<u8>) {
        if vnet.is_plain() {
            return self.take_plain(now, &frame);
        }
        let tcp_segment = vnet.gso_type & !VnetHdr::GSO_ECN == VnetHdr::GSO_TCPV4;
        if vnet.is_gso() && !tcp_segment {
            let mut pieces = Vec::new();
            let mut emit = |piece: &[u8]| pieces.push(piece.to_vec());
            if ports::vnet::segment(&vnet, &frame, &mut self.scratch, &mut emit).is_err() {
                self.handle.counters.count_drop(DropReason::Malformed);
            }
            for piece in pieces {
                self.take_plain(now, &piece);
            }
            return;
        }
        let mut completed = vnet;
        if ports::vnet::complete_checksum(&mut completed, &mut frame).is_err() {
            self.handle.counters.count_drop(DropReason::Malformed);
            return;
        }
        if tcp_segment {
            self.take_segment(now, &frame);
        } else {
            self.take_plain(now, &frame);
        }
    }

    fn take_plain(&mut self, now: Instant, frame: &[u8]) {
        // Too long for the gateway whoever it is for (a full-size
        // VLAN-tagged frame the fabric lets through): refused and counted
        // before any service looks at it, as replay counts it.
        if frame.len() > self.gateway.link().frame_max() {
            self.handle.counters.count_drop(DropReason::TxError);
            return;
        }
        if self.offer_to_services(now, frame) == Verdict::ToStack && !self.gateway.deliver(frame) {
            self.handle.counters.count_drop(DropReason::TxError);
        }
    }

    /// A container's TCP super-frame, its checksum complete: one segment
    /// for smoltcp.
    fn take_segment(&mut self, now: Instant, frame: &[u8]) {
        if self.offer_to_services(now, frame) == Verdict::ToStack
            && !self.gateway.deliver_segment(frame)
        {
            self.handle.counters.count_drop(DropReason::TxError);
        }
    }

    fn offer_to_services(&mut self, now: Instant, frame: &[u8]) -> Verdict {
        let verdict = self
            .host
            .frame(now, frame, &mut self.gateway, &mut self.frames);
        self.take_services_frames();
        verdict
    }

    fn answer(&mut self, now: Instant, query: GatewayQuery) {
        match query {
            GatewayQuery::Report(reply) => {
                let _ = reply.send(self.host.report(self.outbound));
            }
            GatewayQuery::Flows(reply) => {
                let _ = reply.send(self.host.infos(now));
            }
            GatewayQuery::Update {
                names,
                published,
                reply,
            } => {
                self.host.set_names(&names);
                let failed = self
                    .host
                    .publish(&published)
                    .into_iter()
                    .map(|(port, err)| format!("{} -> {}: {err}", port.host, port.container))
                    .collect();
                let _ = reply.send(failed);
            }
        }
    }

    fn send(&mut self, fabric: &mut Fabric, now: Instant) {
        if self.out.is_empty() {
            return;
        }
        // A fresh snapshot each time, dropped before sleeping: a stale one
        // would keep a removed port's device open.
        let ports = self.shared.snapshot();
        let mut session = self.shared.engine.session();
        for (mut vnet, mut frame) in self.out.drain(..) {
            fabric.forward(
                &mut session,
                &ports,
                now,
                &self.handle,
                &mut vnet,
                &mut frame,
            );
        }
    }
}

/// Whether `frame` is an IPv4 TCP segment carrying SYN, FIN or RST (the
/// first fragment of one included): a segment whose loss a sender would
/// not notice for a long time, or ever.
fn is_tcp_control(frame: &[u8]) -> bool {
    const ETHERNET_HEADER: usize = 14;
    const IPV4: [u8; 2] = [0x08, 0x00];
    const TCP: u8 = 6;
    const FIN_SYN_RST: u8 = 0x07;
    let ip = ETHERNET_HEADER;
    if frame.len() < ip + 20 || frame[12..14] != IPV4 || frame[ip] >> 4 != 4 {
        return false;
    }
    let fragment_offset = u16::from_be_bytes([frame[ip + 6], frame[ip + 7]]) & 0x1fff;
    if frame[ip + 9] != TCP || fragment_offset != 0 {
        return false;
    }
    let flags = ip + usize::from(frame[ip] & 0x0f) * 4 + 13;
    frame.get(flags).is_some_and(|f| f & FIN_SYN_RST != 0)
}

/// How long the thread sleeps with smoltcp's next timer `stack` and the
/// services' `services` away: until the first, at most [`MAX_IDLE`];
/// `None` (until woken) with neither.
fn sleep_for(stack: Option<Duration>, services: Option<Duration>) -> Option<Duration> {
    let first = match (stack, services) {
        (Some(stack), Some(services)) => stack.min(services),
        (stack, services) => stack.or(services)?,
    };
    Some(first.min(MAX_IDLE))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn channel(capacity: usize) -> (Poll, Arc<Inbox>, Receiver<Message>, Channel) {
        let poll = Poll::new().unwrap();
        let (inbox, messages) = Inbox::new(capacity, Waker::new(poll.registry(), WAKER).unwrap());
        let inbox = Arc::new(inbox);
        let channel = Channel {
            inbox: inbox.clone(),
            mtu: 1500,
            capacity,
        };
        (poll, inbox, messages, channel)
    }

    /// An Ethernet frame with an IPv4 TCP segment whose flags are `flags`
    /// (and `fragment`: the IPv4 flags and fragment offset field).
    fn tcp_frame(flags: u8, fragment: u16) -> Vec<u8> {
        let mut frame = vec![0u8; 14 + 20 + 20 + 10];
        frame[12..14].copy_from_slice(&[0x08, 0x00]);
        frame[14] = 0x45;
        frame[14 + 6..14 + 8].copy_from_slice(&fragment.to_be_bytes());
        frame[14 + 9] = 6;
        frame[14 + 20 + 12] = 0x50;
        frame[14 + 20 + 13] = flags;
        frame
    }

    const SYN: u8 = 0x02;
    const ACK: u8 = 0x10;

    #[test]
    fn control_segments_are_those_with_syn_fin_or_rst() {
        for flags in [
            SYN,
            SYN | ACK,
            0x01 | ACK,
            0x04,
            0x04 | ACK,
            0x01 | 0x08 | ACK,
        ] {
            assert!(is_tcp_control(&tcp_frame(flags, 0)), "flags {flags:#x}");
        }
        // Data and pure ACKs; the first fragment of a SYN is one, later
        // fragments carry no TCP header.
        assert!(!is_tcp_control(&tcp_frame(ACK, 0)));
        assert!(!is_tcp_control(&tcp_frame(0x08 | ACK, 0)));
        assert!(is_tcp_control(&tcp_frame(SYN, 0x2000)));
        assert!(!is_tcp_control(&tcp_frame(SYN, 0x2000 | 185)));
        let mut udp = tcp_frame(SYN, 0);
        udp[14 + 9] = 17;
        assert!(!is_tcp_control(&udp));
        let mut arp = tcp_frame(SYN, 0);
        arp[12..14].copy_from_slice(&[0x08, 0x06]);
        assert!(!is_tcp_control(&arp));
        // Cut before the flags; options pushing the flags past the end.
        assert!(!is_tcp_control(&tcp_frame(SYN, 0)[..14 + 20 + 13]));
        let mut long_header = tcp_frame(SYN, 0);
        long_header[14] = 0x4f;
        assert!(!is_tcp_control(&long_header));
    }

    #[test]
    fn a_full_queue_still_takes_syn_fin_and_rst_into_its_reserve() {
        let (_poll, inbox, messages, channel) = channel(2);
        channel.push(&tcp_frame(ACK, 0)).unwrap();
        channel.push(&tcp_frame(ACK, 0)).unwrap();
        let refused = channel.push(&tcp_frame(ACK, 0)).unwrap_err();
        assert_eq!(refused.kind(), io::ErrorKind::WouldBlock);
        assert_eq!(inbox.overflows.load(Ordering::Relaxed), 1);
        // Data is refused, control segments are not, until the reserve too
        // is full.
        for flags in [SYN, 0x01 | ACK, 0x04] {
            channel.push(&tcp_frame(flags, 0)).unwrap();
        }
        for _ in 3..CONTROL_RESERVE {
            channel.push(&tcp_frame(0x04, 0)).unwrap();
        }
        assert_eq!(messages.len(), 2 + CONTROL_RESERVE);
        assert_eq!(inbox.overflows.load(Ordering::Relaxed), 1, "none refused");
        let refused = channel.push(&tcp_frame(0x04, 0)).unwrap_err();
        assert_eq!(refused.kind(), io::ErrorKind::WouldBlock);
        assert_eq!(inbox.overflows.load(Ordering::Relaxed), 2, "counted");
        // In order: the data first, then the control segments.
        let first = messages.try_recv().unwrap();
        assert!(matches!(first, Message::Frame(_, f) if !is_tcp_control(&f)));
        // The queue still holds `capacity` messages: data still waits.
        assert!(channel.push(&tcp_frame(ACK, 0)).is_err());
    }

    #[test]
    fn a_full_queue_refuses_the_frame_and_counts_the_overflow() {
        let (_poll, inbox, messages, channel) = channel(2);
        channel.push(&[1; 60]).unwrap();
        channel.push(&[2; 60]).unwrap();
        assert_eq!(inbox.overflows.load(Ordering::Relaxed), 0);
        for _ in 0..3 {
            let refused = channel.push(&[3; 60]).unwrap_err();
            assert_eq!(refused.kind(), io::ErrorKind::WouldBlock);
        }
        assert_eq!(inbox.overflows.load(Ordering::Relaxed), 3, "each counted");
        assert_eq!(messages.len(), 2, "nothing kept past the bound");
        // The thread takes one, then stops.
        assert!(messages.try_recv().is_ok());
        drop(messages);
        let gone = channel.push(&[4; 60]).unwrap_err();
        assert_eq!(gone.kind(), io::ErrorKind::BrokenPipe);
        assert_eq!(
            inbox.overflows.load(Ordering::Relaxed),
            3,
            "a stopped gateway is no overflow"
        );
    }

    #[test]
    fn the_thread_sleeps_until_its_first_timer_and_with_none_until_woken() {
        let ms = Duration::from_millis;
        assert_eq!(sleep_for(None, None), None, "no timer: until woken");
        assert_eq!(sleep_for(Some(ms(5)), None), Some(ms(5)));
        assert_eq!(sleep_for(None, Some(ms(7))), Some(ms(7)));
        assert_eq!(sleep_for(Some(ms(9)), Some(ms(3))), Some(ms(3)));
        assert_eq!(
            sleep_for(Some(ms(60_000)), None),
            Some(MAX_IDLE),
            "a far timer is looked at again within MAX_IDLE"
        );
    }
}
