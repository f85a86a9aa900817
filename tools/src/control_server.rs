//! The server side of the control socket (protocol in `control`), served
//! by the client loop (`client_loop`: one thread, limits on clients and
//! request size).

use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result, bail};

use crate::client_loop::{self, Answer, LoopHandle, Service};
use crate::control::{Reply, Request};
use crate::event_feed::{self, EventFeed};
use crate::running::RunningSwitch;

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

/// Serves the control socket from one thread (see `client_loop` for the
/// limits) until the process exits.
pub fn spawn(listener: UnixListener, switch: Arc<RunningSwitch>) -> Result<LoopHandle> {
    listener
        .set_nonblocking(true)
        .context("making the control socket non-blocking")?;
    let listener = mio::net::UnixListener::from_std(listener);
    let handle = client_loop::spawn("tapswitch-control", listener, ControlService { switch })
        .context("starting the control socket's thread")?;
    Ok(handle)
}

/// The control protocol: one JSON request per line, one JSON reply per line.
#[derive(Debug)]
pub struct ControlService {
    switch: Arc<RunningSwitch>,
}

impl ControlService {
    pub fn new(switch: Arc<RunningSwitch>) -> Self {
        ControlService { switch }
    }
}

impl Service for ControlService {
    fn request_len(&self, input: &[u8]) -> Option<usize> {
        input.iter().position(|&b| b == b'\n').map(|i| i + 1)
    }

    fn answer(&mut self, request: &[u8]) -> Answer {
        let text = String::from_utf8_lossy(request);
        if text.trim().is_empty() {
            return Answer::Reply {
                bytes: Vec::new(),
                close: false,
            };
        }
        let reply = match serde_json::from_str::<Request>(&text) {
            Ok(Request::Monitor) => {
                match EventFeed::new(self.switch.clone(), event_feed::line_frame) {
                    Ok(feed) => {
                        let head =
                            reply_line(&Reply::data(&serde_json::json!({"streaming": true})));
                        return Answer::Stream {
                            head,
                            feed: Box::new(feed),
                        };
                    }
                    Err(err) => Reply::error(format!("{err:#}")),
                }
            }
            Ok(request) => self.switch.handle(request),
            Err(err) => Reply::error(format!("malformed request: {err}")),
        };
        Answer::Reply {
            bytes: reply_line(&reply),
            close: false,
        }
    }

    fn refusal(&self, why: &str) -> Vec<u8> {
        reply_line(&Reply::error(why))
    }
}

fn reply_line(reply: &Reply) -> Vec<u8> {
    let mut text = serde_json::to_string(reply)
        .unwrap_or_else(|_| r#"{"ok":false,"error":"cannot encode the reply"}"#.to_string());
    text.push('\n');
    text.into_bytes()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::serve::{SwitchSetup, start_switch};
    use switch::dataplane::Tuning;

    /// A switch without ports or gateway: no kernel devices, no root.
    pub(crate) fn portless_switch() -> Arc<RunningSwitch> {
        start_switch(SwitchSetup {
            network: "test".into(),
            control: "/nonexistent/test.sock".into(),
            tuning: Tuning::new(1, std::time::Duration::ZERO, false, false),
            table: switch::mac_table::TableConfig::default(),
            gateway: None,
            trace: false,
            capture: None,
            kernel_shortcut: false,
        })
        .unwrap()
    }

    fn reply(answer: Answer) -> serde_json::Value {
        match answer {
            Answer::Reply { bytes, close } => {
                assert!(!close, "the control socket keeps its clients");
                let text = String::from_utf8(bytes).unwrap();
                assert!(
                    text.ends_with('\n') && text.matches('\n').count() == 1,
                    "{text}"
                );
                serde_json::from_str(&text).unwrap()
            }
            other => panic!("expected a reply, got {other:?}"),
        }
    }

    #[test]
    fn trace_requests_switch_the_trace_and_check_the_port() {
        let switch = portless_switch();
        let mut service = ControlService::new(switch.clone());
        let on = reply(service.answer(b"{\"cmd\":\"trace\",\"on\":true}\n"));
        assert_eq!(on["data"]["on"], true, "{on}");
        let bad = reply(service.answer(b"{\"cmd\":\"trace\",\"on\":true,\"port\":\"nosuch\"}\n"));
        assert_eq!(bad["ok"], false);
        assert!(
            bad["error"]
                .as_str()
                .unwrap()
                .contains("no port named nosuch")
        );
        let off = reply(service.answer(b"{\"cmd\":\"trace\",\"on\":false}\n"));
        assert_eq!(off["data"]["on"], false);
        let garbage = reply(service.answer(b"{\"cmd\":\"dance\"}\n"));
        assert!(
            garbage["error"]
                .as_str()
                .unwrap()
                .starts_with("malformed request")
        );
        switch.shutdown();
    }

    #[test]
    fn monitor_answers_one_reply_line_then_streams() {
        let switch = portless_switch();
        let mut service = ControlService::new(switch.clone());
        let Answer::Stream { head, mut feed } = service.answer(b"{\"cmd\":\"monitor\"}\n") else {
            panic!("monitor is a stream");
        };
        assert_eq!(
            String::from_utf8(head).unwrap(),
            "{\"ok\":true,\"data\":{\"streaming\":true}}\n"
        );
        let mut out = Vec::new();
        assert!(feed.pull(&mut out), "a stream goes on");
        assert!(out.is_empty(), "nothing happened yet");
        // Turning the trace on makes no event; a frame would. The stream
        // itself is tested against a live switch (tests/classroom.rs).
        switch.shutdown();
    }
}
