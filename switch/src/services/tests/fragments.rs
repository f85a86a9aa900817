//! What does not fit the MTU on its way to a container: IPv4 fragments.

use super::*;

#[test]
fn what_does_not_fit_the_mtu_is_fragmented_and_counted() {
    let mut s = services(true);
    let remote = SocketAddrV4::new(OUTSIDE, 123);
    let container = SocketAddrV4::new(HOST, 40000);
    let key = FlowKey::udp(container, remote);
    let mut out = Vec::new();
    s.frame(at(0), &udp_frame(40000, remote, b"q"), 0, &mut out);
    s.host(at(0), key, HostEvent::Connected, &mut out);
    out.clear();
    // Fits: one frame, untouched.
    s.host(at(1), key, HostEvent::Datagram(&[0u8; 1472]), &mut out);
    assert_eq!(out.len(), 1);
    assert_eq!(s.stats().fragmented, 0);
    // 4,000 bytes at MTU 1500: three fragments that reassemble to it.
    out.clear();
    let datagram: Vec<u8> = (0..4000u32).map(|i| (i % 251) as u8).collect();
    s.host(at(1), key, HostEvent::Datagram(&datagram), &mut out);
    assert_eq!(s.stats().fragmented, 1);
    assert_eq!(s.stats().too_big, 0);
    let packets: Vec<Vec<u8>> = out.iter().map(to_container).collect();
    assert_eq!(packets.len(), 3);
    let whole = reassemble(&packets);
    assert_eq!(udp_of(&whole), (remote, container, datagram));
}

/// The IPv4 packet the `pieces` (fragments of one datagram, in order,
/// each within the MTU) make, checking each fragment's header.
fn reassemble(pieces: &[Vec<u8>]) -> Vec<u8> {
    let first = Ipv4Packet::new_checked(&pieces[0][..]).unwrap();
    let mut payload = Vec::new();
    for (index, piece) in pieces.iter().enumerate() {
        assert!(piece.len() <= 1500, "fragment {index} fits the MTU");
        let ip = Ipv4Packet::new_checked(&piece[..]).unwrap();
        assert!(ip.verify_checksum());
        assert!(!ip.dont_frag());
        assert_eq!(ip.ident(), first.ident(), "one datagram");
        assert_eq!(ip.more_frags(), index + 1 < pieces.len());
        assert_eq!(usize::from(ip.frag_offset()), payload.len());
        payload.extend_from_slice(ip.payload());
    }
    let mut whole = pieces[0][..20].to_vec();
    whole.extend_from_slice(&payload);
    let mut view = Ipv4Packet::new_unchecked(&mut whole[..]);
    view.set_total_len(u16::try_from(20 + payload.len()).unwrap());
    view.clear_flags();
    view.set_frag_offset(0);
    view.fill_checksum();
    whole
}

#[test]
fn fragments_follow_rfc_791_and_refuse_what_cannot_be_cut() {
    let packet = udp_packet(
        SocketAddrV4::new(OUTSIDE, 1),
        SocketAddrV4::new(HOST, 2),
        &[7u8; 100],
    )
    .unwrap();
    // 108 bytes of IP payload at MTU 60: 40, 40 (multiples of 8) and 28.
    let pieces = super::frames::fragments(&packet, 60, 9).unwrap();
    let sizes: Vec<usize> = pieces.iter().map(|p| p.len() - 20).collect();
    assert_eq!(sizes, vec![40, 40, 28]);
    assert_eq!(reassemble(&pieces)[20..], packet[20..]);
    // No room for 8 bytes, a fragment, not IPv4: not cut.
    assert!(super::frames::fragments(&packet, 27, 9).is_none());
    assert!(super::frames::fragments(&pieces[1], 60, 9).is_none());
    assert!(super::frames::fragments(&[0u8; 10], 60, 9).is_none());
}
