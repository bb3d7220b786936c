//! Shared server state: counters (atomics), global error-injection controls and
//! hold tokens.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use hyper::HeaderMap;
use serde::Serialize;
use tokio::sync::watch;

use crate::config::Config;

/// How long a held response waits for `POST /release/TOKEN` before going on anyway.
pub const HOLD_TIMEOUT: Duration = Duration::from_secs(30);

pub struct App {
    pub cfg: Config,
    /// `Bearer KEY` when `--require-key` is set.
    pub expected_auth: Option<Vec<u8>>,
    pub stats: Stats,
    pub controls: Controls,
    pub holds: Holds,
    /// Serial number of chat requests (the `n` in `Answer #n`).
    pub serial: AtomicU64,
    /// Google's token endpoint for service-account keys.
    pub oauth: crate::oauth::OAuth,
}

impl App {
    pub fn new(cfg: Config) -> App {
        let public_key = cfg
            .oauth_public_key
            .as_ref()
            .map(|path| std::fs::read(path).unwrap_or_else(|e| panic!("--oauth-public-key {path}: {e}")));
        App {
            oauth: crate::oauth::OAuth::new(cfg.oauth_token_ttl_s, public_key),
            expected_auth: cfg.require_key.as_ref().map(|k| format!("Bearer {k}").into_bytes()),
            cfg,
            stats: Stats::default(),
            controls: Controls::default(),
            holds: Holds::default(),
            serial: AtomicU64::new(0),
        }
    }

    pub fn next_serial(&self) -> u64 {
        self.serial.fetch_add(1, Relaxed) + 1
    }

    /// `POST /reset`: zero counters and serial numbers, clear controls, release holds.
    pub fn reset(&self) {
        self.stats.reset();
        self.controls.reset();
        self.serial.store(0, Relaxed);
        self.holds.release_all();
    }
}

// ---------------------------------------------------------------- counters

const STATUS_SLOTS: usize = 600;

pub struct Stats {
    pub started: AtomicU64,
    pub completed: AtomicU64,
    pub aborted: AtomicU64,
    pub connections: AtomicU64,
    pub chat_requests: AtomicU64,
    pub stream_requests: AtomicU64,
    pub embedding_requests: AtomicU64,
    /// Texts embedded in 200 answers.
    pub embedding_inputs: AtomicU64,
    /// Requests to Anthropic's `/v1/messages`.
    pub anthropic_requests: AtomicU64,
    /// Requests to Gemini's and Vertex's `generateContent` and `streamGenerateContent`.
    pub gemini_requests: AtomicU64,
    pub unauthorized: AtomicU64,
    by_status: Box<[AtomicU64]>,
    last: Mutex<Last>,
}

#[derive(Default)]
struct Last {
    authorization: String,
    path: String,
    /// Headers a gateway must not forward (the tests check it strips them): their values.
    accept_encoding: String,
    x_semgate_cache: String,
}

impl Default for Stats {
    fn default() -> Self {
        Stats {
            started: AtomicU64::new(0),
            completed: AtomicU64::new(0),
            aborted: AtomicU64::new(0),
            connections: AtomicU64::new(0),
            chat_requests: AtomicU64::new(0),
            stream_requests: AtomicU64::new(0),
            embedding_requests: AtomicU64::new(0),
            embedding_inputs: AtomicU64::new(0),
            anthropic_requests: AtomicU64::new(0),
            gemini_requests: AtomicU64::new(0),
            unauthorized: AtomicU64::new(0),
            by_status: (0..STATUS_SLOTS).map(|_| AtomicU64::new(0)).collect(),
            last: Mutex::new(Last::default()),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Replaces `dst` with `src` only when they differ, so the steady state of a
/// benchmark (same path, same key every time) does not allocate.
fn set_if_changed(dst: &mut String, src: &[u8]) {
    if dst.as_bytes() != src {
        dst.clear();
        dst.push_str(&String::from_utf8_lossy(src));
    }
}

impl Stats {
    pub fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Relaxed);
    }

    pub fn count_status(&self, status: u16) {
        if let Some(slot) = self.by_status.get(usize::from(status)) {
            slot.fetch_add(1, Relaxed);
        }
    }

    pub fn record_last(&self, headers: &HeaderMap, path: &str) {
        let value = |name: &str| headers.get(name).map_or(&b""[..], |v| v.as_bytes());
        let mut last = lock(&self.last);
        set_if_changed(&mut last.authorization, value("authorization"));
        set_if_changed(&mut last.path, path.as_bytes());
        set_if_changed(&mut last.accept_encoding, value("accept-encoding"));
        set_if_changed(&mut last.x_semgate_cache, value("x-semgate-cache"));
    }

    fn reset(&self) {
        for c in [
            &self.started,
            &self.completed,
            &self.aborted,
            &self.connections,
            &self.chat_requests,
            &self.stream_requests,
            &self.embedding_requests,
            &self.embedding_inputs,
            &self.anthropic_requests,
            &self.gemini_requests,
            &self.unauthorized,
        ] {
            c.store(0, Relaxed);
        }
        for slot in self.by_status.iter() {
            slot.store(0, Relaxed);
        }
        *lock(&self.last) = Last::default();
    }

    pub fn to_json(&self) -> serde_json::Value {
        let by_status: serde_json::Map<String, serde_json::Value> = self
            .by_status
            .iter()
            .enumerate()
            .filter_map(|(code, n)| {
                let n = n.load(Relaxed);
                (n > 0).then(|| (code.to_string(), n.into()))
            })
            .collect();
        let last = lock(&self.last);
        serde_json::json!({
            "started": self.started.load(Relaxed),
            "completed": self.completed.load(Relaxed),
            "aborted": self.aborted.load(Relaxed),
            "connections": self.connections.load(Relaxed),
            "by_status": by_status,
            "chat_requests": self.chat_requests.load(Relaxed),
            "stream_requests": self.stream_requests.load(Relaxed),
            "embedding_requests": self.embedding_requests.load(Relaxed),
            "embedding_inputs": self.embedding_inputs.load(Relaxed),
            "anthropic_requests": self.anthropic_requests.load(Relaxed),
            "gemini_requests": self.gemini_requests.load(Relaxed),
            "last_authorization": last.authorization,
            "last_path": last.path,
            "last_accept_encoding": last.accept_encoding,
            "last_x_semgate_cache": last.x_semgate_cache,
            "unauthorized": self.unauthorized.load(Relaxed),
        })
    }
}

/// Counts one provider request: created at handler entry (`started`), then
/// moved into the response body. It counts `completed` once the last byte has
/// been handed to hyper, and `aborted` if it is dropped before that (client
/// went away, deliberate drop, handler cancelled).
pub struct Tracker {
    app: Arc<App>,
    done: bool,
}

impl Tracker {
    pub fn start(app: Arc<App>) -> Tracker {
        Stats::inc(&app.stats.started);
        Tracker { app, done: false }
    }

    pub fn complete(&mut self) {
        if !self.done {
            self.done = true;
            Stats::inc(&self.app.stats.completed);
        }
    }

    pub fn abort(&mut self) {
        if !self.done {
            self.done = true;
            Stats::inc(&self.app.stats.aborted);
        }
    }
}

impl Drop for Tracker {
    fn drop(&mut self) {
        self.abort();
    }
}

// ---------------------------------------------------------------- controls

/// Global error injection set by `POST /control`; applies to chat, embeddings, Anthropic and
/// Gemini requests (not to echo).
pub struct Controls {
    fail_status: AtomicU64,
    fail_fraction: AtomicU64, // f64 bits
    drop_fraction: AtomicU64, // f64 bits
    latency_ms: AtomicU64,
    /// Counts the requests it applies to since the last `/control` or `/reset`; drives the
    /// deterministic fraction decisions.
    seq: AtomicU64,
}

pub const DEFAULT_FAIL_STATUS: u16 = 503;

impl Default for Controls {
    fn default() -> Self {
        Controls {
            fail_status: AtomicU64::new(u64::from(DEFAULT_FAIL_STATUS)),
            fail_fraction: AtomicU64::new(0f64.to_bits()),
            drop_fraction: AtomicU64::new(0f64.to_bits()),
            latency_ms: AtomicU64::new(0),
            seq: AtomicU64::new(0),
        }
    }
}

/// Body of `POST /control` (every field optional) and of its answer.
#[derive(Debug, Default, serde::Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ControlSettings {
    pub fail_status: Option<u16>,
    pub fail_fraction: Option<f64>,
    pub drop_fraction: Option<f64>,
    pub latency_ms: Option<u64>,
}

/// What the global controls decided for one chat or embeddings request.
#[derive(Debug, Default, Clone, Copy)]
pub struct Injection {
    pub fail_status: Option<u16>,
    pub drop: bool,
    pub latency_ms: u64,
}

/// Request `n` (1-based) is hit iff `floor(n*f) != floor((n-1)*f)`: exactly
/// `f` of the requests, evenly spread (0.5 hits every second request).
fn hit(n: u64, fraction: f64) -> bool {
    fraction > 0.0 && (n as f64 * fraction).floor() != ((n - 1) as f64 * fraction).floor()
}

impl Controls {
    pub fn validate(s: &ControlSettings) -> Result<(), String> {
        if let Some(st) = s.fail_status {
            if !(400..=599).contains(&st) {
                return Err(format!("fail_status must be in 400..=599, got {st}"));
            }
        }
        for (name, f) in [("fail_fraction", s.fail_fraction), ("drop_fraction", s.drop_fraction)] {
            if let Some(f) = f {
                if !(0.0..=1.0).contains(&f) {
                    return Err(format!("{name} must be in [0, 1], got {f}"));
                }
            }
        }
        Ok(())
    }

    /// Applies the given fields (others unchanged) and restarts the decision counter.
    pub fn apply(&self, s: &ControlSettings) {
        if let Some(v) = s.fail_status {
            self.fail_status.store(u64::from(v), Relaxed);
        }
        if let Some(v) = s.fail_fraction {
            self.fail_fraction.store(v.to_bits(), Relaxed);
        }
        if let Some(v) = s.drop_fraction {
            self.drop_fraction.store(v.to_bits(), Relaxed);
        }
        if let Some(v) = s.latency_ms {
            self.latency_ms.store(v, Relaxed);
        }
        self.seq.store(0, Relaxed);
    }

    pub fn current(&self) -> ControlSettings {
        ControlSettings {
            fail_status: u16::try_from(self.fail_status.load(Relaxed)).ok(),
            fail_fraction: Some(f64::from_bits(self.fail_fraction.load(Relaxed))),
            drop_fraction: Some(f64::from_bits(self.drop_fraction.load(Relaxed))),
            latency_ms: Some(self.latency_ms.load(Relaxed)),
        }
    }

    fn reset(&self) {
        let d = Controls::default();
        for (dst, src) in [
            (&self.fail_status, &d.fail_status),
            (&self.fail_fraction, &d.fail_fraction),
            (&self.drop_fraction, &d.drop_fraction),
            (&self.latency_ms, &d.latency_ms),
            (&self.seq, &d.seq),
        ] {
            dst.store(src.load(Relaxed), Relaxed);
        }
    }

    /// Decides injection for the next provider request.
    pub fn decide(&self) -> Injection {
        let fail_f = f64::from_bits(self.fail_fraction.load(Relaxed));
        let drop_f = f64::from_bits(self.drop_fraction.load(Relaxed));
        let latency_ms = self.latency_ms.load(Relaxed);
        if fail_f <= 0.0 && drop_f <= 0.0 {
            return Injection { latency_ms, ..Injection::default() };
        }
        let n = self.seq.fetch_add(1, Relaxed) + 1;
        let drop = hit(n, drop_f);
        let fail_status = (!drop && hit(n, fail_f))
            .then(|| u16::try_from(self.fail_status.load(Relaxed)).unwrap_or(DEFAULT_FAIL_STATUS));
        Injection { fail_status, drop, latency_ms }
    }
}

// ---------------------------------------------------------------- holds

/// Hold tokens. A release is latched: releasing a token before the request
/// that holds on it arrives lets that request through at once (this avoids a
/// race between a test's request and its `/release`). `/reset` forgets all.
#[derive(Default)]
pub struct Holds {
    map: Mutex<HashMap<String, watch::Sender<bool>>>,
}

impl Holds {
    pub fn subscribe(&self, token: &str) -> watch::Receiver<bool> {
        let mut map = lock(&self.map);
        match map.get(token) {
            Some(tx) => tx.subscribe(),
            None => {
                let (tx, rx) = watch::channel(false);
                map.insert(token.to_owned(), tx);
                rx
            }
        }
    }

    /// Releases `token`; returns how many requests were waiting on it.
    pub fn release(&self, token: &str) -> usize {
        let mut map = lock(&self.map);
        let tx = map.entry(token.to_owned()).or_insert_with(|| watch::channel(false).0);
        tx.send_replace(true);
        tx.receiver_count()
    }

    fn release_all(&self) {
        let mut map = lock(&self.map);
        for tx in map.values() {
            tx.send_replace(true);
        }
        map.clear();
    }
}

/// Waits until the hold is released (or the sender is gone), at most [`HOLD_TIMEOUT`].
pub async fn wait_hold(mut rx: watch::Receiver<bool>) {
    let _ = tokio::time::timeout(HOLD_TIMEOUT, rx.wait_for(|released| *released)).await;
}

#[cfg(test)]
mod tests {
    use super::hit;

    #[test]
    fn fractions_are_deterministic() {
        let pattern = |f: f64| (1..=6).map(|n| hit(n, f)).collect::<Vec<_>>();
        assert_eq!(pattern(0.5), [false, true, false, true, false, true]);
        assert_eq!(pattern(1.0), [true; 6]);
        assert_eq!(pattern(0.0), [false; 6]);
        assert_eq!(pattern(1.0 / 3.0), [false, false, true, false, false, true]);
    }
}
