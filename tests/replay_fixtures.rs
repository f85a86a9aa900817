//! Golden fixtures: one directory per forwarding rule in tests/fixtures/
//! (see tests/fixtures/README.md), each checked by
//! [`check_scenario`](tapswitch_tests::golden::check_scenario): the inputs
//! build from `input.txt`, replay writes and prints exactly `expected/`, a
//! second run is identical, and `--expect expected` agrees.
//!
//! `UPDATE_FIXTURES=1 cargo test -p tapswitch-tests --test replay_fixtures`
//! rewrites the generated files; review the diff before committing it.

use std::fs;

use tapswitch_tests::golden::check_scenario;
use tapswitch_tests::lab::fixtures_dir;

macro_rules! fixtures {
    ($($test:ident => $dir:literal,)*) => {
        $(
            #[test]
            fn $test() {
                check_scenario(&fixtures_dir().join($dir));
            }
        )*
        const SCENARIOS: &[&str] = &[$($dir),*];
    };
}

fixtures! {
    flooding_and_learning => "flood-learn",
    a_moved_host_is_followed => "move",
    entries_age_out_on_capture_time => "age-out",
    a_full_table_evicts_fairly => "table-full",
    link_local_frames_are_not_forwarded => "link-local",
    no_hairpin => "hairpin",
    vlan_tags_are_kept => "vlan",
    gateway_answers_arp_and_ping => "gateway",
    group_sources_are_not_learned => "group-source",
    inputs_merge_by_time_then_port_order => "merge-order",
    frames_over_the_mtu_are_dropped => "too-big",
    a_static_entry_neither_moves_nor_ages => "static-entry",
}

#[test]
fn every_fixture_directory_has_a_test() {
    let mut dirs: Vec<String> = fs::read_dir(fixtures_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("input.txt").is_file())
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    dirs.sort();
    let mut listed: Vec<String> = SCENARIOS.iter().map(|s| s.to_string()).collect();
    listed.sort();
    assert_eq!(dirs, listed, "add the new scenario to fixtures! {{ }}");
}
