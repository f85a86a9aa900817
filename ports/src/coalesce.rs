//! Coalescing: runs of small UDP datagrams of one flow (IPv4 or IPv6) made
//! into one UDP GSO super-frame (`GSO_UDP_L4`), the inverse of
//! [`crate::vnet::segment`].
//!
//! A userspace switch pays per frame twice on the way out: once for its
//! own send, and once for the receiver's stack, which veth and TAP run
//! inside that send (IP input, route and socket lookup, per datagram). The
//! kernel's GRO does the same merging on a NIC's receive path
//! (`udp_gro_receive`); when a merged frame reaches a UDP socket that did
//! not ask for GRO, `udp_queue_rcv_skb` cuts it back into the datagrams
//! that were sent (`udp_rcv_segment`), and a forwarding host cuts it on its
//! way out (GSO). Either way the receiver gets, byte for byte, the
//! datagrams the sender sent.
//!
//! That holds only for runs that segmentation rebuilds exactly, so a
//! datagram joins a run only when (the checks of `inet_gro_receive` and
//! `udp_gro_receive`, made strict):
//!
//! - its checksum is still to be completed (`NEEDS_CSUM`, what a local
//!   sender's stack hands over) and the field holds exactly the
//!   pseudo-header sum: a finished checksum, right or wrong, is never
//!   recomputed, nor a partial one that would finish differently, so a
//!   frame with a deliberately bad checksum crosses the switch as it came;
//! - it is IPv4 without options or fragmentation, with a right header
//!   checksum (segmentation writes a fresh one), or IPv6 with UDP right
//!   after the fixed header; its Ethernet header, TOS, TTL, flags (IPv6:
//!   traffic class, flow label, hop limit), addresses and ports equal the
//!   run's first datagram's;
//! - its IPv4 id is the first one's plus its place in the run (what
//!   segmentation writes: a connected socket numbers its datagrams so);
//! - its payload is as long as the first one's, or shorter and then last;
//! - it adds no Ethernet padding, and the run stays within one IP packet
//!   (64 KiB) and [`MAX_RUN`] datagrams.
//!
//! Anything else goes out as it came.

use crate::vnet::VnetHdr;
use crate::wire::checksum;
use crate::wire::{ethernet, ip, ipv4, ipv6, udp};

/// Whether this kernel takes UDP GSO frames from a packet socket or a TAP:
/// the virtio-net header's `GSO_UDP_L4` came with Linux 6.2; before, the
/// send is refused (EINVAL).
pub fn kernel_supports() -> bool {
    crate::kernel::running_at_least((6, 2))
}

/// The most datagrams in one super-frame: Linux accepts at least 64
/// (`UDP_MAX_SEGMENTS`; newer kernels 128).
pub const MAX_RUN: usize = 64;

const ETH_LEN: usize = ethernet::HEADER_LEN;
/// Where the UDP header starts: right after a 20-byte IPv4 header, or
/// right after the 40-byte IPv6 header (no extension headers).
const L4: usize = ETH_LEN + ipv4::MIN_HEADER_LEN;
const L4_V6: usize = ETH_LEN + ipv6::HEADER_LEN;
/// The UDP checksum field, counted from the UDP header.
const UDP_CHECK: u16 = udp::field::CHECKSUM.start as u16;

/// A datagram that may join a run: checked once, compared field by field.
struct Datagram<'a> {
    frame: &'a [u8],
    payload: usize,
    /// Where its UDP header starts: [`L4`] for IPv4, [`L4_V6`] for IPv6.
    l4: usize,
}

impl<'a> Datagram<'a> {
    /// The frame if it is a plain IPv4/UDP or IPv6/UDP datagram with a
    /// checksum to complete.
    fn parse(vnet: &VnetHdr, frame: &'a [u8]) -> Option<Self> {
        let partial = vnet.flags & VnetHdr::NEEDS_CSUM != 0
            && !vnet.is_gso()
            && vnet.csum_offset == UDP_CHECK;
        if !partial {
            return None;
        }
        let eth = ethernet::Frame::new_checked(frame).ok()?;
        let l4 = match eth.ethertype() {
            ethernet::ethertype::IPV4 => L4,
            ethernet::ethertype::IPV6 => L4_V6,
            _ => return None,
        };
        if usize::from(vnet.csum_start) != l4 {
            return None;
        }
        // Exact lengths everywhere: no padding, which concatenation would
        // carry along.
        let udp_len = if l4 == L4 {
            let ip = ipv4::Packet::new_checked(eth.payload()).ok()?;
            // No options; UDP; neither MF nor a fragment offset.
            if ip.header_len() != ipv4::MIN_HEADER_LEN
                || ip.protocol() != ip::UDP
                || ip.is_fragment()
            {
                return None;
            }
            // Segmentation writes a fresh header checksum: a wrong one must
            // not come out right.
            if !ip.verify_checksum() || ETH_LEN + usize::from(ip.total_len()) != frame.len() {
                return None;
            }
            exact_partial_udp(ip.addresses(), ip.payload())?
        } else {
            // UDP right after the fixed header.
            let ip = ipv6::Packet::new_checked(eth.payload()).ok()?;
            if ip.next_header() != ip::UDP || l4 + usize::from(ip.payload_len()) != frame.len() {
                return None;
            }
            exact_partial_udp(ip.addresses(), ip.payload())?
        };
        Some(Datagram {
            frame,
            payload: udp_len - udp::HEADER_LEN,
            l4,
        })
    }

    /// The most payload bytes a run of these may carry: what the IP
    /// length field can say.
    fn max_run_payload(&self) -> usize {
        let headers = if self.l4 == L4 {
            ipv4::MIN_HEADER_LEN + udp::HEADER_LEN
        } else {
            udp::HEADER_LEN
        };
        usize::from(u16::MAX) - headers
    }

    fn ip(&self) -> &'a [u8] {
        &self.frame[ETH_LEN..self.l4]
    }

    fn udp(&self) -> udp::Packet<&'a [u8]> {
        udp::Packet::new_unchecked(&self.frame[self.l4..])
    }

    /// Whether `self` can be datagram number `place` of the run that
    /// `first` begins.
    fn follows(&self, first: &Datagram<'_>, place: usize) -> bool {
        if self.l4 != first.l4
            || self.frame[..ETH_LEN] != first.frame[..ETH_LEN]
            || self.payload > first.payload
            || self.udp().src_port() != first.udp().src_port()
            || self.udp().dst_port() != first.udp().dst_port()
        {
            return false;
        }
        if self.l4 == L4 {
            let (a, b) = (
                ipv4::Packet::new_unchecked(first.ip()),
                ipv4::Packet::new_unchecked(self.ip()),
            );
            // TOS; flags, TTL, protocol; addresses; the id (what
            // segmentation writes: the first one's plus the place).
            a.dscp_ecn() == b.dscp_ecn()
                && a.flags_and_offset() == b.flags_and_offset()
                && a.ttl() == b.ttl()
                && a.protocol() == b.protocol()
                && a.addresses() == b.addresses()
                && b.ident() == a.ident().wrapping_add(place as u16)
        } else {
            let (a, b) = (
                ipv6::Packet::new_unchecked(first.ip()),
                ipv6::Packet::new_unchecked(self.ip()),
            );
            // Version, traffic class, flow label; next header, hop limit,
            // addresses. (IPv6 has no id to follow.)
            a.version() == b.version()
                && a.traffic_class() == b.traffic_class()
                && a.flow_label() == b.flow_label()
                && a.next_header() == b.next_header()
                && a.hop_limit() == b.hop_limit()
                && a.addresses() == b.addresses()
        }
    }
}

/// The UDP length of the datagram that fills `ip_payload` exactly, has a
/// payload, and holds exactly the pseudo-header sum in its checksum field:
/// anything else the sender's stack would finish into something other
/// than what the switch does.
fn exact_partial_udp(addresses: &[u8], ip_payload: &[u8]) -> Option<usize> {
    let udp = udp::Packet::new_checked(ip_payload).ok()?;
    let udp_len = usize::from(udp.len());
    let exact = udp_len == ip_payload.len()
        && udp_len > udp::HEADER_LEN
        && udp.checksum() == checksum::pseudo_header_sum(addresses, ip::UDP, udp_len);
    exact.then_some(udp_len)
}

/// How many of the leading `frames` make one run: 1 when the first cannot
/// be coalesced with the second (or there is no second).
pub fn run_length(frames: &[(VnetHdr, &[u8])]) -> usize {
    let Some(first) = frames
        .first()
        .and_then(|(vnet, frame)| Datagram::parse(vnet, frame))
    else {
        return 1;
    };
    let mut total = first.payload;
    let mut run = 1;
    for (vnet, frame) in frames.iter().skip(1).take(MAX_RUN - 1) {
        let Some(next) = Datagram::parse(vnet, frame) else {
            break;
        };
        total += next.payload;
        if !next.follows(&first, run) || total > first.max_run_payload() {
            break;
        }
        run += 1;
        if next.payload < first.payload {
            break; // a shorter datagram ends the run
        }
    }
    run
}

/// Writes the super-frame for a run (as measured by [`run_length`], at
/// least two datagrams) at the end of `out`, and returns its header.
pub fn merge(run: &[(VnetHdr, &[u8])], out: &mut Vec<u8>) -> VnetHdr {
    let first = run[0].1;
    let ipv6 = ethernet::Frame::new_unchecked(first).ethertype() == ethernet::ethertype::IPV6;
    let l4 = if ipv6 { L4_V6 } else { L4 };
    let headers = l4 + udp::HEADER_LEN;
    let start = out.len();
    out.extend_from_slice(&first[..headers]);
    let mut payload = 0;
    for (_, frame) in run {
        out.extend_from_slice(&frame[headers..]);
        payload += frame.len() - headers;
    }
    let merged = &mut out[start..];
    let udp_len = (udp::HEADER_LEN + payload) as u16;
    let addresses = if ipv6 {
        // The IPv6 payload length is the UDP length: no extension headers.
        ipv6::Packet::new_unchecked(&mut merged[ETH_LEN..]).set_payload_len(udp_len);
        ipv6::field::ADDRESSES
    } else {
        let mut ip = ipv4::Packet::new_unchecked(&mut merged[ETH_LEN..]);
        ip.set_total_len(ipv4::MIN_HEADER_LEN as u16 + udp_len);
        ip.fill_checksum();
        ipv4::field::ADDRESSES
    };
    // NEEDS_CSUM: the field holds the pseudo-header sum, as the sender's
    // stack left it for each datagram, now with the run's UDP length.
    let pseudo =
        checksum::pseudo_header_sum(&merged[ETH_LEN..][addresses], ip::UDP, usize::from(udp_len));
    let mut udp = udp::Packet::new_unchecked(&mut merged[l4..]);
    udp.set_len(udp_len);
    udp.set_checksum(pseudo);
    VnetHdr {
        flags: VnetHdr::NEEDS_CSUM,
        gso_type: VnetHdr::GSO_UDP_L4,
        hdr_len: headers as u16,
        gso_size: (first.len() - headers) as u16,
        csum_start: l4 as u16,
        csum_offset: UDP_CHECK,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vnet;

    const IPV4_LEN: usize = ipv4::MIN_HEADER_LEN;
    const UDP_LEN: usize = udp::HEADER_LEN;

    fn pseudo_header_sum(addresses: &[u8], udp_len: usize) -> u16 {
        checksum::pseudo_header_sum(addresses, ip::UDP, udp_len)
    }

    /// All the headers of an IPv4 datagram that can join a run.
    const HEADERS: usize = L4 + UDP_LEN;
    const DST_MAC: [u8; 6] = [2, 0x42, 0xac, 0x11, 0, 3];
    const SRC_MAC: [u8; 6] = [2, 0x42, 0xac, 0x11, 0, 2];

    /// A datagram as a Linux sender's stack hands it to a veth: IPv4 with
    /// DF and a finished header checksum, UDP with only the pseudo-header
    /// sum in its checksum field (`NEEDS_CSUM`).
    fn datagram(id: u16, payload: &[u8]) -> (VnetHdr, Vec<u8>) {
        let udp_len = (UDP_LEN + payload.len()) as u16;
        let mut f = DST_MAC.to_vec();
        f.extend_from_slice(&SRC_MAC);
        f.extend_from_slice(&[0x08, 0x00, 0x45, 0x00]);
        f.extend_from_slice(&(IPV4_LEN as u16 + udp_len).to_be_bytes());
        f.extend_from_slice(&id.to_be_bytes());
        f.extend_from_slice(&[0x40, 0x00, 64, 17, 0, 0, 172, 17, 0, 2, 172, 17, 0, 3]);
        let ip_check = vnet::rfc1071_checksum(&f[ETH_LEN..L4]);
        f[ETH_LEN + 10..ETH_LEN + 12].copy_from_slice(&ip_check.to_be_bytes());
        with_udp(f, ETH_LEN + 12..L4, payload)
    }

    /// Appends to `f` (Ethernet and IP headers, the addresses at
    /// `addresses`) a UDP header, port 40000 to 5201, with the pseudo-header
    /// sum in its checksum field, and `payload`.
    fn with_udp(
        mut f: Vec<u8>,
        addresses: std::ops::Range<usize>,
        payload: &[u8],
    ) -> (VnetHdr, Vec<u8>) {
        let l4 = f.len();
        let udp_len = UDP_LEN + payload.len();
        f.extend_from_slice(&40000u16.to_be_bytes());
        f.extend_from_slice(&5201u16.to_be_bytes());
        f.extend_from_slice(&(udp_len as u16).to_be_bytes());
        let pseudo = pseudo_header_sum(&f[addresses], udp_len);
        f.extend_from_slice(&pseudo.to_be_bytes());
        f.extend_from_slice(payload);
        let vnet = VnetHdr {
            flags: VnetHdr::NEEDS_CSUM,
            csum_start: l4 as u16,
            csum_offset: UDP_CHECK,
            ..VnetHdr::default()
        };
        (vnet, f)
    }

    /// `count` datagrams of one flow with consecutive ids from 0xfffe (so
    /// the ids wrap), each payload `len` bytes of its own pattern.
    fn flow(count: usize, len: usize) -> Vec<(VnetHdr, Vec<u8>)> {
        (0..count)
            .map(|i| {
                let payload: Vec<u8> = (0..len).map(|j| (i * 7 + j) as u8).collect();
                datagram(0xfffe_u16.wrapping_add(i as u16), &payload)
            })
            .collect()
    }

    fn refs(frames: &[(VnetHdr, Vec<u8>)]) -> Vec<(VnetHdr, &[u8])> {
        frames.iter().map(|(v, f)| (*v, &f[..])).collect()
    }

    /// What the receiver gets for `frames`: each with its checksum completed.
    fn on_the_wire(frames: &[(VnetHdr, Vec<u8>)]) -> Vec<Vec<u8>> {
        frames
            .iter()
            .map(|(v, f)| {
                let (mut v, mut f) = (*v, f.clone());
                vnet::complete_checksum(&mut v, &mut f).unwrap();
                f
            })
            .collect()
    }

    /// Merges the run and cuts it again as the kernel's GSO would.
    fn merge_and_cut(frames: &[(VnetHdr, &[u8])]) -> (VnetHdr, Vec<Vec<u8>>) {
        let mut out = vec![0xee; 3]; // merge appends after what is there
        let vnet = merge(frames, &mut out);
        assert_eq!(out[..3], [0xee; 3]);
        let mut segments = Vec::new();
        let mut scratch = Vec::new();
        vnet::segment(&vnet, &out[3..], &mut scratch, &mut |s| {
            segments.push(s.to_vec())
        })
        .unwrap();
        (vnet, segments)
    }

    #[test]
    fn a_run_cut_again_gives_back_every_datagram_byte_for_byte() {
        for (count, len) in [(2, 18), (32, 18), (MAX_RUN, 64), (5, 1)] {
            let frames = flow(count, len);
            let frames_ref = refs(&frames);
            assert_eq!(run_length(&frames_ref), count, "{count} x {len}");
            let (vnet, segments) = merge_and_cut(&frames_ref);
            assert_eq!(vnet.gso_type, VnetHdr::GSO_UDP_L4);
            assert_eq!(vnet.flags, VnetHdr::NEEDS_CSUM);
            assert_eq!(usize::from(vnet.gso_size), len);
            assert_eq!(usize::from(vnet.hdr_len), HEADERS);
            assert_eq!(segments, on_the_wire(&frames), "{count} x {len}");
        }
    }

    #[test]
    fn a_shorter_datagram_ends_its_run_and_is_part_of_it() {
        let mut frames = flow(3, 100);
        frames.push(datagram(0xfffe_u16.wrapping_add(3), &[9; 40]));
        frames.push(datagram(0xfffe_u16.wrapping_add(4), &[8; 100]));
        let frames_ref = refs(&frames);
        assert_eq!(run_length(&frames_ref), 4);
        let (_, segments) = merge_and_cut(&frames_ref[..4]);
        assert_eq!(segments, on_the_wire(&frames[..4]));
        // The one after it starts a run of its own.
        assert_eq!(run_length(&frames_ref[4..]), 1);
    }

    #[test]
    fn a_longer_datagram_does_not_join() {
        let mut frames = flow(2, 50);
        frames.push(datagram(0xfffe_u16.wrapping_add(2), &[1; 51]));
        assert_eq!(run_length(&refs(&frames)), 2);
    }

    #[test]
    fn runs_stop_at_the_segment_limit_and_at_64_kib() {
        let frames = flow(MAX_RUN + 3, 10);
        assert_eq!(run_length(&refs(&frames)), MAX_RUN);
        // 1400-byte payloads: 46 fit in one IP packet (28 + 46 * 1400 < 65536).
        let frames = flow(50, 1400);
        assert_eq!(run_length(&refs(&frames)), 46);
        let (vnet, segments) = merge_and_cut(&refs(&frames)[..46]);
        assert_eq!(vnet.gso_size, 1400);
        assert_eq!(segments, on_the_wire(&frames[..46]));
    }

    /// Each edit makes the second datagram unfit to follow the first.
    #[test]
    fn a_datagram_that_segmentation_would_not_rebuild_starts_a_new_run() {
        type Edit = fn(&mut VnetHdr, &mut Vec<u8>);
        let edits: [(&str, Edit); 16] = [
            ("checksum already finished", |v, f| {
                vnet::complete_checksum(v, f).unwrap();
            }),
            ("checksum finished and wrong", |v, _| v.flags = 0),
            ("partial checksum not the pseudo-header sum", |_, f| {
                f[L4 + 7] ^= 1
            }),
            ("a wrong IPv4 header checksum", |_, f| f[ETH_LEN + 11] ^= 1),
            ("another destination MAC", |_, f| f[0] ^= 1),
            ("another TOS", |_, f| f[ETH_LEN + 1] = 4),
            ("id not next", |_, f| f[ETH_LEN + 5] ^= 0x10),
            ("DF cleared", |_, f| f[ETH_LEN + 6] = 0),
            ("another TTL", |_, f| f[ETH_LEN + 8] = 63),
            ("another source address", |_, f| f[ETH_LEN + 15] = 9),
            ("another destination port", |_, f| f[L4 + 3] ^= 1),
            ("a fragment", |_, f| f[ETH_LEN + 6] |= 0x20),
            ("IP options", |_, f| f[ETH_LEN] = 0x46),
            ("Ethernet padding", |_, f| f.extend_from_slice(&[0; 4])),
            ("a VLAN tag", |_, f| f[12] = 0x81),
            ("already a super-frame", |v, _| {
                v.gso_type = VnetHdr::GSO_UDP_L4
            }),
        ];
        for (what, edit) in edits {
            let mut frames = flow(3, 30);
            let (v, f) = &mut frames[1];
            edit(v, f);
            assert_eq!(run_length(&refs(&frames)), 1, "{what}");
            // Edited first, it cannot start a run either.
            let mut frames = flow(3, 30);
            let (v, f) = &mut frames[0];
            edit(v, f);
            assert_eq!(run_length(&refs(&frames)), 1, "{what}, first");
        }
    }

    /// Damaged copies of a run: whatever bytes change, `run_length` never
    /// panics, and a run it still accepts comes back byte for byte.
    #[test]
    fn random_damage_never_panics_and_accepted_runs_round_trip() {
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = move |below: usize| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % below as u64) as usize
        };
        for _ in 0..2000 {
            let (count, len) = (1 + next(6), 1 + next(40));
            let mut frames = if next(2) == 0 {
                flow(count, len)
            } else {
                flow6(count, len)
            };
            for _ in 0..next(4) {
                let which = next(frames.len());
                let (vnet, f) = &mut frames[which];
                match next(3) {
                    0 if !f.is_empty() => {
                        let at = next(f.len());
                        f[at] = next(256) as u8;
                    }
                    1 => f.truncate(next(f.len() + 1)),
                    _ => vnet.csum_start = next(60) as u16,
                }
            }
            let frames_ref = refs(&frames);
            let run = run_length(&frames_ref);
            assert!((1..=frames.len().max(1)).contains(&run));
            if run > 1 {
                let (_, segments) = merge_and_cut(&frames_ref[..run]);
                assert_eq!(segments, on_the_wire(&frames[..run]));
            }
        }
    }

    /// An IPv6 datagram from fd00::2 to fd00::3 with flow label 0x12345,
    /// as a sender's stack hands it over.
    fn datagram6(payload: &[u8]) -> (VnetHdr, Vec<u8>) {
        let udp_len = (UDP_LEN + payload.len()) as u16;
        let mut f = DST_MAC.to_vec();
        f.extend_from_slice(&SRC_MAC);
        f.extend_from_slice(&[0x86, 0xdd, 0x60, 0x01, 0x23, 0x45]);
        f.extend_from_slice(&udp_len.to_be_bytes());
        f.extend_from_slice(&[17, 64]);
        for host in [2u8, 3] {
            f.extend_from_slice(&[0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, host]);
        }
        with_udp(f, ETH_LEN + 8..L4_V6, payload)
    }

    fn flow6(count: usize, len: usize) -> Vec<(VnetHdr, Vec<u8>)> {
        (0..count)
            .map(|i| datagram6(&(0..len).map(|j| (i * 11 + j) as u8).collect::<Vec<_>>()))
            .collect()
    }

    #[test]
    fn an_ipv6_run_cut_again_gives_back_every_datagram_byte_for_byte() {
        for (count, len) in [(2, 18), (MAX_RUN, 64), (7, 1)] {
            let frames = flow6(count, len);
            let frames_ref = refs(&frames);
            assert_eq!(run_length(&frames_ref), count, "{count} x {len}");
            let (vnet, segments) = merge_and_cut(&frames_ref);
            assert_eq!((vnet.csum_start, vnet.hdr_len), (54, 62));
            assert_eq!(segments, on_the_wire(&frames), "{count} x {len}");
        }
        // A run within one IPv6 payload: 1400-byte datagrams, 46 of them.
        let frames = flow6(50, 1400);
        assert_eq!(run_length(&refs(&frames)), 46);
        let mut frames = flow6(3, 30);
        frames.push(datagram6(&[5; 12]));
        assert_eq!(run_length(&refs(&frames)), 4, "a shorter one ends the run");
        let (_, segments) = merge_and_cut(&refs(&frames));
        assert_eq!(segments, on_the_wire(&frames));
    }

    #[test]
    fn an_ipv6_datagram_that_segmentation_would_not_rebuild_starts_a_new_run() {
        type Edit = fn(&mut VnetHdr, &mut Vec<u8>);
        let edits: [(&str, Edit); 7] = [
            ("another flow label", |_, f| f[ETH_LEN + 3] ^= 1),
            ("another traffic class", |_, f| f[ETH_LEN + 1] ^= 0x10),
            ("another hop limit", |_, f| f[ETH_LEN + 7] = 63),
            ("another source address", |_, f| f[ETH_LEN + 23] = 9),
            ("an extension header", |_, f| f[ETH_LEN + 6] = 0),
            ("partial checksum not the pseudo-header sum", |_, f| {
                f[L4_V6 + 7] ^= 1
            }),
            ("Ethernet padding", |_, f| f.extend_from_slice(&[0; 4])),
        ];
        for (what, edit) in edits {
            let mut frames = flow6(3, 30);
            let (v, f) = &mut frames[1];
            edit(v, f);
            assert_eq!(run_length(&refs(&frames)), 1, "{what}");
        }
        // IPv4 and IPv6 never share a run.
        let mixed = [flow(1, 30).remove(0), datagram6(&[0; 30])];
        assert_eq!(run_length(&refs(&mixed)), 1);
        let mixed = [datagram6(&[0; 30]), flow(1, 30).remove(0)];
        assert_eq!(run_length(&refs(&mixed)), 1);
    }

    #[test]
    fn frames_that_are_not_ipv4_udp_stay_alone() {
        let (vnet, mut tcp) = datagram(1, &[0; 20]);
        tcp[ETH_LEN + 9] = 6;
        let short = &tcp[..HEADERS - 1];
        let frames = [
            (vnet, &tcp[..]),
            (vnet, &tcp[..]),
            (vnet, short),
            (vnet, short),
        ];
        assert_eq!(run_length(&frames), 1);
        assert_eq!(run_length(&frames[2..]), 1);
        assert_eq!(run_length(&[]), 1);
        // An empty UDP payload cannot be a segment.
        let empty = flow(3, 0);
        assert_eq!(run_length(&refs(&empty)), 1);
    }
}
