//! The shared exact tier: the filter's exact-cache key (hex blake3 of the normalised request,
//! tenant scope included) -> the stored response, so a request answered through one Envoy
//! replica is a hit on every other replica that shares this sidecar.
//!
//! Bounded twice, by entries and by bytes (key + response JSON); when either bound is
//! reached the oldest stored entry goes (FIFO: with one TTL per route, the oldest is also the
//! first to expire, so expired entries leave first). Expired entries read as misses.
//! In memory only: the vector journal keeps every answer for the semantic layer, and a cold
//! exact tier after a restart costs one semantic lookup per request, not a provider call.

use serde_json::Value;
use std::collections::{HashMap, VecDeque};

#[derive(Debug, Clone, PartialEq)]
pub struct ExactEntry {
    pub response: Value,
    pub created_ms: u64,
    pub expires_ms: u64,
    bytes: usize,
}

pub struct ExactTier {
    max_entries: usize,
    max_bytes: usize,
    bytes: usize,
    map: HashMap<String, ExactEntry>,
    /// Insertion order; a key stored again is pushed again and its stale position skipped.
    order: VecDeque<(String, u64)>,
}

impl ExactTier {
    pub fn new(max_entries: usize, max_bytes: usize) -> Self {
        ExactTier { max_entries, max_bytes, bytes: 0, map: HashMap::new(), order: VecDeque::new() }
    }

    pub fn get(&self, key: &str, now_ms: u64) -> Option<&ExactEntry> {
        self.map.get(key).filter(|e| e.expires_ms > now_ms)
    }

    /// Keep `response` under `key`; false when it alone is over the byte bound.
    pub fn insert(&mut self, key: String, response: Value, now_ms: u64, ttl_ms: u64) -> bool {
        let bytes = key.len() + response.to_string().len();
        if bytes > self.max_bytes || self.max_entries == 0 {
            return false;
        }
        self.remove(&key);
        while self.map.len() >= self.max_entries || self.bytes + bytes > self.max_bytes {
            if !self.evict_oldest() {
                break;
            }
        }
        self.bytes += bytes;
        self.order.push_back((key.clone(), now_ms));
        // A key stored again leaves its old position behind; drop those before they
        // outnumber the live ones, so the bookkeeping stays as bounded as the tier.
        if self.order.len() > 2 * self.map.len() + 64 {
            let map = &self.map;
            self.order.retain(|(k, created)| k != &key && map.get(k).is_some_and(|e| e.created_ms == *created));
            self.order.push_back((key.clone(), now_ms));
        }
        self.map.insert(key, ExactEntry { response, created_ms: now_ms, expires_ms: now_ms + ttl_ms, bytes });
        true
    }

    fn remove(&mut self, key: &str) {
        if let Some(old) = self.map.remove(key) {
            self.bytes -= old.bytes;
        }
    }

    fn evict_oldest(&mut self) -> bool {
        while let Some((key, created)) = self.order.pop_front() {
            // Skip positions left behind by a key stored again since.
            if self.map.get(&key).is_some_and(|e| e.created_ms == created) {
                self.remove(&key);
                return true;
            }
        }
        false
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

#[cfg(test)]
#[path = "tests/exact_tests.rs"]
mod tests;
