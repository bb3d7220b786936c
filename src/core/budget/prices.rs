//! What tokens cost: integer micro-dollars per million tokens for each kind of token, a
//! built-in table of common models, config overrides, and `cost` of a usage.
//!
//! Built-in prices are the providers' list prices for standard (non-batch) requests, from
//! their pricing pages (platform.openai.com/docs/pricing, platform.claude.com/docs/en/about-
//! claude/pricing, ai.google.dev/gemini-api/docs/pricing), looked up on 2026-12-02: input and
//! output prices of all rows, and Anthropic's cache rates, were confirmed then; OpenAI's and
//! Gemini's cached-input rates are the ones those pages listed in 2025 and were not re-checked.
//! Gemini models with a long-context tier are priced at the short tier (prompts up to 200k
//! tokens, 128k for 1.5): override them if long prompts matter. Prices change: set `prices`
//! in the config to pin what your contract says.

use super::usage::TokenUsage;
use std::collections::BTreeMap;

/// Micro-dollars per one million tokens of each kind. `cache_write` is Anthropic's prompt
/// cache creation (1.25x input for the 5-minute cache); elsewhere it equals `input`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Price {
    pub input: u64,
    pub output: u64,
    pub cached_input: u64,
    pub cache_write: u64,
}

impl Price {
    /// The cost of a usage in micro-dollars, rounded up once per request: a request is never
    /// charged less than it cost, and at most one micro-dollar more.
    pub fn cost(&self, u: &TokenUsage) -> u64 {
        let scaled = u.input as u128 * self.input as u128
            + u.output as u128 * self.output as u128
            + u.cached_input as u128 * self.cached_input as u128
            + u.cache_write as u128 * self.cache_write as u128;
        u64::try_from(scaled.div_ceil(1_000_000)).unwrap_or(u64::MAX)
    }
}

/// Input, output and cached-input prices; a cache write costs what input costs.
const fn usd(input: u64, output: u64, cached_input: u64) -> Price {
    Price { input, output, cached_input, cache_write: input }
}

/// Anthropic: cache reads 0.1x input, 5-minute cache writes 1.25x input.
const fn anthropic(input: u64, output: u64) -> Price {
    Price { input, output, cached_input: input / 10, cache_write: input / 4 * 5 }
}

/// (vendor, model, price), prices in micro-dollars per 1M tokens ($2.50 = 2_500_000).
const BUILT_IN: &[(&str, &str, Price)] = &[
    ("openai", "gpt-4o", usd(2_500_000, 10_000_000, 1_250_000)),
    ("openai", "gpt-4o-mini", usd(150_000, 600_000, 75_000)),
    ("openai", "gpt-4.1", usd(2_000_000, 8_000_000, 500_000)),
    ("openai", "gpt-4.1-mini", usd(400_000, 1_600_000, 100_000)),
    ("openai", "gpt-4.1-nano", usd(100_000, 400_000, 25_000)),
    ("openai", "o1", usd(15_000_000, 60_000_000, 7_500_000)),
    ("openai", "o1-mini", usd(1_100_000, 4_400_000, 550_000)),
    ("openai", "o3", usd(2_000_000, 8_000_000, 500_000)),
    ("openai", "o3-mini", usd(1_100_000, 4_400_000, 550_000)),
    ("openai", "o4-mini", usd(1_100_000, 4_400_000, 275_000)),
    ("anthropic", "claude-3-5-sonnet", anthropic(3_000_000, 15_000_000)),
    ("anthropic", "claude-3-5-haiku", anthropic(800_000, 4_000_000)),
    ("anthropic", "claude-3-7-sonnet", anthropic(3_000_000, 15_000_000)),
    ("anthropic", "claude-sonnet-4", anthropic(3_000_000, 15_000_000)),
    ("anthropic", "claude-sonnet-4-5", anthropic(3_000_000, 15_000_000)),
    ("anthropic", "claude-haiku-4-5", anthropic(1_000_000, 5_000_000)),
    ("anthropic", "claude-opus-4", anthropic(15_000_000, 75_000_000)),
    ("anthropic", "claude-opus-4-1", anthropic(15_000_000, 75_000_000)),
    ("anthropic", "claude-opus-4-5", anthropic(5_000_000, 25_000_000)),
    ("gemini", "gemini-1.5-pro", usd(1_250_000, 5_000_000, 312_500)),
    ("gemini", "gemini-1.5-flash", usd(75_000, 300_000, 18_750)),
    ("gemini", "gemini-2.0-flash", usd(100_000, 400_000, 25_000)),
    ("gemini", "gemini-2.0-flash-lite", usd(75_000, 300_000, 18_750)),
    ("gemini", "gemini-2.5-pro", usd(1_250_000, 10_000_000, 125_000)),
    ("gemini", "gemini-2.5-flash", usd(300_000, 2_500_000, 30_000)),
    ("gemini", "gemini-2.5-flash-lite", usd(100_000, 400_000, 10_000)),
];

/// Prices by `provider/model` (config overrides) and by model (built-in), resolved once.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PriceTable {
    /// `provider/model` or a bare `model`, from the config; wins over the built-in table.
    overrides: BTreeMap<String, Price>,
    builtin: bool,
}

impl PriceTable {
    /// The built-in table alone.
    pub fn builtin() -> Self {
        PriceTable { overrides: BTreeMap::new(), builtin: true }
    }

    /// The built-in table under the config's overrides (`provider/model` or `model` keys).
    pub fn with_overrides(overrides: BTreeMap<String, Price>) -> Self {
        PriceTable { overrides, builtin: true }
    }

    /// The price of `model` served by `provider` (the config's provider name, or the vendor):
    /// override `provider/model`, then override `model`, then the built-in row for the model.
    /// A dated or versioned snapshot (`gpt-4o-2024-08-06`, `claude-sonnet-4-20250514`,
    /// `gemini-1.5-pro-002`, `...-latest`) takes its family's price when it has no row.
    pub fn price(&self, provider: Option<&str>, model: &str) -> Option<Price> {
        let model = model.strip_prefix("models/").unwrap_or(model);
        let exact = |name: &str| {
            provider
                .and_then(|p| self.overrides.get(&format!("{p}/{name}")))
                .or_else(|| self.overrides.get(name))
                .copied()
                .or_else(|| if self.builtin { builtin(name) } else { None })
        };
        if let Some(p) = exact(model) {
            return Some(p);
        }
        // Longest family name that the model extends with a snapshot suffix.
        let mut cut = model.len();
        while let Some(i) = model[..cut].rfind('-') {
            if is_snapshot_suffix(&model[i + 1..cut]) {
                if let Some(p) = exact(&model[..i]) {
                    return Some(p);
                }
                cut = i;
            } else {
                return None;
            }
        }
        None
    }

    /// Whether some provider prices `model` (load-time checks, before routing is known).
    pub fn prices_model(&self, model: &str) -> bool {
        self.price(None, model).is_some()
            || self
                .overrides
                .keys()
                .filter_map(|k| k.split_once('/'))
                .any(|(p, _)| self.price(Some(p), model).is_some())
    }

    /// Every model the built-in table prices, as `vendor/model`.
    pub fn builtin_models() -> impl Iterator<Item = String> {
        BUILT_IN.iter().map(|(v, m, _)| format!("{v}/{m}"))
    }
}

fn builtin(model: &str) -> Option<Price> {
    let (vendor, name) = match model.split_once('/') {
        Some((v, n)) => (Some(v), n),
        None => (None, model),
    };
    BUILT_IN.iter().find(|(v, m, _)| *m == name && vendor.is_none_or(|x| x == *v)).map(|(_, _, p)| *p)
}

/// A suffix that names a snapshot of a model, not another model: digits (a date or a
/// version such as `002`), `latest`, `preview` (and dated previews).
fn is_snapshot_suffix(s: &str) -> bool {
    s == "latest" || s == "preview" || s == "exp" || (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
}

#[cfg(test)]
#[path = "tests/prices_tests.rs"]
mod tests;
