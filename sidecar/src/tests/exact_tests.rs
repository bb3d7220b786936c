use super::*;
use serde_json::json;

#[test]
fn entries_expire_and_the_oldest_goes_first() {
    let mut t = ExactTier::new(2, 1 << 20);
    assert!(t.insert("a".into(), json!("A"), 1_000, 500));
    assert!(t.insert("b".into(), json!("B"), 1_100, 500));
    assert_eq!(t.get("a", 1_200).unwrap().response, json!("A"));
    assert!(t.get("a", 1_500).is_none(), "expired at created + ttl");
    assert!(t.insert("c".into(), json!("C"), 1_200, 500));
    assert_eq!(t.len(), 2);
    assert!(t.get("a", 1_200).is_none(), "the oldest was evicted");
    assert!(t.get("b", 1_200).is_some() && t.get("c", 1_200).is_some());
}

#[test]
fn the_byte_bound_holds_and_a_key_stored_again_is_counted_once() {
    let mut t = ExactTier::new(100, 40);
    assert!(t.insert("k1".into(), json!("0123456789"), 0, 1_000));
    assert!(t.insert("k1".into(), json!("0123456789"), 1, 1_000));
    assert_eq!(t.len(), 1);
    assert_eq!(t.bytes(), 2 + 12);
    assert!(t.insert("k2".into(), json!("0123456789"), 2, 1_000));
    assert!(t.insert("k3".into(), json!("0123456789"), 3, 1_000));
    assert!(t.bytes() <= 40);
    assert!(t.get("k1", 3).is_none() && t.get("k3", 3).is_some());
    assert!(!t.insert("big".into(), json!("x".repeat(64)), 4, 1_000), "over the bound alone: not kept");
    assert!(t.get("k3", 4).is_some());
}

#[test]
fn storing_one_key_again_and_again_keeps_the_bookkeeping_bounded() {
    let mut t = ExactTier::new(100, 1 << 20);
    for now in 0..10_000 {
        assert!(t.insert("same".into(), json!("A"), now, 1_000));
    }
    assert_eq!(t.len(), 1);
    assert!(t.order.len() <= 2 * t.len() + 65, "{} positions for one key", t.order.len());
    // The one live position survived the compaction: it is still the one evicted first.
    assert!(t.insert("other".into(), json!("B"), 10_000, 1_000));
    let mut small = ExactTier::new(1, 1 << 20);
    for now in 0..200 {
        small.insert("k".into(), json!("A"), now, 1_000);
    }
    assert!(small.insert("k2".into(), json!("B"), 200, 1_000));
    assert!(small.get("k", 200).is_none() && small.get("k2", 200).is_some());
}
