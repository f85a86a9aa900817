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
//! Frames handed to the gateway must be plain frames: the caller completes
//! partial checksums and segments GSO frames first, as for any port that
//! does not take offload headers.

use std::collections::VecDeque;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Duration;

use smoltcp::iface::{Config, Interface, SocketHandle, SocketSet};
use smoltcp::phy::{self, DeviceCapabilities, Medium};
use smoltcp::socket::tcp;
use smoltcp::wire::{EthernetAddress, HardwareAddress, IpAddress, IpCidr, IpListenEndpoint};

use crate::mac::MacAddr;
use crate::time::Instant;

/// Frames waiting for the gateway; beyond this a burst (a broadcast storm)
/// is dropped rather than queued without bound.
pub const GATEWAY_QUEUE_FRAMES: usize = 256;

/// The largest frame the gateway sends or takes: a 1500-byte IP MTU.
pub const GATEWAY_FRAME_MAX: usize = 1514;

/// The gateway host. See the module documentation.
pub struct Gateway {
    iface: Interface,
    device: FrameQueues,
    sockets: SocketSet<'static>,
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
        let mut device = FrameQueues::default();
        let mut config = Config::new(HardwareAddress::Ethernet(EthernetAddress(mac.0)));
        // A fixed seed: replay must produce the same bytes on every run.
        config.random_seed = 0x7461_7073_7769_7463;
        let mut iface = Interface::new(config, &mut device, smol_now(now));
        iface.update_ip_addrs(|addrs| {
            addrs
                .push(IpCidr::new(IpAddress::Ipv4(address), prefix_len))
                .expect("a fresh interface has room for one address");
        });
        Gateway {
            iface,
            device,
            sockets: SocketSet::new(vec![]),
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
        let mut socket = tcp_socket(buffer);
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
        let mut socket = tcp_socket(buffer);
        let remote = (IpAddress::Ipv4(*remote.ip()), remote.port());
        let local = (IpAddress::Ipv4(*local.ip()), local.port());
        socket.connect(self.iface.context(), remote, local).ok()?;
        Some(self.sockets.add(socket))
    }

    /// The TCP socket `handle`.
    pub fn tcp(&mut self, handle: SocketHandle) -> &mut tcp::Socket<'static> {
        self.sockets.get_mut::<tcp::Socket<'static>>(handle)
    }

    /// Removes a socket.
    pub fn remove(&mut self, handle: SocketHandle) {
        self.sockets.remove(handle);
    }

    /// Queues a frame the switch delivered to the gateway port. False when
    /// the queue is full and the frame was dropped.
    pub fn deliver(&mut self, frame: &[u8]) -> bool {
        if self.device.rx.len() >= GATEWAY_QUEUE_FRAMES || frame.len() > GATEWAY_FRAME_MAX {
            return false;
        }
        self.device.rx.push_back(frame.to_vec());
        true
    }

    /// Lets the gateway answer what it was given; appends its frames to `out`.
    pub fn poll(&mut self, now: Instant, out: &mut Vec<Vec<u8>>) {
        self.iface
            .poll(smol_now(now), &mut self.device, &mut self.sockets);
        out.append(&mut self.device.tx);
    }

    /// How long the gateway can sleep if nothing arrives (`None`: forever).
    pub fn poll_delay(&mut self, now: Instant) -> Option<Duration> {
        self.iface
            .poll_delay(smol_now(now), &self.sockets)
            .map(Duration::from)
    }
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

/// smoltcp's view of the gateway port: frames in, frames out.
#[derive(Debug, Default)]
struct FrameQueues {
    rx: VecDeque<Vec<u8>>,
    tx: Vec<Vec<u8>>,
}

impl phy::Device for FrameQueues {
    type RxToken<'a> = RxFrame;
    type TxToken<'a> = TxSlot<'a>;

    fn receive(&mut self, _now: smoltcp::time::Instant) -> Option<(RxFrame, TxSlot<'_>)> {
        let frame = self.rx.pop_front()?;
        Some((RxFrame(frame), TxSlot(&mut self.tx)))
    }

    fn transmit(&mut self, _now: smoltcp::time::Instant) -> Option<TxSlot<'_>> {
        Some(TxSlot(&mut self.tx))
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ethernet;
        caps.max_transmission_unit = GATEWAY_FRAME_MAX;
        caps
    }
}

struct RxFrame(Vec<u8>);

impl phy::RxToken for RxFrame {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(&self.0)
    }
}

struct TxSlot<'a>(&'a mut Vec<Vec<u8>>);

impl phy::TxToken for TxSlot<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut frame = vec![0; len];
        let result = f(&mut frame);
        self.0.push(frame);
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use smoltcp::wire::{
        ArpOperation, ArpPacket, ArpRepr, EthernetFrame, EthernetProtocol, EthernetRepr,
        Icmpv4Packet, Icmpv4Repr, IpProtocol, Ipv4Packet, Ipv4Repr,
    };

    const HOST_MAC: [u8; 6] = [0x02, 0x42, 0xac, 0x11, 0x00, 0x02];
    const HOST_IP: Ipv4Addr = Ipv4Addr::new(172, 17, 0, 2);
    const GW_IP: Ipv4Addr = Ipv4Addr::new(172, 17, 0, 1);

    fn arp_request(target: Ipv4Addr) -> Vec<u8> {
        let arp = ArpRepr::EthernetIpv4 {
            operation: ArpOperation::Request,
            source_hardware_addr: EthernetAddress(HOST_MAC),
            source_protocol_addr: HOST_IP,
            target_hardware_addr: EthernetAddress([0; 6]),
            target_protocol_addr: target,
        };
        let eth = EthernetRepr {
            src_addr: EthernetAddress(HOST_MAC),
            dst_addr: EthernetAddress::BROADCAST,
            ethertype: EthernetProtocol::Arp,
        };
        let mut buf = vec![0; eth.buffer_len() + arp.buffer_len()];
        let mut frame = EthernetFrame::new_unchecked(&mut buf);
        eth.emit(&mut frame);
        arp.emit(&mut ArpPacket::new_unchecked(frame.payload_mut()));
        buf
    }

    fn ping(dst_mac: MacAddr, dst: Ipv4Addr) -> Vec<u8> {
        let data = b"tapswitch";
        let icmp = Icmpv4Repr::EchoRequest {
            ident: 7,
            seq_no: 1,
            data,
        };
        let ip = Ipv4Repr {
            src_addr: HOST_IP,
            dst_addr: dst,
            next_header: IpProtocol::Icmp,
            payload_len: icmp.buffer_len(),
            hop_limit: 64,
        };
        let eth = EthernetRepr {
            src_addr: EthernetAddress(HOST_MAC),
            dst_addr: EthernetAddress(dst_mac.0),
            ethertype: EthernetProtocol::Ipv4,
        };
        let mut buf = vec![0; eth.buffer_len() + ip.buffer_len() + icmp.buffer_len()];
        let mut frame = EthernetFrame::new_unchecked(&mut buf);
        eth.emit(&mut frame);
        let mut packet = Ipv4Packet::new_unchecked(frame.payload_mut());
        ip.emit(&mut packet, &Default::default());
        icmp.emit(
            &mut Icmpv4Packet::new_unchecked(packet.payload_mut()),
            &Default::default(),
        );
        buf
    }

    #[test]
    fn answers_arp_for_its_own_address_only() {
        let mut gw = Gateway::new(GW_IP, 16, Instant::ZERO);
        assert_eq!(gw.mac().to_string(), "02:42:ac:11:00:01");
        let mut out = Vec::new();
        assert!(gw.deliver(&arp_request(Ipv4Addr::new(172, 17, 0, 9))));
        gw.poll(Instant::ZERO, &mut out);
        assert!(out.is_empty(), "answered ARP for another host");

        gw.deliver(&arp_request(GW_IP));
        gw.poll(Instant::ZERO, &mut out);
        assert_eq!(out.len(), 1);
        let frame = EthernetFrame::new_checked(&out[0]).unwrap();
        assert_eq!(frame.dst_addr(), EthernetAddress(HOST_MAC));
        let arp = ArpRepr::parse(&ArpPacket::new_checked(frame.payload()).unwrap()).unwrap();
        let ArpRepr::EthernetIpv4 {
            operation,
            source_hardware_addr,
            source_protocol_addr,
            ..
        } = arp
        else {
            panic!("not an IPv4 ARP reply")
        };
        assert_eq!(operation, ArpOperation::Reply);
        assert_eq!(source_hardware_addr, EthernetAddress(gw.mac().0));
        assert_eq!(source_protocol_addr, GW_IP);
    }

    #[test]
    fn answers_ping_after_learning_the_host_from_arp() {
        let mut gw = Gateway::new(GW_IP, 16, Instant::ZERO);
        let mut out = Vec::new();
        gw.deliver(&arp_request(GW_IP));
        gw.deliver(&ping(gw.mac(), GW_IP));
        gw.poll(Instant::from_millis(1), &mut out);
        assert_eq!(out.len(), 2, "an ARP reply and an echo reply");
        let frame = EthernetFrame::new_checked(&out[1]).unwrap();
        let ip = Ipv4Packet::new_checked(frame.payload()).unwrap();
        assert_eq!(ip.dst_addr(), HOST_IP);
        let icmp = Icmpv4Packet::new_checked(ip.payload()).unwrap();
        let repr = Icmpv4Repr::parse(&icmp, &Default::default()).unwrap();
        assert_eq!(
            repr,
            Icmpv4Repr::EchoReply {
                ident: 7,
                seq_no: 1,
                data: b"tapswitch"
            }
        );
    }

    #[test]
    fn ignores_pings_to_other_addresses() {
        let mut gw = Gateway::new(GW_IP, 16, Instant::ZERO);
        let mut out = Vec::new();
        gw.deliver(&arp_request(GW_IP));
        gw.deliver(&ping(gw.mac(), Ipv4Addr::new(172, 17, 0, 3)));
        gw.poll(Instant::ZERO, &mut out);
        assert_eq!(out.len(), 1, "only the ARP reply");
    }

    #[test]
    fn a_full_queue_drops_instead_of_growing() {
        let mut gw = Gateway::new(GW_IP, 16, Instant::ZERO);
        for _ in 0..GATEWAY_QUEUE_FRAMES {
            assert!(gw.deliver(&arp_request(GW_IP)));
        }
        assert!(!gw.deliver(&arp_request(GW_IP)));
    }
}
