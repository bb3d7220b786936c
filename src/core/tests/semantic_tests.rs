//! Unit tests of the semantic layer's text, scope and sidecar bodies.

use super::*;
use crate::core::request::parse_chat_request;
use serde_json::json;

fn req(body: &str) -> ChatRequest {
    parse_chat_request(body.as_bytes()).unwrap()
}

fn q(body: &str) -> Option<SemanticQuery> {
    semantic_query(&req(body), "t1", None, &SemanticConfig::default())
}

#[test]
fn last_user_text_is_embedded_and_the_rest_scopes_it() {
    let a = q(r#"{"model":"m","messages":[{"role":"system","content":"be brief"},{"role":"user","content":"How do I get a refund?"}]}"#).unwrap();
    assert_eq!(a.text, "How do I get a refund?");
    let b = q(r#"{"model":"m","messages":[{"role":"system","content":"be brief"},{"role":"user","content":"What is your return policy?"}]}"#).unwrap();
    assert_eq!(a.scope, b.scope, "only the last user text differs: same scope");
    // Another system prompt, model, temperature or stream flag is another scope.
    for other in [
        r#"{"model":"m","messages":[{"role":"system","content":"be verbose"},{"role":"user","content":"x"}]}"#,
        r#"{"model":"m2","messages":[{"role":"system","content":"be brief"},{"role":"user","content":"x"}]}"#,
        r#"{"model":"m","temperature":0.2,"messages":[{"role":"system","content":"be brief"},{"role":"user","content":"x"}]}"#,
        r#"{"model":"m","stream":true,"messages":[{"role":"system","content":"be brief"},{"role":"user","content":"x"}]}"#,
    ] {
        assert_ne!(q(other).unwrap().scope, a.scope, "{other}");
    }
    // Another tenant or provider is another scope.
    let r = req(r#"{"model":"m","messages":[{"role":"user","content":"x"}]}"#);
    let cfg = SemanticConfig::default();
    assert_ne!(
        semantic_query(&r, "t1", None, &cfg).unwrap().scope,
        semantic_query(&r, "t2", None, &cfg).unwrap().scope
    );
    assert_ne!(
        semantic_query(&r, "t1", None, &cfg).unwrap().scope,
        semantic_query(&r, "t1", Some("openai"), &cfg).unwrap().scope
    );
}

#[test]
fn cache_by_model_false_lets_models_share() {
    let cfg = SemanticConfig { cache_by_model: false, ..SemanticConfig::default() };
    let a =
        semantic_query(&req(r#"{"model":"m1","messages":[{"role":"user","content":"x"}]}"#), "t", None, &cfg).unwrap();
    let b =
        semantic_query(&req(r#"{"model":"m2","messages":[{"role":"user","content":"y"}]}"#), "t", None, &cfg).unwrap();
    assert_eq!(a.scope, b.scope);
}

#[test]
fn image_parts_stay_in_the_scope() {
    let img = |byte: u8| {
        let data = base64::engine::general_purpose::STANDARD.encode(vec![byte; 100]);
        format!(
            r#"{{"model":"m","messages":[{{"role":"user","content":[{{"type":"text","text":"caption this"}},{{"type":"image_url","image_url":{{"url":"data:image/png;base64,{data}"}}}}]}}]}}"#
        )
    };
    let (a, b) = (q(&img(1)).unwrap(), q(&img(2)).unwrap());
    assert_eq!(a.text, "caption this");
    assert_ne!(a.scope, b.scope, "another image is another question");
}

#[test]
fn nothing_to_embed_means_no_query() {
    assert!(
        q(r#"{"model":"m","messages":[{"role":"user","content":"x"},{"role":"assistant","content":"y"}]}"#).is_none()
    );
    assert!(q(r#"{"model":"m","messages":[{"role":"user","content":"  "}]}"#).is_none());
}

#[test]
fn conversation_mode_embeds_every_turn() {
    let cfg = SemanticConfig { text: TextMode::Conversation, ..SemanticConfig::default() };
    let r = req(r#"{"model":"m","messages":[{"role":"system","content":"be brief"},{"role":"user","content":"hi"}]}"#);
    assert_eq!(semantic_query(&r, "t", None, &cfg).unwrap().text, "system: be brief\nuser: hi");
}

#[test]
fn store_and_lookup_bodies_round_trip() {
    let query = SemanticQuery { scope: "s".into(), text: "hello".into() };
    let resp = CachedResponse {
        kind: BodyKind::Sse,
        content_type: "text/event-stream".into(),
        chunks: vec![b"data: 1\n\n".to_vec(), b"data: [DONE]\n\n".to_vec()],
    };
    let stored: Value = serde_json::from_slice(&store_body(&query, &CacheKey([7; 32]), &resp, 60)).unwrap();
    assert_eq!(stored["ttl_s"], 60);
    assert_eq!(stored["key"].as_str().unwrap().len(), 64);
    let answer = json!({"hit": true, "score": 0.93, "entry_id": 5, "response": stored["response"]}).to_string();
    let hit = parse_lookup(answer.as_bytes(), true).unwrap().unwrap();
    assert_eq!(hit.tier, HitTier::Semantic);
    assert_eq!(hit.response.body(), resp.body());
    assert_eq!(hit.response.kind, BodyKind::Sse);
    assert!((hit.score - 0.93).abs() < 1e-9);
    // A streamed entry never answers a JSON request.
    assert_eq!(parse_lookup(answer.as_bytes(), false).unwrap(), None);
    assert_eq!(parse_lookup(br#"{"hit":false,"score":0.2}"#, false).unwrap(), None);
    assert!(parse_lookup(b"<html>", false).is_err());
    assert!(parse_lookup(br#"{"hit":true}"#, false).is_err());
    // An entry whose content type the gateway never produces is not replayed.
    for ct in ["application/json\r\nset-cookie: a=b", "text/html", "application/json; x=y"] {
        let bad = json!({"hit": true, "score": 0.99, "response": {"status": 200, "headers": [["content-type", ct]],
            "body_b64": "e30=", "stream": false}});
        assert_eq!(parse_lookup(bad.to_string().as_bytes(), false), Err(LookupError::UnsafeEntry), "{ct:?}");
    }
    let key = CacheKey([7; 32]);
    let lookup: Value = serde_json::from_slice(&lookup_body(
        &query,
        &key,
        &SemanticConfig { shared_exact: false, ..SemanticConfig::default() },
        Some(0.9),
    ))
    .unwrap();
    assert_eq!(lookup, json!({"scope": "s", "text": "hello", "guard": true, "threshold": 0.9, "deadline_ms": 45}));
    // The sidecar's budget is the callout's timeout less a margin for the wire.
    assert_eq!([100, 50, 10, 1].map(lookup_deadline_ms), [95, 45, 8, 1]);
    // An overloaded sidecar answers a miss marked as shed.
    assert_eq!(parse_lookup(br#"{"hit":false,"score":0.0,"shed":true}"#, false).unwrap(), None);
    // With the shared exact tier (the default) the key goes along, and an exact answer says so.
    let lookup: Value = serde_json::from_slice(&lookup_body(&query, &key, &SemanticConfig::default(), None)).unwrap();
    assert_eq!(lookup["key"], json!(key.hex()));
    let answer = json!({"hit": true, "tier": "exact", "score": 1.0, "created_ms": 5, "expires_ms": 9,
        "response": stored["response"]});
    let hit = parse_lookup(answer.to_string().as_bytes(), true).unwrap().unwrap();
    assert_eq!((hit.tier, hit.created_ms, hit.expires_ms), (HitTier::Exact, Some(5), Some(9)));
}
