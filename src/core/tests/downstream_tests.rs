//! Unit tests of the downstream decisions, with an in-memory shared-data map and a clock
//! passed in.

use super::*;
use crate::core::cache::store::tests::MemKv;
use crate::core::tally::Effects;
use crate::core::wire::headermap;

const NOW: u64 = 1_000_000;

fn gw(extra: &str) -> Gateway {
    let raw = format!(
        r#"{{"auth":{{"keys":[{{"key":"sk-a","tenant":"t1"}}]}},
            "providers":{{"openai":{{"kind":"openai","keys":[{{"env":"OPENAI_API_KEY"}}]}}}},
            "models":{{"*":["openai/*"]}}{extra}}}"#
    );
    Gateway::load(raw.as_bytes(), |_| None).unwrap()
}

fn headers(extra: &[(&str, &str)]) -> HeaderMap {
    let mut pairs =
        vec![(":method", "POST"), (":path", "/v1/chat/completions"), ("authorization", "Bearer sk-a"), ("x-foo", "1")];
    pairs.extend_from_slice(extra);
    HeaderMap(headermap::encode(&pairs))
}

fn held(gw: &Gateway, extra: &[(&str, &str)]) -> Held {
    match on_request_headers(gw, headers(extra), None, false, &mut Effects::default()) {
        HeadersDecision::ReadBody(h) => h,
        other => panic!("not admitted: {other:?}"),
    }
}

const BODY: &[u8] = br#"{"model":"gpt-4o-mini","temperature":0,"messages":[{"role":"user","content":"hi"}]}"#;
const ANSWER: &[u8] = br#"{"choices":[{"message":{"role":"assistant","content":"hello"}}]}"#;

/// Forward a request and complete its response, as the host would: the entry lands in `kv`.
fn miss_then_store(gw: &Gateway, kv: &MemKv, extra: &[(&str, &str)], t: &mut Effects) -> Forward {
    let BodyDecision::Forward(f) = on_complete_body(gw, kv, NOW, held(gw, extra), BODY.to_vec(), t) else {
        panic!("expected a forward")
    };
    let mut f = f;
    let head = HeaderMap(headermap::encode(&[(":status", "200"), ("content-type", "application/json")]));
    assert!(f.forwarded.wants_response_head());
    f.forwarded.on_response_headers(gw, &head, false, t);
    assert!(f.forwarded.wants_response_body());
    assert!(f.forwarded.on_response_body(gw, kv, NOW, ANSWER, true, t).store.is_none(), "no sidecar configured");
    f
}

#[test]
fn headers_admit_relay_or_reject() {
    let g = gw(r#","passthrough":[{"path_prefix":"/v1/models","provider":"openai"}]"#);
    let mut t = Effects::default();
    let h = held(&g, &[]);
    assert_eq!(h.admitted.tenant, "t1");
    let relay =
        HeaderMap(headermap::encode(&[(":method", "GET"), (":path", "/v1/models"), ("authorization", "Bearer sk-a")]));
    let HeadersDecision::Relay(edit) = on_request_headers(&g, relay, None, true, &mut t) else { panic!() };
    assert_eq!(
        edit.set,
        vec![("x-semgate-cluster", "provider_openai".to_string()), (RELAY_HEADER, "1".to_string())],
        "the upstream role sets the relay's key and authority and keeps its path"
    );
    assert_eq!(edit.remove, vec!["authorization".to_string()], "the client's key never goes upstream");
    assert_eq!(t.get(Counter::Relayed), 1);
    let no_key = HeaderMap(headermap::encode(&[(":method", "POST"), (":path", "/v1/chat/completions")]));
    assert_eq!(
        on_request_headers(&g, no_key, None, false, &mut t),
        HeadersDecision::Reject(GatewayError::Unauthorized)
    );
    let HeadersDecision::Reject(e) = on_request_headers(&g, headers(&[]), None, true, &mut t) else { panic!() };
    assert_eq!(e.status(), 400, "a chat request with no body");
}

#[test]
fn body_chunks_wait_complete_or_are_too_large() {
    let g = gw(r#","max_body_bytes":100"#);
    assert_eq!(on_request_body(&g, 10, false), BodyProgress::Wait);
    assert_eq!(on_request_body(&g, 10, true), BodyProgress::Complete);
    assert!(matches!(on_request_body(&g, 101, false), BodyProgress::Reject(GatewayError::BodyTooLarge { .. })));
}

#[test]
fn a_miss_forwards_with_the_plan_and_drops_client_headers() {
    let g = gw("");
    let (kv, mut t) = (MemKv::default(), Effects::default());
    let f = miss_then_store(&g, &kv, &[], &mut t);
    assert_eq!(f.counter, Counter::Misses);
    assert_eq!(f.edit.remove, vec!["authorization".to_string(), "x-foo".to_string()]);
    assert_eq!(
        f.edit.set,
        vec![("x-semgate-cluster", "provider_openai".to_string())],
        "the rest is the upstream role's"
    );
    let marks = f.forwarded.response_marks();
    assert_eq!(marks[0], ("x-semgate-cache", "miss".into()));
    assert_eq!(marks[1].0, "x-semgate-key", "the upstream role names the provider");
    assert_eq!(t.get(Counter::Stores), 1);
    assert!(t.gauges.contains_key(&Gauge::CacheBytes));
}

#[test]
fn an_exact_hit_replies_then_remembers_the_bytes_for_the_fast_path() {
    let g = gw("");
    let (kv, mut t) = (MemKv::default(), Effects::default());
    miss_then_store(&g, &kv, &[], &mut t);
    let later = NOW + 5_000;
    let BodyDecision::Reply(r) = on_complete_body(&g, &kv, later, held(&g, &[]), BODY.to_vec(), &mut t) else {
        panic!("expected an exact hit")
    };
    assert_eq!(r.reply.status, 200);
    assert_eq!(r.reply.body, ANSWER);
    assert!(r.reply.headers.contains(&("x-semgate-cache", "hit-exact".into())));
    assert!(r.reply.headers.contains(&("age", "5".into())));
    assert!(after_reply(&g, &kv, later, r, Ok(()), &mut t).is_none());
    assert_eq!((t.get(Counter::HitsExact), t.get(Counter::FastRecords)), (1, 1));
    // The same bytes again: the fast path answers before any parse.
    let BodyDecision::Reply(r) = on_complete_body(&g, &kv, later, held(&g, &[]), BODY.to_vec(), &mut t) else {
        panic!("expected a fast hit")
    };
    assert!(after_reply(&g, &kv, later, r, Ok(()), &mut t).is_none());
    assert_eq!((t.get(Counter::HitsExact), t.get(Counter::HitsFast)), (2, 1));
}

#[test]
fn a_fast_path_record_never_outlives_the_readers_ttl() {
    // Stored under a one-hour TTL; this path's policy allows 10 s.
    let g = gw(r#","policies":[{"match":{"path_prefix":"/v1"},"cache":{"ttl_s":10}}]"#);
    let long = gw("");
    let (kv, mut t) = (MemKv::default(), Effects::default());
    miss_then_store(&long, &kv, &[], &mut t);
    let at = NOW + 2_000;
    let BodyDecision::Reply(r) = on_complete_body(&g, &kv, at, held(&g, &[]), BODY.to_vec(), &mut t) else { panic!() };
    after_reply(&g, &kv, at, r, Ok(()), &mut t);
    assert_eq!(t.get(Counter::FastRecords), 1);
    // 11 s after the entry was made: the record is past the reader's TTL, the entry too.
    let late = NOW + 11_000;
    let d = on_complete_body(&g, &kv, late, held(&g, &[]), BODY.to_vec(), &mut t);
    assert!(matches!(d, BodyDecision::Forward(_)), "{d:?}");
    assert_eq!(t.get(Counter::Expired), 1);
}

#[test]
fn a_refused_reply_goes_on_to_the_next_stage() {
    let g = gw("");
    let (kv, mut t) = (MemKv::default(), Effects::default());
    miss_then_store(&g, &kv, &[], &mut t);
    let BodyDecision::Reply(r) = on_complete_body(&g, &kv, NOW, held(&g, &[]), BODY.to_vec(), &mut t) else { panic!() };
    let next = after_reply(&g, &kv, NOW, r, Err(1), &mut t).expect("forwarded instead");
    assert!(matches!(next, BodyDecision::Forward(_)));
    assert_eq!((t.get(Counter::HostErrors), t.get(Counter::HitsExact), t.get(Counter::FastRecords)), (1, 0, 0));
}

#[test]
fn client_directives_bypass_or_refresh() {
    let g = gw("");
    let (kv, mut t) = (MemKv::default(), Effects::default());
    miss_then_store(&g, &kv, &[], &mut t);
    let BodyDecision::Forward(f) =
        on_complete_body(&g, &kv, NOW, held(&g, &[("cache-control", "no-store")]), BODY.to_vec(), &mut t)
    else {
        panic!()
    };
    assert_eq!(f.counter, Counter::Bypasses);
    assert!(!f.forwarded.wants_response_head());
    assert!(f.forwarded.response_marks().contains(&("x-semgate-cache-reason", "client".into())));
    // A refresh stores the new answer and the fast-path record of its bytes follows it.
    let f = miss_then_store(&g, &kv, &[("cache-control", "no-cache")], &mut t);
    assert_eq!(f.counter, Counter::Bypasses);
    assert_eq!((t.get(Counter::Stores), t.get(Counter::FastRecords)), (2, 1));
}

#[test]
fn unparseable_bodies_are_rejected() {
    let g = gw("");
    let d = on_complete_body(&g, &MemKv::default(), NOW, held(&g, &[]), b"{".to_vec(), &mut Effects::default());
    assert!(matches!(d, BodyDecision::Reject(GatewayError::InvalidJson(_))), "{d:?}");
}

fn semantic_gw() -> Gateway {
    gw(r#","semantic":{"enabled":true,"timeout_ms":40}"#)
}

fn ask(g: &Gateway, kv: &MemKv, t: &mut Effects) -> Box<Pending> {
    match on_complete_body(g, kv, NOW, held(g, &[]), BODY.to_vec(), t) {
        BodyDecision::AskSidecar(c, p) => {
            assert_eq!(
                (c.kind, c.path, c.cluster, c.timeout_ms),
                (CalloutKind::Lookup, "/v1/lookup", "semgate_sidecar", 40)
            );
            let v: serde_json::Value = serde_json::from_slice(&c.body).unwrap();
            assert_eq!(v["text"], "hi");
            p
        }
        other => panic!("expected a lookup: {other:?}"),
    }
}

#[test]
fn a_semantic_hit_replies_and_a_miss_or_a_timeout_forwards() {
    let g = semantic_gw();
    let (kv, mut t) = (MemKv::default(), Effects::default());
    let hit = serde_json::json!({"hit": true, "tier": "semantic", "score": 0.91, "created_ms": NOW - 1000,
        "response": {"status": 200, "headers": [["content-type", "application/json"]], "body_b64": "e30=", "stream": false}});
    let body = Some(Ok(hit.to_string().into_bytes()));
    let BodyDecision::Reply(r) = on_lookup_answer(&g, &kv, NOW + 20, ask(&g, &kv, &mut t), Some("200"), body, &mut t) else {
        panic!()
    };
    assert!(r.reply.headers.contains(&("x-semgate-similarity", "0.9100".into())));
    assert_eq!(r.reply.body, b"{}");
    assert!(after_reply(&g, &kv, NOW, r, Ok(()), &mut t).is_none());
    assert_eq!(t.get(Counter::HitsSemantic), 1);
    assert_eq!(t.gauges.get(&Gauge::LookupMs), Some(&20));

    let miss = Some(Ok(br#"{"hit":false,"score":0.1}"#.to_vec()));
    let kv = MemKv::default();
    let d = on_lookup_answer(&g, &kv, NOW, ask(&g, &kv, &mut t), Some("200"), miss, &mut t);
    let BodyDecision::Forward(f) = d else { panic!() };
    assert_eq!(t.get(Counter::SemanticMisses), 1);
    // The answer is also offered to the sidecar once it is complete.
    let mut fw = f.forwarded;
    let head = HeaderMap(headermap::encode(&[(":status", "200"), ("content-type", "application/json")]));
    fw.on_response_headers(&g, &head, false, &mut t);
    let store = fw.on_response_body(&g, &kv, NOW, ANSWER, true, &mut t).store.expect("a sidecar store");
    assert_eq!((store.kind, store.path), (CalloutKind::Store, "/v1/store"));

    let kv = MemKv::default();
    let d = on_lookup_answer(&g, &kv, NOW, ask(&g, &kv, &mut t), None, None, &mut t);
    assert!(matches!(d, BodyDecision::Forward(_)));
    assert_eq!(t.get(Counter::SidecarErrors), 1);
    let d = lookup_not_sent(&g, &kv, NOW, ask(&g, &kv, &mut t), 2, &mut t);
    assert!(matches!(d, BodyDecision::Forward(_)));
    assert_eq!(t.get(Counter::SidecarErrors), 2);
}

#[test]
fn a_shared_exact_hit_is_copied_into_this_replicas_cache() {
    let g = semantic_gw();
    let (kv, mut t) = (MemKv::default(), Effects::default());
    let hit = serde_json::json!({"hit": true, "tier": "exact", "score": 1.0, "created_ms": NOW - 1000,
        "expires_ms": NOW + 60_000,
        "response": {"status": 200, "headers": [["content-type", "application/json"]], "body_b64": "e30=", "stream": false}});
    let body = Some(Ok(hit.to_string().into_bytes()));
    let BodyDecision::Reply(r) = on_lookup_answer(&g, &kv, NOW, ask(&g, &kv, &mut t), Some("200"), body, &mut t) else {
        panic!()
    };
    assert!(r.reply.headers.contains(&("x-semgate-tier", "shared".into())));
    assert!(after_reply(&g, &kv, NOW, r, Ok(()), &mut t).is_none());
    assert_eq!((t.get(Counter::HitsShared), t.get(Counter::Stores)), (1, 1));
    // The next identical request is a local exact hit.
    let d = on_complete_body(&g, &kv, NOW, held(&g, &[]), BODY.to_vec(), &mut t);
    assert!(matches!(d, BodyDecision::Reply(_)), "{d:?}");
}

#[test]
fn an_overflowing_or_truncated_response_is_not_stored() {
    let g = gw(r#","cache":{"max_entry_bytes":1024}"#);
    let (kv, mut t) = (MemKv::default(), Effects::default());
    let BodyDecision::Forward(f) = on_complete_body(&g, &kv, NOW, held(&g, &[]), BODY.to_vec(), &mut t) else {
        panic!()
    };
    let mut fw = f.forwarded;
    let head = HeaderMap(headermap::encode(&[(":status", "200"), ("content-type", "application/json")]));
    fw.on_response_headers(&g, &head, false, &mut t);
    assert!(fw.on_response_body(&g, &kv, NOW, &[b' '; 2000], false, &mut t).store.is_none());
    assert!(!fw.wants_response_body(), "over the limit: the copy is dropped");
    assert_eq!((t.get(Counter::TooLarge), t.get(Counter::Stores)), (1, 0));
    let head = HeaderMap(headermap::encode(&[(":status", "500")]));
    let BodyDecision::Forward(f) = on_complete_body(&g, &kv, NOW, held(&g, &[]), BODY.to_vec(), &mut t) else {
        panic!()
    };
    let mut fw = f.forwarded;
    fw.on_response_headers(&g, &head, false, &mut t);
    assert!(!fw.wants_response_body());
    assert_eq!(t.get(Counter::NotStored), 1);
}

#[test]
fn host_faults_are_5xx_through_the_one_renderer() {
    for f in [HostFault::NotConfigured, HostFault::BodyUnreadable, HostFault::RouteNotSet] {
        let reply = LocalReply::error(&f.error());
        assert_eq!(reply.status, 500);
        let v: serde_json::Value = serde_json::from_slice(&reply.body).unwrap();
        assert_eq!(v["error"]["type"], "server_error");
    }
}
