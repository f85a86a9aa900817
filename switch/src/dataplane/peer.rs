//! Other threads' handles on a worker: commands in, a waker to be heard.

use std::sync::Arc;
use std::thread::JoinHandle;

use crossbeam_channel::Sender;
use mio::Waker;

use super::lanes::Lane;
use crate::port::PortId;

pub(super) enum WorkerCommand {
    /// Wait for and read this lane (this worker is its home).
    Add {
        lane: Arc<Lane>,
    },
    /// Stop reading port `id` and close its receive half.
    Remove {
        id: PortId,
        done: Sender<()>,
    },
    /// The switch went quiet: give the receive batches' pages back (see
    /// `Rest` in `housekeeping.rs`).
    ReleasePages,
    Stop,
}

/// The dataplane's handle on one worker thread.
pub(super) struct WorkerHandle {
    peer: Peer,
    thread: JoinHandle<()>,
}

/// Another thread's way to hand a worker a command (see [`Peer::send`]).
#[derive(Clone)]
pub(super) struct Peer {
    commands: Sender<WorkerCommand>,
    waker: Arc<Waker>,
}

impl Peer {
    pub(super) fn new(commands: Sender<WorkerCommand>, waker: Arc<Waker>) -> Self {
        Peer { commands, waker }
    }

    /// Queues `command` and wakes the worker. The worker only goes away
    /// after Stop, so a failed send means it already stopped and needs
    /// nothing any more.
    pub(super) fn send(&self, command: WorkerCommand) {
        if self.commands.send(command).is_ok() {
            let _ = self.waker.wake();
        }
    }
}

impl WorkerHandle {
    pub(super) fn new(peer: Peer, thread: JoinHandle<()>) -> Self {
        WorkerHandle { peer, thread }
    }

    /// A handle other workers may keep.
    pub(super) fn peer(&self) -> Peer {
        self.peer.clone()
    }

    pub(super) fn send(&self, command: WorkerCommand) {
        self.peer.send(command);
    }

    /// Asks the worker to drop port `id`'s receive half and waits until it has.
    pub(super) fn remove_and_wait(&self, id: PortId) {
        let (done, wait) = crossbeam_channel::bounded(1);
        self.send(WorkerCommand::Remove { id, done });
        let _ = wait.recv();
    }

    pub(super) fn join(self) {
        let _ = self.thread.join();
    }
}
