//! Requests-per-minute and tokens-per-minute limits as token buckets in shared data, one per
//! key and kind (`semgate:rl:<kind>:<key id>`), refilled continuously at `limit / 60 s`, with
//! compare-and-swap so all workers share one bucket. The answer carries what OpenAI's
//! `x-ratelimit-*` headers say, so clients' retry logic works unchanged.
//!
//! A tokens bucket is charged the estimate up front and corrected by `adjust` with the actual
//! count; the correction may drive it below zero (a debt the refill pays back), so an
//! underestimate slows the next requests instead of being forgiven.

use super::{read_u64s, write_u64s};
use crate::core::store::{SetError, SharedData};

const MS_PER_MIN: u64 = 60_000;
/// Tokens are kept in thousandths so a refill of a few ms is not lost to rounding.
const MILLI: i128 = 1000;
const CAS_RETRIES: u32 = 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitKind {
    Requests,
    Tokens,
}

impl LimitKind {
    pub fn name(self) -> &'static str {
        match self {
            LimitKind::Requests => "requests",
            LimitKind::Tokens => "tokens",
        }
    }
}

/// The state of one bucket after a take: what the `x-ratelimit-*` headers report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateDecision {
    pub allowed: bool,
    pub kind: LimitKind,
    /// The per-minute limit.
    pub limit: u64,
    /// Whole units left now (0 when in debt).
    pub remaining: u64,
    /// Until the bucket is full again.
    pub reset_ms: u64,
    /// On refusal: until the asked amount is available (the `retry-after`).
    pub retry_after_ms: u64,
}

impl RateDecision {
    /// `x-ratelimit-limit-<kind>`, `x-ratelimit-remaining-<kind>`, `x-ratelimit-reset-<kind>`.
    pub fn headers(&self) -> [(String, String); 3] {
        let k = self.kind.name();
        [
            (format!("x-ratelimit-limit-{k}"), self.limit.to_string()),
            (format!("x-ratelimit-remaining-{k}"), self.remaining.to_string()),
            (format!("x-ratelimit-reset-{k}"), format_duration(self.reset_ms)),
        ]
    }

    /// The same headers with static names (for replies built without allocating names).
    pub fn named_headers(&self) -> Vec<(&'static str, String)> {
        let names = match self.kind {
            LimitKind::Requests => ["x-ratelimit-limit-requests", "x-ratelimit-remaining-requests", "x-ratelimit-reset-requests"],
            LimitKind::Tokens => ["x-ratelimit-limit-tokens", "x-ratelimit-remaining-tokens", "x-ratelimit-reset-tokens"],
        };
        let [a, b, c] = self.headers();
        vec![(names[0], a.1), (names[1], b.1), (names[2], c.1)]
    }

    /// Whole seconds for `retry-after`, at least 1.
    pub fn retry_after_s(&self) -> u64 {
        self.retry_after_ms.div_ceil(1000).max(1)
    }
}

/// OpenAI's reset format (Go durations): `20ms`, `1s`, `6m0s`, `1h2m3s`; seconds rounded up.
pub fn format_duration(ms: u64) -> String {
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let s = ms.div_ceil(1000);
    let (h, m, s) = (s / 3600, (s / 60) % 60, s % 60);
    match (h, m) {
        (0, 0) => format!("{s}s"),
        (0, _) => format!("{m}m{s}s"),
        _ => format!("{h}h{m}m{s}s"),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BucketError {
    #[error("the rate bucket kept changing under concurrent writers")]
    Contended,
    #[error("the host refused a shared-data call")]
    Host,
}

pub struct RateBuckets<'a, S: SharedData> {
    pub kv: &'a S,
}

/// Stored: (tokens x1000 as i64 bits, last refill ms).
#[derive(Clone, Copy)]
struct Bucket {
    milli: i128,
    at_ms: u64,
}

impl<'a, S: SharedData> RateBuckets<'a, S> {
    fn key(kind: LimitKind, id: &str) -> String {
        format!("semgate:rl:{}:{id}", kind.name())
    }

    fn read(&self, key: &str, limit: u64, now_ms: u64) -> (Bucket, Option<u32>) {
        let full = Bucket { milli: limit as i128 * MILLI, at_ms: now_ms };
        match self.kv.get(key) {
            Some((bytes, cas)) => match read_u64s::<2>(&bytes) {
                Some([m, at]) => (refill(Bucket { milli: m as i64 as i128, at_ms: at }, limit, now_ms), Some(cas)),
                None => (full, Some(cas)),
            },
            None => (full, None),
        }
    }

    fn write(&self, key: &str, b: Bucket, cas: Option<u32>) -> Result<bool, BucketError> {
        let milli = b.milli.clamp(i64::MIN as i128, i64::MAX as i128) as i64;
        match self.kv.set(key, &write_u64s(&[milli as u64, b.at_ms]), cas) {
            Ok(()) => Ok(true),
            Err(SetError::CasMismatch) => Ok(false),
            Err(SetError::Host) => Err(BucketError::Host),
        }
    }

    /// Take `amount` (1 for requests, the estimate for tokens) if the bucket holds it.
    /// A refused take changes nothing.
    pub fn take(
        &self,
        kind: LimitKind,
        id: &str,
        limit: u64,
        amount: u64,
        now_ms: u64,
    ) -> Result<RateDecision, BucketError> {
        let key = Self::key(kind, id);
        for _ in 0..CAS_RETRIES {
            let (mut b, cas) = self.read(&key, limit, now_ms);
            let want = amount as i128 * MILLI;
            // A request larger than the whole bucket can run only from a full bucket.
            let need = want.min(limit as i128 * MILLI);
            if b.milli < need {
                let missing = (need - b.milli) as u128;
                let retry = (missing * MS_PER_MIN as u128).div_ceil(limit.max(1) as u128 * MILLI as u128) as u64;
                return Ok(decision(kind, false, b, limit, retry));
            }
            b.milli -= want;
            if self.write(&key, b, cas)? {
                return Ok(decision(kind, true, b, limit, 0));
            }
        }
        Err(BucketError::Contended)
    }

    /// Correct a tokens bucket once the actual count is known: `delta = actual - estimate`
    /// (positive takes more, possibly into debt; negative gives back, up to full).
    pub fn adjust(&self, kind: LimitKind, id: &str, limit: u64, delta: i64, now_ms: u64) -> Result<(), BucketError> {
        let key = Self::key(kind, id);
        for _ in 0..CAS_RETRIES {
            let (mut b, cas) = self.read(&key, limit, now_ms);
            b.milli = (b.milli - delta as i128 * MILLI).min(limit as i128 * MILLI);
            if self.write(&key, b, cas)? {
                return Ok(());
            }
        }
        Err(BucketError::Contended)
    }
}

fn refill(b: Bucket, limit: u64, now_ms: u64) -> Bucket {
    let elapsed = now_ms.saturating_sub(b.at_ms) as i128;
    let full = limit as i128 * MILLI;
    // limit per minute = limit * 1000 milli-units per 60_000 ms.
    let milli = (b.milli + elapsed * limit as i128 * MILLI / MS_PER_MIN as i128).min(full.max(b.milli));
    Bucket { milli, at_ms: now_ms.max(b.at_ms) }
}

fn decision(kind: LimitKind, allowed: bool, b: Bucket, limit: u64, retry_after_ms: u64) -> RateDecision {
    let full = limit as i128 * MILLI;
    let missing = (full - b.milli).max(0) as u128;
    let reset_ms = (missing * MS_PER_MIN as u128).div_ceil(limit.max(1) as u128 * MILLI as u128) as u64;
    RateDecision { allowed, kind, limit, remaining: (b.milli.max(0) / MILLI) as u64, reset_ms, retry_after_ms }
}

#[cfg(test)]
#[path = "tests/bucket_tests.rs"]
mod tests;
