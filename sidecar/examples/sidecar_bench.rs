//! Sidecar benchmark (part of `make bench`): lookups through the sidecar's HTTP handlers
//! (in-process, no socket) with MiniLM and the WordLlama first stage, one embedding worker and
//! one model thread (RAYON_NUM_THREADS=1), all entries in one scope.
//!
//! The scope holds N synthetic request texts (`synthetic::request_text`; their index vectors
//! are pseudo-random, embedding 100k texts with MiniLM would take minutes, their first-stage
//! vectors and guard data are real) plus 400 of them stored with their real MiniLM vectors.
//! Three kinds of novel lookup:
//!   * far: questions of another domain (travel, cooking): no stored text is near;
//!   * in-domain: the eval sets' `b` texts, new to the store: near texts exist, few can pass;
//!   * candidate: a rewording of one of the 400 real entries: a hit.
//! For each: how many the first stage answered alone, p50/p99 one at a time, and throughput
//! with 16 lookups in flight. Then RSS. Numbers are printed, never asserted.
//! Run: RAYON_NUM_THREADS=1 cargo run --release -p semgate-sidecar --features local-model \
//!        --example sidecar_bench -- MINILM_DIR WORDLLAMA_DIR [ENTRIES...]

use axum::body::Body;
use axum::http::Request;
use semgate_sidecar::embed::local::LocalBert;
use semgate_sidecar::embed::wordllama::WordLlama;
use semgate_sidecar::embed::Embedder;
use semgate_sidecar::index::{FlatIndex, Record, VectorStore};
use semgate_sidecar::server::{router, AppState, ServerConfig};
use semgate_sidecar::stage_one::StageOne;
use semgate_sidecar::synthetic::{request_text, unit_vector};
use std::sync::Arc;
use std::time::Instant;
use tower::ServiceExt;

fn pct(v: &[f64], p: f64) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    v[((v.len() - 1) as f64 * p).round() as usize]
}

fn rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmRSS:")).and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

fn far_text(i: usize) -> String {
    const CITIES: [&str; 12] = [
        "Lisbon", "Kyoto", "Oaxaca", "Tbilisi", "Hobart", "Bergen", "Cusco", "Hanoi", "Porto", "Split", "Quebec",
        "Seville",
    ];
    const ACTS: [&str; 10] = [
        "hiking",
        "street food",
        "museums",
        "surfing",
        "wine tasting",
        "birdwatching",
        "cycling",
        "markets",
        "jazz",
        "diving",
    ];
    const FOODS: [&str; 10] = [
        "brisket",
        "salmon",
        "sourdough",
        "lentils",
        "risotto",
        "tofu",
        "duck breast",
        "chickpeas",
        "polenta",
        "scallops",
    ];
    match i % 2 {
        0 => format!("When is the best season to visit {} for {}?", CITIES[i / 2 % 12], ACTS[i / 24 % 10]),
        _ => format!("How long should I rest {} after cooking it, and why does it matter?", FOODS[i / 2 % 10]),
    }
}

fn eval_b_texts() -> Vec<String> {
    let mut out = Vec::new();
    for file in ["pairs.jsonl", "pairs_v2.jsonl"] {
        let path = format!("{}/eval/{file}", env!("CARGO_MANIFEST_DIR"));
        let Ok(text) = std::fs::read_to_string(path) else { continue };
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(line) {
                out.push(v["b"].as_str().unwrap_or("").to_string());
            }
        }
    }
    out
}

/// (hit, ms, answered by the first stage alone: a miss with no score).
async fn lookup(app: &axum::Router, text: &str) -> (bool, f64, bool) {
    let body = serde_json::json!({"scope": "bench", "text": text, "deadline_ms": 1000}).to_string();
    let req = Request::builder()
        .method("POST")
        .uri("/v1/lookup")
        .header("content-type", "application/json")
        .body(Body::from(body))
        .expect("request");
    let t = Instant::now();
    let resp = app.clone().oneshot(req).await.expect("lookup");
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20).await.expect("body");
    let ms = t.elapsed().as_secs_f64() * 1e3;
    let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
    (v["hit"] == true, ms, v["hit"] == false && v["score"].as_f64() == Some(0.0) && v.get("shed").is_none())
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let mut args = std::env::args().skip(1);
    let mini_dir = args.next().unwrap_or_else(|| ".cache/models/all-MiniLM-L6-v2".into());
    let wl_dir = args.next().unwrap_or_else(|| ".cache/models/wordllama-l2-supercat".into());
    let sizes: Vec<usize> = args.filter_map(|a| a.parse().ok()).collect();
    let sizes = if sizes.is_empty() { vec![100_000] } else { sizes };
    let mini: Arc<dyn Embedder> =
        Arc::new(LocalBert::load(std::path::Path::new(&mini_dir)).expect("MiniLM (make model)"));
    let wl: Arc<dyn Embedder> =
        Arc::new(WordLlama::load(std::path::Path::new(&wl_dir)).expect("WordLlama (make model)"));
    let real: Vec<String> = (0..400).map(|i| request_text(1_000_003 + i * 13)).collect();
    let real_vectors: Vec<Vec<f32>> = real
        .chunks(32)
        .flat_map(|c| {
            let refs: Vec<&str> = c.iter().map(String::as_str).collect();
            mini.embed(&refs).expect("embed")
        })
        .collect();
    let candidates: Vec<String> = real.iter().map(|t| format!("Hi, quick question: {t} Thanks!")).collect();
    let far: Vec<String> = (0..240).map(far_text).collect();
    let in_domain: Vec<String> = eval_b_texts().into_iter().step_by(3).take(300).collect();
    println!("## Sidecar lookups (one embedding worker, RAYON_NUM_THREADS=1, MiniLM + WordLlama first stage)\n");
    println!(
        "| entries in the scope | lookups | answered by the first stage alone: count, p50, p99 | the others (model): p50, p99 | hits | throughput (16 in flight) | RSS |"
    );
    println!("|---:|---|---:|---:|---:|---:|---:|");
    for n in sizes {
        let started = Instant::now();
        let config = ServerConfig { embed_workers: 1, ..ServerConfig::default() };
        let index = Arc::new(FlatIndex::in_memory(mini.dim(), n + real.len() + 1));
        let s1 = Arc::new(StageOne::new(config.stage_one.clone(), wl.clone(), n + real.len() + 1));
        let response =
            br#"{"status":200,"headers":[["content-type","application/json"]],"body_b64":"e30=","stream":false}"#;
        let add = |i: usize, text: String, vector: Vec<f32>| {
            s1.insert(&config.guard, "bench", &text, u64::MAX);
            let record = Record {
                id: i as u64,
                namespace: "bench".into(),
                text,
                response: response.to_vec(),
                vector,
                created_ms: 0,
                expires_ms: u64::MAX,
            };
            index.insert(record).expect("insert");
        };
        for i in 0..n {
            add(i, request_text(i), unit_vector(i as u64 + 1, 384));
        }
        for (k, (t, v)) in real.iter().zip(&real_vectors).enumerate() {
            add(n + k, t.clone(), v.clone());
        }
        let fill_s = started.elapsed().as_secs_f64();
        let state = AppState::with_options(config, mini.clone(), index.clone(), None, Some(s1.clone()));
        let app = router(state.clone());
        for (name, texts) in
            [("far (other domain)", &far), ("in-domain, new", &in_domain), ("candidate (rewording)", &candidates)]
        {
            let (mut first, mut model, mut hits) = (Vec::new(), Vec::new(), 0);
            for t in texts.iter() {
                let (hit, took, alone) = lookup(&app, t).await;
                if alone {
                    first.push(took)
                } else {
                    model.push(took)
                }
                hits += usize::from(hit);
            }
            let q = |v: &[f64], p: f64| if v.is_empty() { "-".to_string() } else { format!("{:.2} ms", pct(v, p)) };
            // Throughput with 16 lookups in flight (the queue batches what waits).
            let t = Instant::now();
            let mut set = tokio::task::JoinSet::new();
            let mut next = texts.iter().cycle().take(texts.len().min(400));
            for _ in 0..16 {
                if let Some(text) = next.next() {
                    let (app, text) = (app.clone(), format!("{text} "));
                    set.spawn(async move { lookup(&app, &text).await });
                }
            }
            let mut done = 0usize;
            while set.join_next().await.is_some() {
                done += 1;
                if let Some(text) = next.next() {
                    let (app, text) = (app.clone(), format!("{text}  "));
                    set.spawn(async move { lookup(&app, &text).await });
                }
            }
            let per_s = done as f64 / t.elapsed().as_secs_f64();
            println!(
                "| {n} | {name} ({}) | {}, {}, {} | {}, {} | {hits} | {per_s:.0}/s | {:.0} MB |",
                texts.len(),
                first.len(),
                q(&first, 0.5),
                q(&first, 0.99),
                q(&model, 0.5),
                q(&model, 0.99),
                rss_mb()
            );
        }
        eprintln!("({n} entries filled in {fill_s:.1} s)");
        drop(app);
    }
    println!("\nA lookup the first stage answers alone costs the WordLlama embedding and one int8 scan of the scope;");
    println!("any other runs MiniLM (queued, batched) and the exact search. Throughput is on one embedding worker.");
}
