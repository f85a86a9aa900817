//! Where the IP and transport headers of a frame are, found by parsing it
//! through the [`crate::wire`] views (never from the offload header).

use super::OffloadError;
use crate::wire::{self, ethernet, ip, ipv4, ipv6, vlan};

const MAX_VLAN_TAGS: usize = 2;
/// RFC 8200 section 4.1 allows each at most once (Destination Options
/// twice), so 8 is generous; the limit bounds the walk.
const MAX_IPV6_EXTENSIONS: usize = 8;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum IpVersion {
    V4,
    V6,
}

/// Where the layers of a frame are.
#[derive(Debug, Clone, Copy)]
pub(super) struct Layers {
    pub(super) ip: IpVersion,
    /// Offset of the IP header (after the VLAN tags).
    pub(super) l3: usize,
    /// Offset of the transport header (after IPv4 options or IPv6
    /// extension headers).
    pub(super) l4: usize,
    /// The transport protocol: IPv4 protocol, or the last IPv6 next header.
    pub(super) proto: u8,
    /// The end of the IP packet by its length field (never past the frame).
    pub(super) end: usize,
    /// The packet is an IP fragment: it has no whole transport header.
    pub(super) fragment: bool,
}

impl Layers {
    /// The source and destination address bytes of the IP header in
    /// `frame`, for the pseudo-header sum.
    pub(super) fn addresses<'a>(&self, frame: &'a [u8]) -> &'a [u8] {
        let ip = &frame[self.l3..self.l4];
        match self.ip {
            IpVersion::V4 => &ip[ipv4::field::ADDRESSES],
            IpVersion::V6 => &ip[ipv6::field::ADDRESSES],
        }
    }
}

/// A view's "too short" is the offload's; any other refusal is a bad header.
fn truncated(_: wire::Error) -> OffloadError {
    OffloadError::Truncated
}

/// Finds the IP and transport headers behind the Ethernet header and up to
/// two VLAN tags.
pub(super) fn parse_layers(frame: &[u8]) -> Result<Layers, OffloadError> {
    let mut ethertype = ethernet::Frame::new_checked(frame)
        .map_err(truncated)?
        .ethertype();
    let mut l3 = ethernet::HEADER_LEN;
    let mut tags = 0;
    while vlan::is_tpid(ethertype) {
        if tags == MAX_VLAN_TAGS {
            return Err(OffloadError::BadHeaders("more than two VLAN tags"));
        }
        ethertype = vlan::Tag::new_checked(&frame[l3..])
            .map_err(truncated)?
            .ethertype();
        l3 += vlan::HEADER_LEN;
        tags += 1;
    }
    match ethertype {
        ethernet::ethertype::IPV4 => parse_ipv4(frame, l3),
        ethernet::ethertype::IPV6 => parse_ipv6(frame, l3),
        _ => Err(OffloadError::BadHeaders("neither IPv4 nor IPv6")),
    }
}

fn parse_ipv4(frame: &[u8], l3: usize) -> Result<Layers, OffloadError> {
    let packet = ipv4::Packet::new_checked(&frame[l3..]).map_err(|e| match e {
        wire::Error::Truncated => OffloadError::Truncated,
        wire::Error::Version => OffloadError::BadHeaders("IPv4 ethertype on a non-IPv4 header"),
        wire::Error::HeaderLength => OffloadError::BadHeaders("IPv4 header length below 20"),
        wire::Error::TotalLength => {
            OffloadError::BadHeaders("IPv4 total length below its header length")
        }
    })?;
    Ok(Layers {
        ip: IpVersion::V4,
        l3,
        l4: l3 + packet.header_len(),
        proto: packet.protocol(),
        end: l3 + usize::from(packet.total_len()),
        fragment: packet.is_fragment(),
    })
}

fn parse_ipv6(frame: &[u8], l3: usize) -> Result<Layers, OffloadError> {
    let packet = ipv6::Packet::new_checked(&frame[l3..]).map_err(|e| match e {
        wire::Error::Version => OffloadError::BadHeaders("IPv6 ethertype on a non-IPv6 header"),
        _ => OffloadError::Truncated,
    })?;
    if packet.payload_len() == 0 && packet.next_header() == ip::HOPOPTS {
        return Err(OffloadError::BadHeaders("IPv6 jumbogram (BIG TCP)"));
    }
    let end = l3 + ipv6::HEADER_LEN + usize::from(packet.payload_len());
    let mut proto = packet.next_header();
    let mut l4 = l3 + ipv6::HEADER_LEN;
    let mut extensions = 0;
    while matches!(proto, ip::HOPOPTS | ip::ROUTING | ip::DSTOPTS) {
        if extensions == MAX_IPV6_EXTENSIONS {
            return Err(OffloadError::BadHeaders("too many IPv6 extension headers"));
        }
        extensions += 1;
        let rest = &frame[l4..end];
        if rest.len() < ipv6::EXT_MIN_LEN {
            return Err(OffloadError::Truncated);
        }
        let ext = ipv6::ExtHeader::new_unchecked(rest);
        if proto == ip::ROUTING && ext.segments_left() != 0 {
            // The pseudo-header would need the final destination, which is
            // somewhere inside the routing header.
            return Err(OffloadError::BadHeaders(
                "IPv6 routing header with segments left",
            ));
        }
        ext.check_len().map_err(truncated)?;
        proto = ext.next_header();
        l4 += ext.header_len();
    }
    // AH and ESP end the walk too: GSO cannot apply behind them, and the
    // transport protocol check then refuses the frame.
    Ok(Layers {
        ip: IpVersion::V6,
        l3,
        l4,
        proto,
        end,
        fragment: proto == ip::FRAGMENT,
    })
}
