//! The server side of the control socket (protocol in `control`).

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::control::{Reply, Request};
use crate::running::RunningSwitch;

/// A request line longer than this is refused (the protocol's are tiny).
const MAX_REQUEST_BYTES: u64 = 64 * 1024;

/// Binds the control socket at `path`, mode 0600. A socket left by a switch
/// that died is replaced; a live switch on the same path is not.
pub fn bind(path: &Path, network: &str) -> Result<UnixListener> {
    if let Some(dir) = path.parent() {
        prepare_socket_dir(dir)?;
    }
    if path.exists() {
        if UnixStream::connect(path).is_ok() {
            bail!(
                "a switch already serves network {network} on control socket {}; stop it, or give this one another --control PATH",
                path.display()
            );
        }
        std::fs::remove_file(path)
            .with_context(|| format!("removing the stale control socket {}", path.display()))?;
        log::info!("replaced a stale control socket at {}", path.display());
    }
    // Bind under a temporary name and rename, so the socket is never
    // reachable before its mode is 0600.
    let staging = path.with_extension(format!("sock.{}", std::process::id()));
    let _ = std::fs::remove_file(&staging);
    let listener = UnixListener::bind(&staging)
        .with_context(|| format!("binding the control socket {}", staging.display()))?;
    std::fs::set_permissions(&staging, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("restricting {} to its owner", staging.display()))?;
    std::fs::rename(&staging, path)
        .with_context(|| format!("moving the control socket to {}", path.display()))?;
    Ok(listener)
}

/// Makes the control socket's directory. An ordinary user's default one
/// (under `$XDG_RUNTIME_DIR` or its /tmp fallback) must be theirs and 0700, so
/// another user can neither reach the socket nor plant one there.
fn prepare_socket_dir(dir: &Path) -> Result<()> {
    if crate::rootless::Mode::current() == crate::rootless::Mode::Rootless
        && dir == crate::control::runtime_dir()
    {
        return crate::rootless::holder::private_dir(dir);
    }
    std::fs::create_dir_all(dir)
        .with_context(|| format!("creating the control socket's directory {}", dir.display()))
}

/// Serves connections on their own threads until the process exits.
pub fn spawn(listener: UnixListener, switch: Arc<RunningSwitch>) -> Result<()> {
    std::thread::Builder::new()
        .name("tapswitch-control".into())
        .spawn(move || {
            for stream in listener.incoming() {
                match stream {
                    Ok(stream) => {
                        let switch = switch.clone();
                        let _ = std::thread::Builder::new()
                            .name("tapswitch-client".into())
                            .spawn(move || serve_client(stream, &switch));
                    }
                    Err(err) => log::warn!("control socket: accepting a client failed: {err}"),
                }
            }
        })?;
    Ok(())
}

fn serve_client(stream: UnixStream, switch: &RunningSwitch) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(60)));
    let mut reader = BufReader::new(&stream);
    let mut line = String::new();
    loop {
        line.clear();
        match (&mut reader).take(MAX_REQUEST_BYTES).read_line(&mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        if line.trim().is_empty() {
            continue;
        }
        let reply = match serde_json::from_str::<Request>(&line) {
            Ok(request) => switch.handle(request),
            Err(err) => Reply::error(format!("malformed request: {err}")),
        };
        let Ok(mut text) = serde_json::to_string(&reply) else {
            return;
        };
        text.push('\n');
        if (&stream).write_all(text.as_bytes()).is_err() {
            return;
        }
    }
}
