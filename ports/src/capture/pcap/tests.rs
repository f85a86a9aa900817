//! Classic pcap read and written back, and every kind of damage.

use super::{MAGIC_MICROS, MAGIC_NANOS};
use crate::capture::{
    CLASSIC_MAX_SECS, Encoder, Format, InterfaceChoice, MAX_SNAPLEN, OutputFormat, OwnedFrame,
    PcapReader, PcapWriter, ReadError, ReadErrorKind, TimestampTooLate,
};

fn frame(n: u8, len: usize) -> Vec<u8> {
    (0..len).map(|i| n.wrapping_add(i as u8)).collect()
}

fn write(format: OutputFormat, frames: &[(u64, Vec<u8>)]) -> Vec<u8> {
    let mut w = PcapWriter::new(Vec::new(), format, "p1").unwrap();
    for (ts, data) in frames {
        w.write_frame(*ts, data, None).unwrap();
    }
    w.into_inner()
}

fn read(bytes: &[u8]) -> Result<Vec<OwnedFrame>, ReadError> {
    PcapReader::new(bytes)?.read_all()
}

fn classic_header(magic: u32, big_endian: bool, snaplen: u32, linktype: u32) -> Vec<u8> {
    let mut h = Vec::new();
    let put32 = |h: &mut Vec<u8>, v: u32| {
        h.extend_from_slice(&if big_endian {
            v.to_be_bytes()
        } else {
            v.to_le_bytes()
        })
    };
    put32(&mut h, magic);
    let version = if big_endian {
        [0, 2, 0, 4]
    } else {
        [2, 0, 4, 0]
    };
    h.extend_from_slice(&version);
    put32(&mut h, 0);
    put32(&mut h, 0);
    put32(&mut h, snaplen);
    put32(&mut h, linktype);
    h
}

fn classic_record(big_endian: bool, secs: u32, frac: u32, data: &[u8]) -> Vec<u8> {
    let mut r = Vec::new();
    for v in [secs, frac, data.len() as u32, data.len() as u32] {
        r.extend_from_slice(&if big_endian {
            v.to_be_bytes()
        } else {
            v.to_le_bytes()
        });
    }
    r.extend_from_slice(data);
    r
}

#[test]
fn classic_round_trip_keeps_nanoseconds_and_64k_frames() {
    let frames = vec![
        (1_700_000_000_123_456_789, frame(1, 60)),
        (1_700_000_001_000_000_001, frame(2, 65_535 + 18)),
        (0, frame(3, 14)),
    ];
    let bytes = write(OutputFormat::Pcap, &frames);
    assert_eq!(&bytes[..4], &MAGIC_NANOS.to_ne_bytes());
    assert_eq!(&bytes[16..20], &MAX_SNAPLEN.to_ne_bytes());
    let back = read(&bytes).unwrap();
    let back: Vec<_> = back.into_iter().map(|f| (f.timestamp_ns, f.data)).collect();
    assert_eq!(back, frames);
}

#[test]
fn pcapng_round_trip_keeps_times_past_2106() {
    let late = (CLASSIC_MAX_SECS + 10) * 1_000_000_000 + 7;
    let frames = vec![(5, frame(1, 60)), (late, frame(9, 70_000))];
    let bytes = write(OutputFormat::PcapNg, &frames);
    let back = read(&bytes).unwrap();
    let back: Vec<_> = back.into_iter().map(|f| (f.timestamp_ns, f.data)).collect();
    assert_eq!(back, frames);
}

#[test]
fn classic_refuses_times_it_cannot_hold() {
    let late = (CLASSIC_MAX_SECS + 1) * 1_000_000_000;
    let encoder = Encoder::new(OutputFormat::Pcap);
    assert!(encoder.fits(late - 1));
    assert!(!encoder.fits(late));
    let err = encoder.frame(&mut Vec::new(), late, &[0; 60], None);
    assert_eq!(err, Err(TimestampTooLate { timestamp_ns: late }));
    assert!(err.unwrap_err().to_string().contains("2106"));
}

#[test]
fn reads_microsecond_and_big_endian_files() {
    for big_endian in [false, true] {
        for (magic, frac, want_ns) in [(MAGIC_MICROS, 250, 250_000), (MAGIC_NANOS, 250, 250)] {
            let mut bytes = classic_header(magic, big_endian, 65_535, 1);
            bytes.extend(classic_record(big_endian, 10, frac, &frame(0, 42)));
            let reader = PcapReader::new(&bytes[..]).unwrap();
            assert_eq!(
                reader.format(),
                Format::Pcap {
                    nanos: magic == MAGIC_NANOS,
                    big_endian
                }
            );
            let frames = read(&bytes).unwrap();
            assert_eq!(frames[0].timestamp_ns, 10_000_000_000 + want_ns);
            assert_eq!(frames[0].data, frame(0, 42));
        }
    }
}

#[test]
fn cuts_off_a_frame_check_sequence() {
    // FCS present (bit 26), 2 words (4 bytes).
    let mut bytes = classic_header(MAGIC_MICROS, false, 65_535, 1 | 0x0400_0000 | (2 << 28));
    bytes.extend(classic_record(false, 1, 0, &frame(0, 64)));
    assert_eq!(read(&bytes).unwrap()[0].data, frame(0, 60));
}

fn error_of(bytes: &[u8]) -> ReadError {
    match PcapReader::new(bytes).and_then(|mut r| r.read_all()) {
        Ok(frames) => panic!("read {} frames from bad input", frames.len()),
        Err(err) => err,
    }
}

/// Where a truncation error is, how long its piece should be and how much
/// of it the file holds: (offset, needed, got).
fn truncation(err: &ReadError) -> Option<(u64, u64, u64)> {
    match err.kind {
        ReadErrorKind::Truncated { needed, got, .. } => Some((err.offset, needed, got)),
        _ => None,
    }
}

#[test]
fn every_kind_of_bad_input_is_an_error_at_its_offset() {
    let good = {
        let mut b = classic_header(MAGIC_NANOS, false, 100, 1);
        b.extend(classic_record(false, 1, 0, &frame(0, 60)));
        b.extend(classic_record(false, 2, 0, &frame(0, 60)));
        b
    };
    assert_eq!(read(&good).unwrap().len(), 2);

    let err = error_of(&[]);
    assert!(matches!(err.kind, ReadErrorKind::Empty));

    let err = error_of(b"GIF89a trailing bytes");
    assert!(matches!(err.kind, ReadErrorKind::BadMagic(0x4749_4638)));
    assert_eq!(err.to_string().split(':').next(), Some("byte 0"));

    let err = error_of(&good[..10]);
    assert_eq!(truncation(&err), Some((0, 24, 10)), "{err}");

    // Cut inside the second record's header, then inside its frame.
    let second = 24 + 16 + 60;
    let err = error_of(&good[..second + 5]);
    assert_eq!(truncation(&err), Some((second as u64, 16, 5)));
    let err = error_of(&good[..second + 16 + 30]);
    assert_eq!(truncation(&err), Some((second as u64, 60, 30)));
    assert_eq!(
        err.to_string(),
        "byte 100: truncated: the file ends 30 bytes into a 60-byte frame"
    );

    let mut long = classic_header(MAGIC_NANOS, false, 100, 1);
    long.extend(classic_record(false, 1, 0, &frame(0, 101)));
    let err = error_of(&long);
    assert_eq!(err.offset, 24);
    assert!(matches!(
        err.kind,
        ReadErrorKind::RecordTooLong {
            len: 101,
            snaplen: 100
        }
    ));

    let mut absurd = classic_header(MAGIC_NANOS, false, 0, 1);
    absurd.extend(classic_record(false, 1, 0, &[]));
    absurd[24 + 8..24 + 12].copy_from_slice(&0x7fff_ffffu32.to_le_bytes());
    let err = error_of(&absurd);
    assert!(matches!(
        err.kind,
        ReadErrorKind::RecordAbsurd { len: 0x7fff_ffff }
    ));

    let err = error_of(&classic_header(MAGIC_NANOS, false, 100, 105));
    assert!(matches!(
        err.kind,
        ReadErrorKind::NotEthernet { linktype: 105, .. }
    ));
    assert!(err.to_string().contains("802.11"), "{err}");

    let mut version = classic_header(MAGIC_NANOS, false, 100, 1);
    version[4] = 3;
    assert!(matches!(
        error_of(&version).kind,
        ReadErrorKind::BadVersion { major: 3, .. }
    ));
}

#[test]
fn a_classic_file_has_only_interface_zero() {
    let bytes = write(OutputFormat::Pcap, &[(1, frame(0, 60))]);
    assert!(PcapReader::with_interface(&bytes[..], Some(InterfaceChoice::Index(0))).is_ok());
    let err = PcapReader::with_interface(&bytes[..], Some(InterfaceChoice::Index(1))).unwrap_err();
    assert!(matches!(err.kind, ReadErrorKind::NoSuchInterface { .. }));
}

/// Random and cut-up inputs: errors are fine, panics and runaway
/// allocations are not. (The fuzz target in fuzz/ goes further.)
#[test]
fn random_and_truncated_bytes_never_panic() {
    let mut seeds = vec![
        write(OutputFormat::Pcap, &[(1, frame(0, 60)), (2, frame(1, 100))]),
        write(
            OutputFormat::PcapNg,
            &[(1, frame(0, 60)), (2, frame(1, 100))],
        ),
    ];
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for seed in seeds.drain(..) {
        for cut in 0..seed.len() {
            let _ = PcapReader::new(&seed[..cut]).and_then(|mut r| r.read_all());
        }
        for _ in 0..2_000 {
            let mut bytes = seed.clone();
            for _ in 0..1 + next() % 4 {
                let i = (next() as usize) % bytes.len();
                bytes[i] = next() as u8;
            }
            let _ = PcapReader::new(&bytes[..]).and_then(|mut r| r.read_all());
        }
    }
}
