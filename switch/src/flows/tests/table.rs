//! The table's books: admission, limits, removal, counters, timers, rows.

use std::net::Ipv4Addr;

use super::{at, ep, limits};
use crate::flows::{
    Action, Admission, ConnectFailure, EchoEvent, EndReason, FlowKey, FlowStats, FlowTable,
    LimitReason, PacketWay, Protocol, Side, TcpEvent, Timer, UdpEvent,
};

fn key(container: &str, remote: &str) -> FlowKey {
    FlowKey::tcp(ep(container), ep(remote))
}

fn opened(table: &mut FlowTable, secs: u64, key: FlowKey) {
    assert_eq!(
        table.open(at(secs), key),
        Ok(Admission::Opened(crate::flows::Actions::one(
            Action::ConnectHost
        )))
    );
}

#[test]
fn a_flow_is_admitted_once_and_a_retransmitted_syn_finds_it() {
    let mut table = FlowTable::new(limits());
    let k = key("172.17.0.2:40000", "198.51.100.7:443");
    opened(&mut table, 0, k);
    assert_eq!(table.open(at(1), k), Ok(Admission::Existing));
    assert_eq!(table.len(), 1);
    assert_eq!(table.pending_connects(), 1);
    assert_eq!(table.stats().opened, 1);
    let step = table.tcp(at(1), k, TcpEvent::HostConnected);
    assert_eq!(step.actions.to_vec(), vec![Action::AcceptContainer]);
    assert_eq!(table.pending_connects(), 0);
    assert_eq!(table.get(&k).unwrap().state_name(), "ESTABLISHED");
}

#[test]
fn a_syn_flood_from_one_container_leaves_the_others_room() {
    let mut table = FlowTable::new(limits());
    let flooder = |port: u16| key(&format!("172.17.0.2:{port}"), "198.51.100.7:80");
    opened(&mut table, 0, flooder(1));
    opened(&mut table, 0, flooder(2));
    // Its share of pending connects (2) is used: the rest is refused...
    for port in 3..10 {
        assert_eq!(
            table.open(at(0), flooder(port)),
            Err(LimitReason::ContainerPendingConnects)
        );
    }
    // ...while another container still connects.
    opened(&mut table, 0, key("172.17.0.3:5000", "198.51.100.7:80"));
    opened(&mut table, 0, key("172.17.0.3:5001", "198.51.100.7:80"));
    // Total pending (4) reached: a third container waits.
    assert_eq!(
        table.open(at(0), key("172.17.0.4:1", "198.51.100.7:80")),
        Err(LimitReason::PendingConnects)
    );
    let stats = table.stats();
    assert_eq!(stats.dropped_for_limits, 8);
    assert_eq!(stats.limit_container_pending_connects, 7);
    assert_eq!(stats.limit_pending_connects, 1);
    // A resolved connect frees its slot at once.
    table.tcp(
        at(1),
        flooder(1),
        TcpEvent::HostConnectFailed(ConnectFailure::Refused),
    );
    assert_eq!(table.pending_connects(), 3);
    opened(&mut table, 1, flooder(3));
}

#[test]
fn flows_per_container_and_in_total_are_bounded() {
    let mut table = FlowTable::new(limits());
    // UDP flows hold no pending connect: only the flow limits apply.
    let udp = |c: &str, port: u16| FlowKey::udp(ep(&format!("{c}:{port}")), ep("198.51.100.9:53"));
    for port in 0..4 {
        opened(&mut table, 0, udp("172.17.0.2", port));
    }
    assert_eq!(
        table.open(at(0), udp("172.17.0.2", 4)),
        Err(LimitReason::ContainerFull)
    );
    for port in 0..4 {
        opened(&mut table, 0, udp("172.17.0.3", port));
    }
    assert_eq!(table.len(), 8);
    assert_eq!(
        table.open(at(0), udp("172.17.0.4", 0)),
        Err(LimitReason::TableFull)
    );
    assert_eq!(table.flows_of(Ipv4Addr::new(172, 17, 0, 2)), 4);
    let stats = table.stats();
    assert_eq!(
        (
            stats.limit_container_full,
            stats.limit_table_full,
            stats.dropped_for_limits
        ),
        (1, 1, 2)
    );
}

#[test]
fn released_flows_are_removed_and_counted_by_how_they_ended() {
    let mut table = FlowTable::new(limits());
    let refused = key("172.17.0.2:1", "198.51.100.7:81");
    let unreachable = key("172.17.0.2:2", "198.51.100.7:82");
    let closed = key("172.17.0.3:3", "198.51.100.7:83");
    let reset = key("172.17.0.3:4", "198.51.100.7:84");
    for k in [refused, unreachable, closed, reset] {
        opened(&mut table, 0, k);
    }
    table.tcp(
        at(1),
        refused,
        TcpEvent::HostConnectFailed(ConnectFailure::Refused),
    );
    table.tcp(
        at(1),
        unreachable,
        TcpEvent::HostConnectFailed(ConnectFailure::Unreachable(crate::flows::Unreachable::Host)),
    );
    table.tcp(at(1), closed, TcpEvent::HostConnected);
    table.tcp(at(1), reset, TcpEvent::HostConnected);
    table.tcp(at(2), closed, TcpEvent::HostEof);
    let end = table.tcp(at(2), closed, TcpEvent::ContainerFin);
    assert_eq!(
        end.actions.release(),
        Some(EndReason::Closed {
            first: Side::Remote
        })
    );
    table.tcp(at(2), reset, TcpEvent::HostReset);
    assert!(table.is_empty());
    assert_eq!(table.pending_connects(), 0);
    assert_eq!(table.flows_of(Ipv4Addr::new(172, 17, 0, 2)), 0);
    assert_eq!(
        *table.stats(),
        FlowStats {
            opened: 4,
            refused: 2,
            closed: 2,
            reset: 1,
            ..FlowStats::default()
        }
    );
    // Events for a flow that is gone are invalid, counted, harmless.
    assert!(table.tcp(at(3), closed, TcpEvent::HostData(b"x")).invalid);
    assert!(table.udp(at(3), closed, UdpEvent::FromHost(1)).invalid);
    assert_eq!(table.stats().dropped_invalid, 2);
}

#[test]
fn invalid_events_on_live_flows_are_counted() {
    let mut table = FlowTable::new(limits());
    let k = key("172.17.0.2:1", "198.51.100.7:80");
    opened(&mut table, 0, k);
    assert!(
        table
            .tcp(at(0), k, TcpEvent::ContainerData(b"early"))
            .invalid
    );
    assert_eq!(table.stats().dropped_invalid, 1);
    assert_eq!(table.len(), 1);
}

#[test]
fn timers_end_flows_and_free_their_pending_slots() {
    let mut table = FlowTable::new(limits());
    let stuck = key("172.17.0.2:1", "192.0.2.1:80");
    let idle = key("172.17.0.2:2", "192.0.2.1:80");
    let dns = FlowKey::udp(ep("172.17.0.2:3"), ep("192.0.2.53:53"));
    opened(&mut table, 0, stuck);
    opened(&mut table, 0, idle);
    opened(&mut table, 0, dns);
    table.tcp(at(1), idle, TcpEvent::HostConnected);
    table.udp(at(1), dns, UdpEvent::HostConnected);
    // DNS flows have the short timer (5 s here).
    assert_eq!(table.next_deadline(), Some(at(6)));
    let due = table.expire(at(6));
    assert_eq!(due.len(), 1);
    assert_eq!(due[0].0, dns);
    // The stuck connect gives up at 10 s and frees its pending slot.
    let due = table.expire(at(10));
    assert_eq!(
        due[0].1.to_vec(),
        vec![Action::Release(EndReason::TimedOut {
            timer: Timer::Connect
        })]
    );
    assert_eq!(table.pending_connects(), 0);
    assert_eq!(table.next_deadline(), Some(at(101)));
    assert!(table.expire(at(100)).is_empty());
    let due = table.expire(at(101));
    assert_eq!(
        due[0].1.to_vec(),
        vec![
            Action::ResetContainer,
            Action::ResetHost,
            Action::Release(EndReason::TimedOut { timer: Timer::Idle })
        ]
    );
    assert!(table.is_empty());
    assert_eq!(table.next_deadline(), None);
    assert_eq!(table.stats().timed_out, 3);
}

#[test]
fn rows_show_state_traffic_and_age_like_conntrack() {
    let mut table = FlowTable::new(limits());
    let tcp = key("172.17.0.2:40000", "198.51.100.7:443");
    let ping = FlowKey::echo(
        Ipv4Addr::new(172, 17, 0, 2),
        7,
        Ipv4Addr::new(198, 51, 100, 7),
    );
    opened(&mut table, 0, tcp);
    opened(&mut table, 0, ping);
    assert_eq!(table.pending_connects(), 1, "ping holds no pending connect");
    table.tcp(at(1), tcp, TcpEvent::HostConnected);
    table.count_packet(tcp, PacketWay::FromContainer);
    table.count_packet(tcp, PacketWay::FromContainer);
    table.count_packet(tcp, PacketWay::ToContainer);
    table.tcp(at(2), tcp, TcpEvent::ContainerData(b"hello"));
    table.echo(at(2), ping, EchoEvent::HostConnected);
    table.echo(at(3), ping, EchoEvent::Request(56));
    let rows = table.infos(at(12));
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0].protocol, Protocol::Tcp);
    assert_eq!(
        rows[0].to_string(),
        "tcp ESTABLISHED src=172.17.0.2:40000 dst=198.51.100.7:443 packets=2 bytes=5 reply_packets=1 reply_bytes=0 age=12s idle=10s"
    );
    assert_eq!(
        rows[1].to_string(),
        "icmp UNREPLIED src=172.17.0.2:7 dst=198.51.100.7:0 packets=1 bytes=56 reply_packets=0 reply_bytes=0 age=12s idle=9s"
    );
    let json = serde_json::to_value(&rows[0]).unwrap();
    assert_eq!(json["protocol"], "tcp");
    assert_eq!(json["container"], "172.17.0.2:40000");
    assert_eq!(json["state"], "ESTABLISHED");
    assert_eq!(json["packets_from_container"], 2);
    assert_eq!(json["age_secs"], 12);
    let stats = serde_json::to_value(table.stats()).unwrap();
    assert_eq!(stats["opened"], 2);
}

#[test]
fn events_of_the_wrong_protocol_are_invalid() {
    let mut table = FlowTable::new(limits());
    let udp = FlowKey::udp(ep("172.17.0.2:1"), ep("192.0.2.1:9"));
    opened(&mut table, 0, udp);
    assert!(table.tcp(at(0), udp, TcpEvent::HostConnected).invalid);
    assert!(table.echo(at(0), udp, EchoEvent::HostConnected).invalid);
    assert_eq!(table.interest(udp), Default::default());
    assert!(table.tcp_flow(&udp).is_none());
}

#[test]
fn published_port_clients_are_flows_charged_to_their_container() {
    let mut table = FlowTable::new(limits());
    let client = |port: u16| key("172.17.0.2:80", &format!("203.0.113.9:{port}"));
    assert_eq!(
        table.open_inbound(at(0), client(1)),
        Ok(Admission::Opened(crate::flows::Actions::one(
            Action::ConnectContainer
        )))
    );
    assert_eq!(
        table.open_inbound(at(0), client(1)),
        Ok(Admission::Existing)
    );
    assert_eq!(table.pending_connects(), 1);
    table.open_inbound(at(0), client(2)).unwrap();
    // A flood of clients at one container's port fills its share only...
    assert_eq!(
        table.open_inbound(at(0), client(3)),
        Err(LimitReason::ContainerPendingConnects)
    );
    // ...and not the share of that container's own connections out.
    opened(&mut table, 0, key("172.17.0.2:5000", "198.51.100.7:80"));
    opened(&mut table, 0, key("172.17.0.3:5000", "198.51.100.7:80"));
    assert_eq!(table.pending_connects(), 4);
    let step = table.tcp(at(1), client(1), TcpEvent::ContainerConnected);
    assert!(step.actions.is_empty() && !step.invalid);
    assert_eq!(table.pending_connects(), 3);
    // The freed inbound slot takes the next client.
    table.open_inbound(at(1), client(3)).unwrap();
    table.tcp(at(2), client(1), TcpEvent::HostData(b"GET /"));
    let rows = table.infos(at(3));
    let published = rows
        .iter()
        .find(|r| r.remote == ep("203.0.113.9:1"))
        .unwrap();
    assert_eq!(
        published.to_string(),
        "tcp ESTABLISHED src=203.0.113.9:1 dst=172.17.0.2:80 packets=0 bytes=5 reply_packets=0 reply_bytes=0 age=3s idle=1s [published]"
    );
    assert_eq!(
        serde_json::to_value(published).unwrap()["origin"],
        "inbound"
    );
    let out = rows
        .iter()
        .find(|r| r.container == ep("172.17.0.3:5000"))
        .unwrap();
    assert_eq!(serde_json::to_value(out).unwrap()["origin"], "outbound");
    // A client whose container never answers is reset at the connect
    // timer, and its pending slot freed.
    let due = table.expire(at(10));
    assert!(
        due.iter()
            .any(|(k, actions)| *k == client(2) && actions.contains(Action::ResetHost)),
        "{due:?}"
    );
    // Only client 3 (opened at 1 s, its timer at 11 s) still waits.
    assert_eq!(table.pending_connects(), 1);

    // UDP: open at once, no connect to wait for.
    let udp = FlowKey::udp(ep("172.17.0.2:53"), ep("203.0.113.9:4000"));
    assert_eq!(
        table.open_inbound(at(3), udp),
        Ok(Admission::Opened(crate::flows::Actions::none()))
    );
    assert!(table.udp(at(3), udp, UdpEvent::FromHost(30)).relay);
    assert_eq!(table.get(&udp).unwrap().state_name(), "UNREPLIED");
    assert!(table.udp(at(3), udp, UdpEvent::FromContainer(60)).relay);
    assert_eq!(table.get(&udp).unwrap().state_name(), "REPLIED");
    // Nothing publishes ping.
    let ping = FlowKey::echo(
        Ipv4Addr::new(172, 17, 0, 2),
        1,
        Ipv4Addr::new(203, 0, 113, 9),
    );
    assert_eq!(table.open_inbound(at(3), ping), Ok(Admission::Invalid));
}

#[test]
fn ten_thousand_idle_flows_hold_no_relay_memory() {
    let mut table = FlowTable::new(crate::flows::FlowLimits {
        max_flows: 10_000,
        max_flows_per_container: 10_000,
        max_pending_connects: 10_000,
        max_pending_connects_per_container: 10_000,
        ..crate::flows::FlowLimits::default()
    });
    let keys: Vec<FlowKey> = (0..10_000u16)
        .map(|i| key(&format!("172.17.0.2:{}", 10_000 + i), "198.51.100.7:443"))
        .collect();
    for k in &keys {
        opened(&mut table, 0, *k);
        table.tcp(at(1), *k, TcpEvent::HostConnected);
        // One exchange each way, fully written: the buffers drain.
        table.tcp(at(2), *k, TcpEvent::ContainerData(&[1; 1000]));
        table.tcp(at(2), *k, TcpEvent::HostWrote(1000));
        table.tcp(at(2), *k, TcpEvent::HostData(&[2; 1000]));
        table.tcp(at(2), *k, TcpEvent::ContainerTook(1000));
    }
    assert_eq!(table.len(), 10_000);
    let relay: usize = keys
        .iter()
        .map(|k| table.tcp_flow(k).unwrap().allocated())
        .sum();
    assert_eq!(relay, 0);
    // The per-flow bookkeeping stays small: 10,000 flows in well under a
    // megabyte of table entries (plus the hash map's overhead).
    assert!(
        std::mem::size_of::<crate::flows::Flow>() <= 256,
        "{}",
        std::mem::size_of::<crate::flows::Flow>()
    );
}

#[test]
fn trace_events_are_kept_only_while_tracing_and_bounded() {
    use crate::flows::{FlowEvent, FlowTraceLine, Origin};
    let mut table = FlowTable::new(limits());
    let k = key("172.17.0.2:1", "198.51.100.7:80");
    opened(&mut table, 0, k);
    assert!(table.take_events().is_empty(), "tracing is off");

    table.set_trace(true);
    let traced = key("172.17.0.2:2", "198.51.100.7:80");
    opened(&mut table, 1, traced);
    // The container's pending share (2) is used: the next is refused.
    let refused = key("172.17.0.2:3", "198.51.100.7:80");
    assert!(table.open(at(1), refused).is_err());
    table.tcp(at(2), traced, TcpEvent::HostConnected);
    table.tcp(at(3), traced, TcpEvent::ContainerData(b"abc"));
    table.tcp(at(4), traced, TcpEvent::HostReset);
    let events = table.take_events();
    let lines: Vec<String> = events
        .iter()
        .map(|(now, key, event)| {
            FlowTraceLine {
                now: *now,
                key,
                event,
            }
            .to_string()
        })
        .collect();
    assert_eq!(
        lines,
        vec![
            "t=1.000000 flow tcp 172.17.0.2:2 -> 198.51.100.7:80: opened by the container",
            "t=1.000000 flow tcp 172.17.0.2:3 -> 198.51.100.7:80: refused: the container has its most pending connects",
            "t=4.000000 flow tcp 172.17.0.2:2 -> 198.51.100.7:80: reset by the remote after 3.000 s (3 bytes from the container, 0 bytes to it)",
        ]
    );
    assert!(matches!(events[0].2, FlowEvent::Opened(Origin::Outbound)));
    assert!(table.take_events().is_empty(), "taken");

    // A caller that never takes them cannot grow memory without bound.
    opened(&mut table, 5, key("172.17.0.2:4", "198.51.100.7:80"));
    table.take_events();
    for port in 0..crate::flows::table::MAX_TRACE_EVENTS + 10 {
        let flood = key(&format!("172.17.0.2:{}", 100 + port), "198.51.100.7:80");
        assert!(table.open(at(5), flood).is_err());
    }
    assert_eq!(
        table.take_events().len(),
        crate::flows::table::MAX_TRACE_EVENTS
    );
    table.set_trace(false);
    let _ = table.open(at(6), refused);
    assert!(table.take_events().is_empty());
}

#[test]
fn idle_flows_cost_the_timers_nothing_and_short_ones_leave_no_entries() {
    let mut table = FlowTable::new(crate::flows::FlowLimits {
        max_flows: 20_000,
        max_flows_per_container: 20_000,
        max_pending_connects: 20_000,
        max_pending_connects_per_container: 20_000,
        ..limits()
    });
    // 10,000 established flows, busy now and then: activity pushes their
    // deadlines later without adding heap entries.
    let idle: Vec<FlowKey> = (0..10_000u16)
        .map(|i| key(&format!("172.17.0.2:{}", 10_000 + i), "198.51.100.7:443"))
        .collect();
    for k in &idle {
        opened(&mut table, 0, *k);
        table.tcp(at(1), *k, TcpEvent::HostConnected);
        table.tcp(at(2), *k, TcpEvent::ContainerData(&[1; 4]));
        table.tcp(at(3), *k, TcpEvent::HostWrote(4));
    }
    assert!(table.timer_entries() <= 10_000, "{}", table.timer_entries());
    // Their connect timers (10 s) come up once each, find the flows
    // established and move them to their idle deadline (100 s after 3 s).
    assert!(table.expire(at(50)).is_empty());
    assert_eq!(table.next_deadline(), Some(at(103)));
    assert!(table.expire(at(102)).is_empty());

    // 100,000 short flows that open and reset: the heap is rebuilt
    // whenever stale entries outnumber the live flows.
    for i in 0..100_000u32 {
        let k = key(
            &format!("172.17.0.3:{}", 1024 + i % 60_000),
            &format!("198.51.100.8:{}", 1 + i / 60_000),
        );
        opened(&mut table, 60, k);
        table.tcp(
            at(60),
            k,
            TcpEvent::HostConnectFailed(ConnectFailure::Refused),
        );
        // Twice the flows (at most 10,001 at once) and the slack.
        assert!(table.timer_entries() <= 2 * 10_001 + 1024);
    }
    assert_eq!(table.len(), 10_000);
    // Every idle flow still times out, on time.
    assert_eq!(table.next_deadline(), Some(at(103)));
    assert_eq!(table.expire(at(103)).len(), 10_000);
    assert!(table.is_empty());
    assert_eq!(table.next_deadline(), None);
}
