//! The tunnel's receive lane: the UDP socket on the underlay, read in
//! batches; the send half is [`super::send`]. What to accept is
//! [`RemoteTable`]'s decision.

use std::io;
use std::net::UdpSocket;
use std::ops::Range;
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use super::remotes::RemoteTable;
use super::{inner_offloads, tcp_join};
use crate::batch::RxBatch;
use crate::sys::udp_gso::{Received, recv_messages};
use crate::wire::{ethernet, vxlan};
use crate::{PortRx, RxError, VnetHdr};

/// A message's slot: the largest UDP payload, so a whole frame of
/// [`crate::MAX_FRAME_LEN`] or a run of datagrams kept whole fits.
const SLOT_LEN: usize = 65_536;
/// Messages per `recvmmsg`: runs of a TCP flow come whole (`UDP_GRO`), so
/// a few slots cover a batch; each costs a slot of memory.
const MESSAGES_PER_READ: usize = 8;
/// A message this short (one datagram of an MTU-sized frame) is moved out
/// of its slot; a longer one is left where it arrived (moving it would
/// cost a copy of a run).
const SMALL_MESSAGE: usize = 4096;

/// The receive lane: decapsulates what members send.
///
/// Datagrams are read in batches (`recvmmsg`), a sender's `UDP_SEGMENT`
/// burst as one message (`UDP_GRO`), and taken apart; then handed to the
/// switch, with each run of one TCP flow's consecutive segments joined
/// into one super-frame ([`tcp_join`]) written straight into the batch.
/// What does not fit the batch waits for the next call (the batch is then
/// full, so the worker comes back at once).
#[derive(Debug)]
pub struct VxlanRx {
    socket: UdpSocket,
    table: Arc<Mutex<RemoteTable>>,
    arrived: Arrived,
    /// The largest inner IP packet (longer TCP frames are super-frames).
    mtu: usize,
}

/// The inner frames read, in one buffer.
#[derive(Debug, Default)]
struct Arrived {
    /// Kept at its largest size, so no read pays for zeroing it.
    bytes: Vec<u8>,
    /// How much of `bytes` the frames read fill.
    used: usize,
    frames: Vec<(VnetHdr, Range<usize>)>,
    /// How many of `frames` the switch has had.
    delivered: usize,
    messages: [Received; MESSAGES_PER_READ],
}

impl Arrived {
    fn clear(&mut self) {
        self.used = 0;
        self.frames.clear();
        self.delivered = 0;
    }

    /// Receives up to `count` messages into slots after the frames kept.
    fn receive(&mut self, socket: &UdpSocket, count: usize) -> io::Result<usize> {
        let end = self.used + count * SLOT_LEN;
        if self.bytes.len() < end {
            self.bytes.resize(end, 0);
        }
        recv_messages(
            socket.as_fd(),
            &mut self.bytes[self.used..end],
            SLOT_LEN,
            &mut self.messages[..count],
        )
    }
}

impl VxlanRx {
    pub(super) fn new(socket: UdpSocket, table: Arc<Mutex<RemoteTable>>, mtu: usize) -> VxlanRx {
        // Best effort: without it (Linux before 5.0) a burst arrives as
        // one message per datagram, which the reads handle all the same.
        let _ = crate::sys::udp_gso::enable_gro(socket.as_fd());
        VxlanRx {
            socket,
            table,
            arrived: Arrived::default(),
            mtu,
        }
    }

    /// Reads and decapsulates datagrams until there are `limit` frames or
    /// the socket is empty; true when it was.
    fn read(&mut self, limit: usize) -> Result<bool, RxError> {
        let arrived = &mut self.arrived;
        arrived.clear();
        while arrived.frames.len() < limit {
            let want = (limit - arrived.frames.len()).min(MESSAGES_PER_READ);
            let got = match arrived.receive(&self.socket, want) {
                Ok(got) => got,
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => return Ok(true),
                // An ICMP error for an earlier send (a member gone away)
                // surfaces here; it says nothing about this socket.
                Err(err) if err.kind() == io::ErrorKind::ConnectionRefused => continue,
                Err(err) => return Err(RxError::Io(err)),
            };
            let now = Instant::now();
            let base = arrived.used;
            for (i, message) in arrived.messages[..got].iter().enumerate() {
                let Some(source) = message.source else {
                    continue;
                };
                let mut start = base + i * SLOT_LEN;
                if message.len <= SMALL_MESSAGE {
                    // Moved down behind the frames kept, so small datagrams
                    // do not each keep a slot's memory in use.
                    let len = message.len;
                    arrived.bytes.copy_within(start..start + len, arrived.used);
                    start = arrived.used;
                }
                let bytes = &arrived.bytes[start..start + message.len];
                let first = arrived.frames.len();
                // The table's lock only for its verdicts: the send half
                // (another worker's acknowledgements) takes it too.
                let mut table = self.table.lock().unwrap_or_else(PoisonError::into_inner);
                // A switch's datagrams carry a UDP checksum, which the
                // kernel verified over every byte before this read.
                let covered = table.is_switch_at(source.ip());
                let mut taken: Option<Range<usize>> = None;
                for datagram in datagrams(bytes, message.segment) {
                    let this = &bytes[datagram.clone()];
                    let like = taken
                        .as_ref()
                        .and_then(|previous| table.receive_like(&bytes[previous.clone()], this));
                    let offset = match like {
                        Some(offset) => offset,
                        None => match table.receive(source, this, now) {
                            Ok(offset) => {
                                taken = Some(datagram.clone());
                                offset
                            }
                            Err(_) => continue,
                        },
                    };
                    let frame = start + datagram.start + offset..start + datagram.end;
                    arrived.frames.push((VnetHdr::default(), frame));
                }
                drop(table);
                for (vnet, frame) in &mut arrived.frames[first..] {
                    *vnet =
                        inner_offloads::vnet_for(&arrived.bytes[frame.clone()], self.mtu, covered);
                }
                arrived.used = start + message.len;
            }
            if got < want {
                // recvmmsg stops early only when the queue ran dry.
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Hands the frames read to the batch, runs joined, until it is full.
    fn deliver(&mut self, batch: &mut RxBatch) {
        let Arrived {
            bytes,
            frames,
            delivered,
            ..
        } = &mut self.arrived;
        if *delivered == frames.len() {
            return;
        }
        let frames: Vec<(VnetHdr, &[u8])> = frames[*delivered..]
            .iter()
            .map(|(vnet, range)| (*vnet, &bytes[range.clone()]))
            .collect();
        let mut at = 0;
        while at < frames.len() && batch.len() < batch.capacity() {
            let run = tcp_join::run_length(&frames[at..]);
            if run > 1 {
                let slot = batch.free_buffers().next().unwrap_or_default();
                if let Some(joined) = tcp_join::merge(&frames[at..at + run], slot) {
                    batch.commit(joined.len, joined.vnet);
                    at += joined.segments;
                    continue;
                }
            }
            let (vnet, frame) = frames[at];
            // A frame longer than a slot cannot be taken; it is lost.
            let _ = batch.push(vnet, frame);
            at += 1;
        }
        *delivered += at;
    }
}

/// Where the datagrams of one received message are: `segment` bytes each
/// when the kernel handed over a run (`UDP_GRO`), else the whole message.
///
/// A kernel `vxlan` device's tunnel super-datagram (one inner GSO frame
/// under one VXLAN header) comes with a GRO size too, its inner segment
/// size: it is told apart by its inner IP packet, which fills the whole
/// message, where a run's first inner packet ends at the first segment.
fn datagrams(message: &[u8], segment: Option<usize>) -> impl Iterator<Item = Range<usize>> {
    let len = message.len();
    let step = match segment {
        Some(size) if size < len && inner_datagram_len(message) != Some(len) => size,
        _ => len.max(1),
    };
    (0..len)
        .step_by(step)
        .map(move |start| start..(start + step).min(len))
}

/// The length of a VXLAN datagram as its inner IPv4 or IPv6 header says
/// (after at most one VLAN tag), if it has one.
fn inner_datagram_len(datagram: &[u8]) -> Option<usize> {
    let frame = datagram.get(vxlan::HEADER_LEN..)?;
    let mut ethertype_at = 12;
    let mut ethertype = u16::from_be_bytes(frame.get(12..14)?.try_into().ok()?);
    if ethertype == ethernet::ethertype::VLAN {
        ethertype_at += 4;
        ethertype = u16::from_be_bytes(frame.get(16..18)?.try_into().ok()?);
    }
    let ip = ethertype_at + 2;
    let ip_len = match ethertype {
        ethernet::ethertype::IPV4 => usize::from(u16::from_be_bytes(
            frame.get(ip + 2..ip + 4)?.try_into().ok()?,
        )),
        ethernet::ethertype::IPV6 => {
            40 + usize::from(u16::from_be_bytes(
                frame.get(ip + 4..ip + 6)?.try_into().ok()?,
            ))
        }
        _ => return None,
    };
    Some(vxlan::HEADER_LEN + ip + ip_len)
}

impl PortRx for VxlanRx {
    /// Reads until the batch is full or the socket empty: a batch that
    /// joining left short must not look like an empty socket, or the
    /// worker would wait for the next datagram with these still queued.
    fn recv_batch(&mut self, batch: &mut RxBatch) -> Result<usize, RxError> {
        batch.clear();
        loop {
            // What an earlier call read first: the batch was full then.
            self.deliver(batch);
            if batch.len() == batch.capacity() {
                break;
            }
            let drained = self.read(batch.capacity() - batch.len())?;
            self.deliver(batch);
            if drained || batch.len() == batch.capacity() {
                break;
            }
        }
        Ok(batch.len())
    }

    fn raw_fd(&self) -> Option<RawFd> {
        Some(self.socket.as_raw_fd())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A VXLAN datagram around an IPv4 packet of `ip_len` bytes.
    fn vxlan_ipv4(ip_len: usize) -> Vec<u8> {
        let mut datagram = vxlan::header(7).to_vec();
        datagram.extend_from_slice(&[2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2, 0x08, 0x00]);
        let mut ip = vec![0u8; ip_len];
        ip[0] = 0x45;
        ip[2..4].copy_from_slice(&(ip_len as u16).to_be_bytes());
        datagram.extend(ip);
        datagram
    }

    #[test]
    fn a_run_received_whole_is_taken_apart_at_its_segment_size() {
        let mut message = Vec::new();
        for _ in 0..3 {
            message.extend(vxlan_ipv4(1400));
        }
        message.extend(vxlan_ipv4(600));
        let one = 1400 + 22;
        let pieces: Vec<_> = datagrams(&message, Some(one)).collect();
        assert_eq!(
            pieces,
            vec![
                0..one,
                one..2 * one,
                2 * one..3 * one,
                3 * one..message.len()
            ]
        );
        // Without a GRO size, or one datagram only: the whole message.
        assert_eq!(
            datagrams(&message, None).collect::<Vec<_>>(),
            vec![0..message.len()]
        );
        let single = vxlan_ipv4(100);
        assert_eq!(
            datagrams(&single, Some(122)).collect::<Vec<_>>(),
            vec![0..122]
        );
        assert_eq!(datagrams(&[], Some(100)).count(), 0);
    }

    #[test]
    fn a_kernel_tunnel_super_datagram_stays_whole_despite_its_gro_size() {
        // One inner 64 KiB TCP frame, its GRO size the inner MSS.
        let whole = vxlan_ipv4(60_000);
        assert_eq!(inner_datagram_len(&whole), Some(whole.len()));
        assert_eq!(
            datagrams(&whole, Some(1448)).collect::<Vec<_>>(),
            vec![0..whole.len()]
        );
        // With a VLAN tag, and over IPv6.
        let mut tagged = vxlan::header(7).to_vec();
        tagged.extend_from_slice(&[
            2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2, 0x81, 0, 0, 5, 0x86, 0xdd,
        ]);
        let mut ip = vec![0u8; 40 + 30_000];
        ip[4..6].copy_from_slice(&30_000u16.to_be_bytes());
        tagged.extend(ip);
        assert_eq!(
            datagrams(&tagged, Some(1400)).collect::<Vec<_>>(),
            vec![0..tagged.len()]
        );
        // Not IP (ARP): cut at the GRO size.
        let mut arp = vxlan_ipv4(28);
        arp[8 + 12..8 + 14].copy_from_slice(&[0x08, 0x06]);
        let two = [arp.clone(), arp].concat();
        assert_eq!(datagrams(&two, Some(50)).count(), 2);
    }
}
