//! Rootless mode: what changes when an ordinary user runs tapswitch.
//!
//! The mode follows the user (effective uid 0 or not); nothing turns it on.
//! An ordinary user cannot create interfaces in the host's network
//! namespace nor open packet sockets there, so:
//!
//! - a long-lived **holder** process ([`holder`]) owns a user namespace in
//!   which the user is root (uid map: the user → 0), as Podman's pause
//!   process does; it outlives switches and commands;
//! - each container's network namespace is made inside that user
//!   namespace and held by a tiny **keeper** process (there is no
//!   `/run/netns` to bind-mount it on for an ordinary user);
//! - both ends of a container's veth pair live in the container's own
//!   namespace: `eth0` with the address, and the switch's end `ts-<id>`
//!   without any address or IPv6. A **helper** that joined the container's
//!   user and network namespaces opens packet sockets on `ts-<id>` and
//!   passes them to `serve` over SCM_RIGHTS ([`helper`]); `serve` itself stays
//!   in the user's own network namespace, where the gateway's host sockets
//!   belong (as slirp4netns does);
//! - namespaces the user made some other way (`unshare --user
//!   --map-root-user --net`, rootless Podman) are reached the same way,
//!   through the user namespace that owns them; a namespace owned by
//!   another user (or by root) is refused.
//!
//! See docs/rootless.md for the recipes.

pub mod containers;
pub mod demo;
pub mod helper;
pub mod holder;
pub mod port_add;
pub mod prereq;

use std::fs::File;
use std::os::fd::AsFd;
use std::path::Path;

use anyhow::{Context, Result, bail};
use ports::namespace::{Enter, effective_ids, owner_uid, owning_userns};

/// Who runs tapswitch, which decides where things live and how
/// namespaces are reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Effective uid 0: namespaces under `/run/netns`, state in `/var/lib`.
    Root,
    /// Any other user: everything inside user namespaces the user owns.
    Rootless,
}

impl Mode {
    /// The mode of this process.
    pub fn current() -> Mode {
        if effective_ids().0 == 0 {
            Mode::Root
        } else {
            Mode::Rootless
        }
    }

    /// `root` or `rootless`, as `stats` and `serve` print it.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Root => "root",
            Mode::Rootless => "rootless",
        }
    }
}

impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Refuses a namespace this user may not attach. Root may attach any.
pub fn check_attachable(netns: &Path) -> Result<()> {
    if Mode::current() == Mode::Root {
        return Ok(());
    }
    enter_netns(netns).map(drop)
}

/// How a helper gets into the network namespace at `netns`: through the
/// user namespace that owns it, which must be this user's (root joins
/// the network namespace directly).
pub fn enter_netns(netns: &Path) -> Result<Enter> {
    let ns = File::open(netns).with_context(|| format!("opening {}", netns.display()))?;
    if Mode::current() == Mode::Root {
        return Ok(Enter::new().join_net(ns.into()));
    }
    let userns = owning_userns(ns.as_fd())
        .with_context(|| format!("finding the user namespace that owns {}", netns.display()))?;
    let owner = owner_uid(userns.as_fd())
        .with_context(|| format!("asking who owns the user namespace of {}", netns.display()))?;
    let (uid, _) = effective_ids();
    if owner != uid {
        bail!(
            "the network namespace {} belongs to {}, not to you (uid {uid}): an ordinary user can only attach namespaces inside a user namespace of their own (`unshare --user --map-root-user --net`, rootless Podman); root can attach any",
            netns.display(),
            if owner == 0 {
                "root (the host's user namespace)".to_string()
            } else {
                format!("a user namespace of uid {owner}")
            }
        );
    }
    Ok(Enter::new().join_user(userns).join_net(ns.into()))
}
