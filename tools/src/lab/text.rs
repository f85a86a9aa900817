//! A text format for frames, so that fixtures can be read and reviewed:
//! `tapswitch pcap build` turns it into pcap files, `tapswitch pcap show`
//! turns pcap files back into it.
//!
//! One frame per line; `#` starts a comment; blank lines are skipped.
//!
//! ```text
//! t=0.000 p1 02:00:00:00:00:01 > ff:ff:ff:ff:ff:ff arp who-has 172.17.0.1 tell 172.17.0.2 len 60
//! t=0.001 gw 02:42:ac:11:00:01 > 02:00:00:00:00:01 arp 172.17.0.1 is-at 02:42:ac:11:00:01 to 172.17.0.2
//! t=1 p1 02:00:00:00:00:01 > 02:42:ac:11:00:01 ipv4 172.17.0.2 > 172.17.0.1 icmp echo-request id 7 seq 1 data 74617073
//! t=2.5 p2 02:00:00:00:00:02 > 01:00:5e:00:00:fb vlan 100 pcp 3 ethertype 0x88b5 payload 46
//! t=3 p3 raw 0102030405
//! ```
//!
//! A line is `t=SECONDS PORT FRAME`. SECONDS is the capture time (since the
//! Unix epoch, up to nine decimals); PORT names the file the frame goes to.
//! FRAME is `SRC > DST`, then any number of `vlan ID [pcp N]` (802.1Q) or
//! `svlan ID [pcp N]` (802.1ad) tags, then one of:
//!
//! - `arp who-has IP [tell IP]`: a request from SRC (no `tell`: 0.0.0.0, a probe);
//! - `arp IP is-at MAC to IP`: a reply to DST;
//! - `ipv4 ...`, `ipv6 ...`, `udp ...` (with `dhcp ...` bodies), `tcp ...`
//!   and `icmpv6 ...`: IP packets, see [`ip`] and [`dhcp`];
//! - `ethertype 0xNNNN [BODY]`: anything else;
//!
//! where BODY is `data HEX`, `payload N` (N zero bytes) or `"text"` (with
//! `\"`, `\\`, `\n`, `\r`, `\t` and `\xHH` escapes). Checksums are always
//! computed. `len N` at the end
//! pads the frame with zeros to N bytes (Ethernet's minimum is 60 without
//! the FCS, but nothing pads unless asked). `raw HEX` gives the whole frame,
//! for runts and anything the forms above cannot say.
//!
//! `show` prints every frame in the shortest of these forms that builds
//! back to exactly the same bytes (it checks), falling back to `ethertype
//! ... data` and then `raw`, so a shown file always builds back unchanged.

use std::fmt::Write as _;
use std::net::Ipv4Addr;

use anyhow::{Context, Result, bail};
use ports::wire::{self, ethernet, vlan};
use switch::MacAddr;

use super::notation::{check_port_name, hex};

mod dhcp;
mod ip;
#[cfg(test)]
mod tests;

/// One frame of a text file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TextFrame {
    /// The line it came from (1-based).
    pub line: usize,
    pub time_ns: u64,
    pub port: String,
    pub data: Vec<u8>,
}

/// Parses a whole file; errors say which line.
pub fn parse(text: &str) -> Result<Vec<TextFrame>> {
    let mut frames = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line_no = i + 1;
        let context = || format!("line {line_no}: {}", line.trim());
        let tokens = tokenize(line).with_context(context)?;
        if tokens.is_empty() {
            continue;
        }
        let frame = parse_tokens(&tokens).with_context(context)?;
        frames.push(TextFrame {
            line: line_no,
            time_ns: frame.0,
            port: frame.1,
            data: frame.2,
        });
    }
    Ok(frames)
}

/// The text line for one frame (without a newline).
pub fn show(time_ns: u64, port: &str, frame: &[u8]) -> String {
    let head = format!("t={} {port} ", time(time_ns));
    let candidates = structured(frame).into_iter().chain(generic(frame));
    for body in candidates {
        let line = head.clone() + &body;
        let builds_back = tokenize(&line)
            .and_then(|tokens| parse_tokens(&tokens))
            .is_ok_and(|(_, _, data)| data == frame);
        if builds_back {
            return line;
        }
    }
    head + &format!("raw {}", hex(frame))
}

/// A line's tokens: words split at white space, and `"text"` as one token
/// (quotes included); `#` outside quotes starts a comment.
fn tokenize(line: &str) -> Result<Vec<&str>> {
    let mut tokens = Vec::new();
    let mut rest = line;
    loop {
        rest = rest.trim_start();
        if rest.is_empty() || rest.starts_with('#') {
            return Ok(tokens);
        }
        let end = if rest.starts_with('"') {
            let mut escaped = false;
            let close = rest
                .char_indices()
                .skip(1)
                .find(|&(_, c)| {
                    let closes = c == '"' && !escaped;
                    escaped = c == '\\' && !escaped;
                    closes
                })
                .map(|(i, _)| i)
                .context("a quoted text has no closing quote")?;
            close + 1
        } else {
            rest.find(|c: char| c.is_whitespace() || c == '#')
                .unwrap_or(rest.len())
        };
        tokens.push(&rest[..end]);
        rest = &rest[end..];
    }
}

/// The bytes of a `"text"` token, escapes resolved.
fn unquote(token: &str) -> Result<Vec<u8>> {
    let inner = &token[1..token.len() - 1];
    let mut out = Vec::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            let mut buf = [0u8; 4];
            out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            continue;
        }
        match chars.next() {
            Some('n') => out.push(b'\n'),
            Some('r') => out.push(b'\r'),
            Some('t') => out.push(b'\t'),
            Some(c @ ('"' | '\\')) => out.push(c as u8),
            Some('x') => {
                let digits: String = chars.by_ref().take(2).collect();
                out.push(
                    u8::from_str_radix(&digits, 16)
                        .ok()
                        .filter(|_| digits.len() == 2)
                        .with_context(|| format!("\\x{digits} is not a byte in hex"))?,
                );
            }
            other => bail!("unknown escape \\{} in {token}", other.unwrap_or(' ')),
        }
    }
    Ok(out)
}

/// Seconds with at least three and at most nine decimals.
pub fn time(ns: u64) -> String {
    let mut s = format!("{}.{:09}", ns / 1_000_000_000, ns % 1_000_000_000);
    while s.ends_with('0') && s.len() - s.find('.').unwrap_or(0) > 4 {
        s.pop();
    }
    s
}

fn parse_tokens(tokens: &[&str]) -> Result<(u64, String, Vec<u8>)> {
    let mut t = Tokens { tokens, at: 0 };
    let stamp = t.next("t=SECONDS")?;
    let Some(seconds) = stamp.strip_prefix("t=") else {
        bail!("a line starts with t=SECONDS, not {stamp:?}");
    };
    let time_ns = parse_time(seconds)?;
    let port = t.next("a port name")?.to_string();
    check_port_name(&port)?;
    let data = parse_frame(&mut t)?;
    if let Some(extra) = t.peek() {
        bail!("unexpected {extra:?} after the frame");
    }
    Ok((time_ns, port, data))
}

fn parse_time(s: &str) -> Result<u64> {
    let bad = || format!("{s:?} is not a time in seconds such as 1.5 or 0.000001");
    let (secs, frac) = s.split_once('.').unwrap_or((s, ""));
    if secs.is_empty() || frac.len() > 9 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        bail!(bad());
    }
    let secs: u64 = secs.parse().with_context(bad)?;
    let frac_ns: u64 = if frac.is_empty() {
        0
    } else {
        frac.parse::<u64>().with_context(bad)? * 10u64.pow(9 - frac.len() as u32)
    };
    secs.checked_mul(1_000_000_000)
        .and_then(|ns| ns.checked_add(frac_ns))
        .with_context(bad)
}

struct Tokens<'a> {
    tokens: &'a [&'a str],
    at: usize,
}

impl<'a> Tokens<'a> {
    fn peek(&self) -> Option<&'a str> {
        self.tokens.get(self.at).copied()
    }

    fn next(&mut self, what: &str) -> Result<&'a str> {
        let token = self
            .peek()
            .with_context(|| format!("expected {what} at the end of the line"))?;
        self.at += 1;
        Ok(token)
    }

    fn take_if(&mut self, word: &str) -> bool {
        if self.peek() == Some(word) {
            self.at += 1;
            return true;
        }
        false
    }

    fn expect(&mut self, word: &str) -> Result<()> {
        let token = self.next(&format!("{word:?}"))?;
        if token != word {
            bail!("expected {word:?}, found {token:?}");
        }
        Ok(())
    }

    fn mac(&mut self) -> Result<MacAddr> {
        Ok(self.next("a MAC address")?.parse()?)
    }

    fn ip(&mut self) -> Result<Ipv4Addr> {
        let token = self.next("an IPv4 address")?;
        token
            .parse()
            .with_context(|| format!("{token:?} is not an IPv4 address"))
    }

    fn ip6(&mut self) -> Result<std::net::Ipv6Addr> {
        let token = self.next("an IPv6 address")?;
        token
            .parse()
            .with_context(|| format!("{token:?} is not an IPv6 address"))
    }

    fn number<T: TryFrom<u64>>(&mut self, what: &str) -> Result<T> {
        let token = self.next(what)?;
        let n = match token.strip_prefix("0x") {
            Some(h) => u64::from_str_radix(h, 16),
            None => token.parse(),
        }
        .with_context(|| format!("{token:?} is not a number ({what})"))?;
        T::try_from(n)
            .ok()
            .with_context(|| format!("{n} is too large for {what}"))
    }

    fn hex(&mut self) -> Result<Vec<u8>> {
        let token = self.next("hex bytes")?;
        unhex(token)
    }
}

fn unhex(s: &str) -> Result<Vec<u8>> {
    if !s.is_ascii() || !s.len().is_multiple_of(2) {
        bail!("{s:?} is not hex bytes (an even number of hex digits)");
    }
    (0..s.len())
        .step_by(2)
        .map(|i| {
            u8::from_str_radix(&s[i..i + 2], 16).with_context(|| format!("{s:?} is not hex bytes"))
        })
        .collect()
}

fn parse_frame(t: &mut Tokens<'_>) -> Result<Vec<u8>> {
    if t.take_if("raw") {
        return t.hex();
    }
    let src = t.mac()?;
    t.expect(">")?;
    let dst = t.mac()?;
    let mut f = Vec::with_capacity(64);
    f.extend_from_slice(&dst.0);
    f.extend_from_slice(&src.0);
    loop {
        let tpid: u16 = match t.peek() {
            Some("vlan") => 0x8100,
            Some("svlan") => 0x88a8,
            _ => break,
        };
        t.at += 1;
        let id: u16 = t.number("a VLAN id")?;
        if id > 4095 {
            bail!("VLAN id {id} is over 4095");
        }
        let pcp: u16 = if t.take_if("pcp") {
            t.number("a priority")?
        } else {
            0
        };
        if pcp > 7 {
            bail!("priority {pcp} is over 7");
        }
        f.extend_from_slice(&tpid.to_be_bytes());
        f.extend_from_slice(&(pcp << 13 | id).to_be_bytes());
    }
    match t.next("arp, ipv4, ipv6, udp, tcp, icmpv6 or ethertype")? {
        "arp" => arp(t, &mut f, src, dst)?,
        "ipv4" => ip::ipv4(t, &mut f)?,
        "ipv6" => ip::ipv6(t, &mut f)?,
        proto @ ("udp" | "tcp") => ip::transport(t, &mut f, proto, src)?,
        "icmpv6" => ip::icmpv6(t, &mut f)?,
        "ethertype" => {
            let ethertype: u16 = t.number("an EtherType")?;
            f.extend_from_slice(&ethertype.to_be_bytes());
            f.extend(body(t)?);
        }
        other => {
            bail!("expected arp, ipv4, ipv6, udp, tcp, icmpv6, ethertype or vlan, found {other:?}")
        }
    }
    if t.take_if("len") {
        let len: usize = t.number("a frame length")?;
        if len < f.len() {
            bail!("len {len} is shorter than the frame's {} bytes", f.len());
        }
        f.resize(len, 0);
    }
    Ok(f)
}

fn body(t: &mut Tokens<'_>) -> Result<Vec<u8>> {
    if let Some(token) = t.peek().filter(|token| token.starts_with('"')) {
        t.at += 1;
        return unquote(token);
    }
    if t.take_if("data") {
        return t.hex();
    }
    if t.take_if("payload") {
        let n: usize = t.number("a payload length")?;
        if n > 65_535 {
            bail!("payload {n} is longer than any frame");
        }
        return Ok(vec![0; n]);
    }
    Ok(Vec::new())
}

fn arp(t: &mut Tokens<'_>, f: &mut Vec<u8>, src: MacAddr, dst: MacAddr) -> Result<()> {
    let (op, sha, spa, tha, tpa) = if t.take_if("who-has") {
        let tpa = t.ip()?;
        let spa = if t.take_if("tell") {
            t.ip()?
        } else {
            Ipv4Addr::UNSPECIFIED
        };
        (1u16, src, spa, MacAddr::ZERO, tpa)
    } else {
        let spa = t.ip()?;
        t.expect("is-at")?;
        let sha = t.mac()?;
        t.expect("to")?;
        let tpa = t.ip()?;
        (2u16, sha, spa, dst, tpa)
    };
    f.extend_from_slice(&0x0806u16.to_be_bytes());
    f.extend_from_slice(&[0, 1, 0x08, 0x00, 6, 4]);
    f.extend_from_slice(&op.to_be_bytes());
    f.extend_from_slice(&sha.0);
    f.extend_from_slice(&spa.octets());
    f.extend_from_slice(&tha.0);
    f.extend_from_slice(&tpa.octets());
    Ok(())
}

/// What follows the addresses and tags: `SRC > DST [tags]`, the EtherType
/// and the payload after it; `None` for a runt.
fn addresses(frame: &[u8]) -> Option<(String, u16, &[u8])> {
    let eth = ethernet::Frame::new_checked(frame).ok()?;
    let mut out = format!("{} > {}", eth.src_addr(), eth.dst_addr());
    let mut ethertype = eth.ethertype();
    let mut payload = eth.into_payload();
    loop {
        let word = match ethertype {
            ethernet::ethertype::VLAN => "vlan",
            ethernet::ethertype::QINQ => "svlan",
            _ => return Some((out, ethertype, payload)),
        };
        let tag = vlan::Tag::new_checked(payload).ok()?;
        let _ = write!(out, " {word} {}", tag.vlan_id());
        if tag.priority() != 0 {
            let _ = write!(out, " pcp {}", tag.priority());
        }
        ethertype = tag.ethertype();
        payload = tag.into_payload();
    }
}

/// The ARP and IP forms a frame may be shown in, most telling first.
fn structured(frame: &[u8]) -> Vec<String> {
    let Some((head, ethertype, p)) = addresses(frame) else {
        return Vec::new();
    };
    let src = ethernet::Frame::new_unchecked(frame).src_addr();
    let forms: Vec<(String, usize)> = match ethertype {
        ethernet::ethertype::ARP => arp_form(p).into_iter().collect(),
        ethernet::ethertype::IPV4 => ip::show_ipv4(p, src),
        ethernet::ethertype::IPV6 => ip::show_ipv6(p, src),
        _ => Vec::new(),
    };
    forms
        .into_iter()
        .filter_map(|(form, used)| {
            let trailer = &p[used..];
            if !trailer.iter().all(|&b| b == 0) {
                return None;
            }
            let mut out = head.clone() + &form;
            if !trailer.is_empty() {
                let _ = write!(out, " len {}", frame.len());
            }
            Some(out)
        })
        .collect()
}

/// The `arp` form of an Ethernet/IPv4 ARP packet, and the bytes it covers.
fn arp_form(p: &[u8]) -> Option<(String, usize)> {
    let arp = wire::arp::Packet::new_checked(p).ok()?;
    if !arp.is_ethernet_ipv4() {
        return None;
    }
    let (spa, tpa) = (arp.sender_ipv4()?, arp.target_ipv4()?);
    let form = match arp.operation() {
        1 if spa.is_unspecified() => format!(" arp who-has {tpa}"),
        1 => format!(" arp who-has {tpa} tell {spa}"),
        2 => format!(" arp {spa} is-at {} to {tpa}", arp.sender_mac()?),
        _ => return None,
    };
    Some((form, wire::arp::FIXED_LEN + 2 * 6 + 2 * 4))
}

/// The `ethertype ... data` form: any frame of 14 bytes or more.
fn generic(frame: &[u8]) -> Option<String> {
    let (mut out, ethertype, payload) = addresses(frame)?;
    let _ = write!(out, " ethertype 0x{ethertype:04x}");
    let kept = payload.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
    if kept == 0 {
        if !payload.is_empty() {
            let _ = write!(out, " payload {}", payload.len());
        }
    } else {
        let _ = write!(out, " data {}", hex(&payload[..kept]));
        if kept < payload.len() {
            let _ = write!(out, " len {}", frame.len());
        }
    }
    Some(out)
}

/// A body as `"text"` when it is printable ASCII, else as [`show_body`].
fn show_text_body(b: &[u8]) -> String {
    let printable = |&c: &u8| (0x20..0x7f).contains(&c) || matches!(c, b'\n' | b'\t' | b'\r');
    if b.is_empty() || !b.iter().all(printable) {
        return show_body(b);
    }
    let mut out = String::from(" \"");
    for &c in b {
        match c {
            b'"' => out += "\\\"",
            b'\\' => out += "\\\\",
            b'\n' => out += "\\n",
            b'\r' => out += "\\r",
            b'\t' => out += "\\t",
            c => out.push(char::from(c)),
        }
    }
    out.push('"');
    out
}

fn show_body(b: &[u8]) -> String {
    if b.is_empty() {
        String::new()
    } else if b.iter().all(|&x| x == 0) {
        format!(" payload {}", b.len())
    } else {
        format!(" data {}", hex(b))
    }
}
