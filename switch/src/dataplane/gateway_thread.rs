//! The gateway's thread: feeds frames the switch sent to the gateway port to
//! smoltcp, and forwards smoltcp's answers like any port's frames.

use std::io;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TrySendError};
use ports::{PortKind, VnetHdr};

use super::Shared;
use crate::fabric::{Fabric, PortHandle};
use crate::gateway::{GATEWAY_QUEUE_FRAMES, Gateway};
use crate::mac::MacAddr;
use crate::port::{GATEWAY_PORT_NAME, GatewayQueue, GatewayTx, PortId};
use crate::stats::{DropReason, PortCounters};

/// The longest the gateway sleeps without checking its timers.
const MAX_IDLE: Duration = Duration::from_secs(1);

enum Message {
    Frame(Vec<u8>),
    Stop,
}

pub(super) struct GatewayThread {
    pub(super) address: Ipv4Addr,
    pub(super) prefix_len: u8,
    pub(super) mac: MacAddr,
    stop: Sender<Message>,
    thread: JoinHandle<()>,
}

impl GatewayThread {
    pub(super) fn stop(self) {
        let _ = self.stop.send(Message::Stop);
        let _ = self.thread.join();
    }
}

/// The gateway port's queue: a bounded channel to the gateway thread.
#[derive(Debug)]
struct Channel(Sender<Message>);

impl GatewayQueue for Channel {
    fn push(&self, frame: &[u8]) -> io::Result<()> {
        match self.0.try_send(Message::Frame(frame.to_vec())) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(_)) => Err(io::Error::from(io::ErrorKind::WouldBlock)),
            Err(TrySendError::Disconnected(_)) => Err(io::Error::from(io::ErrorKind::BrokenPipe)),
        }
    }
}

pub(super) fn spawn(gateway: Gateway, shared: Arc<Shared>) -> io::Result<GatewayThread> {
    let (queue, inbox) = crossbeam_channel::bounded(GATEWAY_QUEUE_FRAMES);
    let handle = Arc::new(PortHandle {
        id: PortId::GATEWAY,
        name: GATEWAY_PORT_NAME.to_string(),
        kind: PortKind::Gateway,
        tx: Arc::new(GatewayTx(Channel(queue.clone()))),
        counters: Arc::new(PortCounters::default()),
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
    let thread = std::thread::Builder::new()
        .name("tapswitch-gw".into())
        .spawn(move || run(gateway, shared, handle, inbox))?;
    Ok(GatewayThread {
        address,
        prefix_len,
        mac,
        stop: queue,
        thread,
    })
}

fn run(
    mut gateway: Gateway,
    shared: Arc<Shared>,
    handle: Arc<PortHandle>,
    inbox: Receiver<Message>,
) {
    let mut fabric = Fabric::new(shared.trace.clone());
    let mut out: Vec<Vec<u8>> = Vec::new();
    loop {
        let now = shared.clock.now();
        let wait = gateway.poll_delay(now).unwrap_or(MAX_IDLE).min(MAX_IDLE);
        match inbox.recv_timeout(wait) {
            Ok(Message::Frame(frame)) => {
                deliver(&mut gateway, &handle, &frame);
                for message in inbox.try_iter().take(GATEWAY_QUEUE_FRAMES) {
                    match message {
                        Message::Frame(frame) => deliver(&mut gateway, &handle, &frame),
                        Message::Stop => return,
                    }
                }
            }
            Ok(Message::Stop) | Err(RecvTimeoutError::Disconnected) => return,
            Err(RecvTimeoutError::Timeout) => {}
        }
        let now = shared.clock.now();
        gateway.poll(now, &mut out);
        if out.is_empty() {
            continue;
        }
        // A fresh snapshot each time, dropped before sleeping: a stale one
        // would keep a removed port's device open.
        let ports = shared.snapshot();
        let mut session = shared.engine.session();
        for mut frame in out.drain(..) {
            fabric.forward(
                &mut session,
                &ports,
                now,
                &handle,
                &mut VnetHdr::default(),
                &mut frame,
            );
        }
    }
}

/// Hands a frame the switch sent to the gateway port to the gateway. One it
/// refuses (longer than its 1514-byte limit, such as a full-size VLAN-tagged
/// frame the fabric lets through, or its queue full) is counted on the
/// gateway port as a refused send, as replay counts it.
fn deliver(gateway: &mut Gateway, handle: &PortHandle, frame: &[u8]) {
    if !gateway.deliver(frame) {
        handle.counters.count_drop(DropReason::TxError);
    }
}
