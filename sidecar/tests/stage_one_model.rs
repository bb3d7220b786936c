//! The first stage never drops a lookup the full lookup would serve. Needs both models
//! (`SEMGATE_MODEL_DIR`, `SEMGATE_WORDLLAMA_DIR`; `make model-test` sets them).
//!
//! Stored: `SEMGATE_STAGE_ONE_TEXTS` synthetic request texts (1,000 by default, so the model
//! tests stay quick; `make stage-one-check` runs 10,000 in a release build) and every `a` of the eval sets (pairs.jsonl,
//! pairs_v2.jsonl, pairs_v3.jsonl and pairs_v4.jsonl, all splits), in one scope. Queries: every `b` of the eval sets and a
//! rewording of 1,000 synthetic texts. For each query that some stored text would answer in the
//! full lookup (MiniLM cosine at or above the default threshold and the guard's consent), the
//! first stage must say `Maybe`. Only counts are printed: no eval row is shown.
#![cfg(feature = "local-model")]

mod common;

use semgate_sidecar::embed::local::LocalBert;
use semgate_sidecar::embed::wordllama::WordLlama;
use semgate_sidecar::embed::Embedder;
use semgate_sidecar::index::{FlatIndex, Record, VectorStore};
use semgate_sidecar::server::{Decision, ServerConfig};
use semgate_sidecar::stage_one::{StageOne, Verdict};
use semgate_sidecar::synthetic::request_text;
use std::sync::Arc;

fn eval_pairs() -> Vec<(String, String)> {
    let mut out = Vec::new();
    for file in ["pairs.jsonl", "pairs_v2.jsonl", "pairs_v3.jsonl", "pairs_v4.jsonl"] {
        let path = format!("{}/eval/{file}", env!("CARGO_MANIFEST_DIR"));
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let v: serde_json::Value = serde_json::from_str(line).expect("jsonl");
            out.push((v["a"].as_str().unwrap_or("").to_string(), v["b"].as_str().unwrap_or("").to_string()));
        }
    }
    out
}

#[test]
fn the_first_stage_never_drops_a_hit() {
    let mini_dir = common::dir_from_env(
        "SEMGATE_MODEL_DIR",
        "make model, then SEMGATE_MODEL_DIR=$PWD/.cache/models/all-MiniLM-L6-v2",
    );
    let wl_dir = common::dir_from_env(
        "SEMGATE_WORDLLAMA_DIR",
        "make model, then SEMGATE_WORDLLAMA_DIR=$PWD/.cache/models/wordllama-l2-supercat",
    );
    let mini = LocalBert::load(&mini_dir).expect("MiniLM");
    let wl = WordLlama::load(&wl_dir).expect("WordLlama");
    let config = ServerConfig::default();
    let guard = &config.guard;
    let pairs = eval_pairs();
    let synthetic: usize = std::env::var("SEMGATE_STAGE_ONE_TEXTS").ok().and_then(|v| v.parse().ok()).unwrap_or(1000);
    let mut stored: Vec<String> = (0..synthetic).map(request_text).collect();
    let mut seen = std::collections::HashSet::new();
    for (a, _) in &pairs {
        if seen.insert(a.clone()) {
            stored.push(a.clone());
        }
    }
    let mut queries: Vec<String> = pairs.iter().map(|(_, b)| b.clone()).collect();
    queries.extend((0..synthetic / 10).map(|i| format!("Hi, quick question: {} Thanks!", request_text(i * 7))));

    let embed_all = |texts: &[String]| -> Vec<Vec<f32>> {
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        refs.chunks(64).flat_map(|c| mini.embed(c).expect("embed")).collect()
    };
    let index = FlatIndex::in_memory(mini.dim(), stored.len() + 1);
    let s1 = StageOne::new(config.stage_one.clone(), Arc::new(wl), stored.len() + 1);
    for (i, (text, vector)) in stored.iter().zip(embed_all(&stored)).enumerate() {
        let record = Record {
            id: i as u64,
            namespace: "s".into(),
            text: text.clone(),
            response: Vec::new(),
            vector,
            created_ms: 0,
            expires_ms: u64::MAX,
        };
        index.insert(record).expect("insert");
        s1.insert(guard, "s", text, u64::MAX);
    }
    let (mut served, mut kept, mut pruned, mut unserved) = (0, 0, 0, 0);
    for (q, v) in queries.iter().zip(embed_all(&queries)) {
        let candidates = index.search("s", &v, config.top_k, 1).expect("search");
        let hit = candidates
            .iter()
            .any(|c| config.decide(config.threshold, true, q, &c.record.text, c.score) == Decision::Serve);
        let verdict = s1.check("s", q, Some(guard), 1);
        if hit {
            served += 1;
            kept += usize::from(verdict == Verdict::Maybe);
        } else {
            unserved += 1;
            pruned += usize::from(verdict == Verdict::NoCandidate);
        }
    }
    println!(
        "{} stored texts, {} queries: {served} served by the full lookup, {kept} of them kept by the first stage; \
         {pruned} of the {unserved} others answered by the first stage alone",
        stored.len(),
        queries.len()
    );
    assert!(served > 500, "too few served lookups to say anything: {served}");
    assert_eq!(kept, served, "the first stage dropped {} lookups the full lookup serves", served - kept);
}
