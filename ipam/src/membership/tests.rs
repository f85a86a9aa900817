use super::*;

fn ep(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn reg(endpoint: &str, vni: u32) -> Registration {
    Registration {
        network: "ov".into(),
        vni,
        endpoint: ep(endpoint),
        hostname: String::new(),
        macs: vec![],
        lease: 7,
        registered: String::new(),
    }
}

const OWN: &str = "192.0.2.1:4789";
const B: &str = "192.0.2.2:4789";
const C: &str = "192.0.2.3:4789";
const PEER: &str = "198.51.100.9:4789";

fn own() -> Membership {
    Membership::new(4096, Some(ep(OWN)))
}

#[test]
fn keys_name_the_network_and_endpoint() {
    assert_eq!(
        member_key("/tapswitch/", "ov", ep(B)),
        "/tapswitch/members/ov/192.0.2.2:4789"
    );
    assert_eq!(members_prefix("/p/", "ov"), "/p/members/ov/");
    assert_eq!(
        endpoint_of_key(b"/tapswitch/members/ov/192.0.2.2:4789"),
        Some(ep(B))
    );
    assert_eq!(endpoint_of_key(b"/tapswitch/members/ov/junk"), None);
}

#[test]
fn registration_json_round_trips_with_optional_fields_left_out() {
    let text = r#"{"network":"ov","vni":4096,"endpoint":"192.0.2.2:4789"}"#;
    let parsed: Registration = serde_json::from_str(text).unwrap();
    assert_eq!(parsed.endpoint, ep(B));
    assert!(parsed.macs.is_empty());
    let mut full = reg(B, 4096);
    full.macs = vec!["02:42:0a:0a:00:02".parse().unwrap()];
    let again: Registration = serde_json::from_str(&serde_json::to_string(&full).unwrap()).unwrap();
    assert_eq!(again, full);
}

#[test]
fn a_snapshot_adds_every_member_but_itself() {
    let mut m = own();
    let actions = m.handle(Event::Snapshot {
        registrations: vec![reg(OWN, 4096), reg(B, 4096)],
        peers: vec![ep(PEER)],
    });
    assert_eq!(
        actions,
        vec![Action::AddVtep(ep(B)), Action::AddVtep(ep(PEER))]
    );
    assert!(m.accepts(ep(B).ip()));
    assert!(m.accepts(ep(PEER).ip()));
    assert!(
        !m.accepts(ep(OWN).ip()),
        "own VXLAN looped back is not a member's"
    );
    assert!(!m.accepts("203.0.113.5".parse().unwrap()));
}

#[test]
fn a_departure_removes_the_vtep_and_flushes_its_macs() {
    let mut m = own();
    m.handle(Event::Registered(reg(B, 4096)));
    assert_eq!(
        m.handle(Event::Registered(reg(C, 4096))),
        vec![Action::AddVtep(ep(C))]
    );
    // A renewal or a restart of a known member changes nothing.
    assert_eq!(m.handle(Event::Registered(reg(C, 4096))), vec![]);
    assert_eq!(
        m.handle(Event::Unregistered(ep(B))),
        vec![Action::RemoveVtep(ep(B)), Action::FlushMacsBehind(ep(B))]
    );
    assert_eq!(m.flood_list(), [ep(C)].into());
    assert!(!m.accepts(ep(B).ip()));
    // Deleting what is not there is harmless (a watch may repeat itself).
    assert_eq!(m.handle(Event::Unregistered(ep(B))), vec![]);
}

#[test]
fn a_resync_after_an_outage_catches_departures_missed_meanwhile() {
    let mut m = own();
    m.handle(Event::Snapshot {
        registrations: vec![reg(B, 4096), reg(C, 4096)],
        peers: vec![],
    });
    // The store was away; B died and D arrived. The next snapshot says so.
    let d = "192.0.2.4:4789";
    let actions = m.handle(Event::Snapshot {
        registrations: vec![reg(C, 4096), reg(d, 4096)],
        peers: vec![],
    });
    assert_eq!(
        actions,
        vec![
            Action::RemoveVtep(ep(B)),
            Action::FlushMacsBehind(ep(B)),
            Action::AddVtep(ep(d)),
        ]
    );
}

#[test]
fn peers_and_switches_at_one_endpoint_count_once() {
    let mut m = own();
    m.handle(Event::PeersChanged(vec![ep(B)]));
    assert_eq!(m.handle(Event::Registered(reg(B, 4096))), vec![]);
    assert_eq!(m.handle(Event::Unregistered(ep(B))), vec![], "still a peer");
    assert_eq!(
        m.handle(Event::PeersChanged(vec![])),
        vec![Action::RemoveVtep(ep(B)), Action::FlushMacsBehind(ep(B))]
    );
}

#[test]
fn switches_and_peers_are_listed_apart() {
    let mut m = own();
    m.handle(Event::Snapshot {
        registrations: vec![reg(B, 4096)],
        peers: vec![ep(PEER), ep(B)],
    });
    let switches: Vec<SocketAddr> = m.switches().map(|r| r.endpoint).collect();
    assert_eq!(switches, [ep(B)]);
    assert_eq!(m.peers().collect::<Vec<_>>(), [ep(B), ep(PEER)]);
}

#[test]
fn a_registration_with_another_vni_is_refused_and_counted() {
    let mut m = own();
    assert_eq!(m.handle(Event::Registered(reg(B, 4096))).len(), 1);
    // Re-registered with a wrong VNI: out, as if it had left.
    assert_eq!(
        m.handle(Event::Registered(reg(B, 99))),
        vec![Action::RemoveVtep(ep(B)), Action::FlushMacsBehind(ep(B))]
    );
    assert_eq!(m.wrong_vni, 1);
    assert_eq!(m.switches().count(), 0);
}

#[test]
fn the_keeper_registers_then_renews_every_third_of_the_ttl() {
    let t0 = Instant::now();
    let ttl = Duration::from_secs(9);
    let mut k = LeaseKeeper::new(ttl, t0);
    assert_eq!(k.poll(t0), KeeperStep::Register);
    k.registered(t0, 5);
    assert_eq!(k.lease(t0), Some(5));
    assert_eq!(k.poll(t0 + Duration::from_secs(2)), KeeperStep::Wait);
    assert_eq!(k.next_wakeup(), t0 + Duration::from_secs(3));
    let t3 = t0 + Duration::from_secs(3);
    assert_eq!(k.poll(t3), KeeperStep::KeepAlive(5));
    k.renewed(t3, Some(ttl));
    assert_eq!(k.next_wakeup(), t3 + Duration::from_secs(3));
}

#[test]
fn the_keeper_rides_out_a_short_outage_and_re_registers_after_a_long_one() {
    let t0 = Instant::now();
    let secs = |s| t0 + Duration::from_secs(s);
    let mut k = LeaseKeeper::new(Duration::from_secs(9), t0);
    k.registered(t0, 5);
    // Renewals fail from t=3 on: the lease still holds until t=9.
    k.failed(secs(3));
    assert_eq!(k.poll(secs(3)), KeeperStep::Wait);
    assert_eq!(k.poll(secs(4)), KeeperStep::KeepAlive(5));
    k.failed(secs(4));
    assert_eq!(k.lease(secs(8)), Some(5));
    // Past the lease's end etcd has dropped the key: register afresh.
    k.failed(secs(9));
    assert_eq!(k.lease(secs(9)), None);
    assert_eq!(k.poll(secs(9)), KeeperStep::Wait);
    assert_eq!(k.poll(secs(10)), KeeperStep::Register);
    k.registered(secs(10), 6);
    assert_eq!(k.poll(secs(13)), KeeperStep::KeepAlive(6));
}

#[test]
fn the_keeper_re_registers_when_etcd_forgot_the_lease() {
    let t0 = Instant::now();
    let mut k = LeaseKeeper::new(Duration::from_secs(9), t0);
    k.registered(t0, 5);
    let t3 = t0 + Duration::from_secs(3);
    k.renewed(t3, None);
    assert_eq!(k.poll(t3), KeeperStep::Register);
    assert_eq!(k.lease(t3), None);
}

fn with_macs(endpoint: &str, macs: &[&str]) -> Registration {
    let mut record = reg(endpoint, 4096);
    record.macs = macs.iter().map(|m| m.parse().unwrap()).collect();
    record
}

#[test]
fn a_members_registered_macs_follow_its_registration() {
    let mut m = own();
    let h1: MacAddr = "02:42:0a:32:00:02".parse().unwrap();
    let h2: MacAddr = "02:42:0a:32:00:03".parse().unwrap();
    assert_eq!(
        m.handle(Event::Registered(with_macs(B, &["02:42:0a:32:00:02"]))),
        vec![
            Action::AddVtep(ep(B)),
            Action::RegisteredMacs(ep(B), vec![h1])
        ],
        "the member first, then the MACs behind it"
    );
    // A renewal with the same MACs changes nothing; another list replaces them.
    assert_eq!(
        m.handle(Event::Registered(with_macs(B, &["02:42:0a:32:00:02"]))),
        vec![]
    );
    assert_eq!(
        m.handle(Event::Registered(with_macs(B, &["02:42:0a:32:00:03"]))),
        vec![Action::RegisteredMacs(ep(B), vec![h2])]
    );
    assert_eq!(
        m.handle(Event::Registered(with_macs(B, &[]))),
        vec![Action::RegisteredMacs(ep(B), vec![])]
    );
    // A departure flushes whatever was behind it; no list to apply.
    m.handle(Event::Registered(with_macs(B, &["02:42:0a:32:00:02"])));
    assert_eq!(
        m.handle(Event::Unregistered(ep(B))),
        vec![Action::RemoveVtep(ep(B)), Action::FlushMacsBehind(ep(B))]
    );
}

#[test]
fn the_own_registration_and_a_snapshot_that_repeats_itself_set_no_macs() {
    let mut m = own();
    let snapshot = || Event::Snapshot {
        registrations: vec![
            with_macs(OWN, &["02:42:0a:32:00:09"]),
            with_macs(C, &["02:42:0a:32:00:04"]),
        ],
        peers: vec![],
    };
    assert_eq!(
        m.handle(snapshot()),
        vec![
            Action::AddVtep(ep(C)),
            Action::RegisteredMacs(ep(C), vec!["02:42:0a:32:00:04".parse().unwrap()])
        ]
    );
    assert_eq!(m.handle(snapshot()), vec![], "after an outage: nothing new");
}

#[test]
fn a_registration_from_a_build_without_macs_reads_as_none() {
    // Written by a build before MACs were registered: no `macs` key, and
    // `lease`, `hostname`, `registered` missing too.
    let text = r#"{"network":"ov","vni":4096,"endpoint":"192.0.2.3:4789"}"#;
    let old: Registration = serde_json::from_str(text).unwrap();
    let mut m = own();
    assert_eq!(
        m.handle(Event::Registered(old)),
        vec![Action::AddVtep(ep(C))]
    );
    // And a record with MACs is written with them, as text.
    let json = serde_json::to_value(with_macs(C, &["02:42:0a:32:00:04"])).unwrap();
    assert_eq!(json["macs"], serde_json::json!(["02:42:0a:32:00:04"]));
}

#[test]
fn an_ipv6_member_has_a_bracketed_key_and_is_accepted_by_address() {
    let v6 = "[2001:db8::2]:4789";
    assert_eq!(
        member_key("/tapswitch/", "ov", ep(v6)),
        "/tapswitch/members/ov/[2001:db8::2]:4789"
    );
    assert_eq!(
        endpoint_of_key(b"/tapswitch/members/ov/[2001:db8::2]:4789"),
        Some(ep(v6))
    );
    let record: Registration = serde_json::from_str(
        r#"{"network":"ov","vni":4096,"endpoint":"[2001:db8::2]:4789","macs":["02:42:0a:32:00:02"]}"#,
    )
    .unwrap();
    let mut m = Membership::new(4096, Some(ep("[2001:db8::1]:4789")));
    assert_eq!(
        m.handle(Event::Registered(record))[0],
        Action::AddVtep(ep(v6))
    );
    assert!(m.accepts("2001:db8::2".parse().unwrap()));
    assert!(!m.accepts("2001:db8::1".parse().unwrap()), "itself");
}
