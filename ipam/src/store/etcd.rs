//! The shared store: the same state document as the local `state.json`,
//! kept in one etcd key, so every rule of [`crate::state`] (unique names, no
//! overlapping subnets, unique VNIs, one holder per address) holds across
//! hosts exactly as it holds on one.
//!
//! ```text
//! <prefix>state                        the State, JSON (same format as state.json)
//! <prefix>lock                         held by a long transaction (`Store::lock`); attached to a lease
//! <prefix>members/<network>/<ip>:<port> a switch's registration (see crate::membership); attached to its lease
//! ```
//!
//! The prefix is `/tapswitch/` unless the store URL gives a path
//! (`etcd://HOST:PORT/other/prefix/`).
//!
//! # Two ways to change the state
//!
//! - **Compare-and-swap** ([`Store::update`](super::Store::update)): read the
//!   document and its `mod_revision`, change it, and write it back in a
//!   transaction that only succeeds if the key's `mod_revision` is still the
//!   one read and nobody holds the lock; otherwise read again and retry.
//!   Two hosts allocating at once both compute "the lowest free address",
//!   but only one write lands; the other recomputes on the new document.
//! - **A lock** ([`Store::lock`](super::Store::lock)), for commands that do
//!   slow work between reading and saving (building a container): the lock
//!   key is created only if absent, attached to a lease of [`LOCK_TTL`], so
//!   a holder that dies frees it within that time, as the kernel drops a
//!   dead process's `flock`. The holder's final write compares both the
//!   state's `mod_revision` and the lock key's, so a holder whose lease ran
//!   out saves nothing ([`Error::Conflict`]).
//!
//! The document grows with the containers of every host; etcd's default
//! request limit (1.5 MiB) holds several thousand of them. One key also
//! means every change contends with every other: fine for commands run by
//! people and scripts, not for thousands of changes a second.

use std::time::{Duration, Instant};

use super::Guard;
use crate::error::{Error, Result};
use crate::etcd::{Client, Compare, EtcdError, LeaseId, Op, Revision};
use crate::state::State;

/// The key prefix when the store URL gives none.
pub const DEFAULT_PREFIX: &str = "/tapswitch/";
/// How long a dead lock holder can keep the others waiting.
pub const LOCK_TTL: Duration = Duration::from_secs(15);
/// How long [`Store::lock`](super::Store::lock) waits for the lock.
pub const LOCK_WAIT: Duration = Duration::from_secs(30);

/// The state document in etcd.
#[derive(Debug, Clone)]
pub(super) struct EtcdState {
    pub(super) client: Client,
    pub(super) prefix: String,
}

impl EtcdState {
    /// Connects, and writes `fresh()` as the state if there is none yet.
    pub(super) fn open(
        client: Client,
        prefix: String,
        fresh: impl FnOnce() -> Result<State>,
    ) -> Result<EtcdState> {
        let store = EtcdState { client, prefix };
        if store.client.get(store.state_key().as_bytes())?.0.is_none() {
            let text = encode(&fresh()?)?;
            // Created only if still absent: another host may have won.
            store.client.txn(
                &[Compare::ModRevision {
                    key: store.state_key().into_bytes(),
                    revision: 0,
                }],
                &[Op::Put {
                    key: store.state_key().into_bytes(),
                    value: text,
                    lease: None,
                }],
            )?;
        }
        Ok(store)
    }

    pub(super) fn state_key(&self) -> String {
        format!("{}state", self.prefix)
    }

    fn lock_key(&self) -> String {
        format!("{}lock", self.prefix)
    }

    /// `etcd://a:1,b:2/prefix/`, for messages.
    pub(super) fn describe(&self) -> String {
        format!(
            "etcd://{}{}",
            self.client.endpoints().join(","),
            self.prefix
        )
    }

    fn endpoints(&self) -> String {
        self.client.endpoints().join(", ")
    }

    /// The state and the revision it was last changed at.
    pub(super) fn load(&self) -> Result<(State, Revision)> {
        let (kv, _) = self.client.get(self.state_key().as_bytes())?;
        let Some(kv) = kv else {
            return Err(self.corrupt("the key is missing".to_string()));
        };
        let state =
            super::parse(&kv.value, |detail| self.corrupt(detail)).map_err(|err| match err {
                Error::NewerVersion {
                    found, supported, ..
                } => Error::NewerVersion {
                    path: self.describe().into(),
                    found,
                    supported,
                },
                other => other,
            })?;
        Ok((state, kv.mod_revision))
    }

    fn corrupt(&self, detail: String) -> Error {
        Error::CorruptKey {
            endpoints: self.endpoints(),
            key: self.state_key(),
            detail,
        }
    }

    /// Writes `state` if the document is still at `read_at` and the lock is
    /// as `lock` says (absent, or held by us at that revision). Returns
    /// whether it was written.
    pub(super) fn write_if(
        &self,
        state: &State,
        read_at: Revision,
        lock: Option<Revision>,
    ) -> Result<bool> {
        let compares = [
            Compare::ModRevision {
                key: self.state_key().into_bytes(),
                revision: read_at,
            },
            Compare::ModRevision {
                key: self.lock_key().into_bytes(),
                revision: lock.unwrap_or(0),
            },
        ];
        let put = Op::Put {
            key: self.state_key().into_bytes(),
            value: encode(state)?,
            lease: None,
        };
        Ok(self.client.txn(&compares, &[put])?)
    }

    /// Takes the lock (waiting up to [`LOCK_WAIT`]) and reads the state.
    pub(super) fn lock(&self) -> Result<(State, Guard)> {
        let lease = self.client.grant_lease(LOCK_TTL)?;
        let started = Instant::now();
        let mut attempt = 0;
        loop {
            let taken = self.client.txn(
                &[Compare::ModRevision {
                    key: self.lock_key().into_bytes(),
                    revision: 0,
                }],
                &[Op::Put {
                    key: self.lock_key().into_bytes(),
                    value: std::process::id().to_string().into_bytes(),
                    lease: Some(lease),
                }],
            );
            match taken {
                Ok(true) => {
                    // The wait used up part of the lease: start it afresh.
                    let _ = self.client.keep_alive(lease);
                    break;
                }
                Ok(false) if started.elapsed() < LOCK_WAIT => {
                    attempt += 1;
                    super::back_off(attempt);
                }
                Ok(false) => {
                    let _ = self.client.revoke_lease(lease);
                    return Err(Error::Locked {
                        endpoints: self.endpoints(),
                        waited: LOCK_WAIT.as_secs(),
                        ttl: LOCK_TTL.as_secs(),
                    });
                }
                Err(err) => {
                    let _ = self.client.revoke_lease(lease);
                    return Err(err.into());
                }
            }
        }
        let read = self
            .client
            .get(self.lock_key().as_bytes())
            .map_err(Error::from);
        let locked = read.and_then(|(kv, _)| {
            let kv = kv.filter(|kv| kv.lease == lease).ok_or(Error::Conflict {
                endpoints: self.endpoints(),
            })?;
            let (state, read_at) = self.load()?;
            Ok((state, read_at, kv.mod_revision))
        });
        match locked {
            Ok((state, read_at, lock_revision)) => Ok((
                state,
                Guard::EtcdLock {
                    read_at,
                    lock_revision,
                    lease,
                },
            )),
            Err(err) => {
                let _ = self.client.revoke_lease(lease);
                Err(err)
            }
        }
    }

    /// Gives the lock back (revoking its lease deletes the key).
    pub(super) fn unlock(&self, lease: LeaseId) -> std::result::Result<(), EtcdError> {
        self.client.revoke_lease(lease)
    }
}

fn encode(state: &State) -> Result<Vec<u8>> {
    let mut text = serde_json::to_vec_pretty(state).map_err(|e| Error::CorruptKey {
        endpoints: String::new(),
        key: String::new(),
        detail: format!("cannot encode the new state: {e}"),
    })?;
    text.push(b'\n');
    Ok(text)
}
