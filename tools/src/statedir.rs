//! The store as the commands use it: which one (the global `--store
//! etcd://...` / `$TAPSWITCH_STORE`, else the state directory of
//! `--state-dir` / `$TAPSWITCH_STATE_DIR`), and the start-up sweep that
//! releases the leases of containers that no longer exist.
//!
//! A container no longer exists when the machine rebooted since it was made
//! (its boot id differs; `/run/netns` is gone with the reboot) or when its
//! network namespace was deleted behind tapswitch's back (`ip netns del`).
//! Every command that opens the state sweeps first, so a reboot can never
//! leave addresses leased to nobody: CNI host-local's "no IP addresses
//! available" after a reboot cannot happen here.
//!
//! On a shared store the sweep only judges this host's containers of this
//! boot (the container record names no host, and another host's
//! containers are not visible from here): a container made in an earlier
//! boot of this host keeps its lease until `tapswitch container rm`.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::OnceLock;

use anyhow::{Result, anyhow, bail};
use clap::Args;
use ipam::{Container, EtcdUrl, Store};

use crate::control::{self, Request};
use crate::netlink::{Netlink, netns};

/// Which store the commands use: the global `--store` flag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreChoice {
    /// The state directory (`--state-dir`).
    Local,
    /// etcd, shared by several hosts.
    Etcd(EtcdUrl),
}

/// Parses `--store`: `etcd://HOST:PORT[,HOST:PORT...][/PREFIX/]`; empty or
/// `local` for the state directory.
pub fn parse_store(given: &str) -> Result<StoreChoice, String> {
    match given {
        "" | "local" => Ok(StoreChoice::Local),
        url => url
            .parse()
            .map(StoreChoice::Etcd)
            .map_err(|e: ipam::Error| e.to_string()),
    }
}

/// The store chosen by `main` from the global flag, before any command
/// runs; process-wide because every command that opens the state obeys it.
static STORE_CHOICE: OnceLock<StoreChoice> = OnceLock::new();

/// Sets the store for this process (once; `main` does it).
pub fn choose_store(choice: StoreChoice) {
    let _ = STORE_CHOICE.set(choice);
}

fn chosen_store() -> &'static StoreChoice {
    STORE_CHOICE.get().unwrap_or(&StoreChoice::Local)
}

/// Where the networks and leases are kept.
#[derive(Debug, Clone, Args)]
pub struct StateArgs {
    /// The state directory (default: /var/lib/tapswitch for root, else
    /// $XDG_DATA_HOME/tapswitch).
    #[arg(long, value_name = "DIR", env = ipam::store::STATE_DIR_ENV)]
    pub state_dir: Option<PathBuf>,
}

impl StateArgs {
    /// Opens the state directory, after releasing the leases of containers
    /// that no longer exist.
    pub fn open(&self) -> Result<Store> {
        let store = self.open_unpruned()?;
        for container in prune(&store)? {
            log::info!(
                "released {} of container {}, which no longer exists",
                container
                    .ipv4
                    .map_or_else(|| "the record".to_string(), |ip| ip.to_string()),
                container.name
            );
        }
        Ok(store)
    }

    /// Opens the store as it is: etcd if `--store` says so, else the
    /// state directory.
    pub fn open_unpruned(&self) -> Result<Store> {
        match chosen_store() {
            StoreChoice::Local => Ok(Store::open(ipam::state_dir(self.state_dir.as_deref()))?),
            StoreChoice::Etcd(url) => {
                if self.state_dir.is_some() {
                    bail!(
                        "--state-dir and --store {} both choose where the state is: give one of them",
                        url.endpoints.join(",")
                    );
                }
                Ok(Store::open_etcd(url)?)
            }
        }
    }

    /// Fails, without creating anything, unless the commands use a shared
    /// store: overlay networks exist only there.
    pub fn require_shared(&self, what: &str) -> Result<()> {
        if let StoreChoice::Local = chosen_store() {
            bail!(
                "{what} span several hosts and live in a shared store, not in the state directory {}: give --store etcd://HOST:PORT[,...] (or set TAPSWITCH_STORE)",
                ipam::state_dir(self.state_dir.as_deref()).display()
            );
        }
        Ok(())
    }

    /// The gateway (address and prefix length) that `tapswitch serve
    /// --network NAME` gives its gateway host, from IPAM. Bridge and
    /// overlay networks have one (an overlay's is the same on every host).
    pub fn served_gateway(&self, network: &str) -> Result<(Ipv4Addr, u8)> {
        let network = self.open_unpruned()?.network(network)?;
        network.gateway_prefix().ok_or_else(|| {
            anyhow!(
                "network {} uses driver {} and has no subnet for a switch to serve: serve a bridge network (see `tapswitch network ls`)",
                network.name,
                network.driver
            )
        })
    }
}

/// Forgets every container that no longer exists and releases its lease;
/// detaches what may be left of it. Returns the containers removed.
pub fn prune(store: &Store) -> Result<Vec<Container>> {
    let boot_id = current_boot_id();
    let shared = store.is_shared();
    let keep = |c: &Container| !may_release(c, &boot_id, shared);
    // Cheap check first, so the common case takes no lock.
    if store.load()?.containers.iter().all(keep) {
        return Ok(Vec::new());
    }
    let mut tx = store.lock()?;
    let dead = tx.state.prune(keep);
    // Under the lock: once it is released, a new container may take the
    // same name (and namespace path).
    for container in &dead {
        clean_up_leftovers(container);
    }
    tx.commit()?;
    Ok(dead)
}

/// Whether the sweep may release `container`'s lease: it is gone, and on
/// a `shared` store also known to be this host's (made in this boot).
pub fn may_release(container: &Container, boot_id: &str, shared: bool) -> bool {
    if shared && (boot_id.is_empty() || container.boot_id != boot_id) {
        return false;
    }
    !is_alive(container, boot_id)
}

/// Whether a recorded container still exists on this machine.
pub fn is_alive(container: &Container, boot_id: &str) -> bool {
    if !boot_id.is_empty() && container.boot_id != boot_id {
        return false;
    }
    if let Some(keeper) = &container.keeper {
        return crate::rootless::containers::keeper_alive(keeper);
    }
    match (&container.sandbox, &container.attached) {
        (Some(sandbox), Some(attached)) => crate::netlink::netns::is_still_there(sandbox, attached),
        (sandbox, _) => sandbox.as_deref().is_none_or(netns::exists),
    }
}

/// This boot's id; a container made in another boot is gone. Empty if the
/// kernel does not say (then only the namespace check applies).
pub fn current_boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|id| id.trim().to_string())
        .unwrap_or_default()
}

/// Best effort, for a container whose namespace is already gone: its veth
/// went with it, but the switch may still list the port, and a lazily
/// unmounted namespace may have left its file.
fn clean_up_leftovers(container: &Container) {
    if let (Some(socket), Some(iface)) = (&container.control, &container.host_iface) {
        let _ = control::call(
            socket,
            &Request::PortRm {
                name: iface.clone(),
            },
        );
    }
    if let Some(iface) = &container.host_iface
        && let Ok(mut nl) = Netlink::open()
        && let Ok(Some(index)) = nl.link_index(iface)
    {
        let _ = nl.delete_link(index);
    }
    if container.keeper.is_some() {
        let _ = crate::rootless::containers::remove_etc(container);
    }
    // An attached namespace is not ours to unmount, even when the path now
    // leads elsewhere.
    if let Some(sandbox) = &container.sandbox
        && container.attached.is_none()
        && container.keeper.is_none()
    {
        let _ = netns::delete(sandbox);
        // And its /etc/netns/<name>/resolv.conf, written by create.
        if let Some(name) = sandbox.file_name().and_then(|n| n.to_str()) {
            let _ = netns::remove_etc(name);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(boot_id: &str, sandbox: Option<&str>) -> Container {
        Container {
            name: "c".into(),
            id: "0".repeat(64),
            network: "bridge".into(),
            boot_id: boot_id.into(),
            sandbox: sandbox.map(PathBuf::from),
            ..Default::default()
        }
    }

    #[test]
    fn containers_from_another_boot_are_gone() {
        assert!(is_alive(&record("b1", None), "b1"));
        assert!(!is_alive(&record("b0", None), "b1"));
        // Unknown boot id: only the namespace decides.
        assert!(is_alive(&record("b0", None), ""));
    }

    #[test]
    fn on_a_shared_store_only_this_boots_containers_are_released() {
        let gone = "/run/netns/tapswitch-test-missing-namespace";
        // Another host's (or an earlier boot's) container: not ours to judge.
        assert!(!may_release(&record("b0", None), "b1", true));
        assert!(!may_release(&record("b0", Some(gone)), "b1", true));
        assert!(!may_release(&record("b1", Some(gone)), "", true));
        // This boot's container whose namespace went: released.
        assert!(may_release(&record("b1", Some(gone)), "b1", true));
        assert!(!may_release(&record("b1", None), "b1", true));
        // The local store keeps its rule: another boot means gone.
        assert!(may_release(&record("b0", None), "b1", false));
    }

    #[test]
    fn containers_whose_namespace_is_missing_are_gone() {
        let dir = tempfile::tempdir().unwrap();
        let plain_file = dir.path().join("not-a-namespace");
        std::fs::write(&plain_file, "").unwrap();
        let missing = record("b1", Some("/run/netns/tapswitch-test-missing-namespace"));
        assert!(!is_alive(&missing, "b1"));
        let not_nsfs = record("b1", plain_file.to_str());
        assert!(!is_alive(&not_nsfs, "b1"));
    }
}
