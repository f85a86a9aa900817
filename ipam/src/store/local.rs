//! The state directory: one human-readable JSON file, changed only under a
//! lock and only by atomic rename.
//!
//! ```text
//! <state dir>/
//!   state.json       networks and containers (see crate::state), pretty JSON
//!   state.lock       empty; flock()ed exclusively by every writer
//!   state.json.tmp   the next state.json while it is being written
//! ```
//!
//! Crash safety: a change is written to `state.json.tmp`, fsynced, renamed
//! over `state.json`, and the directory fsynced. rename(2) is atomic, so a
//! process killed at any moment leaves either the old or the new file, never
//! a torn one; a stale `.tmp` is simply overwritten by the next writer.
//!
//! Concurrency: writers hold an exclusive `flock` on `state.lock` from
//! reading the state to renaming the new one, so two commands never hand out
//! the same address. The kernel drops the lock when its holder dies, so a
//! killed writer never wedges the others. Readers need no lock: thanks to
//! the rename they always see a whole file.

use std::fs::{self, File};
use std::io::{Read, Write};
use std::os::unix::fs::DirBuilderExt;
use std::path::PathBuf;

use crate::error::{Error, Result};
use crate::state::State;

pub const STATE_FILE: &str = "state.json";
const LOCK_FILE: &str = "state.lock";
pub(super) const TMP_FILE: &str = "state.json.tmp";

/// A state directory.
#[derive(Debug, Clone)]
pub(super) struct LocalDir {
    pub(super) dir: PathBuf,
}

impl LocalDir {
    /// Creates the directory if needed; writes `fresh()` as the state if
    /// there is none yet.
    pub(super) fn open(dir: PathBuf, fresh: impl FnOnce() -> Result<State>) -> Result<LocalDir> {
        let local = LocalDir { dir };
        // 0700 for the directories it makes: another user has no business
        // reading who has which address (umask may narrow it further).
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&local.dir)
            .map_err(|source| Error::Io {
                action: "cannot create the state directory",
                path: local.dir.clone(),
                source,
            })?;
        if !local.state_path().exists() {
            let lock = local.take_lock()?;
            // Another command may have created it while we waited.
            if !local.state_path().exists() {
                local.write(&fresh()?)?;
            }
            drop(lock);
        }
        Ok(local)
    }

    pub(super) fn state_path(&self) -> PathBuf {
        self.dir.join(STATE_FILE)
    }

    pub(super) fn load(&self) -> Result<State> {
        let path = self.state_path();
        let mut text = Vec::new();
        File::open(&path)
            .and_then(|mut f| f.read_to_end(&mut text))
            .map_err(|source| Error::Io {
                action: "cannot read the state file",
                path: path.clone(),
                source,
            })?;
        super::parse(&text, |detail| Error::Corrupt {
            path: path.clone(),
            detail,
        })
        .map_err(|err| match err {
            Error::NewerVersion {
                found, supported, ..
            } => Error::NewerVersion {
                path: path.clone(),
                found,
                supported,
            },
            other => other,
        })
    }

    /// The writers' lock, held until the returned file is dropped.
    pub(super) fn take_lock(&self) -> Result<File> {
        let path = self.dir.join(LOCK_FILE);
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|source| Error::Io {
                action: "cannot open the lock file",
                path: path.clone(),
                source,
            })?;
        file.lock().map_err(|source| Error::Io {
            action: "cannot lock",
            path,
            source,
        })?;
        Ok(file)
    }

    /// tmp file, fsync, rename, fsync the directory: see the module docs.
    pub(super) fn write(&self, state: &State) -> Result<()> {
        let tmp = self.dir.join(TMP_FILE);
        let io = |action| {
            let path = tmp.clone();
            move |source| Error::Io {
                action,
                path,
                source,
            }
        };
        let mut text = serde_json::to_vec_pretty(state).map_err(|e| Error::Corrupt {
            path: self.state_path(),
            detail: format!("cannot encode the new state: {e}"),
        })?;
        text.push(b'\n');
        let mut file = File::create(&tmp).map_err(io("cannot create"))?;
        file.write_all(&text).map_err(io("cannot write"))?;
        file.sync_all().map_err(io("cannot sync"))?;
        drop(file);
        fs::rename(&tmp, self.state_path()).map_err(io("cannot rename into place"))?;
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(|source| Error::Io {
                action: "cannot sync the state directory",
                path: self.dir.clone(),
                source,
            })
    }
}

/// Whether this process runs as root.
pub(super) fn is_root() -> bool {
    // /proc/self belongs to the effective uid; this keeps libc out of ipam.
    fs::metadata("/proc/self").is_ok_and(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
}

/// The default state directory for this user (see `crate::store::state_dir`).
pub(super) fn default_dir() -> PathBuf {
    if is_root() {
        return PathBuf::from("/var/lib/tapswitch");
    }
    let base = std::env::var_os("XDG_DATA_HOME")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")))
        .unwrap_or_else(std::env::temp_dir);
    base.join("tapswitch")
}
