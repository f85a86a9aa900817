//! `serve --network NAME --underlay IP` of an overlay network: the switch's
//! tunnel port and the thread that keeps it in step with the store.
//!
//! The tunnel (`ports::vxlan`) is attached as port `vxlan0`. A thread of
//! its own then loops, about once a second:
//!
//! 1. **register**: `ipam::registry::Registrar` keeps this switch's
//!    registration (its endpoint, under a lease of `--lease-ttl`) alive,
//!    and rewrites it when the MACs on the local ports change (looked at
//!    once a second at most, so a busy network writes etcd at that rate
//!    at worst);
//! 2. **watch**: `ipam::registry::MembershipFeed` reports the other
//!    members (switches and peers) and `ipam::membership::Membership`
//!    turns that into actions;
//! 3. **act**: a member that arrives is added to the tunnel's flood list;
//!    one that leaves (stopped, or its lease expired) is removed, and the
//!    MACs behind it are forgotten by the tunnel and by the switch's table;
//!    the MACs a member registered are put behind it before its first
//!    frame (unless traffic put them elsewhere).
//!
//! While etcd does not answer nothing changes: the known members stay, so
//! forwarding between them goes on. One line is logged when the store goes
//! away and one when it is back; then the registration is renewed or made
//! afresh and the whole member list read again, so departures missed
//! meanwhile are acted on.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use ipam::membership::{Action, Event, Membership, Registration};
use ipam::registry::{MembershipFeed, Registrar, Registry};
use ipam::{Network, Store};
use ports::vxlan::{Tunnel, TunnelConfig};

use crate::running::RunningSwitch;

/// The tunnel port's name on every switch.
pub const TUNNEL_PORT: &str = "vxlan0";
/// The longest the loop waits for membership changes before it looks at
/// its own lease and the stop flag again.
const WATCH_WAIT: Duration = Duration::from_secs(1);
/// How often the local MACs are compared with the registered ones: the
/// bound on how often a switch rewrites its registration.
const MAC_PUBLISH_INTERVAL: Duration = Duration::from_secs(1);

/// The tunnel and its member thread; stopped (and unregistered) by
/// [`OverlayLink::stop`].
#[derive(Debug)]
pub struct OverlayLink {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

/// What `serve` knows about the overlay network it joins.
#[derive(Debug, Clone)]
pub struct OverlaySetup {
    pub network: Network,
    pub underlay: IpAddr,
    pub lease_ttl: Duration,
}

impl OverlayLink {
    /// Opens the tunnel on `setup.underlay`, attaches it to `switch`, and
    /// starts registering and watching in `store`.
    pub fn start(switch: &Arc<RunningSwitch>, store: &Store, setup: OverlaySetup) -> Result<Self> {
        let network = &setup.network;
        let overlay = network
            .overlay()
            .ok_or_else(|| anyhow!("network {} is not an overlay network", network.name))?;
        let registry = Registry::new(store, &network.name).ok_or_else(|| {
            anyhow!(
                "network {} is an overlay network: serving it needs the shared store it lives in (--store etcd://...)",
                network.name
            )
        })?;
        let local = SocketAddr::new(setup.underlay, overlay.vxlan_port);
        crate::underlay_fit::check(network, setup.underlay)?;
        let config = TunnelConfig {
            name: TUNNEL_PORT.to_string(),
            local,
            vni: overlay.vni,
            mtu: usize::try_from(network.link_mtu()).unwrap_or(1450),
            local_only: switch.info().gateway_mac.into_iter().collect(),
        };
        let (tunnel, port) = Tunnel::open(&config).with_context(|| {
            format!(
                "--underlay {}: cannot open the VXLAN socket on {local}",
                setup.underlay
            )
        })?;
        switch.attach_tunnel(TUNNEL_PORT, port, tunnel.clone())?;
        let record = Registration {
            network: network.name.clone(),
            vni: overlay.vni,
            endpoint: local,
            hostname: std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_string())
                .unwrap_or_default(),
            macs: Vec::new(),
            lease: Default::default(),
            registered: ipam::store::now(),
        };
        let member_loop = MemberLoop {
            registrar: Registrar::new(
                registry.clone(),
                record.clone(),
                setup.lease_ttl,
                Instant::now(),
            ),
            record,
            next_mac_check: Instant::now(),
            feed: MembershipFeed::new(registry),
            membership: Membership::new(overlay.vni, Some(local)),
            tunnel,
            switch: switch.clone(),
            store_away: false,
        };
        let stop = Arc::new(AtomicBool::new(false));
        let thread = std::thread::Builder::new()
            .name("tapswitch-overlay".into())
            .spawn({
                let stop = stop.clone();
                move || member_loop.run(&stop)
            })
            .context("starting the overlay thread")?;
        log::info!(
            "joined overlay network {} (VNI {}) as {local}; lease {} s",
            network.name,
            overlay.vni,
            setup.lease_ttl.as_secs()
        );
        Ok(OverlayLink {
            stop,
            thread: Some(thread),
        })
    }

    /// Stops the thread, which removes the registration so the others drop
    /// this switch at once.
    pub fn stop(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// `serve`'s flags that say which network it serves and how it joins it.
#[derive(Debug)]
pub struct OverlayArgs<'a> {
    pub state: &'a crate::statedir::StateArgs,
    pub network: &'a str,
    pub underlay: Option<IpAddr>,
    pub lease_ttl: u64,
}

/// What `serve` needs to join its network, if that is an overlay network
/// (then `--underlay` is required); `None` for the others.
pub fn setup_for(args: &OverlayArgs<'_>) -> Result<Option<(Store, OverlaySetup)>> {
    let not_overlay = || -> Result<Option<(Store, OverlaySetup)>> {
        if args.underlay.is_some() {
            bail!(
                "--underlay joins an overlay network, and {} is none: create one with `tapswitch --store etcd://... network create NAME --driver overlay --subnet CIDR`",
                args.network
            );
        }
        Ok(None)
    };
    if args.state.require_shared("overlay networks").is_err() {
        return not_overlay();
    }
    let store = args.state.open_unpruned()?;
    let network = match store.network(args.network) {
        Ok(network) if network.driver == ipam::Driver::Overlay => network,
        // The gateway's lookup says what is wrong with a missing network.
        Ok(_) | Err(_) => return not_overlay(),
    };
    let underlay = args.underlay.ok_or_else(|| {
        anyhow!(
            "network {} is an overlay network: give --underlay IP, this host's address on the network that joins the hosts",
            network.name
        )
    })?;
    let lease_ttl = check_ttl(args.lease_ttl)?;
    Ok(Some((
        store,
        OverlaySetup {
            network,
            underlay,
            lease_ttl,
        },
    )))
}

/// `--lease-ttl` as `serve` takes it.
pub fn check_ttl(secs: u64) -> Result<Duration> {
    if secs == 0 {
        bail!("--lease-ttl 0: a lease must last at least 1 second (etcd's minimum)");
    }
    Ok(Duration::from_secs(secs))
}

struct MemberLoop {
    registrar: Registrar,
    /// The registration as last handed to the registrar.
    record: Registration,
    /// When to compare the local MACs with the registered ones next.
    next_mac_check: Instant,
    feed: MembershipFeed,
    membership: Membership,
    tunnel: Tunnel,
    switch: Arc<RunningSwitch>,
    /// Whether the last round found etcd away (for one line each way).
    store_away: bool,
}

impl MemberLoop {
    fn run(mut self, stop: &AtomicBool) {
        while !stop.load(Ordering::Relaxed) {
            let round = self.round();
            self.report(round);
            self.tunnel.expire();
        }
        if let Err(err) = self.registrar.unregister(Instant::now()) {
            log::warn!(
                "could not remove this switch's registration: {err}; it goes when its lease expires"
            );
        }
    }

    /// One turn: renew or register, then wait for membership changes.
    fn round(&mut self) -> Result<()> {
        let now = Instant::now();
        self.registrar.tick(now)?;
        self.publish_local_macs(now)?;
        let until_renewal = self.registrar.next_wakeup().saturating_duration_since(now);
        let events = self.feed.poll(until_renewal.min(WATCH_WAIT))?;
        for event in events {
            self.apply(event);
        }
        Ok(())
    }

    /// Rewrites the registration if the MACs on the local ports changed,
    /// at most once per [`MAC_PUBLISH_INTERVAL`].
    fn publish_local_macs(&mut self, now: Instant) -> Result<()> {
        if now < self.next_mac_check {
            return Ok(());
        }
        self.next_mac_check = now + MAC_PUBLISH_INTERVAL;
        // Only a switch shutting down has no table: nothing to publish.
        let Ok(table) = self.switch.fdb() else {
            return Ok(());
        };
        let macs = local_macs(&table.entries);
        if macs == self.record.macs {
            return Ok(());
        }
        let mut record = self.record.clone();
        record.macs = macs;
        self.registrar.set_record(record.clone(), now)?;
        self.record = record;
        Ok(())
    }

    fn report(&mut self, round: Result<()>) {
        match round {
            Ok(()) if self.store_away => {
                self.store_away = false;
                log::info!(
                    "etcd answers again: registered and watching the members of the network again"
                );
            }
            Ok(()) => {}
            Err(err) => {
                if !self.store_away {
                    self.store_away = true;
                    log::warn!(
                        "etcd does not answer ({err:#}); forwarding to the {} known member(s) goes on, retrying every second",
                        self.tunnel.members().len()
                    );
                }
                std::thread::sleep(ipam::membership::RETRY_INTERVAL);
            }
        }
    }

    fn apply(&mut self, event: Event) {
        for action in self.membership.handle(event) {
            match action {
                Action::AddVtep(endpoint)
                    if endpoint.is_ipv4() != self.tunnel.local().is_ipv4() =>
                {
                    // One socket, one address family: the tunnel cannot reach it.
                    log::warn!(
                        "member {endpoint} is on an underlay of the other IP version than this switch's {}: not flooding to it",
                        self.tunnel.local()
                    );
                }
                Action::AddVtep(endpoint) => {
                    if self.tunnel.add_member(endpoint) {
                        log::info!("member {endpoint} joined: flooding to it");
                    }
                }
                Action::RemoveVtep(endpoint) => {
                    let macs = self.tunnel.remove_member(endpoint);
                    self.switch.forget_macs(&macs);
                    log::info!(
                        "member {endpoint} left: no more flooding to it; forgot {} MAC(s) behind it",
                        macs.len()
                    );
                }
                Action::FlushMacsBehind(endpoint) => {
                    let macs = self.tunnel.flush_behind(endpoint);
                    self.switch.forget_macs(&macs);
                }
                Action::RegisteredMacs(endpoint, macs) => {
                    let change = self.tunnel.set_registered(endpoint, &macs);
                    self.switch
                        .set_registered_macs(&change.added, &change.removed);
                }
            }
        }
        // Switches get partial TCP checksums and are read without a pass
        // over the data; peers (kernel vxlan devices) are not.
        self.tunnel.set_switches(tunnel_switches(&self.membership));
    }
}

/// The members the tunnel may treat as tapswitch switches: those with a
/// registration, less any endpoint also added as a peer (a kernel vxlan
/// device may be what answers there, and it may send without UDP
/// checksums), as `RemoteTable::set_switches` expects.
fn tunnel_switches(membership: &Membership) -> Vec<SocketAddr> {
    let peers: std::collections::BTreeSet<SocketAddr> = membership.peers().collect();
    membership
        .switches()
        .map(|r| r.endpoint)
        .filter(|endpoint| !peers.contains(endpoint))
        .collect()
}

/// The MACs this switch registers: those its table has on a port other
/// than the tunnel (its containers', its gateway's), sorted.
fn local_macs(rows: &[crate::control::FdbRow]) -> Vec<ipam::mac::MacAddr> {
    let macs: std::collections::BTreeSet<_> = rows
        .iter()
        .filter(|row| row.port != TUNNEL_PORT)
        .map(|row| row.mac)
        .collect();
    macs.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_registered_macs_are_those_on_local_ports_sorted_once() {
        let row = |mac: &str, port: u32, name: &str, kind| {
            let entry = switch::FdbEntry {
                mac: mac.parse().unwrap(),
                port: switch::PortId(port),
                kind,
                age: Duration::ZERO,
            };
            crate::control::FdbRow::new(&entry, name.to_string())
        };
        let rows = [
            row("02:42:0a:32:00:03", 2, "tap-c2", switch::EntryKind::Dynamic),
            row(
                "02:42:0a:32:00:09",
                1,
                TUNNEL_PORT,
                switch::EntryKind::Dynamic,
            ),
            row("02:42:0a:32:00:01", 0, "gateway", switch::EntryKind::Local),
            row("02:42:0a:32:00:02", 3, "tap-c1", switch::EntryKind::Static),
        ];
        let macs: Vec<String> = local_macs(&rows).iter().map(|m| m.to_string()).collect();
        assert_eq!(
            macs,
            [
                "02:42:0a:32:00:01",
                "02:42:0a:32:00:02",
                "02:42:0a:32:00:03"
            ],
            "the remote MAC on the tunnel is not this host's"
        );
    }

    #[test]
    fn registered_members_are_switches_and_peers_are_not() {
        let endpoint = |s: &str| -> SocketAddr { s.parse().unwrap() };
        let registration = |at: &str| Registration {
            network: "ov".into(),
            vni: 4096,
            endpoint: endpoint(at),
            hostname: String::new(),
            macs: Vec::new(),
            lease: Default::default(),
            registered: String::new(),
        };
        let (switch, peer, both) = ("192.0.2.2:4789", "192.0.2.3:4789", "192.0.2.4:4789");
        let mut membership = Membership::new(4096, Some(endpoint("192.0.2.1:4789")));
        membership.handle(Event::Snapshot {
            registrations: vec![registration(switch), registration(both)],
            peers: vec![endpoint(peer), endpoint(both)],
        });
        assert_eq!(
            tunnel_switches(&membership),
            [endpoint(switch)],
            "a peer, even at a switch's endpoint, gets full checksums"
        );
        // The peer goes: the switch at that endpoint is one again.
        membership.handle(Event::PeersChanged(vec![endpoint(peer)]));
        assert_eq!(
            tunnel_switches(&membership),
            [endpoint(switch), endpoint(both)]
        );
    }

    #[test]
    fn a_lease_lasts_at_least_a_second() {
        assert_eq!(check_ttl(10).unwrap(), Duration::from_secs(10));
        assert!(check_ttl(0).is_err());
    }
}
