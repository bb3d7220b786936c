//! The embedding queue under load: shedding by deadline, dropping expired and abandoned work,
//! batching what waits, lookups before stores.

use super::*;
use crate::embed::HashingEmbedder;
use std::sync::atomic::AtomicUsize;

/// An embedder that takes `ms` per call and records each call's batch.
#[derive(Default)]
struct Slow {
    ms: u64,
    calls: Mutex<Vec<Vec<String>>>,
    running: AtomicUsize,
}

impl Embedder for Slow {
    fn model_id(&self) -> &str {
        "slow"
    }
    fn dim(&self) -> usize {
        8
    }
    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError> {
        self.running.fetch_add(1, Ordering::SeqCst);
        self.calls.lock().unwrap().push(texts.iter().map(|t| t.to_string()).collect());
        std::thread::sleep(Duration::from_millis(self.ms));
        self.running.fetch_sub(1, Ordering::SeqCst);
        HashingEmbedder { dim: 8 }.embed(texts)
    }
}

fn slow(ms: u64) -> Arc<Slow> {
    Arc::new(Slow { ms, calls: Mutex::new(Vec::new()), running: AtomicUsize::new(0) })
}

async fn wait_until(f: impl Fn() -> bool) {
    for _ in 0..500 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    panic!("condition not reached");
}

#[tokio::test]
async fn texts_waiting_together_are_embedded_in_one_pass() {
    let model = slow(50);
    let q = EmbedQueue::new(model.clone(), 1, 16, 64);
    // Occupy the worker, then queue five texts behind it.
    let first = tokio::spawn({
        let q = q.clone();
        async move { q.embed("first".into(), Priority::Lookup, None).await }
    });
    wait_until(|| model.running.load(Ordering::SeqCst) == 1).await;
    let rest: Vec<_> = (0..5)
        .map(|i| {
            let q = q.clone();
            tokio::spawn(async move { q.embed(format!("text {i}"), Priority::Lookup, None).await })
        })
        .collect();
    assert!(first.await.unwrap().is_ok());
    for r in rest {
        assert!(r.await.unwrap().is_ok());
    }
    let calls = model.calls.lock().unwrap().clone();
    assert_eq!(calls.len(), 2, "{calls:?}");
    assert_eq!(calls[1].len(), 5);
    assert_eq!(q.stats().batches.load(Ordering::Relaxed), 2);
}

#[tokio::test]
async fn a_lookup_that_cannot_meet_its_deadline_is_shed_at_once() {
    let model = slow(40);
    let q = EmbedQueue::new(model.clone(), 1, 1, 64);
    // One pass teaches the queue what a text costs.
    q.embed("warm".into(), Priority::Lookup, None).await.unwrap();
    let busy: Vec<_> = (0..3)
        .map(|i| {
            let q = q.clone();
            tokio::spawn(async move { q.embed(format!("busy {i}"), Priority::Lookup, None).await })
        })
        .collect();
    wait_until(|| model.running.load(Ordering::SeqCst) == 1).await;
    let deadline = Instant::now() + Duration::from_millis(20);
    let r = q.embed("late".into(), Priority::Lookup, Some(deadline)).await;
    assert!(matches!(r, Err(QueueError::Shed)), "{r:?}");
    assert!(Instant::now() < deadline, "shed only after the deadline");
    assert_eq!(q.stats().shed.load(Ordering::Relaxed), 1);
    for b in busy {
        assert!(b.await.unwrap().is_ok());
    }
    assert!(!model.calls.lock().unwrap().iter().flatten().any(|t| t == "late"));
}

#[tokio::test]
async fn a_full_queue_sheds() {
    let model = slow(30);
    let q = EmbedQueue::new(model.clone(), 1, 1, 2);
    let spawn = |i: usize| {
        let q = q.clone();
        tokio::spawn(async move { q.embed(format!("t{i}"), Priority::Store, None).await })
    };
    let mut held = vec![spawn(0)];
    wait_until(|| model.running.load(Ordering::SeqCst) == 1).await;
    held.extend([spawn(1), spawn(2)]);
    wait_until(|| q.depth() == 2).await;
    assert!(matches!(q.embed("one more".into(), Priority::Store, None).await, Err(QueueError::Shed)));
    for h in held {
        assert!(h.await.unwrap().is_ok());
    }
}

#[tokio::test]
async fn expired_and_abandoned_texts_cost_no_forward_pass() {
    let model = slow(60);
    let q = EmbedQueue::new(model.clone(), 1, 1, 64);
    let first = tokio::spawn({
        let q = q.clone();
        async move { q.embed("first".into(), Priority::Lookup, None).await }
    });
    wait_until(|| model.running.load(Ordering::SeqCst) == 1).await;
    // No cost is known yet, so this one is admitted; its deadline passes while it waits.
    let expiring = tokio::spawn({
        let q = q.clone();
        async move { q.embed("expiring".into(), Priority::Lookup, Some(Instant::now() + Duration::from_millis(5))).await }
    });
    // This caller gives up (its future is dropped) before the worker is free.
    let gone = tokio::spawn({
        let q = q.clone();
        async move { q.embed("gone".into(), Priority::Lookup, None).await }
    });
    wait_until(|| q.depth() == 2).await;
    gone.abort();
    assert!(first.await.unwrap().is_ok());
    assert!(matches!(expiring.await.unwrap(), Err(QueueError::Expired)));
    wait_until(|| q.depth() == 0 && model.running.load(Ordering::SeqCst) == 0).await;
    let embedded: Vec<String> = model.calls.lock().unwrap().iter().flatten().cloned().collect();
    assert_eq!(embedded, vec!["first".to_string()]);
    assert_eq!(q.stats().expired.load(Ordering::Relaxed), 1);
    assert_eq!(q.stats().abandoned.load(Ordering::Relaxed), 1);
}

#[tokio::test]
async fn lookups_never_wait_for_a_store_pass() {
    let model = slow(200);
    let q = EmbedQueue::new(model.clone(), 1, 1, 64);
    let first = tokio::spawn({
        let q = q.clone();
        async move { q.embed("first".into(), Priority::Store, None).await }
    });
    wait_until(|| model.running.load(Ordering::SeqCst) == 1).await;
    let store = tokio::spawn({
        let q = q.clone();
        async move { q.embed("store".into(), Priority::Store, None).await }
    });
    wait_until(|| q.depth() == 1).await;
    // The store worker is busy and a store waits; a lookup goes to its own worker at once.
    let lookup = tokio::spawn({
        let q = q.clone();
        async move { q.embed("lookup".into(), Priority::Lookup, None).await }
    });
    wait_until(|| model.running.load(Ordering::SeqCst) == 2).await;
    for h in [first, store, lookup] {
        assert!(h.await.unwrap().is_ok());
    }
    let order: Vec<String> = model.calls.lock().unwrap().iter().flatten().cloned().collect();
    assert_eq!(order, vec!["first", "lookup", "store"]);
}

#[tokio::test]
async fn stores_alone_go_a_few_at_a_time_and_a_cached_text_skips_the_queue() {
    let model = slow(30);
    let q = EmbedQueue::new(model.clone(), 1, 16, 64);
    let first = tokio::spawn({
        let q = q.clone();
        async move { q.embed("first".into(), Priority::Store, None).await }
    });
    wait_until(|| model.running.load(Ordering::SeqCst) == 1).await;
    let stores: Vec<_> = (0..6)
        .map(|i| {
            let q = q.clone();
            tokio::spawn(async move { q.embed(format!("store {i}"), Priority::Store, None).await })
        })
        .collect();
    assert!(first.await.unwrap().is_ok());
    for s in stores {
        assert!(s.await.unwrap().is_ok());
    }
    let calls = model.calls.lock().unwrap().clone();
    assert!(calls.iter().all(|c| c.len() <= STORE_BATCH), "{calls:?}");

    // The store after a lookup of the same text finds its vector in the cache.
    let cached = Arc::new(crate::embed::CachedEmbedder::new(Slow { ms: 30, ..Default::default() }, 16));
    let q = EmbedQueue::new(cached.clone(), 1, 16, 64);
    let v = q.embed("how do I reset my password".into(), Priority::Lookup, None).await.unwrap();
    let again = q.embed("how do I reset my password".into(), Priority::Store, None).await.unwrap();
    assert_eq!(v, again);
    assert_eq!(cached.inner().calls.lock().unwrap().len(), 1);
    assert_eq!(q.stats().batches.load(Ordering::Relaxed), 1);
}
