//! Published ports: `container create NAME -p [HOSTIP:]HOSTPORT:CONTAINERPORT[/tcp|/udp]`.
//!
//! Docker's syntax, with Docker's defaults: no host address means every
//! address of the host (`0.0.0.0`, as Docker's `-p 8080:80`; write
//! `-p 127.0.0.1:8080:80` to publish on loopback only), no protocol means
//! TCP. Not taken over from Docker: a container port alone (a random host
//! port), port ranges, SCTP and IPv6 host addresses; each is refused with a
//! line that says so.
//!
//! **Conflicts.** A host port is a resource of the whole host, not of one
//! network: every switch listens in the host's network namespace. So a
//! publication conflicts with any other of the same protocol and host port
//! whose host address is the same or either is `0.0.0.0` (which covers
//! every address), on any network. [`crate::State::add_container`] refuses
//! it at create time, before anything is built.
//!
//! [`docker_ports`] renders the publications in the shape of Docker's
//! `NetworkSettings.Ports` (and `HostConfig.PortBindings`).

use std::collections::BTreeMap;
use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The transport of a published port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PortProtocol {
    Tcp,
    Udp,
}

impl fmt::Display for PortProtocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PortProtocol::Tcp => "tcp",
            PortProtocol::Udp => "udp",
        })
    }
}

/// One `-p`: a host address and port forwarded to a container port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PublishedPort {
    /// `0.0.0.0` for every address of the host.
    pub host_ip: Ipv4Addr,
    pub host_port: u16,
    pub container_port: u16,
    pub protocol: PortProtocol,
}

impl PublishedPort {
    /// Whether both cannot be listened on at once: same protocol and host
    /// port, and the same host address or either one every address.
    pub fn conflicts_with(&self, other: &PublishedPort) -> bool {
        self.protocol == other.protocol
            && self.host_port == other.host_port
            && (self.host_ip == other.host_ip
                || self.host_ip.is_unspecified()
                || other.host_ip.is_unspecified())
    }

    /// The `-p` value that gives this publication, in full.
    pub fn flag(&self) -> String {
        format!(
            "{}:{}:{}/{}",
            self.host_ip, self.host_port, self.container_port, self.protocol
        )
    }

    /// Docker's key for the container side, e.g. `80/tcp`.
    pub fn container_key(&self) -> String {
        format!("{}/{}", self.container_port, self.protocol)
    }
}

/// As `docker ps` shows it: `0.0.0.0:8080->80/tcp`.
impl fmt::Display for PublishedPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}->{}/{}",
            self.host_ip, self.host_port, self.container_port, self.protocol
        )
    }
}

/// A `-p` value that is not `[HOSTIP:]HOSTPORT:CONTAINERPORT[/tcp|/udp]`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("-p {given}: {problem}: write it like -p 8080:80, -p 127.0.0.1:8080:80 or -p 5353:53/udp")]
pub struct PublishError {
    pub given: String,
    pub problem: String,
}

impl FromStr for PublishedPort {
    type Err = PublishError;

    fn from_str(given: &str) -> Result<PublishedPort, PublishError> {
        let fail = |problem: &str| PublishError {
            given: given.to_string(),
            problem: problem.to_string(),
        };
        let (ports, protocol) = match given.rsplit_once('/') {
            None => (given, PortProtocol::Tcp),
            Some((ports, "tcp")) => (ports, PortProtocol::Tcp),
            Some((ports, "udp")) => (ports, PortProtocol::Udp),
            Some((_, "sctp")) => return Err(fail("SCTP is not supported (tcp or udp)")),
            Some((_, other)) => {
                return Err(fail(&format!("unknown protocol {other:?} (tcp or udp)")));
            }
        };
        if ports.starts_with('[') || ports.matches(':').count() > 2 {
            return Err(fail("IPv6 host addresses are not supported"));
        }
        if ports.contains('-') {
            return Err(fail("port ranges are not supported"));
        }
        let parts: Vec<&str> = ports.split(':').collect();
        let (host_ip, host_port, container_port) = match parts.as_slice() {
            [_] => {
                return Err(fail(
                    "a container port alone (a random host port) is not supported; give the host port too",
                ));
            }
            [host_port, container_port] => ("0.0.0.0", *host_port, *container_port),
            [host_ip, host_port, container_port] => (*host_ip, *host_port, *container_port),
            _ => return Err(fail("too many parts")),
        };
        let host_ip: Ipv4Addr = if host_ip.is_empty() {
            Ipv4Addr::UNSPECIFIED
        } else {
            host_ip
                .parse()
                .map_err(|_| fail(&format!("{host_ip:?} is not an IPv4 address")))?
        };
        if host_ip.is_multicast() || host_ip.is_broadcast() {
            return Err(fail(&format!(
                "{host_ip} is not an address of this host to listen on"
            )));
        }
        if host_port.is_empty() {
            return Err(fail(
                "an empty host port (a random one) is not supported; give the host port",
            ));
        }
        let port = |text: &str, what: &str| {
            text.parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| fail(&format!("{what} {text:?} is not a port (1-65535)")))
        };
        Ok(PublishedPort {
            host_ip,
            host_port: port(host_port, "host port")?,
            container_port: port(container_port, "container port")?,
            protocol,
        })
    }
}

/// One host binding in Docker's `NetworkSettings.Ports` shape.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct PortBinding {
    pub host_ip: String,
    /// A string, as in Docker's JSON.
    pub host_port: String,
}

/// Docker's `NetworkSettings.Ports`: `{"80/tcp": [{"HostIp": "0.0.0.0",
/// "HostPort": "8080"}]}`, keys sorted (Go's JSON encoder sorts map keys
/// too), one binding per publication of that container port.
pub fn docker_ports(ports: &[PublishedPort]) -> BTreeMap<String, Vec<PortBinding>> {
    let mut map: BTreeMap<String, Vec<PortBinding>> = BTreeMap::new();
    for port in ports {
        map.entry(port.container_key())
            .or_default()
            .push(PortBinding {
                host_ip: port.host_ip.to_string(),
                host_port: port.host_port.to_string(),
            });
    }
    map
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> PublishedPort {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    fn error(s: &str) -> String {
        s.parse::<PublishedPort>().unwrap_err().to_string()
    }

    #[test]
    fn dockers_syntax_with_dockers_defaults() {
        assert_eq!(
            parse("8080:80"),
            PublishedPort {
                host_ip: Ipv4Addr::UNSPECIFIED,
                host_port: 8080,
                container_port: 80,
                protocol: PortProtocol::Tcp,
            }
        );
        let udp = parse("127.0.0.1:5353:53/udp");
        assert_eq!(udp.host_ip, Ipv4Addr::LOCALHOST);
        assert_eq!((udp.host_port, udp.container_port), (5353, 53));
        assert_eq!(udp.protocol, PortProtocol::Udp);
        assert_eq!(parse("8443:443/tcp").protocol, PortProtocol::Tcp);
        assert_eq!(parse(":8080:80").host_ip, Ipv4Addr::UNSPECIFIED);
        assert_eq!(udp.to_string(), "127.0.0.1:5353->53/udp");
        assert_eq!(udp.flag(), "127.0.0.1:5353:53/udp");
        assert_eq!(parse(&udp.flag()), udp);
    }

    #[test]
    fn what_is_not_supported_is_said_in_one_line() {
        let cases = [
            ("80", "a container port alone"),
            ("127.0.0.1::80", "an empty host port"),
            ("8000-8001:80-81", "port ranges"),
            ("[::1]:8080:80", "IPv6"),
            ("::1:8080:80", "IPv6"),
            ("8080:80/sctp", "SCTP"),
            ("8080:80/icmp", "unknown protocol \"icmp\""),
            ("0:80", "host port \"0\" is not a port"),
            ("8080:70000", "container port \"70000\" is not a port"),
            ("8080:http", "container port \"http\""),
            ("localhost:8080:80", "\"localhost\" is not an IPv4 address"),
            ("224.0.0.1:8080:80", "not an address of this host"),
        ];
        for (given, expected) in cases {
            let message = error(given);
            assert!(
                message.contains(expected),
                "{given}: {message:?} should mention {expected:?}"
            );
            assert!(message.starts_with(&format!("-p {given}: ")), "{message}");
            assert!(message.ends_with("-p 5353:53/udp"), "{message}");
            assert!(!message.contains('\n'));
        }
    }

    #[test]
    fn conflicts_follow_what_bind_would_refuse() {
        let any = parse("8080:80");
        let lo = parse("127.0.0.1:8080:81");
        let other_ip = parse("192.0.2.1:8080:82");
        assert!(any.conflicts_with(&lo) && lo.conflicts_with(&any));
        assert!(!lo.conflicts_with(&other_ip));
        assert!(lo.conflicts_with(&parse("127.0.0.1:8080:99")));
        // Another protocol or port is free.
        assert!(!any.conflicts_with(&parse("8080:80/udp")));
        assert!(!any.conflicts_with(&parse("8081:80")));
    }

    #[test]
    fn docker_ports_has_dockers_shape() {
        let ports = [
            parse("8080:80"),
            parse("127.0.0.1:8081:80"),
            parse("5353:53/udp"),
        ];
        let json = serde_json::to_value(docker_ports(&ports)).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "53/udp": [{"HostIp": "0.0.0.0", "HostPort": "5353"}],
                "80/tcp": [
                    {"HostIp": "0.0.0.0", "HostPort": "8080"},
                    {"HostIp": "127.0.0.1", "HostPort": "8081"}
                ]
            })
        );
        assert!(docker_ports(&[]).is_empty());
    }

    #[test]
    fn the_record_form_round_trips() {
        let port = parse("127.0.0.1:5353:53/udp");
        let json = serde_json::to_string(&port).unwrap();
        assert_eq!(
            json,
            r#"{"host_ip":"127.0.0.1","host_port":5353,"container_port":53,"protocol":"udp"}"#
        );
        assert_eq!(serde_json::from_str::<PublishedPort>(&json).unwrap(), port);
    }
}
