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
    for i in 0..6 {
        s.insert(&g, "t", &format!("convert {i} USD to EUR"), 10);
    }
    assert_eq!(s.check("t", "convert 9 EUR to USD", Some(&g), 0), Verdict::Maybe);
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
