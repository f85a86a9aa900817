//! The RST that refuses a held SYN.
//!
//! Connect first means the container's SYN is never seen by smoltcp while
//! the host connect runs, so when the remote refuses, no socket exists to
//! send the RST: it is built here from the held SYN, as the remote's own
//! stack would have sent it (RFC 9293 3.10.7.1: to a segment without ACK,
//! `<SEQ=0><ACK=SEG.SEQ+SEG.LEN><CTL=RST,ACK>`), from the remote endpoint,
//! so the container's `connect()` fails with `ECONNREFUSED`.

use smoltcp::phy::ChecksumCapabilities;
use smoltcp::wire::{
    IpProtocol, Ipv4Packet, Ipv4Repr, TcpControl, TcpPacket, TcpRepr, TcpSeqNumber,
};

/// Linux's `ip_default_ttl`.
const TTL: u8 = 64;

/// The IPv4 packet (no Ethernet header) resetting the connection `syn`
/// (an IPv4 packet carrying a TCP SYN without ACK) tried to open. `None`
/// if `syn` is not such a packet or its checksums are wrong.
pub fn reset_for_syn(syn: &[u8]) -> Option<Vec<u8>> {
    let caps = ChecksumCapabilities::default();
    let ip_packet = Ipv4Packet::new_checked(syn).ok()?;
    let ip = Ipv4Repr::parse(&ip_packet, &caps).ok()?;
    if ip.next_header != IpProtocol::Tcp {
        return None;
    }
    let tcp_packet = TcpPacket::new_checked(ip_packet.payload()).ok()?;
    let tcp = TcpRepr::parse(&tcp_packet, &ip.src_addr.into(), &ip.dst_addr.into(), &caps).ok()?;
    if tcp.control != TcpControl::Syn || tcp.ack_number.is_some() {
        return None;
    }
    let reset = TcpRepr {
        src_port: tcp.dst_port,
        dst_port: tcp.src_port,
        control: TcpControl::Rst,
        seq_number: TcpSeqNumber(0),
        ack_number: Some(tcp.seq_number + tcp.segment_len()),
        window_len: 0,
        window_scale: None,
        max_seg_size: None,
        sack_permitted: false,
        sack_ranges: [None, None, None],
        timestamp: None,
        payload: &[],
    };
    let reply_ip = Ipv4Repr {
        src_addr: ip.dst_addr,
        dst_addr: ip.src_addr,
        next_header: IpProtocol::Tcp,
        payload_len: reset.buffer_len(),
        hop_limit: TTL,
    };
    let mut out = vec![0u8; reply_ip.buffer_len() + reset.buffer_len()];
    let mut out_ip = Ipv4Packet::new_unchecked(&mut out[..]);
    reply_ip.emit(&mut out_ip, &caps);
    reset.emit(
        &mut TcpPacket::new_unchecked(out_ip.payload_mut()),
        &ip.dst_addr.into(),
        &ip.src_addr.into(),
        &caps,
    );
    Some(out)
}
