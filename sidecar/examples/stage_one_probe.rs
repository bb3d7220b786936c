//! How well WordLlama's cosine bounds MiniLM's: for every eval pair, both cosines and the
//! guard's verdict; the lowest WordLlama cosine among pairs the full lookup would serve, and
//! the spread of WordLlama cosines between unrelated texts (what decides how often a first
//! stage can say "nothing can pass").
//! Run: cargo run --release -p semgate-sidecar --features local-model --example stage_one_probe -- MINILM_DIR WORDLLAMA_DIR

use semgate_sidecar::embed::local::LocalBert;
use semgate_sidecar::embed::wordllama::WordLlama;
use semgate_sidecar::embed::Embedder;
use semgate_sidecar::index::dot;
use semgate_sidecar::server::{Decision, ServerConfig};

fn main() {
    let mut args = std::env::args().skip(1);
    let mini = LocalBert::load(std::path::Path::new(&args.next().expect("minilm dir"))).expect("minilm");
    let wl = WordLlama::load(std::path::Path::new(&args.next().expect("wordllama dir"))).expect("wordllama");
    let dims: usize = args.next().map_or(256, |d| d.parse().expect("dims"));
    let mut pairs = Vec::new();
    for file in ["pairs.jsonl", "pairs_v2.jsonl", "pairs_v3.jsonl", "pairs_v4.jsonl"] {
        let path = format!("{}/eval/{file}", env!("CARGO_MANIFEST_DIR"));
        let Ok(text) = std::fs::read_to_string(&path) else { continue };
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let v: serde_json::Value = serde_json::from_str(line).expect("json");
            pairs.push((v["a"].as_str().unwrap_or("").to_string(), v["b"].as_str().unwrap_or("").to_string()));
        }
    }
    let cut = |v: Vec<f32>| {
        let mut v: Vec<f32> = v.into_iter().take(dims).collect();
        let n = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-9);
        v.iter_mut().for_each(|x| *x /= n);
        v
    };
    let config = ServerConfig::default();
    let guard = &config.guard;
    let mut rows = Vec::new();
    let mut full = Vec::new();
    let mut wl_vecs = Vec::new();
    for (a, b) in &pairs {
        let m = mini.embed(&[a, b]).expect("embed");
        let w: Vec<Vec<f32>> = wl.embed(&[a, b]).expect("embed").into_iter().map(cut).collect();
        let (mc, wc) = (dot(&m[0], &m[1]), dot(&w[0], &w[1]));
        rows.push((mc, wc, guard.verify(a, b).is_ok()));
        if config.decide(config.threshold, true, a, b, mc) == Decision::Serve {
            full.push(wc);
        }
        wl_vecs.push(w[0].clone());
    }
    for t in [0.55f32, 0.60, 0.65, 0.70] {
        let served: Vec<f32> = rows.iter().filter(|r| r.0 >= t && r.2).map(|r| r.1).collect();
        let min = served.iter().cloned().fold(f32::MAX, f32::min);
        println!("MiniLM >= {t:.2} and guard ok: {} pairs, lowest WordLlama cosine {min:.3}", served.len());
    }
    let min = full.iter().cloned().fold(f32::MAX, f32::min);
    println!(
        "served at the default settings (same requests included): {} pairs, lowest WordLlama cosine {min:.3}",
        full.len()
    );
    let mut unrelated = Vec::new();
    for i in 0..wl_vecs.len() {
        for j in (i + 1)..wl_vecs.len() {
            if pairs[i].0 != pairs[j].0 {
                unrelated.push(dot(&wl_vecs[i], &wl_vecs[j]));
            }
        }
    }
    let t = std::time::Instant::now();
    let mut n = 0;
    for (a, b) in pairs.iter().take(400) {
        std::hint::black_box(guard.verify(a, b).is_ok());
        n += 1;
    }
    println!("guard: {:.1} us per pair", t.elapsed().as_secs_f64() * 1e6 / n as f64);
    let t = std::time::Instant::now();
    for (a, _) in pairs.iter().take(400) {
        std::hint::black_box(guard.facts_cost(a));
    }
    println!("facts: {:.1} us per text", t.elapsed().as_secs_f64() * 1e6 / 400.0);
    unrelated.sort_by(|a, b| a.total_cmp(b));
    let q = |p: f64| unrelated[((unrelated.len() - 1) as f64 * p) as usize];
    println!(
        "WordLlama ({dims} dims) between different stored texts: p50 {:.3} p90 {:.3} p99 {:.3} p99.9 {:.3} max {:.3} ({} pairs)",
        q(0.5), q(0.9), q(0.99), q(0.999), q(1.0), unrelated.len()
    );
}
