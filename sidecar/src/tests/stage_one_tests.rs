//! The first stage with the hashing embedder (word overlap): a scope with nothing near is a
//! miss at once, a near text the guard refuses is a miss, one it accepts runs the full lookup.

use super::*;
use crate::embed::HashingEmbedder;

fn stage() -> StageOne {
    let config = StageOneConfig { dims: 256, min_score: 0.3, max_checked: 4, min_threshold: 0.5 };
    StageOne::new(config, Arc::new(HashingEmbedder { dim: 256 }), 100)
}

#[test]
fn speaks_only_for_what_could_pass() {
    let (s, g) = (stage(), GuardConfig::default());
    assert_eq!(s.check("t", "how do I reset my password", Some(&g), 0), Verdict::NoCandidate, "empty scope");
    s.insert(&g, "t", "how do I reset my password", 10);
    // Nothing near: no word in common.
    assert_eq!(s.check("t", "weather in Lisbon tomorrow", Some(&g), 0), Verdict::NoCandidate);
    // Near, and the guard accepts it: the full lookup decides.
    assert_eq!(s.check("t", "how can I reset my password please", Some(&g), 0), Verdict::Maybe);
    // Near, but the guard refuses it (a different number of the same thing would too).
    s.insert(&g, "t", "convert 100 USD to EUR", 10);
    assert_eq!(s.check("t", "convert 100 EUR to USD", Some(&g), 0), Verdict::NoCandidate);
    // Without the guard only the embedding bound speaks.
    assert_eq!(s.check("t", "convert 100 EUR to USD", None, 0), Verdict::Maybe);
    // Expired texts are not candidates; other scopes are not looked at.
    assert_eq!(s.check("t", "how can I reset my password please", Some(&g), 10), Verdict::NoCandidate);
    assert_eq!(s.check("u", "how can I reset my password please", Some(&g), 0), Verdict::NoCandidate);
}

#[test]
fn many_near_texts_leave_the_decision_to_the_full_lookup() {
    let (s, g) = (stage(), GuardConfig::default());
    for word in ["today", "now", "quickly", "please", "online", "exactly"] {
        s.insert(&g, "t", &format!("convert 9 USD to EUR {word}"), 10);
    }
    assert_eq!(s.check("t", "convert 9 EUR to USD", Some(&g), 0), Verdict::Maybe);
}

#[test]
fn near_texts_with_other_numbers_or_units_cost_no_guard_check() {
    let (s, g) = (stage(), GuardConfig::default());
    // More near texts than `max_checked`, each with another amount or unit than the query: the
    // guard would refuse every one, so they are not counted and the lookup is a miss at once.
    for i in 0..20 {
        s.insert(&g, "t", &format!("convert {i} USD to EUR"), 10);
    }
    s.insert(&g, "t", "convert 9 GBP to EUR", 10);
    assert_eq!(s.check("t", "convert 9 USD to EUR please", Some(&g), 0), Verdict::Maybe, "9 USD is stored");
    assert_eq!(s.check("t", "convert 99 USD to EUR please", Some(&g), 0), Verdict::NoCandidate);
    assert_eq!(s.check("t", "convert 9 CHF to EUR please", Some(&g), 0), Verdict::NoCandidate);
}

#[test]
fn a_different_fact_key_is_a_certain_refusal() {
    let g = GuardConfig::default();
    let pairs = [
        ("convert 100 USD to EUR", "convert 200 USD to EUR"),
        ("convert 100 USD to EUR", "convert 100 GBP to EUR"),
        ("how many grams in 3 ounces", "how many grams in 3 pounds"),
        ("a 2-person tent", "a 4-person tent"),
    ];
    for (a, b) in pairs {
        let (pa, pb) = (g.prepare(a), g.prepare(b));
        assert!(g.surely_refused(&pa, &pb), "{a} / {b}");
        assert!(g.verify_prepared(&pa, &pb).is_err(), "{a} / {b}");
    }
    // The same facts in other words: not a certain refusal (the full guard decides).
    for (a, b) in [("convert ten dollars to euros", "convert 10 USD to EUR"), ("reset my password", "reset my PIN")] {
        assert!(!g.surely_refused(&g.prepare(a), &g.prepare(b)), "{a} / {b}");
    }
    let off = GuardConfig { enabled: false, ..GuardConfig::default() };
    assert!(!off.surely_refused(&off.prepare("convert 1 USD"), &off.prepare("convert 2 USD")));
}

#[test]
fn the_copy_is_capped_like_the_index() {
    let g = GuardConfig::default();
    let s = StageOne::new(StageOneConfig::default(), Arc::new(HashingEmbedder { dim: 256 }), 3);
    for i in 0..5 {
        s.insert(&g, if i % 2 == 0 { "a" } else { "b" }, &format!("text number {i}"), 10);
    }
    assert_eq!(s.len(), 3);
}
