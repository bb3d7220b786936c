//! Embeddings behind one trait: the local MiniLM model (feature `local-model`), any
//! OpenAI-compatible `/v1/embeddings` endpoint, and a hashing test double. Vectors are
//! L2-normalised, so a dot product is the cosine.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;

#[cfg(feature = "local-model")]
pub mod local;

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
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    struct Counting(AtomicUsize);
    impl Embedder for Counting {
        fn model_id(&self) -> &str {
            "counting"
        }
        fn dim(&self) -> usize {
            2
        }
        fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError> {
            self.0.fetch_add(texts.len(), Ordering::SeqCst);
            Ok(texts.iter().map(|t| vec![t.len() as f32, 1.0]).collect())
        }
    }

    #[test]
    fn cached_embedder_embeds_each_text_once_and_keeps_order() {
        let e = CachedEmbedder::new(Counting(AtomicUsize::new(0)), 100);
        let a = e.embed(&["x", "yy"]).unwrap();
        let b = e.embed(&["yy", "zzz", "x"]).unwrap();
        assert_eq!(a, vec![vec![1.0, 1.0], vec![2.0, 1.0]]);
        assert_eq!(b, vec![vec![2.0, 1.0], vec![3.0, 1.0], vec![1.0, 1.0]]);
        assert_eq!(e.inner.0.load(Ordering::SeqCst), 3);
    }

    /// Records every call, so tests see exactly what reached the model.
    #[derive(Default)]
    struct Recording {
        calls: Mutex<Vec<Vec<String>>>,
    }
    impl Recording {
        fn calls(&self) -> Vec<Vec<String>> {
            self.calls.lock().unwrap().clone()
        }
        fn texts_embedded(&self) -> usize {
            self.calls().iter().map(|c| c.len()).sum()
        }
    }
    impl Embedder for Recording {
        fn model_id(&self) -> &str {
            "recording"
        }
        fn dim(&self) -> usize {
            3
        }
        fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError> {
            self.calls.lock().unwrap().push(texts.iter().map(|t| t.to_string()).collect());
            HashingEmbedder { dim: 3 }.embed(texts)
        }
    }

    #[test]
    fn cached_embedder_calls_the_model_once_for_a_repeated_text() {
        let e = CachedEmbedder::new(Recording::default(), 100);
        let first = e.embed(&["How do I get a refund?"]).unwrap();
        let again = e.embed(&["How do I get a refund?"]).unwrap();
        let thrice = e.embed(&["How do I get a refund?", "How do I get a refund?"]).unwrap();
        assert_eq!(first, again);
        assert_eq!(thrice, vec![first[0].clone(), first[0].clone()]);
        assert_eq!(e.inner().calls(), vec![vec!["How do I get a refund?".to_string()]]);
        assert_eq!(e.model_id(), "recording");
        assert_eq!(e.dim(), 3);
    }

    #[test]
    fn cached_embedder_embeds_a_batch_duplicate_once() {
        let e = CachedEmbedder::new(Recording::default(), 100);
        let v = e.embed(&["a b", "c d", "a b", "e f", "c d"]).unwrap();
        assert_eq!(e.inner().calls(), vec![vec!["a b".to_string(), "c d".into(), "e f".into()]]);
        assert_eq!(v[0], v[2]);
        assert_eq!(v[1], v[4]);
        assert_eq!(v, HashingEmbedder { dim: 3 }.embed(&["a b", "c d", "a b", "e f", "c d"]).unwrap());
    }

    #[test]
    fn cached_embedder_stays_within_capacity_and_keeps_recently_used_texts() {
        let e = CachedEmbedder::new(Recording::default(), 4);
        for i in 0..50 {
            e.embed(&["hot text"]).unwrap(); // used all the time: must never be evicted
            e.embed(&[format!("text {i}").as_str()]).unwrap();
            assert!(e.len() <= 4, "{} entries", e.len());
        }
        let hot = e.inner().calls().iter().filter(|c| c[0] == "hot text").count();
        assert_eq!(hot, 1);
        assert_eq!(e.inner().texts_embedded(), 51);
        // an old text was evicted, so it is embedded again
        e.embed(&["text 0"]).unwrap();
        assert_eq!(e.inner().texts_embedded(), 52);
    }

    #[test]
    fn cached_embedder_bounds_any_capacity() {
        for capacity in 1..8 {
            let e = CachedEmbedder::new(Recording::default(), capacity);
            for i in 0..40 {
                let texts = [format!("t{i}"), format!("t{}", i / 2), format!("t{}", i % 3)];
                let refs: Vec<&str> = texts.iter().map(|t| t.as_str()).collect();
                let v = e.embed(&refs).unwrap();
                assert_eq!(v, HashingEmbedder { dim: 3 }.embed(&refs).unwrap());
                assert!(e.len() <= capacity, "capacity {capacity}: {} entries", e.len());
            }
            e.embed(&["same"]).unwrap();
            let before = e.inner().texts_embedded();
            e.embed(&["same"]).unwrap();
            assert_eq!(e.inner().texts_embedded(), before, "capacity {capacity}: the last text is cached");
        }
    }

    #[test]
    fn cached_embedder_with_no_capacity_passes_through() {
        let e = CachedEmbedder::new(Recording::default(), 0);
        e.embed(&["x y"]).unwrap();
        e.embed(&["x y"]).unwrap();
        assert_eq!(e.inner().texts_embedded(), 2);
        assert!(e.is_empty());
    }

    struct Broken(usize);
    impl Embedder for Broken {
        fn model_id(&self) -> &str {
            "broken"
        }
        fn dim(&self) -> usize {
            1
        }
        fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError> {
            if self.0 == 0 {
                return Err(EmbedError::Model("down".into()));
            }
            Ok(vec![vec![1.0]; texts.len().min(self.0)])
        }
    }

    #[test]
    fn cached_embedder_passes_errors_on_and_caches_nothing_then() {
        let e = CachedEmbedder::new(Broken(0), 10);
        assert!(matches!(e.embed(&["a"]), Err(EmbedError::Model(_))));
        assert!(e.is_empty());
        let short = CachedEmbedder::new(Broken(1), 10);
        let err = short.embed(&["a", "b"]).unwrap_err().to_string();
        assert!(err.contains("1 vectors for 2 texts"), "{err}");
        assert!(short.is_empty());
    }

    #[test]
    fn hashing_embedder_is_normalised_and_deterministic() {
        let e = HashingEmbedder { dim: 64 };
        let v = e.embed(&["How do I get a refund?", "how do i get a refund"]).unwrap();
        assert_eq!(v[0], v[1]);
        assert!((v[0].iter().map(|x| x * x).sum::<f32>() - 1.0).abs() < 1e-5);
    }
}
