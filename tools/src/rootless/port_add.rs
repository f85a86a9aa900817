//! `tapswitch port add` of an interface or TAP device in another network
//! namespace (`--pid`, `--netns`), and the lines an ordinary user gets when
//! a port cannot be opened in their own namespace.
//!
//! An ordinary user's switch runs in the user's own network namespace,
//! where the user has neither CAP_NET_RAW (packet sockets) nor
//! CAP_NET_ADMIN (creating a TAP). In a network namespace of a user
//! namespace of theirs (`unshare --user --map-root-user --net`, a rootless
//! container) they have both: a helper joins it, opens the interface's
//! packet sockets or the TAP's queues there and passes them to the switch
//! (see [`super::helper`]). Root may name any namespace the same way.
//!
//! In the user's own namespace one TAP still works: a persistent TAP root
//! made for the user (`ip tuntap add NAME mode tap user USER`), which the
//! kernel lets its owner open without privileges.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::Args;

use super::Mode;
use super::prereq::{Facts, missing_tun};
use crate::control::{self, PortInfo, Request};

/// Where `port add` finds the interface (or makes the TAP).
#[derive(Debug, Clone, Default, Args)]
pub struct NamespaceArgs {
    /// In the network namespace of process PID (for an ordinary user: one inside a user namespace of theirs).
    #[arg(long, value_name = "PID", conflicts_with = "netns")]
    pub pid: Option<u32>,
    /// In the network namespace at PATH (e.g. /run/netns/NAME, /proc/PID/ns/net).
    #[arg(long, value_name = "PATH")]
    pub netns: Option<PathBuf>,
}

impl NamespaceArgs {
    /// The namespace's file, absolute (the switch opens it, from its own
    /// working directory), if one was given.
    pub fn path(&self) -> Result<Option<PathBuf>> {
        match (self.pid, &self.netns) {
            (Some(pid), _) => Ok(Some(PathBuf::from(format!("/proc/{pid}/ns/net")))),
            (None, Some(path)) => std::path::absolute(path)
                .map(Some)
                .with_context(|| format!("--netns {}", path.display())),
            (None, None) => Ok(None),
        }
    }
}

/// The request `port add` sends for `--iface` or `--tap` (exactly one is
/// given; clap's group sees to it) in the namespace `netns`, if any.
pub fn request(iface: Option<String>, tap: Option<String>, netns: Option<PathBuf>) -> Request {
    match (netns, tap) {
        (Some(netns), Some(tap)) => Request::PortAddTapIn { tap, netns },
        (Some(netns), None) => Request::PortAddIn {
            iface: iface.unwrap_or_default(),
            netns,
            owner: None,
        },
        (None, tap) => Request::PortAdd {
            iface,
            tap,
            owner: None,
        },
    }
}

/// `port add`: checks what it can before asking the switch at `socket`,
/// and says what an ordinary user can do instead when the switch cannot
/// open the port in the user's own namespace.
pub fn add(
    socket: &Path,
    iface: Option<String>,
    tap: Option<String>,
    namespace: &NamespaceArgs,
) -> Result<PortInfo> {
    let netns = namespace.path()?;
    let rootless = Mode::current() == Mode::Rootless;
    if rootless
        && tap.is_some()
        && let Some(line) = missing_tun(&Facts::read())
    {
        bail!("{line}");
    }
    if let Some(netns) = &netns {
        super::check_attachable(netns)?;
    }
    let hint = match (&iface, &tap) {
        (Some(name), _) => format!(
            "an ordinary user's switch cannot open {name} in your own network namespace (packet sockets there need CAP_NET_RAW): name the namespace that holds it with --pid PID or --netns PATH (one inside a user namespace of yours, e.g. `unshare --user --map-root-user --net`)"
        ),
        (None, Some(name)) => format!(
            "an ordinary user cannot create TAP {name} in your own network namespace (that needs CAP_NET_ADMIN there): make it in a namespace of yours with --pid PID or --netns PATH, or ask root for a persistent TAP of yours (`sudo ip tuntap add {name} mode tap user $(id -un)`)"
        ),
        (None, None) => bail!("give --iface NAME or --tap NAME"),
    };
    let in_own_namespace = netns.is_none();
    let request = request(iface, tap, netns);
    let added = control::call_as::<PortInfo>(socket, &request);
    if rootless && in_own_namespace {
        return added.context(hint);
    }
    added
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_namespace_turns_port_add_into_its_in_namespace_requests() {
        let netns = PathBuf::from("/proc/7/ns/net");
        assert_eq!(
            request(Some("va".into()), None, Some(netns.clone())),
            Request::PortAddIn {
                iface: "va".into(),
                netns: netns.clone(),
                owner: None
            }
        );
        assert_eq!(
            request(None, Some("tap0".into()), Some(netns.clone())),
            Request::PortAddTapIn {
                tap: "tap0".into(),
                netns
            }
        );
        assert_eq!(
            request(None, Some("tap0".into()), None),
            Request::PortAdd {
                iface: None,
                tap: Some("tap0".into()),
                owner: None
            }
        );
    }

    #[test]
    fn pid_names_its_namespace_and_a_relative_path_becomes_absolute() {
        let by_pid = NamespaceArgs {
            pid: Some(42),
            netns: None,
        };
        assert_eq!(
            by_pid.path().unwrap(),
            Some(PathBuf::from("/proc/42/ns/net"))
        );
        let relative = NamespaceArgs {
            pid: None,
            netns: Some(PathBuf::from("ns/x")),
        };
        let path = relative.path().unwrap().unwrap();
        assert!(path.is_absolute() && path.ends_with("ns/x"), "{path:?}");
        assert_eq!(NamespaceArgs::default().path().unwrap(), None);
    }
}
