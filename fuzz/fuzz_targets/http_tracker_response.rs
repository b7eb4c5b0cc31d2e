#![no_main]
// Decode, re-encode, compare: see ourtorrent_core::fuzzing::http_tracker_response.
libfuzzer_sys::fuzz_target!(|data: &[u8]| ourtorrent_core::fuzzing::http_tracker_response(data));
