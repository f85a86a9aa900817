//! What `ip link`, `ip addr`, `ip route` and `ip netns` do for containers,
//! done from Rust over rtnetlink instead of by running `ip`.
//!
//! - this module: a small synchronous rtnetlink client ([`Netlink`]): veth
//!   pairs, link up, addresses, the default route, deleting links;
//! - [`netns`]: named network namespaces (`/run/netns/<name>`, as
//!   `ip netns add` makes them) and running code inside one.
//!
//! A netlink socket talks to the namespace its creator was in when it was
//! opened, so code that configures a container opens its [`Netlink`] on a
//! thread that has entered the container's namespace ([`netns::run_in`]).

pub mod netns;

use std::io;
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::{AsRawFd, BorrowedFd};

use netlink_packet_core::{
    NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage,
    NetlinkPayload,
};
use netlink_packet_route::address::{AddressAttribute, AddressMessage, AddressScope};
use netlink_packet_route::link::{
    InfoData, InfoKind, InfoVeth, LinkAttribute, LinkFlags, LinkInfo, LinkMessage,
};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};

/// An rtnetlink socket in the namespace of the thread that opened it.
#[derive(Debug)]
pub struct Netlink {
    socket: Socket,
    sequence: u32,
}

/// An interface as `ip link` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interface {
    pub index: u32,
    pub name: String,
    pub mtu: u32,
}

/// The container side of a new veth pair.
#[derive(Debug, Clone, Copy)]
pub struct VethPeer<'a> {
    /// Its name inside the namespace (`eth0`).
    pub name: &'a str,
    /// The namespace it is created in.
    pub netns: BorrowedFd<'a>,
    pub mac: [u8; 6],
}

impl Netlink {
    /// Opens an rtnetlink socket in the calling thread's network namespace.
    pub fn open() -> io::Result<Netlink> {
        let mut socket = Socket::new(NETLINK_ROUTE)?;
        socket.bind_auto()?;
        socket.connect(&SocketAddr::new(0, 0))?;
        Ok(Netlink {
            socket,
            sequence: 0,
        })
    }

    /// The index of interface `name`, if it exists.
    pub fn link_index(&mut self, name: &str) -> io::Result<Option<u32>> {
        let mut message = LinkMessage::default();
        message
            .attributes
            .push(LinkAttribute::IfName(name.to_string()));
        match self.request(RouteNetlinkMessage::GetLink(message), 0) {
            Ok(replies) => Ok(replies.into_iter().find_map(|reply| match reply {
                RouteNetlinkMessage::NewLink(link) => Some(link.header.index),
                _ => None,
            })),
            Err(err) if err.raw_os_error() == Some(nix::libc::ENODEV) => Ok(None),
            Err(err) => Err(err),
        }
    }

    /// The index of interface `name`, which must exist.
    pub fn require_index(&mut self, name: &str) -> io::Result<u32> {
        self.link_index(name)?.ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!("no interface named {name}"),
            )
        })
    }

    /// The interface that has address `ip` (`ip addr show to IP`), IPv4 or
    /// IPv6, if any here has it.
    pub fn interface_with_address(&mut self, ip: IpAddr) -> io::Result<Option<Interface>> {
        let mut message = AddressMessage::default();
        message.header.family = match ip {
            IpAddr::V4(_) => AddressFamily::Inet,
            IpAddr::V6(_) => AddressFamily::Inet6,
        };
        let addresses = self.request(RouteNetlinkMessage::GetAddress(message), NLM_F_DUMP)?;
        let index = addresses.iter().find_map(|reply| match reply {
            RouteNetlinkMessage::NewAddress(address) if local_address(address) == Some(ip) => {
                Some(address.header.index)
            }
            _ => None,
        });
        match index {
            Some(index) => self.interface(index),
            None => Ok(None),
        }
    }

    /// Interface `index`'s name and MTU, if it exists.
    pub fn interface(&mut self, index: u32) -> io::Result<Option<Interface>> {
        let mut message = LinkMessage::default();
        message.header.index = index;
        let replies = match self.request(RouteNetlinkMessage::GetLink(message), 0) {
            Err(err) if err.raw_os_error() == Some(nix::libc::ENODEV) => return Ok(None),
            other => other?,
        };
        Ok(replies.into_iter().find_map(|reply| match reply {
            RouteNetlinkMessage::NewLink(link) => {
                let mut name = None;
                let mut mtu = None;
                for attribute in link.attributes {
                    match attribute {
                        LinkAttribute::IfName(n) => name = Some(n),
                        LinkAttribute::Mtu(m) => mtu = Some(m),
                        _ => {}
                    }
                }
                Some(Interface {
                    index: link.header.index,
                    name: name?,
                    mtu: mtu?,
                })
            }
            _ => None,
        }))
    }

    /// Creates a veth pair: `host` here, its peer directly inside another
    /// namespace (so the peer can be called `eth0` without meeting the
    /// host's own `eth0`). Both ends start down.
    pub fn create_veth(&mut self, host: &str, peer: VethPeer<'_>) -> io::Result<()> {
        let mut peer_message = LinkMessage::default();
        peer_message.attributes = vec![
            LinkAttribute::IfName(peer.name.to_string()),
            LinkAttribute::NetNsFd(peer.netns.as_raw_fd()),
            LinkAttribute::Address(peer.mac.to_vec()),
        ];
        let mut message = LinkMessage::default();
        message.attributes = vec![
            LinkAttribute::IfName(host.to_string()),
            LinkAttribute::LinkInfo(vec![
                LinkInfo::Kind(InfoKind::Veth),
                LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(peer_message))),
            ]),
        ];
        self.request(
            RouteNetlinkMessage::NewLink(message),
            NLM_F_CREATE | NLM_F_EXCL,
        )
        .map(drop)
    }

    /// `ip link set <index> up`.
    pub fn set_up(&mut self, index: u32) -> io::Result<()> {
        let mut message = LinkMessage::default();
        message.header.index = index;
        message.header.flags = LinkFlags::Up;
        message.header.change_mask = LinkFlags::Up;
        self.request(RouteNetlinkMessage::SetLink(message), 0)
            .map(drop)
    }

    /// `ip link set <index> mtu <mtu>`.
    pub fn set_mtu(&mut self, index: u32, mtu: u32) -> io::Result<()> {
        let mut message = LinkMessage::default();
        message.header.index = index;
        message.attributes = vec![LinkAttribute::Mtu(mtu)];
        self.request(RouteNetlinkMessage::SetLink(message), 0)
            .map(drop)
    }

    /// `ip link set <index> netns <fd>`: moves an interface (a TAP made by
    /// the switch, say) into another namespace.
    pub fn move_to_netns(&mut self, index: u32, netns: BorrowedFd<'_>) -> io::Result<()> {
        let mut message = LinkMessage::default();
        message.header.index = index;
        message.attributes = vec![LinkAttribute::NetNsFd(netns.as_raw_fd())];
        self.request(RouteNetlinkMessage::SetLink(message), 0)
            .map(drop)
    }

    /// `ip link set <index> name <name> address <mac>`.
    pub fn rename(&mut self, index: u32, name: &str, mac: [u8; 6]) -> io::Result<()> {
        let mut message = LinkMessage::default();
        message.header.index = index;
        message.attributes = vec![
            LinkAttribute::IfName(name.to_string()),
            LinkAttribute::Address(mac.to_vec()),
        ];
        self.request(RouteNetlinkMessage::SetLink(message), 0)
            .map(drop)
    }

    /// `ip link del <index>`; for a veth this removes both ends.
    pub fn delete_link(&mut self, index: u32) -> io::Result<()> {
        let mut message = LinkMessage::default();
        message.header.index = index;
        self.request(RouteNetlinkMessage::DelLink(message), 0)
            .map(drop)
    }

    /// `ip addr add <ip>/<prefix> brd <broadcast> dev <index>`.
    pub fn add_address(
        &mut self,
        index: u32,
        ip: Ipv4Addr,
        prefix: u8,
        broadcast: Ipv4Addr,
    ) -> io::Result<()> {
        let mut message = AddressMessage::default();
        message.header.family = AddressFamily::Inet;
        message.header.prefix_len = prefix;
        message.header.scope = AddressScope::Universe;
        message.header.index = index;
        message.attributes = vec![
            AddressAttribute::Local(ip.into()),
            AddressAttribute::Address(ip.into()),
            AddressAttribute::Broadcast(broadcast),
        ];
        self.request(
            RouteNetlinkMessage::NewAddress(message),
            NLM_F_CREATE | NLM_F_EXCL,
        )
        .map(drop)
    }

    /// `ip route add default via <gateway> dev <index>`.
    pub fn add_default_route(&mut self, index: u32, gateway: Ipv4Addr) -> io::Result<()> {
        let mut message = RouteMessage::default();
        message.header.address_family = AddressFamily::Inet;
        message.header.destination_prefix_length = 0;
        message.header.table = RouteHeader::RT_TABLE_MAIN;
        message.header.protocol = RouteProtocol::Boot;
        message.header.scope = RouteScope::Universe;
        message.header.kind = RouteType::Unicast;
        message.attributes = vec![
            RouteAttribute::Gateway(RouteAddress::Inet(gateway)),
            RouteAttribute::Oif(index),
        ];
        self.request(
            RouteNetlinkMessage::NewRoute(message),
            NLM_F_CREATE | NLM_F_EXCL,
        )
        .map(drop)
    }

    /// Whether the main table has an IPv4 default route (`ip route show
    /// default`), so an attached namespace's own route is left alone.
    pub fn has_default_route(&mut self) -> io::Result<bool> {
        let mut message = RouteMessage::default();
        message.header.address_family = AddressFamily::Inet;
        let routes = self.request(RouteNetlinkMessage::GetRoute(message), NLM_F_DUMP)?;
        Ok(routes.iter().any(|reply| {
            matches!(reply, RouteNetlinkMessage::NewRoute(route)
                if route.header.destination_prefix_length == 0
                    && route.header.table == RouteHeader::RT_TABLE_MAIN
                    && route.header.address_family == AddressFamily::Inet)
        }))
    }

    /// The first of `eth0`, `eth1`, ... that no interface here is called.
    pub fn next_free_eth(&mut self) -> io::Result<String> {
        let mut n = 0u32;
        loop {
            let name = format!("eth{n}");
            if self.link_index(&name)?.is_none() {
                return Ok(name);
            }
            n += 1;
        }
    }

    /// Sends one request and collects the replies until the kernel's ACK
    /// (or the end of a dump). A NACK becomes the `io::Error` of its errno.
    fn request(
        &mut self,
        message: RouteNetlinkMessage,
        flags: u16,
    ) -> io::Result<Vec<RouteNetlinkMessage>> {
        self.sequence = self.sequence.wrapping_add(1);
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | NLM_F_ACK | flags;
        header.sequence_number = self.sequence;
        let mut packet = NetlinkMessage::new(header, NetlinkPayload::from(message));
        packet.finalize();
        let mut buf = vec![0; packet.header.length as usize];
        packet.serialize(&mut buf);
        self.socket.send(&buf, 0)?;

        let mut replies = Vec::new();
        loop {
            let (datagram, _) = self.socket.recv_from_full()?;
            let mut offset = 0;
            while offset < datagram.len() {
                let reply = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&datagram[offset..])
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
                let length = reply.header.length as usize;
                // Replies to an earlier request that was abandoned are not ours.
                let ours = reply.header.sequence_number == self.sequence;
                match reply.payload {
                    NetlinkPayload::Error(err) if ours => match err.code {
                        None => return Ok(replies),
                        Some(_) => return Err(err.to_io()),
                    },
                    NetlinkPayload::Done(_) if ours => return Ok(replies),
                    NetlinkPayload::InnerMessage(inner) if ours => replies.push(inner),
                    _ => {}
                }
                if length == 0 {
                    break;
                }
                // Messages in one datagram are 4-byte aligned (NLMSG_ALIGN).
                offset += (length + 3) & !3;
            }
        }
    }
}

/// The address an `ip addr` entry gives its interface: `IFA_LOCAL` when
/// there is one, else `IFA_ADDRESS` (as `ip` reads them). On a
/// point-to-point link `IFA_ADDRESS` is the far end's; IPv6 entries of
/// other links carry `IFA_ADDRESS` alone.
fn local_address(address: &AddressMessage) -> Option<IpAddr> {
    let attribute = |local: bool| {
        address.attributes.iter().find_map(|a| match a {
            AddressAttribute::Local(ip) if local => Some(*ip),
            AddressAttribute::Address(ip) if !local => Some(*ip),
            _ => None,
        })
    };
    attribute(true).or_else(|| attribute(false))
}

/// Writes a sysctl under `/proc/sys/net` for the calling thread's network
/// namespace (that directory follows the namespace of the thread opening it).
pub fn write_net_sysctl(path: &str, value: &str) -> io::Result<()> {
    std::fs::write(format!("/proc/sys/net/{path}"), value)
}

/// Turns IPv6 off on interface `name` (in the calling thread's namespace),
/// so the kernel sends no router solicitations, MLD reports or DAD probes
/// through it. Hosts without IPv6 have nothing to turn off.
pub fn disable_ipv6(name: &str) -> io::Result<()> {
    match write_net_sysctl(&format!("ipv6/conf/{name}/disable_ipv6"), "1") {
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(attributes: Vec<AddressAttribute>) -> AddressMessage {
        let mut message = AddressMessage::default();
        message.attributes = attributes;
        message
    }

    #[test]
    fn an_address_is_its_local_one_when_it_has_one() {
        let here: IpAddr = "10.0.0.1".parse().unwrap();
        let there: IpAddr = "10.0.0.2".parse().unwrap();
        let point_to_point = entry(vec![
            AddressAttribute::Address(there),
            AddressAttribute::Local(here),
        ]);
        assert_eq!(local_address(&point_to_point), Some(here));
        let ipv6: IpAddr = "fd99::1".parse().unwrap();
        assert_eq!(
            local_address(&entry(vec![AddressAttribute::Address(ipv6)])),
            Some(ipv6)
        );
        assert_eq!(local_address(&entry(Vec::new())), None);
    }

    #[test]
    fn loopbacks_address_is_found_on_lo() {
        let mut netlink = Netlink::open().unwrap();
        let lo = netlink
            .interface_with_address("127.0.0.1".parse().unwrap())
            .unwrap()
            .expect("127.0.0.1 is on lo");
        assert_eq!(lo.name, "lo");
        assert!(lo.mtu > 0);
        assert_eq!(netlink.interface(lo.index).unwrap(), Some(lo));
        assert_eq!(
            netlink
                .interface_with_address("192.0.2.77".parse().unwrap())
                .unwrap(),
            None,
            "TEST-NET-1 is on no interface here"
        );
    }
}
