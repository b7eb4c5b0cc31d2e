#![no_main]
// Decode, re-encode, compare: see ourtorrent_core::fuzzing::tracker_journal.
libfuzzer_sys::fuzz_target!(|data: &[u8]| ourtorrent_core::fuzzing::tracker_journal(data));
