//! How the lab spells things in file names and messages: port names (each
//! becomes a file name), bytes in hex, times in seconds.

use std::fmt::Write as _;

use anyhow::{Result, bail};

/// A port name becomes a file name: keep it to one plain path component.
pub fn check_port_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '@' | '+'));
    if !ok {
        bail!(
            "port name {name:?} cannot be a file name: use up to 64 letters, digits and - _ . @ +, \
             not starting with a dot"
        );
    }
    Ok(())
}

/// Bytes as lowercase hex digits, without separators.
pub fn hex(b: &[u8]) -> String {
    b.iter().fold(String::new(), |mut s, x| {
        let _ = write!(s, "{x:02x}");
        s
    })
}

/// A count with its noun: `count(1, "frame", "frames")` is "1 frame".
pub fn count(n: u64, one: &str, many: &str) -> String {
    if n == 1 {
        format!("1 {one}")
    } else {
        format!("{n} {many}")
    }
}

/// Nanoseconds as seconds with nine decimals, as capture tools print times.
pub fn seconds_ns(ns: u64) -> String {
    format!("{}.{:09}", ns / 1_000_000_000, ns % 1_000_000_000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_names_are_plain_file_names() {
        for good in ["p1", "veth-a_b.c@d+e", &"x".repeat(64)] {
            assert!(check_port_name(good).is_ok(), "{good}");
        }
        for bad in ["", ".hidden", "..", "a/b", "a b", "é", &"x".repeat(65)] {
            assert!(check_port_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn hex_and_seconds() {
        assert_eq!(hex(&[0x00, 0x0f, 0xa0, 0xff]), "000fa0ff");
        assert_eq!(hex(&[]), "");
        assert_eq!(seconds_ns(1_500_000_000), "1.500000000");
        assert_eq!(seconds_ns(7), "0.000000007");
        assert_eq!(count(1, "frame", "frames"), "1 frame");
        assert_eq!(count(0, "frame", "frames"), "0 frames");
        assert_eq!(count(2, "frame was", "frames were"), "2 frames were");
    }
}
