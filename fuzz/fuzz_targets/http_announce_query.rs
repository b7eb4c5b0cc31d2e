#![no_main]
// Decode, re-encode, compare: see ourtorrent_core::fuzzing::http_announce_query.
libfuzzer_sys::fuzz_target!(|data: &[u8]| ourtorrent_core::fuzzing::http_announce_query(data));
