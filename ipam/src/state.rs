//! The whole persisted state: networks and the containers attached to them.
//!
//! A container's address *is* its lease: there is no separate lease table
//! that could disagree with the container list. Releasing a lease means
//! removing the container record, and the leases of a network are the
//! addresses of the containers on it.
//!
//! Everything here is pure: ids, timestamps and the boot id come from the
//! caller ([`crate::store`] or a test), so every rule can be unit tested.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::mac::MacAddr;
use crate::network::{Driver, IpamConfig, Network, NetworkSpec, check_mtu, check_name};
use crate::ports::PublishedPort;
use crate::subnet::Subnet;

/// The state file's format version; bumped on incompatible changes.
pub const FORMAT_VERSION: u32 = 1;

/// The predefined networks, as in Docker: they exist without being created
/// and cannot be removed.
pub const DEFAULT_BRIDGE: &str = "bridge";
pub const HOST: &str = "host";
pub const NONE: &str = "none";
/// Docker's default bridge network.
pub const DEFAULT_BRIDGE_SUBNET: &str = "172.17.0.0/16";

/// Networks and containers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    pub version: u32,
    /// Sorted by name.
    pub networks: Vec<Network>,
    /// Sorted by name.
    #[serde(default)]
    pub containers: Vec<Container>,
}

/// A container: a name, the network it is on, and (on bridge networks) its
/// address, which is its lease on that network.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Container {
    pub name: String,
    /// 64 hex digits, like a Docker container id.
    pub id: String,
    pub network: String,
    /// RFC 3339, UTC.
    pub created: String,
    /// The leased address (bridge networks only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv4: Option<Ipv4Addr>,
    /// Derived from `ipv4` as Docker does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<MacAddr>,
    /// `/proc/sys/kernel/random/boot_id` when the container was made: after a
    /// reboot its namespace and veth are gone whatever this file says, so
    /// its lease is released (the leak CNI's host-local suffers from).
    pub boot_id: String,
    /// The network namespace (`/run/netns/tapswitch-<name>`); none for `host`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<PathBuf>,
    /// The host end of the container's veth pair (bridge networks only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_iface: Option<String>,
    /// The control socket of the switch the veth is attached to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub control: Option<PathBuf>,
    /// Set when the namespace was not made by tapswitch but attached
    /// (`container attach`): tapswitch then never deletes the namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attached: Option<AttachedNamespace>,
    /// Rootless containers: the process tapswitch started to hold the
    /// namespace (there is no `/run/netns` for an ordinary user).
    /// Removing the container ends it, which deletes the namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keeper: Option<NamespaceKeeper>,
    /// Published ports (`-p`), in the order given (bridge networks only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<PublishedPort>,
}

impl Container {
    /// Made in boot `boot_id` (a record without one counts as this boot's):
    /// on a shared store, a record of another boot is another host's.
    pub fn recorded_in_boot(&self, boot_id: &str) -> bool {
        self.boot_id.is_empty() || self.boot_id == boot_id
    }
}

/// Whose published ports a new container's host ports must not meet.
///
/// A container record names no host. On a shared store (etcd) the switch
/// a container is attached to tells hosts apart: its control socket (two
/// switches of one machine, each in its own namespace, as in the overlay
/// tests) and the boot id (two machines; a socket path is the same on
/// each). A hostname would add nothing a boot id does not already tell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PortScope {
    /// Every container of the store: a state directory is one machine's.
    Store,
    /// The containers behind one switch in one boot (a shared store).
    Host { control: PathBuf, boot_id: String },
    /// None: only the request itself is checked (twice, driver, internal):
    /// a shared store's record without a switch.
    RequestOnly,
}

impl PortScope {
    /// The scope for adding `container` to a store, shared or not. On a
    /// shared store a record without a switch publishes nothing (host and
    /// none networks refuse ports before any conflict is looked for).
    pub fn of(shared: bool, container: &Container) -> PortScope {
        match (shared, &container.control) {
            (false, _) => PortScope::Store,
            (true, Some(control)) => PortScope::Host {
                control: control.clone(),
                boot_id: container.boot_id.clone(),
            },
            (true, None) => PortScope::RequestOnly,
        }
    }

    /// The scope of a check before the container's record is made, for
    /// the switch at `control` in boot `boot_id`.
    pub fn before_record(shared: bool, control: &Path, boot_id: &str) -> PortScope {
        if shared {
            PortScope::Host {
                control: control.to_path_buf(),
                boot_id: boot_id.to_string(),
            }
        } else {
            PortScope::Store
        }
    }

    /// Whether `container`'s ports count in this scope.
    pub fn includes(&self, container: &Container) -> bool {
        match self {
            PortScope::Store => true,
            PortScope::Host { control, boot_id } => {
                container.control.as_deref() == Some(Path::new(control))
                    && container.boot_id == *boot_id
            }
            PortScope::RequestOnly => false,
        }
    }
}

/// The process holding a rootless container's namespace, and the identity
/// of that namespace (so that a reused PID is never taken for it).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NamespaceKeeper {
    pub pid: u32,
    /// `st_dev` of `/proc/<pid>/ns/net`.
    pub dev: u64,
    /// `st_ino` of `/proc/<pid>/ns/net`.
    pub ino: u64,
}

/// A namespace tapswitch was given (`container attach --pid | --netns`).
///
/// `sandbox` names it by a path (`/proc/PID/ns/net` or a bind mount), and
/// a path can come to name another namespace: the PID reused by a new
/// process, the bind mount replaced. The namespace's own identity, the
/// inode of its nsfs file, tells them apart: the container is alive while
/// the path still leads to the same inode.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttachedNamespace {
    /// The process holding it, when attached by `--pid`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// `st_dev` of the namespace's nsfs file.
    pub dev: u64,
    /// `st_ino` of the namespace's nsfs file (its namespace id).
    pub ino: u64,
    /// The interface tapswitch added inside (`eth0`, or the next free `ethN`).
    pub iface: String,
}

/// Ids and a time for the predefined networks of a new state.
#[derive(Debug, Clone)]
pub struct Predefined {
    pub bridge_id: String,
    pub host_id: String,
    pub none_id: String,
    pub created: String,
}

impl State {
    /// A fresh state: `bridge` (172.17.0.0/16, gateway 172.17.0.1), `host`
    /// and `none`, no containers.
    pub fn new(predefined: Predefined) -> State {
        let bridge_spec = NetworkSpec {
            subnet: DEFAULT_BRIDGE_SUBNET.to_string(),
            ..NetworkSpec::default()
        };
        // The constant is a valid /16, so this cannot fail.
        let bridge_ipam = IpamConfig::from_spec(&bridge_spec).ok();
        let network = |name: &str, id: String, driver, ipam| Network {
            name: name.to_string(),
            id,
            driver,
            created: predefined.created.clone(),
            ipam,
            internal: false,
            mtu: None,
            overlay: None,
        };
        State {
            version: FORMAT_VERSION,
            networks: vec![
                network(
                    DEFAULT_BRIDGE,
                    predefined.bridge_id.clone(),
                    Driver::Bridge,
                    bridge_ipam,
                ),
                network(HOST, predefined.host_id.clone(), Driver::Host, None),
                network(NONE, predefined.none_id.clone(), Driver::Null, None),
            ],
            containers: Vec::new(),
        }
    }

    pub fn network(&self, name: &str) -> Result<&Network> {
        self.networks
            .iter()
            .find(|n| n.name == name)
            .ok_or_else(|| Error::NoSuchNetwork(name.to_string()))
    }

    pub fn container(&self, name: &str) -> Result<&Container> {
        self.containers
            .iter()
            .find(|c| c.name == name)
            .ok_or_else(|| Error::NoSuchContainer(name.to_string()))
    }

    /// The containers attached to `network`, by name.
    pub fn containers_on<'a>(&'a self, network: &'a str) -> impl Iterator<Item = &'a Container> {
        self.containers.iter().filter(move |c| c.network == network)
    }

    /// The addresses leased on `network`, each with its holder's name.
    pub fn leases(&self, network: &str) -> BTreeMap<Ipv4Addr, String> {
        self.containers_on(network)
            .filter_map(|c| Some((c.ipv4?, c.name.clone())))
            .collect()
    }

    /// Adds a bridge network. Its subnet must not overlap another network's,
    /// so that a route to a subnet always means one switch.
    pub fn create_network(
        &mut self,
        name: &str,
        id: String,
        created: String,
        spec: &NetworkSpec,
    ) -> Result<&Network> {
        check_name(name)?;
        if self.network(name).is_ok() {
            return Err(Error::NetworkExists(name.to_string()));
        }
        let ipam = IpamConfig::from_spec(spec)?;
        let mtu = spec.mtu.map(check_mtu).transpose()?;
        self.check_overlap(ipam.subnet)?;
        self.networks.push(Network {
            name: name.to_string(),
            id,
            driver: Driver::Bridge,
            created,
            ipam: Some(ipam),
            internal: spec.internal,
            mtu,
            overlay: None,
        });
        self.networks.sort_by(|a, b| a.name.cmp(&b.name));
        self.network(name)
    }

    /// The first of Docker's default address pools that overlaps no network:
    /// 172.17.0.0/16 to 172.31.0.0/16, then 192.168.0.0/20 to
    /// 192.168.240.0/20. For `network create` without `--subnet`.
    pub fn free_subnet(&self) -> Option<Subnet> {
        let sixteens = (17..=31u8).map(|b| (Ipv4Addr::new(172, b, 0, 0), 16));
        let twenties = (0..16u8).map(|n| (Ipv4Addr::new(192, 168, n * 16, 0), 20));
        sixteens
            .chain(twenties)
            .filter_map(|(base, prefix)| Subnet::new(base, prefix).ok())
            .find(|candidate| self.check_overlap(*candidate).is_ok())
    }

    pub(crate) fn check_overlap(&self, subnet: Subnet) -> Result<()> {
        for other in &self.networks {
            if let Some(other_subnet) = other.subnet().filter(|s| s.overlaps(subnet)) {
                return Err(Error::Overlap {
                    subnet,
                    other: other.name.clone(),
                    other_subnet,
                });
            }
        }
        Ok(())
    }

    /// Removes a network nobody uses. The predefined ones stay.
    pub fn remove_network(&mut self, name: &str) -> Result<Network> {
        self.network(name)?;
        if [DEFAULT_BRIDGE, HOST, NONE].contains(&name) {
            return Err(Error::Predefined(name.to_string()));
        }
        let users: Vec<String> = self.containers_on(name).map(|c| c.name.clone()).collect();
        if !users.is_empty() {
            return Err(Error::NetworkInUse {
                name: name.to_string(),
                containers: users,
            });
        }
        let index = self.networks.iter().position(|n| n.name == name);
        Ok(self.networks.remove(index.unwrap_or_default()))
    }

    /// Records a container. On a bridge network it gets `requested` or the
    /// lowest free address, and the MAC derived from it; `ipv4` and `mac`
    /// of the given record are overwritten.
    /// Its host ports must be free on the whole store (a state directory:
    /// one machine); see [`State::add_container_in`] for a shared store.
    pub fn add_container(
        &mut self,
        container: Container,
        requested: Option<Ipv4Addr>,
    ) -> Result<&Container> {
        self.add_container_in(container, requested, PortScope::Store)
    }

    /// [`State::add_container`] with the containers whose host ports count
    /// given by `scope` ([`PortScope::of`] for the record being added).
    pub fn add_container_in(
        &mut self,
        mut container: Container,
        requested: Option<Ipv4Addr>,
        scope: PortScope,
    ) -> Result<&Container> {
        check_name(&container.name)?;
        if self.container(&container.name).is_ok() {
            return Err(Error::ContainerExists(container.name));
        }
        let network = self.network(&container.network)?;
        self.check_ports(network, &container.ports, &scope)?;
        let (ipv4, mac) = match network.driver {
            Driver::Bridge | Driver::Overlay => {
                let ip = network.allocate(requested, &self.leases(&network.name))?;
                (Some(ip), Some(MacAddr::docker_from_ipv4(ip)))
            }
            Driver::Host | Driver::Null => {
                if requested.is_some() {
                    network.ipam()?;
                }
                (None, None)
            }
        };
        container.ipv4 = ipv4;
        container.mac = mac;
        let name = container.name.clone();
        self.containers.push(container);
        self.containers.sort_by(|a, b| a.name.cmp(&b.name));
        self.container(&name)
    }

    /// Whether `network` may publish `ports`: a bridge or overlay network
    /// that is not internal, each host port once, none already published by
    /// another container of `scope` on any network (host ports belong to
    /// the whole host, and only to it: on a shared store two hosts each
    /// publish their own 8080). [`State::add_container`] checks it too;
    /// `container create` asks first, before it builds anything.
    pub fn check_ports(
        &self,
        network: &Network,
        ports: &[PublishedPort],
        scope: &PortScope,
    ) -> Result<()> {
        if ports.is_empty() {
            return Ok(());
        }
        if !matches!(network.driver, Driver::Bridge | Driver::Overlay) {
            return Err(Error::PortsNeedBridge {
                network: network.name.clone(),
                driver: network.driver.to_string(),
            });
        }
        if network.internal {
            return Err(Error::PortsOnInternal {
                network: network.name.clone(),
            });
        }
        for (index, port) in ports.iter().enumerate() {
            if let Some(earlier) = ports[..index].iter().find(|p| p.conflicts_with(port)) {
                return Err(Error::PortTwice {
                    port: host_side(port),
                    first: earlier.flag(),
                    second: port.flag(),
                });
            }
            let taken = self
                .containers
                .iter()
                .filter(|c| scope.includes(c))
                .find_map(|c| Some((c, c.ports.iter().find(|p| p.conflicts_with(port))?)));
            if let Some((owner, theirs)) = taken {
                return Err(Error::PortTaken {
                    port: host_side(port),
                    owner: owner.name.clone(),
                    flag: theirs.flag(),
                });
            }
        }
        Ok(())
    }

    /// Every published port with its container, for the switches to listen
    /// on and for `network inspect`.
    pub fn published_ports<'a>(
        &'a self,
        network: &'a str,
    ) -> impl Iterator<Item = (&'a Container, &'a PublishedPort)> {
        self.containers_on(network)
            .flat_map(|c| c.ports.iter().map(move |p| (c, p)))
    }

    /// Forgets a container and releases its address.
    pub fn remove_container(&mut self, name: &str) -> Result<Container> {
        self.container(name)?;
        let index = self.containers.iter().position(|c| c.name == name);
        Ok(self.containers.remove(index.unwrap_or_default()))
    }

    /// Forgets every container `is_alive` says is gone, releasing its
    /// address; returns them so the caller can clean up what is left.
    pub fn prune(&mut self, mut is_alive: impl FnMut(&Container) -> bool) -> Vec<Container> {
        let (alive, dead) = std::mem::take(&mut self.containers)
            .into_iter()
            .partition(|c| is_alive(c));
        self.containers = alive;
        dead
    }

    /// Checks what a hand edit or a bug could break: unique names, known
    /// networks, addresses inside their subnets and held only once.
    /// Returns the first problem found.
    pub fn check(&self) -> std::result::Result<(), String> {
        let mut networks = BTreeMap::new();
        for net in &self.networks {
            check_name(&net.name).map_err(|e| e.to_string())?;
            if networks.insert(net.name.as_str(), net).is_some() {
                return Err(format!("network {} is listed twice", net.name));
            }
            if matches!(net.driver, Driver::Bridge | Driver::Overlay) && net.ipam.is_none() {
                return Err(format!("{} network {} has no ipam", net.driver, net.name));
            }
            if let Some(mtu) = net.mtu {
                check_mtu(mtu).map_err(|e| format!("network {}: {e}", net.name))?;
            }
        }
        crate::overlay::rules::check(&self.networks)?;
        for name in [DEFAULT_BRIDGE, HOST, NONE] {
            if !networks.contains_key(name) {
                return Err(format!("the predefined network {name} is missing"));
            }
        }
        let mut names = BTreeMap::new();
        let mut leases: BTreeMap<(&str, Ipv4Addr), &str> = BTreeMap::new();
        for c in &self.containers {
            if names.insert(c.name.as_str(), ()).is_some() {
                return Err(format!("container {} is listed twice", c.name));
            }
            let Some(net) = networks.get(c.network.as_str()) else {
                return Err(format!(
                    "container {} is on network {}, which is not defined",
                    c.name, c.network
                ));
            };
            let Some(ip) = c.ipv4 else { continue };
            let Some(ipam) = &net.ipam else {
                return Err(format!(
                    "container {} has address {ip} on network {}, which has no subnet",
                    c.name, c.network
                ));
            };
            if !ipam.subnet.contains(ip) || ipam.reserved(ip).is_some() {
                return Err(format!(
                    "container {} holds {ip}, which network {} cannot give",
                    c.name, c.network
                ));
            }
            if let Some(other) = leases.insert((c.network.as_str(), ip), c.name.as_str()) {
                return Err(format!(
                    "address {ip} on network {} is held by both {other} and {}",
                    c.network, c.name
                ));
            }
        }
        // Per host: the one rule that holds on a shared store too (a state
        // directory's stricter whole-store rule is kept by `add_container`).
        let published: Vec<(&Container, &PublishedPort)> = self
            .containers
            .iter()
            .flat_map(|c| c.ports.iter().map(move |p| (c, p)))
            .collect();
        for (index, (owner, port)) in published.iter().enumerate() {
            if let Some((other, _)) = published[..index].iter().find(|(c, earlier)| {
                c.control == owner.control
                    && c.boot_id == owner.boot_id
                    && earlier.conflicts_with(port)
            }) {
                return Err(format!(
                    "host port {} is published by both {} and {}",
                    host_side(port),
                    other.name,
                    owner.name
                ));
            }
        }
        Ok(())
    }
}

/// The host side of a publication, as errors name it: `0.0.0.0:8080/tcp`.
fn host_side(port: &PublishedPort) -> String {
    format!("{}:{}/{}", port.host_ip, port.host_port, port.protocol)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    fn fresh() -> State {
        State::new(Predefined {
            bridge_id: "b".repeat(64),
            host_id: "h".repeat(64),
            none_id: "n".repeat(64),
            created: "2026-01-01T00:00:00Z".into(),
        })
    }

    fn container(name: &str, network: &str) -> Container {
        Container {
            name: name.into(),
            id: format!("{name:0>64}"),
            network: network.into(),
            boot_id: "boot".into(),
            ..Default::default()
        }
    }

    fn spec(subnet: &str) -> NetworkSpec {
        NetworkSpec {
            subnet: subnet.into(),
            ..NetworkSpec::default()
        }
    }

    #[test]
    fn predefined_networks_exist() {
        let state = fresh();
        let bridge = state.network("bridge").unwrap();
        assert_eq!(bridge.driver, Driver::Bridge);
        assert_eq!(bridge.subnet().unwrap().to_string(), "172.17.0.0/16");
        assert_eq!(bridge.gateway(), Some(ip("172.17.0.1")));
        assert_eq!(state.network("host").unwrap().driver, Driver::Host);
        assert_eq!(state.network("none").unwrap().driver, Driver::Null);
        assert!(state.check().is_ok());
    }

    #[test]
    fn containers_lease_addresses_and_macs() {
        let mut state = fresh();
        let a = state.add_container(container("a", "bridge"), None).unwrap();
        assert_eq!(a.ipv4, Some(ip("172.17.0.2")));
        assert_eq!(a.mac.unwrap().to_string(), "02:42:ac:11:00:02");
        let b = state.add_container(container("b", "bridge"), None).unwrap();
        assert_eq!(b.ipv4, Some(ip("172.17.0.3")));
        assert_eq!(b.mac.unwrap().to_string(), "02:42:ac:11:00:03");
        let n = state.add_container(container("n", "none"), None).unwrap();
        assert_eq!((n.ipv4, n.mac), (None, None));
        assert!(matches!(
            state.add_container(container("h", "host"), Some(ip("172.17.0.9"))),
            Err(Error::NoAddressing { .. })
        ));
        assert!(matches!(
            state.add_container(container("a", "bridge"), None),
            Err(Error::ContainerExists(_))
        ));
        assert_eq!(state.leases("bridge").len(), 2);
        assert!(state.check().is_ok());
    }

    #[test]
    fn removing_a_container_releases_its_address_for_the_next() {
        let mut state = fresh();
        state.add_container(container("a", "bridge"), None).unwrap();
        state.add_container(container("b", "bridge"), None).unwrap();
        state.remove_container("a").unwrap();
        let c = state.add_container(container("c", "bridge"), None).unwrap();
        assert_eq!(c.ipv4, Some(ip("172.17.0.2")));
        assert!(matches!(
            state.remove_container("a"),
            Err(Error::NoSuchContainer(_))
        ));
    }

    #[test]
    fn networks_must_not_overlap() {
        let mut state = fresh();
        state
            .create_network("one", "1".repeat(64), String::new(), &spec("10.1.0.0/16"))
            .unwrap();
        let err = state
            .create_network("two", "2".repeat(64), String::new(), &spec("10.1.2.0/24"))
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "subnet 10.1.2.0/24 overlaps subnet 10.1.0.0/16 of network one: choose a subnet that does not overlap (see `tapswitch network inspect one`)"
        );
        assert!(matches!(
            state.create_network("x", String::new(), String::new(), &spec("172.16.0.0/12")),
            Err(Error::Overlap { other, .. }) if other == "bridge"
        ));
        assert!(matches!(
            state.create_network("one", String::new(), String::new(), &spec("10.9.0.0/16")),
            Err(Error::NetworkExists(_))
        ));
    }

    #[test]
    fn default_pools_skip_subnets_in_use() {
        let mut state = fresh();
        let first = state.free_subnet().unwrap();
        assert_eq!(first.to_string(), "172.18.0.0/16");
        state
            .create_network("a", "1".repeat(64), String::new(), &spec("172.18.5.0/24"))
            .unwrap();
        assert_eq!(state.free_subnet().unwrap().to_string(), "172.19.0.0/16");
        state
            .create_network("b", "2".repeat(64), String::new(), &spec("172.16.0.0/12"))
            .unwrap_err();
        state
            .create_network("c", "3".repeat(64), String::new(), &spec("172.24.0.0/13"))
            .unwrap();
        // 172.19 to 172.23 are still free; 172.24 to 172.31 are taken.
        assert_eq!(state.free_subnet().unwrap().to_string(), "172.19.0.0/16");
    }

    #[test]
    fn networks_in_use_or_predefined_stay() {
        let mut state = fresh();
        state
            .create_network("mine", "1".repeat(64), String::new(), &spec("10.5.0.0/24"))
            .unwrap();
        let c = state.add_container(container("web", "mine"), None).unwrap();
        assert_eq!(c.ipv4, Some(ip("10.5.0.2")));
        let err = state.remove_network("mine").unwrap_err();
        assert_eq!(
            err.to_string(),
            "network mine is in use by container(s) web: remove them first with `tapswitch container rm NAME`"
        );
        state.remove_container("web").unwrap();
        assert_eq!(state.remove_network("mine").unwrap().name, "mine");
        assert!(matches!(
            state.remove_network("bridge"),
            Err(Error::Predefined(_))
        ));
        assert!(matches!(
            state.remove_network("mine"),
            Err(Error::NoSuchNetwork(_))
        ));
    }

    #[test]
    fn prune_releases_the_leases_of_dead_containers() {
        let mut state = fresh();
        for name in ["a", "b", "c"] {
            state
                .add_container(container(name, "bridge"), None)
                .unwrap();
        }
        let dead = state.prune(|c| c.name != "b");
        assert_eq!(dead.len(), 1);
        assert_eq!(dead[0].ipv4, Some(ip("172.17.0.3")));
        let d = state.add_container(container("d", "bridge"), None).unwrap();
        assert_eq!(d.ipv4, Some(ip("172.17.0.3")));
    }

    fn published(name: &str, network: &str, ports: &[&str]) -> Container {
        Container {
            ports: ports.iter().map(|p| p.parse().unwrap()).collect(),
            ..container(name, network)
        }
    }

    #[test]
    fn published_ports_are_stored_and_listed_per_network() {
        let mut state = fresh();
        let web = state
            .add_container(
                published("web", "bridge", &["8080:80", "5353:53/udp"]),
                None,
            )
            .unwrap();
        assert_eq!(web.ports.len(), 2);
        assert_eq!(web.ports[0].to_string(), "0.0.0.0:8080->80/tcp");
        let listed: Vec<String> = state
            .published_ports("bridge")
            .map(|(c, p)| format!("{} {p}", c.name))
            .collect();
        assert_eq!(
            listed,
            vec!["web 0.0.0.0:8080->80/tcp", "web 0.0.0.0:5353->53/udp"]
        );
        assert!(state.check().is_ok());
    }

    #[test]
    fn a_host_port_is_published_once_on_the_whole_host() {
        let mut state = fresh();
        state
            .create_network("other", "1".repeat(64), String::new(), &spec("10.7.0.0/24"))
            .unwrap();
        state
            .add_container(published("web", "bridge", &["127.0.0.1:8080:80"]), None)
            .unwrap();
        // Every address covers loopback, on another network too.
        let err = state
            .add_container(published("api", "other", &["8080:9000"]), None)
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "host port 0.0.0.0:8080/tcp is already published by container web (-p 127.0.0.1:8080:80/tcp): pick another host port, or remove web first"
        );
        // Another address, protocol or port is free.
        state
            .add_container(
                published(
                    "api",
                    "other",
                    &["192.0.2.1:8080:80", "8080:80/udp", "8081:80"],
                ),
                None,
            )
            .unwrap();
        // Twice in one create.
        let err = state
            .add_container(published("dup", "bridge", &["9000:80", "9000:81"]), None)
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "host port 0.0.0.0:9000/tcp is published twice (-p 0.0.0.0:9000:80/tcp and -p 0.0.0.0:9000:81/tcp): give each host port once"
        );
        assert!(state.container("dup").is_err(), "nothing recorded");
        // Removing the owner frees the port.
        state.remove_container("web").unwrap();
        state
            .add_container(published("again", "bridge", &["127.0.0.1:8080:80"]), None)
            .unwrap();
        assert!(state.check().is_ok());
    }

    #[test]
    fn only_bridge_networks_that_reach_outside_publish_ports() {
        let mut state = fresh();
        for network in ["host", "none"] {
            assert!(matches!(
                state.add_container(published("x", network, &["8080:80"]), None),
                Err(Error::PortsNeedBridge { .. })
            ));
        }
        let internal = NetworkSpec {
            internal: true,
            ..spec("10.8.0.0/24")
        };
        state
            .create_network("sealed", "1".repeat(64), String::new(), &internal)
            .unwrap();
        assert!(state.network("sealed").unwrap().internal);
        let err = state
            .add_container(published("x", "sealed", &["8080:80"]), None)
            .unwrap_err();
        assert!(err.to_string().starts_with("network sealed is internal"));
        // Without -p an internal network takes containers as any other.
        state.add_container(container("x", "sealed"), None).unwrap();
    }

    #[test]
    fn overlay_networks_publish_ports_too() {
        let mut state = fresh();
        state
            .create_overlay_network(
                "ov",
                "1".repeat(64),
                String::new(),
                &spec("10.10.0.0/24"),
                crate::overlay::OverlaySpec::default(),
            )
            .unwrap();
        state
            .add_container(published("w", "ov", &["8080:80"]), None)
            .unwrap();
        assert_eq!(state.published_ports("ov").count(), 1);
        // Host ports stay unique across the store.
        assert!(matches!(
            state.add_container(published("x", "bridge", &["8080:81"]), None),
            Err(Error::PortTaken { .. })
        ));
    }

    fn on_host(name: &str, ports: &[&str], control: &str, boot_id: &str) -> Container {
        Container {
            control: Some(PathBuf::from(control)),
            boot_id: boot_id.to_string(),
            ..published(name, "bridge", ports)
        }
    }

    #[test]
    fn on_a_shared_store_host_ports_are_unique_per_host() {
        let mut state = fresh();
        let add = |state: &mut State, c: Container| {
            let scope = PortScope::of(true, &c);
            state
                .add_container_in(c, None, scope)
                .map(|c| c.name.clone())
        };
        add(
            &mut state,
            on_host("a1", &["8080:80"], "/run/s.sock", "boot-a"),
        )
        .unwrap();
        // Another machine (boot id), another switch of this machine (control
        // socket): each has its own 8080.
        add(
            &mut state,
            on_host("b1", &["8080:80"], "/run/s.sock", "boot-b"),
        )
        .unwrap();
        add(
            &mut state,
            on_host("a2", &["8080:80"], "/run/t.sock", "boot-a"),
        )
        .unwrap();
        // The same host twice is refused, naming the owner.
        let err = add(
            &mut state,
            on_host("a3", &["8080:81"], "/run/s.sock", "boot-a"),
        )
        .unwrap_err();
        assert!(
            matches!(&err, Error::PortTaken { owner, .. } if owner == "a1"),
            "{err}"
        );
        // The check before the record: the switch's host only (shared), or
        // the whole store.
        let network = state.network("bridge").unwrap();
        let ports = ["8080:80".parse().unwrap()];
        let here = |shared| PortScope::before_record(shared, Path::new("/run/u.sock"), "boot-a");
        assert!(state.check_ports(network, &ports, &here(true)).is_ok());
        assert!(matches!(
            state.check_ports(network, &ports, &here(false)),
            Err(Error::PortTaken { .. })
        ));
        let unknown = Container::default();
        assert_eq!(PortScope::of(true, &unknown), PortScope::RequestOnly);
        assert!(
            state
                .check_ports(network, &ports, &PortScope::RequestOnly)
                .is_ok()
        );
        // A state directory keeps the port unique on the whole store.
        assert!(matches!(
            state.add_container(on_host("c", &["8080:80"], "/run/u.sock", "boot-c"), None),
            Err(Error::PortTaken { .. })
        ));
        assert!(state.check().is_ok());
    }

    #[test]
    fn network_mtu_is_checked_and_stored() {
        let mut state = fresh();
        let jumbo = NetworkSpec {
            mtu: Some(65_520),
            ..spec("10.9.0.0/24")
        };
        state
            .create_network("jumbo", "1".repeat(64), String::new(), &jumbo)
            .unwrap();
        assert_eq!(state.network("jumbo").unwrap().mtu, Some(65_520));
        let tiny = NetworkSpec {
            mtu: Some(40),
            ..spec("10.10.0.0/24")
        };
        assert!(matches!(
            state.create_network("tiny", "2".repeat(64), String::new(), &tiny),
            Err(Error::BadMtu { mtu: 40, .. })
        ));
        assert!(state.network("tiny").is_err());
    }

    #[test]
    fn containers_written_before_ports_still_load() {
        let old = r#"{"name":"a","id":"0","network":"bridge","created":"x","boot_id":"b"}"#;
        let c: Container = serde_json::from_str(old).unwrap();
        assert!(c.ports.is_empty());
        let again = serde_json::to_string(&c).unwrap();
        assert!(!again.contains("ports"), "{again}");
    }

    #[test]
    fn check_finds_a_host_port_published_twice() {
        let mut state = fresh();
        state
            .add_container(published("a", "bridge", &["8080:80"]), None)
            .unwrap();
        state.add_container(container("b", "bridge"), None).unwrap();
        state.containers[1].ports = vec!["127.0.0.1:8080:81".parse().unwrap()];
        assert_eq!(
            state.check().unwrap_err(),
            "host port 127.0.0.1:8080/tcp is published by both a and b"
        );
    }

    #[test]
    fn check_finds_double_leases() {
        let mut state = fresh();
        state.add_container(container("a", "bridge"), None).unwrap();
        state.add_container(container("b", "bridge"), None).unwrap();
        state.containers[1].ipv4 = Some(ip("172.17.0.2"));
        assert_eq!(
            state.check().unwrap_err(),
            "address 172.17.0.2 on network bridge is held by both a and b"
        );
        state.containers[1].ipv4 = Some(ip("172.17.0.1"));
        assert!(state.check().unwrap_err().contains("cannot give"));
    }

    #[test]
    fn a_record_of_another_boot_is_another_hosts() {
        let mut container = Container {
            boot_id: "b1".into(),
            ..Container::default()
        };
        assert!(container.recorded_in_boot("b1"));
        assert!(!container.recorded_in_boot("b2"));
        container.boot_id.clear();
        assert!(container.recorded_in_boot("b2"), "no boot id: this boot's");
    }
}
