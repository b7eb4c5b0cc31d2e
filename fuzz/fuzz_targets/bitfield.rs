#![no_main]
// Properties: see ourtorrent_core::fuzzing::bitfield.
libfuzzer_sys::fuzz_target!(|data: &[u8]| ourtorrent_core::fuzzing::bitfield(data));
