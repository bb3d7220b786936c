//! Threshold sweep of the semantic cache on the labeled pairs (sidecar/eval/pairs.jsonl):
//! for each threshold, with and without the guard, how many true paraphrases would be served
//! (recall), how many near-misses would be served (false-hit rate), and precision.
//!
//!   semgate-eval [--pairs FILE] [--split dev|test|all] [--embedder hashing|local|wordllama|openai] [--model-dir DIR]
//!                [--embed-url URL --embed-model NAME [--embed-key-env VAR] [--embed-dim N]]
//!
//! With `--embedder openai` the pairs' texts are sent to that endpoint (any OpenAI-compatible
//! `/v1/embeddings`), so a threshold can be chosen for a remote model too.

use semgate_sidecar::embed::openai::{key_from_env, OpenAiConfig, OpenAiEmbedder};
use semgate_sidecar::embed::{Embedder, HashingEmbedder};
use semgate_sidecar::guard::GuardConfig;
use semgate_sidecar::index::dot;
use std::sync::Arc;

struct Pair {
    a: String,
    b: String,
    hit: bool,
    split: String,
}

fn main() {
    if let Err(e) = run() {
        eprintln!("semgate-eval: {e}");
        std::process::exit(2);
    }
}

fn run() -> Result<(), String> {
    let mut pairs_path = concat!(env!("CARGO_MANIFEST_DIR"), "/eval/pairs.jsonl").to_string();
    let (mut split, mut embedder_name, mut model_dir) = ("all".to_string(), "hashing".to_string(), None::<String>);
    let mut remote = Remote::default();
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--pairs" => pairs_path = value,
            "--split" => split = value,
            "--embedder" => embedder_name = value,
            "--model-dir" => model_dir = Some(value),
            "--embed-url" => remote.url = Some(value),
            "--embed-model" => remote.model = Some(value),
            "--embed-key-env" => remote.key_env = Some(value),
            "--embed-dim" => remote.dim = Some(value.parse().map_err(|e| format!("--embed-dim: {e}"))?),
            other => return Err(format!("unknown flag {other}")),
        }
    }
    let embedder = embedder(&embedder_name, model_dir.as_deref(), remote)?;
    let text = std::fs::read_to_string(&pairs_path).map_err(|e| format!("{pairs_path}: {e}"))?;
    let mut pairs = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let v: serde_json::Value = serde_json::from_str(line).map_err(|e| format!("{pairs_path}: {e}"))?;
        let get = |k: &str| v.get(k).and_then(|x| x.as_str()).unwrap_or("").to_string();
        let p = Pair { a: get("a"), b: get("b"), hit: get("label") == "hit", split: get("split") };
        if split == "all" || p.split == split {
            pairs.push(p);
        }
    }
    let texts: Vec<&str> = pairs.iter().flat_map(|p| [p.a.as_str(), p.b.as_str()]).collect();
    let started = std::time::Instant::now();
    let mut vectors = Vec::with_capacity(texts.len());
    for chunk in texts.chunks(32) {
        vectors.extend(embedder.embed(chunk).map_err(|e| e.to_string())?);
    }
    let per_text_ms = started.elapsed().as_secs_f64() * 1000.0 / texts.len().max(1) as f64;
    let guard = GuardConfig::default();
    let scored: Vec<(f32, bool, bool)> = pairs
        .iter()
        .enumerate()
        .map(|(i, p)| (dot(&vectors[2 * i], &vectors[2 * i + 1]), p.hit, guard.verify(&p.a, &p.b).is_ok()))
        .collect();
    let (hits, misses) = (scored.iter().filter(|s| s.1).count(), scored.iter().filter(|s| !s.1).count());
    println!(
        "model {} | split {split} | {} pairs ({hits} paraphrases, {misses} near-misses) | {per_text_ms:.2} ms per text",
        embedder.model_id(),
        pairs.len()
    );
    println!("| threshold | guard | recall | false-hit rate | precision |\n|---:|---|---:|---:|---:|");
    for t in (50..=98).step_by(4).map(|x| x as f32 / 100.0) {
        for use_guard in [false, true] {
            let served =
                |want_hit: bool| scored.iter().filter(|s| s.1 == want_hit && s.0 >= t && (!use_guard || s.2)).count();
            let (tp, fp) = (served(true), served(false));
            let precision = if tp + fp == 0 { 1.0 } else { tp as f64 / (tp + fp) as f64 };
            println!(
                "| {t:.2} | {} | {:.3} | {:.3} | {precision:.3} |",
                if use_guard { "on" } else { "off" },
                tp as f64 / hits.max(1) as f64,
                fp as f64 / misses.max(1) as f64
            );
        }
    }
    Ok(())
}

/// The `--embed-*` flags of `--embedder openai`.
#[derive(Default)]
struct Remote {
    url: Option<String>,
    model: Option<String>,
    key_env: Option<String>,
    dim: Option<usize>,
}

fn embedder(name: &str, model_dir: Option<&str>, remote: Remote) -> Result<Arc<dyn Embedder>, String> {
    match name {
        "hashing" => Ok(Arc::new(HashingEmbedder { dim: 384 })),
        "local" => local(model_dir),
        "wordllama" => wordllama(model_dir),
        "openai" => {
            let url = remote.url.ok_or("--embedder openai needs --embed-url")?;
            let model = remote.model.ok_or("--embedder openai needs --embed-model")?;
            let api_key = remote.key_env.as_deref().map(key_from_env).transpose().map_err(|e| e.to_string())?;
            let config = OpenAiConfig { api_key, dimensions: remote.dim, ..OpenAiConfig::new(url, model) };
            Ok(Arc::new(OpenAiEmbedder::new(config).map_err(|e| e.to_string())?))
        }
        other => Err(format!("unknown embedder {other}")),
    }
}

#[cfg(feature = "local-model")]
fn local(model_dir: Option<&str>) -> Result<Arc<dyn Embedder>, String> {
    let dir = model_dir.ok_or("--embedder local needs --model-dir")?;
    Ok(Arc::new(semgate_sidecar::embed::local::LocalBert::load(std::path::Path::new(dir)).map_err(|e| e.to_string())?))
}

#[cfg(feature = "local-model")]
fn wordllama(model_dir: Option<&str>) -> Result<Arc<dyn Embedder>, String> {
    let dir = model_dir.ok_or("--embedder wordllama needs --model-dir")?;
    let model = semgate_sidecar::embed::wordllama::WordLlama::load(std::path::Path::new(dir));
    Ok(Arc::new(model.map_err(|e| e.to_string())?))
}

#[cfg(not(feature = "local-model"))]
fn local(_: Option<&str>) -> Result<Arc<dyn Embedder>, String> {
    Err("built without the local model: build with --features local-model".into())
}

#[cfg(not(feature = "local-model"))]
fn wordllama(dir: Option<&str>) -> Result<Arc<dyn Embedder>, String> {
    local(dir)
}
