//! The Internet checksum (RFC 1071) and SCTP's CRC32c.

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

/// The Internet checksum (RFC 1071) of `data`, ready to store: what an
/// IPv4 header or an ICMP message carries. Over data that holds its own
/// right checksum the result is 0.
pub fn rfc1071_checksum(data: &[u8]) -> u16 {
    !fold(ones_complement_sum(data, 0))
}

/// The TCP/UDP checksum of `data` (whose checksum field is zero or holds
/// the pseudo-header sum) on top of `initial`, ready to store.
pub fn transport_checksum(data: &[u8], initial: u32) -> u16 {
    // RFC 768: a computed UDP checksum of zero is sent as all ones, because
    // zero means "no checksum". For TCP the two are the same value in ones'
    // complement, and Linux stores all ones too (CSUM_MANGLED_0).
    match !fold(ones_complement_sum(data, initial)) {
        0 => 0xffff,
        sum => sum,
    }
}

/// The folded pseudo-header sum of a TCP or UDP packet: `addresses` is the
/// source and destination address bytes as they sit in the IP header
/// ([`crate::wire::ipv4::Packet::addresses`] or the IPv6 one).
pub fn pseudo_header_sum(addresses: &[u8], protocol: u8, length: usize) -> u16 {
    fold(ones_complement_sum(
        addresses,
        u32::from(protocol) + length as u32,
    ))
}

/// CRC32c (Castagnoli, reflected polynomial 0x82f63b78), SCTP's checksum.
pub fn crc32c(data: &[u8]) -> u32 {
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
