//! The virtio-net header (`struct virtio_net_hdr`, include/uapi/linux/virtio_net.h),
//! and what to do for a port that cannot take it.
//!
//! With `PACKET_VNET_HDR` on a packet socket, or `IFF_VNET_HDR` on a TAP,
//! every frame read or written is preceded by these 10 bytes. They say
//! whether the frame's L4 checksum still has to be completed
//! (`NEEDS_CSUM`: the checksum field holds only the pseudo-header sum) and
//! whether the frame is a GSO super-frame to be cut into `gso_size`-byte
//! segments. Passing the header along lets a 64 KiB TCP super-frame cross
//! the switch as one frame instead of 45, which is where a userspace switch
//! gets its speed.
//!
//! Fields are in native byte order (the kernel's `virtio_legacy_is_little_endian`
//! on x86 and arm64).
//!
//! # Ports without the header
//!
//! A plain TAP, the gateway and a pcap file need wire frames.
//! [`complete_checksum`] finishes a partial checksum in place, and
//! [`segment`] does in software what the kernel's GSO does
//! (`tcp_gso_segment`, `__udp_gso_segment`, `inet_gso_segment`,
//! `ipv6_gso_segment`): one frame per `gso_size` bytes of payload, each with
//! its own lengths, IPv4 id, TCP sequence number and flags, and checksums.
//!
//! Frames come from containers, so every byte is hostile. The headers are
//! found by parsing the frame, never from `hdr_len`: packet sockets fill it
//! with `skb_headlen()`, which may include payload, and a sender may put
//! anything there. Everything is checked before the first segment goes out,
//! so a bad frame yields an [`OffloadError`] and no segments at all.
//!
//! Not supported (each an [`OffloadError`]): UFO (`GSO_UDP`) over IPv6,
//! which needs a fragment id the header does not carry; IPv6 routing headers
//! with segments left (the pseudo-header would need the final destination);
//! IPv4 "BIG TCP" frames over 64 KiB and IPv6 jumbograms; tunnels (the
//! 12-byte and larger headers with `GSO_UDP_TUNNEL` are never negotiated).

/// The 10-byte virtio-net header.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VnetHdr {
    pub flags: u8,
    pub gso_type: u8,
    /// Length of the headers (Ethernet + IP + TCP/UDP) of a GSO frame.
    pub hdr_len: u16,
    /// Payload bytes per segment of a GSO frame.
    pub gso_size: u16,
    /// Where checksumming starts (the L4 header), with `NEEDS_CSUM`.
    pub csum_start: u16,
    /// Where the checksum field is, counted from `csum_start`.
    pub csum_offset: u16,
}

impl VnetHdr {
    pub const LEN: usize = 10;

    /// The L4 checksum must be completed: the field holds the pseudo-header sum.
    pub const NEEDS_CSUM: u8 = 1;
    /// The checksum was already verified (receive side only).
    pub const DATA_VALID: u8 = 2;

    pub const GSO_NONE: u8 = 0;
    pub const GSO_TCPV4: u8 = 1;
    pub const GSO_UDP: u8 = 3;
    pub const GSO_TCPV6: u8 = 4;
    pub const GSO_UDP_L4: u8 = 5;
    /// The TCP super-frame carried ECN CWR: only the first segment keeps it.
    pub const GSO_ECN: u8 = 0x80;

    /// No checksum to complete and nothing to segment: the frame is as it
    /// would be on the wire.
    pub fn is_plain(&self) -> bool {
        // Written with is_gso so the two can never disagree: a lone ECN bit
        // (gso_type 0x80) is no GSO, and a frame that is neither plain nor
        // GSO would have nowhere to go.
        self.flags & Self::NEEDS_CSUM == 0 && !self.is_gso()
    }

    pub fn is_gso(&self) -> bool {
        self.gso_type & !Self::GSO_ECN != Self::GSO_NONE
    }

    pub fn from_bytes(b: &[u8; Self::LEN]) -> Self {
        let u16_at = |i: usize| u16::from_ne_bytes([b[i], b[i + 1]]);
        VnetHdr {
            flags: b[0],
            gso_type: b[1],
            hdr_len: u16_at(2),
            gso_size: u16_at(4),
            csum_start: u16_at(6),
            csum_offset: u16_at(8),
        }
    }

    pub fn to_bytes(&self) -> [u8; Self::LEN] {
        let mut b = [0u8; Self::LEN];
        b[0] = self.flags;
        b[1] = self.gso_type;
        b[2..4].copy_from_slice(&self.hdr_len.to_ne_bytes());
        b[4..6].copy_from_slice(&self.gso_size.to_ne_bytes());
        b[6..8].copy_from_slice(&self.csum_start.to_ne_bytes());
        b[8..10].copy_from_slice(&self.csum_offset.to_ne_bytes());
        b
    }

    /// Moves the header offsets by `delta` bytes, for a VLAN tag put into
    /// (+4) or taken out of (-4) the frame ahead of the L3 header.
    pub fn shift_offsets(&mut self, delta: i16) {
        if self.flags & Self::NEEDS_CSUM != 0 {
            self.csum_start = self.csum_start.saturating_add_signed(delta);
        }
        if self.hdr_len != 0 {
            self.hdr_len = self.hdr_len.saturating_add_signed(delta);
        }
    }
}

/// Why an offloaded frame could not be turned into plain frames.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OffloadError {
    /// The frame is shorter than its headers, its IP length or the offload
    /// header say.
    Truncated,
    /// A GSO type this switch does not segment in software.
    UnsupportedGso(u8),
    /// Headers that GSO cannot apply to (not IPv4/IPv6 + TCP/UDP as announced).
    BadHeaders(&'static str),
    /// `gso_size` so small that the frame would make more than
    /// [`MAX_SEGMENTS`] segments.
    TooManySegments(usize),
}

impl std::fmt::Display for OffloadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OffloadError::Truncated => {
                write!(f, "frame is shorter than its headers or offload header say")
            }
            OffloadError::UnsupportedGso(t) => write!(f, "GSO type {t} is not supported"),
            OffloadError::BadHeaders(what) => write!(f, "GSO frame with bad headers: {what}"),
            OffloadError::TooManySegments(n) => write!(
                f,
                "GSO frame would make {n} segments, more than the {MAX_SEGMENTS} a real stack sends"
            ),
        }
    }
}

impl std::error::Error for OffloadError {}

/// The most segments one GSO frame may be cut into. Linux sends TCP with an
/// MSS of at least 48 bytes (`tcp_min_snd_mss`), so a 64 KiB super-frame has
/// at most 1366 segments, and it caps USO at 128 (`UDP_MAX_SEGMENTS`). A
/// frame asking for more is not from a real stack, and cutting 64 KiB into
/// 1-byte segments would cost the switch far more than it cost the sender.
pub const MAX_SEGMENTS: usize = 2048;

/// Completes a partial checksum (`NEEDS_CSUM`) in place: the field at
/// `csum_start + csum_offset` holds the pseudo-header sum, and the Internet
/// checksum over `frame[csum_start..]` finishes it. Clears `NEEDS_CSUM`.
///
/// When the frame parses as IPv4/IPv6 and `csum_start` is where its
/// transport header is, the sum stops at the end of the IP packet (padding
/// after it is not part of the checksum), and an SCTP packet gets its CRC32c
/// instead: veth offloads SCTP checksums too (`NETIF_F_SCTP_CRC`), and the
/// packet socket reports them with the same flag.
pub fn complete_checksum(vnet: &mut VnetHdr, frame: &mut [u8]) -> Result<(), OffloadError> {
    if vnet.flags & VnetHdr::NEEDS_CSUM == 0 {
        return Ok(());
    }
    let start = usize::from(vnet.csum_start);
    let offset = usize::from(vnet.csum_offset);
    let mut end = frame.len();
    let mut sctp = false;
    if let Ok(layers) = parse_layers(frame)
        && layers.l4 == start
    {
        end = layers.end;
        sctp = layers.proto == IPPROTO_SCTP && offset == SCTP_CHECKSUM_OFFSET;
    }
    let field_len = if sctp { 4 } else { 2 };
    if start + offset + field_len > end {
        return Err(OffloadError::Truncated);
    }
    let packet = &mut frame[start..end];
    if sctp {
        // RFC 9260 appendix A: CRC32c over the packet with the field zeroed,
        // stored least significant byte first (Linux: cpu_to_le32).
        packet[offset..offset + 4].fill(0);
        let crc = crc32c(packet);
        packet[offset..offset + 4].copy_from_slice(&crc.to_le_bytes());
    } else {
        let sum = internet_checksum(packet, 0);
        packet[offset..offset + 2].copy_from_slice(&sum.to_be_bytes());
    }
    vnet.flags &= !VnetHdr::NEEDS_CSUM;
    Ok(())
}

/// The 32-bit running ones' complement sum of `data` (big-endian 16-bit
/// words, an odd last byte padded with zero), added to `initial`.
///
/// Sums of pieces add up to the sum of the whole as long as every piece but
/// the last has an even length.
pub fn ones_complement_sum(data: &[u8], initial: u32) -> u32 {
    // RFC 1071 section 2(B): the sum does not depend on byte order. So add
    // native-endian 32-bit words into a u64 (a loop the compiler
    // vectorizes, with no carries to track) and swap the folded 16-bit
    // result once. A block of 1 MiB is 2^18 words of < 2^32: no overflow.
    let mut native: u64 = 0;
    for block in data.chunks(1 << 20) {
        let mut acc: u64 = 0;
        let mut words = block.chunks_exact(4);
        for w in &mut words {
            acc += u64::from(u32::from_ne_bytes([w[0], w[1], w[2], w[3]]));
        }
        // Zero padding after the last bytes is the "odd byte padded with
        // zero" of the big-endian definition, whatever the native order.
        let mut tail = [0u8; 4];
        tail[..words.remainder().len()].copy_from_slice(words.remainder());
        acc += u64::from(u32::from_ne_bytes(tail));
        native += u64::from(fold64(acc));
    }
    let native = fold64(native);
    let big_endian = if cfg!(target_endian = "little") {
        native.swap_bytes()
    } else {
        native
    };
    let sum = u64::from(initial) + u64::from(big_endian);
    ((sum & 0xffff_ffff) + (sum >> 32)) as u32
}

/// Folds a 32-bit ones' complement sum to 16 bits.
pub fn fold(sum: u32) -> u16 {
    fold64(u64::from(sum))
}

fn fold64(mut sum: u64) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

/// The Internet checksum of `data` (whose checksum field is zero or holds
/// the pseudo-header sum) on top of `initial`, ready to store.
/// The Internet checksum (RFC 1071) of `data`, ready to store: what an
/// IPv4 header or an ICMP message carries.
pub fn rfc1071_checksum(data: &[u8]) -> u16 {
    !fold(ones_complement_sum(data, 0))
}

fn internet_checksum(data: &[u8], initial: u32) -> u16 {
    // RFC 768: a computed UDP checksum of zero is sent as all ones, because
    // zero means "no checksum". For TCP the two are the same value in ones'
    // complement, and Linux stores all ones too (CSUM_MANGLED_0).
    match !fold(ones_complement_sum(data, initial)) {
        0 => 0xffff,
        sum => sum,
    }
}

/// CRC32c (Castagnoli, reflected polynomial 0x82f63b78), SCTP's checksum.
fn crc32c(data: &[u8]) -> u32 {
    const TABLE: [u32; 256] = {
        let mut table = [0u32; 256];
        let mut i = 0;
        while i < 256 {
            let mut crc = i as u32;
            let mut bit = 0;
            while bit < 8 {
                crc = if crc & 1 != 0 {
                    (crc >> 1) ^ 0x82f6_3b78
                } else {
                    crc >> 1
                };
                bit += 1;
            }
            table[i] = crc;
            i += 1;
        }
        table
    };
    let crc = data.iter().fold(!0u32, |crc, &b| {
        TABLE[usize::from(crc as u8 ^ b)] ^ (crc >> 8)
    });
    !crc
}

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
        Gso::Tcp(_) | Gso::Udp => cut_transport(&plan, frame, scratch, emit),
        Gso::UdpFragments => cut_ip_fragments(&plan, frame, scratch, emit),
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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum IpVersion {
    V4,
    V6,
}

const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_IPV6: u16 = 0x86dd;
/// 802.1Q (C-tag), 802.1ad (S-tag) and the pre-standard QinQ tag.
const VLAN_TPIDS: [u16; 3] = [0x8100, 0x88a8, 0x9100];
const MAX_VLAN_TAGS: usize = 2;
const ETH_HLEN: usize = 14;

const IPPROTO_HOPOPTS: u8 = 0;
const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;
const IPPROTO_ROUTING: u8 = 43;
const IPPROTO_FRAGMENT: u8 = 44;
const IPPROTO_DSTOPTS: u8 = 60;
const IPPROTO_SCTP: u8 = 132;
/// RFC 8200 section 4.1 allows each at most once (Destination Options
/// twice), so 8 is generous; the limit bounds the walk.
const MAX_IPV6_EXTENSIONS: usize = 8;

const IPV4_MIN_HLEN: usize = 20;
const IPV6_HLEN: usize = 40;
const TCP_MIN_HLEN: usize = 20;
const UDP_HLEN: usize = 8;
const TCP_CHECKSUM_OFFSET: usize = 16;
const UDP_CHECKSUM_OFFSET: usize = 6;
const SCTP_CHECKSUM_OFFSET: usize = 8;

const IPV4_MORE_FRAGMENTS: u16 = 0x2000;
const IPV4_FRAGMENT_OFFSET: u16 = 0x1fff;
const TCP_FIN: u8 = 0x01;
const TCP_PSH: u8 = 0x08;
const TCP_CWR: u8 = 0x80;

/// Where the layers of a frame are, found by parsing it.
#[derive(Debug, Clone, Copy)]
struct Layers {
    ip: IpVersion,
    /// Offset of the IP header (after the VLAN tags).
    l3: usize,
    /// Offset of the transport header (after IPv4 options or IPv6
    /// extension headers).
    l4: usize,
    /// The transport protocol: IPv4 protocol, or the last IPv6 next header.
    proto: u8,
    /// The end of the IP packet by its length field (never past the frame).
    end: usize,
    /// The packet is an IP fragment: it has no whole transport header.
    fragment: bool,
}

/// A checked GSO frame: everything the cutting loops need, all in bounds.
#[derive(Debug)]
struct Plan {
    layers: Layers,
    /// Where the payload starts: the transport header length after `l4`
    /// for TSO/USO; `l4` itself for UFO, which cuts the whole datagram.
    payload: usize,
    /// Payload bytes per segment (for UFO a multiple of 8).
    size: usize,
    count: usize,
    /// Ones' complement sum of the pseudo-header without its length.
    pseudo: u32,
}

fn be16(frame: &[u8], at: usize) -> Result<u16, OffloadError> {
    match frame.get(at..at + 2) {
        Some(&[hi, lo]) => Ok(u16::from_be_bytes([hi, lo])),
        _ => Err(OffloadError::Truncated),
    }
}

fn put16(frame: &mut [u8], at: usize, value: u16) {
    frame[at..at + 2].copy_from_slice(&value.to_be_bytes());
}

/// Finds the IP and transport headers behind the Ethernet header and up to
/// two VLAN tags.
fn parse_layers(frame: &[u8]) -> Result<Layers, OffloadError> {
    let mut l3 = ETH_HLEN;
    let mut ethertype = be16(frame, ETH_HLEN - 2)?;
    let mut tags = 0;
    while VLAN_TPIDS.contains(&ethertype) {
        if tags == MAX_VLAN_TAGS {
            return Err(OffloadError::BadHeaders("more than two VLAN tags"));
        }
        ethertype = be16(frame, l3 + 2)?;
        l3 += 4;
        tags += 1;
    }
    match ethertype {
        ETHERTYPE_IPV4 => parse_ipv4(frame, l3),
        ETHERTYPE_IPV6 => parse_ipv6(frame, l3),
        _ => Err(OffloadError::BadHeaders("neither IPv4 nor IPv6")),
    }
}

fn parse_ipv4(frame: &[u8], l3: usize) -> Result<Layers, OffloadError> {
    let ip = frame
        .get(l3..l3 + IPV4_MIN_HLEN)
        .ok_or(OffloadError::Truncated)?;
    if ip[0] >> 4 != 4 {
        return Err(OffloadError::BadHeaders(
            "IPv4 ethertype on a non-IPv4 header",
        ));
    }
    let header_len = usize::from(ip[0] & 0x0f) * 4;
    if header_len < IPV4_MIN_HLEN {
        return Err(OffloadError::BadHeaders("IPv4 header length below 20"));
    }
    let total_len = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
    if total_len < header_len {
        return Err(OffloadError::BadHeaders(
            "IPv4 total length below its header length",
        ));
    }
    let end = l3 + total_len;
    if end > frame.len() {
        return Err(OffloadError::Truncated);
    }
    let frag_off = u16::from_be_bytes([ip[6], ip[7]]);
    Ok(Layers {
        ip: IpVersion::V4,
        l3,
        l4: l3 + header_len,
        proto: ip[9],
        end,
        fragment: frag_off & (IPV4_MORE_FRAGMENTS | IPV4_FRAGMENT_OFFSET) != 0,
    })
}

fn parse_ipv6(frame: &[u8], l3: usize) -> Result<Layers, OffloadError> {
    let ip = frame
        .get(l3..l3 + IPV6_HLEN)
        .ok_or(OffloadError::Truncated)?;
    if ip[0] >> 4 != 6 {
        return Err(OffloadError::BadHeaders(
            "IPv6 ethertype on a non-IPv6 header",
        ));
    }
    let payload_len = usize::from(u16::from_be_bytes([ip[4], ip[5]]));
    if payload_len == 0 && ip[6] == IPPROTO_HOPOPTS {
        return Err(OffloadError::BadHeaders("IPv6 jumbogram (BIG TCP)"));
    }
    let end = l3 + IPV6_HLEN + payload_len;
    if end > frame.len() {
        return Err(OffloadError::Truncated);
    }
    let mut proto = ip[6];
    let mut l4 = l3 + IPV6_HLEN;
    let mut extensions = 0;
    while matches!(proto, IPPROTO_HOPOPTS | IPPROTO_ROUTING | IPPROTO_DSTOPTS) {
        if extensions == MAX_IPV6_EXTENSIONS {
            return Err(OffloadError::BadHeaders("too many IPv6 extension headers"));
        }
        extensions += 1;
        let ext = frame.get(l4..l4 + 8).filter(|_| l4 + 8 <= end);
        let ext = ext.ok_or(OffloadError::Truncated)?;
        if proto == IPPROTO_ROUTING && ext[3] != 0 {
            // The pseudo-header would need the final destination, which is
            // somewhere inside the routing header.
            return Err(OffloadError::BadHeaders(
                "IPv6 routing header with segments left",
            ));
        }
        proto = ext[0];
        l4 += (usize::from(ext[1]) + 1) * 8;
        if l4 > end {
            return Err(OffloadError::Truncated);
        }
    }
    // AH and ESP end the walk too: GSO cannot apply behind them, and the
    // transport protocol check then refuses the frame.
    Ok(Layers {
        ip: IpVersion::V6,
        l3,
        l4,
        proto,
        end,
        fragment: proto == IPPROTO_FRAGMENT,
    })
}

/// Parses and checks a GSO frame against its header; after this every
/// offset the cutting loops touch is inside the frame.
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
        Gso::Tcp(_) => (IPPROTO_TCP, TCP_CHECKSUM_OFFSET),
        Gso::Udp | Gso::UdpFragments => (IPPROTO_UDP, UDP_CHECKSUM_OFFSET),
    };
    if layers.proto != proto {
        return Err(OffloadError::BadHeaders(
            "GSO type names another transport protocol",
        ));
    }
    let l4 = layers.l4;
    let transport_len = match gso {
        Gso::Tcp(_) => {
            let data_offset = frame
                .get(l4 + 12)
                .filter(|_| l4 + TCP_MIN_HLEN <= layers.end)
                .ok_or(OffloadError::Truncated)?
                >> 4;
            let len = usize::from(data_offset) * 4;
            if len < TCP_MIN_HLEN {
                return Err(OffloadError::BadHeaders("TCP data offset below 5"));
            }
            len
        }
        Gso::Udp | Gso::UdpFragments => UDP_HLEN,
    };
    if l4 + transport_len > layers.end {
        return Err(OffloadError::Truncated);
    }
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
            if usize::from(be16(frame, l4 + 4)?) != layers.end - l4 {
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
    let addresses = match layers.ip {
        IpVersion::V4 => layers.l3 + 12..layers.l3 + 20,
        IpVersion::V6 => layers.l3 + 8..layers.l3 + 40,
    };
    let pseudo = u32::from(fold(ones_complement_sum(
        &frame[addresses],
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

/// TSO and USO: every segment is a whole TCP segment or UDP datagram with a
/// copy of the headers.
fn cut_transport(plan: &Plan, frame: &[u8], scratch: &mut Vec<u8>, emit: &mut dyn FnMut(&[u8])) {
    let Layers {
        ip,
        l3,
        l4,
        proto,
        end,
        ..
    } = plan.layers;
    let headers = plan.payload;
    let payload = &frame[headers..end];
    let ip_id = u16::from_be_bytes([frame[l3 + 4], frame[l3 + 5]]);
    // Read only for TCP: a UDP frame may end right after its 8-byte header.
    let (seq, tcp_flags) = if proto == IPPROTO_TCP {
        let seq = &frame[l4 + 4..l4 + 8];
        (
            u32::from_be_bytes([seq[0], seq[1], seq[2], seq[3]]),
            frame[l4 + 13],
        )
    } else {
        (0, 0)
    };

    scratch.clear();
    scratch.reserve(headers + plan.size);
    scratch.extend_from_slice(&frame[..headers]);
    for i in 0..plan.count {
        let from = i * plan.size;
        let to = (from + plan.size).min(payload.len());
        scratch.truncate(headers);
        scratch.extend_from_slice(&payload[from..to]);
        let segment = scratch.as_mut_slice();
        let last = i + 1 == plan.count;

        match ip {
            // Linux gives each segment the next id (inet_gso_segment) unless
            // the sender asked for fixed ids, which virtio cannot say.
            IpVersion::V4 => finish_ipv4(segment, l3, l4, ip_id.wrapping_add(i as u16), None),
            IpVersion::V6 => put16(segment, l3 + 4, (segment.len() - l3 - IPV6_HLEN) as u16),
        }
        let transport_len = segment.len() - l4;
        let checksum_at = if proto == IPPROTO_TCP {
            segment[l4 + 4..l4 + 8].copy_from_slice(&seq.wrapping_add(from as u32).to_be_bytes());
            // tcp_gso_segment: FIN and PSH end the data, so only the last
            // segment keeps them; CWR answers ECE once, on the first.
            let mut flags = tcp_flags;
            if !last {
                flags &= !(TCP_FIN | TCP_PSH);
            }
            if i > 0 {
                flags &= !TCP_CWR;
            }
            segment[l4 + 13] = flags;
            l4 + TCP_CHECKSUM_OFFSET
        } else {
            put16(segment, l4 + 4, transport_len as u16);
            l4 + UDP_CHECKSUM_OFFSET
        };
        put16(segment, checksum_at, 0);
        let sum = internet_checksum(&segment[l4..], plan.pseudo + transport_len as u32);
        put16(segment, checksum_at, sum);
        emit(segment);
    }
}

/// UFO: one UDP datagram, checksummed whole, cut into IPv4 fragments that
/// share its id (RFC 791).
fn cut_ip_fragments(plan: &Plan, frame: &[u8], scratch: &mut Vec<u8>, emit: &mut dyn FnMut(&[u8])) {
    let Layers { l3, l4, end, .. } = plan.layers;
    let datagram = &frame[l4..end];
    // The checksum field itself counts as zero: sum around it.
    let sum = ones_complement_sum(
        &datagram[..UDP_CHECKSUM_OFFSET],
        plan.pseudo + datagram.len() as u32,
    );
    let checksum = internet_checksum(&datagram[UDP_CHECKSUM_OFFSET + 2..], sum);
    let ip_id = u16::from_be_bytes([frame[l3 + 4], frame[l3 + 5]]);

    scratch.clear();
    scratch.reserve(l4 + plan.size);
    scratch.extend_from_slice(&frame[..l4]);
    for i in 0..plan.count {
        let from = i * plan.size;
        let to = (from + plan.size).min(datagram.len());
        scratch.truncate(l4);
        scratch.extend_from_slice(&datagram[from..to]);
        let segment = scratch.as_mut_slice();
        if i == 0 {
            put16(segment, l4 + UDP_CHECKSUM_OFFSET, checksum);
        }
        // A datagram that fits keeps its flags (DF included); fragments get
        // offset and MF, and lose DF as in inet_gso_segment.
        let frag_off = (plan.count > 1).then(|| {
            let more = if i + 1 < plan.count {
                IPV4_MORE_FRAGMENTS
            } else {
                0
            };
            (from / 8) as u16 | more
        });
        finish_ipv4(segment, l3, l4, ip_id, frag_off);
        emit(segment);
    }
}

/// Sets an IPv4 header's total length, id, optionally its fragment field,
/// and its checksum for the packet that ends at the end of `segment`.
fn finish_ipv4(segment: &mut [u8], l3: usize, l4: usize, id: u16, frag_off: Option<u16>) {
    put16(segment, l3 + 2, (segment.len() - l3) as u16);
    put16(segment, l3 + 4, id);
    if let Some(frag_off) = frag_off {
        put16(segment, l3 + 6, frag_off);
    }
    put16(segment, l3 + 10, 0);
    let sum = rfc1071_checksum(&segment[l3..l4]);
    put16(segment, l3 + 10, sum);
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::{
        Ipv4HeaderSlice, LinkExtSlice, NetSlice, SlicedPacket, TransportSlice, UdpHeader,
    };

    const DST_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];
    const SRC_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
    const SRC4: [u8; 4] = [172, 17, 0, 2];
    const DST4: [u8; 4] = [172, 17, 0, 3];
    const SRC6: [u8; 16] = [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];
    const DST6: [u8; 16] = [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 3];
    const BASE_SEQ: u32 = 0xffff_0000; // wraps inside a 64 KiB frame
    const BASE_ID: u16 = 0xfff0; // wraps after 16 segments
    const FIN: u8 = 0x01;
    const PSH: u8 = 0x08;
    const ACK: u8 = 0x10;
    const URG: u8 = 0x20;
    const ECE: u8 = 0x40;
    const CWR: u8 = 0x80;

    /// What kind of super-frame to build.
    #[derive(Debug, Clone, Copy, Default)]
    struct Shape {
        ipv6: bool,
        udp: bool,
        /// 0, 1 or 2 VLAN tags.
        vlans: usize,
        /// IPv4 options (4 bytes) or an IPv6 destination-options header (8).
        ip_extras: bool,
        /// A 12-byte TCP option block (data offset 8).
        tcp_options: bool,
        tcp_flags: u8,
    }

    /// A super-frame as a Linux stack hands it over: lengths for the whole
    /// payload, the pseudo-header sum in the L4 checksum field.
    #[derive(Debug, Clone)]
    struct Built {
        shape: Shape,
        vnet: VnetHdr,
        frame: Vec<u8>,
        l3: usize,
        l4: usize,
        payload_at: usize,
    }

    /// The reference sum: one 16-bit word at a time, as RFC 1071 states it.
    fn naive_sum(pieces: &[&[u8]]) -> u16 {
        let mut sum: u64 = 0;
        for piece in pieces {
            assert!(piece.len() % 2 == 0 || std::ptr::eq(*piece, *pieces.last().unwrap()));
            for pair in piece.chunks(2) {
                let hi = u64::from(pair[0]) << 8;
                sum += hi + pair.get(1).map_or(0, |&lo| u64::from(lo));
            }
        }
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        sum as u16
    }

    fn pseudo_header(shape: &Shape, l4_len: usize) -> Vec<u8> {
        let proto = if shape.udp { 17u8 } else { 6 };
        let mut p = Vec::new();
        if shape.ipv6 {
            p.extend_from_slice(&SRC6);
            p.extend_from_slice(&DST6);
            p.extend_from_slice(&(l4_len as u32).to_be_bytes());
            p.extend_from_slice(&[0, 0, 0, proto]);
        } else {
            p.extend_from_slice(&SRC4);
            p.extend_from_slice(&DST4);
            p.extend_from_slice(&[0, proto]);
            p.extend_from_slice(&(l4_len as u16).to_be_bytes());
        }
        p
    }

    fn build(shape: Shape, payload: &[u8], gso_size: u16) -> Built {
        let mut f = Vec::new();
        f.extend_from_slice(&DST_MAC);
        f.extend_from_slice(&SRC_MAC);
        for tag in 0..shape.vlans {
            let tpid: u16 = if tag == 0 && shape.vlans == 2 {
                0x88a8
            } else {
                0x8100
            };
            f.extend_from_slice(&tpid.to_be_bytes());
            f.extend_from_slice(&(100 + tag as u16).to_be_bytes());
        }
        f.extend_from_slice(if shape.ipv6 {
            &[0x86, 0xdd]
        } else {
            &[0x08, 0x00]
        });
        let l3 = f.len();
        let proto = if shape.udp { 17u8 } else { 6 };
        let l4_hlen = match (shape.udp, shape.tcp_options) {
            (true, _) => 8,
            (false, false) => 20,
            (false, true) => 32,
        };
        let l4_len = l4_hlen + payload.len();
        if shape.ipv6 {
            let ext = if shape.ip_extras { 8 } else { 0 };
            f.extend_from_slice(&[0x60, 0x01, 0x23, 0x45]); // version, class, flow
            f.extend_from_slice(&((ext + l4_len) as u16).to_be_bytes());
            f.push(if shape.ip_extras { 60 } else { proto });
            f.push(64);
            f.extend_from_slice(&SRC6);
            f.extend_from_slice(&DST6);
            if shape.ip_extras {
                // Destination options: PadN over the 6 option bytes.
                f.extend_from_slice(&[proto, 0, 1, 4, 0, 0, 0, 0]);
            }
        } else {
            let ihl = if shape.ip_extras { 6u8 } else { 5 };
            let total = usize::from(ihl) * 4 + l4_len;
            f.push(0x40 | ihl);
            f.push(0x02); // ECT(0)
            f.extend_from_slice(&(total as u16).to_be_bytes());
            f.extend_from_slice(&BASE_ID.to_be_bytes());
            f.extend_from_slice(&[0x40, 0x00]); // DF
            f.extend_from_slice(&[64, proto, 0, 0]);
            f.extend_from_slice(&SRC4);
            f.extend_from_slice(&DST4);
            if shape.ip_extras {
                f.extend_from_slice(&[1, 1, 1, 0]); // NOP NOP NOP EOL
            }
            let header = Ipv4HeaderSlice::from_slice(&f[l3..]).unwrap().to_header();
            let checksum = header.calc_header_checksum();
            f[l3 + 10..l3 + 12].copy_from_slice(&checksum.to_be_bytes());
        }
        let l4 = f.len();
        if shape.udp {
            f.extend_from_slice(&4000u16.to_be_bytes());
            f.extend_from_slice(&5000u16.to_be_bytes());
            f.extend_from_slice(&(l4_len as u16).to_be_bytes());
            f.extend_from_slice(&[0, 0]);
        } else {
            f.extend_from_slice(&40000u16.to_be_bytes());
            f.extend_from_slice(&80u16.to_be_bytes());
            f.extend_from_slice(&BASE_SEQ.to_be_bytes());
            f.extend_from_slice(&0x1234_5678u32.to_be_bytes());
            f.push(((l4_hlen / 4) as u8) << 4);
            f.push(shape.tcp_flags);
            f.extend_from_slice(&[0x01, 0xf5, 0, 0, 0, 7]); // window, csum, urgent
            if shape.tcp_options {
                // NOP NOP Timestamps(val, ecr)
                f.extend_from_slice(&[1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2]);
            }
        }
        let payload_at = f.len();
        f.extend_from_slice(payload);
        let checksum_at = l4 + if shape.udp { 6 } else { 16 };
        let partial = naive_sum(&[&pseudo_header(&shape, l4_len)]);
        f[checksum_at..checksum_at + 2].copy_from_slice(&partial.to_be_bytes());
        let gso_type = match (shape.udp, shape.ipv6) {
            (true, _) => VnetHdr::GSO_UDP_L4,
            (false, false) => VnetHdr::GSO_TCPV4,
            (false, true) => VnetHdr::GSO_TCPV6,
        };
        let vnet = VnetHdr {
            flags: VnetHdr::NEEDS_CSUM,
            gso_type,
            // What a packet socket reports: skb_headlen(), not the headers.
            hdr_len: (payload_at + 100) as u16,
            gso_size,
            csum_start: l4 as u16,
            csum_offset: (checksum_at - l4) as u16,
        };
        Built {
            shape,
            vnet,
            frame: f,
            l3,
            l4,
            payload_at,
        }
    }

    fn run(vnet: &VnetHdr, frame: &[u8]) -> (Result<usize, OffloadError>, Vec<Vec<u8>>) {
        let mut out = Vec::new();
        let mut scratch = Vec::new();
        let result = segment(vnet, frame, &mut scratch, &mut |s| out.push(s.to_vec()));
        (result, out)
    }

    fn same_checksum(a: u16, b: u16) -> bool {
        // 0 and 0xffff are the same ones' complement zero; we store 0xffff.
        a == b || (a | b == 0xffff && a & b == 0)
    }

    /// Checks `segments` against the super-frame they were cut from,
    /// parsing each with etherparse and checking every checksum with it.
    /// Segments `b`, checks that it makes `count` correct segments, and
    /// returns them.
    fn assert_cut(b: &Built, count: usize, what: &str) -> Vec<Vec<u8>> {
        let (result, segments) = run(&b.vnet, &b.frame);
        assert_eq!(result, Ok(count), "{what}");
        check_segments(b, &segments);
        segments
    }

    fn check_segments(b: &Built, segments: &[Vec<u8>]) {
        let shape = b.shape;
        let payload = &b.frame[b.payload_at..];
        let size = match usize::from(b.vnet.gso_size) {
            0 => payload.len().max(1),
            size => size,
        };
        let expected = payload.len().div_ceil(size).max(1);
        assert_eq!(segments.len(), expected, "segment count");
        let mut joined = Vec::new();
        for (i, seg) in segments.iter().enumerate() {
            let (first, last) = (i == 0, i + 1 == segments.len());
            let sliced = SlicedPacket::from_ethernet(seg)
                .unwrap_or_else(|e| panic!("segment {i} does not parse: {e}"));
            assert_eq!(sliced.link_exts.len(), shape.vlans);
            for ext in &sliced.link_exts {
                assert!(matches!(ext, LinkExtSlice::Vlan(_)));
            }
            // Everything up to the IP header is copied unchanged.
            assert_eq!(seg[..b.l3], b.frame[..b.l3]);
            let transport = sliced.transport.as_ref().expect("transport layer");
            match sliced.net.as_ref().expect("net layer") {
                NetSlice::Ipv4(ip) => {
                    assert!(!shape.ipv6);
                    let h = ip.header();
                    assert_eq!(usize::from(h.total_len()), seg.len() - b.l3);
                    assert_eq!(h.identification(), BASE_ID.wrapping_add(i as u16));
                    assert!(h.dont_fragment());
                    assert!(!h.more_fragments());
                    assert_eq!(h.header_checksum(), h.to_header().calc_header_checksum());
                    assert_eq!(h.options(), &b.frame[b.l3 + 20..b.l4]);
                }
                NetSlice::Ipv6(ip) => {
                    assert!(shape.ipv6);
                    let h = ip.header();
                    assert_eq!(usize::from(h.payload_length()), seg.len() - b.l3 - 40);
                    assert_eq!(ip.extensions().is_empty(), !shape.ip_extras);
                    // Version, class, flow label, next header, hop limit,
                    // addresses and extension headers: all unchanged.
                    assert_eq!(seg[b.l3..b.l3 + 4], b.frame[b.l3..b.l3 + 4]);
                    assert_eq!(seg[b.l3 + 6..b.l4], b.frame[b.l3 + 6..b.l4]);
                }
                NetSlice::Arp(_) => panic!("ARP"),
            }
            let pseudo = pseudo_header(&shape, seg.len() - b.l4);
            assert_eq!(
                naive_sum(&[&pseudo, &seg[b.l4..]]),
                0xffff,
                "L4 checksum of {i}"
            );
            let l4_payload = match transport {
                TransportSlice::Tcp(tcp) => {
                    assert!(!shape.udp);
                    let offset = (i * size) as u32;
                    assert_eq!(tcp.sequence_number(), BASE_SEQ.wrapping_add(offset));
                    let base = shape.tcp_flags;
                    assert_eq!(tcp.fin(), last && base & FIN != 0, "FIN of {i}");
                    assert_eq!(tcp.psh(), last && base & PSH != 0, "PSH of {i}");
                    assert_eq!(tcp.cwr(), first && base & CWR != 0, "CWR of {i}");
                    assert_eq!(tcp.ack(), base & ACK != 0);
                    assert_eq!(tcp.ece(), base & ECE != 0);
                    assert_eq!(tcp.urg(), base & URG != 0);
                    assert_eq!(tcp.acknowledgment_number(), 0x1234_5678);
                    assert_eq!(tcp.options(), &b.frame[b.l4 + 20..b.payload_at]);
                    let expected = match sliced.net.as_ref().unwrap() {
                        NetSlice::Ipv4(_) => tcp.calc_checksum_ipv4(SRC4, DST4),
                        _ => tcp.calc_checksum_ipv6(SRC6, DST6),
                    };
                    assert!(same_checksum(tcp.checksum(), expected.unwrap()));
                    tcp.payload()
                }
                TransportSlice::Udp(udp) => {
                    assert!(shape.udp);
                    assert_eq!(usize::from(udp.length()), seg.len() - b.l4);
                    let header: UdpHeader = udp.to_header();
                    let expected = match sliced.net.as_ref().unwrap() {
                        NetSlice::Ipv4(_) => {
                            header.calc_checksum_ipv4_raw(SRC4, DST4, udp.payload())
                        }
                        _ => header.calc_checksum_ipv6_raw(SRC6, DST6, udp.payload()),
                    };
                    assert_eq!(udp.checksum(), expected.unwrap());
                    assert_ne!(udp.checksum(), 0);
                    udp.payload()
                }
                _ => panic!("unexpected transport"),
            };
            assert_eq!(l4_payload.len(), seg.len() - b.payload_at);
            if last {
                assert!(l4_payload.len() <= size);
            } else {
                assert_eq!(l4_payload.len(), size);
            }
            joined.extend_from_slice(l4_payload);
        }
        assert_eq!(joined, payload, "payloads put back together");
    }

    fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 + i / 251) as u8).collect()
    }

    /// xorshift64*: deterministic, so a failure can be replayed.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }

        fn bytes(&mut self, len: usize) -> Vec<u8> {
            (0..len).map(|_| self.next() as u8).collect()
        }
    }

    #[test]
    fn bytes_round_trip() {
        let hdr = VnetHdr {
            flags: VnetHdr::NEEDS_CSUM,
            gso_type: VnetHdr::GSO_TCPV4,
            hdr_len: 66,
            gso_size: 1448,
            csum_start: 34,
            csum_offset: 16,
        };
        assert_eq!(VnetHdr::from_bytes(&hdr.to_bytes()), hdr);
        assert!(!hdr.is_plain());
        assert!(hdr.is_gso());
        assert!(VnetHdr::default().is_plain());
    }

    #[test]
    fn a_lone_ecn_bit_is_plain_not_gso() {
        let hdr = VnetHdr {
            gso_type: VnetHdr::GSO_ECN,
            ..Default::default()
        };
        assert!(!hdr.is_gso());
        assert!(
            hdr.is_plain(),
            "else the fabric would have no way to send it"
        );
    }

    #[test]
    fn ones_complement_sum_matches_the_word_by_word_definition() {
        let mut rng = Rng(0x5eed);
        let data = rng.bytes(4096 + 64);
        for _ in 0..2000 {
            let start = rng.below(64); // any alignment
            let len = match rng.below(4) {
                0 => rng.below(8),
                1 => rng.below(80),
                _ => rng.below(4096),
            };
            let piece = &data[start..start + len];
            let initial = match rng.below(3) {
                0 => 0,
                1 => rng.next() as u32,
                _ => 0xffff_ffff,
            };
            let got = fold(ones_complement_sum(piece, initial));
            let mut init_words = initial.to_be_bytes().to_vec();
            init_words.extend_from_slice(piece);
            assert_eq!(got, naive_sum(&[&init_words]), "start {start} len {len}");
        }
        assert_eq!(ones_complement_sum(&[], 0), 0);
        assert_eq!(fold(ones_complement_sum(&[0xff; 3], 0)), 0xff00);
        assert_eq!(fold(ones_complement_sum(&[0x12], 0)), 0x1200);
        // RFC 1071 section 3 example.
        let words = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(fold(ones_complement_sum(&words, 0)), 0xddf2);
    }

    #[test]
    fn ones_complement_sum_of_a_huge_buffer_does_not_overflow() {
        // More than one 1 MiB block, all ones: every word is 0xffff.
        let data = vec![0xffu8; (1 << 20) * 2 + 6];
        assert_eq!(fold(ones_complement_sum(&data, 0)), 0xffff);
        let data = vec![0x01u8; (1 << 20) + 2];
        let words = data.len() as u64 / 2;
        let expected = (words * 0x0101) % 0xffff;
        assert_eq!(u64::from(fold(ones_complement_sum(&data, 0))), expected);
    }

    #[test]
    fn crc32c_matches_the_published_check_values() {
        assert_eq!(crc32c(b"123456789"), 0xe306_9283);
        // RFC 3720 appendix B.4: 32 bytes of zeros, of ones, incrementing.
        assert_eq!(crc32c(&[0u8; 32]), 0x8a91_36aa);
        assert_eq!(crc32c(&[0xffu8; 32]), 0x62a8_ab43);
        let incrementing: Vec<u8> = (0..32).collect();
        assert_eq!(crc32c(&incrementing), 0x46dd_794e);
    }

    #[test]
    fn a_tcpv4_super_frame_is_cut_as_the_kernel_does() {
        let shape = Shape {
            tcp_flags: ACK | PSH | FIN | CWR | ECE,
            ..Default::default()
        };
        let b = build(shape, &pattern(64_000), 1448);
        let segments = assert_cut(&b, 45, "");
        assert!(segments.iter().all(|s| s.len() <= 1514));
    }

    #[test]
    fn a_tcpv6_super_frame_with_an_extension_header_and_options_is_cut() {
        let shape = Shape {
            ipv6: true,
            ip_extras: true,
            tcp_options: true,
            tcp_flags: ACK | PSH | URG,
            ..Default::default()
        };
        let b = build(shape, &pattern(60_001), 1428);
        assert_cut(&b, 43, "");
    }

    #[test]
    fn ipv4_options_are_copied_into_every_segment() {
        let shape = Shape {
            ip_extras: true,
            tcp_flags: ACK,
            ..Default::default()
        };
        let b = build(shape, &pattern(5000), 1000);
        assert_cut(&b, 5, "");
    }

    #[test]
    fn uso_cuts_one_udp_datagram_per_segment_over_ipv4_and_ipv6() {
        for ipv6 in [false, true] {
            let shape = Shape {
                udp: true,
                ipv6,
                ..Default::default()
            };
            let b = build(shape, &pattern(12_345), 1200);
            assert_cut(&b, 11, &format!("ipv6 {ipv6}"));
        }
    }

    #[test]
    fn vlan_tagged_frames_keep_their_tags_in_every_segment() {
        for vlans in [1, 2] {
            for (ipv6, udp) in [(false, false), (true, false), (false, true)] {
                let shape = Shape {
                    ipv6,
                    udp,
                    vlans,
                    tcp_flags: ACK | FIN,
                    ..Default::default()
                };
                let b = build(shape, &pattern(9000), 1448);
                assert_cut(&b, 7, &format!("{shape:?}"));
            }
        }
    }

    #[test]
    fn hdr_len_is_not_trusted() {
        let shape = Shape {
            tcp_flags: ACK,
            ..Default::default()
        };
        let b = build(shape, &pattern(4000), 1448);
        let (_, expected) = run(&b.vnet, &b.frame);
        for hdr_len in [0, 1, 54, 60, 4000, u16::MAX] {
            let vnet = VnetHdr { hdr_len, ..b.vnet };
            assert_eq!(
                run(&vnet, &b.frame),
                (Ok(3), expected.clone()),
                "hdr_len {hdr_len}"
            );
        }
    }

    #[test]
    fn a_frame_that_fits_in_one_segment_comes_out_whole_with_its_checksum() {
        for (gso_size, payload) in [(1448, 1448), (1448, 100), (0, 3000), (9000, 0)] {
            let shape = Shape {
                tcp_flags: ACK | PSH | FIN | CWR,
                ..Default::default()
            };
            let b = build(shape, &pattern(payload), gso_size);
            let segments = assert_cut(&b, 1, &format!("gso_size {gso_size} payload {payload}"));
            // Nothing but the checksum changed: flags, id and lengths stay.
            let sum_at = b.l4 + 16;
            assert_eq!(segments[0][..sum_at], b.frame[..sum_at]);
            assert_eq!(segments[0][sum_at + 2..], b.frame[sum_at + 2..]);
        }
    }

    #[test]
    fn a_partial_checksum_without_gso_is_completed() {
        for shape in [
            Shape::default(),
            Shape {
                udp: true,
                ipv6: true,
                vlans: 1,
                ..Default::default()
            },
            Shape {
                ipv6: true,
                ip_extras: true,
                vlans: 2,
                ..Default::default()
            },
        ] {
            let b = build(shape, &pattern(333), 0);
            let vnet = VnetHdr {
                gso_type: VnetHdr::GSO_NONE,
                hdr_len: 0,
                ..b.vnet
            };
            let (result, segments) = run(&vnet, &b.frame);
            assert_eq!(result, Ok(1));
            check_segments(&b, &segments);

            // In place, as the fabric does it, gives the same frame.
            let mut in_place = b.frame.clone();
            let mut header = vnet;
            complete_checksum(&mut header, &mut in_place).unwrap();
            assert_eq!(in_place, segments[0]);
            assert!(header.is_plain());
        }
    }

    #[test]
    fn ethernet_padding_is_left_out_of_the_checksum() {
        let shape = Shape {
            udp: true,
            ..Default::default()
        };
        let b = build(shape, &pattern(3), 0);
        let mut padded = b.frame.clone();
        padded.resize(60, 0xee); // padding a hostile sender filled with junk
        let mut vnet = VnetHdr {
            gso_type: VnetHdr::GSO_NONE,
            ..b.vnet
        };
        complete_checksum(&mut vnet, &mut padded).unwrap();
        assert_eq!(padded[b.frame.len()..], [0xee; 60 - 45]);
        check_segments(&b, &[padded[..b.frame.len()].to_vec()]);
    }

    #[test]
    fn a_partial_sctp_checksum_is_completed_with_crc32c() {
        // IPv4 + SCTP common header + one DATA chunk, checksum field zero,
        // as the SCTP stack leaves it for NETIF_F_SCTP_CRC.
        let mut f = Vec::new();
        f.extend_from_slice(&DST_MAC);
        f.extend_from_slice(&SRC_MAC);
        f.extend_from_slice(&[0x08, 0x00]);
        let sctp_len = 12 + 16 + 4;
        f.extend_from_slice(&[
            0x45,
            0,
            0,
            (20 + sctp_len) as u8,
            0,
            1,
            0x40,
            0,
            64,
            132,
            0,
            0,
        ]);
        f.extend_from_slice(&SRC4);
        f.extend_from_slice(&DST4);
        f.extend_from_slice(&[0x13, 0x88, 0x13, 0x89, 0xde, 0xad, 0xbe, 0xef, 0, 0, 0, 0]);
        f.extend_from_slice(&[
            0, 3, 0, 20, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, b'a', b'b', b'c', b'd',
        ]);
        let l4 = 34;
        let mut vnet = VnetHdr {
            flags: VnetHdr::NEEDS_CSUM,
            csum_start: l4 as u16,
            csum_offset: 8,
            ..Default::default()
        };
        let (result, segments) = run(&vnet, &f);
        assert_eq!(result, Ok(1));
        complete_checksum(&mut vnet, &mut f).unwrap();
        assert_eq!(segments[0], f);

        // Bit by bit, independently of the table.
        let mut packet = f[l4..].to_vec();
        let stored = [packet[8], packet[9], packet[10], packet[11]];
        packet[8..12].fill(0);
        let mut crc = !0u32;
        for byte in packet {
            crc ^= u32::from(byte);
            for _ in 0..8 {
                crc = if crc & 1 == 1 {
                    (crc >> 1) ^ 0x82f6_3b78
                } else {
                    crc >> 1
                };
            }
        }
        assert_eq!(stored, (!crc).to_le_bytes());
    }

    #[test]
    fn ufo_over_ipv4_is_cut_into_fragments_of_one_checksummed_datagram() {
        let shape = Shape {
            udp: true,
            ..Default::default()
        };
        let mut b = build(shape, &pattern(4000), 1473);
        b.vnet.gso_type = VnetHdr::GSO_UDP;
        let (result, fragments) = run(&b.vnet, &b.frame);
        // 1473 rounds down to 1472 bytes of IP payload per fragment.
        assert_eq!(result, Ok(3));
        let mut datagram = Vec::new();
        for (i, frag) in fragments.iter().enumerate() {
            assert_eq!(frag[..b.l3], b.frame[..b.l3]);
            let h = Ipv4HeaderSlice::from_slice(&frag[b.l3..]).unwrap();
            assert_eq!(h.header_checksum(), h.to_header().calc_header_checksum());
            assert_eq!(usize::from(h.total_len()), frag.len() - b.l3);
            assert_eq!(h.identification(), BASE_ID, "fragments share the id");
            assert_eq!(h.more_fragments(), i < 2);
            assert!(!h.dont_fragment());
            assert_eq!(
                usize::from(h.fragments_offset().value()) * 8,
                datagram.len()
            );
            if i < 2 {
                assert_eq!(frag.len() - b.l4, 1472);
            }
            datagram.extend_from_slice(&frag[b.l4..]);
        }
        assert_eq!(datagram[8..], b.frame[b.payload_at..]);
        assert_eq!(datagram[..6], b.frame[b.l4..b.l4 + 6]);
        let pseudo = pseudo_header(&shape, datagram.len());
        assert_eq!(naive_sum(&[&pseudo, &datagram]), 0xffff);

        // Fits in one: not fragmented, DF kept.
        let whole = VnetHdr {
            gso_size: 8000,
            ..b.vnet
        };
        let (result, frames) = run(&whole, &b.frame);
        assert_eq!(result, Ok(1));
        check_segments(&build(shape, &pattern(4000), 0), &frames);
    }

    #[test]
    fn ufo_over_ipv6_is_refused() {
        let shape = Shape {
            udp: true,
            ipv6: true,
            ..Default::default()
        };
        let mut b = build(shape, &pattern(4000), 1400);
        b.vnet.gso_type = VnetHdr::GSO_UDP;
        assert_eq!(
            run(&b.vnet, &b.frame),
            (Err(OffloadError::UnsupportedGso(3)), vec![])
        );
    }

    #[test]
    fn segments_reuse_the_scratch_buffer() {
        let b = build(Shape::default(), &pattern(30_000), 1448);
        let mut scratch = Vec::new();
        let mut pointers = Vec::new();
        let n = segment(&b.vnet, &b.frame, &mut scratch, &mut |s| {
            pointers.push(s.as_ptr())
        })
        .unwrap();
        assert_eq!(n, 21);
        assert!(
            pointers.iter().all(|&p| p == pointers[0]),
            "no reallocation per segment"
        );
        let capacity = scratch.capacity();
        segment(&b.vnet, &b.frame, &mut scratch, &mut |_| {}).unwrap();
        assert_eq!(scratch.capacity(), capacity, "nor on the next frame");
    }

    #[test]
    fn gso_size_limits() {
        let b = build(Shape::default(), &pattern(20_480), 10);
        assert_eq!(run(&b.vnet, &b.frame), (Ok(2048), run(&b.vnet, &b.frame).1));
        let vnet = VnetHdr {
            gso_size: 9,
            ..b.vnet
        };
        assert_eq!(
            run(&vnet, &b.frame),
            (Err(OffloadError::TooManySegments(2276)), vec![])
        );
        let vnet = VnetHdr {
            gso_size: 1,
            ..b.vnet
        };
        assert!(run(&vnet, &b.frame).0.is_err());
        let b = build(
            Shape {
                udp: true,
                ..Default::default()
            },
            &pattern(100),
            7,
        );
        let ufo = VnetHdr {
            gso_type: VnetHdr::GSO_UDP,
            ..b.vnet
        };
        assert!(
            run(&ufo, &b.frame).0.is_err(),
            "fragments come in 8-byte units"
        );
    }

    /// Applies `edit` to a copy of a good super-frame and expects `error`.
    fn expect_error(shape: Shape, edit: impl FnOnce(&mut Built), error: OffloadError) {
        let mut b = build(shape, &pattern(5000), 1000);
        edit(&mut b);
        let (result, out) = run(&b.vnet, &b.frame);
        assert_eq!(result, Err(error));
        assert!(out.is_empty(), "nothing is emitted for a bad frame");
    }

    #[test]
    fn malformed_frames_are_refused_before_anything_is_emitted() {
        use OffloadError::{BadHeaders, Truncated, UnsupportedGso};
        let tcp4 = Shape::default();
        let tcp6 = Shape {
            ipv6: true,
            ..Default::default()
        };
        let udp4 = Shape {
            udp: true,
            ..Default::default()
        };
        let bad = |what| BadHeaders(what);
        expect_error(tcp4, |b| b.vnet.gso_type = 2, UnsupportedGso(2));
        expect_error(tcp4, |b| b.vnet.gso_type = 6, UnsupportedGso(6));
        expect_error(tcp4, |b| b.vnet.gso_type = 0x21, UnsupportedGso(0x21));
        expect_error(
            tcp4,
            |b| b.vnet.gso_type = VnetHdr::GSO_TCPV6,
            bad("GSO type names the other IP version"),
        );
        expect_error(
            tcp6,
            |b| b.vnet.gso_type = VnetHdr::GSO_TCPV4,
            bad("GSO type names the other IP version"),
        );
        expect_error(
            udp4,
            |b| b.vnet.gso_type = VnetHdr::GSO_TCPV4,
            bad("GSO type names another transport protocol"),
        );
        expect_error(
            tcp4,
            |b| b.vnet.gso_type = VnetHdr::GSO_UDP_L4,
            bad("GSO type names another transport protocol"),
        );
        expect_error(
            tcp4,
            |b| b.vnet.csum_start += 1,
            bad("checksum offsets disagree with the headers"),
        );
        expect_error(
            tcp4,
            |b| b.vnet.csum_offset = 6,
            bad("checksum offsets disagree with the headers"),
        );
        expect_error(
            tcp4,
            |b| b.vnet.csum_start = u16::MAX,
            bad("checksum offsets disagree with the headers"),
        );
        expect_error(
            tcp4,
            |b| b.frame[12..14].copy_from_slice(&[0x08, 0x06]),
            bad("neither IPv4 nor IPv6"),
        );
        expect_error(
            tcp4,
            |b| b.frame[b.l3] = 0x65,
            bad("IPv4 ethertype on a non-IPv4 header"),
        );
        expect_error(
            tcp4,
            |b| b.frame[b.l3] = 0x44,
            bad("IPv4 header length below 20"),
        );
        expect_error(
            tcp4,
            |b| b.frame[b.l3 + 2..b.l3 + 4].copy_from_slice(&[0, 10]),
            bad("IPv4 total length below its header length"),
        );
        expect_error(tcp4, |b| b.frame[b.l3 + 2] += 1, Truncated);
        expect_error(
            tcp4,
            |b| b.frame[b.l3 + 3] -= 1,
            bad("IP length does not match the frame length"),
        );
        expect_error(
            tcp4,
            |b| b.frame.push(0),
            bad("IP length does not match the frame length"),
        );
        expect_error(
            tcp4,
            |b| b.frame[b.l3 + 6] = 0x20,
            bad("GSO on an IP fragment"),
        );
        expect_error(
            tcp4,
            |b| b.frame[b.l3 + 7] = 0x01,
            bad("GSO on an IP fragment"),
        );
        expect_error(
            tcp4,
            |b| b.frame[b.l4 + 12] = 0x40,
            bad("TCP data offset below 5"),
        );
        expect_error(
            tcp6,
            |b| b.frame[b.l3] = 0x45,
            bad("IPv6 ethertype on a non-IPv6 header"),
        );
        expect_error(
            tcp6,
            |b| b.frame[b.l3 + 4..b.l3 + 6].copy_from_slice(&[0xff, 0xff]),
            Truncated,
        );
        expect_error(
            udp4,
            |b| b.frame[b.l3 + 9] = 132,
            bad("GSO type names another transport protocol"),
        );
        // A TCP header claiming 60 bytes on a frame with 20 bytes of payload.
        let mut b = build(tcp4, &pattern(20), 8);
        b.frame[b.l4 + 12] = 0xf0;
        assert_eq!(run(&b.vnet, &b.frame), (Err(Truncated), vec![]));
        // Three VLAN tags.
        let mut b = build(Shape { vlans: 2, ..tcp4 }, &pattern(100), 50);
        b.frame.splice(12..12, [0x81, 0x00, 0x00, 0x07]);
        assert_eq!(
            run(&b.vnet, &b.frame),
            (Err(bad("more than two VLAN tags")), vec![])
        );
    }

    #[test]
    fn unusable_ipv6_extension_headers_are_refused() {
        use OffloadError::{BadHeaders, Truncated};
        let shape = Shape {
            ipv6: true,
            ip_extras: true,
            ..Default::default()
        };
        // The destination-options header turned into a routing header with
        // segments left, then into a fragment header.
        expect_error(
            shape,
            |b| {
                b.frame[b.l3 + 6] = 43;
                let ext = b.l3 + 40;
                b.frame[ext + 3] = 1;
            },
            BadHeaders("IPv6 routing header with segments left"),
        );
        expect_error(
            shape,
            |b| b.frame[b.l3 + 6] = 44,
            BadHeaders("GSO on an IP fragment"),
        );
        // Its length running past the packet.
        let mut b = build(shape, &pattern(100), 50);
        let ext = b.l3 + 40;
        b.frame[ext + 1] = 0xff;
        assert_eq!(run(&b.vnet, &b.frame), (Err(Truncated), vec![]));
        // A chain that never ends: each header names itself as the next.
        expect_error(
            shape,
            |b| {
                let ext = b.l3 + 40;
                b.frame[ext] = 60
            },
            BadHeaders("GSO type names another transport protocol"),
        );
        // Eight extension headers are walked; a ninth is too many.
        for (extra, result) in [
            (7, Ok(2)),
            (8, Err(BadHeaders("too many IPv6 extension headers"))),
        ] {
            let mut b = build(shape, &pattern(200), 100);
            let proto = b.frame[b.l3 + 40];
            let mut chain = [60, 0, 1, 4, 0, 0, 0, 0].repeat(extra);
            chain[(extra - 1) * 8] = proto;
            b.frame[b.l3 + 40] = 60;
            b.frame.splice(b.l4..b.l4, chain);
            let payload_len = (b.frame.len() - b.l3 - 40) as u16;
            b.frame[b.l3 + 4..b.l3 + 6].copy_from_slice(&payload_len.to_be_bytes());
            b.vnet.csum_start += 8 * extra as u16;
            assert_eq!(run(&b.vnet, &b.frame).0, result, "{extra} more");
        }
        // A jumbogram: payload length 0 behind a hop-by-hop header.
        expect_error(
            shape,
            |b| {
                b.frame[b.l3 + 6] = 0;
                b.frame[b.l3 + 4..b.l3 + 6].fill(0);
            },
            BadHeaders("IPv6 jumbogram (BIG TCP)"),
        );
    }

    #[test]
    fn every_truncation_is_an_error_and_never_a_panic() {
        let shapes = [
            Shape::default(),
            Shape {
                ipv6: true,
                ip_extras: true,
                vlans: 2,
                tcp_options: true,
                ..Default::default()
            },
            Shape {
                udp: true,
                vlans: 1,
                ip_extras: true,
                ..Default::default()
            },
        ];
        for shape in shapes {
            let b = build(shape, &pattern(3000), 1000);
            for len in 0..b.frame.len() {
                let (result, out) = run(&b.vnet, &b.frame[..len]);
                assert!(result.is_err(), "{shape:?} cut at {len}");
                assert!(out.is_empty());
                let mut header = VnetHdr {
                    gso_type: VnetHdr::GSO_NONE,
                    ..b.vnet
                };
                let mut copy = b.frame[..len].to_vec();
                let _ = complete_checksum(&mut header, &mut copy);
            }
            assert_eq!(run(&b.vnet, &b.frame).0, Ok(3));
        }
    }

    #[test]
    fn checksum_offsets_outside_the_frame_are_refused() {
        let b = build(Shape::default(), &pattern(10), 0);
        for (start, offset) in [
            (u16::MAX, 0),
            (0, u16::MAX),
            (u16::MAX, u16::MAX),
            (70, 0),
            (60, 8),
        ] {
            let mut vnet = VnetHdr {
                flags: VnetHdr::NEEDS_CSUM,
                csum_start: start,
                csum_offset: offset,
                ..Default::default()
            };
            let mut frame = b.frame.clone();
            assert_eq!(
                complete_checksum(&mut vnet, &mut frame),
                Err(OffloadError::Truncated)
            );
            assert_eq!(frame, b.frame, "nothing written");
            assert_eq!(vnet.flags, VnetHdr::NEEDS_CSUM);
            assert_eq!(run(&vnet, &b.frame), (Err(OffloadError::Truncated), vec![]));
        }
    }

    #[test]
    fn random_damage_never_panics() {
        let mut rng = Rng(0xdead_beef);
        let mut scratch = Vec::new();
        for round in 0..3000 {
            let shape = Shape {
                ipv6: rng.below(2) == 1,
                udp: rng.below(3) == 0,
                vlans: rng.below(3),
                ip_extras: rng.below(2) == 1,
                tcp_options: rng.below(2) == 1,
                tcp_flags: rng.next() as u8,
            };
            let mut b = build(shape, &pattern(rng.below(3000)), 1 + rng.below(1500) as u16);
            for _ in 0..1 + rng.below(4) {
                // Mostly the headers, where the parsing is.
                let at = if rng.below(4) == 0 {
                    rng.below(b.frame.len())
                } else {
                    rng.below(b.payload_at + 1).min(b.frame.len() - 1)
                };
                b.frame[at] = rng.next() as u8;
            }
            match rng.below(6) {
                0 => b.vnet.gso_type = rng.next() as u8,
                1 => b.vnet.gso_size = rng.next() as u16,
                2 => b.vnet.csum_start = rng.next() as u16 % 128,
                3 => b.vnet.flags = rng.next() as u8,
                4 => b.frame.truncate(rng.below(b.frame.len() + 1)),
                _ => {}
            }
            let mut emitted = 0;
            let result = segment(&b.vnet, &b.frame, &mut scratch, &mut |s| {
                emitted += 1;
                assert!(s.len() <= b.frame.len(), "round {round}");
            });
            match result {
                Ok(n) => assert_eq!(n, emitted),
                Err(_) => assert_eq!(emitted, 0),
            }
            let mut header = b.vnet;
            let _ = complete_checksum(&mut header, &mut b.frame);
        }
    }

    #[test]
    fn random_super_frames_come_out_right() {
        let mut rng = Rng(0x0ff1_0ad5);
        for _ in 0..300 {
            let shape = Shape {
                ipv6: rng.below(2) == 1,
                udp: rng.below(3) == 0,
                vlans: rng.below(3),
                ip_extras: rng.below(2) == 1,
                tcp_options: rng.below(2) == 1,
                tcp_flags: rng.next() as u8 & !0x07, // no SYN/RST/FIN mixes
            };
            let shape = Shape {
                tcp_flags: shape.tcp_flags | rng.below(2) as u8, // maybe FIN
                ..shape
            };
            let max_payload = if shape.ipv6 { 65_000 } else { 65_400 };
            let len = match rng.below(4) {
                0 => rng.below(100),
                1 => rng.below(3000),
                _ => rng.below(max_payload),
            };
            let payload = rng.bytes(len);
            let gso_size = match rng.below(5) {
                0 => 0,
                1 => (1 + rng.below(100)) as u16,
                _ => (500 + rng.below(9000)) as u16,
            };
            let b = build(shape, &payload, gso_size);
            let (result, segments) = run(&b.vnet, &b.frame);
            let size = if gso_size == 0 {
                len.max(1)
            } else {
                usize::from(gso_size)
            };
            if len.div_ceil(size) > MAX_SEGMENTS {
                assert!(matches!(result, Err(OffloadError::TooManySegments(_))));
                continue;
            }
            assert_eq!(
                result,
                Ok(segments.len()),
                "{shape:?} len {len} gso {gso_size}"
            );
            check_segments(&b, &segments);
        }
    }
}
