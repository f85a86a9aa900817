//! Follows a shared store for a running switch: the gateway must name the
//! containers made on other hosts, which are never attached here, so a
//! thread watches the state key (etcd's watch, from the revision read on)
//! and has the switch read the store again after every change.
//!
//! A local store needs none of this: its containers are all attached to
//! this switch, which reads the state when they are.
//!
//! While etcd does not answer the gateway keeps what it knows; when etcd
//! answers again (or the revision to go on from was compacted away) the
//! follower reads the whole state once more, so no change is missed.

use std::sync::{Arc, Weak};
use std::time::Duration;

use anyhow::{Result, anyhow};
use ipam::etcd::{Revision, WatchBatch};

use crate::running::RunningSwitch;

/// How long one watch waits for a change; also how soon the thread sees
/// that its switch is gone.
const WATCH_WAIT: Duration = Duration::from_secs(2);
/// How long to wait before asking an etcd that did not answer again.
const RETRY: Duration = Duration::from_secs(1);

/// Where the follower stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Position {
    /// Nothing read yet, or etcd went away: read the revision and the
    /// whole state again.
    Lost,
    /// Changes from this revision on are still to see.
    From(Revision),
}

/// What one watch says: whether to read the state again, and where to go
/// on from.
fn after_watch(batch: &WatchBatch) -> (bool, Position) {
    (
        !batch.events.is_empty(),
        Position::From(batch.next_revision),
    )
}

/// Starts the follower of `store` for `switch` (which must have its
/// services source set). It ends by itself once the switch is gone.
pub fn spawn(switch: &Arc<RunningSwitch>, store: ipam::Store) -> Result<()> {
    let key = store
        .state_key()
        .ok_or_else(|| anyhow!("only a shared store is followed"))?;
    let switch = Arc::downgrade(switch);
    std::thread::Builder::new()
        .name("tapswitch-store".into())
        .spawn(move || follow(&switch, &store, &key))
        .map_err(|err| anyhow!("starting the store's follower: {err}"))?;
    Ok(())
}

fn follow(switch: &Weak<RunningSwitch>, store: &ipam::Store, key: &str) {
    let Some((client, _)) = store.etcd() else {
        return;
    };
    let mut position = Position::Lost;
    let mut away = false;
    loop {
        let Some(running) = switch.upgrade() else {
            return;
        };
        let turn = match position {
            // The state is read after the revision: a change in between
            // is seen twice, never missed.
            Position::Lost => client.get(key.as_bytes()).map(|(_, revision)| {
                running.refresh_services();
                (false, Position::From(revision + 1))
            }),
            Position::From(revision) => client
                .watch_prefix(key.as_bytes(), revision, WATCH_WAIT)
                .map(|batch| after_watch(&batch)),
        };
        match turn {
            Ok((changed, next)) => {
                if away {
                    away = false;
                    log::info!(
                        "the store answers again: the gateway follows the network's containers again"
                    );
                }
                if changed {
                    running.refresh_services();
                }
                position = next;
            }
            Err(err) => {
                if !away {
                    away = true;
                    log::warn!(
                        "the gateway's services cannot follow the store ({err}); they keep the containers they know"
                    );
                }
                position = Position::Lost;
                drop(running);
                std::thread::sleep(RETRY);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ipam::etcd::{KeyValue, WatchEvent};

    #[test]
    fn a_quiet_watch_goes_on_without_reading() {
        let quiet = WatchBatch {
            events: Vec::new(),
            next_revision: 7,
        };
        assert_eq!(after_watch(&quiet), (false, Position::From(7)));
    }

    #[test]
    fn a_change_reads_the_state_again_and_goes_on_after_it() {
        let changed = WatchBatch {
            events: vec![WatchEvent::Put(KeyValue {
                key: b"/tapswitch/state".to_vec(),
                value: b"{}".to_vec(),
                mod_revision: 11,
                lease: 0,
            })],
            next_revision: 12,
        };
        assert_eq!(after_watch(&changed), (true, Position::From(12)));
    }
}
