//! Native timing of the core's per-request work (no Envoy): what a hit or a miss costs the
//! filter before any host call. Prints ns per operation; run with `cargo bench --bench core`.

use semgate::core::config::Config;
use semgate::core::entry::{BodyKind, CachedResponse, Entry};
use semgate::core::gateway::{admit, plan, HeadDecision, ProviderKeys, RequestHead, ResponseTee};
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
    let keys = ProviderKeys::new();
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
        black_box(plan(&config, &keys, &admitted, black_box(body.as_bytes())).expect("plan"));
    });
    let answer = br#"{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"gpt-4o-mini","choices":[{"index":0,"message":{"role":"assistant","content":"A gateway caches answers so you do not pay twice for the same question."},"finish_reason":"stop"}],"usage":{"prompt_tokens":500,"completion_tokens":16,"total_tokens":516}}"#;
    split(&body);
    time("response tee + validate (JSON)", 200_000, || {
        let mut t = ResponseTee::start(200, Some("application/json"), None, 1 << 20).expect("tee");
        t.push(black_box(answer));
        black_box(t.finish().expect("finish"));
    });
    let p = plan(&config, &keys, &admitted, body.as_bytes()).expect("plan");
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
    time("entry encode", 500_000, || {
        black_box(entry.encode());
    });
    time("entry decode", 500_000, || {
        black_box(Entry::decode(black_box(&bytes)).expect("decode"));
    });
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
