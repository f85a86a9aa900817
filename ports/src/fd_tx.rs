//! The send half of the ports that write frames to a file descriptor: an
//! `--iface` port's packet socket and a `--tap` port's first queue.

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;

use crate::ledger::LaneLedger;
use crate::mtu::PortMtu;
use crate::sys;
use crate::vnet::VnetHdr;
use crate::{PortTx, send_one_by_one};

/// Writes frames, each after its virtio-net header, to a packet socket or a
/// TAP queue (both opened with virtio-net headers on).
#[derive(Debug)]
pub struct FdTx {
    fd: Arc<OwnedFd>,
    mtu: PortMtu,
    /// Whether several frames go in one `sendmmsg` (packet sockets; a TAP
    /// takes one write per frame).
    sendmmsg: bool,
    /// The port's ledger, held as long as the descriptor: its programs may
    /// count in it while the socket or queue is open (see `ledger/book.rs`).
    _ledger: Option<Arc<LaneLedger>>,
}

impl FdTx {
    pub(crate) fn new(fd: Arc<OwnedFd>, mtu: PortMtu, sendmmsg: bool) -> Self {
        FdTx {
            fd,
            mtu,
            sendmmsg,
            _ledger: None,
        }
    }

    /// Holds `ledger` as long as the descriptor.
    pub(crate) fn keeping(mut self, ledger: Option<Arc<LaneLedger>>) -> Self {
        self._ledger = ledger;
        self
    }
}

impl PortTx for FdTx {
    fn send(&self, vnet: &VnetHdr, frame: &[u8]) -> io::Result<()> {
        sys::write_frame(self.fd.as_fd(), &vnet.to_bytes(), frame)?;
        Ok(())
    }

    fn send_batch(&self, frames: &[(VnetHdr, &[u8])]) -> io::Result<usize> {
        match frames {
            // One frame (a ping, a lone ACK) is cheaper with a plain write.
            [(vnet, frame)] => self.send(vnet, frame).map(|()| 1),
            _ if self.sendmmsg => sys::packet::send_batch(self.fd.as_fd(), frames),
            _ => send_one_by_one(self, frames),
        }
    }

    fn offloads(&self) -> bool {
        true
    }

    fn mtu(&self) -> usize {
        self.mtu.get()
    }

    fn refresh_mtu(&self) -> usize {
        self.mtu.refresh()
    }

    fn refresh_mtu_for_too_big(&self) -> usize {
        self.mtu.refresh_for_too_big()
    }

    fn link_up(&self) -> Option<bool> {
        self.mtu.link_up()
    }
}
