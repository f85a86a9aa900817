//! Named network namespaces, made the way `ip netns add` makes them, so that
//! `ip netns exec tapswitch-web ...` works on ours too.
//!
//! A namespace lives as long as something refers to it. A *named* one is
//! kept alive by a bind mount of its `/proc/<tid>/ns/net` file onto
//! `/run/netns/<name>`; deleting it unmounts and unlinks that file (the
//! namespace itself goes when its last process leaves).
//!
//! `setns` and `unshare(CLONE_NEWNET)` change only the calling *thread*, so
//! every function here that enters a namespace does so on a thread of its
//! own that ends with the work: the caller's thread never changes namespace.

use std::fs::{self, File};
use std::io;
use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use ipam::AttachedNamespace;

use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sched::{CloneFlags, setns, unshare};
use nix::sys::statfs::{NSFS_MAGIC, statfs};

/// Where named namespaces live (iproute2's `NETNS_RUN_DIR`).
pub const NETNS_RUN_DIR: &str = "/run/netns";
/// Where a named namespace's own versions of `/etc` files live
/// (iproute2's `NETNS_ETC_DIR`): `ip netns exec` and [`enter_with_etc`]
/// bind-mount each over its `/etc` namesake.
pub const NETNS_ETC_DIR: &str = "/etc/netns";

/// The path of the named namespace `name`.
pub fn path(name: &str) -> PathBuf {
    Path::new(NETNS_RUN_DIR).join(name)
}

/// Whether `path` is a live namespace (an nsfs bind mount), not just a
/// file left behind.
pub fn exists(path: &Path) -> bool {
    statfs(path).is_ok_and(|fs| fs.filesystem_type() == NSFS_MAGIC)
}

/// Creates the named network namespace `name` (with only `lo`, down) and
/// returns its path. Fails with `AlreadyExists` if the name is taken.
pub fn create(name: &str) -> io::Result<PathBuf> {
    prepare_run_dir()?;
    let target = path(name);
    // create_new: two commands racing for one name cannot both win.
    File::options().write(true).create_new(true).open(&target)?;
    let bind = || -> io::Result<()> {
        std::thread::scope(|scope| {
            scope
                .spawn(|| -> io::Result<()> {
                    unshare(CloneFlags::CLONE_NEWNET)?;
                    mount(
                        Some("/proc/thread-self/ns/net"),
                        &target,
                        None::<&str>,
                        MsFlags::MS_BIND,
                        None::<&str>,
                    )?;
                    Ok(())
                })
                .join()
                .unwrap_or_else(|_| Err(io::Error::other("the namespace thread panicked")))
        })
    };
    if let Err(err) = bind() {
        let _ = fs::remove_file(&target);
        return Err(err);
    }
    Ok(target)
}

/// Deletes a named namespace: unmount (lazily, in case something still has
/// it open) and unlink. A namespace that is already gone is not an error.
pub fn delete(path: &Path) -> io::Result<()> {
    match umount2(path, MntFlags::MNT_DETACH) {
        Ok(()) | Err(nix::errno::Errno::EINVAL | nix::errno::Errno::ENOENT) => {}
        Err(err) => return Err(err.into()),
    }
    match fs::remove_file(path) {
        Err(err) if err.kind() != io::ErrorKind::NotFound => Err(err),
        _ => Ok(()),
    }
}

/// Runs `work` on a new thread inside the namespace at `path` and returns
/// its result. Netlink sockets and `/proc/sys/net` files opened by `work`
/// belong to that namespace.
pub fn run_in<T: Send>(path: &Path, work: impl FnOnce() -> io::Result<T> + Send) -> io::Result<T> {
    let ns = File::open(path)?;
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                setns(ns.as_fd(), CloneFlags::CLONE_NEWNET)?;
                work()
            })
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("the namespace thread panicked")))
    })
}

/// Moves the *calling thread* into the namespace at `path`, for good: used
/// right before `exec`, which then runs the command in there.
pub fn enter(path: &Path) -> io::Result<()> {
    let ns = File::open(path)?;
    setns(ns.as_fd(), CloneFlags::CLONE_NEWNET)?;
    Ok(())
}

/// Writes the namespace `name`'s own `/etc/<file>` (in
/// `/etc/netns/<name>/`).
pub fn write_etc(name: &str, file: &str, contents: &str) -> io::Result<()> {
    let dir = Path::new(NETNS_ETC_DIR).join(name);
    fs::create_dir_all(&dir)?;
    fs::write(dir.join(file), contents)
}

/// Removes the namespace `name`'s `/etc/netns/<name>/` and what is in it;
/// nothing there is not an error.
pub fn remove_etc(name: &str) -> io::Result<()> {
    match fs::remove_dir_all(Path::new(NETNS_ETC_DIR).join(name)) {
        Err(err) if err.kind() != io::ErrorKind::NotFound => Err(err),
        _ => Ok(()),
    }
}

/// [`enter`], and, when `/etc/netns/<name>/` exists, a private mount
/// namespace in which each file there is bind-mounted over its `/etc`
/// namesake, as `ip netns exec` does (so the container's
/// `/etc/resolv.conf` names its gateway). A file that cannot be mounted
/// is skipped with a warning, as `ip netns exec` does. Must run before the
/// process has other threads (`unshare(CLONE_NEWNS)` refuses otherwise).
pub fn enter_with_etc(path: &Path, name: &str) -> io::Result<()> {
    enter(path)?;
    private_etc(&Path::new(NETNS_ETC_DIR).join(name))
}

/// When `dir` exists, moves the calling process into a private mount
/// namespace in which each file of `dir` is bind-mounted over its `/etc`
/// namesake (see [`enter_with_etc`]; rootless containers keep theirs in
/// the user's runtime directory). Same single-thread rule.
pub fn private_etc(dir: &Path) -> io::Result<()> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Ok(());
    };
    unshare(CloneFlags::CLONE_NEWNS)?;
    // Our mounts must not reach the host's mount namespace.
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_SLAVE | MsFlags::MS_REC,
        None::<&str>,
    )?;
    for entry in entries.flatten() {
        let target = Path::new("/etc").join(entry.file_name());
        let bound = mount(
            Some(&entry.path()),
            &target,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        );
        if let Err(err) = bound {
            log::warn!(
                "cannot bind {} over {}: {err}",
                entry.path().display(),
                target.display()
            );
        }
    }
    Ok(())
}

/// Makes `/run/netns` a shared mount point, as iproute2 does, so that the
/// namespaces mounted in it show in every mount namespace that sees it
/// (and `ip netns` run from another one finds them).
fn prepare_run_dir() -> io::Result<()> {
    fs::create_dir_all(NETNS_RUN_DIR)?;
    let make_shared = || {
        mount(
            None::<&str>,
            NETNS_RUN_DIR,
            Some("none"),
            MsFlags::MS_SHARED | MsFlags::MS_REC,
            None::<&str>,
        )
    };
    match make_shared() {
        Ok(()) => Ok(()),
        // Not a mount point yet: bind it onto itself first.
        Err(nix::errno::Errno::EINVAL) => {
            mount(
                Some(NETNS_RUN_DIR),
                NETNS_RUN_DIR,
                Some("none"),
                MsFlags::MS_BIND | MsFlags::MS_REC,
                None::<&str>,
            )?;
            make_shared()?;
            Ok(())
        }
        Err(err) => Err(err.into()),
    }
}
/// A namespace's identity: `st_dev` and `st_ino` of its nsfs file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NamespaceId {
    pub dev: u64,
    pub ino: u64,
}

impl NamespaceId {
    /// The identity of the namespace at `path`, which must be a namespace
    /// (nsfs) file, not a file left where one was.
    pub fn of(path: &Path) -> io::Result<NamespaceId> {
        if !exists(path) {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("{} is not a network namespace", path.display()),
            ));
        }
        let meta = std::fs::metadata(path)?;
        Ok(NamespaceId {
            dev: meta.dev(),
            ino: meta.ino(),
        })
    }
}

/// Whether the attached namespace recorded as `attached` is still what
/// `sandbox` leads to: a PID reused or a bind mount replaced is another
/// namespace.
pub fn is_still_there(sandbox: &Path, attached: &AttachedNamespace) -> bool {
    NamespaceId::of(sandbox).is_ok_and(|id| id.dev == attached.dev && id.ino == attached.ino)
}
