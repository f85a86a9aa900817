//! `--iface` ports: an existing interface (typically the host end of a veth
//! pair) read and written through an AF_PACKET socket.
//!
//! The socket is bound to the interface, never reads back frames sent from
//! this host (PACKET_IGNORE_OUTGOING: neither our own output nor the local
//! stack's), restores VLAN tags the kernel moved into metadata
//! (PACKET_AUXDATA), has a large receive buffer so bursts are not dropped,
//! and speaks virtio-net headers (PACKET_VNET_HDR) so GSO super-frames and
//! partial checksums pass through untouched. Frames are received in batches
//! with `recvmmsg`.

use std::io;
use std::os::fd::AsRawFd;
use std::os::fd::{AsFd, OwnedFd, RawFd};
use std::sync::Arc;

use crate::batch::RxBatch;
use crate::sys::{self, packet::MAX_BATCH, packet::RecvMeta};
use crate::vnet::VnetHdr;
use crate::{PortError, PortRx, PortTx, check_interface_name};

/// Receive buffer per packet socket. The kernel default (212 KiB) holds only
/// a few GSO frames or ~270 small ones; a burst from a fast sender would be
/// dropped while the worker is busy elsewhere.
pub const RECEIVE_BUFFER_BYTES: usize = 8 << 20;

/// Opens interface `name` as a switch port.
pub fn open(name: &str) -> Result<(PacketRx, PacketTx), PortError> {
    check_interface_name(name)?;
    let ifindex = sys::if_nametoindex(name).map_err(|_| PortError::NoSuchInterface {
        name: name.to_string(),
    })?;
    let config = sys::packet::PacketConfig {
        ifindex,
        vnet_hdr: true,
        rcvbuf: RECEIVE_BUFFER_BYTES,
        promisc: true,
    };
    let fd = sys::packet::open(config)
        .map_err(|err| PortError::from_io(name, "opening a packet socket", err))?;
    let mtu = sys::interface_mtu(fd.as_fd(), name)
        .map_err(|err| PortError::from_io(name, "reading the MTU", err))?;
    let fd = Arc::new(fd);
    let rx = PacketRx {
        fd: fd.clone(),
        vnet_hdr: true,
        heads: [[0; 10]; MAX_BATCH],
        meta: [RecvMeta::default(); MAX_BATCH],
    };
    let tx = PacketTx {
        fd,
        vnet_hdr: true,
        mtu,
        ifindex,
    };
    Ok((rx, tx))
}

/// The receiving half of an `--iface` port.
#[derive(Debug)]
pub struct PacketRx {
    fd: Arc<OwnedFd>,
    vnet_hdr: bool,
    heads: [[u8; 10]; MAX_BATCH],
    meta: [RecvMeta; MAX_BATCH],
}

impl PortRx for PacketRx {
    fn recv_batch(&mut self, batch: &mut RxBatch) -> io::Result<usize> {
        batch.clear();
        let count = batch.capacity().min(MAX_BATCH);
        let received = {
            let mut free = batch.free_buffers();
            let mut bufs: [&mut [u8]; MAX_BATCH] =
                std::array::from_fn(|_| free.next().unwrap_or(&mut []));
            sys::packet::recv_batch(
                self.fd.as_fd(),
                self.vnet_hdr,
                &mut self.heads[..count],
                &mut bufs[..count],
                &mut self.meta[..count],
            )?
        };
        for i in 0..received {
            let meta = self.meta[i];
            // A frame larger than a slot cannot happen with 64 KiB slots; if
            // it ever does, it becomes a runt the engine drops and counts.
            let len = if meta.truncated { 0 } else { meta.len };
            let vnet = if self.vnet_hdr {
                VnetHdr::from_bytes(&self.heads[i])
            } else {
                VnetHdr::default()
            };
            batch.commit(len, vnet);
            if let Some((tpid, tci)) = meta.vlan
                && len > 0
            {
                batch.insert_vlan_tag(i, tpid, tci);
            }
        }
        Ok(received)
    }

    fn raw_fd(&self) -> Option<RawFd> {
        Some(self.fd.as_raw_fd())
    }

    fn take_kernel_drops(&mut self) -> u64 {
        sys::packet::take_drops(self.fd.as_fd()).unwrap_or(0)
    }
}

/// The sending half of an `--iface` port.
#[derive(Debug)]
pub struct PacketTx {
    fd: Arc<OwnedFd>,
    vnet_hdr: bool,
    mtu: usize,
    ifindex: u32,
}

impl PacketTx {
    /// The interface index the port is bound to.
    pub fn ifindex(&self) -> u32 {
        self.ifindex
    }
}

impl PortTx for PacketTx {
    fn send(&self, vnet: &VnetHdr, frame: &[u8]) -> io::Result<()> {
        let head = vnet.to_bytes();
        let head: &[u8] = if self.vnet_hdr { &head } else { &[] };
        sys::write_frame(self.fd.as_fd(), head, frame)?;
        Ok(())
    }

    fn offloads(&self) -> bool {
        self.vnet_hdr
    }

    fn mtu(&self) -> usize {
        self.mtu
    }
}
