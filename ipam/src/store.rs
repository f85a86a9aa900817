//! Where the state lives, behind one type with two backends:
//!
//! - **the local state directory** (the default; [`local`]): one JSON file,
//!   changed under `flock` by atomic rename. One host.
//! - **etcd** ([`etcd`], `--store etcd://HOST:PORT[,...]` or
//!   `$TAPSWITCH_STORE`): the same JSON document in one etcd key, changed by
//!   compare-and-swap transactions, so several hosts share the networks and
//!   one address pool and never hand out an address twice.
//!
//! Every command goes through [`Store`]: [`load`](Store::load) to read,
//! [`update`](Store::update) for a quick change (retried on a conflicting
//! write), [`lock`](Store::lock) for a change with slow work in the middle
//! (building a container), which excludes every other writer until
//! [`commit`](Transaction::commit) or drop. The rules themselves live in
//! [`crate::state`]; the backends only keep the document.
//!
//! Local directory: `--state-dir` or `$TAPSWITCH_STATE_DIR`, else
//! `/var/lib/tapswitch` for root and `$XDG_DATA_HOME/tapswitch` (default
//! `~/.local/share`) for other users.

pub mod etcd;
pub mod local;

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::{Duration, Instant, SystemTime};

use crate::clock::rfc3339;
use crate::error::{Error, Result};
use crate::etcd::{Client, LeaseId, Revision};
use crate::network::Network;
use crate::state::{FORMAT_VERSION, Predefined, State};

use self::etcd::EtcdState;
use self::local::LocalDir;
pub use self::local::STATE_FILE;

/// Overrides the state directory (like `--state-dir`).
pub const STATE_DIR_ENV: &str = "TAPSWITCH_STATE_DIR";
/// Chooses the store (like `--store`): `etcd://HOST:PORT[,HOST:PORT...]`.
pub const STORE_ENV: &str = "TAPSWITCH_STORE";

/// The state directory to use: `flag` (from `--state-dir`), else
/// `$TAPSWITCH_STATE_DIR`, else the default for this user.
pub fn state_dir(flag: Option<&Path>) -> PathBuf {
    if let Some(dir) = flag {
        return dir.to_path_buf();
    }
    if let Some(dir) = std::env::var_os(STATE_DIR_ENV).filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    local::default_dir()
}

/// A shared store's address, as `--store` gives it:
/// `etcd://HOST:PORT[,HOST:PORT...][/PREFIX/]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdUrl {
    /// `HOST:PORT` of each etcd member, tried in order.
    pub endpoints: Vec<String>,
    /// Every key of this store starts with it (default `/tapswitch/`).
    pub prefix: String,
}

impl FromStr for EtcdUrl {
    type Err = Error;

    fn from_str(given: &str) -> Result<EtcdUrl> {
        let bad = || Error::BadStoreUrl {
            given: given.to_string(),
        };
        let rest = given.strip_prefix("etcd://").ok_or_else(bad)?;
        let (hosts, path) = match rest.find('/') {
            Some(at) => rest.split_at(at),
            None => (rest, ""),
        };
        let endpoints: Vec<String> = hosts.split(',').map(str::to_string).collect();
        let valid = |e: &String| {
            e.rsplit_once(':').is_some_and(|(host, port)| {
                !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p != 0)
            })
        };
        if !endpoints.iter().all(valid) {
            return Err(bad());
        }
        let prefix = match path.trim_matches('/') {
            "" => etcd::DEFAULT_PREFIX.to_string(),
            inner => format!("/{inner}/"),
        };
        Ok(EtcdUrl { endpoints, prefix })
    }
}

/// Where the state is kept, ready to use.
#[derive(Debug, Clone)]
pub struct Store {
    backend: Backend,
}

#[derive(Debug, Clone)]
enum Backend {
    Local(LocalDir),
    Etcd(EtcdState),
}

/// The state, read under the writers' lock. Change `state`, then
/// [`commit`](Transaction::commit); dropping it instead changes nothing.
#[derive(Debug)]
pub struct Transaction<'a> {
    store: &'a Store,
    guard: Guard,
    pub state: State,
}

/// What keeps other writers out until a transaction ends.
#[derive(Debug)]
enum Guard {
    /// The state directory's flock, dropped with the file.
    Flock { _lock: File },
    /// etcd: the revision read (for compare-and-swap) and, for
    /// [`Store::lock`], the lock key's revision and lease.
    EtcdRead { read_at: Revision },
    EtcdLock {
        read_at: Revision,
        lock_revision: Revision,
        lease: LeaseId,
    },
}

impl Store {
    /// Opens (creating if needed) the state directory `dir`. A new directory
    /// gets a state with the predefined networks, so their ids are stable
    /// from the first command on.
    pub fn open(dir: impl Into<PathBuf>) -> Result<Store> {
        let local = LocalDir::open(dir.into(), fresh_state)?;
        Ok(Store {
            backend: Backend::Local(local),
        })
    }

    /// Connects to the shared store at `url` with `client`'s timeouts; a
    /// store with no state yet gets the predefined networks, as a new
    /// directory does. Fails with one line if no endpoint answers.
    pub fn open_etcd_with(url: &EtcdUrl, client: Client) -> Result<Store> {
        let shared = EtcdState::open(client, url.prefix.clone(), fresh_state)?;
        Ok(Store {
            backend: Backend::Etcd(shared),
        })
    }

    /// [`open_etcd_with`](Store::open_etcd_with) with the default timeouts.
    pub fn open_etcd(url: &EtcdUrl) -> Result<Store> {
        Store::open_etcd_with(url, Client::new(url.endpoints.clone()))
    }

    /// Whether several hosts share this store (overlay networks need one).
    pub fn is_shared(&self) -> bool {
        matches!(self.backend, Backend::Etcd(_))
    }

    /// The etcd client and key prefix of a shared store.
    pub fn etcd(&self) -> Option<(&Client, &str)> {
        match &self.backend {
            Backend::Etcd(shared) => Some((&shared.client, &shared.prefix)),
            Backend::Local(_) => None,
        }
    }

    /// The etcd key that holds the whole state, for a shared store (what
    /// a reader that follows every change watches).
    pub fn state_key(&self) -> Option<String> {
        match &self.backend {
            Backend::Etcd(shared) => Some(shared.state_key()),
            Backend::Local(_) => None,
        }
    }

    /// The state directory, for a local store.
    pub fn dir(&self) -> Option<&Path> {
        match &self.backend {
            Backend::Local(local) => Some(&local.dir),
            Backend::Etcd(_) => None,
        }
    }

    /// The state file, for a local store.
    pub fn state_path(&self) -> Option<PathBuf> {
        match &self.backend {
            Backend::Local(local) => Some(local.state_path()),
            Backend::Etcd(_) => None,
        }
    }

    /// `the state directory /var/lib/tapswitch` or `etcd://a:2379/tapswitch/`.
    pub fn describe(&self) -> String {
        match &self.backend {
            Backend::Local(local) => format!("the state directory {}", local.dir.display()),
            Backend::Etcd(shared) => shared.describe(),
        }
    }

    /// The current state, without taking the lock (it may be outdated the
    /// moment it returns; use [`lock`](Store::lock) to change it).
    pub fn load(&self) -> Result<State> {
        match &self.backend {
            Backend::Local(local) => local.load(),
            Backend::Etcd(shared) => Ok(shared.load()?.0),
        }
    }

    /// One network, e.g. for `tapswitch serve --network NAME` to learn its
    /// gateway ([`Network::gateway_cidr`]).
    pub fn network(&self, name: &str) -> Result<Network> {
        self.load()?.network(name).cloned()
    }

    /// Takes the writers' lock (waiting for it) and reads the state.
    pub fn lock(&self) -> Result<Transaction<'_>> {
        let (state, guard) = match &self.backend {
            Backend::Local(local) => {
                let lock = local.take_lock()?;
                (local.load()?, Guard::Flock { _lock: lock })
            }
            Backend::Etcd(shared) => shared.lock()?,
        };
        Ok(Transaction {
            store: self,
            guard,
            state,
        })
    }

    /// Runs `change` on the state and saves the result if it succeeds.
    /// Locally under the lock; on etcd by compare-and-swap, running
    /// `change` again on the newer state when another writer got there
    /// first (so `change` must not have side effects).
    pub fn update<T>(&self, mut change: impl FnMut(&mut State) -> Result<T>) -> Result<T> {
        let Backend::Etcd(shared) = &self.backend else {
            let mut tx = self.lock()?;
            let out = change(&mut tx.state)?;
            tx.commit()?;
            return Ok(out);
        };
        let started = Instant::now();
        let mut attempt = 0;
        loop {
            attempt += 1;
            let (state, read_at) = shared.load()?;
            let mut tx = Transaction {
                store: self,
                guard: Guard::EtcdRead { read_at },
                state,
            };
            let out = change(&mut tx.state)?;
            match tx.commit() {
                Err(Error::Conflict { .. }) if started.elapsed() < etcd::LOCK_WAIT => {
                    back_off(attempt);
                }
                result => return result.map(|()| out),
            }
        }
    }
}

impl Transaction<'_> {
    /// Saves the state and releases the lock. A state that fails its own
    /// consistency check is refused rather than written. On etcd, a state
    /// that changed since it was read is not overwritten: that is
    /// [`Error::Conflict`].
    pub fn commit(mut self) -> Result<()> {
        if let Err(detail) = self.state.check() {
            return Err(Error::Corrupt {
                path: self.where_saved(),
                detail: format!("refusing to save an inconsistent state: {detail}"),
            });
        }
        let (shared, read_at, lock) = match (&self.store.backend, &self.guard) {
            (Backend::Local(local), _) => return local.write(&self.state),
            (Backend::Etcd(shared), Guard::EtcdRead { read_at }) => (shared, *read_at, None),
            (
                Backend::Etcd(shared),
                Guard::EtcdLock {
                    read_at,
                    lock_revision,
                    ..
                },
            ) => (shared, *read_at, Some(*lock_revision)),
            (Backend::Etcd(_), Guard::Flock { .. }) => {
                unreachable!("etcd transactions hold no flock")
            }
        };
        let written = shared.write_if(&self.state, read_at, lock)?;
        self.release();
        if written {
            Ok(())
        } else {
            Err(Error::Conflict {
                endpoints: shared.client.endpoints().join(", "),
            })
        }
    }

    fn where_saved(&self) -> PathBuf {
        match &self.store.backend {
            Backend::Local(local) => local.state_path(),
            Backend::Etcd(shared) => PathBuf::from(shared.describe()),
        }
    }

    /// Gives back an etcd lock now rather than when its lease runs out.
    fn release(&mut self) {
        if let (Backend::Etcd(shared), Guard::EtcdLock { lease, .. }) =
            (&self.store.backend, &mut self.guard)
        {
            let lease = std::mem::take(lease);
            if lease != 0
                && let Err(err) = shared.unlock(lease)
            {
                // The lease runs out by itself; others wait at most that long.
                log::warn!(
                    "cannot give back the store lock now ({err}); it frees itself within {}s",
                    etcd::LOCK_TTL.as_secs()
                );
            }
        }
    }
}

impl Drop for Transaction<'_> {
    fn drop(&mut self) {
        self.release();
    }
}

/// A new store's state: the predefined networks with fresh ids.
fn fresh_state() -> Result<State> {
    Ok(State::new(Predefined {
        bridge_id: random_id()?,
        host_id: random_id()?,
        none_id: random_id()?,
        created: now(),
    }))
}

/// Waits a little before retrying a conflicting write, longer each time,
/// with jitter so that two hosts that collided do not collide again.
fn back_off(attempt: u32) {
    let jitter = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos() % 5_000_000);
    let base = Duration::from_millis(2 * u64::from(attempt.min(50)));
    std::thread::sleep(base + Duration::from_nanos(u64::from(jitter)));
}

/// Reads a state document; anything unexpected is an error made by
/// `corrupt` (naming the file or key), never silently replaced.
fn parse(text: &[u8], corrupt: impl Fn(String) -> Error) -> Result<State> {
    let value: serde_json::Value =
        serde_json::from_slice(text).map_err(|e| corrupt(e.to_string()))?;
    let version = value
        .get("version")
        .and_then(serde_json::Value::as_u64)
        .ok_or_else(|| corrupt("no \"version\" number".to_string()))?;
    if version > u64::from(FORMAT_VERSION) {
        return Err(Error::NewerVersion {
            path: PathBuf::new(),
            found: u32::try_from(version).unwrap_or(u32::MAX),
            supported: FORMAT_VERSION,
        });
    }
    let mut value = value;
    if let Some(networks) = value
        .get_mut("networks")
        .and_then(serde_json::Value::as_array_mut)
    {
        networks
            .iter_mut()
            .for_each(crate::overlay::config::upgrade_legacy_mtu);
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
mod tests;
