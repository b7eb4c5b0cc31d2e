#![no_main]
// Round trip, limits and what is cut, rules: see ourtorrent_core::fuzzing::ut_pex.
libfuzzer_sys::fuzz_target!(|data: &[u8]| ourtorrent_core::fuzzing::ut_pex(data));
