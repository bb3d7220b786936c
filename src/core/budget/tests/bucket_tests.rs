//! Unit tests of `core::budget::bucket`.

use super::*;
use crate::core::store::tests::MemKv;

#[test]
fn rpm_allows_the_limit_then_refuses_with_a_retry_time() {
    let kv = MemKv::default();
    let rl = RateBuckets { kv: &kv };
    for i in 0..60 {
        let d = rl.take(LimitKind::Requests, "k1", 60, 1, 1_000).unwrap();
        assert!(d.allowed, "request {i}");
        assert_eq!(d.remaining, 59 - i);
    }
    let d = rl.take(LimitKind::Requests, "k1", 60, 1, 1_000).unwrap();
    assert!(!d.allowed);
    assert_eq!(d.retry_after_ms, 1000, "one request refills in a second at 60/min");
    assert_eq!(d.retry_after_s(), 1);
    assert_eq!(d.reset_ms, 60_000);
    // Another key has its own bucket.
    assert!(rl.take(LimitKind::Requests, "k2", 60, 1, 1_000).unwrap().allowed);
    // A second later one more fits.
    assert!(rl.take(LimitKind::Requests, "k1", 60, 1, 2_000).unwrap().allowed);
    assert!(!rl.take(LimitKind::Requests, "k1", 60, 1, 2_000).unwrap().allowed);
}

#[test]
fn headers_use_openai_names_and_durations() {
    let kv = MemKv::default();
    let rl = RateBuckets { kv: &kv };
    let d = rl.take(LimitKind::Tokens, "k", 10_000, 2_500, 0).unwrap();
    let h = d.headers();
    assert_eq!(h[0], ("x-ratelimit-limit-tokens".into(), "10000".into()));
    assert_eq!(h[1], ("x-ratelimit-remaining-tokens".into(), "7500".into()));
    assert_eq!(h[2], ("x-ratelimit-reset-tokens".into(), "15s".into()));
    assert_eq!(format_duration(20), "20ms");
    assert_eq!(format_duration(1000), "1s");
    assert_eq!(format_duration(1001), "2s");
    assert_eq!(format_duration(360_000), "6m0s");
    assert_eq!(format_duration(3_723_000), "1h2m3s");
}

#[test]
fn tpm_is_corrected_by_the_actual_count_including_debt() {
    let kv = MemKv::default();
    let rl = RateBuckets { kv: &kv };
    assert!(rl.take(LimitKind::Tokens, "k", 1000, 400, 0).unwrap().allowed);
    // The request used 1500 tokens: 600 were left, so the bucket owes 500.
    rl.adjust(LimitKind::Tokens, "k", 1000, 1100, 0).unwrap();
    let d = rl.take(LimitKind::Tokens, "k", 1000, 1, 0).unwrap();
    assert!(!d.allowed);
    assert_eq!(d.remaining, 0);
    // 501 tokens at 1000/min take 30.06 s.
    assert_eq!(d.retry_after_ms, 30_060);
    assert!(rl.take(LimitKind::Tokens, "k", 1000, 1, 30_060).unwrap().allowed);
    // Giving back never fills past the limit.
    rl.adjust(LimitKind::Tokens, "k", 1000, -1_000_000, 30_060).unwrap();
    assert_eq!(rl.take(LimitKind::Tokens, "k", 1000, 0, 30_060).unwrap().remaining, 1000);
}

#[test]
fn an_oversized_request_runs_only_from_a_full_bucket() {
    let kv = MemKv::default();
    let rl = RateBuckets { kv: &kv };
    assert!(rl.take(LimitKind::Tokens, "k", 1000, 5000, 0).unwrap().allowed);
    let d = rl.take(LimitKind::Tokens, "k", 1000, 5000, 60_000).unwrap();
    assert!(!d.allowed, "4000 in debt, a minute refills 1000");
    assert!(rl.take(LimitKind::Tokens, "k", 1000, 5000, 300_000).unwrap().allowed);
}

#[test]
fn refill_is_continuous_and_a_clock_step_back_is_harmless() {
    let kv = MemKv::default();
    let rl = RateBuckets { kv: &kv };
    for _ in 0..6 {
        assert!(rl.take(LimitKind::Requests, "k", 6, 1, 10_000).unwrap().allowed);
    }
    assert!(!rl.take(LimitKind::Requests, "k", 6, 1, 19_999).unwrap().allowed);
    assert!(rl.take(LimitKind::Requests, "k", 6, 1, 20_000).unwrap().allowed);
    // A worker whose clock reads earlier neither refills nor breaks the bucket.
    assert!(!rl.take(LimitKind::Requests, "k", 6, 1, 5_000).unwrap().allowed);
}

#[test]
fn cas_conflicts_are_retried_and_endless_ones_reported() {
    let kv = MemKv::default();
    let rl = RateBuckets { kv: &kv };
    rl.take(LimitKind::Requests, "k", 10, 1, 0).unwrap();
    *kv.interfere.borrow_mut() = 3;
    let d = rl.take(LimitKind::Requests, "k", 10, 1, 0).unwrap();
    assert_eq!(d.remaining, 8, "counted once despite three retries");
    *kv.interfere.borrow_mut() = 1000;
    assert_eq!(rl.take(LimitKind::Requests, "k", 10, 1, 0), Err(BucketError::Contended));
}
