//! pcapng files built block by block, read back; blocks written and checked.

use super::*;
use crate::capture::{OwnedFrame, PcapReader};

/// A pcapng file built block by block, in either byte order.
struct Builder {
    big_endian: bool,
    out: Vec<u8>,
}

impl Builder {
    fn new(big_endian: bool) -> Self {
        let mut b = Builder {
            big_endian,
            out: Vec::new(),
        };
        b.section();
        b
    }

    fn u16(&self, v: u16) -> [u8; 2] {
        if self.big_endian {
            v.to_be_bytes()
        } else {
            v.to_le_bytes()
        }
    }

    fn u32(&self, v: u32) -> [u8; 4] {
        if self.big_endian {
            v.to_be_bytes()
        } else {
            v.to_le_bytes()
        }
    }

    fn block(&mut self, block_type: u32, body: &[u8]) {
        let len = 12 + body.len().next_multiple_of(4) as u32;
        let mut b = Vec::new();
        b.extend_from_slice(&self.u32(block_type));
        b.extend_from_slice(&self.u32(len));
        b.extend_from_slice(body);
        b.resize(8 + body.len().next_multiple_of(4), 0);
        b.extend_from_slice(&self.u32(len));
        self.out.extend(b);
    }

    fn option(&self, body: &mut Vec<u8>, code: u16, value: &[u8]) {
        body.extend_from_slice(&self.u16(code));
        body.extend_from_slice(&self.u16(value.len() as u16));
        body.extend_from_slice(value);
        body.resize(body.len().next_multiple_of(4), 0);
    }

    fn section(&mut self) {
        let mut body = self.u32(BYTE_ORDER_MAGIC).to_vec();
        body.extend_from_slice(&self.u16(1));
        body.extend_from_slice(&self.u16(0));
        body.extend_from_slice(&[0xff; 8]);
        self.block(SHB_TYPE, &body);
    }

    fn interface(&mut self, linktype: u16, name: Option<&str>, tsresol: Option<u8>) {
        let mut body = self.u16(linktype).to_vec();
        body.extend_from_slice(&[0, 0]);
        body.extend_from_slice(&self.u32(0));
        if let Some(name) = name {
            self.option(&mut body, OPT_IF_NAME, name.as_bytes());
        }
        if let Some(r) = tsresol {
            self.option(&mut body, OPT_IF_TSRESOL, &[r]);
        }
        self.option(&mut body, OPT_END, &[]);
        self.block(IDB_TYPE, &body);
    }

    fn packet(&mut self, interface: u32, ticks: u64, data: &[u8]) {
        let mut body = self.u32(interface).to_vec();
        body.extend_from_slice(&self.u32((ticks >> 32) as u32));
        body.extend_from_slice(&self.u32(ticks as u32));
        body.extend_from_slice(&self.u32(data.len() as u32));
        body.extend_from_slice(&self.u32(data.len() as u32));
        body.extend_from_slice(data);
        self.block(EPB_TYPE, &body);
    }
}

fn read(bytes: &[u8], choice: Option<InterfaceChoice>) -> Result<Vec<OwnedFrame>, ReadError> {
    PcapReader::with_interface(bytes, choice)?.read_all()
}

#[test]
fn reads_either_byte_order_and_any_resolution() {
    for big_endian in [false, true] {
        let mut b = Builder::new(big_endian);
        b.interface(1, Some("eth0"), None); // microseconds
        b.packet(0, 1_500_000, &[1; 60]);
        b.block(5, &[0; 20]); // an interface statistics block: skipped
        let frames = read(&b.out, None).unwrap();
        assert_eq!(frames[0].timestamp_ns, 1_500_000_000);
        assert_eq!(frames[0].data, vec![1; 60]);
    }
    let mut b = Builder::new(false);
    b.interface(1, None, Some(0x80 | 10)); // 2^-10 s
    b.packet(0, 1024 * 3 + 512, &[2; 60]);
    assert_eq!(read(&b.out, None).unwrap()[0].timestamp_ns, 3_500_000_000);
}

#[test]
fn several_interfaces_are_refused_unless_one_is_chosen() {
    let mut b = Builder::new(false);
    b.interface(1, Some("eth0"), Some(9));
    b.interface(1, Some("eth1"), Some(9));
    b.packet(0, 10, &[0; 60]);
    b.packet(1, 11, &[1; 60]);
    b.packet(1, 12, &[2; 60]);
    let err = read(&b.out, None).unwrap_err();
    assert!(matches!(err.kind, ReadErrorKind::SeveralInterfaces { .. }));
    assert!(err.to_string().contains("#1 eth1"), "{err}");
    // Exactly the interfaces the file has: no "..." for ones it has not.
    assert!(
        err.to_string()
            .contains("the file has several interfaces (#0 eth0, #1 eth1); choose one"),
        "{err}"
    );
    let mut three = Builder::new(false);
    for name in ["a", "b", "c"] {
        three.interface(1, Some(name), Some(9));
    }
    three.packet(2, 10, &[0; 60]);
    let err = read(&three.out, None).unwrap_err();
    assert!(err.to_string().contains("(#0 a, #1 b, #2 c)"), "{err}");

    let by_index = read(&b.out, Some(InterfaceChoice::Index(1))).unwrap();
    assert_eq!(by_index.len(), 2);
    assert_eq!(by_index[0].timestamp_ns, 11);
    let by_name = read(&b.out, Some(InterfaceChoice::Name("eth0".into()))).unwrap();
    assert_eq!(by_name.len(), 1);
    let err = read(&b.out, Some(InterfaceChoice::Index(2))).unwrap_err();
    assert!(matches!(
        err.kind,
        ReadErrorKind::NoSuchInterface { count: 2, .. }
    ));
}

#[test]
fn a_second_section_starts_its_own_interface_numbers() {
    let mut b = Builder::new(false);
    b.interface(1, Some("a"), Some(9));
    b.packet(0, 1, &[0; 60]);
    b.big_endian = true;
    b.section();
    b.interface(1, Some("b"), Some(9));
    b.packet(0, 2, &[1; 60]);
    let frames = read(&b.out, Some(InterfaceChoice::Name("b".into()))).unwrap();
    assert_eq!(frames.len(), 1);
    assert_eq!(frames[0].timestamp_ns, 2);
}

#[test]
fn bad_blocks_are_errors_at_their_offset() {
    let mut b = Builder::new(false);
    b.interface(105, None, None);
    let err = read(&b.out, None).unwrap_err();
    assert!(matches!(
        err.kind,
        ReadErrorKind::NotEthernet {
            linktype: 105,
            interface: Some(0)
        }
    ));

    let mut b = Builder::new(false);
    b.interface(1, None, None);
    let packet_at = b.out.len();
    b.packet(3, 1, &[0; 60]);
    let err = read(&b.out, None).unwrap_err();
    assert_eq!(err.offset, packet_at as u64);
    assert!(matches!(
        err.kind,
        ReadErrorKind::UnknownInterface { id: 3, known: 1 }
    ));

    let mut b = Builder::new(false);
    b.interface(1, None, None);
    let packet_at = b.out.len();
    b.packet(0, 1, &[0; 60]);
    let mut cut = b.out.clone();
    cut.truncate(packet_at + 40);
    let err = read(&cut, None).unwrap_err();
    assert_eq!(err.offset, packet_at as u64);
    assert!(
        matches!(err.kind, ReadErrorKind::Truncated { got: 40, .. }),
        "{err}"
    );

    let mut mismatch = b.out.clone();
    let last = mismatch.len() - 4;
    mismatch[last] ^= 4;
    let err = read(&mismatch, None).unwrap_err();
    assert!(err.to_string().contains("at its end"), "{err}");

    let mut captured = b.out.clone();
    captured[packet_at + 20..packet_at + 24].copy_from_slice(&1000u32.to_le_bytes());
    let err = read(&captured, None).unwrap_err();
    assert!(err.to_string().contains("does not fit"), "{err}");

    let mut huge = b.out.clone();
    huge[packet_at + 4..packet_at + 8].copy_from_slice(&0x7fff_fff0u32.to_le_bytes());
    let err = read(&huge, None).unwrap_err();
    assert!(
        err.to_string().contains("larger than any sane block"),
        "{err}"
    );
}

#[test]
fn written_blocks_carry_direction_and_nanoseconds() {
    let mut out = Vec::new();
    write_section_header(&mut out);
    write_interface(&mut out, "p1");
    write_packet(
        &mut out,
        0,
        1_234_567_890_123,
        &[7; 61],
        Some(Direction::Outbound),
    );
    assert_eq!(out.len() % 4, 0);
    let frames = read(&out, None).unwrap();
    assert_eq!(frames[0].timestamp_ns, 1_234_567_890_123);
    assert_eq!(frames[0].data, vec![7; 61]);
    // epb_flags = 2 just before opt_endofopt and the trailing length.
    let tail = &out[out.len() - 16..];
    assert_eq!(&tail[0..2], &OPT_EPB_FLAGS.to_ne_bytes());
    assert_eq!(&tail[2..4], &4u16.to_ne_bytes());
    assert_eq!(&tail[4..8], &Direction::Outbound.flags().to_ne_bytes());
}
