//! Unit tests of `core::budget::charge`: the request path's governance decisions.

use super::*;
use crate::core::budget::ledger::{UsageBook, BOOK_KEY};
use crate::core::budget::virtual_keys::GovernanceConfig;
use crate::core::store::tests::MemKv;
use serde_json::json;

const NOW: u64 = 1_795_996_800_000; // 2026-11-30T00:00Z

/// This thread's VM book starts empty (tests share a thread when run as Wasm).
fn fresh_book() {
    crate::core::budget::ledger::flush_local(&MemKv::default()).unwrap();
}

fn gov(extra: &str) -> Governance {
    fresh_book();
    let cfg = format!(
        r#"{{"virtual_keys":[{{"id":"cap","key_sha256":"{}","team":"t","models":["gpt-4o-mini"],
            "budget":{{"usd":0.01,"period":"daily"}}{extra}}}]}}"#,
        "a".repeat(64)
    );
    let mut g = GovernanceConfig::parse(cfg.as_bytes()).unwrap();
    g.ledger = true;
    g
}

fn account() -> Account {
    Account { key_id: "cap".into(), customer: None }
}

fn request(max_tokens: u64) -> Value {
    json!({"model":"gpt-4o-mini","messages":[{"role":"user","content":"x".repeat(400)}],"max_tokens":max_tokens})
}

#[test]
fn a_key_may_use_only_its_models() {
    let g = gov("");
    assert!(authorize(&g, &account(), "openai", "gpt-4o-mini").unwrap().is_some());
    let e = authorize(&g, &account(), "openai", "gpt-4o").unwrap_err();
    assert_eq!(e.status(), 403);
}

#[test]
fn reservations_refuse_at_the_budget_and_settle_to_the_real_cost() {
    let g = gov("");
    let kv = MemKv::default();
    let price = authorize(&g, &account(), "openai", "gpt-4o-mini").unwrap();
    // gpt-4o-mini: $0.15 / $0.60 per 1M. 100 input + 4 framing tokens, 1000 output: ~$0.000616.
    let mut admitted = Vec::new();
    loop {
        match reserve(&g, &kv, &account(), &request(1000), "openai", "gpt-4o-mini", price, NOW) {
            Ok(Some(c)) => admitted.push(c),
            Ok(None) => panic!("a budgeted key always gets a charge"),
            Err(e) => {
                assert_eq!(e.status(), 429);
                let body: Value = serde_json::from_slice(&e.to_json()).unwrap();
                assert_eq!(body["error"]["type"], "budget_exceeded");
                assert!(e.headers().iter().any(|(k, v)| *k == "retry-after" && v == "1"), "in-flight room: retry soon");
                break;
            }
        }
    }
    let est = admitted[0].estimate_micros;
    assert!(est > 0);
    assert_eq!(admitted.len() as u64, 10_000 / est, "admitted exactly while spent + reserved fit");
    // Settle every one at a tenth of its output: room comes back for more.
    let usage = TokenUsage { input: 104, output: 100, ..Default::default() };
    let mut spent = 0;
    for c in &mut admitted {
        spent += c.settle(&g, &kv, Some(usage), None, None, NOW).unwrap().cost_micros;
        assert!(c.settle(&g, &kv, Some(usage), None, None, NOW).is_none(), "settled once");
    }
    assert_eq!(spent, admitted.len() as u64 * price.unwrap().cost(&usage));
    assert!(reserve(&g, &kv, &account(), &request(1000), "openai", "gpt-4o-mini", price, NOW).is_ok());
    // The book holds what the ledger will be told, once the root moved this VM's rows.
    crate::core::budget::ledger::flush_local(&kv).unwrap();
    let book = UsageBook::decode(&kv.get(BOOK_KEY).unwrap().0);
    assert_eq!(book.unsynced.len(), 1);
    assert_eq!(book.unsynced[0].spent_micros, spent);
    assert_eq!(book.unsynced[0].requests, admitted.len() as u64);
    assert_eq!(book.unsynced[0].period, "2026-11-30");
}

#[test]
fn a_release_gives_the_room_back_and_a_cut_stream_is_charged_its_reservation() {
    let g = gov("");
    let kv = MemKv::default();
    let price = authorize(&g, &account(), "openai", "gpt-4o-mini").unwrap();
    let mut a = reserve(&g, &kv, &account(), &request(1000), "openai", "gpt-4o-mini", price, NOW).unwrap().unwrap();
    let before = a.remaining(&kv, NOW).unwrap();
    a.release(&kv, NOW);
    assert_eq!(a.remaining(&kv, NOW).unwrap(), before + a.estimate_micros);
    let mut b = reserve(&g, &kv, &account(), &request(1000), "openai", "gpt-4o-mini", price, NOW).unwrap().unwrap();
    let settled = b.settle(&g, &kv, None, None, None, NOW).unwrap();
    assert_eq!(settled.cost_micros, b.estimate_micros);
}

#[test]
fn rpm_and_tpm_refuse_with_openai_rate_limit_headers() {
    let g = gov(r#","rpm":2,"tpm":1500"#);
    let kv = MemKv::default();
    assert!(take_request(&g, &kv, &account(), NOW).unwrap().is_some());
    assert!(take_request(&g, &kv, &account(), NOW).unwrap().is_some());
    let e = take_request(&g, &kv, &account(), NOW).unwrap_err();
    assert_eq!(e.status(), 429);
    let names: Vec<_> = e.headers().iter().map(|(k, _)| *k).collect();
    assert!(names.contains(&"x-ratelimit-remaining-requests") && names.contains(&"retry-after"), "{names:?}");
    // 104 input + 1000 output fits 1500 once; a second does not until it is corrected.
    let price = authorize(&g, &account(), "openai", "gpt-4o-mini").unwrap();
    let mut a = reserve(&g, &kv, &account(), &request(1000), "openai", "gpt-4o-mini", price, NOW).unwrap().unwrap();
    let e = reserve(&g, &kv, &account(), &request(1000), "openai", "gpt-4o-mini", price, NOW).unwrap_err();
    assert!(matches!(e, GatewayError::RateLimited { kind: "tokens", .. }), "{e:?}");
    a.settle(&g, &kv, Some(TokenUsage { input: 104, output: 10, ..Default::default() }), None, None, NOW);
    assert!(reserve(&g, &kv, &account(), &request(1000), "openai", "gpt-4o-mini", price, NOW).is_ok());
}

#[test]
fn a_cache_hit_is_free_and_records_what_it_saved() {
    let g = gov("");
    let kv = MemKv::default();
    let body = br#"{"model":"gpt-4o-mini","choices":[],"usage":{"prompt_tokens":1000000,"completion_tokens":0}}"#;
    let cached = CachedResponse { kind: BodyKind::Json, content_type: "application/json".into(), chunks: vec![body.to_vec()] };
    assert_eq!(saving(&g, &cached), Some(150_000));
    record_hit(&g, &account(), saving(&g, &cached), NOW);
    crate::core::budget::ledger::flush_local(&kv).unwrap();
    let book = UsageBook::decode(&kv.get(BOOK_KEY).unwrap().0);
    assert_eq!((book.unsynced[0].spent_micros, book.unsynced[0].saved_micros), (0, 150_000));
    assert_eq!(usd(1_234_567), "1.234567");
}

#[test]
fn the_meter_reads_stream_usage_and_strips_the_chunk_the_client_did_not_ask_for() {
    let stream = concat!(
        "data: {\"model\":\"gpt-4o-mini\",\"choices\":[{\"delta\":{\"content\":\"hi\"}}]}\n\n",
        "data: {\"model\":\"gpt-4o-mini\",\"choices\":[],\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":2}}\n\n",
        "data: [DONE]\n\n"
    )
    .as_bytes();
    for strip in [false, true] {
        let mut m = Meter::for_response(Some("text/event-stream"), strip);
        let mut sent = Vec::new();
        // Split mid-event: the cut must not depend on where the chunks break.
        for (i, piece) in stream.chunks(17).enumerate() {
            let last = (i + 1) * 17 >= stream.len();
            match m.push(piece, last) {
                Some(out) => sent.extend_from_slice(&out),
                None => sent.extend_from_slice(piece),
            }
        }
        let text = String::from_utf8(sent).unwrap();
        assert_eq!(text.contains("usage"), !strip, "{text}");
        assert!(text.ends_with("data: [DONE]\n\n"));
        let (usage, model) = m.usage();
        assert_eq!(usage.unwrap().output, 2);
        assert_eq!(model.as_deref(), Some("gpt-4o-mini"));
    }
}

#[test]
fn json_usage_reads_the_usage_object_and_the_model_without_parsing_the_answer() {
    let body = br#"{"id":"x","model":"gpt-4o-mini","choices":[{"message":{"content":"say \"usage\": {\"prompt_tokens\": 9}"}}],
        "usage":{"prompt_tokens":12,"completion_tokens":3,"prompt_tokens_details":{"cached_tokens":2}}}"#;
    let (u, m) = json_usage(body);
    assert_eq!(m.as_deref(), Some("gpt-4o-mini"));
    assert_eq!(u, Some(TokenUsage { input: 10, output: 3, cached_input: 2, cache_write: 0 }));
    let gemini = br#"{"candidates":[],"usageMetadata":{"promptTokenCount":4,"candidatesTokenCount":5},"modelVersion":"gemini-1.5-pro"}"#;
    assert_eq!(json_usage(gemini).0.map(|u| u.output), Some(5));
    for bad in [&b"{"[..], b"", b"{\"usage\": 5}", b"{\"usage\": {\"prompt_tokens\": 1", b"[1,2]"] {
        assert_eq!(json_usage(bad).0, None, "{:?}", String::from_utf8_lossy(bad));
    }
}
