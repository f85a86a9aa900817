//! The control socket: how `tapswitch fdb`, `ports`, `port add|rm`,
//! `capture start|stop`, `container create` and tests talk to a running
//! `serve`.
//!
//! A Unix stream socket; each request is one line of JSON and gets one line
//! of JSON back: `{"ok":true,"data":...}` or `{"ok":false,"error":"..."}`.
//! `monitor` is the exception: after its reply line the connection carries
//! one event per line until the client closes it. Limits (clients, request
//! size) are in `client_loop`.
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
    /// The gateway's services: flow counters, upstreams, ping sockets
    /// (`null` without a gateway).
    Services,
    /// The gateway's translated flows, like `conntrack -L`.
    Flows,
    /// An overlay network's VXLAN tunnel: members, remote MACs, counters
    /// (`null` off an overlay network).
    Tunnel,
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
    /// Attach TAP device `tap` of the network namespace at `netns` (created
    /// there if missing), through queues a helper opens in there.
    PortAddTapIn { tap: String, netns: PathBuf },
    /// Detach a port by name.
    PortRm { name: String },
    /// Start writing a port's traffic to a pcapng file in the capture directory.
    CaptureStart { port: String },
    /// Stop capturing a port.
    CaptureStop { port: String },
    /// Turn the per-decision trace on or off (for one port's frames only
    /// with `port`); its lines go to the switch's stderr and to `monitor`.
    Trace {
        on: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        port: Option<String>,
    },
    /// Stream the switch's events: one reply line `{"ok":true,...}`, then
    /// one JSON object per event until the client goes, and an empty line
    /// every 10 s while nothing happens (see `event_feed`).
    Monitor,
    /// Pin `mac` to port `port` (by name) as a static entry (`fdb add`).
    FdbAdd { mac: MacAddr, port: String },
    /// Remove the entry of `mac`, learned or static (`fdb del`).
    FdbDel { mac: MacAddr },
    /// Remove learned entries, of one port or all; static ones too with
    /// `include_static` (`fdb flush`).
    FdbFlush {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        port: Option<String>,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        include_static: bool,
    },
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
    /// How the workers read ports and shared the CPUs, and the kernel
    /// shortcut (flattened: the fields `reading`, `reading_changes`,
    /// `steering_waits`, `cpu_yields`, `cpu_moves`, `conversing_now`,
    /// `conversations`, `kernel_shortcut`:
    /// `{"state": "on"|"paused"|"off", "ports": N, "addresses": N}`,
    /// `light_scheduling`: `"real-time"`, `"short-slices"`,
    /// `"short-slices-real-time-refused"` or `"ordinary"`).
    #[serde(flatten)]
    pub dataplane: DataplaneMetrics,
}

/// One row of `Fdb`'s reply: brctl showmacs' fields (port, MAC, local?,
/// ageing timer), and those of `bridge -j fdb show` (`mac`, `ifname`,
/// `flags`, `state`, `vlan`), so scripts written for either read it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FdbRow {
    pub port_no: PortId,
    pub port: String,
    pub mac: MacAddr,
    pub kind: EntryKind,
    pub is_local: bool,
    /// Seconds since the host was last heard.
    pub ageing_timer: f64,
    /// The port's name again, under `bridge -j`'s key.
    #[serde(default)]
    pub ifname: String,
    /// `["static"]` for a static entry, `["local"]` for the switch's own
    /// address, `[]` for a learned one.
    #[serde(default)]
    pub flags: Vec<String>,
    /// As `bridge -j` says it: "static", "permanent" (local) or "" (learned).
    #[serde(default)]
    pub state: String,
    /// Always null: the table is not VLAN-aware (one table for all tags).
    #[serde(default)]
    pub vlan: Option<u16>,
    /// On a VXLAN tunnel port: the host (underlay address and port) the
    /// MAC is behind, as `bridge fdb` shows `dst` on a vxlan device.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub via: Option<String>,
}

impl FdbRow {
    /// A table row, with its port's name.
    pub fn new(entry: &switch::FdbEntry, port: String) -> FdbRow {
        let (flags, state): (&[&str], &str) = match entry.kind {
            EntryKind::Dynamic => (&[], ""),
            EntryKind::Static => (&["static"], "static"),
            EntryKind::Local => (&["local"], "permanent"),
        };
        FdbRow {
            port_no: entry.port,
            ifname: port.clone(),
            port,
            mac: entry.mac,
            kind: entry.kind,
            is_local: entry.kind == EntryKind::Local,
            ageing_timer: entry.age.as_secs_f64(),
            flags: flags.iter().map(|f| f.to_string()).collect(),
            state: state.to_string(),
            vlan: None,
            via: None,
        }
    }
}

/// `FdbAdd`'s and `FdbDel`'s reply: the entry replaced or removed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FdbEditReply {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous: Option<PreviousRow>,
}

/// An entry an edit replaced or removed, with its port's name.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PreviousRow {
    pub kind: EntryKind,
    pub port: String,
}

/// `FdbFlush`'s reply.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FdbFlushReply {
    pub flushed: usize,
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
    /// How a port of several lanes is read now (per CPU, or by one
    /// worker), and whether it still follows the switch's mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reading: Option<switch::dataplane::PortReading>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    pub capturing: bool,
    /// The port's interface is down or has no carrier (a veth whose peer
    /// is down): what it learned is forgotten, as the Linux bridge does.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub link_down: bool,
    pub stats: PortStats,
}

/// Where the control socket of `network` lives by default.
pub fn default_socket_path(network: &str) -> PathBuf {
    runtime_dir().join(format!("{network}.sock"))
}

/// Where root's switch for `network` listens: ordinary users look there
/// when they have no switch of their own.
pub fn root_socket_path(network: &str) -> PathBuf {
    Path::new(ROOT_RUNTIME_DIR).join(format!("{network}.sock"))
}

const ROOT_RUNTIME_DIR: &str = "/run/tapswitch";

/// `/run/tapswitch` for root, `$XDG_RUNTIME_DIR/tapswitch` otherwise
/// (falling back to `/tmp/tapswitch-<uid>`).
pub fn runtime_dir() -> PathBuf {
    if is_root() {
        return PathBuf::from(ROOT_RUNTIME_DIR);
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
    let stream = connect(path)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    Ok(send(path, &stream, request)?.0)
}

/// Connects to the switch at `path`; the error says how to start one, or
/// who may talk to it.
pub fn connect(path: &Path) -> Result<UnixStream> {
    UnixStream::connect(path).map_err(|err| connect_error(path, &err))
}

/// Sends `request` on `stream` and reads the reply line. The reader is
/// handed back for what the switch streams after the reply (`monitor`).
pub fn send<'a>(
    path: &Path,
    stream: &'a UnixStream,
    request: &Request,
) -> Result<(serde_json::Value, BufReader<&'a UnixStream>)> {
    let mut line = serde_json::to_string(request)?;
    line.push('\n');
    (&*stream)
        .write_all(line.as_bytes())
        .with_context(|| format!("writing to {}", path.display()))?;
    let mut reader = BufReader::new(stream);
    let mut answer = String::new();
    reader
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
    Ok((reply.data.unwrap_or(serde_json::Value::Null), reader))
}

fn connect_error(path: &Path, err: &std::io::Error) -> anyhow::Error {
    if err.kind() == std::io::ErrorKind::PermissionDenied {
        return anyhow!(
            "permission denied on the control socket {}: run as root or as the switch's user",
            path.display()
        );
    }
    let serve = match network_of_socket(path) {
        Some(network) if network == DEFAULT_NETWORK => "tapswitch serve".to_string(),
        Some(network) => format!("tapswitch serve --network {network}"),
        None => format!("tapswitch serve --control {}", path.display()),
    };
    anyhow!(
        "no switch is listening on {} ({err}); start one with `{serve}` or pass --control PATH",
        path.display()
    )
}

/// The network whose default socket `path` is, if it is one.
fn network_of_socket(path: &Path) -> Option<String> {
    let network = path.file_stem()?.to_str()?;
    let is_default = path == default_socket_path(network) || path == root_socket_path(network);
    is_default.then(|| network.to_string())
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
        let req = Request::PortAddTapIn {
            tap: "tap0".into(),
            netns: PathBuf::from("/proc/42/ns/net"),
        };
        let text = serde_json::to_string(&req).unwrap();
        assert_eq!(
            text,
            r#"{"cmd":"port_add_tap_in","tap":"tap0","netns":"/proc/42/ns/net"}"#
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
    fn fdb_edit_requests_are_tagged_json() {
        let add = Request::FdbAdd {
            mac: "02:00:00:00:00:01".parse().unwrap(),
            port: "p1".into(),
        };
        assert_eq!(
            serde_json::to_string(&add).unwrap(),
            r#"{"cmd":"fdb_add","mac":"02:00:00:00:00:01","port":"p1"}"#
        );
        let flush: Request = serde_json::from_str(r#"{"cmd":"fdb_flush"}"#).unwrap();
        assert_eq!(
            flush,
            Request::FdbFlush {
                port: None,
                include_static: false
            }
        );
        let bad = serde_json::from_str::<Request>(r#"{"cmd":"fdb_del","mac":"nonsense"}"#);
        assert!(bad.is_err());
    }

    #[test]
    fn fdb_rows_carry_bridge_json_fields() {
        let entry = switch::FdbEntry {
            mac: "02:00:00:00:00:01".parse().unwrap(),
            port: PortId(3),
            kind: EntryKind::Static,
            age: Duration::ZERO,
        };
        let json = serde_json::to_value(FdbRow::new(&entry, "p3".into())).unwrap();
        assert_eq!(json["mac"], "02:00:00:00:00:01");
        assert_eq!(json["ifname"], "p3");
        assert_eq!(json["flags"], serde_json::json!(["static"]));
        assert_eq!(json["state"], "static");
        assert!(json["vlan"].is_null());
        // The fields of before stay.
        assert_eq!(json["port"], "p3");
        assert_eq!(json["port_no"], 3);
        assert_eq!(json["is_local"], false);
        let learned = switch::FdbEntry {
            kind: EntryKind::Dynamic,
            ..entry
        };
        let json = serde_json::to_value(FdbRow::new(&learned, "p3".into())).unwrap();
        assert_eq!(json["flags"], serde_json::json!([]));
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
                steering_waits: 2,
                cpu_yields: 5,
                cpu_moves: 1,
                conversing_now: 0,
                conversations: 2,
                kernel_shortcut: Default::default(),
                light_scheduling: switch::dataplane::LightScheduling::ShortSlicesRealTimeRefused,
            },
        };
        let json = serde_json::to_value(&info).unwrap();
        assert_eq!(json["reading"], "per port (traffic is heavy)");
        assert_eq!(json["reading_changes"], 3);
        assert_eq!(json["steering_waits"], 2);
        assert_eq!(json["cpu_yields"], 5);
        assert_eq!(json["cpu_moves"], 1);
        assert_eq!(json["conversations"], 2);
        assert_eq!(json["light_scheduling"], "short-slices-real-time-refused");
        assert!(json.get("dataplane").is_none());
        let back: SwitchInfo = serde_json::from_value(json).unwrap();
        assert_eq!(back.dataplane, info.dataplane);
    }

    #[test]
    fn advice_names_the_network_or_the_socket_it_was_given() {
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        let text = connect_error(&default_socket_path("nosuch"), &refused).to_string();
        assert!(
            text.contains("`tapswitch serve --network nosuch`"),
            "{text}"
        );
        let text = connect_error(&default_socket_path("bridge"), &refused).to_string();
        assert!(text.contains("`tapswitch serve`"), "{text}");
        let text = connect_error(Path::new("/tmp/x/my.sock"), &refused).to_string();
        assert!(
            text.contains("`tapswitch serve --control /tmp/x/my.sock`"),
            "{text}"
        );
        let denied = std::io::Error::from(std::io::ErrorKind::PermissionDenied);
        let text = connect_error(&root_socket_path("bridge"), &denied).to_string();
        assert!(
            text.starts_with("permission denied on the control socket /run/tapswitch/bridge.sock: run as root or as the switch's user"),
            "{text}"
        );
        assert!(!text.contains("start one"), "{text}");
    }

    #[test]
    fn default_path_is_named_after_the_network() {
        assert!(default_socket_path("bridge").ends_with("tapswitch/bridge.sock"));
    }
}
