//! Tests of the flag parsing, the percentiles and the seeded info-hashes.

use super::cli::parse_mix;
use super::fake::info_hashes;
use super::report::pct;

#[test]
fn mix_and_percentiles() {
    assert_eq!(parse_mix("1:8:1").unwrap(), [1, 8, 1]);
    assert!(parse_mix("1:8").is_err());
    assert!(parse_mix("0:0:0").is_err());
    let v: Vec<u32> = (1..=100).collect();
    assert_eq!((pct(&v, 0.5), pct(&v, 0.99)), (51, 99));
    assert_eq!(info_hashes(7, 3), info_hashes(7, 3));
    assert_ne!(info_hashes(7, 3), info_hashes(8, 3));
}
