//! The RST built from a held SYN.

use smoltcp::phy::ChecksumCapabilities;
use smoltcp::wire::{IpProtocol, Ipv4Packet, TcpControl, TcpPacket, TcpRepr, TcpSeqNumber};

use super::icmp::{CONTAINER, REMOTE, syn};
use crate::flows::reset_for_syn;

#[test]
fn a_refused_syn_gets_the_rst_the_remote_would_have_sent() {
    let reset = reset_for_syn(&syn()).unwrap();
    let caps = ChecksumCapabilities::default();
    let ip = Ipv4Packet::new_checked(&reset[..]).unwrap();
    assert!(ip.verify_checksum());
    assert_eq!((ip.src_addr(), ip.dst_addr()), (REMOTE, CONTAINER));
    assert_eq!(ip.next_header(), IpProtocol::Tcp);
    let tcp_packet = TcpPacket::new_checked(ip.payload()).unwrap();
    let tcp = TcpRepr::parse(&tcp_packet, &REMOTE.into(), &CONTAINER.into(), &caps).unwrap();
    assert_eq!((tcp.src_port, tcp.dst_port), (443, 40000));
    assert_eq!(tcp.control, TcpControl::Rst);
    assert_eq!(tcp.seq_number, TcpSeqNumber(0));
    // The SYN's sequence number (1000) plus one for the SYN itself.
    assert_eq!(tcp.ack_number, Some(TcpSeqNumber(1001)));
    assert!(tcp_packet.ack() && tcp_packet.rst());
}

#[test]
fn only_a_valid_bare_syn_is_answered() {
    let syn = syn();
    assert!(reset_for_syn(&syn[..10]).is_none(), "truncated");
    let mut bad_checksum = syn.clone();
    let last = bad_checksum.len() - 1;
    bad_checksum[last] ^= 0xff;
    bad_checksum[30] ^= 0x01; // inside the TCP header: checksum now wrong
    assert!(reset_for_syn(&bad_checksum).is_none());
    // A RST to a SYN-ACK would be wrong: only a bare SYN.
    let mut syn_ack = syn.clone();
    {
        let mut ip = Ipv4Packet::new_unchecked(&mut syn_ack[..]);
        let mut tcp = TcpPacket::new_unchecked(ip.payload_mut());
        tcp.set_ack(true);
        tcp.fill_checksum(&CONTAINER.into(), &REMOTE.into());
    }
    assert!(reset_for_syn(&syn_ack).is_none());
    let echo =
        crate::flows::unreachable_packet(crate::flows::Unreachable::Host, REMOTE, &syn).unwrap();
    assert!(reset_for_syn(&echo).is_none(), "not TCP");
}
