//! What a sender on this machine left for "the hardware" to do.
//!
//! A sender on the same machine (a kernel vxlan device over a veth, a VM
//! behind a TAP) hands its packets on with the work a NIC would do still
//! undone, and the kernel delivers them to our UDP socket as they are,
//! without the flags that said so:
//!
//! - **partial checksums**: the inner TCP/UDP checksum field holds only the
//!   pseudo-header sum (`CHECKSUM_PARTIAL`). A frame whose checksum does not
//!   verify and whose field holds exactly its pseudo-header sum is handed to
//!   the switch as what it is, a frame with `NEEDS_CSUM`: the switch
//!   completes it for ports that cannot take the flag, as for a container's
//!   own frames. A frame damaged on the way is left alone (its field would
//!   match only by a 1-in-65536 accident, and then still not verify).
//! - **TCP super-frames**: a vxlan device with UDP tunnel segmentation
//!   offload sends one datagram per 64 KiB TCP burst, and a UDP socket
//!   takes it whole. An inner IPv4 TCP frame longer than the tunnel's MTU
//!   is handed on as a GSO super-frame (`GSO_TCPV4`) cut at the MTU, so
//!   ports that take offloads get it whole and the others get segments.

use crate::VnetHdr;
use crate::wire::checksum::{fold, ones_complement_sum, pseudo_header_sum};
use crate::wire::{ethernet, ip, ipv4, tcp};

/// Where TCP and UDP keep their checksum, from the start of their header.
const TCP_CHECKSUM_OFFSET: usize = 16;
const UDP_CHECKSUM_OFFSET: usize = 6;

/// The header to deliver `frame` with, for a tunnel whose inner packets
/// are at most `mtu` bytes: a GSO super-frame, a partial checksum (see the
/// module docs), or a plain frame.
///
/// `covered`: the frame came in a datagram whose UDP checksum the kernel
/// verified (from another switch, which may leave inner checksums
/// partial): a field holding exactly the pseudo-header sum is then taken
/// as partial without a pass over the data, since nothing can have
/// changed the bytes on the way.
pub fn vnet_for(frame: &[u8], mtu: usize, covered: bool) -> VnetHdr {
    if frame.len() > mtu + ethernet::HEADER_LEN
        && let Some(vnet) = tcp_super_frame(frame, mtu)
    {
        return vnet;
    }
    partial_checksum(frame, covered)
        .map(|(start, offset)| VnetHdr {
            flags: VnetHdr::NEEDS_CSUM,
            csum_start: start,
            csum_offset: offset,
            ..VnetHdr::default()
        })
        .unwrap_or_default()
}

/// An IPv4 TCP frame too long for the wire, as a GSO frame cut at `mtu`.
fn tcp_super_frame(frame: &[u8], mtu: usize) -> Option<VnetHdr> {
    let ethernet = ethernet::Frame::new_checked(frame).ok()?;
    if ethernet.ethertype() != ethernet::ethertype::IPV4 {
        return None;
    }
    let packet = ipv4::Packet::new_checked(ethernet.payload()).ok()?;
    if packet.protocol() != ip::TCP || packet.is_fragment() {
        return None;
    }
    let segment = tcp::Packet::new_checked(packet.payload()).ok()?;
    let headers = packet.header_len() + segment.header_len();
    let gso_size = mtu.checked_sub(headers).filter(|size| *size > 0)?;
    Some(VnetHdr {
        flags: VnetHdr::NEEDS_CSUM,
        gso_type: VnetHdr::GSO_TCPV4,
        hdr_len: u16::try_from(ethernet::HEADER_LEN + headers).ok()?,
        gso_size: u16::try_from(gso_size).ok()?,
        csum_start: u16::try_from(ethernet::HEADER_LEN + packet.header_len()).ok()?,
        csum_offset: u16::try_from(TCP_CHECKSUM_OFFSET).ok()?,
    })
}

fn partial_checksum(frame: &[u8], covered: bool) -> Option<(u16, u16)> {
    let ethernet = ethernet::Frame::new_checked(frame).ok()?;
    if ethernet.ethertype() != ethernet::ethertype::IPV4 {
        return None;
    }
    let packet = ipv4::Packet::new_checked(ethernet.payload()).ok()?;
    if packet.is_fragment() {
        return None;
    }
    let offset = match packet.protocol() {
        ip::TCP => TCP_CHECKSUM_OFFSET,
        ip::UDP => UDP_CHECKSUM_OFFSET,
        _ => return None,
    };
    let start = ethernet::HEADER_LEN + packet.header_len();
    let end = ethernet::HEADER_LEN + usize::from(packet.total_len());
    let segment = frame.get(start..end)?;
    let field = segment.get(offset..offset + 2)?;
    let field = u16::from_be_bytes([field[0], field[1]]);
    let pseudo = pseudo_header_sum(packet.addresses(), packet.protocol(), segment.len());
    // Cheap test first; the full sum only for the candidates.
    if field != pseudo || field == 0 {
        return None;
    }
    // Should the whole sum happen to equal the pseudo-header sum, handing
    // the frame on as partial is still right: completing it gives the
    // same sum back.
    if covered {
        return Some((u16::try_from(start).ok()?, u16::try_from(offset).ok()?));
    }
    let verifies = !fold(ones_complement_sum(segment, u32::from(pseudo))) == 0;
    if verifies {
        return None;
    }
    Some((u16::try_from(start).ok()?, u16::try_from(offset).ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vnet::complete_checksum;

    /// An IPv4 UDP frame with a right checksum, built by etherparse.
    fn udp_frame() -> Vec<u8> {
        let builder = etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
            .ipv4([10, 50, 0, 2], [10, 50, 0, 3], 64)
            .udp(40_000, 5_000);
        let payload = [0x5a; 100];
        let mut frame = Vec::new();
        builder.write(&mut frame, &payload).unwrap();
        frame
    }

    #[test]
    fn a_right_checksum_is_left_alone() {
        assert_eq!(vnet_for(&udp_frame(), 1450, false), VnetHdr::default());
    }

    #[test]
    fn a_partial_checksum_is_flagged_and_completes_to_the_right_one() {
        let right = udp_frame();
        let mut partial = right.clone();
        let field = 14 + 20 + UDP_CHECKSUM_OFFSET;
        let pseudo = pseudo_header_sum(&right[14 + 12..14 + 20], ip::UDP, right.len() - 34);
        partial[field..field + 2].copy_from_slice(&pseudo.to_be_bytes());
        let mut vnet = vnet_for(&partial, 1450, false);
        assert_eq!(vnet.flags, VnetHdr::NEEDS_CSUM);
        assert_eq!((vnet.csum_start, vnet.csum_offset), (34, 6));
        complete_checksum(&mut vnet, &mut partial).unwrap();
        assert_eq!(partial, right);
    }

    #[test]
    fn from_a_switch_a_partial_checksum_is_flagged_without_a_pass_over_the_data() {
        let right = udp_frame();
        assert_eq!(vnet_for(&right, 1450, true), VnetHdr::default());
        let mut partial = right.clone();
        let field = 14 + 20 + UDP_CHECKSUM_OFFSET;
        let pseudo = pseudo_header_sum(&right[14 + 12..14 + 20], ip::UDP, right.len() - 34);
        partial[field..field + 2].copy_from_slice(&pseudo.to_be_bytes());
        // The data is not read: a frame whose whole sum happens to equal
        // its pseudo-header sum is told from a partial one only by a pass
        // over the data, which a covered frame does not get (and handing
        // it on as partial is right all the same).
        let mut coincidence = partial.clone();
        let now = fold(ones_complement_sum(&coincidence[34..], u32::from(pseudo)));
        let word = u32::from(u16::from_be_bytes([coincidence[42], coincidence[43]]));
        let sum = word + u32::from(0xffff - now);
        let word = ((sum & 0xffff) + (sum >> 16)) as u16;
        coincidence[42..44].copy_from_slice(&word.to_be_bytes());
        assert_eq!(vnet_for(&coincidence, 1450, false), VnetHdr::default());
        assert_eq!(
            vnet_for(&coincidence, 1450, true).flags,
            VnetHdr::NEEDS_CSUM
        );
        let mut vnet = vnet_for(&partial, 1450, true);
        assert_eq!((vnet.csum_start, vnet.csum_offset), (34, 6));
        complete_checksum(&mut vnet, &mut partial).unwrap();
        assert_eq!(partial, right);
    }

    #[test]
    fn a_damaged_frame_is_not_mistaken_for_a_partial_one() {
        let mut damaged = udp_frame();
        let last = damaged.len() - 1;
        damaged[last] ^= 0xff;
        assert_eq!(vnet_for(&damaged, 1450, false), VnetHdr::default());
    }

    #[test]
    fn a_tcp_frame_longer_than_the_mtu_is_a_super_frame_cut_at_the_mtu() {
        let builder = etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
            .ipv4([10, 50, 0, 2], [10, 50, 0, 3], 64)
            .tcp(40_000, 5_000, 1, 65_000);
        let mut frame = Vec::new();
        builder.write(&mut frame, &[0x33; 4000]).unwrap();
        let vnet = vnet_for(&frame, 1450, false);
        assert_eq!(vnet.gso_type, VnetHdr::GSO_TCPV4);
        assert_eq!(vnet.gso_size, 1450 - 40);
        assert_eq!((vnet.csum_start, vnet.csum_offset), (34, 16));
        // The switch cuts it into wire frames that fit the MTU.
        let field = 14 + 20 + TCP_CHECKSUM_OFFSET;
        let pseudo = pseudo_header_sum(&frame[14 + 12..14 + 20], ip::TCP, frame.len() - 34);
        frame[field..field + 2].copy_from_slice(&pseudo.to_be_bytes());
        let mut sizes = Vec::new();
        crate::vnet::segment(&vnet, &frame, &mut Vec::new(), &mut |s| sizes.push(s.len())).unwrap();
        assert_eq!(sizes, vec![1464, 1464, 4000 - 2 * 1410 + 54]);
        assert_eq!(
            vnet_for(&frame[..1464], 1450, false).gso_type,
            VnetHdr::GSO_NONE
        );
    }
}
