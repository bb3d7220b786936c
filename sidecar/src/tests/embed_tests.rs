//! Unit tests of the embedders' shared parts (cache, test double).

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
