#![no_main]
// Properties: see ourtorrent_core::fuzzing::udp_tracker_server.
libfuzzer_sys::fuzz_target!(|data: &[u8]| ourtorrent_core::fuzzing::udp_tracker_server(data));
