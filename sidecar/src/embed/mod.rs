//! Embeddings behind one trait: the local MiniLM model (feature `local-model`), any
//! OpenAI-compatible `/v1/embeddings` endpoint, and a hashing test double. Vectors are
//! L2-normalised, so a dot product is the cosine.

use std::collections::HashMap;
use std::sync::Mutex;

#[derive(Debug, thiserror::Error)]
pub enum EmbedError {
    #[error("model: {0}")]
    Model(String),
    #[error("embedding service: {0}")]
    Remote(String),
}

pub trait Embedder: Send + Sync {
    fn model_id(&self) -> &str;
    fn dim(&self) -> usize;
    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError>;
}

/// Identical texts are embedded once: a bounded map from text to vector.
pub struct CachedEmbedder<E: Embedder> {
    inner: E,
    capacity: usize,
    cache: Mutex<HashMap<String, Vec<f32>>>,
}

impl<E: Embedder> CachedEmbedder<E> {
    pub fn new(inner: E, capacity: usize) -> Self {
        CachedEmbedder { inner, capacity, cache: Mutex::new(HashMap::new()) }
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
        let mut out: Vec<Option<Vec<f32>>> = {
            let cache = self.cache.lock().map_err(|_| EmbedError::Model("cache lock poisoned".into()))?;
            texts.iter().map(|t| cache.get(*t).cloned()).collect()
        };
        let missing: Vec<&str> = texts.iter().zip(&out).filter(|(_, v)| v.is_none()).map(|(t, _)| *t).collect();
        if !missing.is_empty() {
            let fresh = self.inner.embed(&missing)?;
            let mut cache = self.cache.lock().map_err(|_| EmbedError::Model("cache lock poisoned".into()))?;
            if cache.len() + fresh.len() > self.capacity {
                cache.clear(); // simple and bounded: a full cache starts over
            }
            let mut fresh = fresh.into_iter();
            for (slot, text) in out.iter_mut().zip(texts) {
                if slot.is_none() {
                    let v =
                        fresh.next().ok_or_else(|| EmbedError::Model("embedder returned too few vectors".into()))?;
                    cache.insert((*text).to_string(), v.clone());
                    *slot = Some(v);
                }
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

    #[test]
    fn hashing_embedder_is_normalised_and_deterministic() {
        let e = HashingEmbedder { dim: 64 };
        let v = e.embed(&["How do I get a refund?", "how do i get a refund"]).unwrap();
        assert_eq!(v[0], v[1]);
        assert!((v[0].iter().map(|x| x * x).sum::<f32>() - 1.0).abs() < 1e-5);
    }
}
