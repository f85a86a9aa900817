//! The capture-file reader on arbitrary bytes: it may refuse them, it must
//! never panic, hang or allocate without bound.
//!
//! Run from this directory (seeds/ holds small pcap and pcapng files, each
//! behind the mode byte 0; the working corpus/ is not kept in git):
//!
//! ```text
//! mkdir -p corpus/pcap_reader
//! cargo +nightly fuzz run pcap_reader corpus/pcap_reader seeds/pcap_reader -- -max_total_time=300
//! ```

#![no_main]

use libfuzzer_sys::fuzz_target;
use ports::capture::{InterfaceChoice, PcapReader};

fuzz_target!(|data: &[u8]| {
    // The first byte picks how the file is opened, so the interface-choice
    // paths of the pcapng reader are covered too.
    let Some((&mode, bytes)) = data.split_first() else {
        return;
    };
    let choice = match mode % 3 {
        0 => None,
        1 => Some(InterfaceChoice::Index(u32::from(mode / 3))),
        _ => Some(InterfaceChoice::Name("eth0".into())),
    };
    let Ok(mut reader) = PcapReader::with_interface(bytes, choice) else {
        return;
    };
    while let Ok(Some(frame)) = reader.next_frame() {
        assert!(frame.data.len() <= ports::capture::MAX_SNAPLEN as usize);
    }
});
