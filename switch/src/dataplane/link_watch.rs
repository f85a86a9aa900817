//! Ports whose link goes down forget what they learned there, as the Linux
//! bridge's do.
//!
//! The bridge disables a port whose device stops running (set down, or its
//! carrier lost: a veth whose peer, the container's end, was set down) and
//! flushes the addresses it learned there; static ones stay. A frame to
//! such a host then floods, and reaches it wherever it is now (say, on
//! another port it has not spoken from yet), instead of going into a dead
//! link until its entry ages out (after 300 s by default).
//!
//! The switch reads each port's link together with its MTU (`ports::mtu`:
//! set up, and its carrier on; the bridge goes by the operational state
//! the kernel derives from those, up to a second later): once a second
//! from the housekeeping sweep, and when that thread wakes from rest. It
//! acts on a change within a second while frames flow. A port whose link
//! cannot be read (a TAP in a namespace the switch may not enter, the
//! gateway, a tunnel) is left alone. A link that came back up needs
//! nothing: the port learns again from the next frame.
//!
//! [`LinkStates`] remembers which ports were seen down; it is a pure type,
//! tested without a kernel.

use std::collections::BTreeSet;

use super::Shared;
use crate::mac_table::FlushScope;
use crate::port::PortId;

/// The ports whose link was down when last read.
#[derive(Debug, Default)]
pub(super) struct LinkStates {
    down: BTreeSet<PortId>,
}

/// A change [`LinkStates::observe`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum LinkChange {
    WentDown,
    CameUp,
}

impl LinkStates {
    /// What reading port `id`'s link as `up` (`None`: not known) changes.
    /// A port first read down went down; one first read up changes nothing.
    pub(super) fn observe(&mut self, id: PortId, up: Option<bool>) -> Option<LinkChange> {
        match up {
            Some(false) => self.down.insert(id).then_some(LinkChange::WentDown),
            Some(true) => self.down.remove(&id).then_some(LinkChange::CameUp),
            None => None,
        }
    }

    /// Forgets the ports `attached` says are gone.
    pub(super) fn retain(&mut self, attached: impl Fn(PortId) -> bool) {
        self.down.retain(|id| attached(*id));
    }
}

/// Reads every port's MTU and link again (the kernel shortcut's ports
/// follow the MTU; a user may change it while it is a port), and forgets
/// what was learned on ports whose link went down. True if some entry was
/// forgotten: the kernel shortcut's map is to follow.
pub(super) fn follow_interfaces(shared: &Shared, links: &mut LinkStates) -> bool {
    let ports = shared.snapshot();
    let mut forgot = false;
    for port in ports.iter() {
        let mtu = port.tx.refresh_mtu();
        if let Some(shortcut) = &shared.shortcut {
            shortcut.port_mtu(port.id, mtu);
        }
        match links.observe(port.id, port.tx.link_up()) {
            Some(LinkChange::WentDown) => {
                let scope = FlushScope {
                    port: Some(port.id),
                    include_static: false,
                };
                let entries = shared.engine.table().flush(scope);
                forgot |= entries > 0;
                match entries {
                    0 => log::info!("port {}: link down", port.name),
                    1 => log::info!(
                        "port {}: link down; forgot 1 address learned there",
                        port.name
                    ),
                    n => log::info!(
                        "port {}: link down; forgot {n} addresses learned there",
                        port.name
                    ),
                }
            }
            Some(LinkChange::CameUp) => log::info!("port {}: link up", port.name),
            None => {}
        }
    }
    links.retain(|id| ports.iter().any(|port| port.id == id));
    forgot
}

#[cfg(test)]
mod tests {
    use super::*;

    const P1: PortId = PortId(1);
    const P2: PortId = PortId(2);

    #[test]
    fn a_port_goes_down_once_and_comes_up_once() {
        let mut links = LinkStates::default();
        assert_eq!(links.observe(P1, Some(true)), None, "up from the start");
        assert_eq!(links.observe(P1, Some(false)), Some(LinkChange::WentDown));
        assert_eq!(links.observe(P1, Some(false)), None, "still down");
        assert_eq!(links.observe(P1, None), None, "not read: as it was");
        assert_eq!(links.observe(P1, Some(true)), Some(LinkChange::CameUp));
        assert_eq!(links.observe(P1, Some(true)), None);
    }

    #[test]
    fn a_port_first_read_down_went_down_and_unknown_ones_never_change() {
        let mut links = LinkStates::default();
        assert_eq!(links.observe(P1, Some(false)), Some(LinkChange::WentDown));
        for _ in 0..3 {
            assert_eq!(links.observe(P2, None), None);
        }
    }

    #[test]
    fn a_removed_port_is_forgotten_and_its_number_starts_afresh() {
        let mut links = LinkStates::default();
        links.observe(P1, Some(false));
        links.observe(P2, Some(false));
        links.retain(|id| id == P2);
        assert_eq!(links.observe(P1, Some(true)), None, "P1 was removed");
        assert_eq!(links.observe(P2, Some(true)), Some(LinkChange::CameUp));
    }
}
