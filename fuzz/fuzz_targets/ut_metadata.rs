#![no_main]
// Round trip, limits, serving, and a MetadataFetch script: see ourtorrent_core::fuzzing::ut_metadata.
libfuzzer_sys::fuzz_target!(|data: &[u8]| ourtorrent_core::fuzzing::ut_metadata(data));
