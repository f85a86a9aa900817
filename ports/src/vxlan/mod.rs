//! A VXLAN tunnel port (RFC 7348): the switch's way to the other hosts of
//! an overlay network, interoperable with Linux's `vxlan` device.
//!
//! To the switch the tunnel is one more port; it learns every remote MAC
//! on it. Behind the port, [`remotes::RemoteTable`] keeps which host each
//! MAC is behind (learned from the outer source address), the members the
//! tunnel accepts VXLAN from and floods to, and the counters; [`socket`]
//! moves the datagrams through one UDP socket bound to the host's underlay
//! address. [`Tunnel`] is the handle the control plane keeps to change the
//! members and to read the table.
//!
//! Plain UDP, so no privilege is needed for the tunnel itself. The port
//! takes virtio-net headers: a GSO super-frame is cut next to the VXLAN
//! headers and sent with UDP segmentation offload, and a partial checksum
//! is finished before the frame leaves ([`send::VxlanTx`]); frames that a
//! sender on this machine left unfinished are recognised on the way in
//! ([`inner_offloads`]), and a batch's consecutive segments of one TCP
//! flow are joined back into one super-frame ([`tcp_join`]).

mod cut;
pub mod inner_offloads;
pub mod remotes;
pub mod send;
pub mod socket;
pub mod tcp_join;

#[cfg(test)]
mod ipv6_tests;
#[cfg(test)]
mod tests;

use std::net::{SocketAddr, UdpSocket};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use socket2::{Domain, Protocol, Socket, Type};

pub use remotes::{
    Destinations, DropReason, RegisteredChange, RemoteEntry, RemoteTable, TunnelStats,
};
pub use send::VxlanTx;
pub use socket::VxlanRx;

use crate::wire::MacAddr;
use crate::{OpenedPort, PortError, PortKind};

/// The socket buffers asked for: a TCP window of frames in flight.
const SOCKET_BUFFER: usize = 4 << 20;

/// How to open a tunnel.
#[derive(Debug, Clone)]
pub struct TunnelConfig {
    /// The port's name (`vxlan0`), for errors.
    pub name: String,
    /// This host's endpoint: underlay address (IPv4 or IPv6) and VXLAN port.
    pub local: SocketAddr,
    pub vni: u32,
    /// The largest inner IP packet: the underlay MTU minus 50 (70 on an
    /// IPv6 underlay).
    pub mtu: usize,
    /// MACs whose frames never cross (the gateway's, the same on every host).
    pub local_only: Vec<MacAddr>,
}

/// The control plane's handle on a tunnel (shared with its port).
#[derive(Debug, Clone)]
pub struct Tunnel {
    local: SocketAddr,
    table: Arc<Mutex<RemoteTable>>,
    sent: Arc<send::SentCounts>,
}

impl Tunnel {
    /// Binds the tunnel's socket; returns the handle and the port to give
    /// the switch (`Dataplane::add_port`).
    pub fn open(config: &TunnelConfig) -> Result<(Tunnel, OpenedPort), PortError> {
        let io_error = |doing| move |err| PortError::from_io(&config.name, doing, err);
        let socket = Socket::new(
            Domain::for_address(config.local),
            Type::DGRAM,
            Some(Protocol::UDP),
        )
        .map_err(io_error("opening a UDP socket"))?;
        // Best effort: the kernel caps them at net.core.[rw]mem_max.
        let _ = socket.set_recv_buffer_size(SOCKET_BUFFER);
        let _ = socket.set_send_buffer_size(SOCKET_BUFFER);
        socket
            .bind(&config.local.into())
            .map_err(io_error("binding its underlay address"))?;
        socket
            .set_nonblocking(true)
            .map_err(io_error("making its socket non-blocking"))?;
        let receiver: UdpSocket = socket
            .try_clone()
            .map_err(io_error("duplicating its socket"))?
            .into();
        let table = Arc::new(Mutex::new(RemoteTable::new(
            config.vni,
            config.local_only.iter().copied(),
        )));
        let sent = Arc::new(send::SentCounts::default());
        let port = OpenedPort {
            kind: PortKind::Vxlan,
            lanes: vec![Box::new(VxlanRx::new(receiver, table.clone(), config.mtu))],
            tx: Arc::new(VxlanTx::new(
                socket,
                table.clone(),
                sent.clone(),
                config.mtu,
            )),
            steering: None,
            kernel_path: None,
        };
        let tunnel = Tunnel {
            local: config.local,
            table,
            sent,
        };
        Ok((tunnel, port))
    }

    /// This host's endpoint.
    pub fn local(&self) -> SocketAddr {
        self.local
    }

    fn table(&self) -> MutexGuard<'_, RemoteTable> {
        self.table.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Floods go to `endpoint` too, and its VXLAN is accepted.
    pub fn add_member(&self, endpoint: SocketAddr) -> bool {
        self.table().add_member(endpoint)
    }

    /// `endpoint` left; returns the MACs that were behind it.
    pub fn remove_member(&self, endpoint: SocketAddr) -> Vec<MacAddr> {
        self.table().remove_member(endpoint)
    }

    /// Forgets the MACs behind `endpoint` (it stays a member); returns them.
    pub fn flush_behind(&self, endpoint: SocketAddr) -> Vec<MacAddr> {
        self.table().flush_behind(endpoint)
    }

    /// Makes `macs` the MACs registered behind member `endpoint` (see
    /// [`RemoteTable::set_registered`]).
    pub fn set_registered(&self, endpoint: SocketAddr, macs: &[MacAddr]) -> RegisteredChange {
        self.table().set_registered(endpoint, macs, Instant::now())
    }

    /// Which members are tapswitch switches, the others being peers
    /// ([`RemoteTable::set_switches`]).
    pub fn set_switches(&self, switches: impl IntoIterator<Item = SocketAddr>) {
        self.table().set_switches(switches);
    }

    pub fn members(&self) -> Vec<SocketAddr> {
        self.table().members().collect()
    }

    /// The endpoint `mac` is behind, if learned and live.
    pub fn endpoint_of(&self, mac: MacAddr) -> Option<SocketAddr> {
        self.table().lookup(mac, Instant::now())
    }

    /// Every live remote MAC and where it is.
    pub fn entries(&self) -> Vec<RemoteEntry> {
        self.table().entries(Instant::now())
    }

    /// Drops expired entries (called now and then by the control plane).
    pub fn expire(&self) -> usize {
        self.table().expire(Instant::now())
    }

    pub fn stats(&self) -> TunnelStats {
        let mut stats = self.table().stats();
        self.sent.add_to(&mut stats);
        stats
    }
}
