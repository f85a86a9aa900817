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
//! - `ipv4 SRC > DST [ttl N] [ip-id N] [tos N] [no-df] icmp echo-request|echo-reply id N seq N [BODY]`;
//! - `ipv4 SRC > DST [...] proto N [BODY]`: any other IPv4 payload;
//! - `ethertype 0xNNNN [BODY]`: anything else;
//!
//! where BODY is `data HEX` or `payload N` (N zero bytes). IPv4 packets get
//! TTL 64, identification 0 and Don't Fragment unless told otherwise (what
//! the gateway sends); checksums are always computed. `len N` at the end
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
use switch::MacAddr;

use super::notation::{check_port_name, hex};

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
        let content = line.split('#').next().unwrap_or("");
        let tokens: Vec<&str> = content.split_whitespace().collect();
        if tokens.is_empty() {
            continue;
        }
        let frame =
            parse_tokens(&tokens).with_context(|| format!("line {line_no}: {}", line.trim()))?;
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
    let candidates = [structured(frame), generic(frame)];
    for body in candidates.into_iter().flatten() {
        let line = head.clone() + &body;
        let tokens: Vec<&str> = line.split_whitespace().collect();
        if matches!(parse_tokens(&tokens), Ok((_, _, ref data)) if data == frame) {
            return line;
        }
    }
    head + &format!("raw {}", hex(frame))
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
    match t.next("arp, ipv4 or ethertype")? {
        "arp" => arp(t, &mut f, src, dst)?,
        "ipv4" => ipv4(t, &mut f)?,
        "ethertype" => {
            let ethertype: u16 = t.number("an EtherType")?;
            f.extend_from_slice(&ethertype.to_be_bytes());
            f.extend(body(t)?);
        }
        other => bail!("expected arp, ipv4, ethertype or vlan, found {other:?}"),
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

fn ipv4(t: &mut Tokens<'_>, f: &mut Vec<u8>) -> Result<()> {
    let src = t.ip()?;
    t.expect(">")?;
    let dst = t.ip()?;
    let (mut ttl, mut ident, mut tos, mut df) = (64u8, 0u16, 0u8, true);
    loop {
        match t.peek() {
            Some("ttl") => {
                t.at += 1;
                ttl = t.number("a TTL")?;
            }
            Some("ip-id") => {
                t.at += 1;
                ident = t.number("an IP identification")?;
            }
            Some("tos") => {
                t.at += 1;
                tos = t.number("a type of service")?;
            }
            Some("no-df") => {
                t.at += 1;
                df = false;
            }
            _ => break,
        }
    }
    let (proto, payload) = match t.next("icmp or proto")? {
        "icmp" => {
            let kind: u8 = match t.next("echo-request or echo-reply")? {
                "echo-request" => 8,
                "echo-reply" => 0,
                other => bail!("expected echo-request or echo-reply, found {other:?}"),
            };
            t.expect("id")?;
            let id: u16 = t.number("an ICMP identifier")?;
            t.expect("seq")?;
            let seq: u16 = t.number("an ICMP sequence number")?;
            let data = body(t)?;
            let mut icmp = vec![kind, 0, 0, 0];
            icmp.extend_from_slice(&id.to_be_bytes());
            icmp.extend_from_slice(&seq.to_be_bytes());
            icmp.extend(data);
            let sum = ports::vnet::rfc1071_checksum(&icmp);
            icmp[2..4].copy_from_slice(&sum.to_be_bytes());
            (1u8, icmp)
        }
        "proto" => (t.number("an IP protocol number")?, body(t)?),
        other => bail!("expected icmp or proto, found {other:?}"),
    };
    let total = 20 + payload.len();
    let total = u16::try_from(total)
        .ok()
        .context("the IPv4 packet is over 65535 bytes")?;
    f.extend_from_slice(&0x0800u16.to_be_bytes());
    let start = f.len();
    f.extend_from_slice(&[0x45, tos]);
    f.extend_from_slice(&total.to_be_bytes());
    f.extend_from_slice(&ident.to_be_bytes());
    f.extend_from_slice(&(if df { 0x4000u16 } else { 0 }).to_be_bytes());
    f.extend_from_slice(&[ttl, proto, 0, 0]);
    f.extend_from_slice(&src.octets());
    f.extend_from_slice(&dst.octets());
    let sum = ports::vnet::rfc1071_checksum(&f[start..]);
    f[start + 10..start + 12].copy_from_slice(&sum.to_be_bytes());
    f.extend(payload);
    Ok(())
}

/// `SRC > DST [tags]` and the offset of the EtherType, or `None` for a runt.
fn addresses(frame: &[u8]) -> Option<(String, usize)> {
    if frame.len() < 14 {
        return None;
    }
    let mut out = format!(
        "{} > {}",
        MacAddr::from_slice(&frame[6..12]),
        MacAddr::from_slice(&frame[0..6])
    );
    let mut at = 12;
    loop {
        let ethertype = u16::from_be_bytes([*frame.get(at)?, *frame.get(at + 1)?]);
        let word = match ethertype {
            0x8100 => "vlan",
            0x88a8 => "svlan",
            _ => return Some((out, at)),
        };
        let tci = u16::from_be_bytes([*frame.get(at + 2)?, *frame.get(at + 3)?]);
        let _ = write!(out, " {word} {}", tci & 0x0fff);
        if tci >> 13 != 0 {
            let _ = write!(out, " pcp {}", tci >> 13);
        }
        at += 4;
    }
}

/// The ARP or IPv4 form, if the frame is one.
fn structured(frame: &[u8]) -> Option<String> {
    let (mut out, at) = addresses(frame)?;
    let ethertype = u16::from_be_bytes([frame[at], frame[at + 1]]);
    let p = frame.get(at + 2..)?;
    let used = match ethertype {
        0x0806 if p.len() >= 28 => {
            let ip = |i: usize| Ipv4Addr::new(p[i], p[i + 1], p[i + 2], p[i + 3]);
            let mac = |i: usize| MacAddr::from_slice(&p[i..]);
            match u16::from_be_bytes([p[6], p[7]]) {
                1 if ip(14).is_unspecified() => {
                    let _ = write!(out, " arp who-has {}", ip(24));
                }
                1 => {
                    let _ = write!(out, " arp who-has {} tell {}", ip(24), ip(14));
                }
                2 => {
                    let _ = write!(out, " arp {} is-at {} to {}", ip(14), mac(8), ip(24));
                }
                _ => return None,
            }
            28
        }
        0x0800 if p.len() >= 20 => {
            let total = usize::from(u16::from_be_bytes([p[2], p[3]]));
            if total < 20 || total > p.len() {
                return None;
            }
            let _ = write!(
                out,
                " ipv4 {} > {}",
                Ipv4Addr::new(p[12], p[13], p[14], p[15]),
                Ipv4Addr::new(p[16], p[17], p[18], p[19])
            );
            if p[8] != 64 {
                let _ = write!(out, " ttl {}", p[8]);
            }
            let ident = u16::from_be_bytes([p[4], p[5]]);
            if ident != 0 {
                let _ = write!(out, " ip-id {ident}");
            }
            if p[1] != 0 {
                let _ = write!(out, " tos {}", p[1]);
            }
            if p[6] & 0x40 == 0 {
                out += " no-df";
            }
            let l4 = &p[20..total];
            match (p[9], l4.first()) {
                (1, Some(&kind @ (0 | 8))) if l4.len() >= 8 => {
                    let word = if kind == 8 {
                        "echo-request"
                    } else {
                        "echo-reply"
                    };
                    let _ = write!(
                        out,
                        " icmp {word} id {} seq {}{}",
                        u16::from_be_bytes([l4[4], l4[5]]),
                        u16::from_be_bytes([l4[6], l4[7]]),
                        show_body(&l4[8..])
                    );
                }
                (proto, _) => {
                    let _ = write!(out, " proto {proto}{}", show_body(l4));
                }
            }
            total
        }
        _ => return None,
    };
    let trailer = &p[used..];
    if !trailer.iter().all(|&b| b == 0) {
        return None;
    }
    if !trailer.is_empty() {
        let _ = write!(out, " len {}", frame.len());
    }
    Some(out)
}

/// The `ethertype ... data` form: any frame of 14 bytes or more.
fn generic(frame: &[u8]) -> Option<String> {
    let (mut out, at) = addresses(frame)?;
    let ethertype = u16::from_be_bytes([frame[at], frame[at + 1]]);
    let payload = &frame[at + 2..];
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

fn show_body(b: &[u8]) -> String {
    if b.is_empty() {
        String::new()
    } else if b.iter().all(|&x| x == 0) {
        format!(" payload {}", b.len())
    } else {
        format!(" data {}", hex(b))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn build(line: &str) -> Vec<u8> {
        let frames = parse(line).unwrap();
        assert_eq!(frames.len(), 1);
        frames.into_iter().next().unwrap().data
    }

    #[test]
    fn the_issue_example_builds_an_arp_request() {
        let f = build("t=0.000 p1 02:00:00:00:00:01 > ff:ff:ff:ff:ff:ff arp who-has 172.17.0.1");
        assert_eq!(f.len(), 42);
        assert_eq!(&f[0..6], &[0xff; 6]);
        assert_eq!(&f[12..14], &[0x08, 0x06]);
        assert_eq!(&f[20..22], &[0, 1], "a request");
        assert_eq!(&f[38..42], &[172, 17, 0, 1]);
    }

    #[test]
    fn ping_has_valid_checksums() {
        let f = build(
            "t=1 p1 02:00:00:00:00:01 > 02:42:ac:11:00:01 ipv4 172.17.0.2 > 172.17.0.1 \
             icmp echo-request id 7 seq 1 data 74617073",
        );
        assert_eq!(
            ports::vnet::rfc1071_checksum(&f[14..34]),
            0,
            "IPv4 header checksum"
        );
        assert_eq!(ports::vnet::rfc1071_checksum(&f[34..]), 0, "ICMP checksum");
        assert_eq!(f[14 + 8], 64);
        assert_eq!(&f[14 + 6..14 + 8], &[0x40, 0], "don't fragment");
    }

    #[test]
    fn vlan_tags_and_padding() {
        let f = build(
            "t=2.5 p2 02:00:00:00:00:02 > 01:00:5e:00:00:fb vlan 100 pcp 3 svlan 7 \
             ethertype 0x88b5 data 01 len 64",
        );
        assert_eq!(&f[12..16], &[0x81, 0x00, 0x60, 100]);
        assert_eq!(&f[16..20], &[0x88, 0xa8, 0x00, 7]);
        assert_eq!(&f[20..23], &[0x88, 0xb5, 0x01]);
        assert_eq!(f.len(), 64);
    }

    #[test]
    fn times_keep_nanoseconds() {
        let frames = parse("t=12.000000001 p1 raw 00\n# comment\n\nt=3 p1 raw 01").unwrap();
        assert_eq!(frames[0].time_ns, 12_000_000_001);
        assert_eq!(frames[1].time_ns, 3_000_000_000);
        assert_eq!(frames[1].line, 4);
        assert_eq!(time(12_000_000_001), "12.000000001");
        assert_eq!(time(1_500_000_000), "1.500");
        assert_eq!(time(0), "0.000");
    }

    #[test]
    fn errors_name_the_line() {
        let err = parse("t=0 p1 raw 00\nt=1 p1 02:00:00:00:00:01 > nope arp who-has 1.2.3.4")
            .unwrap_err();
        assert!(format!("{err:#}").starts_with("line 2:"), "{err:#}");
        for bad in [
            "0 p1 raw 00",
            "t=1.0000000001 p1 raw 00",
            "t=0 ../x raw 00",
            "t=0 p1 raw 0",
            "t=0 p1 raw 0é",
            "t=0 p1 02:00:00:00:00:01 > 02:00:00:00:00:02 ethertype 0x0800 len 10",
            "t=0 p1 02:00:00:00:00:01 > 02:00:00:00:00:02 vlan 4096 ethertype 1",
            "t=0 p1 02:00:00:00:00:01 > 02:00:00:00:00:02 ethertype 1 extra",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn show_builds_back_to_the_same_bytes() {
        let lines = [
            "t=0.000 p1 02:00:00:00:00:01 > ff:ff:ff:ff:ff:ff arp who-has 172.17.0.1 tell 172.17.0.2 len 60",
            "t=0.000 p1 02:00:00:00:00:01 > ff:ff:ff:ff:ff:ff arp who-has 172.17.0.1",
            "t=0.001 gw 02:42:ac:11:00:01 > 02:00:00:00:00:01 arp 172.17.0.1 is-at 02:42:ac:11:00:01 to 172.17.0.2",
            "t=1.000 p1 02:00:00:00:00:01 > 02:42:ac:11:00:01 ipv4 172.17.0.2 > 172.17.0.1 icmp echo-request id 7 seq 1 data 74617073",
            "t=1.000 p1 02:00:00:00:00:01 > 02:42:ac:11:00:01 ipv4 172.17.0.2 > 172.17.0.1 ttl 3 ip-id 9 tos 16 no-df proto 17 data 0102 len 64",
            "t=2.500 p2 02:00:00:00:00:02 > 01:00:5e:00:00:fb vlan 100 pcp 3 ethertype 0x88b5 payload 46",
            "t=2.500 p2 02:00:00:00:00:02 > 01:00:5e:00:00:fb svlan 100 vlan 5 ethertype 0x88b5 data ff len 60",
            "t=3.000 p3 raw 0102030405",
        ];
        for line in lines {
            let f = build(line);
            let shown = show(parse(line).unwrap()[0].time_ns, "x", &f);
            let expected = line.replacen(line.split(' ').nth(1).unwrap(), "x", 1);
            assert_eq!(shown, expected);
        }
    }

    #[test]
    fn show_falls_back_when_a_form_would_not_build_back() {
        // An echo request with a broken ICMP checksum.
        let mut f = build(
            "t=1 p1 02:00:00:00:00:01 > 02:42:ac:11:00:01 ipv4 172.17.0.2 > 172.17.0.1 \
             icmp echo-request id 7 seq 1",
        );
        f[36] ^= 0xff;
        let line = show(1_000_000_000, "p1", &f);
        assert!(line.contains("ethertype 0x0800 data 45"), "{line}");
        assert_eq!(build(&line), f);
        // A VLAN tag with the DEI bit: no form says it, so raw.
        let mut f = build("t=0 p1 02:00:00:00:00:01 > 02:00:00:00:00:02 vlan 5 ethertype 1");
        f[14] |= 0x10;
        let line = show(0, "p1", &f);
        assert!(line.contains(" raw "), "{line}");
        assert_eq!(build(&line), f);
    }
}
