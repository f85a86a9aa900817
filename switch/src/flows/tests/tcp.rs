//! Every transition of the TCP flow, the bad ones included.

use super::{at, limits};
use crate::flows::{
    Action, ConnectFailure, EndReason, Interest, Side, TcpEvent, TcpFlow, TcpState, Timer,
    Unreachable,
};

fn connecting() -> TcpFlow {
    TcpFlow::new(at(0), &limits())
}

fn established() -> TcpFlow {
    let mut flow = connecting();
    flow.handle(at(1), TcpEvent::HostConnected);
    flow
}

fn actions(flow: &mut TcpFlow, secs: u64, event: TcpEvent<'_>) -> Vec<Action> {
    flow.handle(at(secs), event).actions.to_vec()
}

#[test]
fn the_syn_is_answered_only_once_the_host_connect_succeeded() {
    let mut flow = connecting();
    assert_eq!(flow.state(), TcpState::Connecting);
    assert!(flow.is_connecting());
    // Nothing can flow before the handshake: no interest, data refused.
    assert_eq!(flow.interest(), Interest::default());
    let early = flow.handle(at(0), TcpEvent::ContainerData(b"GET /"));
    assert!(early.invalid);
    assert_eq!(early.accepted, 0);
    assert!(flow.handle(at(0), TcpEvent::ContainerFin).invalid);
    assert!(flow.handle(at(0), TcpEvent::HostData(b"x")).invalid);
    assert!(flow.handle(at(0), TcpEvent::HostEof).invalid);
    assert_eq!(
        actions(&mut flow, 1, TcpEvent::HostConnected),
        vec![Action::AcceptContainer]
    );
    assert_eq!(flow.state(), TcpState::Established);
    assert!(!flow.is_connecting());
    // A second connect result is nonsense now.
    assert!(flow.handle(at(1), TcpEvent::HostConnected).invalid);
    assert!(
        flow.handle(at(1), TcpEvent::HostConnectFailed(ConnectFailure::Refused))
            .invalid
    );
}

#[test]
fn a_refused_connect_resets_the_container() {
    let mut flow = connecting();
    assert_eq!(
        actions(
            &mut flow,
            1,
            TcpEvent::HostConnectFailed(ConnectFailure::Refused)
        ),
        vec![Action::ResetContainer, Action::Release(EndReason::Refused)]
    );
    assert_eq!(flow.state(), TcpState::Closed);
    assert_eq!(flow.deadline(), None);
    // A closed flow ignores everything.
    assert!(flow.handle(at(2), TcpEvent::HostConnected).invalid);
    assert!(flow.tick(at(1000)).is_empty());
}

#[test]
fn an_unreachable_destination_gets_an_icmp_error() {
    for code in [Unreachable::Net, Unreachable::Host, Unreachable::Prohibited] {
        let mut flow = connecting();
        assert_eq!(
            actions(
                &mut flow,
                1,
                TcpEvent::HostConnectFailed(ConnectFailure::Unreachable(code))
            ),
            vec![
                Action::SendUnreachable(code),
                Action::Release(EndReason::Unreachable { code })
            ]
        );
    }
}

#[test]
fn a_silent_destination_gets_nothing_as_behind_a_router() {
    let mut flow = connecting();
    assert_eq!(
        actions(
            &mut flow,
            1,
            TcpEvent::HostConnectFailed(ConnectFailure::TimedOut)
        ),
        vec![Action::Release(EndReason::TimedOut {
            timer: Timer::Connect
        })]
    );
    // A local failure is told at once.
    let mut flow = connecting();
    assert_eq!(
        actions(
            &mut flow,
            1,
            TcpEvent::HostConnectFailed(ConnectFailure::Other)
        ),
        vec![
            Action::ResetContainer,
            Action::Release(EndReason::HostError)
        ]
    );
}

#[test]
fn the_connect_timer_is_a_backstop() {
    let mut flow = connecting();
    assert_eq!(flow.deadline(), Some(at(10)));
    assert!(flow.tick(at(9)).is_empty());
    assert_eq!(
        flow.tick(at(10)).to_vec(),
        vec![Action::Release(EndReason::TimedOut {
            timer: Timer::Connect
        })]
    );
    assert_eq!(flow.state(), TcpState::Closed);
}

#[test]
fn a_container_that_gives_up_while_connecting_abandons_the_connect() {
    let mut flow = connecting();
    assert_eq!(
        actions(&mut flow, 1, TcpEvent::ContainerReset),
        vec![
            Action::ResetHost,
            Action::Release(EndReason::Reset {
                by: Side::Container
            })
        ]
    );
}

#[test]
fn bytes_are_relayed_both_ways_and_counted() {
    let mut flow = established();
    assert_eq!(
        flow.interest(),
        Interest {
            read_container: true,
            read_host: true,
            write_host: false,
            write_container: false,
        }
    );
    let step = flow.handle(at(2), TcpEvent::ContainerData(b"ping"));
    assert_eq!((step.accepted, step.invalid), (4, false));
    assert!(step.actions.is_empty());
    assert_eq!(flow.to_host(), b"ping");
    assert!(flow.interest().write_host);
    flow.handle(at(2), TcpEvent::HostWrote(4));
    assert!(flow.to_host().is_empty());

    assert_eq!(flow.handle(at(3), TcpEvent::HostData(b"pong!")).accepted, 5);
    assert_eq!(flow.to_container(), b"pong!");
    assert!(flow.interest().write_container);
    flow.handle(at(3), TcpEvent::ContainerTook(2));
    assert_eq!(flow.to_container(), b"ng!");
    flow.handle(at(3), TcpEvent::ContainerTook(3));
    assert_eq!(flow.counters().bytes_from_container, 4);
    assert_eq!(flow.counters().bytes_to_container, 5);
}

#[test]
fn bytes_taken_straight_by_the_container_side_are_counted_not_buffered() {
    let mut flow = established();
    let step = flow.handle(at(2), TcpEvent::HostDataTaken(1000));
    assert_eq!((step.accepted, step.invalid), (1000, false));
    assert!(flow.to_container().is_empty());
    assert_eq!(flow.counters().bytes_to_container, 1000);
    // Not while bytes wait before them (they would be overtaken), nor
    // after the remote's end.
    flow.handle(at(3), TcpEvent::HostData(b"queued"));
    let step = flow.handle(at(3), TcpEvent::HostDataTaken(10));
    assert_eq!((step.accepted, step.invalid), (0, true));
    flow.handle(at(3), TcpEvent::ContainerTook(6));
    flow.handle(at(4), TcpEvent::HostEof);
    let step = flow.handle(at(4), TcpEvent::HostDataTaken(10));
    assert_eq!((step.accepted, step.invalid), (0, true));
    assert_eq!(flow.counters().bytes_to_container, 1006);
    // Before the connect, as any data.
    let step = connecting().handle(at(1), TcpEvent::HostDataTaken(10));
    assert!(step.invalid);
}

#[test]
fn a_full_buffer_stops_reading_that_side_until_the_other_takes_bytes() {
    let mut flow = established();
    // The buffer holds 8 bytes: the rest stays with the container's stack.
    let step = flow.handle(at(2), TcpEvent::ContainerData(b"0123456789"));
    assert_eq!(step.accepted, 8);
    assert!(!flow.interest().read_container);
    assert!(flow.interest().write_host);
    assert_eq!(
        flow.handle(at(2), TcpEvent::ContainerData(b"89")).accepted,
        0
    );
    flow.handle(at(3), TcpEvent::HostWrote(3));
    assert!(flow.interest().read_container);
    assert_eq!(
        flow.handle(at(3), TcpEvent::ContainerData(b"89")).accepted,
        2
    );
    assert_eq!(flow.to_host(), b"3456789");
    // The same the other way.
    assert_eq!(
        flow.handle(at(4), TcpEvent::HostData(&[1u8; 20])).accepted,
        8
    );
    assert!(!flow.interest().read_host);
    flow.handle(at(4), TcpEvent::ContainerTook(8));
    assert!(flow.interest().read_host);
    // Reporting more written than waited is clamped, not a panic.
    flow.handle(at(5), TcpEvent::HostWrote(1000));
    assert!(flow.to_host().is_empty());
}

#[test]
fn the_containers_fin_waits_for_its_bytes_then_shuts_the_host_write_side() {
    let mut flow = established();
    flow.handle(at(2), TcpEvent::ContainerData(b"last"));
    // Bytes still wait: the FIN is not passed on yet.
    assert!(actions(&mut flow, 2, TcpEvent::ContainerFin).is_empty());
    assert_eq!(flow.state(), TcpState::ContainerClosed);
    assert!(!flow.interest().read_container);
    // Data after a FIN is a protocol violation.
    assert!(flow.handle(at(2), TcpEvent::ContainerData(b"x")).invalid);
    assert!(flow.handle(at(2), TcpEvent::ContainerFin).invalid);
    assert_eq!(
        actions(&mut flow, 3, TcpEvent::HostWrote(4)),
        vec![Action::ShutdownHostWrite]
    );
    // The remote may still talk (half-close).
    assert_eq!(flow.handle(at(4), TcpEvent::HostData(b"more")).accepted, 4);
    flow.handle(at(4), TcpEvent::ContainerTook(4));
    assert_eq!(
        actions(&mut flow, 5, TcpEvent::HostEof),
        vec![
            Action::CloseContainerWrite,
            Action::Release(EndReason::Closed {
                first: Side::Container
            })
        ]
    );
}

#[test]
fn the_remotes_eof_waits_for_its_bytes_then_closes_the_container_side() {
    let mut flow = established();
    flow.handle(at(2), TcpEvent::HostData(b"bye"));
    assert!(actions(&mut flow, 2, TcpEvent::HostEof).is_empty());
    assert_eq!(flow.state(), TcpState::RemoteClosed);
    assert!(!flow.interest().read_host);
    assert!(flow.handle(at(2), TcpEvent::HostData(b"x")).invalid);
    assert!(flow.handle(at(2), TcpEvent::HostEof).invalid);
    assert_eq!(
        actions(&mut flow, 3, TcpEvent::ContainerTook(3)),
        vec![Action::CloseContainerWrite]
    );
    // The container may still send (half-close the other way).
    assert_eq!(
        flow.handle(at(4), TcpEvent::ContainerData(b"ok")).accepted,
        2
    );
    assert!(actions(&mut flow, 4, TcpEvent::ContainerFin).is_empty());
    assert_eq!(flow.state(), TcpState::Closing);
    assert_eq!(
        actions(&mut flow, 5, TcpEvent::HostWrote(2)),
        vec![
            Action::ShutdownHostWrite,
            Action::Release(EndReason::Closed {
                first: Side::Remote
            })
        ]
    );
}

#[test]
fn fins_with_empty_buffers_pass_on_at_once() {
    let mut flow = established();
    assert_eq!(
        actions(&mut flow, 2, TcpEvent::ContainerFin),
        vec![Action::ShutdownHostWrite]
    );
    assert_eq!(
        actions(&mut flow, 2, TcpEvent::HostEof),
        vec![
            Action::CloseContainerWrite,
            Action::Release(EndReason::Closed {
                first: Side::Container
            })
        ]
    );
}

#[test]
fn resets_cross_over_both_ways_and_drop_the_buffers() {
    let mut flow = established();
    flow.handle(at(2), TcpEvent::ContainerData(b"pending"));
    assert_eq!(
        actions(&mut flow, 3, TcpEvent::ContainerReset),
        vec![
            Action::ResetHost,
            Action::Release(EndReason::Reset {
                by: Side::Container
            })
        ]
    );
    assert!(flow.to_host().is_empty());
    assert_eq!(flow.allocated(), 0);

    let mut flow = established();
    flow.handle(at(2), TcpEvent::HostData(b"pending"));
    assert_eq!(
        actions(&mut flow, 3, TcpEvent::HostReset),
        vec![
            Action::ResetContainer,
            Action::Release(EndReason::Reset { by: Side::Remote })
        ]
    );
    assert!(flow.to_container().is_empty());

    // A reset during a half-close is still a reset.
    let mut flow = established();
    flow.handle(at(2), TcpEvent::ContainerFin);
    assert_eq!(
        actions(&mut flow, 3, TcpEvent::HostReset),
        vec![
            Action::ResetContainer,
            Action::Release(EndReason::Reset { by: Side::Remote })
        ]
    );
}

#[test]
fn an_idle_flow_is_reset_both_ways() {
    let mut flow = established();
    assert_eq!(flow.deadline(), Some(at(101)));
    flow.handle(at(50), TcpEvent::ContainerData(b"x"));
    assert_eq!(flow.deadline(), Some(at(150)));
    assert!(flow.tick(at(149)).is_empty());
    assert_eq!(
        flow.tick(at(150)).to_vec(),
        vec![
            Action::ResetContainer,
            Action::ResetHost,
            Action::Release(EndReason::TimedOut { timer: Timer::Idle })
        ]
    );
}

#[test]
fn a_half_closed_flow_has_the_shorter_idle_timer() {
    let mut flow = established();
    flow.handle(at(10), TcpEvent::HostEof);
    assert_eq!(flow.deadline(), Some(at(30)));
    assert!(flow.tick(at(29)).is_empty());
    assert_eq!(
        flow.tick(at(30)).release(),
        Some(EndReason::TimedOut { timer: Timer::Idle })
    );
}

// --- inbound flows: a client of a published port, connected into the container ---

fn inbound() -> TcpFlow {
    TcpFlow::inbound(at(0), &limits())
}

#[test]
fn an_inbound_flow_opens_when_the_container_accepts() {
    let mut flow = inbound();
    assert_eq!(flow.origin(), crate::flows::Origin::Inbound);
    assert_eq!(flow.state(), TcpState::Connecting);
    // The outbound machine's events do not apply, nor data yet.
    assert!(flow.handle(at(0), TcpEvent::HostConnected).invalid);
    assert!(flow.handle(at(0), TcpEvent::HostData(b"GET /")).invalid);
    assert!(actions(&mut flow, 1, TcpEvent::ContainerConnected).is_empty());
    assert_eq!(flow.state(), TcpState::Established);
    // The client's request goes to the container, the answer back.
    assert_eq!(flow.handle(at(2), TcpEvent::HostData(b"GET /")).accepted, 5);
    assert_eq!(flow.to_container(), b"GET /");
    assert_eq!(
        flow.handle(at(2), TcpEvent::ContainerData(b"200")).accepted,
        3
    );
    assert_eq!(flow.to_host(), b"200");
    assert!(flow.handle(at(2), TcpEvent::ContainerConnected).invalid);
}

#[test]
fn a_container_that_refuses_or_stays_silent_resets_the_client() {
    let mut flow = inbound();
    assert_eq!(
        actions(
            &mut flow,
            1,
            TcpEvent::ContainerConnectFailed(ConnectFailure::Refused)
        ),
        vec![Action::ResetHost, Action::Release(EndReason::Refused)]
    );
    let mut flow = inbound();
    assert_eq!(
        actions(
            &mut flow,
            1,
            TcpEvent::ContainerConnectFailed(ConnectFailure::TimedOut)
        ),
        vec![
            Action::ResetHost,
            Action::Release(EndReason::TimedOut {
                timer: Timer::Connect
            })
        ]
    );
    // The backstop timer resets the waiting client too.
    let mut flow = inbound();
    assert_eq!(
        flow.tick(at(10)).to_vec(),
        vec![
            Action::ResetHost,
            Action::Release(EndReason::TimedOut {
                timer: Timer::Connect
            })
        ]
    );
    // An outbound flow's backstop has no client to tell.
    let mut outbound = connecting();
    assert_eq!(outbound.tick(at(10)).len(), 1);
}

#[test]
fn a_client_that_gives_up_while_the_container_connects_abandons_it() {
    let mut flow = inbound();
    assert_eq!(
        actions(&mut flow, 1, TcpEvent::HostReset),
        vec![
            Action::ResetContainer,
            Action::Release(EndReason::Reset { by: Side::Remote })
        ]
    );
    // An outbound flow ignores the container-side connect events.
    let mut outbound = connecting();
    assert!(outbound.handle(at(0), TcpEvent::ContainerConnected).invalid);
    assert!(outbound.handle(at(0), TcpEvent::HostReset).invalid);
}
