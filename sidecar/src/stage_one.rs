//! The lookup's first stage: a static embedding (WordLlama, microseconds per text) and the guard
//! decide whether any stored text could pass, before the query waits for MiniLM.
//!
//! A stored text can only be a hit if its WordLlama cosine with the query is at least
//! `min_score`: over every labelled pair the full lookup serves (MiniLM above the default
//! threshold and the guard's consent), the lowest WordLlama cosine is well above it (see
//! `docs/semantic.md`; a test checks it over the eval sets and 10k stored texts). So when no
//! stored text of the scope reaches `min_score`, or the few that do are all refused by the
//! guard, the lookup is a miss without MiniLM. Otherwise the full lookup runs.
//!
//! It keeps its own copy of each scope's texts (int8 codes of their first `dims` WordLlama
//! dimensions, and the guard's breakdown of each text), filled on store and at startup from the
//! index. Entries past their expiry are skipped; the copy is capped like the index.

use crate::embed::Embedder;
use crate::guard::{GuardConfig, Prepared};
use crate::quant::CodeMatrix;
use serde::Deserialize;
use std::collections::HashMap;
use std::sync::{Arc, RwLock};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StageOneConfig {
    /// WordLlama dimensions compared (it is trained so that a prefix of its 256 is usable).
    pub dims: usize,
    /// Below this WordLlama cosine a stored text is never a hit.
    pub min_score: f32,
    /// At most this many stored texts above `min_score` are checked with the guard's full
    /// rules (those whose numbers or units differ from the query's are refused by their key
    /// and not counted); more than that and the full lookup runs.
    pub max_checked: usize,
    /// The first stage only speaks for lookups whose threshold is at least this.
    pub min_threshold: f32,
}

impl Default for StageOneConfig {
    fn default() -> Self {
        // The lowest WordLlama cosine among labelled pairs the full lookup serves at the default
        // settings is 0.207, a same request in other words served below the MiniLM threshold
        // (0.317 among those above it; docs/semantic.md); 0.19 keeps a margin below it.
        StageOneConfig { dims: 128, min_score: 0.19, max_checked: 48, min_threshold: 0.70 }
    }
}

/// What the first stage says about a lookup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// No stored text of the scope can be a hit: answer a miss now.
    NoCandidate,
    /// Some stored text might be: run the full lookup.
    Maybe,
}

struct Scope {
    codes: CodeMatrix,
    texts: Vec<Arc<Prepared>>,
    expires: Vec<u64>,
    seq: Vec<u64>,
}

pub struct StageOne {
    config: StageOneConfig,
    embedder: Arc<dyn Embedder>,
    max_entries: usize,
    scopes: RwLock<HashMap<String, Scope>>,
    next_seq: std::sync::atomic::AtomicU64,
}

impl StageOne {
    pub fn new(config: StageOneConfig, embedder: Arc<dyn Embedder>, max_entries: usize) -> Self {
        StageOne {
            config,
            embedder,
            max_entries,
            scopes: RwLock::new(HashMap::new()),
            next_seq: std::sync::atomic::AtomicU64::new(0),
        }
    }

    pub fn config(&self) -> &StageOneConfig {
        &self.config
    }

    fn vector(&self, text: &str) -> Option<Vec<f32>> {
        let mut v = self.embedder.embed(&[text]).ok()?.pop()?;
        v.truncate(self.config.dims);
        let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        (n > 0.0).then(|| v.into_iter().map(|x| x / n).collect())
    }

    pub fn len(&self) -> usize {
        self.scopes.read().map(|s| s.values().map(|s| s.texts.len()).sum()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Adds a stored text (on store, and for each record the index holds at startup).
    pub fn insert(&self, guard: &GuardConfig, scope: &str, text: &str, expires_ms: u64) {
        let prepared = Arc::new(guard.prepare(text));
        // A text with no vector (no tokens) stays in the copy as a zero row: it matches nothing,
        // as it matches nothing in the full lookup.
        let vector = self.vector(text).unwrap_or_else(|| vec![0.0; self.config.dims]);
        let seq = self.next_seq.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let Ok(mut scopes) = self.scopes.write() else { return };
        let total: usize = scopes.values().map(|s| s.texts.len()).sum();
        if total >= self.max_entries {
            // The oldest text of any scope goes, as the index evicts its oldest record.
            let oldest = scopes
                .iter()
                .filter_map(|(name, s)| {
                    s.seq.iter().enumerate().min_by_key(|(_, q)| **q).map(|(i, q)| (name.clone(), i, *q))
                })
                .min_by_key(|(_, _, q)| *q);
            if let Some((name, i, _)) = oldest {
                if let Some(s) = scopes.get_mut(&name) {
                    s.codes.swap_remove(i);
                    s.texts.swap_remove(i);
                    s.expires.swap_remove(i);
                    s.seq.swap_remove(i);
                }
            }
        }
        let s = scopes.entry(scope.to_string()).or_insert_with(|| Scope {
            codes: CodeMatrix::new(self.config.dims),
            texts: Vec::new(),
            expires: Vec::new(),
            seq: Vec::new(),
        });
        s.codes.push(&vector);
        s.texts.push(prepared);
        s.expires.push(expires_ms);
        s.seq.push(seq);
    }

    /// Whether any live stored text of `scope` could answer `query`. `guard` is `None` when the
    /// lookup runs without the guard (then only the WordLlama bound speaks).
    pub fn check(&self, scope: &str, query: &str, guard: Option<&GuardConfig>, now_ms: u64) -> Verdict {
        let Some(q) = self.vector(query) else { return Verdict::Maybe };
        let Ok(scopes) = self.scopes.read() else { return Verdict::Maybe };
        let Some(s) = scopes.get(scope) else { return Verdict::NoCandidate };
        let mut scores = Vec::with_capacity(s.texts.len());
        s.codes.scores(&q, &mut scores);
        // The int8 scores are within about 1e-2 of the cosine; the margin keeps the bound safe.
        let floor = self.config.min_score - 0.01;
        let near: Vec<(usize, f32)> = scores
            .iter()
            .enumerate()
            .filter(|(i, score)| **score >= floor && s.expires[*i] > now_ms)
            .map(|(i, score)| (i, *score))
            .collect();
        if near.is_empty() {
            return Verdict::NoCandidate;
        }
        let Some(guard) = guard else { return Verdict::Maybe };
        let query = guard.prepare(query);
        // A near text with another number or unit than the query's is refused for sure (one
        // comparison of two keys); the others need the guard's full check, at most
        // `max_checked` of them, nearest first, before the full lookup is cheaper.
        let mut open: Vec<(usize, f32)> =
            near.into_iter().filter(|(i, _)| !guard.surely_refused(&query, &s.texts[*i])).collect();
        if open.len() > self.config.max_checked {
            return Verdict::Maybe;
        }
        open.sort_by(|a, b| b.1.total_cmp(&a.1));
        if open.iter().any(|&(i, _)| guard.verify_prepared(&query, &s.texts[i]).is_ok()) {
            Verdict::Maybe
        } else {
            Verdict::NoCandidate
        }
    }
}

#[cfg(test)]
#[path = "tests/stage_one_tests.rs"]
mod tests;
