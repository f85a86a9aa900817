//! Which frames reaching the gateway port are whose: the gateway's own
//! stack's, the DNS server's, a translated flow's, or nobody's.
//!
//! This is step 1 of the integration plan ([`crate::flows`]): once smoltcp
//! runs in any-IP mode it claims every address, so nothing may reach it
//! that it would not have taken without that mode. The rules, in order:
//!
//! 1. ARP goes to the gateway's stack only when it asks for the gateway's
//!    address; ARP about anyone else is not ours.
//! 2. IPv4 that fails its header checks (length, checksum) is malformed.
//! 3. IPv4 to the gateway's address is the gateway's: UDP to port 53 goes
//!    to the DNS responder, the rest (ping, TCP to port 53) to the stack;
//!    so are broadcasts and multicasts, which the stack took before too.
//! 4. Anything else is routed only if it was sent to the gateway's MAC (a
//!    router routes what is addressed to it, not what a flood brings by),
//!    comes from an address of the subnet, and goes to an address outside
//!    it (traffic between containers never needs the gateway).
//! 5. Routed traffic must be whole: fragments are not translated (host
//!    sockets take datagrams, not fragments). TCP and UDP must pass their
//!    checksums; ICMP is translated only for echo requests.
//!
//! Frames reach the gateway with checksums complete (the fabric resolves
//! partial checksums and segments GSO frames for ports without offloads),
//! so checking them here is right. Pure: one frame in, a verdict out.

use std::net::{Ipv4Addr, SocketAddrV4};

use smoltcp::phy::ChecksumCapabilities;
use smoltcp::wire::{
    ArpPacket, ArpRepr, EthernetFrame, EthernetProtocol, Icmpv4Message, Icmpv4Packet, IpProtocol,
    Ipv4Packet, TcpPacket, TcpRepr, UdpPacket,
};

use crate::flows::key::FlowKey;
use crate::mac::MacAddr;

/// What the classifier needs to know about the gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GatewayAddresses {
    pub mac: MacAddr,
    pub ip: Ipv4Addr,
    pub prefix_len: u8,
}

impl GatewayAddresses {
    fn in_subnet(&self, ip: Ipv4Addr) -> bool {
        let mask = u32::MAX
            .checked_shl(32 - u32::from(self.prefix_len.min(32)))
            .unwrap_or(0);
        u32::from(ip) & mask == u32::from(self.ip) & mask
    }
}

/// The DNS port the gateway answers on.
const DNS_PORT: u16 = 53;

/// Where one frame goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ingress<'a> {
    /// The gateway's own stack (smoltcp): ARP for its address, IPv4 to its
    /// address other than DNS over UDP, broadcasts and multicasts.
    Local,
    /// A DNS query over UDP to the gateway's address.
    Dns {
        client: SocketAddrV4,
        payload: &'a [u8],
    },
    /// A TCP segment to an outside address.
    Tcp {
        key: FlowKey,
        /// A bare SYN (no ACK): the first packet of a connection.
        syn: bool,
        /// The segment resets the connection.
        rst: bool,
    },
    /// A UDP datagram to an outside address.
    Udp { key: FlowKey, payload: &'a [u8] },
    /// An echo request to an outside address; the key's container port is
    /// the echo identifier.
    Echo {
        key: FlowKey,
        seq_no: u16,
        payload: &'a [u8],
    },
    /// Nobody's: drop it, counting the reason.
    Ignore(IgnoreReason),
}

/// Why a frame at the gateway port is not handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IgnoreReason {
    /// Not for the gateway: ARP about another address, unicast to another
    /// container, a frame a flood brought by, another EtherType.
    NotForUs,
    /// Cut short, or a bad length or checksum.
    Malformed,
    /// A TCP segment whose flags cannot go together (SYN with FIN or RST),
    /// with broken options, or from or to port 0.
    InvalidTcp,
    /// From an address outside the subnet: nobody the gateway serves.
    ForeignSource,
    /// A fragment: only whole datagrams are translated.
    Fragment,
    /// A protocol or ICMP message the gateway does not translate.
    Unsupported,
}

/// Classifies one Ethernet frame that reached the gateway port.
pub fn classify<'a>(frame: &'a [u8], gateway: &GatewayAddresses) -> Ingress<'a> {
    classify_with(frame, gateway, false)
}

/// [`classify()`], and with `host_loopback` (`serve --allow-host-loopback`)
/// TCP, and UDP but DNS, to the gateway's own address are flows too (to
/// the host's loopback) instead of the stack's.
pub fn classify_with<'a>(
    frame: &'a [u8],
    gateway: &GatewayAddresses,
    host_loopback: bool,
) -> Ingress<'a> {
    use Ingress::Ignore;
    let Ok(eth) = EthernetFrame::new_checked(frame) else {
        return Ignore(IgnoreReason::Malformed);
    };
    match eth.ethertype() {
        EthernetProtocol::Arp => return classify_arp(eth.payload(), gateway),
        EthernetProtocol::Ipv4 => {}
        _ => return Ignore(IgnoreReason::NotForUs),
    }
    let Ok(ip) = Ipv4Packet::new_checked(eth.payload()) else {
        return Ignore(IgnoreReason::Malformed);
    };
    if !ip.verify_checksum() {
        return Ignore(IgnoreReason::Malformed);
    }
    let (src, dst) = (ip.src_addr(), ip.dst_addr());
    if dst == gateway.ip {
        let local = classify_local(&ip, src);
        let to_host = host_loopback
            && matches!(local, Ingress::Local)
            && matches!(ip.next_header(), IpProtocol::Tcp | IpProtocol::Udp)
            && gateway.in_subnet(src)
            && src != gateway.ip
            && !ip.more_frags()
            && ip.frag_offset() == 0;
        return if to_host {
            classify_routed(&ip, src, dst)
        } else {
            local
        };
    }
    if dst.is_broadcast() || dst.is_multicast() || dst == subnet_broadcast(gateway) {
        return Ingress::Local;
    }
    if eth.dst_addr().0 != gateway.mac.0 || gateway.in_subnet(dst) {
        return Ignore(IgnoreReason::NotForUs);
    }
    if !gateway.in_subnet(src) || src == gateway.ip {
        return Ignore(IgnoreReason::ForeignSource);
    }
    if ip.more_frags() || ip.frag_offset() != 0 {
        return Ignore(IgnoreReason::Fragment);
    }
    classify_routed(&ip, src, dst)
}

fn classify_arp<'a>(payload: &[u8], gateway: &GatewayAddresses) -> Ingress<'a> {
    let Ok(packet) = ArpPacket::new_checked(payload) else {
        return Ingress::Ignore(IgnoreReason::Malformed);
    };
    match ArpRepr::parse(&packet) {
        Ok(ArpRepr::EthernetIpv4 {
            target_protocol_addr,
            ..
        }) if target_protocol_addr == gateway.ip => Ingress::Local,
        Ok(_) => Ingress::Ignore(IgnoreReason::NotForUs),
        Err(_) => Ingress::Ignore(IgnoreReason::Malformed),
    }
}

/// IPv4 to the gateway's own address: DNS over UDP to the responder, the
/// rest to the stack (which answers ping, and DNS over TCP once wired).
fn classify_local<'a>(ip: &Ipv4Packet<&'a [u8]>, src: Ipv4Addr) -> Ingress<'a> {
    if ip.next_header() != IpProtocol::Udp || ip.more_frags() || ip.frag_offset() != 0 {
        return Ingress::Local;
    }
    let Ok(udp) = UdpPacket::new_checked(ip.payload()) else {
        return Ingress::Ignore(IgnoreReason::Malformed);
    };
    if udp.dst_port() != DNS_PORT {
        return Ingress::Local;
    }
    if !udp.verify_checksum(&src.into(), &ip.dst_addr().into()) {
        return Ingress::Ignore(IgnoreReason::Malformed);
    }
    Ingress::Dns {
        client: SocketAddrV4::new(src, udp.src_port()),
        payload: udp.payload(),
    }
}

fn classify_routed<'a>(ip: &Ipv4Packet<&'a [u8]>, src: Ipv4Addr, dst: Ipv4Addr) -> Ingress<'a> {
    match ip.next_header() {
        IpProtocol::Tcp => {
            let Ok(tcp) = TcpPacket::new_checked(ip.payload()) else {
                return Ingress::Ignore(IgnoreReason::Malformed);
            };
            if !tcp.verify_checksum(&src.into(), &dst.into()) {
                return Ingress::Ignore(IgnoreReason::Malformed);
            }
            // What smoltcp would refuse anyway (flags that cannot go
            // together, broken options, port 0), refused and counted here.
            if TcpRepr::parse(
                &tcp,
                &src.into(),
                &dst.into(),
                &ChecksumCapabilities::ignored(),
            )
            .is_err()
            {
                return Ingress::Ignore(IgnoreReason::InvalidTcp);
            }
            Ingress::Tcp {
                key: FlowKey::tcp(
                    SocketAddrV4::new(src, tcp.src_port()),
                    SocketAddrV4::new(dst, tcp.dst_port()),
                ),
                syn: tcp.syn() && !tcp.ack(),
                rst: tcp.rst(),
            }
        }
        IpProtocol::Udp => {
            let Ok(udp) = UdpPacket::new_checked(ip.payload()) else {
                return Ingress::Ignore(IgnoreReason::Malformed);
            };
            if !udp.verify_checksum(&src.into(), &dst.into()) {
                return Ingress::Ignore(IgnoreReason::Malformed);
            }
            Ingress::Udp {
                key: FlowKey::udp(
                    SocketAddrV4::new(src, udp.src_port()),
                    SocketAddrV4::new(dst, udp.dst_port()),
                ),
                payload: udp.payload(),
            }
        }
        IpProtocol::Icmp => {
            let Ok(icmp) = Icmpv4Packet::new_checked(ip.payload()) else {
                return Ingress::Ignore(IgnoreReason::Malformed);
            };
            if !icmp.verify_checksum() {
                return Ingress::Ignore(IgnoreReason::Malformed);
            }
            if icmp.msg_type() != Icmpv4Message::EchoRequest || icmp.msg_code() != 0 {
                return Ingress::Ignore(IgnoreReason::Unsupported);
            }
            Ingress::Echo {
                key: FlowKey::echo(src, icmp.echo_ident(), dst),
                seq_no: icmp.echo_seq_no(),
                payload: icmp.data(),
            }
        }
        _ => Ingress::Ignore(IgnoreReason::Unsupported),
    }
}

fn subnet_broadcast(gateway: &GatewayAddresses) -> Ipv4Addr {
    let host_bits = u32::MAX
        .checked_shr(u32::from(gateway.prefix_len.min(32)))
        .unwrap_or(0);
    Ipv4Addr::from(u32::from(gateway.ip) | host_bits)
}
