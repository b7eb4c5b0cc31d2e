#![no_main]
// Decode, re-encode, compare: see ourtorrent_core::fuzzing::peer_wire.
libfuzzer_sys::fuzz_target!(|data: &[u8]| ourtorrent_core::fuzzing::peer_wire(data));
