//! Every transition of the UDP flow.

use std::time::Duration;

use super::at;
use crate::flows::udp::MAX_UDP_PAYLOAD;
use crate::flows::{
    Action, ConnectFailure, EndReason, Timer, UdpEvent, UdpFlow, UdpState, Unreachable,
};

fn open() -> UdpFlow {
    let mut flow = UdpFlow::new(at(0), Duration::from_secs(30));
    flow.handle(at(0), UdpEvent::HostConnected);
    flow
}

#[test]
fn the_first_datagram_waits_for_the_socket_then_datagrams_relay_both_ways() {
    let mut flow = UdpFlow::new(at(0), Duration::from_secs(30));
    assert_eq!(flow.state(), UdpState::Connecting);
    // The opening datagram: counted, sent by the caller after HostConnected.
    let first = flow.handle(at(0), UdpEvent::FromContainer(40));
    assert!(!first.relay && !first.invalid);
    // Nothing can come from a socket that is not there yet.
    assert!(flow.handle(at(0), UdpEvent::FromHost(1)).invalid);
    assert!(
        flow.handle(at(0), UdpEvent::HostConnected)
            .actions
            .is_empty()
    );
    assert_eq!(flow.state(), UdpState::Unreplied);
    assert!(flow.handle(at(0), UdpEvent::HostConnected).invalid);
    assert!(flow.handle(at(1), UdpEvent::FromContainer(10)).relay);
    assert!(flow.handle(at(2), UdpEvent::FromHost(100)).relay);
    assert_eq!(flow.state(), UdpState::Replied);
    let c = flow.counters();
    assert_eq!((c.packets_from_container, c.bytes_from_container), (2, 50));
    assert_eq!((c.packets_to_container, c.bytes_to_container), (1, 100));
}

#[test]
fn a_datagram_too_large_for_ipv4_is_invalid() {
    let mut flow = open();
    assert!(
        flow.handle(at(1), UdpEvent::FromContainer(MAX_UDP_PAYLOAD))
            .relay
    );
    let step = flow.handle(at(1), UdpEvent::FromContainer(MAX_UDP_PAYLOAD + 1));
    assert!(step.invalid && !step.relay);
}

#[test]
fn a_socket_that_cannot_connect_answers_unreachable_and_ends_the_flow() {
    let mut flow = UdpFlow::new(at(0), Duration::from_secs(30));
    let step = flow.handle(
        at(0),
        UdpEvent::HostConnectFailed(ConnectFailure::Unreachable(Unreachable::Net)),
    );
    assert_eq!(
        step.actions.to_vec(),
        vec![
            Action::SendUnreachable(Unreachable::Net),
            Action::Release(EndReason::Unreachable {
                code: Unreachable::Net
            })
        ]
    );
    assert_eq!(flow.state(), UdpState::Closed);
    assert!(flow.handle(at(1), UdpEvent::FromContainer(1)).invalid);

    let mut flow = UdpFlow::new(at(0), Duration::from_secs(30));
    let step = flow.handle(at(0), UdpEvent::HostConnectFailed(ConnectFailure::Other));
    assert_eq!(
        step.actions.to_vec(),
        vec![Action::Release(EndReason::HostError)]
    );
}

#[test]
fn path_errors_are_passed_on_and_the_flow_stays() {
    let mut flow = open();
    // A refused datagram socket: the remote's "port unreachable".
    let step = flow.handle(at(1), UdpEvent::HostError(ConnectFailure::Refused));
    assert_eq!(
        step.actions.to_vec(),
        vec![Action::SendUnreachable(Unreachable::Port)]
    );
    let step = flow.handle(
        at(1),
        UdpEvent::HostError(ConnectFailure::Unreachable(Unreachable::Host)),
    );
    assert_eq!(
        step.actions.to_vec(),
        vec![Action::SendUnreachable(Unreachable::Host)]
    );
    // An error with nothing to say to the container says nothing.
    let step = flow.handle(at(1), UdpEvent::HostError(ConnectFailure::Other));
    assert!(step.actions.is_empty() && !step.invalid);
    assert_eq!(flow.state(), UdpState::Unreplied);
    // An error before the socket exists is nonsense.
    let mut connecting = UdpFlow::new(at(0), Duration::from_secs(30));
    assert!(
        connecting
            .handle(at(0), UdpEvent::HostError(ConnectFailure::Refused))
            .invalid
    );
}

#[test]
fn an_idle_flow_times_out_and_traffic_either_way_keeps_it() {
    let mut flow = open();
    assert_eq!(flow.deadline(), Some(at(30)));
    flow.handle(at(20), UdpEvent::FromHost(1));
    assert_eq!(flow.deadline(), Some(at(50)));
    assert!(flow.tick(at(49)).is_empty());
    assert_eq!(
        flow.tick(at(50)).to_vec(),
        vec![Action::Release(EndReason::TimedOut { timer: Timer::Idle })]
    );
    assert_eq!(flow.deadline(), None);
    assert!(flow.tick(at(100)).is_empty());
}
