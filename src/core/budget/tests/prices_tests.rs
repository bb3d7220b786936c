//! Unit tests of `core::budget::prices`.

use super::*;

fn usage(input: u64, output: u64, cached: u64, write: u64) -> TokenUsage {
    TokenUsage { input, output, cached_input: cached, cache_write: write }
}

#[test]
fn cost_is_exact_in_micro_dollars() {
    let gpt4o = PriceTable::builtin().price(Some("openai"), "gpt-4o").unwrap();
    // 1M input at $2.50 and 1M output at $10 = $12.50.
    assert_eq!(gpt4o.cost(&usage(1_000_000, 1_000_000, 0, 0)), 12_500_000);
    // 1000 in, 500 out, 2000 cached: 2500 + 5000 + 2500 micro-dollars.
    assert_eq!(gpt4o.cost(&usage(1000, 500, 2000, 0)), 10_000);
    assert_eq!(gpt4o.cost(&TokenUsage::default()), 0);
}

#[test]
fn cost_rounds_up_once_per_request() {
    let mini = PriceTable::builtin().price(None, "gpt-4o-mini").unwrap();
    // One input token is 0.15 micro-dollars: charged as 1, never 0.
    assert_eq!(mini.cost(&usage(1, 0, 0, 0)), 1);
    // Seven input tokens are 1.05: 2. Rounding happens on the sum, not per kind.
    assert_eq!(mini.cost(&usage(7, 0, 0, 0)), 2);
    assert_eq!(mini.cost(&usage(3, 1, 0, 0)), 2, "0.45 + 0.6 = 1.05 -> 2");
}

#[test]
fn anthropic_cache_reads_and_writes_have_their_own_rates() {
    let sonnet = PriceTable::builtin().price(Some("anthropic"), "claude-sonnet-4").unwrap();
    assert_eq!(sonnet.cached_input, 300_000);
    assert_eq!(sonnet.cache_write, 3_750_000);
    assert_eq!(sonnet.cost(&usage(0, 0, 1_000_000, 1_000_000)), 4_050_000);
}

#[test]
fn snapshots_take_their_family_price_but_other_models_do_not() {
    let t = PriceTable::builtin();
    assert_eq!(t.price(None, "gpt-4o-2024-08-06"), t.price(None, "gpt-4o"));
    assert_eq!(t.price(None, "claude-3-5-sonnet-20241022"), t.price(None, "claude-3-5-sonnet"));
    assert_eq!(t.price(None, "claude-opus-4-1-20250805"), t.price(None, "claude-opus-4-1"));
    assert_eq!(t.price(None, "claude-3-5-haiku-latest"), t.price(None, "claude-3-5-haiku"));
    assert_eq!(t.price(None, "gemini-1.5-pro-002"), t.price(None, "gemini-1.5-pro"));
    assert_eq!(t.price(None, "models/gemini-2.5-flash"), t.price(None, "gemini-2.5-flash"));
    assert_ne!(t.price(None, "gpt-4o-mini"), t.price(None, "gpt-4o"), "mini is a model, not a snapshot");
    assert_eq!(t.price(None, "gpt-4o-audio"), None);
    assert_eq!(t.price(None, "llama-3"), None);
    assert_eq!(t.price(None, ""), None);
}

#[test]
fn overrides_win_by_provider_then_by_model() {
    let custom = Price { input: 1, output: 2, cached_input: 0, cache_write: 1 };
    let azure = Price { input: 7, output: 8, cached_input: 0, cache_write: 7 };
    let t = PriceTable::with_overrides(
        [("gpt-4o".to_string(), custom), ("azure/gpt-4o".to_string(), azure), ("llama-3".to_string(), custom)].into(),
    );
    assert_eq!(t.price(Some("azure"), "gpt-4o"), Some(azure));
    assert_eq!(t.price(Some("openai"), "gpt-4o"), Some(custom));
    assert_eq!(t.price(None, "gpt-4o-2024-08-06"), Some(custom));
    assert_eq!(t.price(Some("local"), "llama-3"), Some(custom));
    assert!(t.price(None, "gpt-4.1").is_some(), "the built-in rows stay");
}

#[test]
fn builtin_table_covers_the_three_vendors_without_duplicates() {
    let all: Vec<String> = PriceTable::builtin_models().collect();
    let mut dedup = all.clone();
    dedup.sort();
    dedup.dedup();
    assert_eq!(all.len(), dedup.len());
    for m in ["openai/gpt-4.1-mini", "anthropic/claude-opus-4", "gemini/gemini-2.5-pro"] {
        assert!(all.iter().any(|x| x == m), "{m}");
        assert!(PriceTable::builtin().price(None, m).is_some(), "{m} by vendor/model");
    }
}
