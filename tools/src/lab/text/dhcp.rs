//! DHCP bodies for the `udp` form (RFC 2131, options of RFC 2132):
//!
//! ```text
//! udp 0.0.0.0:68 > 255.255.255.255:67 dhcp discover xid 0x3903f326 [broadcast]
//!     [chaddr MAC] [ciaddr IP] [yiaddr IP] [siaddr IP]
//!     [requested IP] [server IP] [lease SECS] [mask IP] [router IP] [dns IP]...
//! ```
//!
//! The message type is one of `discover offer request decline ack nak
//! release inform`; `op` follows from it (a request from a client, a reply
//! from a server). `chaddr` is the frame's source MAC unless given. The
//! options are written in the order above, after the message type, and end
//! with `end`; nothing pads the message (add `len N` to the line for that).

use std::fmt::Write as _;
use std::net::Ipv4Addr;

use anyhow::{Result, bail};
use switch::MacAddr;

use super::Tokens;

const MAGIC_COOKIE: [u8; 4] = [99, 130, 83, 99];
/// The fixed part of a BOOTP message, before the magic cookie.
const FIXED_LEN: usize = 236;
const OP_REQUEST: u8 = 1;
const OP_REPLY: u8 = 2;
const BROADCAST_FLAG: u16 = 0x8000;

const OPT_MASK: u8 = 1;
const OPT_ROUTER: u8 = 3;
const OPT_DNS: u8 = 6;
const OPT_REQUESTED: u8 = 50;
const OPT_LEASE: u8 = 51;
const OPT_MESSAGE_TYPE: u8 = 53;
const OPT_SERVER: u8 = 54;
const OPT_END: u8 = 255;

/// Message types by their option-53 value (1 to 8).
const TYPES: [&str; 8] = [
    "discover", "offer", "request", "decline", "ack", "nak", "release", "inform",
];

/// The address options, in the order they are written.
const ADDRESS_OPTIONS: [(&str, u8); 4] = [
    ("requested", OPT_REQUESTED),
    ("server", OPT_SERVER),
    ("mask", OPT_MASK),
    ("router", OPT_ROUTER),
];

/// `dhcp TYPE xid N ...` (after the word `dhcp`): the UDP payload.
pub(super) fn parse(t: &mut Tokens<'_>, src_mac: MacAddr) -> Result<Vec<u8>> {
    let word = t.next("a DHCP message type (discover, offer, request, ack, ...)")?;
    let Some(index) = TYPES.iter().position(|&w| w == word) else {
        bail!("{word:?} is not a DHCP message type ({})", TYPES.join(", "));
    };
    let kind = index as u8 + 1;
    t.expect("xid")?;
    let xid: u32 = t.number("a transaction id")?;
    let mut flags = 0u16;
    let mut chaddr = src_mac;
    let mut fixed = [Ipv4Addr::UNSPECIFIED; 3]; // ciaddr, yiaddr, siaddr
    let mut addresses: Vec<(u8, Ipv4Addr)> = Vec::new();
    let mut lease: Option<u32> = None;
    let mut dns: Vec<Ipv4Addr> = Vec::new();
    loop {
        match t.peek() {
            Some("broadcast") => {
                t.at += 1;
                flags |= BROADCAST_FLAG;
            }
            Some("chaddr") => {
                t.at += 1;
                chaddr = t.mac()?;
            }
            Some(w @ ("ciaddr" | "yiaddr" | "siaddr")) => {
                t.at += 1;
                let i = ["ciaddr", "yiaddr", "siaddr"]
                    .iter()
                    .position(|&x| x == w)
                    .expect("matched");
                fixed[i] = t.ip()?;
            }
            Some("lease") => {
                t.at += 1;
                lease = Some(t.number("a lease time in seconds")?);
            }
            Some("dns") => {
                t.at += 1;
                dns.push(t.ip()?);
            }
            Some(w) if ADDRESS_OPTIONS.iter().any(|(name, _)| *name == w) => {
                t.at += 1;
                let code = ADDRESS_OPTIONS
                    .iter()
                    .find(|(name, _)| *name == w)
                    .map(|(_, code)| *code)
                    .expect("matched");
                addresses.retain(|(c, _)| *c != code);
                addresses.push((code, t.ip()?));
            }
            _ => break,
        }
    }
    let op = match kind {
        2 | 5 | 6 => OP_REPLY,
        _ => OP_REQUEST,
    };
    let mut m = vec![op, 1, 6, 0];
    m.extend_from_slice(&xid.to_be_bytes());
    m.extend_from_slice(&[0, 0]); // secs
    m.extend_from_slice(&flags.to_be_bytes());
    for a in fixed {
        m.extend_from_slice(&a.octets());
    }
    m.extend_from_slice(&[0; 4]); // giaddr
    m.extend_from_slice(&chaddr.0);
    m.resize(FIXED_LEN, 0); // chaddr padding, sname, file
    m.extend_from_slice(&MAGIC_COOKIE);
    m.extend_from_slice(&[OPT_MESSAGE_TYPE, 1, kind]);
    for (_, code) in ADDRESS_OPTIONS {
        if let Some((_, a)) = addresses.iter().find(|(c, _)| *c == code) {
            m.extend_from_slice(&[code, 4]);
            m.extend_from_slice(&a.octets());
        }
    }
    if let Some(lease) = lease {
        m.extend_from_slice(&[OPT_LEASE, 4]);
        m.extend_from_slice(&lease.to_be_bytes());
    }
    if !dns.is_empty() {
        if dns.len() > 63 {
            bail!("{} DNS servers do not fit one option", dns.len());
        }
        m.extend_from_slice(&[OPT_DNS, 4 * dns.len() as u8]);
        for a in dns {
            m.extend_from_slice(&a.octets());
        }
    }
    m.push(OPT_END);
    Ok(m)
}

/// The words after `dhcp` that build `payload` back, if it is a message
/// this form can say (the caller checks that it builds back exactly).
pub(super) fn show(payload: &[u8], src_mac: MacAddr) -> Option<String> {
    if payload.len() < FIXED_LEN + 4 + 3 || payload[FIXED_LEN..FIXED_LEN + 4] != MAGIC_COOKIE {
        return None;
    }
    let options = &payload[FIXED_LEN + 4..];
    if options[0] != OPT_MESSAGE_TYPE || options[1] != 1 {
        return None;
    }
    let kind = *TYPES.get(usize::from(options[2]).checked_sub(1)?)?;
    let xid = u32::from_be_bytes(payload[4..8].try_into().ok()?);
    let mut out = format!(" {kind} xid 0x{xid:08x}");
    if u16::from_be_bytes([payload[10], payload[11]]) & BROADCAST_FLAG != 0 {
        out += " broadcast";
    }
    let chaddr = MacAddr::from_slice(&payload[28..34]);
    if chaddr != src_mac {
        let _ = write!(out, " chaddr {chaddr}");
    }
    for (i, name) in ["ciaddr", "yiaddr", "siaddr"].iter().enumerate() {
        let at = 12 + 4 * i;
        let a = Ipv4Addr::new(
            payload[at],
            payload[at + 1],
            payload[at + 2],
            payload[at + 3],
        );
        if !a.is_unspecified() {
            let _ = write!(out, " {name} {a}");
        }
    }
    let mut rest = &options[3..];
    while let [code, len, tail @ ..] = rest {
        let len = usize::from(*len);
        let value = tail.get(..len)?;
        match *code {
            OPT_END => break,
            OPT_LEASE if len == 4 => {
                let _ = write!(out, " lease {}", u32::from_be_bytes(value.try_into().ok()?));
            }
            OPT_DNS if len % 4 == 0 => {
                for a in value.chunks(4) {
                    let _ = write!(out, " dns {}", Ipv4Addr::new(a[0], a[1], a[2], a[3]));
                }
            }
            code if len == 4 => {
                let (name, _) = ADDRESS_OPTIONS.iter().find(|(_, c)| *c == code)?;
                let _ = write!(
                    out,
                    " {name} {}",
                    Ipv4Addr::new(value[0], value[1], value[2], value[3])
                );
            }
            _ => return None,
        }
        rest = &tail[len..];
    }
    Some(out)
}
