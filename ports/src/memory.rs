//! In-memory ports for tests: frames pushed in come out of `recv_batch`,
//! frames sent are kept for inspection.

use std::collections::VecDeque;
use std::io;
use std::os::fd::RawFd;
use std::sync::{Arc, Mutex, PoisonError};

use crate::batch::RxBatch;
use crate::vnet::VnetHdr;
use crate::{PortRx, PortTx};

/// A frame with its offload header.
pub type Frame = (VnetHdr, Vec<u8>);

/// Creates an in-memory port: the injector feeds its receive side, the
/// `MemoryTx` records what is sent.
pub fn memory_port(mtu: usize, offloads: bool) -> (MemoryRx, MemoryTx) {
    let rx = MemoryRx {
        queue: Arc::default(),
    };
    let tx = MemoryTx {
        sent: Arc::default(),
        mtu,
        offloads,
    };
    (rx, tx)
}

/// The receiving half of an in-memory port.
#[derive(Debug, Clone)]
pub struct MemoryRx {
    queue: Arc<Mutex<VecDeque<Frame>>>,
}

impl MemoryRx {
    /// Queues a frame for the switch to receive.
    pub fn inject(&self, vnet: VnetHdr, frame: &[u8]) {
        self.queue
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push_back((vnet, frame.to_vec()));
    }
}

impl PortRx for MemoryRx {
    fn recv_batch(&mut self, batch: &mut RxBatch) -> io::Result<usize> {
        batch.clear();
        let mut queue = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
        while batch.len() < batch.capacity() {
            let Some((vnet, frame)) = queue.pop_front() else {
                break;
            };
            if !batch.push(vnet, &frame) {
                break;
            }
        }
        Ok(batch.len())
    }

    fn raw_fd(&self) -> Option<RawFd> {
        None
    }
}

/// The sending half of an in-memory port.
#[derive(Debug, Clone)]
pub struct MemoryTx {
    sent: Arc<Mutex<Vec<Frame>>>,
    mtu: usize,
    offloads: bool,
}

impl MemoryTx {
    /// Takes the frames sent so far.
    pub fn take_sent(&self) -> Vec<Frame> {
        std::mem::take(&mut *self.sent.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

impl PortTx for MemoryTx {
    fn send(&self, vnet: &VnetHdr, frame: &[u8]) -> io::Result<()> {
        if !self.offloads && !vnet.is_plain() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "offload header sent to a plain port",
            ));
        }
        self.sent
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push((*vnet, frame.to_vec()));
        Ok(())
    }

    fn offloads(&self) -> bool {
        self.offloads
    }

    fn mtu(&self) -> usize {
        self.mtu
    }
}
