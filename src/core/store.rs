//! The exact cache's bounded store, written against a compare-and-swap key/value map (Envoy
//! shared data in the filter, a `HashMap` in tests).
//!
//! Envoy shared data has no delete and no eviction, so the store is a fixed set of slots
//! (`semgate:c:<n>`, all created at start-up so every write is CAS-checked), grouped in sets
//! of `ways` slots; a key lives in set `hash % sets`. One more key, `semgate:c:bytes`, holds
//! the bytes held by all slots. A store reserves its bytes there before writing and, when
//! the budget would be exceeded, empties other slots (starting at a point derived from the
//! new key, so workers spread out) until it fits. So the memory held is at most `max_bytes`
//! plus one entry per concurrent writer between reserve and release, whatever the traffic.

use crate::core::entry::Entry;
use crate::core::key::CacheKey;

/// A compare-and-swap map. `get` returns the value and its version; `set` with `Some(cas)`
/// fails with `CasMismatch` if the value changed since it was read.
pub trait SharedData {
    fn get(&self, key: &str) -> Option<(Vec<u8>, u32)>;
    fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), SetError>;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetError {
    CasMismatch,
    Host,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreLimits {
    pub max_bytes: u64,
    pub max_entry_bytes: u64,
    pub slots: u32,
    pub ways: u32,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Lookup {
    Hit(Entry),
    Expired,
    Miss,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Stored {
    /// Live entries dropped to make room (in the set, or elsewhere for the byte budget).
    pub evicted: u32,
    /// Bytes held by the cache after this store.
    pub bytes_in_cache: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    #[error("entry of {0} bytes is over the per-entry limit")]
    TooLarge(u64),
    #[error("could not free enough room within the byte budget")]
    Full,
    #[error("the slot kept changing under concurrent writers")]
    Contended,
    #[error("the host refused a shared-data call")]
    Host,
}

const BYTES_KEY: &str = "semgate:c:bytes";
/// Slots an insert may empty looking for room before it gives up.
const MAX_EVICTION_STEPS: u32 = 256;
const MAX_CAS_RETRIES: u32 = 8;

pub struct CacheStore<'a, S: SharedData> {
    pub kv: &'a S,
    pub limits: StoreLimits,
}

fn slot_key(slot: u32) -> String {
    format!("semgate:c:{slot}")
}

impl<'a, S: SharedData> CacheStore<'a, S> {
    pub fn new(kv: &'a S, limits: StoreLimits) -> Self {
        CacheStore { kv, limits }
    }

    fn sets(&self) -> u32 {
        (self.limits.slots / self.limits.ways).max(1)
    }

    fn set_slots(&self, key: &CacheKey) -> impl Iterator<Item = u32> {
        let first = (key.prefix_u64() % self.sets() as u64) as u32 * self.limits.ways;
        first..first + self.limits.ways
    }

    /// Create every slot and the byte counter if absent, so later writes are all CAS-checked.
    /// Run at start-up, before traffic; idempotent across workers and restarts of a worker.
    pub fn init(&self) -> Result<(), StoreError> {
        if self.kv.get(BYTES_KEY).is_none() {
            self.kv.set(BYTES_KEY, &0u64.to_le_bytes(), None).map_err(|_| StoreError::Host)?;
        }
        for slot in 0..self.sets() * self.limits.ways {
            let k = slot_key(slot);
            if self.kv.get(&k).is_none() {
                self.kv.set(&k, &[], None).map_err(|_| StoreError::Host)?;
            }
        }
        Ok(())
    }

    pub fn bytes_in_cache(&self) -> u64 {
        self.kv.get(BYTES_KEY).map(|(v, _)| decode_u64(&v)).unwrap_or(0)
    }

    pub fn lookup(&self, key: &CacheKey, now_ms: u64) -> Lookup {
        for slot in self.set_slots(key) {
            let Some((bytes, _)) = self.kv.get(&slot_key(slot)) else {
                continue;
            };
            if Entry::peek_key(&bytes) != Some(*key) {
                continue;
            }
            return match Entry::decode(&bytes) {
                Ok(e) if e.is_expired(now_ms) => Lookup::Expired,
                Ok(e) => Lookup::Hit(e),
                Err(_) => Lookup::Miss,
            };
        }
        Lookup::Miss
    }

    pub fn insert(&self, entry: &Entry, now_ms: u64) -> Result<Stored, StoreError> {
        let bytes = entry.encode();
        let size = bytes.len() as u64;
        if size > self.limits.max_entry_bytes {
            return Err(StoreError::TooLarge(size));
        }
        for _ in 0..MAX_CAS_RETRIES {
            let (slot, victim_len, victim_cas, victim_live) = self.choose_victim(&entry.key, now_ms);
            let delta = size as i64 - victim_len as i64;
            let mut evicted = 0;
            if delta > 0 {
                evicted = self.reserve(delta as u64, slot, &entry.key)?;
            }
            match self.kv.set(&slot_key(slot), &bytes, victim_cas) {
                Ok(()) => {
                    if delta < 0 {
                        self.add_bytes(delta)?;
                    }
                    let evicted = evicted + u32::from(victim_live);
                    return Ok(Stored { evicted, bytes_in_cache: self.bytes_in_cache() });
                }
                Err(SetError::CasMismatch) => {
                    if delta > 0 {
                        self.add_bytes(-delta)?;
                    }
                }
                Err(SetError::Host) => {
                    if delta > 0 {
                        self.add_bytes(-delta)?;
                    }
                    return Err(StoreError::Host);
                }
            }
        }
        Err(StoreError::Contended)
    }

    /// The slot to write in the key's set: the same key, else an empty slot, else an expired
    /// one, else the oldest. Returns (slot, bytes it holds, its cas, whether it held a live entry
    /// of another key).
    fn choose_victim(&self, key: &CacheKey, now_ms: u64) -> (u32, u64, Option<u32>, bool) {
        let mut best: Option<(u8, u64, u32, u64, Option<u32>, bool)> = None; // (rank, created, slot, len, cas, live)
        for slot in self.set_slots(key) {
            let (bytes, cas) = match self.kv.get(&slot_key(slot)) {
                Some((b, c)) => (b, Some(c)),
                None => (Vec::new(), None),
            };
            let len = bytes.len() as u64;
            let (rank, created, live) = match Entry::peek_times(&bytes) {
                _ if Entry::peek_key(&bytes) == Some(*key) => (0, 0, false),
                None => (1, 0, false),
                Some((_, expires)) if expires <= now_ms => (2, 0, false),
                Some((created, _)) => (3, created, true),
            };
            if best.as_ref().map_or(true, |b| (rank, created) < (b.0, b.1)) {
                best = Some((rank, created, slot, len, cas, live));
            }
        }
        match best {
            Some((_, _, slot, len, cas, live)) => (slot, len, cas, live),
            None => (0, 0, None, false),
        }
    }

    /// Take `need` bytes from the budget, emptying other slots while it would overflow.
    fn reserve(&self, need: u64, protect: u32, key: &CacheKey) -> Result<u32, StoreError> {
        let total = self.sets() * self.limits.ways;
        let mut cursor = ((key.prefix_u64() >> 32) % total as u64) as u32;
        let mut evicted = 0;
        let mut steps = 0;
        loop {
            let (used, cas) = self.read_bytes();
            if used + need <= self.limits.max_bytes {
                match self.kv.set(BYTES_KEY, &(used + need).to_le_bytes(), cas) {
                    Ok(()) => return Ok(evicted),
                    Err(SetError::CasMismatch) => continue,
                    Err(SetError::Host) => return Err(StoreError::Host),
                }
            }
            if steps >= MAX_EVICTION_STEPS {
                return Err(StoreError::Full);
            }
            steps += 1;
            cursor = (cursor + 1) % total;
            if cursor == protect {
                continue;
            }
            let k = slot_key(cursor);
            if let Some((bytes, cas)) = self.kv.get(&k) {
                if !bytes.is_empty() && self.kv.set(&k, &[], Some(cas)).is_ok() {
                    self.add_bytes(-(bytes.len() as i64))?;
                    evicted += 1;
                }
            }
        }
    }

    fn read_bytes(&self) -> (u64, Option<u32>) {
        match self.kv.get(BYTES_KEY) {
            Some((v, cas)) => (decode_u64(&v), Some(cas)),
            None => (0, None),
        }
    }

    fn add_bytes(&self, delta: i64) -> Result<(), StoreError> {
        loop {
            let (used, cas) = self.read_bytes();
            let next = (used as i64 + delta).max(0) as u64;
            match self.kv.set(BYTES_KEY, &next.to_le_bytes(), cas) {
                Ok(()) => return Ok(()),
                Err(SetError::CasMismatch) => continue,
                Err(SetError::Host) => return Err(StoreError::Host),
            }
        }
    }
}

fn decode_u64(v: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    let n = v.len().min(8);
    a[..n].copy_from_slice(&v[..n]);
    u64::from_le_bytes(a)
}

#[cfg(test)]
#[path = "tests/store_tests.rs"]
pub(crate) mod tests;
