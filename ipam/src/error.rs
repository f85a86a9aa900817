//! Everything that can go wrong with networks, addresses and the state
//! directory. Each message is one line that names the thing (network,
//! address, file) and says what to do about it.

use std::net::Ipv4Addr;
use std::path::PathBuf;

use crate::subnet::{Subnet, SubnetError};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    // --- defining networks ---
    #[error("--{flag}: {problem}")]
    BadCidr {
        flag: &'static str,
        problem: SubnetError,
    },
    #[error(
        "subnet {subnet} is too small for a network (it needs a network, a gateway, a container and a broadcast address): use a /30 or larger"
    )]
    SubnetTooSmall { subnet: Subnet },
    #[error(
        "gateway {gateway} is outside subnet {subnet}: pick an address inside it (or leave --gateway out to use the first one)"
    )]
    GatewayOutside { gateway: Ipv4Addr, subnet: Subnet },
    #[error(
        "gateway {gateway} is the {what} address of {subnet}: pick a host address (or leave --gateway out to use the first one)"
    )]
    GatewayNotHost {
        gateway: Ipv4Addr,
        subnet: Subnet,
        what: &'static str,
    },
    #[error("--ip-range {range} is not inside subnet {subnet}: give a range within the subnet")]
    RangeOutside { range: Subnet, subnet: Subnet },
    #[error("--aux-address {name}={ip} is outside subnet {subnet}: give an address inside it")]
    AuxOutside {
        name: String,
        ip: Ipv4Addr,
        subnet: Subnet,
    },
    #[error(
        "--aux-address {given:?} is not NAME=IPV4: write it like --aux-address router=172.18.0.5"
    )]
    AuxMalformed { given: String },
    #[error("--aux-address {name} is given twice: give each name once")]
    AuxDuplicate { name: String },
    #[error(
        "subnet {subnet} overlaps subnet {other_subnet} of network {other}: choose a subnet that does not overlap (see `tapswitch network inspect {other}`)"
    )]
    Overlap {
        subnet: Subnet,
        other: String,
        other_subnet: Subnet,
    },
    #[error(
        "every default address pool (172.17-31.0.0/16, 192.168.x.0/20) overlaps a network: give --subnet CIDR"
    )]
    NoFreePool,
    #[error(
        "network {0} already exists: choose another name, or remove it with `tapswitch network rm {0}`"
    )]
    NetworkExists(String),
    #[error(
        "network {0} does not exist: list networks with `tapswitch network ls`, or create it with `tapswitch network create {0} --subnet CIDR`"
    )]
    NoSuchNetwork(String),
    #[error("network {0} is predefined and cannot be removed")]
    Predefined(String),
    #[error("network {name} is in use by container(s) {}: remove them first with `tapswitch container rm NAME`", containers.join(", "))]
    NetworkInUse {
        name: String,
        containers: Vec<String>,
    },
    #[error(
        "{0:?} is not a valid name: use letters, digits, '_', '.' and '-' (starting with a letter or digit), at most {1} characters"
    )]
    BadName(String, usize),
    #[error(
        "--mtu {mtu} is out of range: give {min} (the smallest MTU IPv4 allows) to {max} (the largest Linux allows on veth and TAP devices)"
    )]
    BadMtu { mtu: u32, min: u32, max: u32 },

    // --- overlay networks ---
    #[error("VNI {vni} is out of range: give a VNI from 1 to 16777215 (24 bits)")]
    BadVni { vni: u32 },
    #[error(
        "VNI {vni} is already used by network {other}: pick another --vni, or leave it out to get a free one"
    )]
    VniInUse { vni: u32, other: String },
    #[error("every VNI from 4096 up is in use: give --vni N below 4096")]
    NoFreeVni,
    #[error("--vxlan-port 0 is not a port: give one like 4789 (IANA) or 8472 (Linux's default)")]
    BadVxlanPort,
    #[error(
        "network {network} uses driver {driver}, not overlay: peers belong to overlay networks (see `tapswitch network ls`)"
    )]
    NotOverlay { network: String, driver: String },
    #[error(
        "{peer} cannot be a VXLAN peer: give the unicast underlay address of the host (and a port other than 0)"
    )]
    BadPeer { peer: std::net::SocketAddr },
    #[error("{peer} is already a peer of network {network}")]
    PeerExists {
        network: String,
        peer: std::net::SocketAddr,
    },
    #[error("network {network} has no peer {peer}: see `tapswitch network inspect {network}`")]
    NoSuchPeer { network: String, peer: String },

    // --- addresses ---
    #[error(
        "no free address left in {pool} on network {network}: remove a container (`tapswitch container rm NAME`) or use a network with a larger subnet"
    )]
    Exhausted { network: String, pool: Subnet },
    #[error(
        "address {ip} is already in use by container {owner} on network {network}: pick another --ip, or remove {owner} first"
    )]
    AddressInUse {
        ip: Ipv4Addr,
        network: String,
        owner: String,
    },
    #[error("address {ip} is reserved on network {network} ({why}): pick another --ip")]
    AddressReserved {
        ip: Ipv4Addr,
        network: String,
        why: String,
    },
    #[error(
        "address {ip} is outside subnet {subnet} of network {network}: pick an address inside it"
    )]
    AddressOutside {
        ip: Ipv4Addr,
        network: String,
        subnet: Subnet,
    },
    #[error("network {network} has no addresses to give (driver {driver}): leave --ip out")]
    NoAddressing { network: String, driver: String },

    // --- containers ---
    #[error(
        "container {0} already exists: choose another name, or remove it with `tapswitch container rm {0}`"
    )]
    ContainerExists(String),
    #[error("container {0} does not exist: list containers with `tapswitch container ls`")]
    NoSuchContainer(String),

    // --- published ports ---
    #[error(
        "network {network} has driver {driver}, which cannot publish ports: leave -p out, or use a bridge network"
    )]
    PortsNeedBridge { network: String, driver: String },
    #[error(
        "network {network} is internal (no traffic to or from outside), so it publishes no ports: leave -p out, or use another network"
    )]
    PortsOnInternal { network: String },
    #[error(
        "host port {port} is already published by container {owner} (-p {flag}): pick another host port, or remove {owner} first"
    )]
    PortTaken {
        port: String,
        owner: String,
        flag: String,
    },
    #[error(
        "host port {port} is published twice (-p {first} and -p {second}): give each host port once"
    )]
    PortTwice {
        port: String,
        first: String,
        second: String,
    },

    // --- the shared store ---
    #[error(transparent)]
    Etcd(#[from] crate::etcd::EtcdError),
    #[error(
        "the state in etcd at {endpoints} (key {key}) is corrupt ({detail}); tapswitch will not overwrite it: repair it with etcdctl, or delete the key to start afresh (all networks and leases in it are then forgotten)"
    )]
    CorruptKey {
        endpoints: String,
        key: String,
        detail: String,
    },
    #[error(
        "the state in etcd at {endpoints} changed while this command ran and nothing was saved: run the command again"
    )]
    Conflict { endpoints: String },
    #[error(
        "the state in etcd at {endpoints} stayed locked by another command for {waited} s: run the command again (the lock of a command that died frees itself within {ttl} s)"
    )]
    Locked {
        endpoints: String,
        waited: u64,
        ttl: u64,
    },
    #[error(
        "{given:?} is not a store: write etcd://HOST:PORT[,HOST:PORT...] (or leave --store out for the local state directory)"
    )]
    BadStoreUrl { given: String },

    // --- the state directory ---
    #[error("{action} {}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the state file {} is corrupt ({detail}); tapswitch will not overwrite it: repair it by hand, or move it aside to start afresh (all networks and leases in it are then forgotten)", path.display())]
    Corrupt { path: PathBuf, detail: String },
    #[error("the state file {} has format version {found}, newer than this tapswitch understands ({supported}): upgrade tapswitch", path.display())]
    NewerVersion {
        path: PathBuf,
        found: u32,
        supported: u32,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
