//! Live per-port capture (`serve --capture DIR`): a pcapng file per port,
//! `DIR/<port>.pcapng`, with what the port received and what it sent, the
//! direction of each frame in `epb_flags` (inbound = 1, outbound = 2), as
//! tcpdump and Wireshark show it.
//!
//! Capture must not slow forwarding more than it must, so the frame path
//! never touches the disk:
//!
//! - [`PortCapture::record`] first reads one atomic flag; a port that is not
//!   capturing pays that load and nothing else;
//! - a capturing port appends the encoded block to an in-memory buffer under
//!   a mutex held for a copy of the frame (a batch can take the lock once:
//!   [`PortCapture::record_batch`]);
//! - one writer thread per [`CaptureDir`] swaps the buffers out and writes
//!   them, when one passes [`WAKE_BYTES`] or every [`FLUSH_INTERVAL`],
//!   whichever is first, so a file is at most that far behind;
//! - if the disk cannot keep up and a buffer reaches [`MAX_PENDING_BYTES`],
//!   further frames are not recorded but counted ([`CaptureStats::dropped`],
//!   like tcpdump's "dropped by kernel"), rather than making the switch wait.
//!
//! Capture can be started and stopped per port at any time
//! ([`PortCapture::start`], [`PortCapture::stop`]); the file stays open and
//! simply gets no frames while stopped. A port added while the switch runs
//! gets its file from [`CaptureDir::add_port`]. A port removed and added
//! again under the same name continues its file.
//!
//! Files are created with mode 0600: captures hold other people's traffic.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::frame::Direction;
use super::pcapng::{write_interface, write_packet, write_section_header};

/// A port's buffer is handed to the writer once it holds this much.
pub const WAKE_BYTES: usize = 256 * 1024;

/// ... and in any case this often, so files keep up with a quiet port.
pub const FLUSH_INTERVAL: Duration = Duration::from_millis(200);

/// Beyond this much unwritten data per port, frames are dropped from the
/// capture (never from the switch).
pub const MAX_PENDING_BYTES: usize = 16 * 1024 * 1024;

/// The time for a capture record: nanoseconds since the Unix epoch.
pub fn wall_clock_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// The capture directory and its writer thread.
#[derive(Debug)]
pub struct CaptureDir {
    dir: PathBuf,
    shared: Arc<Shared>,
    writer: Option<JoinHandle<()>>,
}

#[derive(Debug, Default)]
struct Shared {
    state: Mutex<WriterState>,
    /// Wakes the writer.
    wake: Condvar,
    /// Tells `flush` callers that a flush round finished.
    done: Condvar,
}

#[derive(Debug, Default)]
struct WriterState {
    /// Ports being captured (or stopped, but present), by name.
    ports: HashMap<String, Arc<PortCapture>>,
    /// Ports removed: the writer writes out what they still hold, then
    /// closes their files. Kept so a port added again continues its file.
    retired: HashMap<String, Arc<PortCapture>>,
    /// A flush was asked for; the writer clears it and bumps `flushed`.
    flush_requested: bool,
    flushed: u64,
    stop: bool,
}

/// What a port's capture has done.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CaptureStats {
    pub frames: u64,
    pub bytes: u64,
    /// Frames not recorded because the writer was too far behind.
    pub dropped: u64,
    /// Write errors (the capture stops at the first one).
    pub errors: u64,
}

/// One port's capture. Shared by every thread that handles the port's frames.
#[derive(Debug)]
pub struct PortCapture {
    name: String,
    path: PathBuf,
    enabled: AtomicBool,
    pending: Mutex<Vec<u8>>,
    /// Written by the writer thread only (closed once the port is retired).
    file: Mutex<Option<File>>,
    shared: Arc<Shared>,
    frames: AtomicU64,
    bytes: AtomicU64,
    dropped: AtomicU64,
    errors: AtomicU64,
}

impl CaptureDir {
    /// Uses `dir` (created if missing) and starts the writer thread.
    pub fn open(dir: &Path) -> io::Result<CaptureDir> {
        fs::create_dir_all(dir)?;
        let shared = Arc::new(Shared::default());
        let writer = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name("capture".into())
                .spawn(move || writer_loop(&shared))?
        };
        Ok(CaptureDir {
            dir: dir.to_path_buf(),
            shared,
            writer: Some(writer),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The file a port's capture goes to.
    pub fn path_for(&self, port: &str) -> PathBuf {
        self.dir.join(format!("{port}.pcapng"))
    }

    /// Creates `DIR/<port>.pcapng` (a section and interface header) and
    /// returns the port's capture, recording if `enabled`. A port removed
    /// earlier in this directory's life continues its file.
    pub fn add_port(&self, port: &str, enabled: bool) -> io::Result<Arc<PortCapture>> {
        let path = self.path_for(port);
        let mut state = self.shared.lock();
        if state.ports.contains_key(port) {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("port {port} is already being captured"),
            ));
        }
        let capture = match state.retired.remove(port) {
            Some(capture) => {
                let mut file = capture.lock_file();
                if file.is_none() {
                    *file = Some(open_capture_file(&path, port, false)?);
                }
                drop(file);
                capture
            }
            None => Arc::new(PortCapture {
                name: port.to_string(),
                file: Mutex::new(Some(open_capture_file(&path, port, true)?)),
                path,
                enabled: AtomicBool::new(false),
                pending: Mutex::new(Vec::new()),
                shared: self.shared.clone(),
                frames: AtomicU64::new(0),
                bytes: AtomicU64::new(0),
                dropped: AtomicU64::new(0),
                errors: AtomicU64::new(0),
            }),
        };
        capture.enabled.store(enabled, Relaxed);
        state.ports.insert(port.to_string(), capture.clone());
        Ok(capture)
    }

    /// Stops capturing `port` and closes its file once written out.
    pub fn remove_port(&self, port: &str) {
        let mut state = self.shared.lock();
        if let Some(capture) = state.ports.remove(port) {
            capture.stop();
            state.retired.insert(port.to_string(), capture);
            self.shared.wake.notify_one();
        }
    }

    /// Writes out everything recorded so far and waits until it is written.
    pub fn flush(&self) {
        let mut state = self.shared.lock();
        let target = state.flushed + 1;
        state.flush_requested = true;
        self.shared.wake.notify_one();
        while state.flushed < target && !state.stop {
            state = self
                .shared
                .done
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }
}

impl Drop for CaptureDir {
    /// Writes out what is left and stops the writer.
    fn drop(&mut self) {
        self.shared.lock().stop = true;
        self.shared.wake.notify_all();
        self.shared.done.notify_all();
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
    }
}

/// Creates a capture file with mode 0600 and its headers, or (`new` false)
/// opens an existing one to continue it.
fn open_capture_file(path: &Path, port: &str, new: bool) -> io::Result<File> {
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(new)
        .append(!new)
        .mode(0o600)
        .open(path)?;
    if new {
        let mut header = Vec::new();
        write_section_header(&mut header);
        write_interface(&mut header, port);
        file.write_all(&header)?;
    }
    Ok(file)
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, WriterState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl PortCapture {
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The fast-path check: is this port capturing?
    #[inline]
    pub fn is_enabled(&self) -> bool {
        self.enabled.load(Relaxed)
    }

    pub fn start(&self) {
        self.enabled.store(true, Relaxed);
    }

    pub fn stop(&self) {
        self.enabled.store(false, Relaxed);
    }

    /// Records one frame that went `direction` through the port at
    /// `timestamp_ns` (since the Unix epoch). Costs one atomic load when
    /// the port is not capturing.
    #[inline]
    pub fn record(&self, direction: Direction, timestamp_ns: u64, frame: &[u8]) {
        if self.is_enabled() {
            self.record_batch(direction, timestamp_ns, std::iter::once(frame));
        }
    }

    /// Records several frames under one lock.
    pub fn record_batch<'a>(
        &self,
        direction: Direction,
        timestamp_ns: u64,
        frames: impl IntoIterator<Item = &'a [u8]>,
    ) {
        if !self.is_enabled() {
            return;
        }
        let mut pending = self.lock_pending();
        let (mut count, mut bytes, mut dropped) = (0, 0, 0);
        for frame in frames {
            if pending.len() + frame.len() > MAX_PENDING_BYTES {
                dropped += 1;
                continue;
            }
            write_packet(&mut pending, 0, timestamp_ns, frame, Some(direction));
            count += 1;
            bytes += frame.len() as u64;
        }
        let wake = pending.len() >= WAKE_BYTES;
        drop(pending);
        self.frames.fetch_add(count, Relaxed);
        self.bytes.fetch_add(bytes, Relaxed);
        if dropped > 0 {
            self.dropped.fetch_add(dropped, Relaxed);
        }
        if wake {
            self.shared.wake.notify_one();
        }
    }

    pub fn stats(&self) -> CaptureStats {
        CaptureStats {
            frames: self.frames.load(Relaxed),
            bytes: self.bytes.load(Relaxed),
            dropped: self.dropped.load(Relaxed),
            errors: self.errors.load(Relaxed),
        }
    }

    fn lock_pending(&self) -> std::sync::MutexGuard<'_, Vec<u8>> {
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn lock_file(&self) -> std::sync::MutexGuard<'_, Option<File>> {
        self.file.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes the pending bytes (leaving an empty buffer of the same size).
    fn take_pending(&self) -> Vec<u8> {
        let mut pending = self.lock_pending();
        let capacity = pending.capacity().min(2 * WAKE_BYTES);
        std::mem::replace(&mut *pending, Vec::with_capacity(capacity))
    }
}

/// The writer thread: wakes when a buffer is full, when asked to flush or
/// stop, or every FLUSH_INTERVAL, and writes out every port's buffer.
fn writer_loop(shared: &Shared) {
    let mut state = shared.lock();
    loop {
        if !state.stop && !state.flush_requested {
            state = shared
                .wake
                .wait_timeout(state, FLUSH_INTERVAL)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        let stop = state.stop;
        let flush = std::mem::take(&mut state.flush_requested);
        // Write without holding the lock: add_port and remove_port must not
        // wait for the disk.
        let active: Vec<Arc<PortCapture>> = state.ports.values().cloned().collect();
        let retired: Vec<Arc<PortCapture>> = state.retired.values().cloned().collect();
        drop(state);
        for capture in active.iter().chain(&retired) {
            write_out(capture);
        }
        state = shared.lock();
        for capture in retired {
            // Unless it was added back meanwhile, its file is done.
            if state
                .retired
                .get(&capture.name)
                .is_some_and(|c| Arc::ptr_eq(c, &capture))
            {
                write_out(&capture);
                capture.lock_file().take();
            }
        }
        if flush {
            state.flushed += 1;
            shared.done.notify_all();
        }
        if stop {
            return;
        }
    }
}

fn write_out(capture: &PortCapture) {
    let chunk = capture.take_pending();
    if chunk.is_empty() {
        return;
    }
    let mut file = capture.lock_file();
    let Some(file) = file.as_mut() else {
        return;
    };
    if let Err(err) = file.write_all(&chunk) {
        if capture.errors.fetch_add(1, Relaxed) == 0 {
            log::warn!(
                "capture of port {} stopped: cannot write {}: {err}",
                capture.name,
                capture.path.display()
            );
        }
        capture.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::reader::PcapReader;

    struct TempDir(PathBuf);

    impl TempDir {
        fn new(tag: &str) -> TempDir {
            let dir = std::env::temp_dir()
                .join(format!("tapswitch-capture-{tag}-{}", std::process::id()));
            let _ = fs::remove_dir_all(&dir);
            TempDir(dir)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    /// A capture directory in a fresh temp dir. Bind both, the directory
    /// last, so it is dropped (and written out) before the temp dir goes.
    fn capture_dir(tag: &str) -> (TempDir, CaptureDir) {
        let tmp = TempDir::new(tag);
        let dir = CaptureDir::open(&tmp.0).unwrap();
        (tmp, dir)
    }

    fn frames_of(path: &Path) -> Vec<(u64, Option<Direction>, Vec<u8>)> {
        let file = File::open(path).unwrap();
        let mut reader = PcapReader::new(io::BufReader::new(file)).unwrap();
        let mut out = Vec::new();
        while let Some(f) = reader.next_frame().unwrap() {
            out.push((f.timestamp_ns, f.direction, f.data.to_vec()));
        }
        out
    }

    #[test]
    fn records_both_directions_and_reads_back() {
        let (_tmp, dir) = capture_dir("dirs");
        let p1 = dir.add_port("p1", true).unwrap();
        p1.record(Direction::Inbound, 1_000, &[1; 60]);
        p1.record_batch(
            Direction::Outbound,
            2_000,
            [&[2u8; 64][..], &[3u8; 65_000][..]],
        );
        dir.flush();
        let frames = frames_of(p1.path());
        assert_eq!(
            frames,
            vec![
                (1_000, Some(Direction::Inbound), vec![1; 60]),
                (2_000, Some(Direction::Outbound), vec![2; 64]),
                (2_000, Some(Direction::Outbound), vec![3; 65_000]),
            ]
        );
        assert_eq!(p1.stats().frames, 3);
        let mode = fs::metadata(p1.path()).unwrap().permissions();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
            0o600
        );
    }

    #[test]
    fn stopped_ports_record_nothing_until_started() {
        let (_tmp, dir) = capture_dir("startstop");
        let p1 = dir.add_port("p1", false).unwrap();
        p1.record(Direction::Inbound, 1, &[1; 60]);
        p1.start();
        p1.record(Direction::Inbound, 2, &[2; 60]);
        p1.stop();
        p1.record(Direction::Inbound, 3, &[3; 60]);
        dir.flush();
        let times: Vec<u64> = frames_of(p1.path()).iter().map(|f| f.0).collect();
        assert_eq!(times, vec![2]);
    }

    #[test]
    fn a_port_added_again_continues_its_file() {
        let (_tmp, dir) = capture_dir("readd");
        let p1 = dir.add_port("p1", true).unwrap();
        p1.record(Direction::Inbound, 1, &[1; 60]);
        assert!(dir.add_port("p1", true).is_err(), "already captured");
        dir.remove_port("p1");
        dir.flush();
        let p1 = dir.add_port("p1", true).unwrap();
        p1.record(Direction::Outbound, 2, &[2; 60]);
        let p2 = dir.add_port("p2", true).unwrap();
        p2.record(Direction::Inbound, 3, &[3; 60]);
        drop(dir); // writes out what is left
        let times: Vec<u64> = frames_of(p1.path()).iter().map(|f| f.0).collect();
        assert_eq!(times, vec![1, 2]);
        assert_eq!(frames_of(p2.path()).len(), 1);
    }

    #[test]
    fn a_writer_far_behind_drops_from_the_capture_not_the_switch() {
        let (_tmp, dir) = capture_dir("full");
        let p1 = dir.add_port("p1", true).unwrap();
        // Hold the writer off by holding the file lock while recording: it
        // can take at most one buffer before it waits for the lock.
        let file = p1.lock_file();
        let big = vec![0u8; 60_000];
        for _ in 0..(2 * MAX_PENDING_BYTES / big.len() + 10) {
            p1.record(Direction::Inbound, 1, &big);
        }
        let stats = p1.stats();
        assert!(stats.dropped > 0, "{stats:?}");
        drop(file);
        dir.flush();
        assert_eq!(frames_of(p1.path()).len() as u64, stats.frames);
    }
}
