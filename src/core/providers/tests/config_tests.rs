//! Unit tests of `core::providers::config`: parsing, validation paths, layout and compile.

use super::*;
use serde_json::json;

pub const EXAMPLE: &str = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/providers/chains.json"));

pub fn example_env(name: &str) -> Option<String> {
    match name {
        "ANTHROPIC_KEY_PRIMARY" => Some("sk-ant-primary".into()),
        "ANTHROPIC_KEY_BACKUP" => Some("sk-ant-backup".into()),
        "VERTEX_EXPRESS_KEY" => Some("vx-key".into()),
        _ => None,
    }
}

fn example() -> ProvidersConfig {
    ProvidersConfig::from_filter_config(&serde_json::from_str(EXAMPLE).unwrap()).unwrap()
}

fn parse(v: Value) -> Result<ProvidersConfig, ConfigError> {
    ProvidersConfig::parse(v.to_string().as_bytes())
}

fn base() -> Value {
    json!({
        "providers": {"openai": {"kind": "openai", "keys": [{"env": "OPENAI_KEY"}]}},
        "models": {"gpt-4o": ["openai/gpt-4o"]}
    })
}

fn with(path: &[&str], value: Value) -> Value {
    let mut v = base();
    let mut at = &mut v;
    for p in &path[..path.len() - 1] {
        at = at.as_object_mut().unwrap().entry(p.to_string()).or_insert(json!({}));
    }
    at[path[path.len() - 1]] = value;
    v
}

fn error_path(v: Value) -> String {
    parse(v).expect_err("config must be refused").path
}

#[test]
fn example_parses_with_defaults() {
    let c = example();
    let a = &c.providers["anthropic"];
    assert_eq!(a.cluster_name("anthropic"), "provider_anthropic");
    assert_eq!(a.address(), Address { host: "api.anthropic.com".into(), port: 443 });
    assert!(a.tls());
    assert_eq!(a.authority(), "api.anthropic.com");
    let v = &c.providers["vertex"];
    assert_eq!(v.address().host, "aiplatform.googleapis.com");
    assert_eq!(c.fallback.on, DEFAULT_FALLBACK_ON);
    assert_eq!(c.fallback.ejection.consecutive_5xx, 3);
    assert_eq!(c.fallback.ejection.max_ejection_percent, 100);
    // One attempt per key of the chain: two Anthropic keys, then Vertex's.
    assert_eq!(c.max_attempts(), 3);
    assert_eq!(c.key_envs(), ["ANTHROPIC_KEY_PRIMARY", "ANTHROPIC_KEY_BACKUP", "VERTEX_EXPRESS_KEY"]);
}

#[test]
fn loopback_addresses_default_to_plain_text_and_keep_the_port() {
    let c = parse(with(&["providers", "openai", "address"], json!("127.0.0.1:18001"))).unwrap();
    let p = &c.providers["openai"];
    assert!(!p.tls());
    assert!(p.address().is_ip());
    assert_eq!(p.authority(), "127.0.0.1:18001");
    let c = parse(with(&["providers", "openai", "address"], json!("[::1]:8080"))).unwrap();
    assert_eq!(c.providers["openai"].address(), Address { host: "::1".into(), port: 8080 });
    assert_eq!(c.providers["openai"].authority(), "[::1]:8080");
}

#[test]
fn vertex_with_a_location_uses_the_regional_host() {
    let v = json!({"kind": "vertex", "vertex": {"project": "p1", "location": "europe-west4", "auth": "sidecar_token"}});
    let mut c = base();
    c["providers"]["vx"] = v;
    let c = parse(c).unwrap();
    assert_eq!(c.providers["vx"].authority(), "europe-west4-aiplatform.googleapis.com");
}

#[test]
fn errors_name_the_field_path() {
    let cases: Vec<(Value, &str)> = vec![
        (with(&["providers", "openai", "colour"], json!(1)), "providers.openai.colour"),
        (with(&["providers", "openai", "kind"], json!("azure")), "providers.openai.kind"),
        (with(&["providers", "openai", "keys"], json!([])), "providers.openai.keys"),
        (with(&["providers", "openai", "keys"], json!([{"env": "A"}, {"env": "A"}])), "providers.openai.keys[1].env"),
        (with(&["providers", "openai", "keys"], json!([{"env": "no-dash"}])), "providers.openai.keys[0].env"),
        (with(&["providers", "openai", "address"], json!("api.openai.com")), "providers.openai.address"),
        (with(&["providers", "openai", "base_path"], json!("v1")), "providers.openai.base_path"),
        (with(&["providers", "openai", "anthropic_version"], json!("x")), "providers.openai.anthropic_version"),
        (with(&["providers", "openai", "max_tokens_default"], json!(5)), "providers.openai.max_tokens_default"),
        (with(&["providers", "openai", "vertex"], json!({"auth": "express_key"})), "providers.openai.vertex"),
        (
            with(&["providers", "compat"], json!({"kind": "openai_compatible", "keys": [{"env": "K"}]})),
            "providers.compat.address",
        ),
        (with(&["providers", "vx"], json!({"kind": "vertex", "keys": [{"env": "K"}]})), "providers.vx.vertex"),
        (
            with(&["providers", "vx"], json!({"kind": "vertex", "vertex": {"auth": "sidecar_token", "project": "p"}})),
            "providers.vx.vertex",
        ),
        (
            with(
                &["providers", "vx"],
                json!({"kind": "vertex", "keys": [{"env": "K"}], "vertex": {"auth": "sidecar_token", "project": "p", "location": "l"}}),
            ),
            "providers.vx.keys",
        ),
        (with(&["providers", "Bad Name"], json!({"kind": "openai", "keys": [{"env": "K"}]})), "providers.Bad Name"),
        (
            with(
                &["providers", "two"],
                json!({"kind": "openai", "keys": [{"env": "K"}], "cluster": "provider_openai"}),
            ),
            "providers.two.cluster",
        ),
        (with(&["models", "gpt-4o"], json!([])), "models.gpt-4o"),
        (with(&["models", "gpt-4o"], json!(["gpt-4o"])), "models.gpt-4o[0]"),
        (with(&["models", "gpt-4o"], json!(["openai/a", "nobody/b"])), "models.gpt-4o[1]"),
        (with(&["models", "gpt-4o"], json!(["openai/a", "openai/b"])), "models.gpt-4o[1]"),
        (with(&["fallback", "on"], json!(["5xx", "sometimes"])), "fallback.on[1]"),
        (with(&["fallback", "on"], json!(["200"])), "fallback.on[0]"),
        (with(&["fallback", "max_attempts"], json!(0)), "fallback.max_attempts"),
        (with(&["fallback", "per_attempt_timeout_ms"], json!(0)), "fallback.per_attempt_timeout_ms"),
        (with(&["fallback", "ejection", "max_ejection_percent"], json!(101)), "fallback.ejection.max_ejection_percent"),
        (with(&["fallback", "ejection", "consecutive_5xx"], json!(0)), "fallback.ejection.consecutive_5xx"),
        (with(&["fallback", "ejection", "typo"], json!(0)), "fallback.ejection.typo"),
        (json!({"providers": {}, "models": {}}), "providers"),
    ];
    for (config, path) in cases {
        let got = error_path(config.clone());
        assert_eq!(got, path, "config {config}");
    }
}

#[test]
fn statuses_are_accepted_as_fallback_conditions() {
    let c = parse(with(&["fallback", "on"], json!(["5xx", "429", "401", "timeout"]))).unwrap();
    assert_eq!(c.fallback.on.len(), 4);
}

#[test]
fn one_chain_cluster_per_distinct_provider_sequence() {
    let mut c = example();
    c.models.insert("claude-3-haiku".into(), vec!["anthropic/claude-3-haiku".into(), "vertex/gemini-1.5-flash".into()]);
    c.models.insert("gemini".into(), vec!["vertex/gemini-1.5-pro".into()]);
    let layout = c.chain_layout().unwrap();
    assert_eq!(layout.model_cluster["claude-3-5-sonnet"], "chain_anthropic_vertex");
    assert_eq!(layout.model_cluster["claude-3-haiku"], "chain_anthropic_vertex");
    // A chain of one provider goes to that provider's own cluster.
    assert_eq!(layout.model_cluster["gemini"], "provider_vertex");
    assert_eq!(
        layout.chains,
        vec![ChainSpec { name: "chain_anthropic_vertex".into(), providers: vec!["anthropic".into(), "vertex".into()] }]
    );
}

#[test]
fn colliding_chain_names_are_refused() {
    let v = json!({
        "providers": {
            "a-b": {"kind": "openai", "keys": [{"env": "K"}]},
            "a_b": {"kind": "openai", "keys": [{"env": "K"}]},
            "c": {"kind": "openai", "keys": [{"env": "K"}]}
        },
        "models": {"m1": ["a-b/x", "c/x"], "m2": ["a_b/x", "c/x"]}
    });
    let e = parse(v).unwrap_err();
    assert_eq!(e.path, "models.m2");
    assert!(e.message.contains("chain_a_b_c"), "{}", e.message);
}

#[test]
fn compile_builds_each_providers_headers_per_key() {
    let t = example().compile(&example_env).unwrap();
    let a = t.provider("anthropic").unwrap();
    let ProviderAuth::Keys(keys) = &a.auth else { panic!("keys expected") };
    assert_eq!(keys.len(), 2);
    let h: Vec<(&str, &str)> = keys[1].headers.iter().map(|(n, v)| (*n, v.expose())).collect();
    assert_eq!(h, [("x-api-key", "sk-ant-backup"), ("anthropic-version", "2023-06-01")]);
    let v = t.provider("vertex").unwrap();
    let ProviderAuth::Keys(keys) = &v.auth else { panic!("keys expected") };
    assert_eq!(keys[0].headers[0].0, "x-goog-api-key");
    assert_eq!(v.vertex, None);
    assert_eq!(v.key_cooldown_ms, 60_000);
    assert_eq!(t.cluster_for_model("claude-3-5-sonnet"), Some("chain_anthropic_vertex"));
    assert_eq!(t.upstream_model("claude-3-5-sonnet", "vertex"), Some("gemini-1.5-pro"));
    assert_eq!(t.upstream_model("claude-3-5-sonnet", "openai"), None);
    assert_eq!(t.max_attempts, 3);
    let chain = t.model("claude-3-5-sonnet").unwrap();
    assert_eq!(t.providers[chain.entries[0].provider].name, "anthropic");
}

#[test]
fn openai_keys_go_as_bearer_tokens() {
    let t = parse(base()).unwrap().compile(&|_| Some("sk-1".into())).unwrap();
    let ProviderAuth::Keys(keys) = &t.provider("openai").unwrap().auth else { panic!() };
    assert_eq!(keys[0].headers[0].0, "authorization");
    assert_eq!(keys[0].headers[0].1.expose(), "Bearer sk-1");
}

#[test]
fn unset_or_empty_keys_fail_the_load_without_the_key_in_the_message() {
    let e = example()
        .compile(&|n| if n == "ANTHROPIC_KEY_BACKUP" { Some("  ".into()) } else { example_env(n) })
        .unwrap_err();
    assert_eq!(e.path, "providers.anthropic.keys[1].env");
    assert!(e.message.contains("ANTHROPIC_KEY_BACKUP"));
    let e = example().compile(&|n| if n == "VERTEX_EXPRESS_KEY" { None } else { example_env(n) }).unwrap_err();
    assert_eq!(e.path, "providers.vertex.keys[0].env");
    let e = example()
        .compile(&|n| if n == "VERTEX_EXPRESS_KEY" { Some("sk-secret\r\nx: y".into()) } else { example_env(n) })
        .unwrap_err();
    assert!(!e.to_string().contains("sk-secret"), "{e}");
}

#[test]
fn debug_output_never_shows_keys() {
    let t = example().compile(&example_env).unwrap();
    let dump = format!("{t:?}");
    for key in ["sk-ant-primary", "sk-ant-backup", "vx-key"] {
        assert!(!dump.contains(key), "{key} leaked in {dump}");
    }
}

#[test]
fn sidecar_token_providers_have_no_keys() {
    let mut c = base();
    c["providers"]["vx"] =
        json!({"kind": "vertex", "vertex": {"project": "p1", "location": "us-central1", "auth": "sidecar_token"}});
    let t = parse(c).unwrap().compile(&|_| Some("k".into())).unwrap();
    let vx = t.provider("vx").unwrap();
    assert_eq!(vx.auth, ProviderAuth::SidecarToken { cluster: "semgate_sidecar".into(), bearer: None });
    assert_eq!(vx.key_count(), 0);
    assert_eq!(vx.vertex, Some(VertexPlace { project: "p1".into(), location: "us-central1".into() }));
}

#[test]
fn sidecar_tokens_are_fetched_from_the_named_cluster_with_the_sidecars_token() {
    let mut c = base();
    c["providers"]["vx"] = json!({"kind": "vertex", "vertex": {"project": "p1", "location": "us-central1",
        "auth": "sidecar_token", "token_cluster": "side", "token_env": "SIDE_TOKEN"}});
    let parsed = parse(c.clone()).unwrap();
    assert!(parsed.key_envs().contains(&"SIDE_TOKEN".to_string()), "the upstream VM gets the variable");
    let t = parsed.compile(&|v| (v == "SIDE_TOKEN").then(|| "s3cr3t-sidecar".into()).or(Some("k".into()))).unwrap();
    let ProviderAuth::SidecarToken { cluster, bearer } = &t.provider("vx").unwrap().auth else { panic!() };
    assert_eq!(cluster, "side");
    assert_eq!(bearer.as_ref().map(|b| b.expose()), Some("Bearer s3cr3t-sidecar"));
    assert!(!format!("{t:?}").contains("s3cr3t"));
    let e = parse(c.clone()).unwrap().compile(&|v| (v != "SIDE_TOKEN").then(|| "k".into())).unwrap_err();
    assert!(e.to_string().contains("SIDE_TOKEN"), "{e}");
    for bad in [
        json!({"kind": "vertex", "keys": [{"env": "K"}], "vertex": {"auth": "express_key", "token_env": "X"}}),
        json!({"kind": "vertex", "vertex": {"project": "p", "location": "l", "auth": "sidecar_token", "token_cluster": " "}}),
    ] {
        let mut c = base();
        c["providers"]["vx"] = bad;
        assert!(parse(c).is_err());
    }
}

#[test]
fn base_path_loses_its_trailing_slash() {
    let t = parse(with(&["providers", "openai", "base_path"], json!("/proxy/")))
        .unwrap()
        .compile(&|_| Some("k".into()))
        .unwrap();
    assert_eq!(t.provider("openai").unwrap().base_path, "/proxy");
}

#[test]
fn the_sections_round_trip_through_serde() {
    let c = example();
    let again = ProvidersConfig::parse(&serde_json::to_vec(&c).unwrap()).unwrap();
    assert_eq!(again.chain_layout().unwrap(), c.chain_layout().unwrap());
}
