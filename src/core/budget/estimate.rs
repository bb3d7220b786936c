//! What a request will cost before it runs, for the budget reservation and the tokens bucket.
//!
//! Input: the text in the request at `bytes_per_token` bytes a token (4 by default: English
//! averages about 4 characters a token, so this is near or above the truth for prose and code,
//! and above it for JSON keys, which it counts too), plus `image_tokens` per image part
//! (1600 by default: Anthropic bills an image at up to ~1600 tokens, OpenAI's high-detail
//! 1024x1024 tile set is 765) plus a few tokens of framing per message.
//! Output: `max_completion_tokens` or `max_tokens` when the request sets one (the provider
//! cannot exceed it); else the model's learned estimate, a running mean plus two mean absolute
//! deviations of the completion tokens seen, kept in shared data; else `default_output_tokens`.
//! Every output estimate is capped by `max_output_tokens`.

use super::usage::TokenUsage;
use super::{read_u64s, write_u64s};
use crate::core::store::{SetError, SharedData};
use serde::Deserialize;
use serde_json::Value;

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EstimateConfig {
    pub bytes_per_token: u32,
    pub image_tokens: u32,
    /// Output assumed for a model with no `max_tokens` and too few observations.
    pub default_output_tokens: u32,
    /// Upper bound on any output estimate (and the error bound's `max_output_tokens`).
    pub max_output_tokens: u32,
}

impl Default for EstimateConfig {
    fn default() -> Self {
        EstimateConfig {
            bytes_per_token: 4,
            image_tokens: 1600,
            default_output_tokens: 1024,
            max_output_tokens: 16_384,
        }
    }
}

/// Framing tokens OpenAI adds per message (role, separators).
const TOKENS_PER_MESSAGE: u64 = 4;
/// Observations before the learned output estimate replaces the default.
pub const MIN_SAMPLES: u64 = 8;
/// EWMA weight of a new observation: 1/16.
const EWMA_SHIFT: u32 = 4;
/// Fixed point of the stored mean and deviation (x256), so small counts do not round away.
const FIX: u64 = 256;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenEstimate {
    pub input: u64,
    pub output: u64,
    pub output_source: OutputSource,
}

impl TokenEstimate {
    pub fn as_usage(&self) -> TokenUsage {
        TokenUsage { input: self.input, output: self.output, ..Default::default() }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputSource {
    /// The request's own `max_completion_tokens` / `max_tokens`: an upper bound.
    RequestLimit,
    Learned,
    Default,
}

/// Input tokens of a chat request, by the cheap rule of the module doc.
pub fn estimate_input_tokens(request: &Value, cfg: &EstimateConfig) -> u64 {
    let mut text_bytes = 0u64;
    let mut images = 0u64;
    walk(request, &mut text_bytes, &mut images);
    let messages = request.get("messages").and_then(Value::as_array).map_or(0, |m| m.len() as u64);
    text_bytes.div_ceil(cfg.bytes_per_token.max(1) as u64)
        + images * cfg.image_tokens as u64
        + messages * TOKENS_PER_MESSAGE
}

/// Sum string bytes, counting image parts (OpenAI `image_url`/`input_image`, Anthropic
/// `image`) as images whatever their size: base64 data would count as megabytes of text.
fn walk(v: &Value, text: &mut u64, images: &mut u64) {
    match v {
        Value::String(s) => *text += s.len() as u64,
        Value::Array(items) => items.iter().for_each(|i| walk(i, text, images)),
        Value::Object(map) => {
            if matches!(map.get("type").and_then(Value::as_str), Some("image_url" | "input_image" | "image")) {
                *images += 1;
                return;
            }
            map.iter()
                .filter(|(k, _)| !matches!(k.as_str(), "model" | "role"))
                .for_each(|(_, v)| walk(v, text, images));
        }
        Value::Number(_) | Value::Bool(_) | Value::Null => {}
    }
}

/// The output limit the request sets itself, if any (`max_completion_tokens` wins, as at OpenAI).
pub fn requested_output_tokens(request: &Value) -> Option<u64> {
    request
        .get("max_completion_tokens")
        .and_then(Value::as_u64)
        .or_else(|| request.get("max_tokens").and_then(Value::as_u64))
}

/// Input and output tokens of a request, given what was learned of its model.
pub fn estimate_tokens(request: &Value, learned: Option<u64>, cfg: &EstimateConfig) -> TokenEstimate {
    let cap = cfg.max_output_tokens as u64;
    let (output, output_source) = match (requested_output_tokens(request), learned) {
        (Some(n), _) => (n.min(cap), OutputSource::RequestLimit),
        (None, Some(n)) => (n.min(cap), OutputSource::Learned),
        (None, None) => ((cfg.default_output_tokens as u64).min(cap), OutputSource::Default),
    };
    // With several choices (`n`), each one produces its own output.
    let choices = request.get("n").and_then(Value::as_u64).unwrap_or(1).clamp(1, 128);
    TokenEstimate { input: estimate_input_tokens(request, cfg), output: output * choices, output_source }
}

/// Completion tokens observed per model, in shared data under `semgate:b:out:<model>`:
/// (mean x256, mean absolute deviation x256, samples), updated with compare-and-swap.
pub struct OutputLearner<'a, S: SharedData> {
    pub kv: &'a S,
}

const LEARN_RETRIES: u32 = 8;

impl<'a, S: SharedData> OutputLearner<'a, S> {
    fn key(model: &str) -> String {
        format!("semgate:b:out:{model}")
    }

    /// The learned output estimate (mean + 2 deviations), once `MIN_SAMPLES` were seen.
    pub fn estimate(&self, model: &str) -> Option<u64> {
        let [mean, dev, n] = self.kv.get(&Self::key(model)).and_then(|(b, _)| read_u64s::<3>(&b))?;
        (n >= MIN_SAMPLES).then(|| (mean + 2 * dev).div_ceil(FIX))
    }

    /// Fold in one response's completion tokens. Losing an update to contention is harmless:
    /// the estimate is a statistic, so after a few retries the observation is dropped.
    pub fn observe(&self, model: &str, completion_tokens: u64) -> Result<(), SetError> {
        let key = Self::key(model);
        let x = completion_tokens.min(1 << 40) * FIX;
        for _ in 0..LEARN_RETRIES {
            let current = self.kv.get(&key);
            let (mean, dev, n, cas) = match &current {
                Some((b, cas)) => match read_u64s::<3>(b) {
                    Some([m, d, n]) => (m, d, n, Some(*cas)),
                    None => (x, 0, 0, Some(*cas)),
                },
                None => (x, 0, 0, None),
            };
            // The first samples average plainly; then the EWMA takes over.
            let weight_shift = if n < (1 << EWMA_SHIFT) { None } else { Some(EWMA_SHIFT) };
            let step = |old: u64, new: u64| -> u64 {
                match weight_shift {
                    Some(s) => (old as i128 + ((new as i128 - old as i128) >> s)) as u64,
                    None => ((old as u128 * n as u128 + new as u128) / (n as u128 + 1)) as u64,
                }
            };
            let new_mean = if n == 0 { x } else { step(mean, x) };
            let new_dev = if n == 0 { 0 } else { step(dev, x.abs_diff(mean)) };
            let value = write_u64s(&[new_mean, new_dev, n + 1]);
            match self.kv.set(&key, &value, cas) {
                Ok(()) => return Ok(()),
                Err(SetError::CasMismatch) => continue,
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
#[path = "tests/estimate_tests.rs"]
mod tests;
