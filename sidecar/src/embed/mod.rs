//! Embeddings behind one trait: the local models (feature `local-model`: MiniLM in `local`,
//! WordLlama in `wordllama`), any OpenAI-compatible `/v1/embeddings` endpoint, and a hashing
//! test double. Vectors are L2-normalised, so a dot product is the cosine.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;

#[cfg(feature = "local-model")]
pub mod local;
pub mod openai;
#[cfg(feature = "local-model")]
pub mod wordllama;

#[derive(Debug, thiserror::Error)]
pub enum EmbedError {
    #[error("model: {0}")]
    Model(String),
    #[error("embedding service: {0}")]
    Remote(String),
    #[error("loading the model from {}: {reason}", path.display())]
    Load { path: PathBuf, reason: String },
}

pub trait Embedder: Send + Sync {
    fn model_id(&self) -> &str;
    fn dim(&self) -> usize;
    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError>;
    /// The text's vector if it is at hand without running the model (a cache), else `None`.
    fn cached(&self, _text: &str) -> Option<Vec<f32>> {
        None
    }
}

/// Identical texts are embedded once: a bounded text -> vector cache in front of any embedder.
///
/// LRU-ish with two generations: new vectors go to `hot`; when `hot` holds half the capacity
/// it becomes `cold` and the old `cold` is dropped; a hit in `cold` moves back to `hot`. So at
/// most `capacity` entries are kept, and a text used since the last rotation survives the next
/// one. The lock is not held while the inner embedder runs (two requests racing on one new
/// text may both embed it: harmless, the vectors are the same).
pub struct CachedEmbedder<E: Embedder> {
    inner: E,
    capacity: usize,
    cache: Mutex<Generations>,
}

#[derive(Default)]
struct Generations {
    hot: HashMap<String, Vec<f32>>,
    cold: HashMap<String, Vec<f32>>,
}

impl Generations {
    fn get(&mut self, text: &str, half: usize, capacity: usize) -> Option<Vec<f32>> {
        if let Some(v) = self.hot.get(text) {
            return Some(v.clone());
        }
        let (k, v) = self.cold.remove_entry(text)?;
        self.insert(k, v.clone(), half, capacity);
        Some(v)
    }

    /// `half` is `max(capacity / 2, 1)`; the second check keeps odd capacities (1, 3, ...) bounded.
    fn insert(&mut self, text: String, v: Vec<f32>, half: usize, capacity: usize) {
        if self.hot.len() >= half {
            self.cold = std::mem::take(&mut self.hot);
        }
        if self.hot.len() + self.cold.len() >= capacity {
            self.cold.clear();
        }
        self.hot.insert(text, v);
    }

    fn len(&self) -> usize {
        self.hot.len() + self.cold.len()
    }
}

impl<E: Embedder> CachedEmbedder<E> {
    /// `capacity` in entries (texts); 0 turns the cache off.
    pub fn new(inner: E, capacity: usize) -> Self {
        CachedEmbedder { inner, capacity, cache: Mutex::new(Generations::default()) }
    }

    pub fn inner(&self) -> &E {
        &self.inner
    }

    /// Entries cached now (at most the capacity).
    pub fn len(&self) -> usize {
        self.cache.lock().map(|c| c.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, Generations>, EmbedError> {
        self.cache.lock().map_err(|_| EmbedError::Model("cache lock poisoned".into()))
    }
}

impl<E: Embedder> Embedder for CachedEmbedder<E> {
    fn model_id(&self) -> &str {
        self.inner.model_id()
    }
    fn dim(&self) -> usize {
        self.inner.dim()
    }
    fn cached(&self, text: &str) -> Option<Vec<f32>> {
        if self.capacity == 0 {
            return None;
        }
        let half = (self.capacity / 2).max(1);
        self.cache.lock().ok()?.get(text, half, self.capacity)
    }
    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError> {
        if self.capacity == 0 {
            return self.inner.embed(texts);
        }
        let half = (self.capacity / 2).max(1);
        let mut out: Vec<Option<Vec<f32>>> = {
            let mut cache = self.lock()?;
            texts.iter().map(|t| cache.get(t, half, self.capacity)).collect()
        };
        // Each missing text once, even if the batch repeats it.
        let mut missing: Vec<&str> = Vec::new();
        let mut slot_of: HashMap<&str, usize> = HashMap::new();
        for (t, v) in texts.iter().zip(&out) {
            if v.is_none() && !slot_of.contains_key(t) {
                slot_of.insert(t, missing.len());
                missing.push(t);
            }
        }
        if !missing.is_empty() {
            let fresh = self.inner.embed(&missing)?;
            if fresh.len() != missing.len() {
                return Err(EmbedError::Model(format!(
                    "embedder returned {} vectors for {} texts",
                    fresh.len(),
                    missing.len()
                )));
            }
            for (t, v) in texts.iter().zip(out.iter_mut()) {
                if v.is_none() {
                    *v = Some(fresh[slot_of[t]].clone());
                }
            }
            let mut cache = self.lock()?;
            for (t, v) in missing.iter().zip(fresh) {
                cache.insert((*t).to_string(), v, half, self.capacity);
            }
        }
        Ok(out.into_iter().flatten().collect())
    }
}

/// A deterministic bag-of-words embedder (hashed word counts, normalised). Not a model: it
/// lets the server and the filter's callouts be tested where no model is installed.
pub struct HashingEmbedder {
    pub dim: usize,
}

impl Embedder for HashingEmbedder {
    fn model_id(&self) -> &str {
        "hashing-test-double"
    }
    fn dim(&self) -> usize {
        self.dim
    }
    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError> {
        Ok(texts
            .iter()
            .map(|t| {
                let mut v = vec![0f32; self.dim];
                for w in t.to_lowercase().split(|c: char| !c.is_alphanumeric()).filter(|w| !w.is_empty()) {
                    let h = w.bytes().fold(0xcbf29ce484222325u64, |h, b| (h ^ b as u64).wrapping_mul(0x100000001b3));
                    v[(h % self.dim as u64) as usize] += 1.0;
                }
                let n = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-9);
                v.iter().map(|x| x / n).collect()
            })
            .collect())
    }
}

#[cfg(test)]
#[path = "../tests/embed_tests.rs"]
mod tests;
