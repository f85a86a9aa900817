//! `container create|rm|exec` and the attach plumbing as an ordinary user
//! (see the module docs of `crate::rootless` for the layout).

use std::net::Ipv4Addr;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use anyhow::{Context, Result, bail};
use ipam::{Container, Driver, NamespaceKeeper, Network, Store};

use super::helper::{self, PlugArgs};
use super::holder::Holder;
use crate::control::{self, PortInfo, Request};
use crate::netlink::netns::NamespaceId;

/// `container create` as an ordinary user: `record` as the root path
/// built it (name, id, network, switch); the namespace is a keeper's
/// inside the holder's user namespace instead of `/run/netns/...`.
pub fn create(
    store: &Store,
    mut record: Container,
    network: &Network,
    ip: Option<Ipv4Addr>,
) -> Result<ExitCode> {
    let mut keeper = None;
    if network.driver != Driver::Host {
        let holder = Holder::ensure(&control::runtime_dir())?;
        let (pid, id) = helper::start_keeper(&holder)?;
        record.sandbox = Some(keeper_netns(pid));
        keeper = Some(NamespaceKeeper {
            pid,
            dev: id.dev,
            ino: id.ino,
        });
        record.keeper = keeper.clone();
    }
    let mut tx = match store.lock() {
        Ok(tx) => tx,
        Err(err) => {
            end_keeper(keeper.as_ref());
            return Err(err.into());
        }
    };
    let scope = ipam::state::PortScope::of(store.is_shared(), &record);
    let record = match tx.state.add_container_in(record, ip, scope) {
        Ok(record) => record.clone(),
        Err(err) => {
            end_keeper(keeper.as_ref());
            return Err(err.into());
        }
    };
    crate::container_steps::build_and_commit(tx, &record, |r| build(r, network), tear_down)
}

/// `/proc/<pid>/ns/net`: a keeper's namespace.
pub fn keeper_netns(pid: u32) -> PathBuf {
    PathBuf::from(format!("/proc/{pid}/ns/net"))
}

/// Whether the keeper still holds the namespace it was started for.
pub fn keeper_alive(keeper: &NamespaceKeeper) -> bool {
    NamespaceId::of(&keeper_netns(keeper.pid))
        .is_ok_and(|id| id.dev == keeper.dev && id.ino == keeper.ino)
}

fn build(record: &Container, network: &Network) -> Result<()> {
    let (Some(sandbox), Some(host_iface), Some(control)) =
        (&record.sandbox, &record.host_iface, &record.control)
    else {
        return Ok(()); // none: the keeper brought lo up; host: nothing
    };
    plug(record, network, sandbox, host_iface, "eth0")?;
    write_resolv_conf(record, network.ipam()?.gateway)?;
    add_port(record, sandbox, host_iface, control)
}

/// Builds the veth pair inside `sandbox`; returns the container end's name.
pub fn plug(
    record: &Container,
    network: &Network,
    sandbox: &Path,
    host_iface: &str,
    iface: &str,
) -> Result<String> {
    let (Some(ip), Some(mac)) = (record.ipv4, record.mac) else {
        bail!("container {} has no address to configure", record.name);
    };
    let ipam = network.ipam()?;
    let args = PlugArgs {
        host_iface: host_iface.to_string(),
        iface: iface.to_string(),
        mac: mac.to_string(),
        ip,
        prefix: ipam.subnet.prefix_len(),
        broadcast: ipam.subnet.broadcast(),
        gateway: ipam.gateway,
        mtu: network.link_mtu(),
    };
    helper::plug_into(sandbox, &args).with_context(|| {
        format!(
            "configuring the veth pair {host_iface} ({ip}/{}, default via {} unless it has a route) in {}",
            args.prefix,
            args.gateway,
            sandbox.display()
        )
    })
}

/// Asks the switch to take the veth's switch end as a port, opened inside
/// the container's namespace.
pub fn add_port(
    record: &Container,
    sandbox: &Path,
    host_iface: &str,
    control: &Path,
) -> Result<()> {
    let request = Request::PortAddIn {
        iface: host_iface.to_string(),
        netns: sandbox.to_path_buf(),
        owner: Some(record.name.clone()),
    };
    control::call_as::<PortInfo>(control, &request).with_context(|| {
        format!(
            "attaching {host_iface} to the switch at {}",
            control.display()
        )
    })?;
    Ok(())
}

/// Undoes a rootless container: detach the port (best effort), then end
/// the keeper (which deletes the namespace and the veth in it) or, for an
/// attached namespace, delete the veth pair in there.
pub fn tear_down(record: &Container) -> Result<()> {
    if let (Some(control), Some(iface)) = (&record.control, &record.host_iface) {
        let request = Request::PortRm {
            name: iface.clone(),
        };
        if let Err(err) = control::call(control, &request) {
            log::debug!("detaching {iface}: {err:#}");
        }
    }
    if record.keeper.is_some() {
        end_keeper(record.keeper.as_ref());
        return remove_etc(record);
    }
    if let (Some(sandbox), Some(attached), Some(iface)) =
        (&record.sandbox, &record.attached, &record.host_iface)
        && crate::netlink::netns::is_still_there(sandbox, attached)
    {
        helper::unplug_from(sandbox, iface)?;
    }
    Ok(())
}

/// Ends a keeper, if it still holds its namespace (never a reused PID).
fn end_keeper(keeper: Option<&NamespaceKeeper>) {
    let Some(keeper) = keeper.filter(|k| keeper_alive(k)) else {
        return;
    };
    let pid = nix::unistd::Pid::from_raw(i32::try_from(keeper.pid).unwrap_or(i32::MAX));
    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
}

/// `container exec` as an ordinary user: the command runs as root of the
/// container's user namespace, inside its network namespace, and sees the
/// container's own resolv.conf (written by `create`) as `/etc/resolv.conf`.
pub fn exec(record: &Container, sandbox: &Path, command: &[String]) -> Result<ExitCode> {
    if command.is_empty() {
        bail!("no command given: write it after `--`");
    }
    let name = &record.name;
    let enter = super::enter_netns(sandbox)
        .with_context(|| format!("entering the namespaces of container {name}"))?;
    let mut child = Command::new(super::holder::self_exe()?);
    child
        .args(["__rootless", "exec", "--etc"])
        .arg(etc_dir(record))
        .arg("--")
        .args(command);
    enter.apply(&mut child);
    let status = child
        .status()
        .with_context(|| format!("starting a helper inside container {name}"))?;
    let code = status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(1);
    Ok(ExitCode::from(u8::try_from(code).unwrap_or(1)))
}

/// A rootless container's own `/etc` files (its resolv.conf), which
/// `container exec` shows over the host's: root keeps them in
/// `/etc/netns/<namespace>/`, an ordinary user in the runtime directory,
/// by container id (a name may be reused).
pub fn etc_dir(record: &Container) -> PathBuf {
    control::runtime_dir()
        .join("containers")
        .join(&record.id)
        .join("etc")
}

/// Writes the container's resolv.conf, naming its gateway (which answers DNS).
fn write_resolv_conf(record: &Container, gateway: Ipv4Addr) -> Result<()> {
    let dir = etc_dir(record);
    let resolv = switch::dns::container_resolv_conf(gateway, switch::dns::DEFAULT_DOMAIN);
    std::fs::create_dir_all(&dir)
        .and_then(|()| std::fs::write(dir.join("resolv.conf"), resolv))
        .with_context(|| format!("writing {}/resolv.conf", dir.display()))
}

/// Removes what [`write_resolv_conf`] wrote; nothing there is not an error.
pub fn remove_etc(record: &Container) -> Result<()> {
    let Some(dir) = etc_dir(record).parent().map(Path::to_path_buf) else {
        return Ok(());
    };
    match std::fs::remove_dir_all(&dir) {
        Err(err) if err.kind() != std::io::ErrorKind::NotFound => {
            Err(err).with_context(|| format!("removing {}", dir.display()))
        }
        _ => Ok(()),
    }
}
