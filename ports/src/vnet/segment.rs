//! Software GSO: a super-frame cut into wire-sized plain frames, as the
//! kernel's `tcp_gso_segment`, `__udp_gso_segment` and `inet_gso_segment`
//! cut it. [`plan`] checks everything first; [`cut`] is the one loop that
//! copies the headers and a piece of the body into each segment; the
//! finishers write what differs per segment.

use super::checksum::complete_checksum;
use super::layers::{IpVersion, Layers, parse_layers};
use super::{MAX_SEGMENTS, OffloadError, VnetHdr};
use crate::wire::checksum::{fold, ones_complement_sum, transport_checksum};
use crate::wire::{self, ip, ipv4, ipv6, tcp, udp};

/// Cuts a GSO super-frame into wire-sized plain frames, calling `emit` with
/// each (in order). `scratch` is reused between calls to avoid allocating.
/// Returns the number of segments.
///
/// A frame without GSO comes out as one frame with its checksum completed;
/// so does a GSO frame whose payload fits in one segment, or whose
/// `gso_size` is 0 (which the kernel refuses; here it means "do not cut").
/// Every check is made before the first `emit`: an error means no output.
pub fn segment(
    vnet: &VnetHdr,
    frame: &[u8],
    scratch: &mut Vec<u8>,
    emit: &mut dyn FnMut(&[u8]),
) -> Result<usize, OffloadError> {
    let gso = match vnet.gso_type & !VnetHdr::GSO_ECN {
        VnetHdr::GSO_NONE => {
            scratch.clear();
            scratch.extend_from_slice(frame);
            let mut vnet = *vnet;
            complete_checksum(&mut vnet, scratch)?;
            emit(scratch);
            return Ok(1);
        }
        VnetHdr::GSO_TCPV4 => Gso::Tcp(IpVersion::V4),
        VnetHdr::GSO_TCPV6 => Gso::Tcp(IpVersion::V6),
        VnetHdr::GSO_UDP_L4 => Gso::Udp,
        VnetHdr::GSO_UDP => Gso::UdpFragments,
        _ => return Err(OffloadError::UnsupportedGso(vnet.gso_type)),
    };
    let plan = plan(vnet, &gso, frame)?;
    match gso {
        Gso::Tcp(_) | Gso::Udp => {
            let finisher = TransportSegments::new(&plan, frame);
            cut(&plan, frame, scratch, emit, |s, piece| {
                finisher.finish(s, piece)
            });
        }
        Gso::UdpFragments => {
            let finisher = UdpFragments::new(&plan, frame);
            cut(&plan, frame, scratch, emit, |s, piece| {
                finisher.finish(s, piece)
            });
        }
    }
    Ok(plan.count)
}

/// What a GSO type asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Gso {
    /// TSO: TCP segments over the IP version the type names.
    Tcp(IpVersion),
    /// USO (`GSO_UDP_L4`): one UDP datagram per segment, IPv4 or IPv6.
    Udp,
    /// UFO (`GSO_UDP`): one UDP datagram in IPv4 fragments.
    UdpFragments,
}

/// A checked GSO frame: everything the cutting loop needs, all in bounds.
#[derive(Debug)]
struct Plan {
    layers: Layers,
    /// Where the cut body starts, and so how much of the frame every
    /// segment copies as headers: after the transport header for TSO/USO;
    /// `l4` itself for UFO, which cuts the whole datagram.
    payload: usize,
    /// Body bytes per segment (for UFO a multiple of 8).
    size: usize,
    count: usize,
    /// Ones' complement sum of the pseudo-header without its length.
    pseudo: u32,
}

/// Parses and checks a GSO frame against its header; after this every
/// offset the cutting loop touches is inside the frame.
fn plan(vnet: &VnetHdr, gso: &Gso, frame: &[u8]) -> Result<Plan, OffloadError> {
    let layers = parse_layers(frame)?;
    let version_ok = match gso {
        Gso::Tcp(version) => layers.ip == *version,
        Gso::Udp => true,
        // UFO over IPv6 needs a fragment identification, which the kernel
        // keeps beside the skb and the virtio-net header does not carry.
        Gso::UdpFragments if layers.ip == IpVersion::V6 => {
            return Err(OffloadError::UnsupportedGso(vnet.gso_type));
        }
        Gso::UdpFragments => true,
    };
    if !version_ok {
        return Err(OffloadError::BadHeaders(
            "GSO type names the other IP version",
        ));
    }
    if layers.fragment {
        return Err(OffloadError::BadHeaders("GSO on an IP fragment"));
    }
    // GSO frames come straight from a stack: no padding, and nothing after
    // the IP packet that would end up as payload.
    if layers.end != frame.len() {
        return Err(OffloadError::BadHeaders(
            "IP length does not match the frame length",
        ));
    }
    let (proto, checksum_offset) = match gso {
        Gso::Tcp(_) => (ip::TCP, tcp::field::CHECKSUM.start),
        Gso::Udp | Gso::UdpFragments => (ip::UDP, udp::field::CHECKSUM.start),
    };
    if layers.proto != proto {
        return Err(OffloadError::BadHeaders(
            "GSO type names another transport protocol",
        ));
    }
    let l4 = layers.l4;
    let transport = &frame[l4..layers.end];
    let transport_len = match gso {
        Gso::Tcp(_) => tcp::Packet::new_checked(transport)
            .map_err(|e| match e {
                wire::Error::HeaderLength => OffloadError::BadHeaders("TCP data offset below 5"),
                _ => OffloadError::Truncated,
            })?
            .header_len(),
        Gso::Udp | Gso::UdpFragments => {
            // Only the header: its length field is rewritten per segment.
            if transport.len() < udp::HEADER_LEN {
                return Err(OffloadError::Truncated);
            }
            udp::HEADER_LEN
        }
    };
    // The checksum is recomputed from the parsed headers either way; an
    // offset pointing elsewhere means the header and the frame disagree.
    if vnet.flags & VnetHdr::NEEDS_CSUM != 0
        && (usize::from(vnet.csum_start) != l4 || usize::from(vnet.csum_offset) != checksum_offset)
    {
        return Err(OffloadError::BadHeaders(
            "checksum offsets disagree with the headers",
        ));
    }
    let payload = match gso {
        Gso::Tcp(_) | Gso::Udp => l4 + transport_len,
        Gso::UdpFragments => {
            // Fragments carry the datagram untouched, so its length must be right.
            if usize::from(udp::Packet::new_unchecked(transport).len()) != transport.len() {
                return Err(OffloadError::BadHeaders(
                    "UDP length does not match the IP length",
                ));
            }
            l4
        }
    };
    let payload_len = layers.end - payload;
    let size = match (gso, usize::from(vnet.gso_size)) {
        (_, 0) => payload_len.max(1),
        // Fragment offsets count 8-byte units.
        (Gso::UdpFragments, size) if size < 8 => {
            return Err(OffloadError::BadHeaders(
                "UFO gso_size below one 8-byte fragment unit",
            ));
        }
        (Gso::UdpFragments, size) => size & !7,
        (_, size) => size,
    };
    let count = payload_len.div_ceil(size).max(1);
    if count > MAX_SEGMENTS {
        return Err(OffloadError::TooManySegments(count));
    }
    let pseudo = u32::from(fold(ones_complement_sum(
        layers.addresses(frame),
        u32::from(proto),
    )));
    Ok(Plan {
        layers,
        payload,
        size,
        count,
        pseudo,
    })
}

/// Which piece of the body a segment carries.
#[derive(Debug, Clone, Copy)]
struct Piece {
    index: usize,
    /// Where the piece starts in the body.
    offset: usize,
    last: bool,
}

/// The one cutting loop: each segment is the frame's headers (everything
/// before `plan.payload`) and the next `plan.size` bytes of the body, handed
/// to `finish` to fix its headers, then to `emit`.
fn cut(
    plan: &Plan,
    frame: &[u8],
    scratch: &mut Vec<u8>,
    emit: &mut dyn FnMut(&[u8]),
    mut finish: impl FnMut(&mut [u8], Piece),
) {
    let headers = plan.payload;
    let body = &frame[headers..plan.layers.end];
    scratch.clear();
    scratch.reserve(headers + plan.size);
    scratch.extend_from_slice(&frame[..headers]);
    for index in 0..plan.count {
        let offset = index * plan.size;
        let to = (offset + plan.size).min(body.len());
        scratch.truncate(headers);
        scratch.extend_from_slice(&body[offset..to]);
        let piece = Piece {
            index,
            offset,
            last: index + 1 == plan.count,
        };
        finish(scratch.as_mut_slice(), piece);
        emit(scratch);
    }
}

/// TSO and USO: every segment is a whole TCP segment or UDP datagram.
struct TransportSegments {
    layers: Layers,
    pseudo: u32,
    ip_id: u16,
    /// The super-frame's sequence number and flags (TCP only).
    seq: u32,
    tcp_flags: u8,
}

impl TransportSegments {
    fn new(plan: &Plan, frame: &[u8]) -> Self {
        let layers = plan.layers;
        let ip_id = match layers.ip {
            IpVersion::V4 => ipv4::Packet::new_unchecked(&frame[layers.l3..]).ident(),
            IpVersion::V6 => 0,
        };
        // Read only for TCP: a UDP frame may end right after its 8-byte header.
        let (seq, tcp_flags) = if layers.proto == ip::TCP {
            let tcp = tcp::Packet::new_unchecked(&frame[layers.l4..]);
            (tcp.seq_number(), tcp.flags())
        } else {
            (0, 0)
        };
        TransportSegments {
            layers,
            pseudo: plan.pseudo,
            ip_id,
            seq,
            tcp_flags,
        }
    }

    fn finish(&self, segment: &mut [u8], piece: Piece) {
        let Layers { ip, l3, l4, .. } = self.layers;
        match ip {
            // Linux gives each segment the next id (inet_gso_segment) unless
            // the sender asked for fixed ids, which virtio cannot say.
            IpVersion::V4 => {
                let id = self.ip_id.wrapping_add(piece.index as u16);
                finish_ipv4(&mut segment[l3..], id, None);
            }
            IpVersion::V6 => {
                let payload_len = (segment.len() - l3 - ipv6::HEADER_LEN) as u16;
                ipv6::Packet::new_unchecked(&mut segment[l3..]).set_payload_len(payload_len);
            }
        }
        let transport = &mut segment[l4..];
        let transport_len = transport.len();
        if self.layers.proto == ip::TCP {
            let mut tcp = tcp::Packet::new_unchecked(&mut *transport);
            tcp.set_seq_number(self.seq.wrapping_add(piece.offset as u32));
            // tcp_gso_segment: FIN and PSH end the data, so only the last
            // segment keeps them; CWR answers ECE once, on the first.
            let mut flags = self.tcp_flags;
            if !piece.last {
                flags &= !(tcp::flags::FIN | tcp::flags::PSH);
            }
            if piece.index > 0 {
                flags &= !tcp::flags::CWR;
            }
            tcp.set_flags(flags);
            tcp.set_checksum(0);
            let sum = transport_checksum(transport, self.pseudo + transport_len as u32);
            tcp::Packet::new_unchecked(transport).set_checksum(sum);
        } else {
            let mut udp = udp::Packet::new_unchecked(&mut *transport);
            udp.set_len(transport_len as u16);
            udp.set_checksum(0);
            let sum = transport_checksum(transport, self.pseudo + transport_len as u32);
            udp::Packet::new_unchecked(transport).set_checksum(sum);
        }
    }
}

/// UFO: one UDP datagram, checksummed whole, cut into IPv4 fragments that
/// share its id (RFC 791).
struct UdpFragments {
    l3: usize,
    l4: usize,
    count: usize,
    ip_id: u16,
    checksum: u16,
}

impl UdpFragments {
    fn new(plan: &Plan, frame: &[u8]) -> Self {
        let Layers { l3, l4, end, .. } = plan.layers;
        let datagram = &frame[l4..end];
        // The checksum field itself counts as zero: sum around it.
        let field = udp::field::CHECKSUM;
        let sum = ones_complement_sum(
            &datagram[..field.start],
            plan.pseudo + datagram.len() as u32,
        );
        UdpFragments {
            l3,
            l4,
            count: plan.count,
            ip_id: ipv4::Packet::new_unchecked(&frame[l3..]).ident(),
            checksum: transport_checksum(&datagram[field.end..], sum),
        }
    }

    fn finish(&self, segment: &mut [u8], piece: Piece) {
        if piece.index == 0 {
            udp::Packet::new_unchecked(&mut segment[self.l4..]).set_checksum(self.checksum);
        }
        // A datagram that fits keeps its flags (DF included); fragments get
        // offset and MF, and lose DF as in inet_gso_segment.
        let frag_off = (self.count > 1).then(|| {
            let more = if piece.last { 0 } else { ipv4::MORE_FRAGMENTS };
            (piece.offset / 8) as u16 | more
        });
        finish_ipv4(&mut segment[self.l3..], self.ip_id, frag_off);
    }
}

/// Sets an IPv4 header's total length (the packet ends at the end of
/// `packet`), id, optionally its fragment field, and its checksum.
fn finish_ipv4(packet: &mut [u8], id: u16, frag_off: Option<u16>) {
    let total_len = packet.len() as u16;
    let mut ip = ipv4::Packet::new_unchecked(packet);
    ip.set_total_len(total_len);
    ip.set_ident(id);
    if let Some(frag_off) = frag_off {
        ip.set_flags_and_offset(frag_off);
    }
    ip.fill_checksum();
}
