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
    let (_, v) = call(&app, "GET", "/v1/exact/abc123", Value::Null).await;
    assert_eq!(v["hit"], true);
    assert_eq!(v["response"]["body_b64"], "H");
    let (_, v) = call(&app, "GET", "/v1/exact/other", Value::Null).await;
    assert_eq!(v["hit"], false);
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
    assert!(m.contains("semgate_sidecar_exact_hits_total 2") && m.contains("semgate_sidecar_exact_entries 1"), "{m}");
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
