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
//!
//! Where: `--state-dir` or `$TAPSWITCH_STATE_DIR`, else `/var/lib/tapswitch`
//! for root and `$XDG_STATE_HOME/tapswitch` (default `~/.local/state`) for
//! other users.

use std::fs::{self, File};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::clock::rfc3339;
use crate::error::{Error, Result};
use crate::network::Network;
use crate::state::{FORMAT_VERSION, Predefined, State};

/// Overrides the state directory (like `--state-dir`).
pub const STATE_DIR_ENV: &str = "TAPSWITCH_STATE_DIR";
pub const STATE_FILE: &str = "state.json";
const LOCK_FILE: &str = "state.lock";
const TMP_FILE: &str = "state.json.tmp";

/// The state directory to use: `flag` (from `--state-dir`), else
/// `$TAPSWITCH_STATE_DIR`, else the default for this user.
pub fn state_dir(flag: Option<&Path>) -> PathBuf {
    if let Some(dir) = flag {
        return dir.to_path_buf();
    }
    if let Some(dir) = std::env::var_os(STATE_DIR_ENV).filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    if is_root() {
        return PathBuf::from("/var/lib/tapswitch");
    }
    let base = std::env::var_os("XDG_STATE_HOME")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state")))
        .unwrap_or_else(std::env::temp_dir);
    base.join("tapswitch")
}

fn is_root() -> bool {
    // /proc/self belongs to the effective uid; this keeps libc out of ipam.
    fs::metadata("/proc/self").is_ok_and(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
}

/// A state directory, ready to use.
#[derive(Debug, Clone)]
pub struct Store {
    dir: PathBuf,
}

/// The state, read under the writers' lock. Change `state`, then
/// [`commit`](Transaction::commit); dropping it instead changes nothing.
#[derive(Debug)]
pub struct Transaction<'a> {
    store: &'a Store,
    /// Holds the flock until the transaction ends.
    _lock: File,
    pub state: State,
}

impl Store {
    /// Opens (creating if needed) the state directory `dir`. A new directory
    /// gets a state with the predefined networks, so their ids are stable
    /// from the first command on.
    pub fn open(dir: impl Into<PathBuf>) -> Result<Store> {
        let store = Store { dir: dir.into() };
        fs::create_dir_all(&store.dir).map_err(|source| Error::Io {
            action: "cannot create the state directory",
            path: store.dir.clone(),
            source,
        })?;
        if !store.state_path().exists() {
            let lock = store.take_lock()?;
            // Another command may have created it while we waited.
            if !store.state_path().exists() {
                let now = rfc3339(SystemTime::now());
                let fresh = State::new(Predefined {
                    bridge_id: random_id()?,
                    host_id: random_id()?,
                    none_id: random_id()?,
                    created: now,
                });
                store.write(&fresh)?;
            }
            drop(lock);
        }
        Ok(store)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn state_path(&self) -> PathBuf {
        self.dir.join(STATE_FILE)
    }

    /// The current state, without taking the lock (it may be outdated the
    /// moment it returns; use [`lock`](Store::lock) to change it).
    pub fn load(&self) -> Result<State> {
        let path = self.state_path();
        let mut text = Vec::new();
        File::open(&path)
            .and_then(|mut f| f.read_to_end(&mut text))
            .map_err(|source| Error::Io {
                action: "cannot read the state file",
                path: path.clone(),
                source,
            })?;
        parse(&path, &text)
    }

    /// One network, e.g. for `tapswitch serve --network NAME` to learn its
    /// gateway ([`Network::gateway_cidr`]).
    pub fn network(&self, name: &str) -> Result<Network> {
        self.load()?.network(name).cloned()
    }

    /// Takes the writers' lock (waiting for it) and reads the state.
    pub fn lock(&self) -> Result<Transaction<'_>> {
        let lock = self.take_lock()?;
        let state = self.load()?;
        Ok(Transaction {
            store: self,
            _lock: lock,
            state,
        })
    }

    /// Runs `change` on the state under the lock and saves the result if it
    /// succeeds.
    pub fn update<T>(&self, change: impl FnOnce(&mut State) -> Result<T>) -> Result<T> {
        let mut tx = self.lock()?;
        let out = change(&mut tx.state)?;
        tx.commit()?;
        Ok(out)
    }

    fn take_lock(&self) -> Result<File> {
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
    fn write(&self, state: &State) -> Result<()> {
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

impl Transaction<'_> {
    /// Saves the state and releases the lock. A state that fails its own
    /// consistency check is refused rather than written.
    pub fn commit(self) -> Result<()> {
        if let Err(detail) = self.state.check() {
            return Err(Error::Corrupt {
                path: self.store.state_path(),
                detail: format!("refusing to save an inconsistent state: {detail}"),
            });
        }
        self.store.write(&self.state)
    }
}

/// Reads a state file's text; anything unexpected is [`Error::Corrupt`]
/// naming the file, never silently replaced.
fn parse(path: &Path, text: &[u8]) -> Result<State> {
    let corrupt = |detail: String| Error::Corrupt {
        path: path.to_path_buf(),
        detail,
    };
    let value: serde_json::Value =
        serde_json::from_slice(text).map_err(|e| corrupt(e.to_string()))?;
    let version = value
        .get("version")
        .and_then(serde_json::Value::as_u64)
        .ok_or_else(|| corrupt("no \"version\" number".to_string()))?;
    if version > u64::from(FORMAT_VERSION) {
        return Err(Error::NewerVersion {
            path: path.to_path_buf(),
            found: u32::try_from(version).unwrap_or(u32::MAX),
            supported: FORMAT_VERSION,
        });
    }
    let state: State = serde_json::from_value(value).map_err(|e| corrupt(e.to_string()))?;
    state.check().map_err(corrupt)?;
    Ok(state)
}

/// 64 random hex digits, like Docker's ids.
pub fn random_id() -> Result<String> {
    let path = Path::new("/dev/urandom");
    let mut bytes = [0u8; 32];
    File::open(path)
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(|source| Error::Io {
            action: "cannot read random bytes from",
            path: path.to_path_buf(),
            source,
        })?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// The current time as the state file writes it.
pub fn now() -> String {
    rfc3339(SystemTime::now())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::network::NetworkSpec;
    use crate::state::Container;

    fn container(name: &str) -> Container {
        Container {
            name: name.into(),
            id: random_id().unwrap(),
            network: "bridge".into(),
            created: now(),
            boot_id: "boot".into(),
            ..Default::default()
        }
    }

    #[test]
    fn a_new_directory_has_the_predefined_networks_with_stable_ids() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().join("sub/dir")).unwrap();
        let first = store.load().unwrap();
        let again = Store::open(store.dir()).unwrap().load().unwrap();
        assert_eq!(first, again);
        let bridge = store.network("bridge").unwrap();
        assert_eq!(bridge.gateway_cidr().as_deref(), Some("172.17.0.1/16"));
        assert_eq!(bridge.id.len(), 64);
        assert_ne!(bridge.id, first.network("host").unwrap().id);
    }

    #[test]
    fn changes_persist_and_failed_changes_do_not() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let ip = store
            .update(|s| Ok(s.add_container(container("a"), None)?.ipv4))
            .unwrap();
        assert_eq!(ip, Some("172.17.0.2".parse().unwrap()));
        let err = store.update(|s| {
            s.add_container(container("b"), None)?;
            s.create_network(
                "bad",
                random_id()?,
                now(),
                &NetworkSpec {
                    subnet: "172.17.5.0/24".into(),
                    ..NetworkSpec::default()
                },
            )
            .map(|_| ())
        });
        assert!(matches!(err, Err(Error::Overlap { .. })));
        let state = Store::open(dir.path()).unwrap().load().unwrap();
        assert_eq!(state.containers.len(), 1, "b must not have been saved");
        assert!(!dir.path().join(TMP_FILE).exists());
    }

    #[test]
    fn the_file_is_readable_json() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store
            .update(|s| s.add_container(container("web"), None).map(|_| ()))
            .unwrap();
        let text = fs::read_to_string(store.state_path()).unwrap();
        assert!(text.contains("\"subnet\": \"172.17.0.0/16\""), "{text}");
        assert!(text.contains("\"ipv4\": \"172.17.0.2\""), "{text}");
        assert!(text.contains("\"mac\": \"02:42:ac:11:00:02\""), "{text}");
    }

    #[test]
    fn a_corrupt_file_is_named_and_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let path = store.state_path();
        fs::write(&path, "{\"version\": 1, \"networks\": [").unwrap();
        let err = store.lock().unwrap_err().to_string();
        assert!(
            err.starts_with(&format!("the state file {} is corrupt", path.display())),
            "{err}"
        );
        assert!(err.contains("will not overwrite it"), "{err}");
        assert!(Store::open(dir.path()).unwrap().load().is_err());
        assert_eq!(
            fs::read_to_string(&path).unwrap(),
            "{\"version\": 1, \"networks\": ["
        );

        // Valid JSON that breaks the rules is corrupt too.
        let mut state = Store::open(tempfile::tempdir().unwrap().path())
            .unwrap()
            .load()
            .unwrap();
        state.networks.retain(|n| n.name != "bridge");
        fs::write(&path, serde_json::to_vec(&state).unwrap()).unwrap();
        let err = store.load().unwrap_err().to_string();
        assert!(
            err.contains("the predefined network bridge is missing"),
            "{err}"
        );
    }

    #[test]
    fn a_newer_format_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        fs::write(store.state_path(), r#"{"version": 99}"#).unwrap();
        assert!(matches!(
            store.load(),
            Err(Error::NewerVersion { found: 99, .. })
        ));
    }

    #[test]
    fn explicit_dir_wins() {
        assert_eq!(state_dir(Some(Path::new("/x/y"))), PathBuf::from("/x/y"));
    }
}
