//! Sidecar benchmark (part of `make bench`): MiniLM embedding latency on one core, exact
//! search latency at 10k and 100k entries in one scope (the worst case: exact search looks
//! at every entry of the scope), a full lookup (embed + search + guard), and RSS.
//! Run: RAYON_NUM_THREADS=1 cargo run --release -p semgate-sidecar --features local-model \
//!        --example sidecar_bench -- .cache/models/all-MiniLM-L6-v2

use semgate_sidecar::embed::local::LocalBert;
use semgate_sidecar::embed::Embedder;
use semgate_sidecar::guard::GuardConfig;
use semgate_sidecar::index::{FlatIndex, Record, VectorStore};
use semgate_sidecar::synthetic::unit_vector;
use std::time::Instant;

fn pct(v: &mut [f64], p: f64) -> f64 {
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

fn main() {
    let dir = std::env::args().nth(1).unwrap_or_else(|| ".cache/models/all-MiniLM-L6-v2".into());
    let model = LocalBert::load(std::path::Path::new(&dir)).expect("model (run make model)");
    let prompts: Vec<String> = (0..200)
        .map(|i| format!("How do I return order number {i} that arrived damaged, and when will I get my refund?"))
        .collect();
    let mut embed_ms = Vec::new();
    let mut vectors = Vec::new();
    for p in &prompts {
        let t = Instant::now();
        vectors.push(model.embed(&[p.as_str()]).expect("embed").remove(0));
        embed_ms.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let embed_p50 = pct(&mut embed_ms.clone(), 0.5);
    let per_sec = 1e3 / (embed_ms.iter().sum::<f64>() / embed_ms.len() as f64);
    println!("## Sidecar (one core: RAYON_NUM_THREADS=1)\n");
    println!(
        "embedding, one short prompt per call: p50 {embed_p50:.2} ms, p99 {:.2} ms, {per_sec:.0} embeddings/s\n",
        pct(&mut embed_ms, 0.99)
    );
    println!("| entries in the scope | search p50 | search p99 | lookup p50 (embed+search+guard) | lookup p99 | RSS |");
    println!("|---:|---:|---:|---:|---:|---:|");
    let guard = GuardConfig::default();
    for n in [10_000usize, 100_000] {
        let index = FlatIndex::in_memory(model.dim(), n + 1);
        for i in 0..n {
            index
                .insert(Record {
                    id: i as u64,
                    namespace: "tenant|*|ctx".into(),
                    text: format!("stored question {i}"),
                    response: vec![b'x'; 512],
                    vector: unit_vector(i as u64, model.dim()),
                    created_ms: 0,
                    expires_ms: u64::MAX,
                })
                .expect("insert");
        }
        let (mut search_ms, mut lookup_ms) = (Vec::new(), Vec::new());
        for (p, v) in prompts.iter().zip(&vectors) {
            let t = Instant::now();
            let c = index.search("tenant|*|ctx", v, 5, 1).expect("search");
            search_ms.push(t.elapsed().as_secs_f64() * 1e3);
            let t = Instant::now();
            let q = model.embed(&[p.as_str()]).expect("embed").remove(0);
            let c2 = index.search("tenant|*|ctx", &q, 5, 1).expect("search");
            let _ = c2.iter().find(|c| c.score >= 0.70 && guard.verify(p, &c.record.text).is_ok());
            lookup_ms.push(t.elapsed().as_secs_f64() * 1e3);
            std::hint::black_box(c);
        }
        println!(
            "| {n} | {:.2} ms | {:.2} ms | {:.2} ms | {:.2} ms | {:.0} MB |",
            pct(&mut search_ms.clone(), 0.5),
            pct(&mut search_ms, 0.99),
            pct(&mut lookup_ms.clone(), 0.5),
            pct(&mut lookup_ms, 0.99),
            rss_mb()
        );
    }
    println!("\ntargets: lookup p50 <= 20 ms with the local model on one core; p99 <= 50 ms at 100k entries");
}
