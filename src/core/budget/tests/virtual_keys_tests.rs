//! Unit tests of `core::budget::virtual_keys`.

use super::*;
use crate::core::store::tests::MemKv;
use serde_json::{json, Value};

fn base() -> Value {
    json!({
        "virtual_keys": [{
            "id": "search-prod",
            "key_sha256": sha256_hex("sk-team-a-1"),
            "team": "search",
            "models": ["gpt-4o", "gpt-4.1-*"],
            "budget": {"usd": 100.5, "period": "monthly"},
            "rpm": 600, "tpm": 200000,
            "customer_budgets": {"default": {"usd": 5, "period": "daily"},
                                 "customers": {"acme": {"usd": 20, "period": "daily"}}}
        }],
        "teams": {"search": {"budget": {"usd": 1000, "period": "monthly"}}},
        "customer": {"header": "x-customer-id", "from_user_field": true}
    })
}

fn parse(v: &Value) -> Result<Governance, ConfigError> {
    GovernanceConfig::parse(v.to_string().as_bytes())
}

fn patched(path: &[&str], value: Value) -> Value {
    let mut v = base();
    let mut at = &mut v;
    for p in &path[..path.len() - 1] {
        at = match p.parse::<usize>() {
            Ok(i) => &mut at[i],
            Err(_) => &mut at[*p],
        };
    }
    at[path[path.len() - 1]] = value;
    v
}

#[test]
fn sha256_matches_sha256sum() {
    // `printf %s abc | sha256sum`
    assert_eq!(sha256_hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    assert_eq!(sha256_hex(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
}

#[test]
fn a_full_config_compiles_into_an_index_by_key_hash() {
    let g = parse(&base()).unwrap();
    let k = g.key_for_bearer("sk-team-a-1").unwrap();
    assert_eq!(k.id, "search-prod");
    assert_eq!(k.budget, Some((100_500_000, Period::Monthly)));
    assert_eq!((k.rpm, k.tpm), (Some(600), Some(200_000)));
    assert!(g.key_for_bearer("sk-team-a-2").is_none());
    let scopes = k.scopes(&g.teams, Some("acme"));
    let got: Vec<_> = scopes.iter().map(|s| (s.level, s.id.as_str(), s.limit_micros, s.period)).collect();
    assert_eq!(
        got,
        vec![
            (ScopeLevel::Key, "search-prod", 100_500_000, Period::Monthly),
            (ScopeLevel::Team, "search", 1_000_000_000, Period::Monthly),
            (ScopeLevel::Customer, "search-prod/acme", 20_000_000, Period::Daily),
        ]
    );
    assert_eq!(k.scopes(&g.teams, Some("globex"))[2].limit_micros, 5_000_000, "the default");
    assert_eq!(k.scopes(&g.teams, None).len(), 2);
}

#[test]
fn models_are_authorized_by_pattern_and_unpriced_ones_refused_under_a_budget() {
    let g = parse(&base()).unwrap();
    let k = g.key_for_bearer("sk-team-a-1").unwrap();
    assert!(g.authorize(k, Some("openai"), "gpt-4o").unwrap().is_some());
    assert!(g.authorize(k, None, "gpt-4.1-mini-2025-04-14").is_ok());
    assert_eq!(g.authorize(k, None, "o3"), Err(KeyRefusal::ModelNotAllowed("o3".into())));
    assert_eq!(g.authorize(k, None, "gpt-4.1-turbo"), Err(KeyRefusal::Unpriced("gpt-4.1-turbo".into())));
    // A key with no budget anywhere may use an unpriced model.
    let mut v = base();
    v["virtual_keys"][0]["budget"] = Value::Null;
    v["virtual_keys"][0]["customer_budgets"] = Value::Null;
    v["virtual_keys"][0]["team"] = json!("free");
    let g = parse(&v).unwrap();
    let k = g.key_for_bearer("sk-team-a-1").unwrap();
    assert_eq!(g.authorize(k, None, "gpt-4.1-turbo"), Ok(None));
}

#[test]
fn an_exact_model_with_no_price_is_refused_at_load() {
    let e = parse(&patched(&["virtual_keys", "0", "models"], json!(["gpt-4o", "my-llama"]))).unwrap_err();
    assert_eq!(e.path, "virtual_keys[0].models[1]");
    assert!(e.message.contains("no price"), "{e}");
    // With a price override it loads.
    let mut v = patched(&["virtual_keys", "0", "models"], json!(["my-llama"]));
    v["prices"] = json!({"local/my-llama": {"input_usd_per_1m": 0.1, "output_usd_per_1m": 0.2}});
    let g = parse(&v).unwrap();
    let p = g.prices.price(Some("local"), "my-llama").unwrap();
    assert_eq!((p.input, p.output, p.cached_input), (100_000, 200_000, 100_000));
}

#[test]
fn bad_values_are_rejected_with_paths() {
    let cases: Vec<(Value, &str)> = vec![
        (patched(&["virtual_keys", "0", "key_sha256"], json!("ABC")), "virtual_keys[0].key_sha256"),
        (
            patched(&["virtual_keys", "0", "key_sha256"], json!(sha256_hex("x").to_uppercase())),
            "virtual_keys[0].key_sha256",
        ),
        (patched(&["virtual_keys", "0", "id"], json!("has space")), "virtual_keys[0].id"),
        (patched(&["virtual_keys", "0", "budget", "usd"], json!(0)), "virtual_keys[0].budget.usd"),
        (patched(&["virtual_keys", "0", "budget", "usd"], json!(-3)), "virtual_keys[0].budget.usd"),
        (patched(&["virtual_keys", "0", "budget", "period"], json!("yearly")), "virtual_keys[0].budget.period"),
        (patched(&["virtual_keys", "0", "rpm"], json!(0)), "virtual_keys[0].rpm"),
        (patched(&["virtual_keys", "0", "tpm"], json!(0)), "virtual_keys[0].tpm"),
        (patched(&["virtual_keys", "0", "models"], json!(["a*b*"])), "virtual_keys[0].models[0]"),
        (patched(&["virtual_keys", "0", "team"], json!("bad team")), "virtual_keys[0].team"),
        (patched(&["virtual_keys", "0", "limit"], json!(1)), "virtual_keys[0].limit"),
        (patched(&["teams", "search", "budget", "usd"], json!(0)), "teams.search.budget.usd"),
        (patched(&["customer", "header"], json!("X-Customer")), "customer.header"),
        (patched(&["customer", "max_len"], json!(0)), "customer.max_len"),
        (
            patched(
                &["virtual_keys", "0", "customer_budgets", "customers"],
                json!({"a\u{7}b": {"usd": 1, "period": "daily"}}),
            ),
            "virtual_keys[0].customer_budgets.customers.a\u{7}b",
        ),
        (
            patched(&["prices"], json!({"gpt-4o": {"input_usd_per_1m": -1, "output_usd_per_1m": 1}})),
            "prices.gpt-4o.input_usd_per_1m",
        ),
        (patched(&["prices"], json!({"/x": {"input_usd_per_1m": 1, "output_usd_per_1m": 1}})), "prices./x"),
        (patched(&["estimate", "bytes_per_token"], json!(0)), "estimate.bytes_per_token"),
    ];
    for (v, path) in cases {
        let e = parse(&v).unwrap_err();
        assert_eq!(e.path, path, "{e}");
    }
    // Two keys: duplicate id, duplicate hash.
    let mut v = base();
    let second = v["virtual_keys"][0].clone();
    v["virtual_keys"].as_array_mut().unwrap().push(second);
    assert_eq!(parse(&v).unwrap_err().path, "virtual_keys[1].id");
    v["virtual_keys"][1]["id"] = json!("other");
    assert_eq!(parse(&v).unwrap_err().path, "virtual_keys[1].key_sha256");
    // Customer budgets need a way to know the customer.
    let v = patched(&["customer"], json!({}));
    assert_eq!(parse(&v).unwrap_err().path, "virtual_keys[0].customer_budgets");
}

#[test]
fn an_empty_config_is_valid() {
    let g = GovernanceConfig::parse(b"{}").unwrap();
    assert!(g.keys.is_empty());
    assert_eq!(g.customer.max_len, 64);
}

#[test]
fn customer_ids_are_cleaned_and_cut_on_character_boundaries() {
    assert_eq!(clean_customer_id("  acme\r\n", 64).as_deref(), Some("acme"));
    assert_eq!(clean_customer_id("ac\u{0}me\u{1b}[31m", 64).as_deref(), Some("acme[31m"));
    assert_eq!(clean_customer_id("\t\n", 64), None);
    assert_eq!(clean_customer_id("", 64), None);
    assert_eq!(clean_customer_id("abcdef", 3).as_deref(), Some("abc"));
    // "é" is two bytes: a cut inside it steps back.
    assert_eq!(clean_customer_id("aé", 2).as_deref(), Some("a"));
    assert_eq!(clean_customer_id("日本語", 7).as_deref(), Some("日本"));
    let g = parse(&base()).unwrap();
    assert_eq!(g.customer_of(Some("h1"), Some("u1")).as_deref(), Some("h1"));
    assert_eq!(g.customer_of(None, Some("u1")).as_deref(), Some("u1"));
    assert_eq!(g.customer_of(None, None), None);
}

#[test]
fn customer_labels_are_bounded_with_overflow_to_other() {
    let (l, grown) = customer_label(&[], "acme", 2);
    assert_eq!((l.as_str(), grown.clone()), ("acme", Some(vec!["acme".to_string()])));
    let known = vec!["acme".to_string(), "globex".to_string()];
    assert_eq!(customer_label(&known, "globex", 2), ("globex".to_string(), None));
    assert_eq!(customer_label(&known, "initech", 2), ("other".to_string(), None));
    assert_eq!(customer_label(&[], "other", 2).0, "other", "no customer can pose as the overflow");
    let kv = MemKv::default();
    let labels: Vec<String> = ["a", "b", "a", "c", "d", "b"].iter().map(|c| label_customer(&kv, "k", c, 2)).collect();
    assert_eq!(labels, ["a", "b", "a", "other", "other", "b"]);
    assert_eq!(label_customer(&kv, "k2", "c", 2), "c", "per key");
}
