//! One readable line per forwarding decision (`serve --trace`, `replay --trace`).
//!
//! Both commands print through [`TraceLine`], so a line from a live switch and
//! a line from a replay of the same frames read the same.

use std::fmt;

use ports::wire::ethernet::{self, ethertype};
use ports::wire::vlan;

use crate::engine::{Action, FloodReason, Verdict};
use crate::mac_table::Learn;
use crate::port::PortId;
use crate::stats::DropReason;
use crate::time::Instant;

/// Everything a trace line says. `port_name` turns port numbers into names;
/// `flooded_to` lists the ports a flood went out of.
pub struct TraceLine<'a> {
    pub now: Instant,
    pub ingress: PortId,
    pub frame: &'a [u8],
    pub verdict: &'a Verdict,
    pub port_name: &'a dyn Fn(PortId) -> String,
    pub flooded_to: &'a [PortId],
}

impl fmt::Debug for TraceLine<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TraceLine({self})")
    }
}

impl fmt::Display for TraceLine<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = self.port_name;
        let v = self.verdict;
        let ingress = name(self.ingress);
        write!(f, "t={} {}: ", self.now, ingress)?;
        if v.action == Action::Drop(DropReason::Runt) {
            return write!(
                f,
                "runt of {} bytes: dropped (runt: shorter than an Ethernet header)",
                self.frame.len()
            );
        }
        write!(
            f,
            "{} > {} {} len {}: ",
            v.src,
            v.dst,
            Protocol(self.frame),
            self.frame.len()
        )?;
        match v.learn {
            None => {}
            Some(Learn::New) => write!(f, "learned {} on {}; ", v.src, ingress)?,
            Some(Learn::Refreshed) => write!(f, "{} known on {}; ", v.src, ingress)?,
            Some(Learn::Moved { from }) => {
                write!(f, "moved {} from {} to {}; ", v.src, name(from), ingress)?
            }
            Some(Learn::StaticElsewhere { port }) => {
                write!(f, "{} is static on {}, not moved; ", v.src, name(port))?
            }
            Some(Learn::SpoofedLocal) => {}
            Some(Learn::Refused) => write!(f, "table full, {} not learned; ", v.src)?,
        }
        match v.action {
            Action::Forward(port) => write!(
                f,
                "{} is on {}: forwarded to {}",
                v.dst,
                name(port),
                name(port)
            ),
            Action::Flood(reason) => {
                match reason {
                    FloodReason::Broadcast => write!(f, "broadcast: flooded to")?,
                    FloodReason::Multicast => write!(f, "multicast: flooded to")?,
                    FloodReason::UnknownUnicast => write!(f, "{} unknown: flooded to", v.dst)?,
                }
                if self.flooded_to.is_empty() {
                    return write!(f, " no other port");
                }
                for port in self.flooded_to {
                    write!(f, " {}", name(*port))?;
                }
                Ok(())
            }
            Action::Drop(reason) => {
                write!(f, "dropped ({}: ", reason.name())?;
                match reason {
                    DropReason::InvalidSource => write!(f, "{} is a group or zero address", v.src)?,
                    DropReason::LinkLocal => write!(f, "{} is link-local, never forwarded", v.dst)?,
                    DropReason::Hairpin => {
                        write!(f, "{} is on {}, where the frame came from", v.dst, ingress)?
                    }
                    DropReason::SpoofedLocal => write!(f, "{} is the switch's own address", v.src)?,
                    other => write!(f, "{other:?}")?,
                }
                write!(f, ")")
            }
        }
    }
}

/// The EtherType in words: "arp", "ipv4", "vlan 100 ipv4", "802.3/llc".
struct Protocol<'a>(&'a [u8]);

impl fmt::Display for Protocol<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Ok(frame) = ethernet::Frame::new_checked(self.0) else {
            return write!(f, "?");
        };
        let mut ethertype = frame.ethertype();
        let mut rest = frame.payload();
        loop {
            match ethertype {
                ethertype::VLAN | ethertype::QINQ => {
                    // 802.1ad (QinQ) outer tags are "svlan", 802.1Q ones "vlan".
                    let kind = if ethertype == ethertype::QINQ {
                        "svlan"
                    } else {
                        "vlan"
                    };
                    let Ok(tag) = vlan::Tag::new_checked(rest) else {
                        // Cut short: the id if it is there, then "?".
                        let id = if rest.len() >= vlan::field::TCI.end {
                            vlan::Tag::new_unchecked(rest).vlan_id()
                        } else {
                            0
                        };
                        return write!(f, "{kind} {id} ?");
                    };
                    write!(f, "{kind} {} ", tag.vlan_id())?;
                    ethertype = tag.ethertype();
                    rest = tag.into_payload();
                }
                ethertype::IPV4 => return write!(f, "ipv4"),
                ethertype::ARP => return write!(f, "arp"),
                ethertype::IPV6 => return write!(f, "ipv6"),
                ethertype::LLDP => return write!(f, "lldp"),
                ethertype::EAPOL => return write!(f, "eapol"),
                ethertype::SLOW_PROTOCOLS => return write!(f, "slow-protocols"),
                ethertype::PAUSE => return write!(f, "pause"),
                // Below 0x0600 the field is an 802.3 length: an LLC frame (STP, ...).
                n if n < ethertype::MIN => return write!(f, "802.3/llc"),
                n => return write!(f, "ethertype 0x{n:04x}"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mac::MacAddr;

    fn names(port: PortId) -> String {
        match port.0 {
            0 => "gw".into(),
            n => format!("p{n}"),
        }
    }

    fn line(verdict: Verdict, frame: &[u8], flooded_to: &[PortId]) -> String {
        TraceLine {
            now: Instant::from_millis(1500),
            ingress: PortId(1),
            frame,
            verdict: &verdict,
            port_name: &names,
            flooded_to,
        }
        .to_string()
    }

    fn arp_broadcast() -> Vec<u8> {
        let mut f = vec![0xff; 6];
        f.extend_from_slice(&[2, 0, 0, 0, 0, 1, 0x08, 0x06]);
        f.resize(60, 0);
        f
    }

    #[test]
    fn a_flood_names_every_port_it_went_to() {
        let v = Verdict {
            dst: MacAddr::BROADCAST,
            src: MacAddr([2, 0, 0, 0, 0, 1]),
            learn: Some(Learn::New),
            action: Action::Flood(FloodReason::Broadcast),
        };
        assert_eq!(
            line(v, &arp_broadcast(), &[PortId(0), PortId(2)]),
            "t=1.500000 p1: 02:00:00:00:00:01 > ff:ff:ff:ff:ff:ff arp len 60: \
             learned 02:00:00:00:00:01 on p1; broadcast: flooded to gw p2"
        );
    }

    #[test]
    fn a_hairpin_drop_says_why() {
        let dst = MacAddr([2, 0, 0, 0, 0, 2]);
        let v = Verdict {
            dst,
            src: MacAddr([2, 0, 0, 0, 0, 1]),
            learn: Some(Learn::Moved { from: PortId(2) }),
            action: Action::Drop(DropReason::Hairpin),
        };
        let mut frame = arp_broadcast();
        frame[..6].copy_from_slice(&dst.0);
        frame[12..18].copy_from_slice(&[0x81, 0x00, 0x00, 0x64, 0x08, 0x00]);
        assert_eq!(
            line(v, &frame, &[]),
            "t=1.500000 p1: 02:00:00:00:00:01 > 02:00:00:00:00:02 vlan 100 ipv4 len 60: \
             moved 02:00:00:00:00:01 from p2 to p1; \
             dropped (hairpin: 02:00:00:00:00:02 is on p1, where the frame came from)"
        );
    }

    #[test]
    fn protocol_words_for_tags_and_short_frames() {
        let frame = |tail: &[u8]| {
            let mut f = vec![2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1];
            f.extend_from_slice(tail);
            Protocol(&f).to_string()
        };
        assert_eq!(
            frame(&[0x88, 0xa8, 0, 5, 0x81, 0, 0, 100, 0x86, 0xdd]),
            "svlan 5 vlan 100 ipv6"
        );
        assert_eq!(frame(&[0x08, 0x06]), "arp");
        assert_eq!(frame(&[0x00, 0x26]), "802.3/llc");
        assert_eq!(frame(&[0x91, 0x00]), "ethertype 0x9100");
        assert_eq!(frame(&[0x81, 0x00]), "vlan 0 ?");
        assert_eq!(frame(&[0x81, 0x00, 0x00]), "vlan 0 ?");
        assert_eq!(frame(&[0x81, 0x00, 0x00, 0x07, 0x08]), "vlan 7 ?");
        assert_eq!(frame(&[0x08]), "?");
    }
}
