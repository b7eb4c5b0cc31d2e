#![no_main]
//! Differential: our strict decoder against bendy (see differential/bencode_bendy.rs).

#[path = "../differential/bencode_bendy.rs"]
mod bencode_bendy;

libfuzzer_sys::fuzz_target!(|data: &[u8]| bencode_bendy::check(data));
