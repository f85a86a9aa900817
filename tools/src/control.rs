//! The control socket: how `tapswitch fdb`, `ports`, `port add|rm`,
//! `capture start|stop`, `container create` and tests talk to a running
//! `serve`.
//!
//! A Unix stream socket; each request is one line of JSON and gets one line
//! of JSON back: `{"ok":true,"data":...}` or `{"ok":false,"error":"..."}`.
//! The socket is created mode 0600 (only its owner may drive the switch).
//!
//! Default path: `/run/tapswitch/<network>.sock` for root,
//! `$XDG_RUNTIME_DIR/tapswitch/<network>.sock` otherwise (network `bridge`
//! unless `--network` says otherwise); `--control PATH` overrides.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use serde::{Deserialize, Serialize};
use switch::dataplane::DataplaneMetrics;
use switch::{EntryKind, MacAddr, PortId, PortStats, TableStats};

/// The network a switch serves when `--network` is not given.
pub const DEFAULT_NETWORK: &str = ipam::state::DEFAULT_BRIDGE;

/// One request on the control socket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum Request {
    /// What the switch is: network, gateway, settings.
    Info,
    /// The MAC table and its counters.
    Fdb,
    /// The ports and their counters.
    Ports,
    /// Attach an interface (`iface`) or a TAP device (`tap`). `owner` names
    /// the container the port belongs to, for `tapswitch show`.
    PortAdd {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        iface: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        tap: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        owner: Option<String>,
    },
    /// Attach interface `iface` of the network namespace at `netns`, through
    /// packet sockets a helper opens in there (rootless containers: the
    /// switch's end of their veth pair lives in their own namespace).
    PortAddIn {
        iface: String,
        netns: PathBuf,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        owner: Option<String>,
    },
    /// Detach a port by name.
    PortRm { name: String },
    /// Start writing a port's traffic to a pcapng file in the capture directory.
    CaptureStart { port: String },
    /// Stop capturing a port.
    CaptureStop { port: String },
}

/// The answer to a request.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Reply {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Reply {
    pub fn data<T: Serialize>(data: &T) -> Reply {
        match serde_json::to_value(data) {
            Ok(value) => Reply {
                ok: true,
                data: Some(value),
                error: None,
            },
            Err(err) => Reply::error(format!("cannot encode the reply: {err}")),
        }
    }

    pub fn error(message: impl Into<String>) -> Reply {
        Reply {
            ok: false,
            data: None,
            error: Some(message.into()),
        }
    }
}

/// `Info`'s reply.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SwitchInfo {
    pub network: String,
    /// A stable id for `tapswitch show` (like brctl's bridge id).
    pub switch_id: String,
    pub pid: u32,
    pub control: PathBuf,
    /// "172.17.0.1/16", or None with `--no-gateway`.
    pub gateway: Option<String>,
    pub gateway_mac: Option<MacAddr>,
    /// Seconds; 0 = never.
    pub ageing_time: u64,
    pub max_macs: usize,
    pub workers: usize,
    pub capture_dir: Option<PathBuf>,
    /// `root` or `rootless`: who runs the switch (empty from older switches).
    #[serde(default)]
    pub mode: String,
    /// How the workers read ports and shared the CPUs (flattened: the
    /// fields `reading`, `reading_changes`, `cpu_yields`, `cpu_moves`).
    #[serde(flatten)]
    pub dataplane: DataplaneMetrics,
}

/// One row of `Fdb`'s reply (brctl showmacs: port, MAC, local?, ageing timer).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FdbRow {
    pub port_no: PortId,
    pub port: String,
    pub mac: MacAddr,
    pub kind: EntryKind,
    pub is_local: bool,
    /// Seconds since the host was last heard.
    pub ageing_timer: f64,
}

impl FdbRow {
    /// A table row, with its port's name.
    pub fn new(entry: &switch::FdbEntry, port: String) -> FdbRow {
        FdbRow {
            port_no: entry.port,
            port,
            mac: entry.mac,
            kind: entry.kind,
            is_local: entry.kind == EntryKind::Local,
            ageing_timer: entry.age.as_secs_f64(),
        }
    }
}

/// `Fdb`'s reply.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FdbReply {
    pub entries: Vec<FdbRow>,
    pub stats: TableStats,
}

/// One port in `Ports`' reply.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PortInfo {
    pub port_no: PortId,
    pub name: String,
    /// "iface", "tap" or "gateway".
    pub kind: String,
    pub mtu: usize,
    /// Takes virtio-net headers (GSO and checksum offload pass through).
    pub offloads: bool,
    /// Receive lanes: one per worker where the port can be read per CPU
    /// (a fanout group of packet sockets, a multi-queue TAP), else 1.
    #[serde(default)]
    pub lanes: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    pub capturing: bool,
    pub stats: PortStats,
}

/// Where the control socket of `network` lives by default.
pub fn default_socket_path(network: &str) -> PathBuf {
    runtime_dir().join(format!("{network}.sock"))
}

/// `/run/tapswitch` for root, `$XDG_RUNTIME_DIR/tapswitch` otherwise
/// (falling back to `/tmp/tapswitch-<uid>`).
pub fn runtime_dir() -> PathBuf {
    if is_root() {
        return PathBuf::from("/run/tapswitch");
    }
    match std::env::var_os("XDG_RUNTIME_DIR") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir).join("tapswitch"),
        _ => std::env::temp_dir().join(format!("tapswitch-{}", current_uid())),
    }
}

/// Whether this process runs as root (which decides default paths).
pub fn is_root() -> bool {
    current_uid() == 0
}

fn current_uid() -> u32 {
    // /proc/self is always there on Linux; reading it keeps libc out of tools.
    std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m))
        .unwrap_or(u32::MAX)
}

/// Sends one request to the switch at `path` and returns its data.
pub fn call(path: &Path, request: &Request) -> Result<serde_json::Value> {
    let stream = UnixStream::connect(path).map_err(|err| {
        anyhow!(
            "no switch is listening on {} ({err}); start one with `tapswitch serve` or pass --control PATH",
            path.display()
        )
    })?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut line = serde_json::to_string(request)?;
    line.push('\n');
    (&stream)
        .write_all(line.as_bytes())
        .with_context(|| format!("writing to {}", path.display()))?;
    let mut answer = String::new();
    BufReader::new(&stream)
        .read_line(&mut answer)
        .with_context(|| format!("reading the answer from {}", path.display()))?;
    if answer.is_empty() {
        bail!(
            "the switch at {} closed the connection without answering",
            path.display()
        );
    }
    let reply: Reply = serde_json::from_str(&answer)
        .with_context(|| format!("the switch at {} sent a malformed answer", path.display()))?;
    if !reply.ok {
        bail!(
            "{}",
            reply
                .error
                .unwrap_or_else(|| "the switch refused without saying why".into())
        );
    }
    Ok(reply.data.unwrap_or(serde_json::Value::Null))
}

/// [`call`], decoding the data as `T`.
pub fn call_as<T: for<'de> Deserialize<'de>>(path: &Path, request: &Request) -> Result<T> {
    let data = call(path, request)?;
    serde_json::from_value(data)
        .with_context(|| format!("the switch at {} sent an unexpected answer", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_port_in_another_namespace_names_it() {
        let req = Request::PortAddIn {
            iface: "ts-0123456789ab".into(),
            netns: PathBuf::from("/proc/42/ns/net"),
            owner: Some("c1".into()),
        };
        let text = serde_json::to_string(&req).unwrap();
        assert_eq!(
            text,
            r#"{"cmd":"port_add_in","iface":"ts-0123456789ab","netns":"/proc/42/ns/net","owner":"c1"}"#
        );
        assert_eq!(serde_json::from_str::<Request>(&text).unwrap(), req);
    }

    #[test]
    fn requests_are_one_line_of_tagged_json() {
        let req = Request::PortAdd {
            iface: Some("veth1".into()),
            tap: None,
            owner: None,
        };
        assert_eq!(
            serde_json::to_string(&req).unwrap(),
            r#"{"cmd":"port_add","iface":"veth1"}"#
        );
        let back: Request = serde_json::from_str(r#"{"cmd":"port_rm","name":"veth1"}"#).unwrap();
        assert_eq!(
            back,
            Request::PortRm {
                name: "veth1".into()
            }
        );
    }

    #[test]
    fn switch_info_keeps_the_dataplane_fields_at_the_top_level() {
        let info = SwitchInfo {
            network: "bridge".into(),
            switch_id: "8000.0242ac110001".into(),
            pid: 7,
            control: PathBuf::from("/run/tapswitch/bridge.sock"),
            gateway: None,
            gateway_mac: None,
            ageing_time: 300,
            max_macs: 8192,
            workers: 2,
            capture_dir: None,
            mode: "root".into(),
            dataplane: DataplaneMetrics {
                reading: switch::dataplane::ReadMode::ByPort,
                reading_changes: 3,
                cpu_yields: 5,
                cpu_moves: 1,
            },
        };
        let json = serde_json::to_value(&info).unwrap();
        assert_eq!(json["reading"], "per port (traffic is heavy)");
        assert_eq!(json["reading_changes"], 3);
        assert_eq!(json["cpu_yields"], 5);
        assert_eq!(json["cpu_moves"], 1);
        assert!(json.get("dataplane").is_none());
        let back: SwitchInfo = serde_json::from_value(json).unwrap();
        assert_eq!(back.dataplane, info.dataplane);
    }

    #[test]
    fn default_path_is_named_after_the_network() {
        assert!(default_socket_path("bridge").ends_with("tapswitch/bridge.sock"));
    }
}
