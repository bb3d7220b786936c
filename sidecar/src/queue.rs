//! The embedding queue: a fixed set of worker threads (about one per core) embeds queued texts,
//! several at a time in one forward pass. Overload degrades instead of collapsing:
//! - the queue is bounded; a text that would wait longer than its caller's deadline is refused
//!   at once (`Shed`), so the caller gets a fast miss instead of a late one;
//! - a text whose deadline passed while it waited, or whose caller has gone, is dropped before
//!   it costs a forward pass (`Expired`, `Abandoned`);
//! - lookups go before stores: a store only feeds later lookups, a lookup has a caller waiting.
//!   Stores have their own worker thread at the lowest CPU priority (nice 19), so a lookup never
//!   waits behind a store's forward pass, and stores use only CPU time that neither the lookups
//!   nor anything else on the machine (Envoy) wants; its batches are small (`STORE_BATCH`),
//!   while lookups are being shed stores do not run at all (`STORE_BACKOFF`), and a store waits
//!   at most `STORE_WAIT`;
//! - a text whose vector the embedder has cached (the store after a lookup of the same text)
//!   is answered at once, without a place in the queue.

use crate::embed::{EmbedError, Embedder};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// The expected wait exceeds the deadline, or the queue is full.
    #[error("overloaded: the embedding queue cannot meet the deadline")]
    Shed,
    /// The deadline passed while the text waited.
    #[error("deadline passed in the embedding queue")]
    Expired,
    #[error(transparent)]
    Embed(#[from] EmbedError),
    #[error("embedding worker stopped")]
    Stopped,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Priority {
    Lookup,
    Store,
}

struct Job {
    text: String,
    deadline: Option<Instant>,
    enqueued: Instant,
    tx: oneshot::Sender<Result<Vec<f32>, QueueError>>,
}

#[derive(Default)]
struct Pending {
    lookups: VecDeque<Job>,
    stores: VecDeque<Job>,
    /// Texts taken by workers and not yet answered.
    in_flight: usize,
    /// When the batches the workers run now should end (one entry per running batch).
    busy_until: Vec<Instant>,
}

/// At most this many stores in one pass of the store worker.
pub const STORE_BATCH: usize = 2;

/// After a lookup was shed, stores wait this long before they run again: under overload the
/// workers embed lookups (whose callers wait) and stores wait, then expire (`STORE_WAIT`).
pub const STORE_BACKOFF: Duration = Duration::from_millis(250);

/// The longest a store waits for a worker before it is dropped as expired.
pub const STORE_WAIT: Duration = Duration::from_secs(2);

/// Upper bounds of the batch-size and queue-wait histograms.
pub const BATCH_BUCKETS: [u64; 7] = [1, 2, 4, 8, 16, 32, 64];
pub const WAIT_BUCKETS_MS: [u64; 9] = [1, 2, 5, 10, 20, 50, 100, 250, 1000];

/// Counters for /metrics.
#[derive(Default)]
pub struct QueueStats {
    pub shed: AtomicU64,
    pub expired: AtomicU64,
    pub abandoned: AtomicU64,
    pub batches: AtomicU64,
    pub batch_texts: AtomicU64,
    /// Cumulative counts per `BATCH_BUCKETS` bound (and +Inf last).
    pub batch_size: [AtomicU64; 8],
    pub wait_us: AtomicU64,
    pub waits: AtomicU64,
    pub wait_ms: [AtomicU64; 10],
}

struct Shared {
    pending: Mutex<Pending>,
    /// A lookup is waiting (lookup workers), a store is waiting (the store worker).
    ready: Condvar,
    stores_ready: Condvar,
    embedder: Arc<dyn Embedder>,
    workers: usize,
    max_batch: usize,
    capacity: usize,
    /// Moving average of one forward pass's cost per text (µs), for the expected wait.
    per_text_us: AtomicU64,
    /// When a lookup was last shed, in µs since `epoch` (0: never).
    last_shed_us: AtomicU64,
    epoch: Instant,
    stats: QueueStats,
}

#[derive(Clone)]
pub struct EmbedQueue {
    shared: Arc<Shared>,
}

impl EmbedQueue {
    /// Starts `workers` lookup threads and one store thread. `capacity` bounds the texts waiting
    /// (lookups and stores).
    pub fn new(embedder: Arc<dyn Embedder>, workers: usize, max_batch: usize, capacity: usize) -> Self {
        let shared = Arc::new(Shared {
            pending: Mutex::new(Pending::default()),
            ready: Condvar::new(),
            stores_ready: Condvar::new(),
            embedder,
            workers: workers.max(1),
            max_batch: max_batch.max(1),
            capacity: capacity.max(1),
            per_text_us: AtomicU64::new(0),
            last_shed_us: AtomicU64::new(0),
            epoch: Instant::now(),
            stats: QueueStats::default(),
        });
        for i in 0..=shared.workers {
            let (s, stores) = (shared.clone(), i == shared.workers);
            let name = if stores { "embed-stores".to_string() } else { format!("embed-{i}") };
            let spawned = std::thread::Builder::new().name(name).spawn(move || work(&s, stores));
            if let Err(e) = spawned {
                eprintln!("semgate-sidecar: cannot start embedding worker {i}: {e}");
            }
        }
        EmbedQueue { shared }
    }

    pub fn stats(&self) -> &QueueStats {
        &self.shared.stats
    }

    /// Texts waiting now.
    pub fn depth(&self) -> usize {
        self.shared.pending.lock().map(|p| p.lookups.len() + p.stores.len()).unwrap_or(0)
    }

    /// How long a new lookup would wait for its vector, from the queue ahead of it and the
    /// recent cost per text (batches make this an upper estimate).
    pub fn expected_wait(&self) -> Duration {
        let Ok(p) = self.shared.pending.lock() else { return Duration::ZERO };
        self.wait_for(&p, p.lookups.len() + 1)
    }

    /// The time until `texts` more texts are embedded: what the running batches have left
    /// (by the recent cost per text), then `texts`, spread over the workers.
    fn wait_for(&self, p: &Pending, texts: usize) -> Duration {
        let per_text = self.shared.per_text_us.load(Ordering::Relaxed);
        let now = Instant::now();
        let running: u64 = p.busy_until.iter().map(|t| t.saturating_duration_since(now).as_micros() as u64).sum();
        Duration::from_micros((running + per_text * texts as u64) / self.shared.workers as u64)
    }

    /// The text's vector, or why there is none. `deadline` is when the caller stops waiting.
    pub async fn embed(
        &self,
        text: String,
        priority: Priority,
        deadline: Option<Instant>,
    ) -> Result<Vec<f32>, QueueError> {
        if let Some(v) = self.shared.embedder.cached(&text) {
            return Ok(v);
        }
        let (tx, rx) = oneshot::channel();
        {
            let mut p = self.shared.pending.lock().map_err(|_| QueueError::Stopped)?;
            // Stores never delay a lookup, so a lookup only counts the lookups waiting.
            let waiting = p.lookups.len() + usize::from(priority == Priority::Store) * p.stores.len();
            // A store that would wait past STORE_WAIT is refused now rather than dropped later.
            let deadline = match priority {
                Priority::Store => Some(deadline.unwrap_or_else(|| Instant::now() + STORE_WAIT)),
                Priority::Lookup => deadline,
            };
            let ahead = p.lookups.len() + usize::from(priority == Priority::Store) * p.stores.len();
            // An idle queue always takes a lookup: its wait is only its own pass, and the cost
            // estimate is refreshed only by passes that run (one slow pass must not shed every
            // lookup after it).
            let idle = priority == Priority::Lookup && p.busy_until.is_empty() && p.lookups.is_empty();
            let late = !idle && deadline.is_some_and(|d| Instant::now() + self.wait_for(&p, ahead + 1) > d);
            if waiting >= self.shared.capacity || late {
                self.shared.stats.shed.fetch_add(1, Ordering::Relaxed);
                if priority == Priority::Lookup {
                    let at = self.shared.epoch.elapsed().as_micros() as u64;
                    self.shared.last_shed_us.store(at.max(1), Ordering::Relaxed);
                }
                return Err(QueueError::Shed);
            }
            let job = Job { text, deadline, enqueued: Instant::now(), tx };
            match priority {
                Priority::Lookup => p.lookups.push_back(job),
                Priority::Store => p.stores.push_back(job),
            }
        }
        match priority {
            Priority::Lookup => self.shared.ready.notify_one(),
            Priority::Store => self.shared.stores_ready.notify_one(),
        }
        rx.await.map_err(|_| QueueError::Stopped)?
    }
}

fn bucket(bounds: &[u64], counts: &[AtomicU64], v: u64) {
    for (i, b) in bounds.iter().enumerate() {
        if v <= *b {
            counts[i].fetch_add(1, Ordering::Relaxed);
        }
    }
    counts[bounds.len()].fetch_add(1, Ordering::Relaxed);
}

/// The calling thread at the lowest CPU priority (Linux: nice is per thread).
fn lowest_priority() {
    #[cfg(target_os = "linux")]
    // SAFETY: plain syscalls on the calling thread's own id.
    unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        libc::setpriority(libc::PRIO_PROCESS, tid, 19);
    }
}

/// A worker: lookups only, several to a pass; or (`stores`) the store worker, at the lowest
/// CPU priority, a few stores to a pass.
fn work(s: &Shared, stores: bool) {
    if stores {
        lowest_priority();
    }
    loop {
        let (batch, busy_until): (Vec<Job>, Option<Instant>) = {
            let Ok(mut p) = s.pending.lock() else { return };
            loop {
                if !stores {
                    while p.lookups.is_empty() {
                        p = match s.ready.wait(p) {
                            Ok(p) => p,
                            Err(_) => return,
                        };
                    }
                    break;
                }
                while p.stores.is_empty() {
                    p = match s.stores_ready.wait(p) {
                        Ok(p) => p,
                        Err(_) => return,
                    };
                }
                // Run the stores unless a lookup was shed within STORE_BACKOFF.
                let shed = s.last_shed_us.load(Ordering::Relaxed);
                let since = s.epoch.elapsed().saturating_sub(Duration::from_micros(shed));
                if shed == 0 || since >= STORE_BACKOFF {
                    break;
                }
                p = match s.stores_ready.wait_timeout(p, STORE_BACKOFF - since) {
                    Ok((p, _)) => p,
                    Err(_) => return,
                };
            }
            let now = Instant::now();
            let mut batch = Vec::new();
            let size = if stores { s.max_batch.min(STORE_BATCH) } else { s.max_batch };
            while batch.len() < size {
                let next = if stores { p.stores.pop_front() } else { p.lookups.pop_front() };
                let Some(job) = next else { break };
                if job.tx.is_closed() {
                    s.stats.abandoned.fetch_add(1, Ordering::Relaxed);
                } else if job.deadline.is_some_and(|d| d <= now) {
                    s.stats.expired.fetch_add(1, Ordering::Relaxed);
                    let _ = job.tx.send(Err(QueueError::Expired));
                } else {
                    batch.push(job);
                }
            }
            p.in_flight += batch.len();
            // Only lookup passes delay a lookup (the store worker yields the CPU to them).
            let until = (!batch.is_empty() && !stores).then(|| {
                let per_text = s.per_text_us.load(Ordering::Relaxed);
                now + Duration::from_micros(per_text * batch.len() as u64)
            });
            p.busy_until.extend(until);
            (batch, until)
        };
        if batch.is_empty() {
            continue;
        }
        let started = Instant::now();
        for job in &batch {
            let waited = started.duration_since(job.enqueued);
            s.stats.wait_us.fetch_add(waited.as_micros() as u64, Ordering::Relaxed);
            s.stats.waits.fetch_add(1, Ordering::Relaxed);
            bucket(&WAIT_BUCKETS_MS, &s.stats.wait_ms, waited.as_millis() as u64);
        }
        let texts: Vec<&str> = batch.iter().map(|j| j.text.as_str()).collect();
        let result = s.embedder.embed(&texts);
        let per_text = started.elapsed().as_micros() as u64 / batch.len() as u64;
        // A moving average over about eight lookup batches: follows load changes, ignores one
        // outlier (a store pass at the lowest priority says nothing about a lookup's wait).
        if !stores {
            let old = s.per_text_us.load(Ordering::Relaxed);
            s.per_text_us.store(if old == 0 { per_text } else { (old * 7 + per_text) / 8 }, Ordering::Relaxed);
        }
        s.stats.batches.fetch_add(1, Ordering::Relaxed);
        s.stats.batch_texts.fetch_add(batch.len() as u64, Ordering::Relaxed);
        bucket(&BATCH_BUCKETS, &s.stats.batch_size, batch.len() as u64);
        let n = batch.len();
        match result {
            Ok(vectors) if vectors.len() == n => {
                for (job, v) in batch.into_iter().zip(vectors) {
                    let _ = job.tx.send(Ok(v));
                }
            }
            Ok(vectors) => {
                for job in batch {
                    let reason = format!("embedder returned {} vectors for {n} texts", vectors.len());
                    let _ = job.tx.send(Err(QueueError::Embed(EmbedError::Model(reason))));
                }
            }
            Err(e) => {
                let reason = e.to_string();
                for job in batch {
                    let _ = job.tx.send(Err(QueueError::Embed(EmbedError::Model(reason.clone()))));
                }
            }
        }
        if let Ok(mut p) = s.pending.lock() {
            p.in_flight -= n;
            if let Some(i) = busy_until.and_then(|b| p.busy_until.iter().position(|t| *t == b)) {
                p.busy_until.swap_remove(i);
            }
        }
    }
}

#[cfg(test)]
#[path = "tests/queue_tests.rs"]
mod tests;
