//! Unit tests of `core::upstream`: per-attempt plans over the users' example chain
//! (Anthropic with two keys, Vertex express as the fallback), with an in-memory shared data.

use super::*;
use crate::core::providers::config::ProvidersConfig;
use crate::core::store::tests::MemKv;
use serde_json::Value;

const EXAMPLE: &str = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/providers/chains.json"));
const KEYS: &[&str] = &["sk-ant-primary", "sk-ant-backup", "vx-key", "sk-openai", "tok-vertex"];

fn env(name: &str) -> Option<String> {
    match name {
        "ANTHROPIC_KEY_PRIMARY" => Some(KEYS[0].into()),
        "ANTHROPIC_KEY_BACKUP" => Some(KEYS[1].into()),
        "VERTEX_EXPRESS_KEY" => Some(KEYS[2].into()),
        "OPENAI_KEY" => Some(KEYS[3].into()),
        _ => None,
    }
}

/// The example plus an OpenAI provider, an OpenAI-compatible one and a token-auth Vertex.
fn table() -> ProviderTable {
    let mut v: Value = serde_json::from_str(EXAMPLE).unwrap();
    v["providers"]["openai"] = serde_json::json!({"kind": "openai", "keys": [{"env": "OPENAI_KEY"}]});
    v["providers"]["local"] = serde_json::json!({"kind": "openai_compatible", "address": "127.0.0.1:18001", "keys": [{"env": "OPENAI_KEY"}], "base_path": "/proxy"});
    v["providers"]["vtok"] = serde_json::json!({"kind": "vertex", "vertex": {"project": "p1", "location": "us-central1", "auth": "sidecar_token"}});
    v["models"]["gpt-4o"] = serde_json::json!(["openai/gpt-4o", "local/llama-3"]);
    v["models"]["gemini-pro"] = serde_json::json!(["vtok/gemini-1.5-pro"]);
    ProvidersConfig::from_filter_config(&v).unwrap().compile(&env).unwrap()
}

const CHAT: &str = r#"{"model":"claude-3-5-sonnet","messages":[{"role":"user","content":"hi"}]}"#;
const CHAT_STREAM: &str = r#"{"model":"claude-3-5-sonnet","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"hi"}]}"#;

/// One attempt of a request of its own (a fresh `x-request-id`).
fn req<'a>(provider: &'a str, body: &'a str, now_ms: u64) -> AttemptRequest<'a> {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let id = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    AttemptRequest {
        provider: Some(provider),
        request_id: Some(Box::leak(format!("req-fresh-{id}").into_boxed_str())),
        envoy_attempt_count: None,
        cluster: None,
        key: None,
        relay: false,
        path: None,
        body: body.as_bytes(),
        now_ms,
    }
}

fn header<'a>(plan: &'a AttemptPlan, name: &str) -> Option<&'a str> {
    plan.set_headers.iter().find(|h| h.name == name).map(|h| h.value.as_str())
}

fn assert_no_key(text: &str) {
    for k in KEYS {
        assert!(!text.contains(k), "a key leaked: {text}");
    }
}

#[test]
fn anthropic_attempt_gets_its_path_key_and_translated_body() {
    let (t, kv) = (table(), MemKv::default());
    let plan = plan_attempt(&t, &kv, &req("anthropic", CHAT, 1_000)).unwrap();
    assert_eq!(header(&plan, ":path"), Some("/v1/messages"));
    assert_eq!(header(&plan, ":authority"), Some("api.anthropic.com"));
    assert_eq!(header(&plan, "x-api-key"), Some("sk-ant-primary"));
    assert_eq!(header(&plan, "anthropic-version"), Some("2023-06-01"));
    assert!(plan.set_headers.iter().filter(|h| h.name == "x-api-key").all(|h| h.secret));
    for h in ["authorization", "content-length", "accept-encoding", "x-api-key"] {
        assert!(plan.remove_headers.contains(&h), "{h} must be removed");
    }
    let body: Value = serde_json::from_slice(plan.body.as_ref().unwrap()).unwrap();
    assert_eq!(body["model"], "claude-3-5-sonnet-20241022");
    assert_eq!(body["max_tokens"], 4096);
    assert_eq!(plan.state.client_model, "claude-3-5-sonnet");
    assert_eq!(plan.state.upstream_model, "claude-3-5-sonnet-20241022");
    assert_eq!(plan.state.key, Some(0));
    assert_eq!(plan.state.attempt, Some(1));
    assert!(!plan.state.stream);
}

#[test]
fn vertex_express_attempt_uses_the_global_path_and_goog_key() {
    let (t, kv) = (table(), MemKv::default());
    let plan = plan_attempt(&t, &kv, &req("vertex", CHAT, 1_000)).unwrap();
    assert_eq!(header(&plan, ":path"), Some("/v1/publishers/google/models/gemini-1.5-pro:generateContent"));
    assert_eq!(header(&plan, ":authority"), Some("aiplatform.googleapis.com"));
    assert_eq!(header(&plan, "x-goog-api-key"), Some("vx-key"));
    let body: Value = serde_json::from_slice(plan.body.as_ref().unwrap()).unwrap();
    assert!(body["contents"].is_array(), "{body}");
    let plan = plan_attempt(&t, &kv, &req("vertex", CHAT_STREAM, 1_000)).unwrap();
    assert_eq!(
        header(&plan, ":path"),
        Some("/v1/publishers/google/models/gemini-1.5-pro:streamGenerateContent?alt=sse")
    );
    assert!(plan.state.stream && plan.state.include_usage);
}

#[test]
fn openai_bodies_pass_unless_the_model_is_renamed() {
    let (t, kv) = (table(), MemKv::default());
    let body = r#"{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]}"#;
    let plan = plan_attempt(&t, &kv, &req("openai", body, 0)).unwrap();
    assert_eq!(plan.body, None);
    assert!(!plan.remove_headers.contains(&"content-length"));
    assert_eq!(header(&plan, "authorization"), Some("Bearer sk-openai"));
    assert_eq!(header(&plan, ":authority"), Some("api.openai.com"));
    let plan = plan_attempt(&t, &kv, &req("local", body, 0)).unwrap();
    assert_eq!(header(&plan, ":path"), Some("/proxy/v1/chat/completions"));
    assert_eq!(header(&plan, ":authority"), Some("127.0.0.1:18001"));
    let out: Value = serde_json::from_slice(plan.body.as_ref().unwrap()).unwrap();
    assert_eq!(out["model"], "llama-3");
}

#[test]
fn keys_rotate_in_turn() {
    let (t, kv) = (table(), MemKv::default());
    let used: Vec<_> =
        (0..4).map(|_| plan_attempt(&t, &kv, &req("anthropic", CHAT, 1_000)).unwrap().state.key.unwrap()).collect();
    assert_eq!(used, [0, 1, 0, 1]);
}

#[test]
fn refused_keys_cool_down_and_are_skipped_until_the_cooldown_ends() {
    let (t, kv) = (table(), MemKv::default());
    let plan = plan_attempt(&t, &kv, &req("anthropic", CHAT, 1_000)).unwrap();
    assert_eq!(plan.state.key, Some(0));
    let resp = on_response_headers(&t, &kv, &plan.state, 429, 1_000);
    assert_eq!(resp.cooled_key, Some(0));
    assert_eq!(key_cooled_until(&kv, "anthropic", 2, 0), 61_000);
    for _ in 0..3 {
        assert_eq!(plan_attempt(&t, &kv, &req("anthropic", CHAT, 2_000)).unwrap().state.key, Some(1));
    }
    let later: Vec<_> =
        (0..2).map(|_| plan_attempt(&t, &kv, &req("anthropic", CHAT, 61_000)).unwrap().state.key.unwrap()).collect();
    assert_eq!(later, [0, 1]);
    // Statuses that are not about the key leave it alone.
    let resp = on_response_headers(&t, &kv, &plan.state, 503, 70_000);
    assert_eq!(resp.cooled_key, None);
    assert_eq!(key_cooled_until(&kv, "anthropic", 2, 0), 61_000);
}

#[test]
fn when_every_key_cools_the_one_ending_first_is_used() {
    let kv = MemKv::default();
    cool_down_key(&kv, "anthropic", 2, 0, 0, 50_000);
    cool_down_key(&kv, "anthropic", 2, 1, 0, 20_000);
    assert_eq!(choose_key(&kv, "anthropic", 2, 1_000), KeyChoice { index: 1, all_cooling: true });
    assert_eq!(choose_key(&kv, "anthropic", 2, 30_000), KeyChoice { index: 1, all_cooling: false });
    assert!(!choose_key(&kv, "anthropic", 2, 60_000).all_cooling);
}

#[test]
fn rotation_survives_concurrent_writers() {
    let kv = MemKv::default();
    choose_key(&kv, "p", 3, 0);
    *kv.interfere.borrow_mut() = 3;
    let c = choose_key(&kv, "p", 3, 0);
    assert_eq!(c, KeyChoice { index: 1, all_cooling: false });
    *kv.interfere.borrow_mut() = 100;
    let _ = choose_key(&kv, "p", 3, 0);
}

#[test]
fn a_record_of_another_key_count_reads_as_fresh() {
    let kv = MemKv::default();
    cool_down_key(&kv, "p", 3, 2, 0, 10_000);
    assert_eq!(key_cooled_until(&kv, "p", 2, 0), 0);
    assert_eq!(choose_key(&kv, "p", 2, 0), KeyChoice { index: 0, all_cooling: false });
}

#[test]
fn vertex_tokens_come_from_shared_data() {
    let (t, kv) = (table(), MemKv::default());
    let body = r#"{"model":"gemini-pro","messages":[{"role":"user","content":"hi"}]}"#;
    let e = plan_attempt(&t, &kv, &req("vtok", body, 1_000)).unwrap_err();
    assert_eq!(e, AttemptError::TokenUnavailable("vtok".into()));
    assert_eq!(e.status(), 503);
    kv.set(&vertex_token_key("vtok"), &encode_vertex_token("tok-vertex", 5_000, 3_000), None).unwrap();
    let plan = plan_attempt(&t, &kv, &req("vtok", body, 1_000)).unwrap();
    assert_eq!(header(&plan, "authorization"), Some("Bearer tok-vertex"));
    assert_eq!(
        header(&plan, ":path"),
        Some("/v1/projects/p1/locations/us-central1/publishers/google/models/gemini-1.5-pro:generateContent")
    );
    assert_eq!(header(&plan, ":authority"), Some("us-central1-aiplatform.googleapis.com"));
    assert_eq!(plan.state.key, None);
    assert!(plan_attempt(&t, &kv, &req("vtok", body, 5_000)).is_err(), "expired token");
}

#[test]
fn the_token_fetcher_asks_the_sidecar_once_per_lease_and_refreshes_at_half_life() {
    let (t, kv) = (table(), MemKv::default());
    assert!(fetches_vertex_tokens(&t));
    // No token yet: one fetch to the sidecar's cluster, the provider named in the body.
    let due = vertex_token_fetches(&t, &kv, 1_000);
    assert_eq!(due.len(), 1);
    let (call, provider) = &due[0];
    assert_eq!((provider.as_str(), call.cluster, call.path), ("vtok", "semgate_sidecar", "/v1/vertex/token"));
    assert_eq!(serde_json::from_slice::<Value>(&call.body).unwrap(), json!({"provider": "vtok"}));
    // Every other root (and this one, next tick) waits while the lease runs.
    assert!(vertex_token_fetches(&t, &kv, 2_000).is_empty());
    // A failed answer stores nothing; after the lease the fetch is due again.
    assert!(!on_vertex_token_answer(&kv, "vtok", Some("503"), Some(b"{}"), 2_000));
    assert!(!on_vertex_token_answer(
        &kv,
        "vtok",
        Some("200"),
        Some(br#"{"access_token":"a b","expires_in_ms":9}"#),
        2_000
    ));
    assert!(read_vertex_token(&kv, "vtok", 2_000).is_none());
    assert_eq!(vertex_token_fetches(&t, &kv, 6_001).len(), 1);
    // A token for 100 s is used at once and fetched again after 50 s.
    let answer = br#"{"access_token":"ya29.one","expires_in_ms":100000}"#;
    assert!(on_vertex_token_answer(&kv, "vtok", Some("200"), Some(answer), 7_000));
    assert_eq!(read_vertex_token(&kv, "vtok", 7_000).as_deref(), Some("ya29.one"));
    assert!(vertex_token_fetches(&t, &kv, 56_000).is_empty());
    assert_eq!(vertex_token_fetches(&t, &kv, 57_000).len(), 1);
    // A success frees the lease: a short-lived token is refreshed without waiting for it.
    let short = br#"{"access_token":"ya29.two","expires_in_ms":2000}"#;
    assert!(on_vertex_token_answer(&kv, "vtok", Some("200"), Some(short), 57_100));
    assert_eq!(vertex_token_fetches(&t, &kv, 58_100).len(), 1);
    assert!(on_vertex_token_answer(&kv, "vtok", Some("200"), Some(answer), 7_000));
    // Still valid while the refresh is out; gone at expiry.
    assert_eq!(read_vertex_token(&kv, "vtok", 106_999).as_deref(), Some("ya29.one"));
    assert!(read_vertex_token(&kv, "vtok", 107_000).is_none());
}

#[test]
fn refused_attempts_name_the_fault_and_never_a_key() {
    let (t, kv) = (table(), MemKv::default());
    let cases: Vec<(AttemptRequest<'_>, u16)> = vec![
        (AttemptRequest { provider: None, ..req("x", CHAT, 0) }, 500),
        (req("", CHAT, 0), 500),
        (req("nobody", CHAT, 0), 500),
        (req("openai", CHAT, 0), 500),
        (req("anthropic", r#"{"model":"unknown","messages":[]}"#, 0), 404),
        (req("anthropic", r#"{"messages":[]}"#, 0), 400),
        (req("anthropic", "not json", 0), 400),
        (req("anthropic", r#"{"model":"claude-3-5-sonnet","messages":"x"}"#, 0), 400),
    ];
    for (r, status) in cases {
        let e = plan_attempt(&t, &kv, &r).unwrap_err();
        assert_eq!(e.status(), status, "{e:?}");
        let body: Value = serde_json::from_slice(&e.to_json()).unwrap();
        assert!(body["error"]["message"].is_string());
        assert_no_key(&format!("{e} {e:?} {body}"));
    }
}

#[test]
fn plans_and_tables_print_without_keys() {
    let (t, kv) = (table(), MemKv::default());
    let plan = plan_attempt(&t, &kv, &req("anthropic", CHAT, 0)).unwrap();
    assert_no_key(&format!("{plan:?} {t:?}"));
}

#[test]
fn attempts_are_numbered_and_logged_per_request() {
    let (t, kv) = (table(), MemKv::default());
    let req = |provider, body, now| AttemptRequest { request_id: Some("req-1"), ..req(provider, body, now) };
    let first = plan_attempt(&t, &kv, &req("anthropic", CHAT, 0)).unwrap();
    assert_eq!(first.state.attempt, Some(1));
    let resp = on_response_headers(&t, &kv, &first.state, 503, 0);
    let attempt = resp.set_headers.iter().find(|h| h.name == HEADER_ATTEMPTS).map(|h| h.value.clone());
    assert_eq!(attempt.as_deref(), Some("1"));
    let second = plan_attempt(&t, &kv, &req("vertex", CHAT, 0)).unwrap();
    assert_eq!(second.state.attempt, Some(2));
    // The second attempt never answered (reset): no status for it.
    assert_eq!(
        read_attempts(&kv, "req-1"),
        vec![
            AttemptRecord { provider: "anthropic".into(), status: Some(503) },
            AttemptRecord { provider: "vertex".into(), status: None },
        ]
    );
    assert_eq!(read_attempts(&kv, "req-2"), vec![]);
    // The log numbers the attempts; Envoy's count is used only without a request id.
    let r = AttemptRequest { request_id: None, envoy_attempt_count: Some("7"), ..req("vertex", CHAT, 0) };
    assert_eq!(plan_attempt(&t, &kv, &r).unwrap().state.attempt, Some(7));
    let r = AttemptRequest { request_id: None, ..req("vertex", CHAT, 0) };
    assert_eq!(plan_attempt(&t, &kv, &r).unwrap().state.attempt, None);
}

#[test]
fn the_endpoint_names_the_key_and_a_429_there_fails_over_as_a_503() {
    let (t, kv) = (table(), MemKv::default());
    // Envoy chose the backup key's endpoint (the retry after the primary key was refused).
    let r = AttemptRequest { key: Some("ANTHROPIC_KEY_BACKUP"), ..req("anthropic", CHAT, 0) };
    let plan = plan_attempt(&t, &kv, &r).unwrap();
    assert_eq!((plan.state.key, header(&plan, "x-api-key")), (Some(1), Some("sk-ant-backup")));
    // Its 429 becomes a 503 for Envoy: outlier detection takes this key's endpoint out, and the
    // retry goes on to the next endpoint. The key is cooled down for the rotation too.
    let resp = on_response_headers(&t, &kv, &plan.state, 429, 0);
    assert!(resp.set_headers.iter().any(|h| h.name == ":status" && h.value == "503"), "{resp:?}");
    assert_eq!(resp.cooled_key, Some(1));
    // Other statuses are left alone.
    let resp = on_response_headers(&t, &kv, &plan.state, 500, 0);
    assert!(!resp.set_headers.iter().any(|h| h.name == ":status"));
    // An unknown variable in the metadata falls back to the rotation.
    let r = AttemptRequest { key: Some("NOT_A_KEY"), ..req("anthropic", CHAT, 0) };
    assert!(plan_attempt(&t, &kv, &r).unwrap().state.key.is_some());
    // The chain's last provider with a single key keeps the client-facing 429.
    let r = AttemptRequest { key: Some("VERTEX_EXPRESS_KEY"), ..req("vertex", CHAT, 0) };
    let plan = plan_attempt(&t, &kv, &r).unwrap();
    let resp = on_response_headers(&t, &kv, &plan.state, 429, 0);
    assert!(!resp.set_headers.iter().any(|h| h.name == ":status"));
}

#[test]
fn without_endpoint_metadata_the_cluster_names_the_provider() {
    let (t, kv) = (table(), MemKv::default());
    let r = AttemptRequest { provider: None, cluster: Some("provider_vertex"), ..req("x", CHAT, 0) };
    assert_eq!(plan_attempt(&t, &kv, &r).unwrap().state.provider, "vertex");
    let r = AttemptRequest { provider: None, cluster: Some("somewhere_else"), ..req("x", CHAT, 0) };
    assert_eq!(plan_attempt(&t, &kv, &r).unwrap_err(), AttemptError::NoProvider);
}

#[test]
fn the_last_provider_of_a_chain_uses_a_cooling_key_rather_than_none() {
    let (t, kv) = (table(), MemKv::default());
    cool_down_key(&kv, "vertex", 1, 0, 0, 60_000);
    let plan = plan_attempt(&t, &kv, &req("vertex", CHAT, 1_000)).unwrap();
    assert!(plan.state.all_keys_cooling);
}

#[test]
fn a_relay_keeps_its_path_and_body_and_gets_the_providers_key() {
    let (t, kv) = (table(), MemKv::default());
    let r = AttemptRequest { relay: true, path: Some("/v1/models"), body: b"", ..req("local", CHAT, 0) };
    let plan = plan_attempt(&t, &kv, &r).unwrap();
    assert_eq!(header(&plan, ":path"), Some("/proxy/v1/models"));
    assert_eq!(header(&plan, "authorization"), Some("Bearer sk-openai"));
    assert!(plan.body.is_none());
    assert!(plan.remove_headers.contains(&"x-semgate-relay"));
    let resp = on_response_headers(&t, &kv, &plan.state, 200, 0);
    assert!(matches!(resp.body, ResponseBody::Passthrough));
}

#[test]
fn a_reused_slot_starts_a_new_history() {
    let kv = MemKv::default();
    let (a, b) = find_colliding_ids();
    log_attempt_start(&kv, &a, "anthropic");
    assert_eq!(log_attempt_start(&kv, &b, "vertex"), Some(1));
    assert_eq!(read_attempts(&kv, &a), vec![]);
    assert_eq!(read_attempts(&kv, &b).len(), 1);
}

fn find_colliding_ids() -> (String, String) {
    let slot = |id: &str| request_hash(id) % ATTEMPT_LOG_SLOTS;
    let target = slot("id-0");
    let other = (1..100_000).map(|i| format!("id-{i}")).find(|id| slot(id) == target).unwrap();
    ("id-0".into(), other)
}

#[test]
fn the_log_is_bounded_per_request() {
    let kv = MemKv::default();
    for _ in 0..MAX_LOGGED_ATTEMPTS {
        assert!(log_attempt_start(&kv, "r", "anthropic").is_some());
    }
    assert_eq!(log_attempt_start(&kv, "r", "anthropic"), None);
    assert_eq!(read_attempts(&kv, "r").len(), MAX_LOGGED_ATTEMPTS);
}

#[test]
fn all_failed_names_each_attempt_without_bodies_or_keys() {
    let attempts = vec![
        AttemptRecord { provider: "anthropic".into(), status: Some(503) },
        AttemptRecord { provider: "vertex".into(), status: None },
    ];
    let body = all_attempts_failed(&attempts);
    let v: Value = serde_json::from_slice(&body).unwrap();
    let message = v["error"]["message"].as_str().unwrap();
    assert!(message.contains("anthropic (503)"), "{message}");
    assert!(message.contains("vertex (no response"), "{message}");
    assert_eq!(v["error"]["type"], "server_error");
    assert_eq!(v["error"]["code"], "all_providers_failed");
    assert_eq!(v["error"]["attempts"][0], serde_json::json!({"provider": "anthropic", "status": 503}));
    assert_eq!(v["error"]["attempts"][1]["status"], Value::Null);
    assert_eq!(ALL_FAILED_STATUS, 502);
    let empty: Value = serde_json::from_slice(&all_attempts_failed(&[])).unwrap();
    assert_eq!(empty["error"]["attempts"], serde_json::json!([]));
    assert_eq!(attempt_failure_label(None), "no_response");
    assert_eq!(attempt_failure_label(Some(401)), "auth");
}

macro_rules! fixture {
    ($path:literal) => {
        include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/providers/", $path))
    };
}

#[test]
fn anthropic_json_answers_are_translated_at_the_end_of_the_body() {
    let (t, kv) = (table(), MemKv::default());
    let plan = plan_attempt(&t, &kv, &req("anthropic", CHAT, 0)).unwrap();
    let mut resp = on_response_headers(&t, &kv, &plan.state, 200, 1_700_000_000_000);
    assert!(resp.body.holds_headers());
    assert!(resp.remove_headers.contains(&"content-length"));
    let names: Vec<_> = resp.set_headers.iter().map(|h| (h.name, h.value.as_str())).collect();
    assert!(names.contains(&(HEADER_PROVIDER, "anthropic")));
    assert!(names.contains(&(HEADER_UPSTREAM_MODEL, "claude-3-5-sonnet-20241022")));
    let whole = fixture!("anthropic/response_text.json");
    assert_eq!(resp.body.on_body(&whole[..10], false), BodyAction::Hold);
    let BodyAction::Replace { body, status } = resp.body.on_body(whole, true) else { panic!("a translated body") };
    assert_eq!(status, None);
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["created"], 1_700_000_000u64);
    assert!(resp.body.usage().is_some());
}

#[test]
fn provider_errors_become_openai_errors_and_credentials_failures_502() {
    let (t, kv) = (table(), MemKv::default());
    let plan = plan_attempt(&t, &kv, &req("anthropic", CHAT_STREAM, 0)).unwrap();
    let mut resp = on_response_headers(&t, &kv, &plan.state, 401, 0);
    assert_eq!(resp.cooled_key, Some(0));
    assert!(resp.body.holds_headers(), "errors of a stream request are JSON, buffered");
    let provider_body =
        br#"{"type":"error","error":{"type":"authentication_error","message":"invalid x-api-key sk-ant-primary"}}"#;
    let BodyAction::Replace { body, status } = resp.body.on_body(provider_body, true) else { panic!() };
    assert_eq!(status, Some(502));
    let text = String::from_utf8(body).unwrap();
    assert!(text.contains("upstream_authentication_failed"), "{text}");
    assert_no_key(&text);
    let mut resp = on_response_headers(&t, &kv, &plan.state, 400, 0);
    let BodyAction::Replace { status, .. } = resp.body.on_body(fixture!("anthropic/response_error.json"), true) else {
        panic!()
    };
    assert_eq!(status, None);
}

#[test]
fn anthropic_streams_are_translated_chunk_by_chunk() {
    let (t, kv) = (table(), MemKv::default());
    let plan = plan_attempt(&t, &kv, &req("anthropic", CHAT_STREAM, 0)).unwrap();
    let mut resp = on_response_headers(&t, &kv, &plan.state, 200, 0);
    assert!(!resp.body.holds_headers());
    assert!(resp.set_headers.iter().any(|h| h.name == "content-type" && h.value == "text/event-stream"));
    let sse = fixture!("anthropic/stream_text.sse");
    let mut out = Vec::new();
    for chunk in sse.chunks(7) {
        let BodyAction::Replace { body, status: None } = resp.body.on_body(chunk, false) else { panic!() };
        out.extend_from_slice(&body);
    }
    let BodyAction::Replace { body, .. } = resp.body.on_body(b"", true) else { panic!() };
    out.extend_from_slice(&body);
    let text = String::from_utf8(out).unwrap();
    assert!(text.contains("chat.completion.chunk"), "{text}");
    assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
    assert!(!resp.body.failed());
}

#[test]
fn a_cut_stream_ends_in_an_error_event() {
    let (t, kv) = (table(), MemKv::default());
    let plan = plan_attempt(&t, &kv, &req("anthropic", CHAT_STREAM, 0)).unwrap();
    let mut resp = on_response_headers(&t, &kv, &plan.state, 200, 0);
    let sse = fixture!("anthropic/stream_text.sse");
    resp.body.on_body(&sse[..sse.len() / 2], false);
    let BodyAction::Replace { body, .. } = resp.body.on_body(b"", true) else { panic!() };
    assert!(String::from_utf8_lossy(&body).contains("\"error\""));
    assert!(resp.body.failed());
    assert!(String::from_utf8(stream_failure_event("anthropic")).unwrap().starts_with("data: {\"error\""));
}

#[test]
fn openai_answers_pass_through() {
    let (t, kv) = (table(), MemKv::default());
    let body = r#"{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]}"#;
    let plan = plan_attempt(&t, &kv, &req("openai", body, 0)).unwrap();
    let mut resp = on_response_headers(&t, &kv, &plan.state, 200, 0);
    assert!(!resp.body.holds_headers());
    assert!(resp.remove_headers.is_empty());
    assert_eq!(resp.body.on_body(b"{}", true), BodyAction::Pass);
}

#[test]
fn an_answer_after_a_failed_attempt_is_a_fallback() {
    use crate::core::tally::ModelCounter;
    let (t, kv) = (table(), MemKv::default());
    let req = |provider, now| AttemptRequest { request_id: Some("outcome"), ..req(provider, CHAT, now) };
    let first = plan_attempt(&t, &kv, &req("anthropic", 0)).unwrap();
    assert_eq!(first.state.route, "claude-3-5-sonnet");
    assert_eq!(attempt_outcome(&first.state, 503), Some(ModelCounter::AttemptFailures));
    assert_eq!(attempt_outcome(&first.state, 200), None, "the first attempt's answer is no fallback");
    on_response_headers(&t, &kv, &first.state, 503, 0);
    let second = plan_attempt(&t, &kv, &req("vertex", 0)).unwrap();
    assert_eq!(attempt_outcome(&second.state, 200), Some(ModelCounter::Fallbacks));
    assert_eq!(attempt_outcome(&second.state, 400), None);
    // The chain's second provider answering a first attempt (the primary is ejected).
    let direct = plan_attempt(&t, &kv, &AttemptRequest { request_id: Some("other"), ..req("vertex", 0) }).unwrap();
    assert_eq!(attempt_outcome(&direct.state, 200), Some(ModelCounter::Fallbacks));
}
