//! MACs put behind a member from its registration (see "MACs a member
//! registered" in the module docs), with a fake clock.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::{Duration, Instant};

use super::*;
use crate::wire::vxlan;

const VNI: u32 = 4096;
const A: SocketAddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(192, 0, 2, 1), 4789));
const B: SocketAddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(192, 0, 2, 2), 4789));
const STRANGER: SocketAddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(192, 0, 2, 66), 4789));
const GATEWAY: MacAddr = MacAddr([0x02, 0x42, 0x0a, 0x32, 0x00, 0x01]);
const H1: MacAddr = MacAddr([0x02, 0x42, 0x0a, 0x32, 0x00, 0x02]);
const H2: MacAddr = MacAddr([0x02, 0x42, 0x0a, 0x32, 0x00, 0x03]);

fn table() -> RemoteTable {
    let mut table = RemoteTable::new(VNI, [GATEWAY]);
    table.add_member(A);
    table.add_member(B);
    table
}

/// A VXLAN datagram carrying a broadcast from `src`.
fn datagram(src: MacAddr) -> Vec<u8> {
    let mut datagram = vxlan::header(VNI).to_vec();
    datagram.extend_from_slice(&[0xff; 6]);
    datagram.extend_from_slice(&src.0);
    datagram.extend_from_slice(&[0x08, 0x06]);
    datagram.extend_from_slice(&[0; 46]);
    datagram
}

#[test]
fn a_registered_mac_is_behind_its_member_before_any_frame_and_never_ages() {
    let now = Instant::now();
    let mut table = table();
    let change = table.set_registered(A, &[H1, GATEWAY, MacAddr([0xff; 6])], now);
    assert_eq!(
        change,
        RegisteredChange {
            added: vec![H1],
            removed: vec![]
        },
        "the gateway's MAC stays home; a group address is no host"
    );
    assert_eq!(table.destinations(H1, H2, now), Destinations::One(A));
    let much_later = now + DEFAULT_MAX_AGE * 3;
    assert_eq!(table.lookup(H1, much_later), Some(A));
    assert_eq!(table.expire(much_later), 0);
    let entries = table.entries(much_later);
    assert_eq!((entries[0].mac, entries[0].registered), (H1, true));
    assert_eq!(table.stats().registered, 1);
    assert_eq!(table.stats().learned, 0, "nothing heard");
    assert_eq!(
        table.set_registered(A, &[H1], much_later),
        RegisteredChange::default(),
        "listed again: nothing changes"
    );
}

#[test]
fn a_registration_that_drops_a_mac_takes_it_away() {
    let now = Instant::now();
    let mut table = table();
    table.set_registered(A, &[H1, H2], now);
    let change = table.set_registered(A, &[H2], now);
    assert_eq!(change.removed, vec![H1]);
    assert_eq!(table.lookup(H1, now), None);
    assert_eq!(table.lookup(H2, now), Some(A));
}

#[test]
fn traffic_wins_over_a_registration() {
    let now = Instant::now();
    let mut table = table();
    // Heard behind B, registered by A: it stays behind B.
    table.receive(B, &datagram(H1), now).unwrap();
    assert!(table.set_registered(A, &[H1], now).added.is_empty());
    assert_eq!(table.lookup(H1, now), Some(B));
    // Registered by A, then heard behind B: behind B, and it ages again.
    table.set_registered(A, &[H2], now);
    table.receive(B, &datagram(H2), now).unwrap();
    assert_eq!(table.lookup(H2, now), Some(B));
    assert!(!table.entries(now).iter().any(|e| e.registered));
    assert_eq!(table.lookup(H2, now + DEFAULT_MAX_AGE), None);
    // A's registration no longer listing it does not touch B's entry.
    let later = now + Duration::from_secs(1);
    assert!(table.set_registered(A, &[], later).removed.is_empty());
    assert_eq!(table.lookup(H1, later), Some(B));
}

#[test]
fn an_aged_learned_entry_yields_to_the_registration() {
    let now = Instant::now();
    let mut table = table();
    table.receive(B, &datagram(H1), now).unwrap();
    let later = now + DEFAULT_MAX_AGE;
    assert_eq!(table.set_registered(A, &[H1], later).added, vec![H1]);
    assert_eq!(table.lookup(H1, later), Some(A));
}

#[test]
fn a_members_registered_macs_go_with_it_and_strangers_register_nothing() {
    let now = Instant::now();
    let mut table = table();
    assert!(table.set_registered(STRANGER, &[H1], now).added.is_empty());
    assert_eq!(table.lookup(H1, now), None);
    table.set_registered(A, &[H1], now);
    assert_eq!(table.remove_member(A), vec![H1]);
    assert_eq!(table.lookup(H1, now), None);
}

#[test]
fn a_full_table_refuses_registered_macs() {
    let now = Instant::now();
    let mut table = table().with_limits(DEFAULT_MAX_AGE, 1);
    assert_eq!(table.set_registered(A, &[H1, H2], now).added, vec![H1]);
    assert_eq!(table.stats().refused, 1);
}

#[test]
fn only_members_known_as_switches_are_trusted_with_partial_checksums() {
    let mut table = table();
    // Nobody is a switch until the control plane says so.
    assert!(!table.is_switch_at(A.ip()));
    assert!(!table.are_switches(&[A]));
    table.set_switches([A, STRANGER]);
    assert!(table.is_switch_at(A.ip()));
    assert!(table.are_switches(&[A]));
    // B is a peer; a flood to both needs full checksums.
    assert!(!table.is_switch_at(B.ip()));
    assert!(!table.are_switches(&[A, B]));
    assert!(!table.are_switches(&[]));
    // A stranger is no member, whatever the list says.
    assert!(!table.is_switch_at(STRANGER.ip()));
    assert!(!table.are_switches(&[STRANGER]));
    // A peer at a switch's address (another port) makes the address a
    // peer's: its datagrams may come without a UDP checksum.
    let peer_beside = SocketAddr::new(A.ip(), 8472);
    table.add_member(peer_beside);
    assert!(!table.is_switch_at(A.ip()));
    assert!(table.are_switches(&[A]));
    // A switch that leaves is no longer trusted.
    table.remove_member(peer_beside);
    table.remove_member(A);
    assert!(!table.is_switch_at(A.ip()));
    assert!(!table.are_switches(&[A]));
}
