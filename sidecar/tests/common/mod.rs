//! What the model tests share: the model directory from the environment (a missing one fails
//! the test, it never looks like a pass), the reference sentences, and vector helpers.
#![allow(dead_code)]

use std::path::PathBuf;

/// The sentence-transformers quickstart sentences both models are checked on.
pub const QUICKSTART: [&str; 3] =
    ["The weather is lovely today.", "It's so sunny outside!", "He drove to the stadium."];

/// The directory `var` names; panics with `how` (how to get the files) when it is unset.
pub fn dir_from_env(var: &str, how: &str) -> PathBuf {
    match std::env::var_os(var) {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => panic!("{var} is not set: {how}"),
    }
}

pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}
