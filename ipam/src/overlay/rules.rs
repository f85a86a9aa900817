//! The overlay rules every state must keep, checked by
//! [`State::check`](crate::State::check) inside each store transaction.

use crate::network::{Driver, Network};

/// The overlay rules [`State::check`](crate::State::check) applies: overlay networks and only
/// they have VXLAN settings, and no two share a VNI.
pub(crate) fn check(networks: &[Network]) -> std::result::Result<(), String> {
    let mut seen = std::collections::BTreeMap::new();
    for net in networks {
        match (&net.driver, &net.overlay) {
            (Driver::Overlay, None) => {
                return Err(format!(
                    "overlay network {} has no VXLAN settings",
                    net.name
                ));
            }
            (Driver::Overlay, Some(o)) => {
                if let Some(other) = seen.insert(o.vni, net.name.as_str()) {
                    return Err(format!(
                        "networks {other} and {} both use VNI {}",
                        net.name, o.vni
                    ));
                }
            }
            (_, Some(_)) => {
                return Err(format!(
                    "network {} has VXLAN settings but driver {}",
                    net.name, net.driver
                ));
            }
            (_, None) => {}
        }
    }
    Ok(())
}
