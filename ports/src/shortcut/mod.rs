//! The kernel shortcut: known unicast between two `--iface` ports (veth
//! ends, read through packet sockets, see [`crate::packet`]) forwarded by
//! the kernel, never copied through the switch.
//!
//! Without it every frame between two such ports goes up a packet socket
//! to a worker and down another port's socket. With it, a TCX ingress
//! program on each port's interface (BPF_PROG_TYPE_SCHED_CLS, attached
//! with BPF_LINK_CREATE as BPF_TCX_INGRESS, Linux 6.6+) redirects a frame
//! to the egress of its destination's port (`bpf_redirect(ifindex, 0)`;
//! `BPF_F_PEER`, straight into the container's namespace, was measured to
//! cause more TCP retransmits) when both its addresses are in a map the
//! switch keeps:
//!
//! - `macs` (BPF_MAP_TYPE_HASH): key = the MAC and 2 zero bytes; value =
//!   `{ ifindex: u32, flags: u32 (0), last_seen_ns: u64 }`, for as many
//!   addresses as [`KernelShortcut::new`] is told.
//! - `counters` (BPF_MAP_TYPE_PERCPU_HASH): key = ifindex; value =
//!   `{ rx_frames, rx_bytes, tx_frames, tx_bytes }` (u64 each), per CPU,
//!   for up to [`MAX_PORTS`] ports. An attached port has an entry; the
//!   kernel counts only there.
//!
//! The decision, on a frame arriving on port P:
//!
//! 1. Shorter than 14 bytes (a runt, which the switch drops and counts):
//!    not ours.
//! 2. A UDP datagram (IPv4, or IPv6 without extension headers): not ours.
//!    The switch sends a run of one flow's datagrams as one super-frame
//!    ([`crate::coalesce`]), which measured faster than the kernel's one
//!    at a time for small ones (docs/PERFORMANCE.md). Looked at before the
//!    map, so a datagram costs no lookup.
//! 3. Destination or source not in `macs`: not ours. A group address is
//!    never in it ([`KernelShortcut::set`] refuses one), so broadcast and
//!    multicast always reach the switch, as do the first frames of a
//!    conversation, which the switch learns from.
//! 4. The source is in `macs` on another port than P: the host moved. Not
//!    ours, and its entry is deleted, so the switch (which gets the frame)
//!    learns the move before the kernel forwards for that host again.
//! 5. The destination is on P (hairpin): not ours (the switch drops and
//!    counts it).
//! 6. Otherwise ours: the source's `last_seen_ns` becomes now
//!    (`bpf_ktime_get_ns`, CLOCK_MONOTONIC: see [`KernelShortcut::now_ns`]),
//!    `counters[P]` counts it received and `counters[destination]` sent,
//!    and it leaves by the destination's interface.
//!
//! Packet taps run before TCX ingress (`__netif_receive_skb_core`), so the
//! switch's sockets on P would get a copy of every frame the kernel
//! forwards. A socket filter (SO_ATTACH_BPF) on each of them makes the
//! decision and drops exactly those, and leaves its verdict for the TCX
//! program; it is also the one that deletes a moved source's entry (it
//! runs first). Both programs are eBPF written out instruction by
//! instruction in [`program`]: nothing but the Rust toolchain is needed to
//! build this, and nothing but the kernel to run it.
//!
//! Everything else is the switch's, as before: while a host is not in the
//! map (not learned yet, moved, aged out, or removed because the switch
//! wants to see its frames, as while tracing) its frames reach the
//! workers. A frame already past the decision while the map changes goes
//! by the old entry; the Linux bridge has the same window. The two
//! programs run one after the other, so the TCX program follows the
//! verdict the filter left in the frame's control block rather than
//! looking at the map again: a change between them cannot forward a frame
//! twice or lose it ([`program`]).
//!
//! The filter counts on its sockets never seeing frames leaving the
//! interface (PACKET_IGNORE_OUTGOING, which [`crate::packet`] sets): to it,
//! a frame the switch or the kernel sends out of P from a host on another
//! port would look like a host that moved to P.
//!
//! Attaching ([`KernelShortcut::attach`]) puts the filter on the sockets
//! before the TCX program on the interface; the [`ShortcutLink`] it returns
//! takes them off in the reverse order when dropped. So the kernel never
//! forwards a frame the switch also gets; remove the port's addresses from
//! the map first (as the switch does) and no frame is lost either.
//!
//! Loading needs CAP_BPF and CAP_NET_ADMIN (root has both); rootless mode
//! has neither and gets [`ShortcutError::NotPermitted`]. A kernel without
//! TCX (before 6.6, or without CONFIG_NET_XGRESS) loads the programs but
//! refuses to attach: [`ShortcutError::Unsupported`].

mod program;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::Arc;

use crate::ledger::LaneLedger;
use crate::sys::bpf::{self, ProgType};
use crate::sys::bpf_map::{self, BatchCursor, Map, MapType};
use crate::wire::MacAddr;
use program::VerdictTag;

/// The most ports the `counters` map holds.
pub const MAX_PORTS: u32 = 4096;

/// Bytes of a `macs` key (the MAC, 2 zero bytes) and value.
const MAC_KEY_LEN: usize = 8;
const MAC_VALUE_LEN: usize = 16;
/// Bytes of one CPU's `counters` value.
const COUNTERS_LEN: usize = 32;

/// Addresses [`KernelShortcut::entries`] reads per system call (6 KiB of
/// buffers), and the most it grows to when one hash bucket holds more.
const ENTRIES_PER_BATCH: usize = 256;
const MAX_BATCH: usize = 1 << 16;

/// The kernel shortcut of one switch: its two maps and two loaded
/// programs. Dropping it unloads them (once every [`ShortcutLink`] made
/// from it is dropped too).
#[derive(Debug)]
pub struct KernelShortcut {
    macs: Map,
    counters: Arc<Map>,
    tc: OwnedFd,
    filter: OwnedFd,
    /// What marks the verdicts this shortcut's filters leave for its TCX
    /// program ([`program`]).
    tag: VerdictTag,
    capacity: u32,
}

/// One port's attachment: the socket filter on its packet sockets and the
/// TCX program on its interface. Dropping it detaches both (the TCX
/// program first; closing the link's descriptor detaches it) and deletes
/// the port's counters. It holds duplicates of the port's sockets (to take
/// the filter off them), so drop it with the port.
#[derive(Debug)]
pub struct ShortcutLink {
    name: String,
    ifindex: u32,
    counters: Arc<Map>,
    sockets: Vec<OwnedFd>,
    tcx: Option<OwnedFd>,
    /// The ledger the filters on `sockets` count in, held until they are
    /// detached (see `ledger/book.rs`).
    _ledger: Option<Arc<LaneLedger>>,
}

/// What the shortcut needs of a port to attach to it: its interface (in
/// the switch's network namespace), MTU, and (duplicates of) every packet
/// socket it is read through. [`crate::packet::open_lanes`] makes one;
/// drop it once attached, or the sockets stay open with it.
#[derive(Debug)]
pub struct KernelPath {
    name: String,
    ifindex: u32,
    mtu: u32,
    sockets: Vec<OwnedFd>,
    /// The ledger the sockets' fanout group is steered with: the filter
    /// counts what it drops there (one filter per socket, then).
    ledger: Option<Arc<LaneLedger>>,
}

/// What the kernel forwarded for one port, over all CPUs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ShortcutCounters {
    pub rx_frames: u64,
    pub rx_bytes: u64,
    pub tx_frames: u64,
    pub tx_bytes: u64,
}

/// One address of the `macs` map.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShortcutEntry {
    /// The interface frames to this address leave by.
    pub ifindex: u32,
    /// When the kernel last forwarded a frame from this address
    /// ([`KernelShortcut::now_ns`]'s clock); 0 if it never has.
    pub last_seen_ns: u64,
}

/// Why the shortcut could not do something. One line each, naming the
/// step (and the interface) that failed.
#[derive(Debug, thiserror::Error)]
pub enum ShortcutError {
    #[error(
        "kernel shortcut: not permitted while {doing}; it needs CAP_BPF and CAP_NET_ADMIN \
         (run as root; rootless mode has neither)"
    )]
    NotPermitted { doing: String },
    #[error("kernel shortcut: {doing}: this kernel has no {needs}")]
    Unsupported { doing: String, needs: &'static str },
    #[error(
        "kernel shortcut: the kernel rejected the {program} program: {}",
        why_rejected(source, log)
    )]
    Rejected {
        program: &'static str,
        source: io::Error,
        /// The verifier's whole log.
        log: String,
    },
    #[error("kernel shortcut: its map is full ({capacity} addresses); {mac} stays with the switch")]
    Full { capacity: u32, mac: MacAddr },
    #[error("kernel shortcut: {mac} is a group address; only unicast ones can be forwarded")]
    NotUnicast { mac: MacAddr },
    #[error("kernel shortcut: failed while {doing}: {source}")]
    Io { doing: String, source: io::Error },
}

impl ShortcutError {
    /// Types an OS error from step `doing`.
    fn from_io(doing: impl Into<String>, err: io::Error) -> ShortcutError {
        let doing = doing.into();
        match err.raw_os_error() {
            Some(libc::EPERM) | Some(libc::EACCES) => ShortcutError::NotPermitted { doing },
            _ => ShortcutError::Io { doing, source: err },
        }
    }

    /// Types a failed program load: EPERM with nothing from the verifier
    /// is missing privileges (the verifier's own refusals are EACCES or
    /// EINVAL, with a log).
    fn from_load(program: &'static str, err: bpf::LoadError) -> ShortcutError {
        if err.log.is_empty() && err.error.raw_os_error() == Some(libc::EPERM) {
            return ShortcutError::NotPermitted {
                doing: format!("loading the {program} program"),
            };
        }
        ShortcutError::Rejected {
            program,
            source: err.error,
            log: err.log,
        }
    }
}

/// The verifier's last three lines (where it says why), on one line,
/// without its closing statistics ("processed N insns ..."); the error
/// alone if it said nothing.
fn why_rejected(error: &io::Error, log: &str) -> String {
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with("processed "))
        .collect();
    if lines.is_empty() {
        return error.to_string();
    }
    format!(
        "the verifier says: {}",
        lines[lines.len().saturating_sub(3)..].join(" | ")
    )
}

impl KernelPath {
    pub(crate) fn new(
        name: &str,
        ifindex: u32,
        mtu: u32,
        sockets: Vec<OwnedFd>,
        ledger: Option<Arc<LaneLedger>>,
    ) -> KernelPath {
        KernelPath {
            name: name.to_string(),
            ifindex,
            mtu,
            sockets,
            ledger,
        }
    }

    /// The interface's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The interface's index in the switch's network namespace.
    pub fn ifindex(&self) -> u32 {
        self.ifindex
    }

    /// The interface's MTU when the port was opened.
    pub fn mtu(&self) -> u32 {
        self.mtu
    }
}

fn mac_key(mac: MacAddr) -> [u8; MAC_KEY_LEN] {
    let mut key = [0u8; MAC_KEY_LEN];
    key[..6].copy_from_slice(&mac.0);
    key
}

/// The u64 at byte `at` of `bytes` (native byte order, as the programs
/// read and write it).
fn u64_at(bytes: &[u8], at: usize) -> u64 {
    let mut word = [0u8; 8];
    word.copy_from_slice(&bytes[at..at + 8]);
    u64::from_ne_bytes(word)
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    let mut word = [0u8; 4];
    word.copy_from_slice(&bytes[at..at + 4]);
    u32::from_ne_bytes(word)
}

impl KernelShortcut {
    /// Makes the maps (`macs` for `capacity` addresses) and loads both
    /// programs.
    pub fn new(capacity: u32) -> Result<KernelShortcut, ShortcutError> {
        let capacity = capacity.max(1);
        let macs = Map::create(
            MapType::Hash,
            "tapsw_macs",
            MAC_KEY_LEN as u32,
            MAC_VALUE_LEN as u32,
            capacity,
        )
        .map_err(|err| ShortcutError::from_io("making the MAC map", err))?;
        let counters = Map::create(
            MapType::PercpuHash,
            "tapsw_counters",
            4,
            COUNTERS_LEN as u32,
            MAX_PORTS,
        )
        .map_err(|err| ShortcutError::from_io("making the counters map", err))?;
        let macs_fd = macs.fd().as_raw_fd();
        let tag = VerdictTag::random();
        let filter = bpf::load_program(
            ProgType::SocketFilter,
            "tapsw_filter",
            &program::socket_filter(macs_fd, tag, None),
        )
        .map_err(|err| ShortcutError::from_load("socket filter", err))?;
        let tc = bpf::load_program(
            ProgType::SchedCls,
            "tapsw_tc_in",
            &program::tc_ingress(macs_fd, counters.fd().as_raw_fd(), tag),
        )
        .map_err(|err| ShortcutError::from_load("TCX ingress", err))?;
        Ok(KernelShortcut {
            macs,
            counters: Arc::new(counters),
            tc,
            filter,
            tag,
            capacity,
        })
    }

    /// How many addresses the map holds at most.
    pub fn capacity(&self) -> u32 {
        self.capacity
    }

    /// Attaches the shortcut to the port `path` describes: makes its
    /// counters (zero), puts the filter on every one of its sockets, then
    /// the TCX program on its interface. On failure nothing stays
    /// attached. One link per port at a time.
    pub fn attach(&self, path: &KernelPath) -> Result<ShortcutLink, ShortcutError> {
        let on = |what: &str| format!("{what} {} (ifindex {})", path.name, path.ifindex);
        // Built up step by step: dropped on an early return, it undoes
        // whatever was done.
        let mut link = ShortcutLink {
            name: path.name.clone(),
            ifindex: path.ifindex,
            counters: self.counters.clone(),
            sockets: Vec::with_capacity(path.sockets.len()),
            tcx: None,
            _ledger: path.ledger.clone(),
        };
        let zeros = vec![0u8; self.counters.value_size()];
        self.counters
            .update(&path.ifindex.to_ne_bytes(), &zeros)
            .map_err(|err| ShortcutError::from_io(on("making the counters of"), err))?;
        for (lane, socket) in path.sockets.iter().enumerate() {
            let socket = socket
                .try_clone()
                .map_err(|err| ShortcutError::from_io(on("duplicating a socket of"), err))?;
            let counting = match &path.ledger {
                Some(ledger) => Some(self.lane_filter(ledger, lane)?),
                None => None,
            };
            let filter = counting.as_ref().unwrap_or(&self.filter);
            bpf::attach_socket_filter(socket.as_fd(), filter.as_fd()).map_err(|err| {
                ShortcutError::from_io(on("attaching the socket filter to a socket of"), err)
            })?;
            link.sockets.push(socket);
        }
        let tcx = bpf::attach_tcx_ingress(self.tc.as_fd(), path.ifindex).map_err(|err| {
            let doing = on("attaching the TCX ingress program to");
            if err.raw_os_error() == Some(libc::EINVAL) {
                ShortcutError::Unsupported {
                    doing,
                    needs: "TCX (Linux 6.6 or later, with CONFIG_NET_XGRESS)",
                }
            } else {
                ShortcutError::from_io(doing, err)
            }
        })?;
        link.tcx = Some(tcx);
        Ok(link)
    }

    /// The socket filter for lane `lane` of a port steered with `ledger`:
    /// every frame it drops was counted queued in that lane, and is counted
    /// taken (see [`crate::ledger`]).
    fn lane_filter(&self, ledger: &LaneLedger, lane: usize) -> Result<OwnedFd, ShortcutError> {
        let counts = (ledger.map_fd(), ledger.taken_offset(lane));
        bpf::load_program(
            ProgType::SocketFilter,
            "tapsw_filter",
            &program::socket_filter(self.macs.fd().as_raw_fd(), self.tag, Some(counts)),
        )
        .map_err(|err| ShortcutError::from_load("socket filter", err))
    }

    /// Frames to `mac` leave by interface `ifindex` (once their source is
    /// in the map too). Replaces the entry if `mac` was elsewhere, with
    /// `last_seen_ns` 0; an entry already on `ifindex` is left as it is,
    /// so its `last_seen_ns` stays.
    pub fn set(&self, mac: MacAddr, ifindex: u32) -> Result<(), ShortcutError> {
        if mac.is_group() {
            return Err(ShortcutError::NotUnicast { mac });
        }
        let key = mac_key(mac);
        let mut value = [0u8; MAC_VALUE_LEN];
        let found = self
            .macs
            .lookup(&key, &mut value)
            .map_err(|err| ShortcutError::from_io(format!("looking up {mac}"), err))?;
        if found && u32_at(&value, 0) == ifindex {
            return Ok(());
        }
        let mut value = [0u8; MAC_VALUE_LEN];
        value[..4].copy_from_slice(&ifindex.to_ne_bytes());
        self.macs.update(&key, &value).map_err(|err| {
            if err.raw_os_error() == Some(libc::E2BIG) {
                ShortcutError::Full {
                    capacity: self.capacity,
                    mac,
                }
            } else {
                ShortcutError::from_io(format!("setting {mac} on ifindex {ifindex}"), err)
            }
        })
    }

    /// Takes `mac` out of the map (its frames go to the switch again); Ok
    /// if it was not there.
    pub fn remove(&self, mac: MacAddr) -> Result<(), ShortcutError> {
        self.macs
            .delete(&mac_key(mac))
            .map(|_| ())
            .map_err(|err| ShortcutError::from_io(format!("removing {mac}"), err))
    }

    /// Every address in the map, in address order. Read in batches of
    /// whole hash buckets (BPF_MAP_LOOKUP_BATCH: a system call per
    /// [`ENTRIES_PER_BATCH`] addresses, not two per address) while the
    /// kernel may delete some (a moved host): an address deleted meanwhile
    /// may be missing, none is listed twice.
    pub fn entries(&self) -> Result<Vec<(MacAddr, ShortcutEntry)>, ShortcutError> {
        let failed = |err| ShortcutError::from_io("reading the MAC map", err);
        let mut found = BTreeMap::new();
        let mut room = ENTRIES_PER_BATCH;
        let mut keys = vec![0u8; room * MAC_KEY_LEN];
        let mut values = vec![0u8; room * MAC_VALUE_LEN];
        let mut cursor = BatchCursor::default();
        loop {
            let batch = match self.macs.lookup_batch(&mut cursor, &mut keys, &mut values) {
                Ok(batch) => batch,
                // One bucket holds more than the buffers: larger ones.
                Err(err) if err.raw_os_error() == Some(libc::ENOSPC) && room < MAX_BATCH => {
                    room *= 4;
                    keys.resize(room * MAC_KEY_LEN, 0);
                    values.resize(room * MAC_VALUE_LEN, 0);
                    continue;
                }
                Err(err) => return Err(failed(err)),
            };
            let entries = keys
                .chunks_exact(MAC_KEY_LEN)
                .zip(values.chunks_exact(MAC_VALUE_LEN));
            for (key, value) in entries.take(batch.count) {
                let entry = ShortcutEntry {
                    ifindex: u32_at(value, 0),
                    last_seen_ns: u64_at(value, 8),
                };
                found.insert(MacAddr::from_slice(&key[..6]), entry);
            }
            if batch.last {
                return Ok(found.into_iter().collect());
            }
        }
    }

    /// What the kernel forwarded for interface `ifindex` since it was
    /// attached, over all CPUs; zeros if it is not attached.
    pub fn counters(&self, ifindex: u32) -> Result<ShortcutCounters, ShortcutError> {
        let mut value = vec![0u8; self.counters.value_size()];
        let found = self
            .counters
            .lookup(&ifindex.to_ne_bytes(), &mut value)
            .map_err(|err| {
                ShortcutError::from_io(format!("reading the counters of ifindex {ifindex}"), err)
            })?;
        let mut sum = ShortcutCounters::default();
        if found {
            for cpu in value.chunks_exact(COUNTERS_LEN) {
                sum.rx_frames += u64_at(cpu, 0);
                sum.rx_bytes += u64_at(cpu, 8);
                sum.tx_frames += u64_at(cpu, 16);
                sum.tx_bytes += u64_at(cpu, 24);
            }
        }
        Ok(sum)
    }

    /// Now on the clock `last_seen_ns` is read from (CLOCK_MONOTONIC, as
    /// `bpf_ktime_get_ns` reads it), in nanoseconds: `now_ns() -
    /// last_seen_ns` is how long ago the kernel last heard an address.
    pub fn now_ns() -> u64 {
        bpf_map::monotonic_ns()
    }
}

impl ShortcutLink {
    /// The interface the link is on.
    pub fn ifindex(&self) -> u32 {
        self.ifindex
    }
}

impl Drop for ShortcutLink {
    /// The TCX program leaves first: from then on the kernel forwards
    /// nothing that arrives here, and the filter, leaving next, drops
    /// nothing the switch then needs (with the port's addresses out of the
    /// map, it drops nothing at all). Then the counters go.
    fn drop(&mut self) {
        drop(self.tcx.take());
        for socket in &self.sockets {
            if let Err(err) = bpf::detach_socket_filter(socket.as_fd()) {
                log::warn!(
                    "kernel shortcut: taking the socket filter off {}: {err}",
                    self.name
                );
            }
        }
        if let Err(err) = self.counters.delete(&self.ifindex.to_ne_bytes()) {
            log::warn!(
                "kernel shortcut: deleting the counters of {}: {err}",
                self.name
            );
        }
    }
}
