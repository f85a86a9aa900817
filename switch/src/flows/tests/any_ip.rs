//! What smoltcp 0.14's any-IP mode does, pinned down for the integration
//! plan in `flows/mod.rs`: it answers for *every* address at once, route or
//! no route, so the gateway thread must filter what reaches it.

use std::collections::VecDeque;
use std::net::Ipv4Addr;

use smoltcp::iface::{Config, Interface, SocketSet};
use smoltcp::phy::{self, DeviceCapabilities, Medium};
use smoltcp::time::Instant;
use smoltcp::wire::{
    EthernetAddress, EthernetFrame, EthernetProtocol, HardwareAddress, IpCidr, Ipv4Packet,
};

const GW_MAC: [u8; 6] = [0x02, 0x42, 0xac, 0x11, 0x00, 0x01];
const HOST_MAC: [u8; 6] = [0x02, 0x42, 0xac, 0x11, 0x00, 0x02];
const GW_IP: Ipv4Addr = Ipv4Addr::new(172, 17, 0, 1);
const HOST_IP: Ipv4Addr = Ipv4Addr::new(172, 17, 0, 2);
const OTHER_CONTAINER: Ipv4Addr = Ipv4Addr::new(172, 17, 0, 3);
const OUTSIDE: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 7);

#[derive(Default)]
struct Queues {
    rx: VecDeque<Vec<u8>>,
    tx: Vec<Vec<u8>>,
}

impl phy::Device for Queues {
    type RxToken<'a> = Rx;
    type TxToken<'a> = Tx<'a>;

    fn receive(&mut self, _now: Instant) -> Option<(Rx, Tx<'_>)> {
        let frame = self.rx.pop_front()?;
        Some((Rx(frame), Tx(&mut self.tx)))
    }

    fn transmit(&mut self, _now: Instant) -> Option<Tx<'_>> {
        Some(Tx(&mut self.tx))
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ethernet;
        caps.max_transmission_unit = 1514;
        caps
    }
}

struct Rx(Vec<u8>);

impl phy::RxToken for Rx {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(&self.0)
    }
}

struct Tx<'a>(&'a mut Vec<Vec<u8>>);

impl phy::TxToken for Tx<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut frame = vec![0; len];
        let result = f(&mut frame);
        self.0.push(frame);
        result
    }
}

fn gateway(any_ip: bool) -> (Interface, Queues, SocketSet<'static>) {
    let mut device = Queues::default();
    let config = Config::new(HardwareAddress::Ethernet(EthernetAddress(GW_MAC)));
    let mut iface = Interface::new(config, &mut device, Instant::ZERO);
    iface.update_ip_addrs(|addrs| {
        let _ = addrs.push(IpCidr::new(GW_IP.into(), 16));
    });
    iface.set_any_ip(any_ip);
    (iface, device, SocketSet::new(Vec::new()))
}

fn arp_request(target: Ipv4Addr) -> Vec<u8> {
    crate::test_frames::arp_request(HOST_MAC, HOST_IP, target)
}

/// An echo request from the container to `dst`, sent to the gateway's MAC
/// (as the container's default route does for outside addresses).
fn ping(dst: Ipv4Addr) -> Vec<u8> {
    crate::test_frames::echo_request((HOST_MAC, HOST_IP), (GW_MAC, dst), 1, b"tapswitch")
}

/// Feeds frames to the interface and returns what it sent.
fn run(any_ip: bool, frames: Vec<Vec<u8>>) -> Vec<Vec<u8>> {
    let (mut iface, mut device, mut sockets) = gateway(any_ip);
    device.rx.extend(frames);
    iface.poll(Instant::from_millis(1), &mut device, &mut sockets);
    device.tx
}

/// The source address of an IPv4 frame, if it is one.
fn ip_source(frame: &[u8]) -> Option<Ipv4Addr> {
    let eth = EthernetFrame::new_checked(frame).ok()?;
    (eth.ethertype() == EthernetProtocol::Ipv4)
        .then(|| Ipv4Packet::new_checked(eth.payload()).ok())
        .flatten()
        .map(|ip| ip.src_addr())
}

#[test]
fn without_any_ip_the_gateway_answers_only_for_itself() {
    let sent = run(
        false,
        vec![
            arp_request(GW_IP),
            arp_request(OTHER_CONTAINER),
            ping(OUTSIDE),
        ],
    );
    assert_eq!(sent.len(), 1, "only the ARP reply for the gateway");
}

#[test]
fn with_any_ip_it_claims_every_address_so_frames_must_be_filtered_first() {
    // ARP for another container's address: answered with the gateway's
    // MAC, which would steal that container's traffic.
    let sent = run(true, vec![arp_request(OTHER_CONTAINER)]);
    assert_eq!(sent.len(), 1, "smoltcp answered ARP for 172.17.0.3");
    // A ping to an outside address, with no route installed: smoltcp
    // answers it itself, from the outside address (a forged reply).
    let sent = run(true, vec![arp_request(GW_IP), ping(OUTSIDE)]);
    assert_eq!(sent.len(), 2, "an ARP reply and a forged echo reply");
    assert_eq!(ip_source(&sent[1]), Some(OUTSIDE));
}
