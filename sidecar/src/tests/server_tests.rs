//! The HTTP API driven in-process, with the hashing test double instead of a model.

use super::*;
use crate::embed::HashingEmbedder;
use crate::index::FlatIndex;
use axum::body::Body;
use axum::http::Request;
use tower::ServiceExt;

fn app() -> Router {
    let state = AppState::new(
        ServerConfig { threshold: 0.6, ..ServerConfig::default() },
        Arc::new(HashingEmbedder { dim: 256 }),
        Arc::new(FlatIndex::in_memory(256, 1000)),
    );
    router(state)
}

async fn call(app: &Router, method: &str, uri: &str, body: Value) -> (StatusCode, Value) {
    let req = Request::builder().method(method).uri(uri).header("content-type", "application/json");
    let req = if method == "GET" { req.body(Body::empty()) } else { req.body(Body::from(body.to_string())) }.unwrap();
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20).await.unwrap();
    (status, serde_json::from_slice(&bytes).unwrap_or(Value::String(String::from_utf8_lossy(&bytes).into_owned())))
}

fn response(text: &str) -> Value {
    json!({"status": 200, "headers": [["content-type", "application/json"]], "body_b64": text, "stream": false})
}

#[tokio::test]
async fn store_then_lookup_a_rephrasing_hits_in_scope_only() {
    let app = app();
    let (s, _) = call(
        &app,
        "POST",
        "/v1/store",
        json!({"scope": "t1|gpt", "key": "k1", "text": "how do I reset my password", "response": response("A")}),
    )
    .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, v) =
        call(&app, "POST", "/v1/lookup", json!({"scope": "t1|gpt", "text": "how do I reset my password please"})).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["hit"], true, "{v}");
    assert_eq!(v["response"]["body_b64"], "A");
    // Another tenant's scope never sees it.
    let (_, v) =
        call(&app, "POST", "/v1/lookup", json!({"scope": "t2|gpt", "text": "how do I reset my password please"})).await;
    assert_eq!(v["hit"], false);
}

#[tokio::test]
async fn the_guard_refuses_a_near_miss_above_the_threshold() {
    let app = app();
    call(
        &app,
        "POST",
        "/v1/store",
        json!({"scope": "s", "text": "Convert 100 USD to EUR", "response": response("usd->eur")}),
    )
    .await;
    let (_, v) = call(&app, "POST", "/v1/lookup", json!({"scope": "s", "text": "Convert 100 EUR to USD"})).await;
    assert_eq!(v["hit"], false, "{v}");
    assert_eq!(v["guard_rejected"], json!(["operand_order"]));
    assert!(v["score"].as_f64().unwrap() > 0.99, "same words: the embedding alone cannot tell");
    // Without the guard the near miss would have been served.
    let (_, v) =
        call(&app, "POST", "/v1/lookup", json!({"scope": "s", "text": "Convert 100 EUR to USD", "guard": false})).await;
    assert_eq!(v["hit"], true);
    let (_, m) = call(&app, "GET", "/metrics", Value::Null).await;
    assert!(m.as_str().unwrap().contains("semgate_sidecar_guard_rejections_total{reason=\"operand_order\"} 1"));
}

#[tokio::test]
async fn threshold_in_the_request_overrides_the_default() {
    let app = app();
    call(
        &app,
        "POST",
        "/v1/store",
        json!({"scope": "s", "text": "what is the return policy", "response": response("R")}),
    )
    .await;
    let (_, v) = call(
        &app,
        "POST",
        "/v1/lookup",
        json!({"scope": "s", "text": "what is the return policy for shoes", "threshold": 0.999}),
    )
    .await;
    assert_eq!(v["hit"], false);
}

#[tokio::test]
async fn exact_tier_is_shared_by_key() {
    let app = app();
    call(&app, "POST", "/v1/store", json!({"scope": "s", "key": "abc123", "text": "hello", "response": response("H")}))
        .await;
    // The old read-by-key endpoint is gone: the tier answers only through a lookup.
    let (s, _) = call(&app, "GET", "/v1/exact/abc123", Value::Null).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    // A lookup that carries the key is answered by the exact tier, whatever its text.
    let (_, v) =
        call(&app, "POST", "/v1/lookup", json!({"scope": "s", "key": "abc123", "text": "unrelated words"})).await;
    assert_eq!((v["hit"].clone(), v["tier"].clone(), v["score"].clone()), (json!(true), json!("exact"), json!(1.0)));
    assert_eq!(v["response"]["body_b64"], "H");
    assert!(v["expires_ms"].as_u64().unwrap() > v["created_ms"].as_u64().unwrap());
    // Another key falls through to the semantic layer.
    let (_, v) = call(&app, "POST", "/v1/lookup", json!({"scope": "s", "key": "nope", "text": "hello"})).await;
    assert_eq!((v["hit"].clone(), v["tier"].clone()), (json!(true), json!("semantic")));
    let (_, m) = call(&app, "GET", "/metrics", Value::Null).await;
    let m = m.as_str().unwrap().to_string();
    assert!(m.contains("semgate_sidecar_exact_hits_total 1") && m.contains("semgate_sidecar_exact_entries 1"), "{m}");
}

#[tokio::test]
async fn bad_requests_are_client_errors_and_health_reports_the_model() {
    let app = app();
    let (s, _) = call(&app, "POST", "/v1/lookup", json!({"scope": "s"})).await;
    assert!(s.is_client_error());
    let (s, v) = call(&app, "GET", "/healthz", Value::Null).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["model"], "hashing-test-double");
}

fn app_with_token(token: &str) -> Router {
    let state = AppState::with_token(
        ServerConfig { threshold: 0.6, max_entry_bytes: 10_000, ..ServerConfig::default() },
        Arc::new(HashingEmbedder { dim: 256 }),
        Arc::new(FlatIndex::in_memory(256, 1000)),
        Some(token.to_string()),
    );
    router(state)
}

async fn call_with(app: &Router, uri: &str, auth: Option<&str>, body: Value) -> StatusCode {
    let mut req = Request::builder().method("POST").uri(uri).header("content-type", "application/json");
    if let Some(a) = auth {
        req = req.header("authorization", a);
    }
    app.clone().oneshot(req.body(Body::from(body.to_string())).unwrap()).await.unwrap().status()
}

#[tokio::test]
async fn data_endpoints_need_the_token_and_health_and_metrics_do_not() {
    let token = "0123456789abcdef0123";
    let app = app_with_token(token);
    let store = json!({"scope": "s", "key": "k", "text": "hello there", "response": response("H")});
    let lookup = json!({"scope": "s", "key": "k", "text": "hello there", "threshold": 0.0, "guard": false});
    for auth in [None, Some("Bearer wrong-token-wrong-token"), Some("Bearer "), Some(token), Some("Basic x")] {
        assert_eq!(call_with(&app, "/v1/store", auth, store.clone()).await, StatusCode::UNAUTHORIZED, "{auth:?}");
        assert_eq!(call_with(&app, "/v1/lookup", auth, lookup.clone()).await, StatusCode::UNAUTHORIZED, "{auth:?}");
    }
    let bearer = format!("Bearer {token}");
    assert_eq!(call_with(&app, "/v1/store", Some(&bearer), store).await, StatusCode::NO_CONTENT);
    assert_eq!(call_with(&app, "/v1/lookup", Some(&bearer), lookup).await, StatusCode::OK);
    let (s, _) = call(&app, "GET", "/healthz", Value::Null).await;
    assert_eq!(s, StatusCode::OK);
    let (s, m) = call(&app, "GET", "/metrics", Value::Null).await;
    assert_eq!(s, StatusCode::OK);
    assert!(m.as_str().unwrap().contains("semgate_sidecar_unauthorized_total 10"), "{m}");
}

#[test]
fn token_comparison_is_exact() {
    assert!(constant_time_eq(b"abc", b"abc"));
    assert!(!constant_time_eq(b"abc", b"abd"));
    assert!(!constant_time_eq(b"abc", b"abcd"));
    assert!(!constant_time_eq(b"", b"a"));
    assert!(constant_time_eq(b"", b""));
}

#[tokio::test]
async fn stores_with_foreign_headers_or_over_the_size_limit_are_refused() {
    let token = "0123456789abcdef0123";
    let app = app_with_token(token);
    let bearer = format!("Bearer {token}");
    let with_ct = |ct: &str| json!({"scope": "s", "text": "hi", "response": {"status": 200, "headers": [["content-type", ct]], "body_b64": "e30=", "stream": false}});
    for ct in ["application/json\r\nset-cookie: a=b", "text/html", "application/json; boundary=x", "application/json\n"]
    {
        assert_eq!(call_with(&app, "/v1/store", Some(&bearer), with_ct(ct)).await, StatusCode::BAD_REQUEST, "{ct:?}");
    }
    for ct in ["application/json", "text/event-stream", "application/json; charset=utf-8"] {
        assert_eq!(call_with(&app, "/v1/store", Some(&bearer), with_ct(ct)).await, StatusCode::NO_CONTENT, "{ct:?}");
    }
    let extra = json!({"scope": "s", "text": "hi", "response": {"status": 200, "headers": [["set-cookie", "a=b"]], "body_b64": "e30=", "stream": false}});
    assert_eq!(call_with(&app, "/v1/store", Some(&bearer), extra).await, StatusCode::BAD_REQUEST);
    let big = json!({"scope": "s", "text": "hi", "response": response(&"A".repeat(20_000))});
    assert_eq!(call_with(&app, "/v1/store", Some(&bearer), big).await, StatusCode::PAYLOAD_TOO_LARGE);
}

/// An embedder that takes 50 ms a text: one worker, so a second lookup waits.
struct SlowHashing;

impl Embedder for SlowHashing {
    fn model_id(&self) -> &str {
        "slow-hashing"
    }
    fn dim(&self) -> usize {
        64
    }
    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, crate::embed::EmbedError> {
        std::thread::sleep(std::time::Duration::from_millis(50));
        HashingEmbedder { dim: 64 }.embed(texts)
    }
}

#[tokio::test]
async fn an_overloaded_sidecar_answers_a_shed_miss_at_once() {
    let state = AppState::new(
        ServerConfig { embed_workers: 1, embed_batch: 1, ..ServerConfig::default() },
        Arc::new(SlowHashing),
        Arc::new(FlatIndex::in_memory(64, 1000)),
    );
    let app = router(state.clone());
    // One lookup teaches the queue the cost of a text.
    let (s, v) = call(&app, "POST", "/v1/lookup", json!({"scope": "s", "text": "warm up"})).await;
    assert_eq!((s, v["hit"].clone()), (StatusCode::OK, json!(false)));
    let busy: Vec<_> = (0..4)
        .map(|i| {
            let app = app.clone();
            tokio::spawn(async move {
                call(&app, "POST", "/v1/lookup", json!({"scope": "s", "text": format!("busy {i}")})).await
            })
        })
        .collect();
    while state.queue.depth() < 3 {
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
    let (s, v) = call(&app, "POST", "/v1/lookup", json!({"scope": "s", "text": "in a hurry", "deadline_ms": 30})).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v, json!({"hit": false, "score": 0.0, "shed": true}));
    for b in busy {
        let (s, v) = b.await.unwrap();
        assert_eq!((s, v.get("shed").cloned()), (StatusCode::OK, None));
    }
    let (_, metrics) = call(&app, "GET", "/metrics", json!(null)).await;
    let metrics = metrics.as_str().unwrap_or("").to_string();
    assert!(metrics.contains("semgate_sidecar_shed_total 1\n"), "{metrics}");
    assert!(metrics.contains("semgate_sidecar_embed_batch_size_count"), "{metrics}");
    assert!(metrics.contains("semgate_sidecar_queue_wait_ms_bucket"), "{metrics}");
}

#[test]
fn below_the_threshold_only_the_same_request_in_other_words_is_served() {
    let c = ServerConfig::default();
    let (q, same) = ("Convert 50 euros to yen", "Convert 50 EUR to JPY");
    assert_eq!(c.decide(0.70, true, q, same, 0.55), Decision::Serve);
    assert_eq!(c.decide(0.70, true, q, same, 0.45), Decision::Below);
    // A rewording in other words stays below the threshold.
    assert_eq!(c.decide(0.70, true, "How do I get a refund?", "What is your return policy?", 0.6), Decision::Below);
    // A near-miss is refused above the threshold, and below it is simply not served.
    let swapped = "Convert 50 JPY to EUR";
    assert!(matches!(c.decide(0.70, true, same, swapped, 0.9), Decision::Refused(_)));
    assert_eq!(c.decide(0.70, true, same, swapped, 0.6), Decision::Below);
    // A stricter threshold than the default, or no guard, gets no lower bound.
    assert_eq!(c.decide(0.85, true, q, same, 0.8), Decision::Below);
    assert_eq!(c.decide(0.70, false, q, same, 0.6), Decision::Below);
    assert_eq!(c.floor(0.70, true), 0.50);
    assert_eq!(c.floor(0.85, true), 0.85);
}
