//! What `tapswitch stats` shows of a switch's VXLAN tunnel port: the
//! control protocol's `Request::Tunnel` reply, made by the running switch
//! and rendered by the client.

use ports::vxlan::Tunnel;

/// `Request::Tunnel`'s reply: the tunnel as `tapswitch stats` shows it.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct TunnelReport {
    pub port: String,
    /// This host's endpoint.
    pub local: String,
    /// Where floods go, and whom VXLAN is accepted from.
    pub members: Vec<String>,
    /// Remote MACs learned: `[mac, endpoint]`.
    pub remotes: Vec<(String, String)>,
    /// `ports::vxlan::TunnelStats`, by name.
    pub stats: serde_json::Value,
}

impl TunnelReport {
    pub fn new(port: &str, tunnel: &Tunnel) -> TunnelReport {
        TunnelReport {
            port: port.to_string(),
            local: tunnel.local().to_string(),
            members: tunnel.members().iter().map(|m| m.to_string()).collect(),
            remotes: tunnel
                .entries()
                .iter()
                .map(|e| (e.mac.to_string(), e.endpoint.to_string()))
                .collect(),
            stats: serde_json::to_value(tunnel.stats()).unwrap_or_default(),
        }
    }

    /// The lines `tapswitch stats` adds.
    pub fn render(&self) -> String {
        let count = |key: &str| self.stats[key].as_u64().unwrap_or(0);
        format!(
            "tunnel       {} on {}; {} member(s): {}; {} remote MAC(s)\n\
             tunnel rx    {} frame(s); dropped: not a member {}, wrong VNI {}, malformed {}, gateway's own {}\n\
             tunnel tx    {} datagram(s), {} flood(s), {} error(s), {} with no member to go to\n",
            self.port,
            self.local,
            self.members.len(),
            if self.members.is_empty() {
                "none".to_string()
            } else {
                self.members.join(", ")
            },
            self.remotes.len(),
            count("rx_frames"),
            count("rx_dropped_not_member"),
            count("rx_dropped_wrong_vni"),
            count("rx_dropped_malformed"),
            count("dropped_local_only"),
            count("tx_datagrams"),
            count("tx_floods"),
            count("tx_errors"),
            count("tx_dropped_no_members"),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tunnel_report_names_members_and_drops_by_reason() {
        let report = TunnelReport {
            port: "vxlan0".into(),
            local: "10.0.0.1:4789".into(),
            members: vec!["10.0.0.2:4789".into(), "10.0.0.3:4789".into()],
            remotes: vec![("02:42:0a:32:00:03".into(), "10.0.0.2:4789".into())],
            stats: serde_json::json!({"rx_frames": 7, "rx_dropped_not_member": 2, "tx_floods": 1}),
        };
        let text = report.render();
        assert!(
            text.contains("vxlan0 on 10.0.0.1:4789; 2 member(s): 10.0.0.2:4789, 10.0.0.3:4789; 1 remote MAC(s)"),
            "{text}"
        );
        assert!(
            text.contains("7 frame(s); dropped: not a member 2, wrong VNI 0"),
            "{text}"
        );
        assert!(text.contains("1 flood(s)"), "{text}");
    }
}
