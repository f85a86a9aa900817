//! The IP forms of the text language: `ipv4` and `ipv6` packets, and the
//! `udp`, `tcp` and `icmpv6` forms that spell a whole packet from its
//! addresses (the IP header is made for them). Every checksum is computed.
//!
//! ```text
//! ipv4 SRC > DST [IPOPTS] icmp echo-request|echo-reply id N seq N [BODY]
//! ipv4 SRC > DST [IPOPTS] proto N [BODY]
//! ipv6 SRC > DST [ttl N] [tc N] [flow N] proto N [BODY]
//! udp SRC:PORT > DST:PORT [IPOPTS] (BODY | dhcp ...)
//! tcp SRC:PORT > DST:PORT [IPOPTS] [flags SAFRPUEC] [seq N] [ack N] [win N] [BODY]
//! icmpv6 SRC > DST [ttl N] neighbor-solicit TARGET [lladdr MAC]
//! icmpv6 SRC > DST [ttl N] neighbor-advert TARGET [router] [solicited] [override] [lladdr MAC]
//! icmpv6 SRC > DST [ttl N] echo-request|echo-reply id N seq N [BODY]
//! ```
//!
//! IPOPTS are `ttl N` (the hop limit, for IPv6), and for IPv4 `ip-id N`,
//! `tos N` and `no-df`. Addresses with a port are `172.17.0.2:53` or
//! `[fe80::1]:53`. IPv4 packets get TTL 64, identification 0 and Don't
//! Fragment; IPv6 packets hop limit 64, or 255 for neighbour discovery
//! (RFC 4861 requires it).

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use anyhow::{Context, Result, bail};
use ports::wire::{checksum, icmpv4, icmpv6, ipv4, ipv6, tcp, udp};
use switch::MacAddr;

use super::{Tokens, body, dhcp, show_body, show_text_body};

const ETHERTYPE_IPV4: u16 = ports::wire::ethernet::ethertype::IPV4;
const ETHERTYPE_IPV6: u16 = ports::wire::ethernet::ethertype::IPV6;
use ports::wire::ip::{
    ICMP as PROTO_ICMP, ICMPV6 as PROTO_ICMPV6, TCP as PROTO_TCP, UDP as PROTO_UDP,
};
const DEFAULT_TTL: u8 = 64;
/// Neighbour discovery messages must carry hop limit 255 (RFC 4861 §7.1).
const ND_HOP_LIMIT: u8 = 255;
const DEFAULT_WINDOW: u16 = 65_535;
/// The letters of TCP flags, in the order `show` spells them (tcpdump's).
const TCP_FLAGS: [(char, u8); 8] = [
    ('S', tcp::flags::SYN),
    ('F', tcp::flags::FIN),
    ('R', tcp::flags::RST),
    ('P', tcp::flags::PSH),
    ('A', tcp::flags::ACK),
    ('U', tcp::flags::URG),
    ('E', tcp::flags::ECE),
    ('C', tcp::flags::CWR),
];

use icmpv6::message::{
    ECHO_REPLY as ICMPV6_ECHO_REPLY, ECHO_REQUEST as ICMPV6_ECHO_REQUEST,
    NEIGHBOR_ADVERT as ND_NEIGHBOR_ADVERT, NEIGHBOR_SOLICIT as ND_NEIGHBOR_SOLICIT,
};
const ND_OPT_SOURCE_LLADDR: u8 = 1;
const ND_OPT_TARGET_LLADDR: u8 = 2;

/// The IP header's settings a line may give.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct IpOptions {
    ttl: Option<u8>,
    ident: u16,
    tos: u8,
    df: bool,
}

impl Default for IpOptions {
    fn default() -> Self {
        IpOptions {
            ttl: None,
            ident: 0,
            tos: 0,
            df: true,
        }
    }
}

impl IpOptions {
    fn parse(t: &mut Tokens<'_>, v4: bool) -> Result<IpOptions> {
        let mut o = IpOptions::default();
        loop {
            match t.peek() {
                Some("ttl") => {
                    t.at += 1;
                    o.ttl = Some(t.number("a TTL")?);
                }
                Some("ip-id") if v4 => {
                    t.at += 1;
                    o.ident = t.number("an IP identification")?;
                }
                Some("tos") if v4 => {
                    t.at += 1;
                    o.tos = t.number("a type of service")?;
                }
                Some("no-df") if v4 => {
                    t.at += 1;
                    o.df = false;
                }
                _ => return Ok(o),
            }
        }
    }

    /// The options as a line spells them (nothing for the defaults).
    fn show(&self, default_ttl: u8) -> String {
        let mut out = String::new();
        if let Some(ttl) = self.ttl.filter(|&ttl| ttl != default_ttl) {
            let _ = write!(out, " ttl {ttl}");
        }
        if self.ident != 0 {
            let _ = write!(out, " ip-id {}", self.ident);
        }
        if self.tos != 0 {
            let _ = write!(out, " tos {}", self.tos);
        }
        if !self.df {
            out += " no-df";
        }
        out
    }
}

/// `ipv4 SRC > DST ...`: the EtherType and packet.
pub(super) fn ipv4(t: &mut Tokens<'_>, f: &mut Vec<u8>) -> Result<()> {
    let src = t.ip()?;
    t.expect(">")?;
    let dst = t.ip()?;
    let options = IpOptions::parse(t, true)?;
    let (proto, payload) = match t.next("icmp or proto")? {
        "icmp" => {
            let kind: u8 = match t.next("echo-request or echo-reply")? {
                "echo-request" => 8,
                "echo-reply" => 0,
                other => bail!("expected echo-request or echo-reply, found {other:?}"),
            };
            (PROTO_ICMP, echo(t, kind)?)
        }
        "proto" => (t.number("an IP protocol number")?, body(t)?),
        other => bail!("expected icmp or proto, found {other:?}"),
    };
    let mut payload = payload;
    if proto == PROTO_ICMP {
        let sum = checksum::rfc1071_checksum(&payload);
        payload[2..4].copy_from_slice(&sum.to_be_bytes());
    }
    f.extend_from_slice(&ETHERTYPE_IPV4.to_be_bytes());
    ipv4_packet(f, src, dst, options, proto, &payload)
}

/// `ipv6 SRC > DST [ttl N] [tc N] [flow N] proto N [BODY]`.
pub(super) fn ipv6(t: &mut Tokens<'_>, f: &mut Vec<u8>) -> Result<()> {
    let src = t.ip6()?;
    t.expect(">")?;
    let dst = t.ip6()?;
    let (mut ttl, mut class, mut flow) = (DEFAULT_TTL, 0u8, 0u32);
    loop {
        match t.peek() {
            Some("ttl") => {
                t.at += 1;
                ttl = t.number("a hop limit")?;
            }
            Some("tc") => {
                t.at += 1;
                class = t.number("a traffic class")?;
            }
            Some("flow") => {
                t.at += 1;
                flow = t.number("a flow label")?;
                if flow > 0xf_ffff {
                    bail!("flow label {flow} is over 20 bits");
                }
            }
            _ => break,
        }
    }
    t.expect("proto")?;
    let next: u8 = t.number("a next header number")?;
    let payload = body(t)?;
    f.extend_from_slice(&ETHERTYPE_IPV6.to_be_bytes());
    ipv6_packet(f, src, dst, ttl, class, flow, next, &payload)
}

/// An address and port: `1.2.3.4:53` or `[fe80::1]:53`.
fn socket(t: &mut Tokens<'_>) -> Result<(IpAddr, u16)> {
    let token = t.next("an address and port (1.2.3.4:53 or [fe80::1]:53)")?;
    let bad = || format!("{token:?} is not an address and port such as 1.2.3.4:53 or [fe80::1]:53");
    let (addr, port) = token.rsplit_once(':').with_context(bad)?;
    let addr: IpAddr = match addr.strip_prefix('[').and_then(|a| a.strip_suffix(']')) {
        Some(v6) => IpAddr::V6(v6.parse().ok().with_context(bad)?),
        None => IpAddr::V4(addr.parse().ok().with_context(bad)?),
    };
    Ok((addr, port.parse().ok().with_context(bad)?))
}

/// `udp ...` and `tcp ...`: a whole IPv4 or IPv6 packet. `src_mac` is the
/// frame's source, DHCP's default client address.
pub(super) fn transport(
    t: &mut Tokens<'_>,
    f: &mut Vec<u8>,
    proto: &str,
    src_mac: MacAddr,
) -> Result<()> {
    let (src, sport) = socket(t)?;
    t.expect(">")?;
    let (dst, dport) = socket(t)?;
    let v4 = src.is_ipv4();
    if dst.is_ipv4() != v4 {
        bail!("{src} and {dst} are not of the same IP version");
    }
    let options = IpOptions::parse(t, v4)?;
    let (number, mut segment) = if proto == "udp" {
        let data = if t.take_if("dhcp") {
            dhcp::parse(t, src_mac)?
        } else {
            body(t)?
        };
        let len = u16::try_from(8 + data.len())
            .ok()
            .context("the UDP datagram is over 65535 bytes")?;
        let mut segment = Vec::with_capacity(8 + data.len());
        for v in [sport, dport, len, 0] {
            segment.extend_from_slice(&v.to_be_bytes());
        }
        segment.extend(data);
        (PROTO_UDP, segment)
    } else {
        (PROTO_TCP, tcp_segment(t, sport, dport)?)
    };
    let at = if number == PROTO_UDP { 6 } else { 16 };
    let sum = transport_checksum(src, dst, number, &segment);
    segment[at..at + 2].copy_from_slice(&sum.to_be_bytes());
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            f.extend_from_slice(&ETHERTYPE_IPV4.to_be_bytes());
            ipv4_packet(f, s, d, options, number, &segment)
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            f.extend_from_slice(&ETHERTYPE_IPV6.to_be_bytes());
            let ttl = options.ttl.unwrap_or(DEFAULT_TTL);
            ipv6_packet(f, s, d, ttl, 0, 0, number, &segment)
        }
        _ => unreachable!("checked to be of one version"),
    }
}

fn tcp_segment(t: &mut Tokens<'_>, sport: u16, dport: u16) -> Result<Vec<u8>> {
    let (mut flags, mut seq, mut ack, mut window) = (0u8, 0u32, 0u32, DEFAULT_WINDOW);
    loop {
        match t.peek() {
            Some("flags") => {
                t.at += 1;
                let letters = t.next("TCP flags such as S, SA or FA")?;
                flags = 0;
                for c in letters.chars() {
                    let bit = TCP_FLAGS
                        .iter()
                        .find(|(l, _)| *l == c.to_ascii_uppercase())
                        .map(|(_, bit)| *bit)
                        .with_context(|| {
                            format!("{c:?} is not a TCP flag (S, A, F, R, P, U, E, C)")
                        })?;
                    flags |= bit;
                }
            }
            Some("seq") => {
                t.at += 1;
                seq = t.number("a sequence number")?;
            }
            Some("ack") => {
                t.at += 1;
                ack = t.number("an acknowledgement number")?;
            }
            Some("win") => {
                t.at += 1;
                window = t.number("a window")?;
            }
            _ => break,
        }
    }
    let data = body(t)?;
    let mut segment = Vec::with_capacity(20 + data.len());
    segment.extend_from_slice(&sport.to_be_bytes());
    segment.extend_from_slice(&dport.to_be_bytes());
    segment.extend_from_slice(&seq.to_be_bytes());
    segment.extend_from_slice(&ack.to_be_bytes());
    segment.extend_from_slice(&[5 << 4, flags]);
    segment.extend_from_slice(&window.to_be_bytes());
    segment.extend_from_slice(&[0, 0, 0, 0]); // checksum, urgent pointer
    segment.extend(data);
    Ok(segment)
}

/// `icmpv6 SRC > DST [ttl N] ...`: neighbour discovery or echo.
pub(super) fn icmpv6(t: &mut Tokens<'_>, f: &mut Vec<u8>) -> Result<()> {
    let src = t.ip6()?;
    t.expect(">")?;
    let dst = t.ip6()?;
    let mut ttl = None;
    if t.take_if("ttl") {
        ttl = Some(t.number("a hop limit")?);
    }
    let mut message = match t.next("neighbor-solicit, neighbor-advert or echo-request")? {
        "neighbor-solicit" => {
            let target = t.ip6()?;
            let mut m = vec![ND_NEIGHBOR_SOLICIT, 0, 0, 0, 0, 0, 0, 0];
            m.extend_from_slice(&target.octets());
            lladdr(t, &mut m, ND_OPT_SOURCE_LLADDR)?;
            ttl.get_or_insert(ND_HOP_LIMIT);
            m
        }
        "neighbor-advert" => {
            let target = t.ip6()?;
            let mut flags = 0u8;
            for (word, bit) in [("router", 0x80), ("solicited", 0x40), ("override", 0x20)] {
                if t.take_if(word) {
                    flags |= bit;
                }
            }
            let mut m = vec![ND_NEIGHBOR_ADVERT, 0, 0, 0, flags, 0, 0, 0];
            m.extend_from_slice(&target.octets());
            lladdr(t, &mut m, ND_OPT_TARGET_LLADDR)?;
            ttl.get_or_insert(ND_HOP_LIMIT);
            m
        }
        "echo-request" => echo(t, ICMPV6_ECHO_REQUEST)?,
        "echo-reply" => echo(t, ICMPV6_ECHO_REPLY)?,
        other => {
            bail!(
                "expected neighbor-solicit, neighbor-advert, echo-request or echo-reply, found {other:?}"
            )
        }
    };
    let sum = transport_checksum(IpAddr::V6(src), IpAddr::V6(dst), PROTO_ICMPV6, &message);
    message[2..4].copy_from_slice(&sum.to_be_bytes());
    f.extend_from_slice(&ETHERTYPE_IPV6.to_be_bytes());
    let ttl = ttl.unwrap_or(DEFAULT_TTL);
    ipv6_packet(f, src, dst, ttl, 0, 0, PROTO_ICMPV6, &message)
}

/// `[lladdr MAC]`: a link-layer address option of `kind`.
fn lladdr(t: &mut Tokens<'_>, m: &mut Vec<u8>, kind: u8) -> Result<()> {
    if t.take_if("lladdr") {
        m.extend_from_slice(&[kind, 1]);
        m.extend_from_slice(&t.mac()?.0);
    }
    Ok(())
}

/// An echo request or reply (ICMP or ICMPv6) without its checksum.
fn echo(t: &mut Tokens<'_>, kind: u8) -> Result<Vec<u8>> {
    t.expect("id")?;
    let id: u16 = t.number("an ICMP identifier")?;
    t.expect("seq")?;
    let seq: u16 = t.number("an ICMP sequence number")?;
    let mut m = vec![kind, 0, 0, 0];
    m.extend_from_slice(&id.to_be_bytes());
    m.extend_from_slice(&seq.to_be_bytes());
    m.extend(body(t)?);
    Ok(m)
}

fn ipv4_packet(
    f: &mut Vec<u8>,
    src: Ipv4Addr,
    dst: Ipv4Addr,
    o: IpOptions,
    proto: u8,
    payload: &[u8],
) -> Result<()> {
    let total = u16::try_from(20 + payload.len())
        .ok()
        .context("the IPv4 packet is over 65535 bytes")?;
    let start = f.len();
    f.extend_from_slice(&[0x45, o.tos]);
    f.extend_from_slice(&total.to_be_bytes());
    f.extend_from_slice(&o.ident.to_be_bytes());
    f.extend_from_slice(&(if o.df { 0x4000u16 } else { 0 }).to_be_bytes());
    f.extend_from_slice(&[o.ttl.unwrap_or(DEFAULT_TTL), proto, 0, 0]);
    f.extend_from_slice(&src.octets());
    f.extend_from_slice(&dst.octets());
    let sum = checksum::rfc1071_checksum(&f[start..]);
    f[start + 10..start + 12].copy_from_slice(&sum.to_be_bytes());
    f.extend_from_slice(payload);
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn ipv6_packet(
    f: &mut Vec<u8>,
    src: Ipv6Addr,
    dst: Ipv6Addr,
    hop_limit: u8,
    class: u8,
    flow: u32,
    next: u8,
    payload: &[u8],
) -> Result<()> {
    let len = u16::try_from(payload.len())
        .ok()
        .context("the IPv6 payload is over 65535 bytes")?;
    let first = 6u32 << 28 | u32::from(class) << 20 | flow;
    f.extend_from_slice(&first.to_be_bytes());
    f.extend_from_slice(&len.to_be_bytes());
    f.extend_from_slice(&[next, hop_limit]);
    f.extend_from_slice(&src.octets());
    f.extend_from_slice(&dst.octets());
    f.extend_from_slice(payload);
    Ok(())
}

/// The UDP, TCP or ICMPv6 checksum over the pseudo-header and `segment`
/// (whose checksum field is zero).
fn transport_checksum(src: IpAddr, dst: IpAddr, proto: u8, segment: &[u8]) -> u16 {
    let addresses: Vec<u8> = match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => [s.octets(), d.octets()].concat(),
        (IpAddr::V6(s), IpAddr::V6(d)) => [s.octets(), d.octets()].concat(),
        _ => unreachable!("the callers give two addresses of one version"),
    };
    let pseudo = checksum::pseudo_header_sum(&addresses, proto, segment.len());
    checksum::transport_checksum(segment, u32::from(pseudo))
}

/// The forms an IPv4 packet `p` may be shown in, most telling first, each
/// with the bytes it covers.
pub(super) fn show_ipv4(p: &[u8], src_mac: MacAddr) -> Vec<(String, usize)> {
    let Ok(ip) = ipv4::Packet::new_checked(p) else {
        return Vec::new();
    };
    if ip.header_len() != ipv4::MIN_HEADER_LEN {
        return Vec::new();
    }
    let (src, dst) = (ip.src_addr(), ip.dst_addr());
    let options = IpOptions {
        ttl: Some(ip.ttl()),
        ident: ip.ident(),
        tos: ip.dscp_ecn(),
        df: ip.dont_fragment(),
    };
    let opts = options.show(DEFAULT_TTL);
    let l4 = ip.payload();
    let mut forms = transport_forms(
        ip.protocol(),
        &src.to_string(),
        &dst.to_string(),
        &opts,
        l4,
        src_mac,
    );
    let head = format!(" ipv4 {src} > {dst}{opts}");
    if ip.protocol() == PROTO_ICMP
        && let Ok(icmp) = icmpv4::Packet::new_checked(l4)
        && matches!(icmp.msg_type(), 0 | 8)
    {
        let word = if icmp.msg_type() == 8 {
            "echo-request"
        } else {
            "echo-reply"
        };
        forms.push(format!(
            "{head} icmp {word} id {} seq {}{}",
            icmp.echo_ident(),
            icmp.echo_seq_no(),
            show_body(icmp.payload())
        ));
    }
    forms.push(format!("{head} proto {}{}", ip.protocol(), show_body(l4)));
    let total = usize::from(ip.total_len());
    forms.into_iter().map(|f| (f, total)).collect()
}

/// The forms an IPv6 packet `p` may be shown in.
pub(super) fn show_ipv6(p: &[u8], src_mac: MacAddr) -> Vec<(String, usize)> {
    let Ok(ip) = ipv6::Packet::new_checked(p) else {
        return Vec::new();
    };
    let (src, dst) = (ip.src_addr(), ip.dst_addr());
    let (next, hop_limit) = (ip.next_header(), ip.hop_limit());
    let (class, flow) = (ip.traffic_class(), ip.flow_label());
    let l4 = ip.payload();
    let mut forms = Vec::new();
    if class == 0 && flow == 0 {
        let opts = IpOptions {
            ttl: Some(hop_limit),
            ..IpOptions::default()
        }
        .show(DEFAULT_TTL);
        let (s, d) = (format!("[{src}]"), format!("[{dst}]"));
        forms = transport_forms(next, &s, &d, &opts, l4, src_mac);
        if next == PROTO_ICMPV6
            && let Some(form) = show_icmpv6(src, dst, hop_limit, l4)
        {
            forms.push(form);
        }
    }
    let mut head = format!(" ipv6 {src} > {dst}");
    if hop_limit != DEFAULT_TTL {
        let _ = write!(head, " ttl {hop_limit}");
    }
    if class != 0 {
        let _ = write!(head, " tc {class}");
    }
    if flow != 0 {
        let _ = write!(head, " flow {flow}");
    }
    forms.push(format!("{head} proto {next}{}", show_body(l4)));
    let total = ipv6::HEADER_LEN + l4.len();
    forms.into_iter().map(|f| (f, total)).collect()
}

/// The `udp` (and `dhcp`) or `tcp` forms of a segment, if it is one.
fn transport_forms(
    proto: u8,
    src: &str,
    dst: &str,
    opts: &str,
    l4: &[u8],
    src_mac: MacAddr,
) -> Vec<String> {
    let mut forms = Vec::new();
    match proto {
        PROTO_UDP => {
            let Ok(udp) = udp::Packet::new_checked(l4) else {
                return forms;
            };
            if usize::from(udp.len()) != l4.len() {
                return forms;
            }
            let head = format!(
                " udp {src}:{} > {dst}:{}{opts}",
                udp.src_port(),
                udp.dst_port()
            );
            if let Some(dhcp) = dhcp::show(udp.payload(), src_mac) {
                forms.push(format!("{head} dhcp{dhcp}"));
            }
            forms.push(format!("{head}{}", show_text_body(udp.payload())));
        }
        PROTO_TCP => {
            let Ok(tcp) = tcp::Packet::new_checked(l4) else {
                return forms;
            };
            if tcp.header_len() != tcp::MIN_HEADER_LEN || tcp.urgent() != 0 {
                return forms;
            }
            let head = format!(
                " tcp {src}:{} > {dst}:{}{opts}",
                tcp.src_port(),
                tcp.dst_port()
            );
            forms.push(show_tcp(head, &tcp));
        }
        _ => {}
    }
    forms
}

/// `head` and the TCP header's fields that differ from the defaults.
fn show_tcp(mut out: String, tcp: &tcp::Packet<&[u8]>) -> String {
    let flags = tcp.flags();
    if flags != 0 {
        let letters: String = TCP_FLAGS
            .iter()
            .filter(|&&(_, bit)| flags & bit != 0)
            .map(|&(letter, _)| letter)
            .collect();
        let _ = write!(out, " flags {letters}");
    }
    if tcp.seq_number() != 0 {
        let _ = write!(out, " seq {}", tcp.seq_number());
    }
    if tcp.ack_number() != 0 {
        let _ = write!(out, " ack {}", tcp.ack_number());
    }
    if tcp.window() != DEFAULT_WINDOW {
        let _ = write!(out, " win {}", tcp.window());
    }
    out + &show_text_body(tcp.payload())
}

fn show_icmpv6(src: Ipv6Addr, dst: Ipv6Addr, hop_limit: u8, m: &[u8]) -> Option<String> {
    let icmp = icmpv6::Packet::new_checked(m).ok()?;
    let mut out = format!(" icmpv6 {src} > {dst}");
    let ttl = |out: &mut String, default: u8| {
        if hop_limit != default {
            let _ = write!(out, " ttl {hop_limit}");
        }
    };
    // After type, code and checksum: 4 bytes (flags or id and sequence),
    // then the target address or the echo data.
    let body = icmp.payload();
    match icmp.msg_type() {
        kind @ (ND_NEIGHBOR_SOLICIT | ND_NEIGHBOR_ADVERT) if body.len() >= 20 => {
            ttl(&mut out, ND_HOP_LIMIT);
            let target = Ipv6Addr::from(<[u8; 16]>::try_from(&body[4..20]).ok()?);
            if kind == ND_NEIGHBOR_SOLICIT {
                let _ = write!(out, " neighbor-solicit {target}");
            } else {
                let _ = write!(out, " neighbor-advert {target}");
                for (word, bit) in [("router", 0x80), ("solicited", 0x40), ("override", 0x20)] {
                    if body[0] & bit != 0 {
                        let _ = write!(out, " {word}");
                    }
                }
            }
            match &body[20..] {
                [] => {}
                [_, 1, mac @ ..] if mac.len() == 6 => {
                    let _ = write!(out, " lladdr {}", MacAddr::from_slice(mac));
                }
                _ => return None,
            }
        }
        kind @ (ICMPV6_ECHO_REQUEST | ICMPV6_ECHO_REPLY) if body.len() >= 4 => {
            ttl(&mut out, DEFAULT_TTL);
            let word = if kind == ICMPV6_ECHO_REQUEST {
                "echo-request"
            } else {
                "echo-reply"
            };
            let _ = write!(
                out,
                " {word} id {} seq {}{}",
                u16::from_be_bytes([body[0], body[1]]),
                u16::from_be_bytes([body[2], body[3]]),
                show_body(&body[4..])
            );
        }
        _ => return None,
    }
    Some(out)
}
