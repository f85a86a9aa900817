//! The names a network's gateway answers for itself.
//!
//! Each container answers by its bare name (`web`, as Docker's embedded DNS
//! answers on user networks) and inside the network's own domain
//! (`web.tapswitch.internal`); `host.tapswitch.internal` is the gateway.
//! Names are compared without regard to case (RFC 4343) and without the
//! trailing dot.
//!
//! The own domain is authoritative: a name under it that the table does not
//! hold does not exist (NXDOMAIN), instead of being asked upstream, where it
//! could only leak. A bare name the table does not hold is another matter:
//! it may be a host name the upstream resolver knows, so it is forwarded.

use std::collections::HashMap;
use std::net::Ipv4Addr;

/// The domain the gateway answers authoritatively.
pub const DEFAULT_DOMAIN: &str = "tapswitch.internal";

/// The gateway's own name inside [`DEFAULT_DOMAIN`] (Docker Desktop calls
/// its equivalent `host.docker.internal`).
pub const HOST_LABEL: &str = "host";

/// What the table knows about a name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    /// A name of the network with this address.
    Known(Ipv4Addr),
    /// The own domain itself: it exists, with no address.
    Apex,
    /// Under the own domain, but nobody has that name: NXDOMAIN.
    UnknownInDomain,
    /// Not ours to answer: forward it.
    Outside,
}

/// Container names and the gateway's name, each with its address.
#[derive(Debug, Clone, Default)]
pub struct NameTable {
    /// Lowercase, no trailing dot.
    domain: String,
    /// Every full name (bare and in-domain), lowercase, no trailing dot.
    names: HashMap<String, Ipv4Addr>,
    /// Address → the in-domain name, for reverse (PTR) lookups.
    reverse: HashMap<Ipv4Addr, String>,
}

impl NameTable {
    /// A table for `domain` in which `host.<domain>` is `gateway`.
    pub fn new(domain: &str, gateway: Ipv4Addr) -> NameTable {
        let mut table = NameTable {
            domain: normalize(domain),
            ..NameTable::default()
        };
        let host = format!("{HOST_LABEL}.{}", table.domain);
        table.names.insert(host.clone(), gateway);
        table.reverse.insert(gateway, host);
        table
    }

    /// Adds a container: `name` and `name.<domain>` answer `ip`. The
    /// gateway's own name is never taken over by a container called
    /// `host`: that container still answers by its bare name.
    pub fn insert(&mut self, name: &str, ip: Ipv4Addr) {
        let bare = normalize(name);
        if bare.is_empty() {
            return;
        }
        let full = format!("{bare}.{}", self.domain);
        self.names.insert(bare, ip);
        if !self.names.contains_key(&full) {
            self.names.insert(full.clone(), ip);
            self.reverse.entry(ip).or_insert(full);
        }
    }

    pub fn domain(&self) -> &str {
        &self.domain
    }

    /// What the table says about `name` (any case, with or without the
    /// trailing dot).
    pub fn lookup(&self, name: &str) -> Lookup {
        let name = normalize(name);
        if let Some(ip) = self.names.get(&name) {
            return Lookup::Known(*ip);
        }
        if name == self.domain {
            return Lookup::Apex;
        }
        let in_domain = name
            .strip_suffix(&self.domain)
            .is_some_and(|rest| rest.ends_with('.'));
        if in_domain {
            Lookup::UnknownInDomain
        } else {
            Lookup::Outside
        }
    }

    /// The in-domain name of `ip`, for a PTR answer.
    pub fn name_of(&self, ip: Ipv4Addr) -> Option<&str> {
        self.reverse.get(&ip).map(String::as_str)
    }
}

fn normalize(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

/// The address a reverse-lookup name (`4.3.2.1.in-addr.arpa`) stands for.
pub fn parse_reverse_name(name: &str) -> Option<Ipv4Addr> {
    let name = normalize(name);
    let digits = name.strip_suffix(".in-addr.arpa")?;
    let mut octets = [0u8; 4];
    let mut parts = digits.split('.');
    for octet in octets.iter_mut().rev() {
        *octet = parts.next()?.parse().ok()?;
    }
    parts.next().is_none().then(|| Ipv4Addr::from(octets))
}

#[cfg(test)]
mod tests {
    use super::*;

    const GATEWAY: Ipv4Addr = Ipv4Addr::new(172, 17, 0, 1);

    fn table() -> NameTable {
        let mut table = NameTable::new(DEFAULT_DOMAIN, GATEWAY);
        table.insert("web", Ipv4Addr::new(172, 17, 0, 2));
        table.insert("DB", Ipv4Addr::new(172, 17, 0, 3));
        table
    }

    #[test]
    fn containers_answer_bare_and_in_the_domain_in_any_case() {
        let table = table();
        let web = Lookup::Known(Ipv4Addr::new(172, 17, 0, 2));
        assert_eq!(table.lookup("web"), web);
        assert_eq!(table.lookup("WEB."), web);
        assert_eq!(table.lookup("web.tapswitch.internal."), web);
        assert_eq!(
            table.lookup("db.Tapswitch.Internal"),
            Lookup::Known(Ipv4Addr::new(172, 17, 0, 3))
        );
        assert_eq!(
            table.lookup("host.tapswitch.internal"),
            Lookup::Known(GATEWAY)
        );
    }

    #[test]
    fn the_own_domain_is_authoritative_and_the_rest_is_forwarded() {
        let table = table();
        assert_eq!(
            table.lookup("nobody.tapswitch.internal"),
            Lookup::UnknownInDomain
        );
        assert_eq!(
            table.lookup("a.b.tapswitch.internal."),
            Lookup::UnknownInDomain
        );
        assert_eq!(table.lookup("tapswitch.internal"), Lookup::Apex);
        assert_eq!(table.lookup("example.com"), Lookup::Outside);
        assert_eq!(table.lookup("nobody"), Lookup::Outside);
        // A look-alike suffix is not the domain.
        assert_eq!(table.lookup("xtapswitch.internal"), Lookup::Outside);
    }

    #[test]
    fn a_container_called_host_keeps_its_bare_name_only() {
        let mut table = table();
        table.insert("host", Ipv4Addr::new(172, 17, 0, 9));
        assert_eq!(
            table.lookup("host"),
            Lookup::Known(Ipv4Addr::new(172, 17, 0, 9))
        );
        assert_eq!(
            table.lookup("host.tapswitch.internal"),
            Lookup::Known(GATEWAY)
        );
        assert_eq!(table.name_of(GATEWAY), Some("host.tapswitch.internal"));
    }

    #[test]
    fn reverse_names_parse_and_map_back() {
        assert_eq!(
            parse_reverse_name("2.0.17.172.in-addr.arpa."),
            Some(Ipv4Addr::new(172, 17, 0, 2))
        );
        assert_eq!(parse_reverse_name("0.17.172.in-addr.arpa"), None);
        assert_eq!(parse_reverse_name("1.2.0.17.172.in-addr.arpa"), None);
        assert_eq!(parse_reverse_name("x.0.17.172.in-addr.arpa"), None);
        assert_eq!(parse_reverse_name("example.com"), None);
        assert_eq!(
            table().name_of(Ipv4Addr::new(172, 17, 0, 2)),
            Some("web.tapswitch.internal")
        );
    }
}
