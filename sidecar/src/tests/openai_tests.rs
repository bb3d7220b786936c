//! The OpenAI-compatible embedder against a real HTTP server: a small axum app in the test
//! process that answers `POST /v1/embeddings` the way each case needs.

use super::*;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};

/// Serves `app` on a free loopback port from its own thread; returns the base URL (`.../v1`).
fn serve(app: Router) -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    listener.set_nonblocking(true).unwrap();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            axum::serve(listener, app).await.unwrap();
        })
    });
    format!("http://{addr}/v1")
}

/// What the upstream saw: the `authorization` header and the JSON body of each request.
type Seen = Arc<Mutex<Vec<(Option<String>, Value)>>>;

/// An upstream whose answer to each request body is `answer(body)`.
fn upstream(answer: impl Fn(&Value) -> (StatusCode, String) + Send + Sync + 'static) -> (String, Seen) {
    let seen: Seen = Arc::default();
    let log = seen.clone();
    let answer = Arc::new(answer);
    let handler = move |headers: HeaderMap, Json(body): Json<Value>| async move {
        let auth = headers.get("authorization").and_then(|v| v.to_str().ok()).map(str::to_string);
        let reply = answer(&body);
        log.lock().unwrap().push((auth, body));
        reply
    };
    (serve(Router::new().route("/v1/embeddings", post(handler))), seen)
}

/// Not unit length, so normalisation shows; the text's length makes each vector distinct.
fn raw_vector(text: &str) -> Vec<f32> {
    vec![text.len() as f32, 1.0, 2.0]
}

fn unit(v: Vec<f32>) -> Vec<f32> {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.into_iter().map(|x| x / n).collect()
}

fn inputs(body: &Value) -> Vec<String> {
    body["input"].as_array().unwrap().iter().map(|t| t.as_str().unwrap().to_string()).collect()
}

/// A correct OpenAI answer, with `data` in reverse order (allowed: `index` says which is which).
fn reversed(body: &Value) -> (StatusCode, String) {
    let data: Vec<Value> = inputs(body)
        .iter()
        .enumerate()
        .rev()
        .map(|(i, t)| json!({"object": "embedding", "index": i, "embedding": raw_vector(t)}))
        .collect();
    let answer = json!({"object": "list", "data": data, "model": body["model"], "usage": {"prompt_tokens": 1, "total_tokens": 1}});
    (StatusCode::OK, answer.to_string())
}

fn config(url: &str) -> OpenAiConfig {
    OpenAiConfig { dimensions: Some(3), ..OpenAiConfig::new(url, "test-model") }
}

fn assert_close(got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len());
    assert!(got.iter().zip(want).all(|(a, b)| (a - b).abs() < 1e-6), "{got:?} != {want:?}");
}

/// How a test upstream answers a request body.
type Answer = fn(&Value) -> (StatusCode, String);

/// The error an embedder over `answer` gives for one text.
fn error_for(config: impl Fn(&str) -> OpenAiConfig, answer: Answer) -> String {
    let (url, _) = upstream(answer);
    let e = OpenAiEmbedder::new(config(&url)).unwrap();
    match e.embed(&["hello"]) {
        Err(err @ EmbedError::Remote(_)) => err.to_string(),
        other => panic!("expected a remote error, got {other:?}"),
    }
}

#[test]
fn vectors_come_back_in_input_order_by_index_and_normalised() {
    let (url, seen) = upstream(reversed);
    let e = OpenAiEmbedder::new(config(&url)).unwrap();
    let texts = ["a", "bbbb", "cc"];
    let v = e.embed(&texts).unwrap();
    assert_eq!(v.len(), 3);
    for (text, got) in texts.iter().zip(&v) {
        assert_close(got, &unit(raw_vector(text)));
        assert!((got.iter().map(|x| x * x).sum::<f32>() - 1.0).abs() < 1e-5);
    }
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 1, "one request, no probe: the dimension was given");
    assert_eq!(seen[0].1, json!({"model": "test-model", "input": ["a", "bbbb", "cc"], "dimensions": 3}));
    assert!(e.embed(&[]).unwrap().is_empty());
    assert_eq!(seen.len(), 1, "nothing to embed, nothing sent");
}

#[test]
fn a_long_input_is_sent_in_batches_and_keeps_its_order() {
    let (url, seen) = upstream(reversed);
    let e = OpenAiEmbedder::new(OpenAiConfig { max_batch: 2, ..config(&url) }).unwrap();
    let texts = ["one", "three", "x", "fourteen", "seventeen"];
    let v = e.embed(&texts).unwrap();
    for (text, got) in texts.iter().zip(&v) {
        assert_close(got, &unit(raw_vector(text)));
    }
    let batches: Vec<Vec<String>> = seen.lock().unwrap().iter().map(|(_, body)| inputs(body)).collect();
    assert_eq!(batches, vec![vec!["one", "three"], vec!["x", "fourteen"], vec!["seventeen"]]);
}

#[test]
fn the_key_is_sent_as_a_bearer_token_and_never_shown() {
    let (url, seen) = upstream(reversed);
    let cfg = OpenAiConfig { api_key: Some("sk-secret-123".into()), ..config(&url) };
    assert!(!format!("{cfg:?}").contains("sk-secret-123"));
    OpenAiEmbedder::new(cfg).unwrap().embed(&["hi"]).unwrap();
    OpenAiEmbedder::new(config(&url)).unwrap().embed(&["hi"]).unwrap();
    let auth: Vec<Option<String>> = seen.lock().unwrap().iter().map(|(a, _)| a.clone()).collect();
    assert_eq!(auth, vec![Some("Bearer sk-secret-123".to_string()), None]);

    let err = error_for(
        |url| OpenAiConfig { api_key: Some("sk-secret-123".into()), ..config(url) },
        |_| (StatusCode::UNAUTHORIZED, r#"{"error":{"message":"Incorrect API key provided."}}"#.into()),
    );
    assert!(err.contains("HTTP 401") && !err.contains("sk-secret-123"), "{err}");
}

#[test]
fn without_dimensions_the_dimension_is_probed_once_at_startup() {
    let (url, seen) = upstream(reversed);
    let e = OpenAiEmbedder::new(OpenAiConfig::new(&url, "BAAI/bge-small-en-v1.5")).unwrap();
    assert_eq!(e.dim(), 3);
    assert_eq!(e.model_id(), "openai-BAAI_bge-small-en-v1.5-3");
    {
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 1);
        assert_eq!(seen[0].1.get("dimensions"), None, "no `dimensions` for servers that refuse it");
    }
    assert_close(&e.embed(&["later"]).unwrap()[0], &unit(raw_vector("later")));
    assert_eq!(seen.lock().unwrap().len(), 2);
}

#[test]
fn upstream_errors_carry_the_status_and_the_upstreams_message() {
    let err = error_for(config, |_| {
        let body = json!({"error": {"message": "Incorrect API key provided: sk-ab***yz.", "type": "invalid_request_error", "code": "invalid_api_key"}});
        (StatusCode::UNAUTHORIZED, body.to_string())
    });
    assert!(err.starts_with("embedding service: POST http://127.0.0.1:"), "{err}");
    assert!(
        err.contains("/v1/embeddings (model test-model): HTTP 401: Incorrect API key provided: sk-ab***yz."),
        "{err}"
    );

    let err = error_for(config, |_| (StatusCode::INTERNAL_SERVER_ERROR, "upstream exploded\n".into()));
    assert!(err.ends_with("HTTP 500: upstream exploded"), "{err}");

    // TEI's shape.
    let err = error_for(config, |_| {
        (
            StatusCode::PAYLOAD_TOO_LARGE,
            r#"{"error":"Input validation error: too long","error_type":"Validation"}"#.into(),
        )
    });
    assert!(err.ends_with("HTTP 413: Input validation error: too long"), "{err}");

    let err = error_for(config, |_| (StatusCode::BAD_GATEWAY, String::new()));
    assert!(err.ends_with("HTTP 502: (no message)"), "{err}");

    let err = error_for(config, |_| (StatusCode::INTERNAL_SERVER_ERROR, "x".repeat(5000)));
    assert!(err.len() < 500 && err.ends_with("..."), "{err}");
}

#[test]
fn a_wrong_dimension_is_rejected() {
    let err = error_for(|url| OpenAiConfig { dimensions: Some(4), ..config(url) }, reversed);
    assert!(err.ends_with("an embedding of dimension 3, expected 4"), "{err}");
}

#[test]
fn malformed_answers_are_errors_not_panics() {
    let cases: [(Answer, &str); 6] = [
        (|_| (StatusCode::OK, "not json".into()), "not an embeddings answer"),
        (|_| (StatusCode::OK, r#"{"data":[]}"#.into()), "0 embeddings for 1 texts"),
        (
            |_| (StatusCode::OK, r#"{"data":[{"index":1,"embedding":[1,2,3]}]}"#.into()),
            "index 1 out of range for 1 texts",
        ),
        (|_| (StatusCode::OK, r#"{"data":[{"index":0,"embedding":[0,0,0]}]}"#.into()), "zero or not finite"),
        (|_| (StatusCode::OK, r#"{"data":[{"index":0,"embedding":"AAAA"}]}"#.into()), "not an embeddings answer"),
        // Too large for an f32: parsed as infinity.
        (|_| (StatusCode::OK, r#"{"data":[{"index":0,"embedding":[1e39,1,1]}]}"#.into()), "zero or not finite"),
    ];
    for (answer, expected) in cases {
        let err = error_for(config, answer);
        assert!(err.contains(expected), "{err} should contain {expected}");
    }
    let (url, _) = upstream(|_| {
        (StatusCode::OK, r#"{"data":[{"index":0,"embedding":[1,2,3]},{"index":0,"embedding":[1,2,3]}]}"#.into())
    });
    let err = OpenAiEmbedder::new(config(&url)).unwrap().embed(&["a", "b"]).unwrap_err().to_string();
    assert!(err.ends_with("index 0 answered twice"), "{err}");
}

#[test]
fn a_silent_upstream_times_out_and_a_closed_port_fails() {
    let url = serve(Router::new().route("/v1/embeddings", post(std::future::pending::<&'static str>)));
    let e = OpenAiEmbedder::new(OpenAiConfig { timeout: Duration::from_millis(300), ..config(&url) }).unwrap();
    let err = e.embed(&["hello"]).unwrap_err();
    assert!(matches!(err, EmbedError::Remote(_)) && err.to_string().ends_with("no answer within 300ms"), "{err}");

    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}/v1", l.local_addr().unwrap())
    };
    // With a dimension nothing is asked at startup; the call fails, later, with an error.
    let e = OpenAiEmbedder::new(config(&closed)).unwrap();
    assert!(matches!(e.embed(&["hello"]), Err(EmbedError::Remote(_))));
    // Without one the probe fails, so the sidecar does not start.
    let err = OpenAiEmbedder::new(OpenAiConfig::new(&closed, "m")).err().map(|e| e.to_string()).unwrap_or_default();
    assert!(err.contains("/v1/embeddings (model m): "), "{err}");
}

#[test]
fn a_bad_config_is_refused_before_any_request() {
    for cfg in [
        OpenAiConfig::new("ftp://example.invalid/v1", "m"),
        OpenAiConfig::new("127.0.0.1:8080/v1", "m"),
        OpenAiConfig::new("http://127.0.0.1:9/v1", " "),
        OpenAiConfig { max_batch: 0, ..config("http://127.0.0.1:9/v1") },
        OpenAiConfig { dimensions: Some(0), ..config("http://127.0.0.1:9/v1") },
    ] {
        assert!(matches!(OpenAiEmbedder::new(cfg.clone()), Err(EmbedError::Remote(_))), "{cfg:?}");
    }
}

#[test]
fn model_ids_are_file_name_safe_and_name_the_dimension() {
    assert_eq!(model_id("text-embedding-3-small", 1536), "openai-text-embedding-3-small-1536");
    assert_eq!(model_id("nomic-embed-text:latest", 768), "openai-nomic-embed-text_latest-768");
    assert_eq!(model_id("../x y", 8), "openai-.._x_y-8");
}

#[test]
fn a_missing_key_variable_is_named_in_the_error() {
    let err = key_from_env("SEMGATE_TEST_UNSET_KEY_VARIABLE").unwrap_err().to_string();
    assert!(
        err.ends_with("the environment variable SEMGATE_TEST_UNSET_KEY_VARIABLE (the API key) is unset or empty"),
        "{err}"
    );
}
