//! `tapswitch network peer add|rm` and the member lists `network ls` and
//! `network inspect` show for overlay networks.
//!
//! A member is a VXLAN endpoint of the network: a switch registered under
//! its lease (by `serve`, see `ipam::membership`), or a peer without
//! tapswitch registered here for good.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::process::ExitCode;

use anyhow::Result;
use clap::Subcommand;
use ipam::registry::Registry;
use ipam::{Driver, State, Store};
use serde::Serialize;

use crate::statedir::StateArgs;

#[derive(Debug, Subcommand)]
pub enum PeerCommand {
    /// Register a host without tapswitch (a kernel vxlan device) as a member: switches flood to it and accept its VXLAN.
    Add {
        #[command(flatten)]
        state: StateArgs,
        /// The overlay network.
        network: String,
        /// The host's underlay address, and its VXLAN port if not the
        /// network's: 192.0.2.7, 192.0.2.7:8472, 2001:db8::7 or [2001:db8::7]:8472.
        #[arg(value_name = "IP[:PORT]", value_parser = parse_peer)]
        peer: (IpAddr, Option<u16>),
    },
    /// Unregister a peer (every port of that address, unless a port is given).
    Rm {
        #[command(flatten)]
        state: StateArgs,
        network: String,
        #[arg(value_name = "IP[:PORT]", value_parser = parse_peer)]
        peer: (IpAddr, Option<u16>),
    },
}

pub fn run_peer(command: PeerCommand) -> Result<ExitCode> {
    match command {
        PeerCommand::Add {
            state,
            network,
            peer: (ip, port),
        } => {
            let store = open_shared(&state)?;
            let added = store.update(|s| s.add_peer(&network, ip, port))?;
            crate::outln!("{added}")?;
        }
        PeerCommand::Rm {
            state,
            network,
            peer: (ip, port),
        } => {
            let store = open_shared(&state)?;
            for removed in store.update(|s| s.remove_peer(&network, ip, port))? {
                crate::outln!("{removed}")?;
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Overlay networks only exist in a shared store; say so rather than
/// "no such network" when the store is the local directory.
fn open_shared(state: &StateArgs) -> Result<Store> {
    state.require_shared("overlay networks and their peers")?;
    state.open()
}

/// `IP` or `IP:PORT`, IPv4 or IPv6 (`2001:db8::7`, `[2001:db8::7]:8472`).
pub fn parse_peer(given: &str) -> Result<(IpAddr, Option<u16>), String> {
    let bare = given
        .strip_prefix('[')
        .and_then(|rest| rest.strip_suffix(']'))
        .unwrap_or(given);
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return Ok((ip, None));
    }
    given
        .parse::<SocketAddr>()
        .map(|s| (s.ip(), Some(s.port())))
        .map_err(|_| {
            format!(
                "{given:?} is not IP or IP:PORT, e.g. 192.0.2.7, 192.0.2.7:8472, 2001:db8::7 or [2001:db8::7]:8472"
            )
        })
}

/// One member as `network inspect` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct MemberView {
    /// The host's name for switches, `peer` for peers.
    pub name: String,
    /// The underlay address (Docker's `Peers` list shows this as `IP`).
    #[serde(rename = "IP")]
    pub ip: String,
    pub port: u16,
    /// `switch` (registered under a lease) or `peer` (registered by hand).
    pub kind: &'static str,
    /// The MACs a switch registered (its containers' and gateway's); none
    /// for a peer, whose MACs are only learned from its traffic.
    pub macs: Vec<String>,
}

impl MemberView {
    /// `IP:PORT` as `network ls` lists it, with brackets around an IPv6
    /// address (`[2001:db8::1]:4789`).
    pub fn endpoint(&self) -> String {
        match self.ip.parse::<IpAddr>() {
            Ok(ip) => SocketAddr::new(ip, self.port).to_string(),
            Err(_) => format!("{}:{}", self.ip, self.port),
        }
    }
}

/// Every overlay network's members, by network name: the peers in the
/// state and the switches registered in etcd.
pub fn members(store: &Store, state: &State) -> Result<BTreeMap<String, Vec<MemberView>>> {
    let mut all = BTreeMap::new();
    for network in state
        .networks
        .iter()
        .filter(|n| n.driver == Driver::Overlay)
    {
        let mut views: Vec<MemberView> = Vec::new();
        if let Some(registry) = Registry::new(store, &network.name) {
            for switch in registry.list()?.0 {
                views.push(MemberView {
                    name: switch.hostname.clone(),
                    ip: switch.endpoint.ip().to_string(),
                    port: switch.endpoint.port(),
                    kind: "switch",
                    macs: switch.macs.iter().map(ToString::to_string).collect(),
                });
            }
        }
        for peer in network
            .overlay()
            .map(|o| o.peers.as_slice())
            .unwrap_or_default()
        {
            views.push(MemberView {
                name: "peer".to_string(),
                ip: peer.ip().to_string(),
                port: peer.port(),
                kind: "peer",
                macs: Vec::new(),
            });
        }
        all.insert(network.name.clone(), views);
    }
    Ok(all)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_members_endpoint_brackets_an_ipv6_address() {
        let view = |ip: &str| MemberView {
            name: "peer".into(),
            ip: ip.into(),
            port: 4789,
            kind: "peer",
            macs: Vec::new(),
        };
        assert_eq!(view("192.0.2.1").endpoint(), "192.0.2.1:4789");
        assert_eq!(view("2001:db8::1").endpoint(), "[2001:db8::1]:4789");
    }

    #[test]
    fn peers_parse_with_and_without_a_port() {
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        assert_eq!(parse_peer("192.0.2.7"), Ok((ip, None)));
        assert_eq!(parse_peer("192.0.2.7:8472"), Ok((ip, Some(8472))));
        let v6: IpAddr = "2001:db8::7".parse().unwrap();
        assert_eq!(parse_peer("2001:db8::7"), Ok((v6, None)));
        assert_eq!(parse_peer("[2001:db8::7]"), Ok((v6, None)));
        assert_eq!(parse_peer("[2001:db8::7]:8472"), Ok((v6, Some(8472))));
        let err = parse_peer("host.example:1").unwrap_err();
        assert!(err.contains("is not IP or IP:PORT"), "{err}");
        assert!(parse_peer("2001:db8::7:8472x").is_err());
    }
}
