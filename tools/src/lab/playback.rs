//! The lab's run: the live switch's engine and fabric, driven by capture files on
//! virtual time.
//!
//! Nothing here decides where a frame goes: [`Fabric::forward`] does, as in
//! `serve`. This module only supplies what a live switch gets from the
//! world:
//!
//! - **frames**, from every input file, merged in timestamp order (ties go
//!   to the port named first on the command line; within a file, file order
//!   always holds);
//! - **time**, the timestamp of the frame being handled. The clock never
//!   goes back: a frame stamped earlier than one already handled (captures
//!   from several NIC queues do this) is handled at the current time. The
//!   MAC table is swept each time the clock passes a whole second, and once
//!   at the end, so its counters depend on the frames only;
//! - **ports** whose transmit side appends to an output file, stamping each
//!   frame with the current time (the time of the frame that caused it);
//! - **the tunnel port** (`--vxlan`), whose input and output are the
//!   underlay: [`LabTunnel`] takes the inner frames out of the captured
//!   VXLAN before the fabric sees them, and the port's transmit side writes
//!   the underlay frames the tunnel sends (see [`super::underlay`]);
//! - **the gateway**, a port like the others whose transmit side queues
//!   frames for [`Gateway`]; after each input frame the gateway is given its
//!   frames and polled, and what it sends is forwarded from its port, until
//!   it has nothing more to say.
//!
//! The same inputs therefore give the same decisions, counters and output
//! bytes on every run, at any speed.

use std::fs::File;
use std::io::{self, BufReader, Read, Write};
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError};

use anyhow::{Context, Result, bail};
use ports::capture::{Encoder, InterfaceChoice, OutputFormat, PcapReader};
use ports::{PortKind, PortTx, VnetHdr};
use switch::fabric::TraceSink;
use switch::gateway::GATEWAY_QUEUE_FRAMES;
use switch::port::{GatewayQueue, GatewayTx};
use switch::{
    DropReason, Engine, Fabric, FdbEntry, Gateway, Instant, MacAddr, PortCounters, PortHandle,
    PortId, PortSet, PortStats, TableConfig, TableStats,
};

use super::notation::{count, seconds_ns};
use super::underlay::{LabTunnel, ReplayTunnelReport, TunnelSpec, UnderlayTx};

/// The gateway port's name in trace lines and summaries, as in `serve`.
pub use switch::dataplane::GATEWAY_PORT_NAME;

/// Output is written to the files in pieces of about this size.
const FLUSH_BYTES: usize = 256 * 1024;

/// What to replay and how.
pub struct LabConfig {
    /// The ports, numbered 1, 2, ... in this order.
    pub ports: Vec<PortSpec>,
    pub table: TableConfig,
    /// The gateway's address and prefix length; `None` runs without one.
    pub gateway: Option<(Ipv4Addr, u8)>,
    /// The IP MTU of every replay port (frames may be 18 bytes longer).
    pub mtu: usize,
    pub format: OutputFormat,
    /// Where trace lines go, if anywhere.
    pub trace: Option<Arc<TraceSink>>,
    /// Called every [`PROGRESS_FRAMES`] input frames with the count so far
    /// and the virtual time (for a progress line).
    pub progress: Option<Arc<ProgressSink>>,
    /// Static MAC table entries in place before the first frame (`--static`).
    pub static_entries: Vec<(MacAddr, PortId)>,
    /// The port that is a VXLAN tunnel (`--vxlan`), if any: its input and
    /// output are captures of the underlay.
    pub tunnel: Option<TunnelSpec>,
}

/// Receives the frame count and the virtual time as a run goes on.
pub type ProgressSink = dyn Fn(u64, Instant) + Send + Sync;

/// How often [`LabConfig::progress`] is called, in input frames (a power of two).
pub const PROGRESS_FRAMES: u64 = 1 << 16;

/// The path that means standard input, as in most Unix tools.
pub const STDIN_PATH: &str = "-";

impl std::fmt::Debug for LabConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LabConfig")
            .field("ports", &self.ports)
            .field("table", &self.table)
            .field("gateway", &self.gateway)
            .field("mtu", &self.mtu)
            .field("format", &self.format)
            .field("trace", &self.trace.is_some())
            .field("progress", &self.progress.is_some())
            .field("static_entries", &self.static_entries)
            .field("tunnel", &self.tunnel)
            .finish()
    }
}

/// One port: its name and the capture it receives, if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortSpec {
    pub name: String,
    pub input: Option<InputSpec>,
}

/// A capture file, and which of its interfaces to read (pcapng).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputSpec {
    pub path: PathBuf,
    pub interface: Option<InterfaceChoice>,
}

/// What a replay did.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// Every port in port-number order, the gateway (port 0) first.
    pub ports: Vec<PortOutcome>,
    /// The MAC table at the end, with port numbers.
    pub fdb: Vec<FdbEntry>,
    pub table: TableStats,
    /// Frames read from the inputs.
    pub frames_in: u64,
    /// The virtual time of the first and last frame (zero if none).
    pub first: Instant,
    pub last: Instant,
    /// Frames of non-Ethernet captures that were given an Ethernet header.
    pub headers_added: u64,
    /// Frames of non-Ethernet captures that could not be given one (not
    /// IP, or too short), and were left out.
    pub frames_skipped: u64,
    /// What a user should know about the inputs (frames cut short,
    /// timestamps out of order), one sentence each, naming the file.
    pub warnings: Vec<String>,
    /// The tunnel port's table and counters (its drops are in its port's
    /// `stats` too).
    pub tunnel: Option<(PortId, ReplayTunnelReport)>,
}

/// One port's name and counters.
#[derive(Debug, Clone)]
pub struct PortOutcome {
    pub id: PortId,
    pub name: String,
    pub stats: PortStats,
}

impl Outcome {
    /// A port's name from its number.
    pub fn port_name(&self, id: PortId) -> String {
        self.ports
            .iter()
            .find(|p| p.id == id)
            .map_or_else(|| format!("port{}", id.0), |p| p.name.clone())
    }
}

/// Replays the inputs, writing each port's output (in `config.ports` order)
/// to `outputs`. Errors name the input file and byte offset, or the port
/// whose output failed.
pub fn run(config: &LabConfig, outputs: Vec<Box<dyn Write>>) -> Result<Outcome> {
    if outputs.len() != config.ports.len() {
        bail!("{} outputs for {} ports", outputs.len(), config.ports.len());
    }
    let encoder = Encoder::new(config.format);
    let clock = Arc::new(AtomicU64::new(0));
    let engine = Engine::new(config.table);

    let mut gateway = config.gateway.map(|(address, prefix_len)| {
        let gateway = Gateway::new(address, prefix_len, Instant::ZERO);
        engine.add_local(gateway.mac(), PortId::GATEWAY);
        GatewayPort {
            gateway,
            tx: Arc::new(GatewayTx(InlineQueue::default())),
            handle: None,
            out: Vec::new(),
        }
    });
    // Frames from or to the gateway's MAC never cross the tunnel: every
    // host has the same gateway (as `serve` sets up the live tunnel).
    let tunnel = config.tunnel.as_ref().map(|spec| {
        let local_only = gateway.as_ref().map(|gw| gw.gateway.mac());
        let tunnel = LabTunnel::new(
            spec,
            local_only,
            config.table.max_age,
            config.table.capacity,
        );
        (spec.port.as_str(), Arc::new(tunnel))
    });
    let mut tunnel_port = None;

    let mut recorders = Vec::new();
    let mut handles = Vec::new();
    for (i, (spec, output)) in config.ports.iter().zip(outputs).enumerate() {
        let id = PortId(i as u32 + 1);
        let tx = Arc::new(RecordingTx {
            buf: Mutex::new(Vec::with_capacity(FLUSH_BYTES * 2)),
            clock: clock.clone(),
            encoder,
            mtu: config.mtu,
        });
        let (kind, port_tx): (PortKind, Arc<dyn PortTx>) = match &tunnel {
            Some((name, tunnel)) if *name == spec.name => {
                tunnel_port = Some((id, tunnel.clone()));
                let underlay = UnderlayTx {
                    tunnel: tunnel.clone(),
                    wire: tx.clone(),
                    clock: clock.clone(),
                    port: spec.name.clone(),
                    trace: config.trace.clone(),
                };
                (PortKind::Vxlan, Arc::new(underlay))
            }
            _ => (PortKind::Pcap, tx.clone()),
        };
        let mut header = Vec::new();
        encoder.header(&mut header, &spec.name);
        let mut recorder = Recorder {
            name: spec.name.clone(),
            tx: tx.clone(),
            output,
        };
        recorder.write(&header)?;
        recorders.push(recorder);
        handles.push(Arc::new(PortHandle {
            id,
            name: spec.name.clone(),
            kind,
            tx: port_tx,
            counters: Arc::default(),
            capture: None,
        }));
    }

    if let Some(gw) = &mut gateway {
        let handle = Arc::new(PortHandle {
            id: PortId::GATEWAY,
            name: GATEWAY_PORT_NAME.to_string(),
            kind: PortKind::Gateway,
            tx: gw.tx.clone(),
            counters: Arc::default(),
            capture: None,
        });
        handles.push(handle.clone());
        gw.handle = Some(handle);
    }
    if let (Some((name, _)), None) = (&tunnel, &tunnel_port) {
        bail!("--vxlan {name}: no port of that name");
    }
    let ports = PortSet::new(handles);
    // After the gateway's own address, so that pinning that is refused.
    for (mac, port) in &config.static_entries {
        engine
            .table()
            .add_static(*mac, *port)
            .with_context(|| format!("--static {mac}"))?;
    }

    let mut inputs = Vec::new();
    for (i, spec) in config.ports.iter().enumerate() {
        if let Some(input) = &spec.input {
            let port = ports
                .get(PortId(i as u32 + 1))
                .expect("every spec has a port")
                .clone();
            inputs.push(Input::open(input, port)?);
        }
    }

    let mut fabric = Fabric::new(config.trace.clone());
    let mut session = engine.session();
    let mut now = Instant::ZERO;
    let mut first = None;
    let mut swept_second = None;
    let mut frames_in = 0u64;
    let mut since_flush = 0usize;
    let mut vnet = VnetHdr::default();

    // Ties go to the earliest input, which is the port named first.
    while let Some(next) = inputs
        .iter()
        .enumerate()
        .filter_map(|(i, input)| input.head.map(|ts| (ts, i)))
        .min()
        .map(|(_, i)| i)
    {
        let input = &mut inputs[next];
        let stamp = input.head.expect("chosen for its head");
        now = now.max(Instant::from_nanos(stamp));
        first.get_or_insert(now);
        if !encoder.fits(now.as_nanos()) {
            bail!(
                "{}: byte {}: frame time {} is after 2106-02-07 06:28:15 UTC, which a classic \
                 pcap cannot hold: add --out-format pcapng",
                display_input(&input.path),
                input.offset,
                seconds_ns(now.as_nanos())
            );
        }
        // Aging runs on capture time: sweep when the clock passes a second.
        let second = now.as_nanos() / 1_000_000_000;
        match swept_second {
            Some(swept) if second > swept => {
                drop(session);
                engine.table().expire(now);
                session = engine.session();
                swept_second = Some(second);
            }
            Some(_) => {}
            None => swept_second = Some(second),
        }
        clock.store(now.as_nanos(), Relaxed);

        frames_in += 1;
        since_flush += input.data.len();
        // The tunnel port's input is the underlay: only what the tunnel
        // takes reaches the switch, without its outer headers.
        let inner = match &tunnel_port {
            Some((id, tunnel)) if *id == input.port.id => tunnel.receive(&input.data, now),
            _ => Ok(0..input.data.len()),
        };
        if let (Err(refused), Some(trace)) = (&inner, &config.trace) {
            trace(&format!("t={now} {}: {refused}", input.port.name));
        }
        if let Ok(inner) = inner {
            input.data.truncate(inner.end);
            input.data.drain(..inner.start);
            fabric.forward(
                &mut session,
                &ports,
                now,
                &input.port,
                &mut vnet,
                &mut input.data,
            );
        }
        vnet = VnetHdr::default();
        input.advance(now)?;
        if frames_in & (PROGRESS_FRAMES - 1) == 0
            && let Some(progress) = &config.progress
        {
            progress(frames_in, now);
        }

        if let Some(gw) = &mut gateway {
            gw.run(now, &mut fabric, &mut session, &ports);
        }
        if since_flush >= FLUSH_BYTES / 8 {
            since_flush = 0;
            for recorder in &mut recorders {
                recorder.flush_if_over(FLUSH_BYTES)?;
            }
        }
    }
    drop(session);
    engine.table().expire(now);
    let warnings = inputs.iter().flat_map(Input::warnings).collect();
    for recorder in &mut recorders {
        recorder.flush_if_over(0)?;
        recorder
            .output
            .flush()
            .with_context(|| format!("cannot write the output of port {}", recorder.name))?;
    }

    let mut port_outcomes: Vec<PortOutcome> = ports
        .iter()
        .map(|p| PortOutcome {
            id: p.id,
            name: p.name.clone(),
            stats: p.counters.snapshot(),
        })
        .collect();
    port_outcomes.sort_by_key(|p| p.id);
    let tunnel = tunnel_port.map(|(id, tunnel)| (id, tunnel.report(now)));
    if let Some((id, report)) = &tunnel
        && let Some(port) = port_outcomes.iter_mut().find(|p| p.id == *id)
    {
        add_tunnel_drops(&mut port.stats, report);
    }
    Ok(Outcome {
        ports: port_outcomes,
        fdb: engine.table().entries(now),
        table: engine.table().stats(),
        frames_in,
        first: first.unwrap_or(Instant::ZERO),
        last: now,
        headers_added: inputs.iter().map(|i| i.reader.headers_added()).sum(),
        frames_skipped: inputs.iter().map(|i| i.reader.frames_skipped()).sum(),
        warnings,
        tunnel,
    })
}

/// Counts the tunnel's drops on its port, as the switch's own are: an
/// underlay frame the tunnel refused was received and dropped, a frame it
/// had nowhere to send was meant for the port and not sent. Bytes stay
/// those of the frames the switch saw: an underlay frame is another layer.
fn add_tunnel_drops(stats: &mut PortStats, report: &ReplayTunnelReport) {
    for (reason, n) in &report.rx_drops {
        stats.rx_frames += n;
        stats.rx_dropped += n;
        *stats.drops.entry(reason.to_string()).or_default() += n;
    }
    for (reason, n) in &report.tx_drops {
        stats.tx_dropped += n;
        *stats.drops.entry(reason.to_string()).or_default() += n;
    }
}

/// An input file with its next frame read ahead (the merge compares heads).
struct Input {
    path: PathBuf,
    reader: PcapReader<BufReader<Box<dyn Read + Send>>>,
    port: Arc<PortHandle>,
    /// The next frame's timestamp; `None` at the end of the file.
    head: Option<u64>,
    data: Vec<u8>,
    offset: u64,
    /// Frames the capture cut short (its snap length was below the frame).
    cut: u64,
    /// Frames stamped earlier than the clock when they came up, handled at
    /// the clock's time instead.
    restamped: u64,
}

impl Input {
    fn open(spec: &InputSpec, port: Arc<PortHandle>) -> Result<Input> {
        let path = &spec.path;
        let source: Box<dyn Read + Send> = if path.as_os_str() == STDIN_PATH {
            Box::new(io::stdin())
        } else {
            Box::new(File::open(path).with_context(|| format!("cannot open {}", path.display()))?)
        };
        let reader = PcapReader::with_interface(
            BufReader::with_capacity(256 * 1024, source),
            spec.interface.clone(),
        )
        .with_context(|| display_input(path))?;
        let mut input = Input {
            path: path.clone(),
            reader,
            port,
            head: None,
            data: Vec::new(),
            offset: 0,
            cut: 0,
            restamped: 0,
        };
        input.advance(Instant::ZERO)?;
        Ok(input)
    }

    /// Reads the next frame; `now` is the clock after the frame just handled.
    fn advance(&mut self, now: Instant) -> Result<()> {
        match self.reader.next_frame() {
            Ok(Some(frame)) => {
                if frame.timestamp_ns < now.as_nanos() {
                    self.restamped += 1;
                }
                self.head = Some(frame.timestamp_ns);
                self.offset = frame.offset;
                self.data.clear();
                self.data.extend_from_slice(frame.data);
                if (frame.original_len as usize) > frame.data.len() {
                    self.cut += 1;
                }
            }
            Ok(None) => self.head = None,
            Err(err) => {
                return Err(anyhow::Error::new(err).context(display_input(&self.path)));
            }
        }
        Ok(())
    }

    fn warnings(&self) -> Vec<String> {
        let path = display_input(&self.path);
        let mut out = Vec::new();
        if self.cut > 0 {
            // Not an error (tcpdump -s 96 is common), but the outputs hold
            // these frames as cut, not as they were on the wire.
            out.push(format!(
                "{path}: {} cut short by the capture's snap length; replayed as captured",
                count(self.cut, "frame was", "frames were")
            ));
        }
        if self.restamped > 0 {
            out.push(format!(
                "{path}: {} stamped earlier than the clock had reached (out of order); \
                 handled at the current time, since the clock never goes back",
                count(self.restamped, "frame was", "frames were")
            ));
        }
        out
    }
}

/// An input's name in messages: its path, or "stdin" for `-`.
pub fn display_input(path: &std::path::Path) -> String {
    if path.as_os_str() == STDIN_PATH {
        "stdin".to_string()
    } else {
        path.display().to_string()
    }
}

/// A replay port's transmit side: frames become capture records in memory,
/// stamped with the virtual clock; [`Recorder`] moves them to the file.
#[derive(Debug)]
struct RecordingTx {
    buf: Mutex<Vec<u8>>,
    clock: Arc<AtomicU64>,
    encoder: Encoder,
    mtu: usize,
}

impl PortTx for RecordingTx {
    fn send(&self, _vnet: &VnetHdr, frame: &[u8]) -> io::Result<()> {
        let mut buf = self.buf.lock().unwrap_or_else(PoisonError::into_inner);
        self.encoder
            .frame(&mut buf, self.clock.load(Relaxed), frame, None)
            .map_err(|err| io::Error::new(io::ErrorKind::InvalidInput, err))
    }

    fn offloads(&self) -> bool {
        false
    }

    fn mtu(&self) -> usize {
        self.mtu
    }
}

/// Moves a port's records to its output.
struct Recorder {
    name: String,
    tx: Arc<RecordingTx>,
    output: Box<dyn Write>,
}

impl Recorder {
    fn flush_if_over(&mut self, limit: usize) -> Result<()> {
        let chunk = {
            let mut buf = self.tx.buf.lock().unwrap_or_else(PoisonError::into_inner);
            if buf.len() <= limit || buf.is_empty() {
                return Ok(());
            }
            std::mem::replace(&mut *buf, Vec::with_capacity(FLUSH_BYTES * 2))
        };
        self.write(&chunk)
    }

    fn write(&mut self, bytes: &[u8]) -> Result<()> {
        self.output
            .write_all(bytes)
            .with_context(|| format!("cannot write the output of port {}", self.name))
    }
}

/// The gateway's transmit queue: frames wait here for [`Gateway::deliver`].
#[derive(Debug, Default)]
struct InlineQueue {
    queue: Mutex<Vec<Vec<u8>>>,
    /// Set when the queue has frames: most input frames give the gateway
    /// nothing, and this saves them the lock.
    pending: AtomicBool,
}

impl GatewayQueue for InlineQueue {
    fn push(&self, frame: &[u8]) -> io::Result<()> {
        let mut queue = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
        if queue.len() >= GATEWAY_QUEUE_FRAMES {
            return Err(io::Error::new(
                io::ErrorKind::WouldBlock,
                "gateway queue full",
            ));
        }
        queue.push(frame.to_vec());
        self.pending.store(true, Relaxed);
        Ok(())
    }
}

/// The gateway and its port, run inline after each input frame.
struct GatewayPort {
    gateway: Gateway,
    tx: Arc<GatewayTx<InlineQueue>>,
    handle: Option<Arc<PortHandle>>,
    out: Vec<Vec<u8>>,
}

impl GatewayPort {
    /// Gives the gateway what the switch sent it and forwards its answers,
    /// until it is quiet. It is polled only when it was given frames: with
    /// no sockets of its own it never speaks first.
    fn run(
        &mut self,
        now: Instant,
        fabric: &mut Fabric,
        session: &mut switch::Session<'_>,
        ports: &PortSet,
    ) {
        let handle = self.handle.as_ref().expect("set at construction");
        while self.tx.0.pending.swap(false, Relaxed) {
            let delivered = std::mem::take(
                &mut *self
                    .tx
                    .0
                    .queue
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner),
            );
            for frame in &delivered {
                if !self.gateway.deliver(frame) {
                    count_refused(&handle.counters);
                }
            }
            self.gateway.poll(now, &mut self.out);
            for mut frame in self.out.drain(..) {
                let mut vnet = VnetHdr::default();
                fabric.forward(session, ports, now, handle, &mut vnet, &mut frame);
            }
        }
    }
}

/// A frame the fabric sent to the gateway port that the gateway would not
/// take (longer than its 1514-byte limit).
fn count_refused(counters: &PortCounters) {
    counters.count_drop(DropReason::TxError);
}
