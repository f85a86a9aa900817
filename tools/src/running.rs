//! A running switch as the control socket sees it: the dataplane plus what
//! only the command line knows about each port (how it was opened, which
//! container it belongs to).

use std::collections::BTreeMap;
use std::sync::{Mutex, PoisonError, RwLock};

use anyhow::{Result, anyhow, bail};
use crossbeam_channel::Receiver;
use switch::PortId;
use switch::dataplane::{Dataplane, GATEWAY_PORT_NAME, PortEvent, TraceSettings};

use crate::control::{
    FdbEditReply, FdbFlushReply, FdbReply, FdbRow, PortInfo, PreviousRow, Reply, Request,
    SwitchInfo,
};

/// How to open a port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PortSpec {
    /// An existing interface, through an AF_PACKET socket.
    Iface(String),
    /// A TAP device, created if missing.
    Tap(String),
    /// An interface of another network namespace, opened there by a helper
    /// (rootless mode; see `crate::rootless`).
    InNamespace {
        iface: String,
        netns: std::path::PathBuf,
    },
    /// A TAP device of another network namespace, opened (or created)
    /// there by a helper.
    TapInNamespace {
        tap: String,
        netns: std::path::PathBuf,
    },
    /// The host's own leg on the network (`serve --host-iface`): a TAP
    /// created with an address and the network's MTU.
    HostIface(crate::host_iface::HostIfaceSpec),
}

impl PortSpec {
    pub fn name(&self) -> &str {
        match self {
            PortSpec::Iface(name) | PortSpec::Tap(name) => name,
            PortSpec::InNamespace { iface, .. } => iface,
            PortSpec::TapInNamespace { tap, .. } => tap,
            PortSpec::HostIface(spec) => &spec.name,
        }
    }
}

#[derive(Debug, Clone)]
struct PortMeta {
    id: PortId,
    owner: Option<String>,
}

/// The switch `serve` runs. Shared by the control server's threads.
pub struct RunningSwitch {
    dataplane: RwLock<Option<Dataplane>>,
    ports: Mutex<BTreeMap<String, PortMeta>>,
    info: SwitchInfo,
    events: Receiver<PortEvent>,
    /// Where the gateway's services learn about the network's containers
    /// (set by `serve`).
    services: Mutex<Option<crate::gateway_services::ServicesSource>>,
    this: std::sync::OnceLock<std::sync::Weak<RunningSwitch>>,
    /// Containers whose port was removed (their record may outlive it for
    /// a moment); also the lock that makes the gateway's updates take turns.
    removed: Mutex<std::collections::HashSet<String>>,
    /// The VXLAN tunnel of an overlay network, by port name (`fdb` says
    /// which host each MAC on it is behind).
    tunnel: std::sync::OnceLock<(String, ports::vxlan::Tunnel)>,
}

/// How long a switch waits for `container create` to record a container
/// whose port it attached.
const RECORD_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

impl std::fmt::Debug for RunningSwitch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RunningSwitch({})", self.info.network)
    }
}

impl RunningSwitch {
    pub fn new(dataplane: Dataplane, info: SwitchInfo) -> Self {
        let events = dataplane.events().clone();
        RunningSwitch {
            dataplane: RwLock::new(Some(dataplane)),
            ports: Mutex::default(),
            info,
            events,
            services: Mutex::default(),
            this: std::sync::OnceLock::new(),
            removed: Mutex::default(),
            tunnel: std::sync::OnceLock::new(),
        }
    }

    /// Lets the switch hand itself to its own helper threads.
    pub fn set_self(self: &std::sync::Arc<Self>) {
        let _ = self.this.set(std::sync::Arc::downgrade(self));
    }

    /// Lets a container attached while the switch runs update the
    /// gateway's names and published ports from IPAM.
    pub fn set_services_source(&self, source: crate::gateway_services::ServicesSource) {
        *self.services.lock().unwrap_or_else(PoisonError::into_inner) = Some(source);
    }

    /// Where the gateway's services are read from, once set.
    fn services_source(&self) -> Option<crate::gateway_services::ServicesSource> {
        self.services
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// A container's port was attached: once `container create` has
    /// recorded the container (it commits after attaching), reads IPAM
    /// again and tells the gateway. Waits on its own thread, at most
    /// [`RECORD_WAIT`].
    fn refresh_services_for(&self, container: String) {
        let Some(source) = self.services_source() else {
            return;
        };
        let Some(switch) = self.this.get().and_then(std::sync::Weak::upgrade) else {
            return;
        };
        self.removed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&container);
        let spawned = std::thread::Builder::new()
            .name("tapswitch-ipam".into())
            .spawn(move || {
                let deadline = std::time::Instant::now() + RECORD_WAIT;
                while std::time::Instant::now() < deadline {
                    // Updates take turns, and one for a container removed
                    // meanwhile is dropped: its ports must stay closed.
                    let removed = switch.removed.lock().unwrap_or_else(PoisonError::into_inner);
                    if removed.contains(&container) {
                        return;
                    }
                    match source.setup_with(&container, &removed) {
                        Ok(Some(setup)) => return switch.update_services(setup),
                        Ok(None) => {
                            drop(removed);
                            std::thread::sleep(std::time::Duration::from_millis(50));
                        }
                        Err(err) => {
                            log::warn!("not updating the gateway's services: {err:#}");
                            return;
                        }
                    }
                }
                let until = if source.state.shared().is_some() {
                    "the shared store's next change"
                } else {
                    "the switch's restart"
                };
                log::warn!(
                    "container {container} was not recorded in time: its names and published ports wait for {until}"
                );
            });
        if let Err(err) = spawned {
            log::warn!("not updating the gateway's services: {err}");
        }
    }

    fn update_services(&self, setup: switch::host_side::ServicesSetup) {
        let published = if setup.outbound {
            setup.published
        } else {
            Vec::new()
        };
        let failed = self
            .with_dataplane(|d| Ok(d.update_services(setup.names, published)))
            .ok()
            .flatten()
            .unwrap_or_default();
        for failure in failed {
            log::warn!("cannot listen on published port {failure}");
        }
    }

    pub fn info(&self) -> &SwitchInfo {
        &self.info
    }

    /// Ports that broke on their own (see `PortEvent`).
    pub fn events(&self) -> Receiver<PortEvent> {
        self.events.clone()
    }

    pub fn port_count(&self) -> usize {
        self.with_dataplane(|d| Ok(d.ports().len())).unwrap_or(0)
    }

    fn with_dataplane<T>(&self, f: impl FnOnce(&Dataplane) -> Result<T>) -> Result<T> {
        let guard = self
            .dataplane
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        let dataplane = guard
            .as_ref()
            .ok_or_else(|| anyhow!("the switch is shutting down"))?;
        f(dataplane)
    }

    /// Opens and attaches a port (the dataplane decides its lanes).
    pub fn attach(&self, spec: &PortSpec, owner: Option<String>) -> Result<PortInfo> {
        let name = spec.name();
        let mut ports = self.ports.lock().unwrap_or_else(PoisonError::into_inner);
        if ports.contains_key(name) || name == GATEWAY_PORT_NAME {
            bail!(
                "port {name} is already attached to this switch; remove it first with `tapswitch port rm {name}`"
            );
        }
        let id = self.with_dataplane(|dataplane| {
            let id = match spec {
                PortSpec::Iface(name) => {
                    dataplane.add_port(name, |lanes| ports::packet::open_lanes(name, lanes))?
                }
                PortSpec::Tap(name) => dataplane.add_port(name, |lanes| {
                    let tap = ports::tap::open_lanes(name, lanes)?;
                    if tap.created {
                        log::info!("created TAP device {name}; it is removed when the port is");
                    }
                    Ok(tap.port)
                })?,
                PortSpec::InNamespace { iface, netns } => dataplane.add_port(iface, |lanes| {
                    crate::rootless::helper::open_packet_port(netns, iface, lanes)
                })?,
                PortSpec::TapInNamespace { tap, netns } => dataplane.add_port(tap, |lanes| {
                    let opened = crate::rootless::helper::open_tap_port(netns, tap, lanes)?;
                    if opened.created {
                        log::info!(
                            "created TAP device {tap} in {}; it is removed when the port is",
                            netns.display()
                        );
                    }
                    Ok(opened.port)
                })?,
                PortSpec::HostIface(spec) => dataplane.add_port(&spec.name, |lanes| {
                    crate::host_iface::open_port(spec, lanes)
                })?,
            };
            Ok(id)
        })?;
        let container = owner.clone();
        ports.insert(name.to_string(), PortMeta { id, owner });
        drop(ports);
        if let Some(container) = container {
            self.refresh_services_for(container);
        }
        let info = self.port_info(id)?;
        log::info!(
            "port {} {} attached ({}, mtu {}, offloads {}{})",
            info.port_no,
            info.name,
            info.kind,
            info.mtu,
            if info.offloads { "on" } else { "off" },
            if info.lanes > 1 {
                format!(", {} lanes", info.lanes)
            } else {
                String::new()
            }
        );
        Ok(info)
    }

    /// Attaches an overlay network's tunnel port (opened by
    /// `crate::overlay_link`); only one per switch.
    pub fn attach_tunnel(
        &self,
        name: &str,
        port: ports::OpenedPort,
        tunnel: ports::vxlan::Tunnel,
    ) -> Result<PortInfo> {
        if self.tunnel.set((name.to_string(), tunnel)).is_err() {
            bail!("this switch already has its tunnel port");
        }
        let mut ports = self.ports.lock().unwrap_or_else(PoisonError::into_inner);
        let id = self.with_dataplane(|d| Ok(d.add_port(name, |_| Ok(port))?))?;
        ports.insert(name.to_string(), PortMeta { id, owner: None });
        drop(ports);
        let info = self.port_info(id)?;
        log::info!(
            "port {} {} attached ({}, mtu {})",
            info.port_no,
            info.name,
            info.kind,
            info.mtu
        );
        Ok(info)
    }

    /// Forgets `macs` in the MAC table (learned behind a tunnel member that
    /// left): frames to them are flooded again instead of sent to a dead host.
    pub fn forget_macs(&self, macs: &[switch::MacAddr]) {
        let _ = self.with_dataplane(|d| {
            for mac in macs {
                let _ = d.engine().table().remove(*mac);
            }
            Ok(())
        });
    }

    /// Puts `added` on the tunnel port and takes `removed` off it in the
    /// MAC table: a member registered them, or no longer does (see
    /// `ipam::membership`). A MAC the table has on another port stays
    /// there, because traffic wins over registrations.
    pub fn set_registered_macs(&self, added: &[switch::MacAddr], removed: &[switch::MacAddr]) {
        let Some((name, _)) = self.tunnel.get() else {
            return;
        };
        let ports = self.ports.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(tunnel) = ports.get(name).map(|meta| meta.id) else {
            return;
        };
        drop(ports);
        let _ = self.with_dataplane(|d| {
            let now = d.clock().now();
            let table = d.engine().table();
            let on_tunnel = |mac: &switch::MacAddr| table.lookup(*mac, now) == Some(tunnel);
            for mac in added {
                if table.lookup(*mac, now).is_none() {
                    table.learn(*mac, tunnel, now);
                }
            }
            if !added.is_empty() {
                d.table_learned();
            }
            for mac in removed.iter().filter(|mac| on_tunnel(mac)) {
                let _ = table.remove(*mac);
            }
            Ok(())
        });
    }

    /// The tunnel's state, for `tapswitch stats` (`None` off an overlay network).
    fn tunnel_report(&self) -> Option<crate::tunnel_report::TunnelReport> {
        let (port, tunnel) = self.tunnel.get()?;
        Some(crate::tunnel_report::TunnelReport::new(port, tunnel))
    }

    /// Detaches a port by name.
    pub fn detach(&self, name: &str) -> Result<()> {
        let mut ports = self.ports.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(meta) = ports.get(name).cloned() else {
            bail!("no port named {name} on this switch; `tapswitch ports` lists them");
        };
        self.with_dataplane(|d| Ok(d.remove_port(meta.id)))?;
        ports.remove(name);
        drop(ports);
        log::info!("port {} {name} removed", meta.id);
        if let Some(container) = &meta.owner {
            // Before `container rm` goes on: its published ports are free
            // again once this returns.
            self.forget_container(container);
        }
        Ok(())
    }

    /// Reads the store again and tells the gateway: the network's
    /// containers changed, maybe on another host (see `store_follower`).
    pub fn refresh_services(&self) {
        let Some(source) = self.services_source() else {
            return;
        };
        // Updates take turns with those of attached and removed ports.
        let removed = self.removed.lock().unwrap_or_else(PoisonError::into_inner);
        match source.setup_without(&removed) {
            Ok(setup) => self.update_services(setup),
            Err(err) => log::warn!("not updating the gateway's services: {err:#}"),
        }
    }

    /// A container's port was removed: the gateway forgets its name and
    /// stops listening on its published ports.
    fn forget_container(&self, container: &str) {
        let Some(source) = self.services_source() else {
            return;
        };
        let mut removed = self.removed.lock().unwrap_or_else(PoisonError::into_inner);
        removed.insert(container.to_string());
        match source.setup_without(&removed) {
            Ok(setup) => self.update_services(setup),
            Err(err) => log::warn!("not updating the gateway's services: {err:#}"),
        }
    }

    /// Forgets a port the dataplane already removed on its own.
    pub fn forget(&self, name: &str) {
        self.ports
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(name);
    }

    pub fn fdb(&self) -> Result<FdbReply> {
        self.with_dataplane(|d| {
            // Ages as the kernel saw the hosts it forwarded for.
            d.refresh_from_kernel_shortcut();
            let ports = d.ports();
            let table = d.engine().table();
            let tunnel = self.tunnel.get();
            let entries = table
                .entries(d.clock().now())
                .into_iter()
                .map(|e| {
                    let mut row = FdbRow::new(&e, ports.name_of(e.port));
                    if let Some((name, tunnel)) = tunnel
                        && *name == row.port
                    {
                        row.via = tunnel.endpoint_of(e.mac).map(|vtep| vtep.to_string());
                    }
                    row
                })
                .collect();
            Ok(FdbReply {
                entries,
                stats: table.stats(),
            })
        })
    }

    pub fn ports(&self) -> Result<Vec<PortInfo>> {
        let ids: Vec<PortId> =
            self.with_dataplane(|d| Ok(d.ports().iter().map(|p| p.id).collect()))?;
        ids.into_iter().map(|id| self.port_info(id)).collect()
    }

    fn port_info(&self, id: PortId) -> Result<PortInfo> {
        let owner = {
            let ports = self.ports.lock().unwrap_or_else(PoisonError::into_inner);
            ports
                .values()
                .find(|m| m.id == id)
                .and_then(|m| m.owner.clone())
        };
        self.with_dataplane(|d| {
            let set = d.ports();
            let port = set.get(id).ok_or_else(|| anyhow!("port {id} is gone"))?;
            Ok(PortInfo {
                port_no: id,
                name: port.name.clone(),
                kind: port.kind.to_string(),
                // As the kernel has it now, though the switch may not
                // have looked since (it looks each second while frames
                // flow, see `ports::mtu`).
                mtu: port.tx.refresh_mtu(),
                offloads: port.tx.offloads(),
                lanes: d.lanes_of(id),
                reading: d.reading_of(id),
                owner,
                capturing: port.is_capturing(),
                // As read just above, with the MTU.
                link_down: port.tx.link_up() == Some(false),
                stats: d.port_stats(id).unwrap_or_else(|| port.counters.snapshot()),
            })
        })
    }

    /// The switch's settings with what changes while it runs.
    pub fn live_info(&self) -> Result<SwitchInfo> {
        self.with_dataplane(|dataplane| {
            let mut info = self.info.clone();
            info.dataplane = dataplane.metrics();
            Ok(info)
        })
    }

    /// Answers one control request.
    pub fn handle(&self, request: Request) -> Reply {
        let result = match request {
            Request::Info => self.live_info().map(|info| Reply::data(&info)),
            Request::Fdb => self.fdb().map(|r| Reply::data(&r)),
            Request::Ports => self.ports().map(|r| Reply::data(&r)),
            Request::Services => self
                .with_dataplane(|d| Ok(d.services_report()))
                .map(|r| Reply::data(&r)),
            Request::Tunnel => Ok(Reply::data(&self.tunnel_report())),
            Request::Flows => self
                .with_dataplane(|d| Ok(flow_rows(d.flows().unwrap_or_default())))
                .map(|r| Reply::data(&r)),
            Request::PortAdd { iface, tap, owner } => {
                let spec = match (iface, tap) {
                    (Some(name), None) => Ok(PortSpec::Iface(name)),
                    (None, Some(name)) => Ok(PortSpec::Tap(name)),
                    _ => Err(anyhow!("port_add takes exactly one of iface and tap")),
                };
                spec.and_then(|spec| self.attach(&spec, owner))
                    .map(|info| Reply::data(&info))
            }
            Request::PortAddIn {
                iface,
                netns,
                owner,
            } => self
                .attach(&PortSpec::InNamespace { iface, netns }, owner)
                .map(|info| Reply::data(&info)),
            Request::PortAddTapIn { tap, netns } => self
                .attach(&PortSpec::TapInNamespace { tap, netns }, None)
                .map(|info| Reply::data(&info)),
            Request::PortRm { name } => self
                .detach(&name)
                .map(|()| Reply::data(&serde_json::Value::Null)),
            Request::CaptureStart { port } => self
                .set_capture(&port, true)
                .map(|()| Reply::data(&serde_json::Value::Null)),
            Request::CaptureStop { port } => self
                .set_capture(&port, false)
                .map(|()| Reply::data(&serde_json::Value::Null)),
            Request::Trace { on, port } => self
                .set_trace(TraceSettings { on, port })
                .map(|settings| Reply::data(&settings)),
            // A stream: the control server answers it (see control_server.rs).
            Request::Monitor => Err(anyhow!(
                "monitor is a stream; send it on its own connection"
            )),
            Request::FdbAdd { mac, port } => self.fdb_add(mac, &port).map(|r| Reply::data(&r)),
            Request::FdbDel { mac } => self.fdb_del(mac).map(|r| Reply::data(&r)),
            Request::FdbFlush {
                port,
                include_static,
            } => self
                .fdb_flush(port.as_deref(), include_static)
                .map(|r| Reply::data(&r)),
        };
        result.unwrap_or_else(|err| Reply::error(format!("{err:#}")))
    }

    /// `fdb add MAC PORT`: pins `mac` to the port named `port`.
    fn fdb_add(&self, mac: switch::MacAddr, port: &str) -> Result<FdbEditReply> {
        self.with_dataplane(|d| {
            let ports = d.ports();
            let id = user_port(&ports, port)?;
            let previous = d.engine().table().add_static(mac, id)?;
            // The kernel forwards by the new entry once this returns.
            d.sync_kernel_shortcut();
            log::info!("static entry {mac} on port {port} added");
            Ok(FdbEditReply {
                previous: previous.map(|p| PreviousRow {
                    kind: p.kind,
                    port: ports.name_of(p.port),
                }),
            })
        })
    }

    /// `fdb del MAC`.
    fn fdb_del(&self, mac: switch::MacAddr) -> Result<FdbEditReply> {
        self.with_dataplane(|d| {
            let removed = d.engine().table().remove(mac)?;
            // The kernel forwards by it no more once this returns.
            d.sync_kernel_shortcut();
            let port = d.ports().name_of(removed.port);
            log::info!("entry {mac} on port {port} removed");
            Ok(FdbEditReply {
                previous: Some(PreviousRow {
                    kind: removed.kind,
                    port,
                }),
            })
        })
    }

    /// `fdb flush [--port P] [--include-static]`.
    fn fdb_flush(&self, port: Option<&str>, include_static: bool) -> Result<FdbFlushReply> {
        self.with_dataplane(|d| {
            let port = port.map(|name| user_port(&d.ports(), name)).transpose()?;
            let flushed = d.engine().table().flush(switch::FlushScope {
                port,
                include_static,
            });
            d.sync_kernel_shortcut();
            log::info!("flushed {flushed} MAC table entries");
            Ok(FdbFlushReply { flushed })
        })
    }

    /// Starts or stops recording a port into its capture file.
    fn set_capture(&self, name: &str, on: bool) -> Result<()> {
        self.with_dataplane(|d| {
            let ports = d.ports();
            let port = ports
                .by_name(name)
                .ok_or_else(|| anyhow!("no port named {name} on this switch; `tapswitch ports` lists them"))?;
            let capture = port.capture.as_ref().ok_or_else(|| {
                anyhow!("this switch runs without --capture DIR; restart it with `tapswitch serve --capture DIR ...` to capture")
            })?;
            if on {
                capture.start();
            } else {
                capture.stop();
            }
            // A capture sees every frame: the kernel forwards none while one runs.
            d.sync_kernel_shortcut();
            log::info!("capture of port {name} {} ({})", if on { "started" } else { "stopped" }, capture.path().display());
            Ok(())
        })
    }

    /// A subscription to the switch's events, with the ports it has now
    /// (to name the ports the events mention).
    pub fn subscribe(&self) -> Result<(switch::Subscription, Vec<(PortId, String)>)> {
        self.with_dataplane(|d| {
            let subscription = d.event_bus().subscribe();
            let ports = d.ports().iter().map(|p| (p.id, p.name.clone())).collect();
            Ok((subscription, ports))
        })
    }

    /// Seconds on the switch's clock (the time events carry).
    pub fn now_secs(&self) -> f64 {
        self.with_dataplane(|d| Ok(d.clock().now().as_nanos() as f64 / 1e9))
            .unwrap_or(0.0)
    }

    /// Turns the per-decision trace on or off (`tapswitch trace`).
    pub fn set_trace(&self, settings: TraceSettings) -> Result<TraceSettings> {
        self.with_dataplane(|d| {
            if let Some(port) = &settings.port
                && d.ports().by_name(port).is_none()
            {
                bail!("no port named {port} on this switch; `tapswitch ports` lists them");
            }
            d.set_trace(settings.clone());
            let state = if settings.on { "on" } else { "off" };
            match &settings.port {
                Some(port) => log::info!("trace {state} for port {port}"),
                None => log::info!("trace {state}"),
            }
            Ok(d.trace_settings())
        })
    }

    /// Stops the dataplane and closes every port.
    pub fn shutdown(&self) {
        let dataplane = self
            .dataplane
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(dataplane) = dataplane {
            dataplane.shutdown();
        }
    }
}

/// The number of a user port by name: the gateway's port takes no static
/// entries (its own address is already a local entry there).
fn user_port(ports: &switch::PortSet, name: &str) -> Result<PortId> {
    if name == GATEWAY_PORT_NAME {
        bail!(
            "port {name} is the gateway's: it holds only the switch's own address; name a port from `tapswitch ports`"
        );
    }
    ports
        .by_name(name)
        .map(|port| port.id)
        .ok_or_else(|| anyhow!("no port named {name} on this switch; `tapswitch ports` lists them"))
}

/// `flows`' reply: each flow's fields and its `conntrack -L`-like line.
fn flow_rows(flows: Vec<switch::flows::FlowInfo>) -> Vec<serde_json::Value> {
    flows
        .into_iter()
        .map(|flow| {
            let mut row = serde_json::to_value(&flow).unwrap_or_default();
            if let Some(fields) = row.as_object_mut() {
                fields.insert("line".into(), flow.to_string().into());
            }
            row
        })
        .collect()
}
