//! The least a user-space TAP forwarder does: the benchmark's floor for TAP
//! ports (`tools/bench/bench.py --switches tap-floor,tap-floor-ping`).
//!
//! ```text
//! tap_floor [--answer-at-once] TAP_A TAP_B
//! ```
//!
//! Two TAP devices opened as tapswitch opens a TAP port (virtio-net headers,
//! the TSO and checksum offloads, one queue), and nothing else a switch
//! does: no MAC table, no flooding, no gateway, no counters, no clock. Every
//! frame read from one device is written to the other as it came, its
//! virtio-net header included. What tapswitch's TAP ports measure above
//! this is the switch's own; what this measures above the Linux bridge is
//! the TAP's (a copy out of the kernel and one back in per frame, and a
//! thread's wake-up), which no user-space switch avoids.
//!
//! Two ways, because no one way is the least for both throughput and round
//! trips:
//! - by default one thread per direction: read, write, and sleep in epoll
//!   when the device is empty. Each direction has a CPU's worth of time, as
//!   a bulk stream wants;
//! - `--answer-at-once`: one real-time thread (SCHED_FIFO 1, when allowed)
//!   with epoll over both devices. After writing a frame it reads the other
//!   device at once: a TAP write delivers the frame within the writer's
//!   system call, so the answer to a ping already waits there. One wake-up
//!   per round trip, the least there is without busy polling. With
//!   `--ordinary` the thread keeps ordinary priority (as rootless mode's
//!   workers must).
//!
//! It prints `forwarding A <-> B` once both devices are open and up, and
//! runs until it is killed or a device is deleted (the benchmark removes
//! their namespaces), then exits; the devices it created go with it.

use std::fs::File;
use std::io::{self, ErrorKind, Read, Write};
use std::os::fd::AsRawFd;
use std::process::ExitCode;

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};

/// The largest frame a TAP with TSO hands over, with its virtio-net header.
const BUFFER_LEN: usize = ports::VnetHdr::LEN + ports::MAX_FRAME_LEN;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let answer_at_once = args.iter().any(|arg| arg == "--answer-at-once");
    let ordinary = args.iter().any(|arg| arg == "--ordinary");
    let names: Vec<&String> = args.iter().filter(|arg| !arg.starts_with("--")).collect();
    let [a, b] = names[..] else {
        eprintln!("usage: tap_floor [--answer-at-once [--ordinary]] TAP_A TAP_B");
        return ExitCode::from(2);
    };
    match forward(a, b, answer_at_once.then_some(!ordinary)) {
        Ok(()) => ExitCode::SUCCESS,
        // The benchmark ends a run by removing the namespaces the devices
        // were moved to: that is the end of the work, not a failure.
        Err(err) if device_gone(&err) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("tap_floor: {err}");
            ExitCode::FAILURE
        }
    }
}

/// Whether `err` is what reading a deleted TAP device gives (`EBADFD`).
fn device_gone(err: &io::Error) -> bool {
    err.raw_os_error() == Some(nix::errno::Errno::EBADFD as i32)
}

/// `answer_at_once`: `None` for a thread per direction, else one thread,
/// real-time if `Some(true)`.
fn forward(a_name: &str, b_name: &str, answer_at_once: Option<bool>) -> io::Result<()> {
    let (a, b) = (open(a_name)?, open(b_name)?);
    // The benchmark moves the devices away once it reads this line.
    println!("forwarding {a_name} <-> {b_name}");
    io::stdout().flush()?;
    if let Some(realtime) = answer_at_once {
        if realtime && let Err(err) = ports::cpu::set_realtime(true) {
            eprintln!("tap_floor: an ordinary thread then (no real-time priority: {err})");
        }
        return both_ways_in_one_thread(a, b);
    }
    let (a_again, b_again) = (a.try_clone()?, b.try_clone()?);
    let back = std::thread::spawn(move || one_way(b_again, a_again));
    one_way(a, b)?;
    back.join().expect("the other direction panicked")
}

/// TAP device `name`, opened (and created, brought up) as a tapswitch TAP
/// port with one queue: non-blocking.
fn open(name: &str) -> io::Result<File> {
    let mut opened = ports::tap::open_queues(name, 1).map_err(io::Error::other)?;
    Ok(File::from(opened.queues.remove(0)))
}

/// Frames from `from` to `to`, until an error.
fn one_way(from: File, to: File) -> io::Result<()> {
    let mut poll = Poll::new()?;
    let fd = from.as_raw_fd();
    poll.registry()
        .register(&mut SourceFd(&fd), Token(0), Interest::READABLE)?;
    let mut events = Events::with_capacity(1);
    let mut buffer = vec![0u8; BUFFER_LEN];
    loop {
        match read_one(&from, &mut buffer)? {
            Some(len) => pass_on(&to, &buffer[..len]),
            None => sleep(&mut poll, &mut events)?,
        }
    }
}

/// Frames both ways in the calling thread: each frame's answer is read
/// right after the frame is written (see the module docs).
fn both_ways_in_one_thread(a: File, b: File) -> io::Result<()> {
    let mut poll = Poll::new()?;
    for (fd, token) in [(a.as_raw_fd(), Token(0)), (b.as_raw_fd(), Token(1))] {
        poll.registry()
            .register(&mut SourceFd(&fd), token, Interest::READABLE)?;
    }
    let mut events = Events::with_capacity(2);
    let mut buffer = vec![0u8; BUFFER_LEN];
    loop {
        // Edge-triggered: read both until empty before sleeping again.
        let mut moved = true;
        while moved {
            moved = false;
            for (from, to) in [(&a, &b), (&b, &a)] {
                while let Some(len) = read_one(from, &mut buffer)? {
                    pass_on(to, &buffer[..len]);
                    moved = true;
                    if let Some(answer) = read_one(to, &mut buffer)? {
                        pass_on(from, &buffer[..answer]);
                    }
                }
            }
        }
        sleep(&mut poll, &mut events)?;
    }
}

/// Waits in epoll until a device has frames (or a signal came).
fn sleep(poll: &mut Poll, events: &mut Events) -> io::Result<()> {
    match poll.poll(events, None) {
        Err(err) if err.kind() != ErrorKind::Interrupted => Err(err),
        _ => Ok(()),
    }
}

/// One frame from `from`, or `None` when it is empty.
fn read_one(mut from: &File, buffer: &mut [u8]) -> io::Result<Option<usize>> {
    loop {
        match from.read(buffer) {
            Ok(len) => return Ok(Some(len)),
            Err(err) if err.kind() == ErrorKind::WouldBlock => return Ok(None),
            Err(err) if err.kind() == ErrorKind::Interrupted => {}
            Err(err) => return Err(err),
        }
    }
}

/// Writes one frame; a frame the kernel refuses is dropped, as a switch
/// drops it.
fn pass_on(mut to: &File, frame: &[u8]) {
    let _ = to.write(frame);
}
