//! The gateway: a tiny IPv4 host on the switch's internal port.
//!
//! Docker's `docker0` carries the gateway address (172.17.0.1) on the bridge
//! itself. Here a smoltcp `Interface` plays that part. It is just another
//! port to the engine: its MAC is a local entry in the MAC table, broadcasts
//! flood to it, and what it sends is switched like any port's frames.
//!
//! It answers ARP for its own address (never for anyone else's: smoltcp's
//! `any_ip` stays off) and ICMP echo to its own address. Its queues are plain
//! in-memory frame lists, so the live switch (on its own thread) and `replay`
//! (inline, on virtual time) drive the very same code.
//!
//! # The link
//!
//! A [`GatewayLink`] says what crosses the gateway port. Replay's gateway
//! (`GatewayLink::PLAIN`) takes and sends plain 1514-byte frames. The live
//! switch's gateway has the network's MTU (`network create --mtu`) and
//! offloads, as a virtio-net device has them:
//!
//! - **In**, a TCP super-frame from a container's TSO may be handed over
//!   whole ([`Gateway::deliver_segment`]), its checksum completed by the
//!   caller: smoltcp takes a segment of any size that fits its receive
//!   window, so 64 KiB cross as one segment, one copy and one ACK instead
//!   of 45. Other frames must be plain and at most the MTU long.
//! - **Out**, smoltcp's TCP leaves checksums to the device and sends up to
//!   64 KiB per segment with a segment size for the device to cut by
//!   (smoltcp's `segmentation-offload`); [`Gateway::poll_offloaded`] gives
//!   each frame its virtio-net header (partial checksum, GSO), so the
//!   switch passes it whole to a container's port that takes offloads and
//!   cuts it in software only for one that does not.
//!
//! # Larger than the MTU
//!
//! As Linux's bridge address does, the gateway answers a ping larger than
//! the MTU: the services reassemble the request's fragments and hand it
//! over whole ([`Gateway::deliver_reassembled`]), and smoltcp cuts the
//! reply into fragments at the MTU (`proto-ipv4-fragmentation`, its buffer
//! sized for the largest IPv4 packet). smoltcp cuts one datagram at a time,
//! one fragment per egress pass, and a second reply larger than the MTU
//! in the same pass would overwrite the first's unsent fragments; so the
//! gateway takes received frames one at a time and sends every fragment
//! of a reply before the next ([`Gateway::poll`]), each step against an
//! empty socket set so that it costs nothing per socket.

use std::collections::VecDeque;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::num::{NonZeroU16, NonZeroUsize};
use std::time::Duration;

use ports::VnetHdr;
use smoltcp::iface::{
    Config, Interface, PollIngressSingleResult, PollResult, SocketHandle, SocketSet,
};
use smoltcp::phy::{self, Checksum, DeviceCapabilities, Medium, PacketMeta};
use smoltcp::socket::tcp;
use smoltcp::wire::{EthernetAddress, HardwareAddress, IpAddress, IpCidr, IpListenEndpoint};

use crate::mac::MacAddr;
use crate::time::Instant;

/// Frames waiting for the gateway; beyond this a burst (a broadcast storm)
/// is dropped rather than queued without bound.
pub const GATEWAY_QUEUE_FRAMES: usize = 256;

/// The largest frame a plain gateway sends or takes: a 1500-byte IP MTU.
pub const GATEWAY_FRAME_MAX: usize = 1514;

/// Buffer bytes of the closed TCP sockets kept, buffers and all, for the
/// next flows: a new flow's socket then costs no fresh buffer mappings
/// (nor their page faults and unmapping). Bounded, because a kept
/// buffer's touched pages stay resident: 16 sockets of 256 KiB each way.
const SPARE_TCP_BYTES: usize = 8 * 1024 * 1024;

/// The Ethernet header, which smoltcp counts in a device's MTU.
const ETHERNET_HEADER: usize = 14;
/// The largest IPv4 packet (its 16-bit total length): the most a TCP
/// super-frame carries, in and out.
const IPV4_MAX: usize = 65_535;
/// The most fragments one IPv4 packet is cut into (8 payload bytes each),
/// and one more step for smoltcp to clear its buffer: a bound on the
/// steps that send one reply's fragments.
const FRAGMENT_STEPS_MAX: usize = IPV4_MAX / 8 + 2;

/// What crosses the gateway's port. See the module documentation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GatewayLink {
    /// The largest IP packet of a plain frame: the network's MTU.
    pub mtu: usize,
    /// TCP super-frames whole and checksums partial, in and out.
    pub offloads: bool,
}

impl GatewayLink {
    /// Plain 1514-byte frames, as replay's gateway has them.
    pub const PLAIN: GatewayLink = GatewayLink {
        mtu: GATEWAY_FRAME_MAX - ETHERNET_HEADER,
        offloads: false,
    };

    /// The live switch's link: the network's MTU, with offloads.
    pub fn offloaded(mtu: usize) -> GatewayLink {
        GatewayLink {
            mtu,
            offloads: true,
        }
    }

    /// The longest plain frame the link carries.
    pub fn frame_max(&self) -> usize {
        self.mtu + ETHERNET_HEADER
    }
}

/// The gateway host. See the module documentation.
pub struct Gateway {
    /// Boxed: with its fragmentation buffer it is over 64 KiB.
    iface: Box<Interface>,
    device: FrameQueues,
    sockets: SocketSet<'static>,
    /// Always empty: the sockets smoltcp visits while it only sends the
    /// rest of a fragmented reply (see the module documentation).
    no_sockets: SocketSet<'static>,
    /// Closed TCP sockets for reuse, and their buffers' bytes (see
    /// [`SPARE_TCP_BYTES`]).
    spare_tcp: Vec<tcp::Socket<'static>>,
    spare_tcp_bytes: usize,
    mac: MacAddr,
    address: Ipv4Addr,
    prefix_len: u8,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Gateway({}/{} at {})",
            self.address, self.prefix_len, self.mac
        )
    }
}

impl Gateway {
    /// A gateway at `address/prefix_len` with the Docker-style MAC derived
    /// from its address ([`MacAddr::docker_from_ipv4`]: 172.17.0.1 gets
    /// 02:42:ac:11:00:01).
    pub fn new(address: Ipv4Addr, prefix_len: u8, now: Instant) -> Self {
        Self::with_mac(address, prefix_len, MacAddr::docker_from_ipv4(address), now)
    }

    pub fn with_mac(address: Ipv4Addr, prefix_len: u8, mac: MacAddr, now: Instant) -> Self {
        Self::with_link(address, prefix_len, mac, GatewayLink::PLAIN, now)
    }

    /// A gateway on a `link` of its own (the live switch's: the network's
    /// MTU, offloads on).
    pub fn with_link(
        address: Ipv4Addr,
        prefix_len: u8,
        mac: MacAddr,
        link: GatewayLink,
        now: Instant,
    ) -> Self {
        let mut device = FrameQueues {
            rx: VecDeque::new(),
            tx: Vec::new(),
            link,
        };
        let mut config = Config::new(HardwareAddress::Ethernet(EthernetAddress(mac.0)));
        // A fixed seed: replay must produce the same bytes on every run.
        config.random_seed = 0x7461_7073_7769_7463;
        let mut iface = Box::new(Interface::new(config, &mut device, smol_now(now)));
        iface.update_ip_addrs(|addrs| {
            addrs
                .push(IpCidr::new(IpAddress::Ipv4(address), prefix_len))
                .expect("a fresh interface has room for one address");
        });
        Gateway {
            iface,
            device,
            sockets: SocketSet::new(vec![]),
            no_sockets: SocketSet::new(vec![]),
            spare_tcp: Vec::new(),
            spare_tcp_bytes: 0,
            mac,
            address,
            prefix_len,
        }
    }

    pub fn mac(&self) -> MacAddr {
        self.mac
    }

    pub fn address(&self) -> Ipv4Addr {
        self.address
    }

    pub fn prefix_len(&self) -> u8 {
        self.prefix_len
    }

    pub fn link(&self) -> GatewayLink {
        self.device.link
    }

    /// Turns on what translated TCP flows need: smoltcp's any-IP mode, so
    /// its TCP sockets take segments for remote addresses and send from
    /// them. Any-IP claims every address (ARP, ping, TCP), so the caller
    /// must hand the gateway only the frames the services' classifier
    /// gives it; `replay` never turns this on.
    pub fn enable_flows(&mut self) {
        self.iface.set_any_ip(true);
    }

    /// A TCP socket listening on exactly `local` (a remote's endpoint),
    /// with `buffer` bytes each way.
    pub fn tcp_listen(&mut self, local: SocketAddrV4, buffer: usize) -> Option<SocketHandle> {
        let mut socket = self.tcp_socket(buffer);
        let endpoint = IpListenEndpoint {
            addr: Some(IpAddress::Ipv4(*local.ip())),
            port: local.port(),
        };
        socket.listen(endpoint).ok()?;
        Some(self.sockets.add(socket))
    }

    /// A TCP socket connecting from `local` (any address) to `remote`.
    pub fn tcp_connect(
        &mut self,
        local: SocketAddrV4,
        remote: SocketAddrV4,
        buffer: usize,
    ) -> Option<SocketHandle> {
        let mut socket = self.tcp_socket(buffer);
        let remote = (IpAddress::Ipv4(*remote.ip()), remote.port());
        let local = (IpAddress::Ipv4(*local.ip()), local.port());
        socket.connect(self.iface.context(), remote, local).ok()?;
        Some(self.sockets.add(socket))
    }

    /// The TCP socket `handle`.
    pub fn tcp(&mut self, handle: SocketHandle) -> &mut tcp::Socket<'static> {
        self.sockets.get_mut::<tcp::Socket<'static>>(handle)
    }

    /// Removes a socket; a closed TCP socket is kept for a later flow
    /// while there is room among the spares.
    pub fn remove(&mut self, handle: SocketHandle) {
        if let smoltcp::socket::Socket::Tcp(socket) = self.sockets.remove(handle)
            && !socket.is_open()
            && self.spare_tcp_bytes + buffer_bytes(&socket) <= SPARE_TCP_BYTES
        {
            self.spare_tcp_bytes += buffer_bytes(&socket);
            self.spare_tcp.push(socket);
        }
    }

    /// A closed TCP socket with `buffer` bytes each way: a spare one, or a
    /// new one. `listen` and `connect` reset a spare's connection state
    /// and clear its buffers; the settings that outlive a connection are
    /// set again here.
    fn tcp_socket(&mut self, buffer: usize) -> tcp::Socket<'static> {
        let fits = |s: &tcp::Socket<'_>| s.recv_capacity() == buffer && s.send_capacity() == buffer;
        let Some(at) = self.spare_tcp.iter().position(fits) else {
            return tcp_socket(buffer);
        };
        let mut socket = self.spare_tcp.swap_remove(at);
        self.spare_tcp_bytes -= buffer_bytes(&socket);
        let fresh = tcp_socket(0);
        socket.set_nagle_enabled(fresh.nagle_enabled());
        socket.set_keep_alive(fresh.keep_alive());
        socket.set_timeout(fresh.timeout());
        socket.set_ack_delay(fresh.ack_delay());
        socket.set_hop_limit(fresh.hop_limit());
        socket
    }

    /// Closed TCP sockets kept for reuse (their buffers bounded in bytes).
    pub fn spare_tcp_sockets(&self) -> usize {
        self.spare_tcp.len()
    }

    /// Queues a plain frame the switch delivered to the gateway port.
    /// False when the queue is full or the frame longer than the link
    /// carries, and the frame was dropped.
    pub fn deliver(&mut self, frame: &[u8]) -> bool {
        self.queue(frame, self.device.link.frame_max())
    }

    /// Queues one TCP segment of any size up to the largest IPv4 packet: a
    /// container's super-frame, its checksum complete. False as for
    /// [`Gateway::deliver`], and on a link without offloads.
    pub fn deliver_segment(&mut self, frame: &[u8]) -> bool {
        self.device.link.offloads && self.queue(frame, ETHERNET_HEADER + IPV4_MAX)
    }

    /// Queues a datagram for the gateway's own address that the services
    /// reassembled from fragments (a ping larger than the MTU), of any
    /// size up to the largest IPv4 packet. False as for
    /// [`Gateway::deliver`].
    pub fn deliver_reassembled(&mut self, frame: &[u8]) -> bool {
        self.queue(frame, ETHERNET_HEADER + IPV4_MAX)
    }

    fn queue(&mut self, frame: &[u8], limit: usize) -> bool {
        if self.device.rx.len() >= GATEWAY_QUEUE_FRAMES || frame.len() > limit {
            return false;
        }
        // Dropped unseen, as smoltcp drops a bad checksum (see `capabilities`).
        if self.device.link.offloads && !self.local_tcp_intact(frame) {
            return true;
        }
        self.device.rx.push_back(frame.to_vec());
        true
    }

    /// On a link with offloads smoltcp checks no TCP checksum: the
    /// services' classifier has checked every segment it routes before the
    /// gateway sees it, and this checks those to the gateway's own address
    /// (DNS over TCP), so each 64 KiB segment is summed once, not twice.
    fn local_tcp_intact(&self, frame: &[u8]) -> bool {
        use smoltcp::wire::{EthernetFrame, EthernetProtocol, IpProtocol, Ipv4Packet, TcpPacket};
        let Ok(eth) = EthernetFrame::new_checked(frame) else {
            return true; // not TCP: smoltcp judges it
        };
        if eth.ethertype() != EthernetProtocol::Ipv4 {
            return true;
        }
        let Ok(ip) = Ipv4Packet::new_checked(eth.payload()) else {
            return true;
        };
        if ip.dst_addr() != self.address || ip.next_header() != IpProtocol::Tcp {
            return true;
        }
        TcpPacket::new_checked(ip.payload())
            .is_ok_and(|tcp| tcp.verify_checksum(&ip.src_addr().into(), &ip.dst_addr().into()))
    }

    /// Lets the gateway answer what it was given; appends its frames to
    /// `out`, plain (on a link with offloads, checksums are completed and
    /// super-frames cut here, in software).
    pub fn poll(&mut self, now: Instant, out: &mut Vec<Vec<u8>>) {
        self.run_stack(now);
        let offloads = self.device.link.offloads;
        let mut scratch = Vec::new();
        for frame in self.device.tx.drain(..) {
            let TxFrame { mut bytes, segment } = frame;
            if !offloads {
                out.push(bytes);
                continue;
            }
            let vnet = offload_header(&mut bytes, segment);
            let mut emit = |plain: &[u8]| out.push(plain.to_vec());
            // The gateway built the frame: it parses.
            let _ = ports::vnet::segment(&vnet, &bytes, &mut scratch, &mut emit);
        }
    }

    /// Lets the gateway answer what it was given; appends its frames to
    /// `out` each with its virtio-net header (partial TCP checksums, TCP
    /// super-frames), for a switch that resolves them per egress port.
    pub fn poll_offloaded(&mut self, now: Instant, out: &mut Vec<(VnetHdr, Vec<u8>)>) {
        if !self.device.link.offloads {
            let mut plain = Vec::new();
            self.poll(now, &mut plain);
            out.extend(plain.into_iter().map(|f| (VnetHdr::default(), f)));
            return;
        }
        self.run_stack(now);
        for TxFrame { mut bytes, segment } in self.device.tx.drain(..) {
            let vnet = offload_header(&mut bytes, segment);
            out.push((vnet, bytes));
        }
    }

    /// smoltcp's `Interface::poll` step by step: after each received frame
    /// and each egress pass, the fragments of a reply larger than the MTU
    /// are all sent (see the module documentation).
    fn run_stack(&mut self, now: Instant) {
        let now = smol_now(now);
        self.iface.poll_maintenance(now);
        while self
            .iface
            .poll_ingress_single(now, &mut self.device, &mut self.sockets)
            != PollIngressSingleResult::None
        {
            self.send_fragments(now);
        }
        loop {
            let result = self
                .iface
                .poll_egress(now, &mut self.device, &mut self.sockets);
            self.send_fragments(now);
            if result == PollResult::None {
                break;
            }
        }
    }

    /// Sends what is left of the datagram smoltcp is cutting into
    /// fragments: while it holds one, its next poll is due at once.
    fn send_fragments(&mut self, now: smoltcp::time::Instant) {
        for _ in 0..FRAGMENT_STEPS_MAX {
            if self.iface.poll_at(now, &self.no_sockets).is_none() {
                return;
            }
            self.iface
                .poll_egress(now, &mut self.device, &mut self.no_sockets);
        }
    }

    /// How long the gateway can sleep if nothing arrives (`None`: forever).
    pub fn poll_delay(&mut self, now: Instant) -> Option<Duration> {
        self.iface
            .poll_delay(smol_now(now), &self.sockets)
            .map(Duration::from)
    }
}

/// The bytes of a TCP socket's two buffers.
fn buffer_bytes(socket: &tcp::Socket<'_>) -> usize {
    socket.recv_capacity() + socket.send_capacity()
}

fn tcp_socket(buffer: usize) -> tcp::Socket<'static> {
    let mut socket = tcp::Socket::new(
        tcp::SocketBuffer::new(vec![0; buffer]),
        tcp::SocketBuffer::new(vec![0; buffer]),
    );
    socket.set_nagle_enabled(false);
    socket
}

fn smol_now(now: Instant) -> smoltcp::time::Instant {
    smoltcp::time::Instant::from_micros(i64::try_from(now.as_nanos() / 1_000).unwrap_or(i64::MAX))
}

/// The virtio-net header of a frame smoltcp sent on a link with offloads:
/// for IPv4 TCP, the pseudo-header sum in the checksum field (smoltcp left
/// it to the device) and, for a super-frame, the segment size to cut by;
/// other frames carry their own checksums and need none.
fn offload_header(frame: &mut [u8], segment: Option<NonZeroU16>) -> VnetHdr {
    const IPV4: [u8; 2] = [0x08, 0x00];
    const TCP: u8 = 6;
    const TCP_CHECKSUM: usize = 16;
    let ip = ETHERNET_HEADER;
    if frame.len() < ip + 20 || frame[12..14] != IPV4 || frame[ip + 9] != TCP {
        return VnetHdr::default();
    }
    let ihl = usize::from(frame[ip] & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([frame[ip + 2], frame[ip + 3]]));
    let tcp = ip + ihl;
    if frame.len() < tcp + 20 || total < ihl + 20 {
        return VnetHdr::default();
    }
    let tcp_len = total - ihl;
    let sum = ports::wire::checksum::pseudo_header_sum(&frame[ip + 12..ip + 20], TCP, tcp_len);
    frame[tcp + TCP_CHECKSUM..tcp + TCP_CHECKSUM + 2].copy_from_slice(&sum.to_be_bytes());
    let mut vnet = VnetHdr {
        flags: VnetHdr::NEEDS_CSUM,
        csum_start: u16::try_from(tcp).unwrap_or(u16::MAX),
        csum_offset: TCP_CHECKSUM as u16,
        ..VnetHdr::default()
    };
    if let Some(size) = segment {
        let tcp_header = usize::from(frame[tcp + 12] >> 4) * 4;
        vnet.gso_type = VnetHdr::GSO_TCPV4;
        vnet.gso_size = size.get();
        vnet.hdr_len = u16::try_from(tcp + tcp_header).unwrap_or(u16::MAX);
    }
    vnet
}

/// A frame smoltcp sent, with the segment size it asked the device to cut
/// it by (a super-frame).
#[derive(Debug)]
struct TxFrame {
    bytes: Vec<u8>,
    segment: Option<NonZeroU16>,
}

/// smoltcp's view of the gateway port: frames in, frames out.
#[derive(Debug)]
struct FrameQueues {
    rx: VecDeque<Vec<u8>>,
    tx: Vec<TxFrame>,
    link: GatewayLink,
}

impl phy::Device for FrameQueues {
    type RxToken<'a> = RxFrame;
    type TxToken<'a> = TxSlot<'a>;

    fn receive(&mut self, _now: smoltcp::time::Instant) -> Option<(RxFrame, TxSlot<'_>)> {
        let frame = self.rx.pop_front()?;
        Some((RxFrame(frame), TxSlot::new(&mut self.tx)))
    }

    fn transmit(&mut self, _now: smoltcp::time::Instant) -> Option<TxSlot<'_>> {
        Some(TxSlot::new(&mut self.tx))
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ethernet;
        caps.max_transmission_unit = self.link.frame_max();
        if self.link.offloads {
            // Checked before smoltcp coming in (`local_tcp_intact`); left
            // to the switch going out.
            caps.checksum.tcp = Checksum::None;
            caps.segmentation.tcpv4 = NonZeroUsize::new(ETHERNET_HEADER + IPV4_MAX);
        }
        caps
    }
}

struct RxFrame(Vec<u8>);

impl phy::RxToken for RxFrame {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(&self.0)
    }
}

struct TxSlot<'a> {
    out: &'a mut Vec<TxFrame>,
    segment: Option<NonZeroU16>,
}

impl<'a> TxSlot<'a> {
    fn new(out: &'a mut Vec<TxFrame>) -> Self {
        TxSlot { out, segment: None }
    }
}

impl phy::TxToken for TxSlot<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut bytes = vec![0; len];
        let result = f(&mut bytes);
        self.out.push(TxFrame {
            bytes,
            segment: self.segment,
        });
        result
    }

    fn set_meta(&mut self, meta: PacketMeta) {
        self.segment = meta.segmentation_offload_size;
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod fragment_tests;
