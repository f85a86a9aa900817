//! Completing a partial checksum (`NEEDS_CSUM`) for a port that cannot
//! take the offload header.

use super::layers::parse_layers;
use super::{OffloadError, VnetHdr};
use crate::wire::checksum::{crc32c, transport_checksum};
use crate::wire::ip;

/// Where SCTP keeps its checksum, counted from its common header.
const SCTP_CHECKSUM_OFFSET: usize = 8;

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
        sctp = layers.proto == ip::SCTP && offset == SCTP_CHECKSUM_OFFSET;
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
        let sum = transport_checksum(packet, 0);
        packet[offset..offset + 2].copy_from_slice(&sum.to_be_bytes());
    }
    vnet.flags &= !VnetHdr::NEEDS_CSUM;
    Ok(())
}
