//! Unit tests of `core::budget::estimate`.

use super::*;
use crate::core::store::tests::MemKv;
use serde_json::json;

#[test]
fn input_is_text_bytes_over_four_plus_framing() {
    let cfg = EstimateConfig::default();
    let req = json!({"model": "gpt-4o", "messages": [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "x".repeat(400)}]});
    // 14 + 400 bytes -> 104 tokens, plus 4 per message.
    assert_eq!(estimate_input_tokens(&req, &cfg), 104 + 8);
}

#[test]
fn images_cost_a_fixed_amount_whatever_their_bytes() {
    let cfg = EstimateConfig::default();
    let big = "A".repeat(3 << 20);
    let req = json!({"messages": [{"role": "user", "content": [
        {"type": "text", "text": "what is this?"},
        {"type": "image_url", "image_url": {"url": format!("data:image/png;base64,{big}")}},
        {"type": "image", "source": {"type": "base64", "data": big}}]}]});
    // "text" + "what is this?" = 17 bytes -> 5 tokens; two images; one message.
    assert_eq!(estimate_input_tokens(&req, &cfg), 5 + 2 * 1600 + 4);
}

#[test]
fn tools_count_as_input_text() {
    let cfg = EstimateConfig::default();
    let bare = json!({"messages": [{"role": "user", "content": "hi"}]});
    let with_tools = json!({"messages": [{"role": "user", "content": "hi"}],
        "tools": [{"type": "function", "function": {"name": "lookup", "description": "d".repeat(100)}}]});
    assert!(estimate_input_tokens(&with_tools, &cfg) >= estimate_input_tokens(&bare, &cfg) + 25);
}

#[test]
fn output_comes_from_the_request_then_learned_then_default_and_is_capped() {
    let cfg = EstimateConfig { max_output_tokens: 4000, default_output_tokens: 500, ..Default::default() };
    let e = estimate_tokens(&json!({"max_tokens": 300}), Some(50), &cfg);
    assert_eq!((e.output, e.output_source), (300, OutputSource::RequestLimit));
    let e = estimate_tokens(&json!({"max_tokens": 300, "max_completion_tokens": 200}), None, &cfg);
    assert_eq!(e.output, 200, "max_completion_tokens wins");
    let e = estimate_tokens(&json!({"max_completion_tokens": 100_000}), None, &cfg);
    assert_eq!(e.output, 4000, "capped");
    let e = estimate_tokens(&json!({}), Some(700), &cfg);
    assert_eq!((e.output, e.output_source), (700, OutputSource::Learned));
    let e = estimate_tokens(&json!({}), None, &cfg);
    assert_eq!((e.output, e.output_source), (500, OutputSource::Default));
    let e = estimate_tokens(&json!({"max_tokens": 100, "n": 3}), None, &cfg);
    assert_eq!(e.output, 300, "each choice is generated");
}

#[test]
fn the_learner_needs_samples_then_tracks_mean_plus_spread() {
    let kv = MemKv::default();
    let learner = OutputLearner { kv: &kv };
    for _ in 0..(MIN_SAMPLES - 1) {
        learner.observe("gpt-4o", 200).unwrap();
    }
    assert_eq!(learner.estimate("gpt-4o"), None, "too few samples");
    learner.observe("gpt-4o", 200).unwrap();
    assert_eq!(learner.estimate("gpt-4o"), Some(200), "constant output: no spread");
    assert_eq!(learner.estimate("gpt-4o-mini"), None, "per model");
    // Alternating 100 / 300: the mean stays near 200, the deviation near 100.
    for i in 0..400 {
        learner.observe("m", if i % 2 == 0 { 100 } else { 300 }).unwrap();
    }
    let e = learner.estimate("m").unwrap();
    assert!((350..=420).contains(&e), "mean 200 + 2 x ~100 deviation, got {e}");
}

#[test]
fn the_learner_follows_a_shift_and_survives_contention() {
    let kv = MemKv::default();
    let learner = OutputLearner { kv: &kv };
    for _ in 0..50 {
        learner.observe("m", 100).unwrap();
    }
    for _ in 0..200 {
        learner.observe("m", 1000).unwrap();
    }
    let e = learner.estimate("m").unwrap();
    assert!((1000..1100).contains(&e), "{e}");
    *kv.interfere.borrow_mut() = 3;
    learner.observe("m", 1000).unwrap();
    *kv.interfere.borrow_mut() = 100;
    assert!(learner.observe("m", 1000).is_ok(), "gives up quietly under endless contention");
}
