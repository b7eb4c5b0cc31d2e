//! Unit tests of the front state: the request-rate window and
//! `--stats-from` prefixes at their edges.

use super::*;

#[test]
fn request_rate_is_taken_over_the_last_window() {
    let t0 = std::time::Instant::now();
    let s = |n: u64| t0 + std::time::Duration::from_secs(n);
    let mut w = RateWindow::default();
    assert_eq!(w.rate(), 0.0);
    w.sample(s(0), 0);
    assert_eq!((w.rate(), w.span_secs()), (0.0, 0.0), "one sample: no rate");
    w.sample(s(1), 500);
    assert_eq!((w.rate(), w.span_secs()), (500.0, 1.0));
    // 1000/s for the window's seconds, then idle: the burst leaves the
    // window exactly RATE_WINDOW_SECS later.
    for i in 2..=RATE_WINDOW_SECS + 1 {
        w.sample(s(i), 500 + 1000 * (i - 1));
    }
    assert_eq!(w.span_secs(), RATE_WINDOW_SECS as f64);
    assert_eq!(w.rate(), 1000.0);
    let top = 500 + 1000 * RATE_WINDOW_SECS;
    for i in RATE_WINDOW_SECS + 2..=2 * RATE_WINDOW_SECS + 1 {
        w.sample(s(i), top);
    }
    assert_eq!(w.rate(), 0.0);
    assert!(w.samples.len() <= RATE_WINDOW_SECS as usize + 1);
}

#[test]
fn prefixes_parse_and_match_at_their_edges() {
    let p: Prefix = "10.1.0.0/16".parse().unwrap();
    assert!(p.contains("10.1.255.255".parse().unwrap()));
    assert!(!p.contains("10.2.0.0".parse().unwrap()));
    assert!(p.contains("::ffff:10.1.2.3".parse().unwrap()), "v4-mapped");
    let any: Prefix = "0.0.0.0/0".parse().unwrap();
    assert!(any.contains("203.0.113.9".parse().unwrap()));
    assert!(
        !any.contains("::2".parse().unwrap()),
        "v4 prefix, v6 address"
    );
    let one: Prefix = "2001:db8::1".parse().unwrap();
    assert_eq!(one.to_string(), "2001:db8::1/128");
    assert!(one.contains("2001:db8::1".parse().unwrap()));
    assert!(!one.contains("2001:db8::2".parse().unwrap()));
    assert!("10.0.0.0/33".parse::<Prefix>().is_err());
    assert!("::/129".parse::<Prefix>().is_err());
    assert!("::/128".parse::<Prefix>().is_ok());
    assert!("host/8".parse::<Prefix>().is_err());
    let lo = Prefix::loopback();
    assert!(lo.iter().any(|p| p.contains("127.0.0.2".parse().unwrap())));
    assert!(lo.iter().any(|p| p.contains("::1".parse().unwrap())));
    assert!(!lo.iter().any(|p| p.contains("192.0.2.1".parse().unwrap())));
}
