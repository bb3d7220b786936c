//! Threshold sweep of the semantic cache on the labeled pairs (sidecar/eval/pairs.jsonl, splits
//! `dev` and `test`; pairs_v2.jsonl, `dev2` and `holdout`; pairs_v3.jsonl, `dev3`; pairs_v4.jsonl,
//! `unseen`, written before the guard's structural checks were revised and never tuned on): for each
//! split separately, the figures at the sidecar's default settings (threshold and guard), then
//! for each threshold, with and without the guard, how many true paraphrases would be served
//! (recall), how many near-misses would be served (false-hit rate), and precision. Tune on
//! `dev`, `dev2` and `dev3` only; `test`, `holdout` and `unseen` are reported, never looked into (`--leaks`
//! lists the pairs behind the figures of the dev splits only).
//!
//! The last column covers what the labeled pairs do not: two different requests of the same
//! domain ("How do I parse JSON in Python?" against "How do I reverse a list in Python?"). It
//! is the share of the split's same-domain text pairs that no label links (not one labeled
//! pair, not paraphrases of one another through the labels) that would be served. Some of
//! these pairs are paraphrases that no label links (among the highest-scoring ones, often), so
//! the column over-counts wrong answers; `--show-unrelated N` prints the N highest-scoring
//! ones the guard accepts, to look at.
//!
//!   semgate-eval [--pairs FILE]... [--split dev|test|dev2|dev3|holdout|unseen|all] [--embedder hashing|local|wordllama|openai]
//!                [--model-dir DIR] [--embed-url URL --embed-model NAME [--embed-key-env VAR] [--embed-dim N]]
//!                [--show-unrelated N] [--leaks] [--sweep]
//!   semgate-eval --explain TEXT TEXT   (the guard's view of two texts)
//!
//! With `--embedder openai` the pairs' texts are sent to that endpoint (any OpenAI-compatible
//! `/v1/embeddings`), so a threshold can be chosen for a remote model too.

use semgate_sidecar::embed::openai::{key_from_env, OpenAiConfig, OpenAiEmbedder};
use semgate_sidecar::embed::{Embedder, HashingEmbedder};
use semgate_sidecar::guard::GuardConfig;
use semgate_sidecar::index::dot;
use semgate_sidecar::server::ServerConfig;
use std::sync::Arc;

/// Splits that may be looked into (tuning) and that are only reported, in report order.
const SPLITS: [&str; 6] = ["dev", "dev2", "dev3", "test", "holdout", "unseen"];
const TUNING: [&str; 3] = ["dev", "dev2", "dev3"];

#[derive(Clone)]
struct Pair {
    a: String,
    b: String,
    hit: bool,
    split: String,
    domain: String,
    family: String,
}

fn main() {
    if let Err(e) = run() {
        eprintln!("semgate-eval: {e}");
        std::process::exit(2);
    }
}

fn run() -> Result<(), String> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/eval");
    let mut pair_files: Vec<String> = Vec::new();
    let (mut split, mut embedder_name, mut model_dir) = ("all".to_string(), "hashing".to_string(), None::<String>);
    let mut remote = Remote::default();
    let (mut show_unrelated, mut leaks, mut sweep) = (0usize, false, false);
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        match flag.as_str() {
            "--leaks" => {
                leaks = true;
                continue;
            }
            "--sweep" => {
                sweep = true;
                continue;
            }
            "--explain" => {
                // Why the guard decides as it does on two texts: `--explain A B`.
                let (a, b) = (args.next().unwrap_or_default(), args.next().unwrap_or_default());
                let g = ServerConfig::default().guard;
                println!("{:?}\n  {}\n  {}", g.verify(&a, &b), g.explain(&a), g.explain(&b));
                return Ok(());
            }
            "--explain-list" => {
                // The guard's verdict and each side's uncovered words for every pair of a JSONL
                // file (as `SEMGATE_EVAL_LIST` writes it), one JSON line each.
                let path = args.next().unwrap_or_default();
                let g = ServerConfig::default().guard;
                let text = std::fs::read_to_string(&path).map_err(|e| format!("{path}: {e}"))?;
                for line in text.lines().filter(|l| !l.trim().is_empty()) {
                    let mut v: serde_json::Value = serde_json::from_str(line).map_err(|e| e.to_string())?;
                    let (a, b) = (v["a"].as_str().unwrap_or("").to_string(), v["b"].as_str().unwrap_or("").to_string());
                    let (la, lb, shared) = g.loose_words(&a, &b);
                    v["now"] = g.verify(&a, &b).err().map_or("ok", |r| r.as_str()).into();
                    v["loose"] = serde_json::json!([la, lb, shared]);
                    println!("{v}");
                }
                return Ok(());
            }
            _ => {}
        }
        let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--pairs" => pair_files.push(value),
            "--split" => split = value,
            "--embedder" => embedder_name = value,
            "--model-dir" => model_dir = Some(value),
            "--embed-url" => remote.url = Some(value),
            "--embed-model" => remote.model = Some(value),
            "--embed-key-env" => remote.key_env = Some(value),
            "--embed-dim" => remote.dim = Some(value.parse().map_err(|e| format!("--embed-dim: {e}"))?),
            "--show-unrelated" => show_unrelated = value.parse().map_err(|e| format!("--show-unrelated: {e}"))?,
            other => return Err(format!("unknown flag {other}")),
        }
    }
    if pair_files.is_empty() {
        pair_files = ["pairs.jsonl", "pairs_v2.jsonl", "pairs_v3.jsonl", "pairs_v4.jsonl"]
            .map(|f| format!("{dir}/{f}"))
            .to_vec();
    }
    let embedder = embedder(&embedder_name, model_dir.as_deref(), remote)?;
    let mut all = Vec::new();
    for path in &pair_files {
        let Ok(text) = std::fs::read_to_string(path) else {
            eprintln!("semgate-eval: {path} not found, skipped");
            continue;
        };
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let v: serde_json::Value = serde_json::from_str(line).map_err(|e| format!("{path}: {e}"))?;
            let get = |k: &str| v.get(k).and_then(|x| x.as_str()).unwrap_or("").to_string();
            all.push(Pair {
                a: get("a"),
                b: get("b"),
                hit: get("label") == "hit",
                split: get("split"),
                domain: get("domain"),
                family: if get("family").is_empty() { get("kind") } else { get("family") },
            });
        }
    }
    let defaults = ServerConfig::default();
    let guard = defaults.guard.clone();
    for name in SPLITS.iter().filter(|s| split == "all" || split == **s) {
        let pairs: Vec<&Pair> = all.iter().filter(|p| p.split == *name).collect();
        if pairs.is_empty() {
            continue;
        }
        let thresholds = (defaults.threshold, defaults.same_request_threshold);
        report(name, &pairs, embedder.as_ref(), &guard, thresholds, sweep, show_unrelated, leaks)?;
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn report(
    split: &str,
    pairs: &[&Pair],
    embedder: &dyn Embedder,
    guard: &GuardConfig,
    (threshold, floor): (f32, f32),
    sweep: bool,
    show_unrelated: usize,
    leaks: bool,
) -> Result<(), String> {
    let texts: Vec<&str> = pairs.iter().flat_map(|p| [p.a.as_str(), p.b.as_str()]).collect();
    let started = std::time::Instant::now();
    let vectors = embed_all(embedder, &texts)?;
    let per_text_ms = started.elapsed().as_secs_f64() * 1000.0 / texts.len().max(1) as f64;
    let verdicts: Vec<Result<(), String>> =
        pairs.iter().map(|p| guard.verify(&p.a, &p.b).map_err(|r| r.as_str().to_string())).collect();
    // (cosine, label is hit, guard accepts, the same request: served down to `floor`)
    let scored: Vec<(f32, bool, bool, bool)> = pairs
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let (cos, ok) = (dot(&vectors[2 * i], &vectors[2 * i + 1]), verdicts[i].is_ok());
            (cos, p.hit, ok, ok && cos >= floor && guard.same_request(&p.a, &p.b))
        })
        .collect();
    let (hits, misses) = (scored.iter().filter(|s| s.1).count(), scored.iter().filter(|s| !s.1).count());
    let owned: Vec<Pair> = pairs.iter().map(|p| (*p).clone()).collect();
    let unrelated = unrelated_pairs(&owned, &vectors, guard, floor);
    // As the sidecar decides (`ServerConfig::decide`): at or above `t` with the guard's consent,
    // or down to `floor` for the same request in other words (with the guard, at the default
    // threshold or below).
    let lowered = |t: f32, use_guard: bool| use_guard && t <= threshold;
    let served = |t: f32, use_guard: bool, want_hit: bool| {
        scored
            .iter()
            .filter(|s| {
                s.1 == want_hit && ((s.0 >= t && (!use_guard || s.2)) || (lowered(t, use_guard) && s.0 >= floor && s.3))
            })
            .count()
    };
    let (tp, fp) = (served(threshold, true, true), served(threshold, true, false));
    println!(
        "\n## split {split}: {} pairs ({hits} paraphrases, {misses} near-misses), model {}, {per_text_ms:.3} ms per text",
        pairs.len(),
        embedder.model_id()
    );
    println!(
        "default settings (threshold {threshold:.2}, guard on): recall {:.1}% ({tp}/{hits}), false hits {:.1}% ({fp}/{misses})",
        100.0 * tp as f64 / hits.max(1) as f64,
        100.0 * fp as f64 / misses.max(1) as f64
    );
    // False hits by family at the default settings (counts only: rows of a held-out split stay unread).
    let mut by_family: std::collections::BTreeMap<&str, (usize, usize)> = Default::default();
    for (p, s) in pairs.iter().zip(&scored) {
        let e = by_family.entry(p.family.as_str()).or_default();
        e.1 += 1;
        e.0 += usize::from(p.hit == ((s.0 >= threshold && s.2) || (s.0 >= floor && s.3)));
    }
    let fam: Vec<String> = by_family.iter().map(|(f, (ok, n))| format!("{f} {ok}/{n}")).collect();
    println!("per family, pairs decided right at the default settings: {}", fam.join(", "));
    if sweep {
        println!("| threshold | guard | recall | false-hit rate | precision | unrelated served |\n|---:|---|---:|---:|---:|---:|");
        for t in (50..=90).step_by(2).map(|x| x as f32 / 100.0) {
            for use_guard in [false, true] {
                let (tp, fp) = (served(t, use_guard, true), served(t, use_guard, false));
                let precision = if tp + fp == 0 { 1.0 } else { tp as f64 / (tp + fp) as f64 };
                let wrong = unrelated
                    .iter()
                    .filter(|u| (u.0 >= t && (!use_guard || u.1)) || (lowered(t, use_guard) && u.0 >= floor && u.4))
                    .count();
                println!(
                    "| {t:.2} | {} | {:.3} | {:.3} | {precision:.3} | {:.4} ({wrong}) |",
                    if use_guard { "on" } else { "off" },
                    tp as f64 / hits.max(1) as f64,
                    fp as f64 / misses.max(1) as f64,
                    wrong as f64 / unrelated.len().max(1) as f64
                );
            }
        }
    }
    if leaks && TUNING.contains(&split) {
        for ((p, s), v) in pairs.iter().zip(&scored).zip(&verdicts) {
            let is_served = (s.0 >= threshold && s.2) || (s.0 >= floor && s.3);
            if p.hit && !is_served {
                let why = v.as_ref().err().map_or("below threshold", |r| r.as_str());
                println!("missed [{}] {:.3} {why}: {:?} / {:?}", p.family, s.0, p.a, p.b);
            }
            if !p.hit && is_served {
                println!("false hit [{}] {:.3}: {:?} / {:?}", p.family, s.0, p.a, p.b);
            }
        }
    }
    if let Ok(path) = std::env::var("SEMGATE_EVAL_LIST") {
        // Every pair of a tuning split with its cosine and verdict, one JSON line each, for
        // looking at the guard's decisions as a whole (the held-out splits are never listed).
        if TUNING.contains(&split) {
            use std::io::Write;
            let mut f = std::fs::OpenOptions::new().create(true).append(true).open(&path).map_err(|e| e.to_string())?;
            for ((p, s), v) in pairs.iter().zip(&scored).zip(&verdicts) {
                let line = serde_json::json!({"split": split, "family": p.family, "hit": p.hit, "a": p.a, "b": p.b,
                    "cosine": s.0, "guard": v.as_ref().err().map_or("ok", |r| r.as_str())});
                writeln!(f, "{line}").map_err(|e| e.to_string())?;
            }
        }
    }
    if show_unrelated > 0 && TUNING.contains(&split) {
        let mut accepted: Vec<&(f32, bool, &str, &str, bool)> = unrelated.iter().filter(|u| u.1).collect();
        accepted.sort_by(|x, y| y.0.total_cmp(&x.0));
        println!("\nthe {show_unrelated} unrelated pairs the guard accepts with the highest cosine:");
        for (score, _, x, y, _) in accepted.into_iter().take(show_unrelated) {
            println!("{score:.3}  {x:?}  {y:?}");
        }
    }
    Ok(())
}

/// The texts' vectors, in order. With `SEMGATE_EVAL_CACHE=FILE`, vectors already in FILE (a JSON
/// object of model id -> text -> vector) are reused and new ones added to it, so that a change
/// of the guard alone is measured without embedding every text again.
fn embed_all(embedder: &dyn Embedder, texts: &[&str]) -> Result<Vec<Vec<f32>>, String> {
    use std::collections::HashMap;
    let path = std::env::var("SEMGATE_EVAL_CACHE").ok();
    let mut cache: HashMap<String, HashMap<String, Vec<f32>>> = path
        .as_deref()
        .and_then(|p| std::fs::read(p).ok())
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    let model = cache.entry(embedder.model_id().to_string()).or_default();
    let missing: Vec<&str> = {
        let mut seen = std::collections::HashSet::new();
        texts.iter().copied().filter(|t| !model.contains_key(*t) && seen.insert(*t)).collect()
    };
    for chunk in missing.chunks(32) {
        for (t, v) in chunk.iter().zip(embedder.embed(chunk).map_err(|e| e.to_string())?) {
            model.insert(t.to_string(), v);
        }
    }
    let vectors = texts.iter().map(|t| model[*t].clone()).collect();
    if let (Some(p), false) = (path, missing.is_empty()) {
        std::fs::write(p, serde_json::to_vec(&cache).map_err(|e| e.to_string())?).map_err(|e| e.to_string())?;
    }
    Ok(vectors)
}

/// (cosine, guard accepts, text, text, the same request and at least `floor`) for every pair of distinct texts of one domain that the labels do
/// not link: not a labeled pair, and not in one group of texts joined by paraphrase labels.
/// `vectors` holds `a` then `b` of each pair, in order.
fn unrelated_pairs<'a>(
    pairs: &'a [Pair],
    vectors: &[Vec<f32>],
    guard: &GuardConfig,
    floor: f32,
) -> Vec<(f32, bool, &'a str, &'a str, bool)> {
    use std::collections::{HashMap, HashSet};
    // texts -> node; paraphrase labels join nodes (union-find)
    let mut node: HashMap<&str, usize> = HashMap::new();
    let mut first: Vec<(usize, &str)> = Vec::new(); // per node: one vector index, its text
    for (i, p) in pairs.iter().enumerate() {
        for (k, t) in [p.a.as_str(), p.b.as_str()].into_iter().enumerate() {
            node.entry(t).or_insert_with(|| {
                first.push((2 * i + k, t));
                first.len() - 1
            });
        }
    }
    let mut parent: Vec<usize> = (0..first.len()).collect();
    fn root(parent: &mut [usize], mut x: usize) -> usize {
        while parent[x] != x {
            parent[x] = parent[parent[x]];
            x = parent[x];
        }
        x
    }
    let mut labeled: HashSet<(usize, usize)> = HashSet::new();
    for p in pairs {
        let (a, b) = (node[p.a.as_str()], node[p.b.as_str()]);
        labeled.insert((a.min(b), a.max(b)));
        if p.hit {
            let (ra, rb) = (root(&mut parent, a), root(&mut parent, b));
            parent[ra] = rb;
        }
    }
    let mut domain_of = vec![""; first.len()];
    for p in pairs {
        domain_of[node[p.a.as_str()]] = &p.domain;
        domain_of[node[p.b.as_str()]] = &p.domain;
    }
    let mut out = Vec::new();
    for x in 0..first.len() {
        for y in x + 1..first.len() {
            if domain_of[x] != domain_of[y] || labeled.contains(&(x, y)) || root(&mut parent, x) == root(&mut parent, y)
            {
                continue;
            }
            let ((vx, tx), (vy, ty)) = (first[x], first[y]);
            let (cos, ok) = (dot(&vectors[vx], &vectors[vy]), guard.verify(tx, ty).is_ok());
            out.push((cos, ok, tx, ty, ok && cos >= floor && guard.same_request(tx, ty)));
        }
    }
    out
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

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(a: &str, b: &str, hit: bool, domain: &str) -> Pair {
        Pair { a: a.into(), b: b.into(), hit, split: "dev".into(), domain: domain.into(), family: String::new() }
    }

    /// Unrelated pairs: same domain, not a labeled pair, not joined by paraphrase labels
    /// (transitively), each pair of texts once however often the texts recur.
    #[test]
    fn unrelated_pairs_skip_what_the_labels_link() {
        let pairs = [
            pair("alpha one", "beta two", true, "x"),
            pair("beta two", "gamma three", true, "x"), // alpha ~ beta ~ gamma
            pair("alpha one", "delta four", false, "x"), // a labeled near-miss
            pair("epsilon five", "zeta six", false, "x"),
            pair("eta seven", "theta eight", true, "y"), // the only texts of domain y
        ];
        // text i of the pairs gets a vector whose cosine with text j is known: unit basis vectors,
        // except that "delta four" points where "beta two" does
        let basis = |k: usize| (0..8).map(|d| if d == k { 1.0 } else { 0.0 }).collect::<Vec<f32>>();
        let texts: Vec<&str> = pairs.iter().flat_map(|p| [p.a.as_str(), p.b.as_str()]).collect();
        let vectors: Vec<Vec<f32>> = texts
            .iter()
            .map(|t| match *t {
                "alpha one" => basis(0),
                "beta two" | "delta four" => basis(1),
                "gamma three" => basis(2),
                "epsilon five" => basis(3),
                "zeta six" => basis(4),
                _ => basis(5),
            })
            .collect();
        let got = unrelated_pairs(&pairs, &vectors, &GuardConfig::default(), 1.0);
        let mut names: Vec<(String, String)> = got
            .iter()
            .map(|u| {
                let (x, y) = (u.2.split(' ').next().unwrap(), u.3.split(' ').next().unwrap());
                (x.min(y).to_string(), x.max(y).to_string())
            })
            .collect();
        names.sort();
        let want = [
            ("alpha", "epsilon"),
            ("alpha", "zeta"),
            ("beta", "delta"),
            ("beta", "epsilon"),
            ("beta", "zeta"),
            ("delta", "gamma"),
            ("delta", "epsilon"),
            ("delta", "zeta"),
            ("epsilon", "gamma"),
            ("gamma", "zeta"),
        ];
        let mut want: Vec<(String, String)> = want.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect();
        want.sort();
        assert_eq!(names, want);
        for u in &got {
            let same = (u.2 == "beta two" && u.3 == "delta four") || (u.2 == "delta four" && u.3 == "beta two");
            assert_eq!(u.0, if same { 1.0 } else { 0.0 }, "{} / {}", u.2, u.3);
        }
    }
}
