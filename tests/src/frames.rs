//! Hand-made test frames ("probes") that no kernel stack reacts to.
//!
//! A probe uses the IEEE local experimental EtherType 0x88b5 and carries a
//! magic tag and a number, so a receiver can tell exactly which probes
//! reached it, among whatever else the hosts' kernels send.

/// IEEE 802 local experimental EtherType 1: ignored by every stack.
pub const PROBE_ETHERTYPE: u16 = 0x88b5;
const MAGIC: &[u8; 4] = b"TSWP";

/// Parses `02:42:ac:11:00:02`.
pub fn mac(text: &str) -> [u8; 6] {
    let mut out = [0u8; 6];
    let parts: Vec<&str> = text.split(':').collect();
    assert_eq!(parts.len(), 6, "{text} is not a MAC address");
    for (byte, part) in out.iter_mut().zip(parts) {
        *byte =
            u8::from_str_radix(part, 16).unwrap_or_else(|_| panic!("{text} is not a MAC address"));
    }
    out
}

/// Formats a MAC address as the switch prints it.
pub fn mac_text(mac: &[u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// A probe frame of exactly `len` bytes (at least 22).
pub fn probe(dst: [u8; 6], src: [u8; 6], id: u32, len: usize) -> Vec<u8> {
    let mut f = Vec::with_capacity(len);
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&PROBE_ETHERTYPE.to_be_bytes());
    f.extend_from_slice(MAGIC);
    f.extend_from_slice(&id.to_be_bytes());
    // A recognisable, position-dependent payload, so any corruption shows.
    let mut n = 0u8;
    while f.len() < len {
        f.push(n ^ (id as u8));
        n = n.wrapping_add(1);
    }
    assert!(f.len() == len, "a probe needs at least 22 bytes");
    f
}

/// A probe with an 802.1Q tag (VLAN `vid`, priority 3) after the addresses.
pub fn probe_vlan(dst: [u8; 6], src: [u8; 6], vid: u16, id: u32, len: usize) -> Vec<u8> {
    let mut f = probe(dst, src, id, len - 4);
    let tci = (3u16 << 13) | (vid & 0x0fff);
    let tag = [0x81, 0x00, (tci >> 8) as u8, tci as u8];
    f.splice(12..12, tag);
    f
}

/// The probe number in `frame`, if it is a probe (tagged or not).
pub fn probe_id(frame: &[u8]) -> Option<u32> {
    let mut at = 12;
    while frame.get(at..at + 2)? == [0x81, 0x00] || frame.get(at..at + 2)? == [0x88, 0xa8] {
        at += 4;
    }
    if frame.get(at..at + 2)? != PROBE_ETHERTYPE.to_be_bytes()
        || frame.get(at + 2..at + 6)? != MAGIC
    {
        return None;
    }
    let id = frame.get(at + 6..at + 10)?;
    Some(u32::from_be_bytes([id[0], id[1], id[2], id[3]]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probes_round_trip_with_and_without_a_tag() {
        let a = mac("02:00:00:00:00:01");
        let b = mac("02:00:00:00:00:02");
        let plain = probe(b, a, 7, 60);
        assert_eq!(plain.len(), 60);
        assert_eq!(probe_id(&plain), Some(7));
        let tagged = probe_vlan(b, a, 100, 8, 64);
        assert_eq!(tagged.len(), 64);
        assert_eq!(&tagged[12..14], &[0x81, 0x00]);
        assert_eq!(probe_id(&tagged), Some(8));
        assert_eq!(probe_id(&tagged[..20]), None);
    }
}
