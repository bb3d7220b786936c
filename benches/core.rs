//! Native timing of the core's per-request work (no Envoy): what a hit or a miss costs the
//! filter before any host call. Prints ns per operation; run with `cargo bench --bench core`.

use semgate::core::cache::entry::{BodyKind, CachedResponse, Entry};
use semgate::core::cache::fastpath::{self, FastPath, FastPathLimits, RawRequest};
use semgate::core::cache::store::{SetError, SharedData};
use semgate::core::cache::tee::ResponseTee;
use semgate::core::config::Config;
use semgate::core::gateway::{admit, plan, Gateway, HeadDecision, RequestHead};
use semgate::core::wire::headermap::{self, HeaderMap};
use std::hint::black_box;
use std::time::Instant;

fn time<F: FnMut()>(name: &str, iters: u32, mut f: F) {
    for _ in 0..iters / 10 {
        f();
    }
    let t = Instant::now();
    for _ in 0..iters {
        f();
    }
    println!("{name:<40} {:>8.0} ns/op", t.elapsed().as_nanos() as f64 / iters as f64);
}

fn main() {
    let config = Config::parse(
        br#"{"auth":{"keys":[{"key":"sk-demo","tenant":"demo"}]},"providers":{"openai":{"cluster":"provider_openai"}},
            "models":[{"match":"*","provider":"openai"}]}"#,
    )
    .expect("config");
    let config = Gateway::compile(config, |_| None).expect("keys");
    let filler = "Please summarise the following paragraph about gateways and caches. ".repeat(26);
    let body = format!(
        r#"{{"model":"gpt-4o-mini","temperature":0.2,"messages":[{{"role":"system","content":"You are terse."}},{{"role":"user","content":"{filler}"}}]}}"#
    );
    println!("request body: {} bytes", body.len());
    let head = RequestHead {
        method: "POST",
        path: "/v1/chat/completions",
        authorization: Some("Bearer sk-demo"),
        ..Default::default()
    };
    let HeadDecision::ReadBody(admitted) = admit(&config, &head) else { panic!("not admitted") };
    time("admit (headers phase)", 200_000, || {
        black_box(admit(&config, black_box(&head)));
    });
    time("plan (parse, canonicalize, key)", 50_000, || {
        black_box(plan(&config, &admitted, black_box(body.as_bytes())).expect("plan"));
    });
    let answer = br#"{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"gpt-4o-mini","choices":[{"index":0,"message":{"role":"assistant","content":"A gateway caches answers so you do not pay twice for the same question."},"finish_reason":"stop"}],"usage":{"prompt_tokens":500,"completion_tokens":16,"total_tokens":516}}"#;
    split(&body);
    time("response tee + validate (JSON)", 200_000, || {
        let mut t = ResponseTee::start(200, Some("application/json"), None, 1 << 20).expect("tee");
        t.push(black_box(answer));
        black_box(t.finish().expect("finish"));
    });
    let p = plan(&config, &admitted, body.as_bytes()).expect("plan");
    let key = p.cache.store_as().expect("key").0;
    let entry = Entry {
        key,
        created_ms: 1,
        expires_ms: 2,
        response: CachedResponse {
            kind: BodyKind::Json,
            content_type: "application/json".into(),
            chunks: vec![answer.to_vec()],
        },
    };
    let bytes = entry.encode();
    fast_hit(&admitted_headers(), body.as_bytes(), &entry);
    decisions(&config, body.as_bytes(), answer);
    time("entry encode", 500_000, || {
        black_box(entry.encode());
    });
    time("entry decode", 500_000, || {
        black_box(Entry::decode(black_box(&bytes)).expect("decode"));
    });
}

/// The downstream decisions end to end, as the host calls them (shared data in memory): a
/// miss (headers, body, response headers and body stored), a canonical exact hit, a fast hit.
fn decisions(gw: &Gateway, body: &[u8], answer: &[u8]) {
    use semgate::core::downstream::{self as d, BodyDecision, HeadersDecision};
    use semgate::core::tally::Effects;
    let response_head = HeaderMap(headermap::encode(&[(":status", "200"), ("content-type", "application/json")]));
    let head = |t: &mut Effects| match d::on_request_headers(gw, admitted_headers(), None, false, t) {
        HeadersDecision::ReadBody(h) => h,
        _ => panic!("not admitted"),
    };
    time("downstream: miss (all phases, stored)", 20_000, || {
        let (kv, mut t) = (MemKv::default(), Effects::default());
        let BodyDecision::Forward(mut f) = d::on_complete_body(gw, &kv, 1, head(&mut t), body.to_vec(), &mut t) else {
            panic!("not a miss")
        };
        black_box(f.forwarded.response_marks());
        f.forwarded.on_response_headers(gw, &response_head, false, &mut t);
        black_box(f.forwarded.on_response_body(gw, &kv, 1, answer, true, &mut t));
    });
    let (kv, mut t) = (MemKv::default(), Effects::default());
    let BodyDecision::Forward(mut f) = d::on_complete_body(gw, &kv, 1, head(&mut t), body.to_vec(), &mut t) else {
        panic!("not a miss")
    };
    f.forwarded.on_response_headers(gw, &response_head, false, &mut t);
    f.forwarded.on_response_body(gw, &kv, 1, answer, true, &mut t);
    let no_fast = Gateway { fast: semgate::core::fastpath::FastPathLimits { slots: 0, ..gw.fast }, ..gw.clone() };
    time("downstream: exact hit (headers + body)", 20_000, || {
        let BodyDecision::Reply(r) = d::on_complete_body(&no_fast, &kv, 2, head(&mut t), body.to_vec(), &mut t) else {
            panic!("not a hit")
        };
        black_box(r.reply.body.len());
    });
    let BodyDecision::Reply(r) = d::on_complete_body(gw, &kv, 2, head(&mut t), body.to_vec(), &mut t) else {
        panic!("not a hit")
    };
    d::after_reply(gw, &kv, 2, r, Ok(()), &mut t);
    time("downstream: fast hit (headers + body)", 50_000, || {
        let BodyDecision::Reply(r) = d::on_complete_body(gw, &kv, 3, head(&mut t), body.to_vec(), &mut t) else {
            panic!("not a fast hit")
        };
        black_box(r.reply.body.len());
    });
}

/// The request headers wrk sends, as Envoy serializes them for the filter.
fn admitted_headers() -> HeaderMap {
    HeaderMap(headermap::encode(&[
        (":authority", "127.0.0.1:10000"),
        (":path", "/v1/chat/completions"),
        (":method", "POST"),
        (":scheme", "http"),
        ("content-length", "1954"),
        ("content-type", "application/json"),
        ("authorization", "Bearer sk-demo"),
        ("x-forwarded-proto", "http"),
        ("x-request-id", "5b0c6f0e-7f51-4d0c-9a43-0d7a4c1f3e11"),
    ]))
}

/// The filter's own work on a fast-path hit, between the host calls: read the header map,
/// admit, hash the raw request, match the record byte for byte, decode the entry.
fn fast_hit(headers: &HeaderMap, body: &[u8], entry: &Entry) {
    let kv = MemKv::default();
    let limits = FastPathLimits { slots: 1024, max_record_bytes: 16 * 1024, seed: 7 };
    let raw = RawRequest { tenant: "demo", path: "/v1/chat/completions", route: "chat", body };
    let pr = fastpath::probe(&limits, &raw);
    assert!(FastPath::new(&kv, limits).remember(&pr, &raw, entry));
    let record = kv.get(&fastpath::slot_key(pr.slot)).expect("record").0;
    time("fast hit: header map read (one pick of 8)", 200_000, || {
        black_box(black_box(headers).pick([
            ":method",
            ":path",
            "authorization",
            "",
            "content-length",
            "cache-control",
            "x-semgate-cache",
            "accept-encoding",
        ]));
    });
    time("fast hit: probe (xxh3 of the request)", 200_000, || {
        black_box(fastpath::probe(&limits, black_box(&raw)));
    });
    time("fast hit: match record (byte compare)", 200_000, || {
        black_box(fastpath::match_record(black_box(&record), &limits, &pr, &raw));
    });
    time("fast hit: lookup (probe+match+decode)", 200_000, || {
        black_box(FastPath::new(&kv, limits).lookup(&pr, black_box(&raw), 1));
    });
}

#[derive(Default)]
struct MemKv(std::cell::RefCell<std::collections::HashMap<String, (Vec<u8>, u32)>>);

impl SharedData for MemKv {
    fn get(&self, key: &str) -> Option<(Vec<u8>, u32)> {
        self.0.borrow().get(key).cloned()
    }
    fn set(&self, key: &str, value: &[u8], _cas: Option<u32>) -> Result<(), SetError> {
        self.0.borrow_mut().insert(key.to_string(), (value.to_vec(), 1));
        Ok(())
    }
}

#[allow(dead_code)]
fn split(body: &str) {
    time("  serde_json::from_slice::<Value>", 50_000, || {
        black_box(serde_json::from_slice::<serde_json::Value>(black_box(body.as_bytes())).expect("json"));
    });
    let v: serde_json::Value = serde_json::from_slice(body.as_bytes()).expect("json");
    time("  Value::to_string", 50_000, || {
        black_box(black_box(&v).to_string());
    });
    time("  Value::clone", 50_000, || {
        black_box(black_box(&v).clone());
    });
    time("  blake3 of the body", 50_000, || {
        black_box(blake3::hash(black_box(body.as_bytes())));
    });
}
