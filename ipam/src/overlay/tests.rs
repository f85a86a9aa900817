use std::net::{IpAddr, Ipv4Addr};

use super::*;
use crate::error::{Error, Result};
use crate::network::{Driver, Network, NetworkSpec};
use crate::overlay::config::upgrade_legacy_mtu;
use crate::state::Predefined;
use crate::state::State;

fn fresh() -> State {
    State::new(Predefined {
        bridge_id: "b".repeat(64),
        host_id: "h".repeat(64),
        none_id: "n".repeat(64),
        created: String::new(),
    })
}

fn spec(subnet: &str) -> NetworkSpec {
    NetworkSpec {
        subnet: subnet.into(),
        ..NetworkSpec::default()
    }
}

fn create(state: &mut State, name: &str, subnet: &str, o: OverlaySpec) -> Result<Network> {
    state
        .create_overlay_network(name, "1".repeat(64), String::new(), &spec(subnet), o)
        .cloned()
}

#[test]
fn defaults_are_the_first_auto_vni_port_4789_and_mtu_1450() {
    let mut state = fresh();
    let net = create(&mut state, "ov", "10.10.0.0/24", OverlaySpec::default()).unwrap();
    assert_eq!(net.driver, Driver::Overlay);
    assert_eq!(
        net.overlay(),
        Some(&OverlayConfig {
            vni: 4096,
            vxlan_port: 4789,
            peers: vec![]
        })
    );
    // The MTU is the network's own, written down so inspect shows it.
    assert_eq!(net.mtu, Some(1450));
    assert_eq!(net.link_mtu(), 1450);
    assert!(!net.internal);
    assert_eq!(net.gateway_cidr().as_deref(), Some("10.10.0.1/24"));
    let next = create(&mut state, "ov2", "10.11.0.0/24", OverlaySpec::default()).unwrap();
    assert_eq!(next.overlay().unwrap().vni, 4097);
    assert!(state.check().is_ok());
}

#[test]
fn vnis_are_unique_and_in_range() {
    let mut state = fresh();
    let given = OverlaySpec {
        vni: Some(42),
        vxlan_port: Some(8472),
    };
    let net = create(&mut state, "a", "10.1.0.0/24", given).unwrap();
    assert_eq!(net.overlay().unwrap().vni, 42);
    let err = create(&mut state, "b", "10.2.0.0/24", given).unwrap_err();
    assert_eq!(
        err.to_string(),
        "VNI 42 is already used by network a: pick another --vni, or leave it out to get a free one"
    );
    for vni in [0, MAX_VNI + 1] {
        let o = OverlaySpec {
            vni: Some(vni),
            ..OverlaySpec::default()
        };
        assert!(matches!(
            create(&mut state, "c", "10.3.0.0/24", o),
            Err(Error::BadVni { .. })
        ));
    }
    // The bridge rules hold too: no overlap with the default bridge.
    assert!(matches!(
        create(&mut state, "c", "172.17.3.0/24", OverlaySpec::default()),
        Err(Error::Overlap { .. })
    ));
}

#[test]
fn mtu_and_internal_are_the_flags_every_network_takes() {
    let mut state = fresh();
    let create_with = |state: &mut State, name: &str, subnet: &str, mtu| {
        let spec = NetworkSpec {
            internal: true,
            mtu,
            ..spec(subnet)
        };
        state
            .create_overlay_network(
                name,
                "1".repeat(64),
                String::new(),
                &spec,
                OverlaySpec::default(),
            )
            .cloned()
    };
    let jumbo = create_with(&mut state, "jumbo", "10.1.0.0/24", Some(8950)).unwrap();
    assert_eq!(jumbo.mtu, Some(8950));
    assert_eq!(jumbo.link_mtu(), 8950);
    assert!(jumbo.internal);
    // One range for every driver: check_mtu's.
    assert!(create_with(&mut state, "big", "10.2.0.0/24", Some(65_535)).is_ok());
    assert!(matches!(
        create_with(&mut state, "tiny", "10.3.0.0/24", Some(60)),
        Err(Error::BadMtu { mtu: 60, .. })
    ));
    assert!(state.network("tiny").is_err());
}

#[test]
fn records_with_the_mtu_in_the_overlay_settings_still_load() {
    // As issue 17's first builds wrote overlay networks to etcd.
    let mut old = serde_json::json!({
        "name": "ov", "id": "ab", "driver": "overlay", "created": "x",
        "ipam": {"subnet": "10.10.0.0/24", "gateway": "10.10.0.1"},
        "overlay": {"vni": 4096, "vxlan_port": 4789, "mtu": 8950,
                    "peers": ["192.0.2.7:4789"]}
    });
    upgrade_legacy_mtu(&mut old);
    let net: Network = serde_json::from_value(old).unwrap();
    assert_eq!(net.mtu, Some(8950));
    assert_eq!(
        net.overlay(),
        Some(&OverlayConfig {
            vni: 4096,
            vxlan_port: 4789,
            peers: vec!["192.0.2.7:4789".parse().unwrap()],
        })
    );
    // Written back, the MTU is in one place only.
    let json = serde_json::to_value(&net).unwrap();
    assert_eq!(json["mtu"], 8950);
    assert!(json["overlay"].get("mtu").is_none(), "{json}");
    // A record in the new shape is left as it is.
    let mut new = json.clone();
    upgrade_legacy_mtu(&mut new);
    assert_eq!(new, json);
}

#[test]
fn peers_are_added_once_and_removed_by_address() {
    let mut state = fresh();
    create(&mut state, "ov", "10.10.0.0/24", OverlaySpec::default()).unwrap();
    let ip: IpAddr = "192.0.2.7".parse().unwrap();
    assert_eq!(
        state.add_peer("ov", ip, None).unwrap(),
        "192.0.2.7:4789".parse().unwrap()
    );
    state.add_peer("ov", ip, Some(8472)).unwrap();
    assert!(matches!(
        state.add_peer("ov", ip, None),
        Err(Error::PeerExists { .. })
    ));
    assert!(matches!(
        state.add_peer("bridge", ip, None),
        Err(Error::NotOverlay { .. })
    ));
    assert!(matches!(
        state.add_peer("ov", Ipv4Addr::UNSPECIFIED.into(), None),
        Err(Error::BadPeer { .. })
    ));
    assert_eq!(state.remove_peer("ov", ip, Some(8472)).unwrap().len(), 1);
    assert_eq!(state.remove_peer("ov", ip, None).unwrap().len(), 1);
    let err = state.remove_peer("ov", ip, None).unwrap_err();
    assert_eq!(
        err.to_string(),
        "network ov has no peer 192.0.2.7: see `tapswitch network inspect ov`"
    );
}

#[test]
fn check_finds_shared_vnis_and_stray_settings() {
    let mut state = fresh();
    create(&mut state, "a", "10.1.0.0/24", OverlaySpec::default()).unwrap();
    create(&mut state, "b", "10.2.0.0/24", OverlaySpec::default()).unwrap();
    let vni = state.network("a").unwrap().overlay().unwrap().vni;
    let b = state.networks.iter_mut().find(|n| n.name == "b").unwrap();
    b.overlay.as_mut().unwrap().vni = vni;
    assert_eq!(
        state.check().unwrap_err(),
        "networks a and b both use VNI 4096"
    );
    let mut state = fresh();
    state.networks[0].overlay = Some(OverlayConfig {
        vni: 1,
        vxlan_port: 4789,
        peers: vec![],
    });
    assert!(state.check().unwrap_err().contains("but driver bridge"));
}

#[test]
fn ipv6_peers_are_stored_with_brackets_and_checked_like_ipv4_ones() {
    let mut state = fresh();
    create(&mut state, "ov", "10.10.0.0/24", OverlaySpec::default()).unwrap();
    let ip: IpAddr = "2001:db8::7".parse().unwrap();
    let added = state.add_peer("ov", ip, Some(8472)).unwrap();
    assert_eq!(added.to_string(), "[2001:db8::7]:8472");
    for bad in ["::", "ff02::1", "fe80::1"] {
        assert!(
            matches!(
                state.add_peer("ov", bad.parse().unwrap(), None),
                Err(Error::BadPeer { .. })
            ),
            "{bad}"
        );
    }
    // An IPv4-mapped address is the IPv4 host.
    let mapped: IpAddr = "::ffff:192.0.2.9".parse().unwrap();
    assert_eq!(
        state.add_peer("ov", mapped, None).unwrap().to_string(),
        "192.0.2.9:4789"
    );
    // Stored as text with brackets; read back the same.
    let json = serde_json::to_value(state.network("ov").unwrap()).unwrap();
    assert_eq!(
        json["overlay"]["peers"],
        serde_json::json!(["192.0.2.9:4789", "[2001:db8::7]:8472"])
    );
    let again: Network = serde_json::from_value(json).unwrap();
    assert_eq!(again.overlay().unwrap().peers.len(), 2);
    assert_eq!(state.remove_peer("ov", ip, None).unwrap(), vec![added]);
}
