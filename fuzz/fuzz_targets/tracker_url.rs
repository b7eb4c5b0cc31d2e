#![no_main]
// Parse, display, re-parse, compare: see ourtorrent_core::fuzzing::tracker_url.
libfuzzer_sys::fuzz_target!(|data: &[u8]| ourtorrent_core::fuzzing::tracker_url(data));
