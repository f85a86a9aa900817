//! The tunnel's I/O: one UDP socket on the underlay, read as the port's
//! receive lane and written by its send half. What to accept and where to
//! send is [`RemoteTable`]'s decision.

use std::io::{self, IoSlice};
use std::net::{SocketAddr, SocketAddrV4, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use socket2::{SockAddr, Socket};

use super::remotes::{Destinations, RemoteTable};
use crate::batch::RxBatch;
use crate::wire::{ethernet, vxlan};
use crate::{PortRx, PortTx, RxError, VnetHdr};

/// The largest UDP payload: a whole frame of [`crate::MAX_FRAME_LEN`] fits.
const DATAGRAM_LEN: usize = 65_536;

/// The receive lane: decapsulates what members send.
#[derive(Debug)]
pub struct VxlanRx {
    socket: UdpSocket,
    table: Arc<Mutex<RemoteTable>>,
    datagram: Vec<u8>,
    /// The largest inner IP packet (longer TCP frames are super-frames).
    mtu: usize,
}

impl VxlanRx {
    pub(super) fn new(socket: UdpSocket, table: Arc<Mutex<RemoteTable>>, mtu: usize) -> VxlanRx {
        VxlanRx {
            socket,
            table,
            datagram: vec![0; DATAGRAM_LEN],
            mtu,
        }
    }
}

impl PortRx for VxlanRx {
    fn recv_batch(&mut self, batch: &mut RxBatch) -> Result<usize, RxError> {
        batch.clear();
        while batch.len() < batch.capacity() {
            let (len, source) = match self.socket.recv_from(&mut self.datagram) {
                Ok(got) => got,
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => break,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                // An ICMP error for an earlier send (a member gone away)
                // surfaces here; it says nothing about this socket.
                Err(err) if err.kind() == io::ErrorKind::ConnectionRefused => continue,
                Err(err) => return Err(RxError::Io(err)),
            };
            let SocketAddr::V4(source) = source else {
                continue;
            };
            let datagram = &self.datagram[..len];
            let verdict = self
                .table
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .receive(source, datagram, Instant::now());
            if let Ok(offset) = verdict {
                let frame = &datagram[offset..];
                let vnet = super::inner_offloads::vnet_for(frame, self.mtu);
                if !batch.push(vnet, frame) {
                    break;
                }
            }
        }
        Ok(batch.len())
    }

    fn raw_fd(&self) -> Option<RawFd> {
        Some(self.socket.as_raw_fd())
    }
}

/// The send half: encapsulates, to one member or to all of them.
#[derive(Debug)]
pub struct VxlanTx {
    socket: Socket,
    table: Arc<Mutex<RemoteTable>>,
    header: [u8; vxlan::HEADER_LEN],
    mtu: usize,
}

impl VxlanTx {
    pub(super) fn new(socket: Socket, table: Arc<Mutex<RemoteTable>>, mtu: usize) -> VxlanTx {
        let header = vxlan::header(table.lock().unwrap_or_else(PoisonError::into_inner).vni());
        VxlanTx {
            socket,
            table,
            header,
            mtu,
        }
    }

    fn send_to(&self, endpoint: SocketAddrV4, frame: &[u8]) -> io::Result<()> {
        let parts = [IoSlice::new(&self.header), IoSlice::new(frame)];
        self.socket
            .send_to_vectored(&parts, &SockAddr::from(endpoint))
            .map(drop)
    }
}

impl PortTx for VxlanTx {
    fn send(&self, vnet: &VnetHdr, frame: &[u8]) -> io::Result<()> {
        debug_assert!(vnet.is_plain(), "the tunnel takes plain frames only");
        let Ok(ethernet) = ethernet::Frame::new_checked(frame) else {
            return Ok(());
        };
        let destinations = self
            .table
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .destinations(ethernet.dst_addr(), ethernet.src_addr(), Instant::now());
        let endpoints = match destinations {
            Destinations::One(endpoint) => vec![endpoint],
            Destinations::Flood(endpoints) => endpoints,
            // Counted by the table; not the port's failure.
            Destinations::Nowhere(_) => return Ok(()),
        };
        let (mut sent, mut failed, mut first_error) = (0, 0, None);
        for endpoint in endpoints {
            match self.send_to(endpoint, frame) {
                Ok(()) => sent += 1,
                Err(err) => {
                    failed += 1;
                    first_error.get_or_insert(err);
                }
            }
        }
        self.table
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .count_sent(sent, failed);
        // A flood that reached some members went; one member down (an ICMP
        // error, a full buffer) must not count the frame as lost for all.
        match first_error {
            Some(err) if sent == 0 => Err(err),
            _ => Ok(()),
        }
    }

    fn offloads(&self) -> bool {
        false
    }

    fn mtu(&self) -> usize {
        self.mtu
    }
}
