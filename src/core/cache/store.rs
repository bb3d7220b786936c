//! The exact cache's bounded store, written against a compare-and-swap key/value map (Envoy
//! shared data in the filter, a `HashMap` in tests).
//!
//! Envoy shared data has no delete and no eviction, so the store is a fixed number of sets,
//! each of `ways` entry slots (`semgate:c:<set>:<way>`) plus one small index
//! (`semgate:i:<set>`: per way the key's first 16 bytes, times and size), all created at
//! start-up. A key lives in set `hash % sets`. Reading shared data costs a host call that
//! copies the value into the VM, so the index is what makes it cheap: a lookup reads the
//! index and, only when a way matches, that one slot; a store reads the index once.
//!
//! One more key, `semgate:c:bytes`, holds the bytes the indexes say the slots hold. A store
//! reserves its bytes there before writing and, when the budget would be exceeded, empties
//! ways of other sets (starting at a point derived from the new key, so workers spread out)
//! until it fits. Index writes are compare-and-swap; a slot write is not (the index write
//! that follows it is), so two workers racing on one set can leave a way whose slot holds
//! another key than its index says: lookups check the full key in the slot, and the byte
//! count may be off by that one entry until the way is next replaced. The memory held is at
//! most `max_bytes` plus one entry per concurrent writer, whatever the traffic.

use crate::core::cache::entry::Entry;
use crate::core::cache::key::CacheKey;

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
    /// Bytes held by the cache after this store; `None` when this store did not change the
    /// count (an entry replaced by one of the same size), so no read is spent on it.
    pub bytes_in_cache: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    #[error("entry of {0} bytes is over the per-entry limit")]
    TooLarge(u64),
    #[error("could not free enough room within the byte budget")]
    Full,
    #[error("the set kept changing under concurrent writers")]
    Contended,
    #[error("the host refused a shared-data call")]
    Host,
}

const BYTES_KEY: &str = "semgate:c:bytes";
/// Sets an insert may visit looking for room before it gives up.
const MAX_EVICTION_STEPS: u32 = 256;
const MAX_CAS_RETRIES: u32 = 8;

/// What the index knows of one way. `len == 0` means empty.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct WayMeta {
    key16: [u8; 16],
    created_ms: u64,
    expires_ms: u64,
    len: u32,
}

const META_BYTES: usize = 16 + 8 + 8 + 4;

impl WayMeta {
    fn holds(&self, key: &CacheKey) -> bool {
        self.len > 0 && self.key16 == key.0[..16]
    }
}

/// A set's index: one `WayMeta` per way, fixed-size records.
#[derive(Debug, Clone, PartialEq, Eq)]
struct SetIndex {
    ways: Vec<WayMeta>,
}

impl SetIndex {
    fn empty(ways: u32) -> Self {
        SetIndex { ways: vec![WayMeta::default(); ways as usize] }
    }

    /// Anything malformed (another layout, a torn write) reads as an empty set.
    fn decode(bytes: &[u8], ways: u32) -> Self {
        if bytes.len() != ways as usize * META_BYTES {
            return Self::empty(ways);
        }
        let ways = bytes
            .chunks_exact(META_BYTES)
            .map(|c| {
                let mut key16 = [0u8; 16];
                key16.copy_from_slice(&c[..16]);
                WayMeta {
                    key16,
                    created_ms: le_u64(&c[16..24]),
                    expires_ms: le_u64(&c[24..32]),
                    len: le_u64(&c[32..36]) as u32,
                }
            })
            .collect();
        SetIndex { ways }
    }

    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.ways.len() * META_BYTES);
        for w in &self.ways {
            out.extend_from_slice(&w.key16);
            out.extend_from_slice(&w.created_ms.to_le_bytes());
            out.extend_from_slice(&w.expires_ms.to_le_bytes());
            out.extend_from_slice(&w.len.to_le_bytes());
        }
        out
    }

    /// The way to write `key` into: the same key, else an empty way, else an expired one,
    /// else the oldest. Returns (way, whether it held a live entry of another key).
    fn choose(&self, key: &CacheKey, now_ms: u64) -> (usize, bool) {
        let rank = |w: &WayMeta| match w {
            w if w.holds(key) => (0, 0),
            w if w.len == 0 => (1, 0),
            w if w.expires_ms <= now_ms => (2, 0),
            w => (3, w.created_ms),
        };
        match self.ways.iter().enumerate().min_by_key(|(_, w)| rank(w)) {
            Some((way, meta)) => (way, rank(meta).0 == 3),
            None => (0, false),
        }
    }
}

fn le_u64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    let n = b.len().min(8);
    a[..n].copy_from_slice(&b[..n]);
    u64::from_le_bytes(a)
}

pub struct CacheStore<'a, S: SharedData> {
    pub kv: &'a S,
    pub limits: StoreLimits,
}

fn slot_key(set: u32, way: usize) -> String {
    format!("semgate:c:{set}:{way}")
}

fn index_key(set: u32) -> String {
    format!("semgate:i:{set}")
}

impl<'a, S: SharedData> CacheStore<'a, S> {
    pub fn new(kv: &'a S, limits: StoreLimits) -> Self {
        CacheStore { kv, limits }
    }

    fn sets(&self) -> u32 {
        (self.limits.slots / self.limits.ways).max(1)
    }

    fn set_of(&self, key: &CacheKey) -> u32 {
        (key.prefix_u64() % self.sets() as u64) as u32
    }

    fn read_index(&self, set: u32) -> (SetIndex, Option<u32>) {
        match self.kv.get(&index_key(set)) {
            Some((bytes, cas)) => (SetIndex::decode(&bytes, self.limits.ways), Some(cas)),
            None => (SetIndex::empty(self.limits.ways), None),
        }
    }

    /// Create every index, slot and the byte counter if absent, so later index writes are all
    /// CAS-checked. Run at start-up, before traffic; idempotent across workers and reloads.
    pub fn init(&self) -> Result<(), StoreError> {
        let create = |k: &str, v: &[u8]| match self.kv.get(k) {
            Some(_) => Ok(()),
            None => self.kv.set(k, v, None).map_err(|_| StoreError::Host),
        };
        create(BYTES_KEY, &0u64.to_le_bytes())?;
        let empty = SetIndex::empty(self.limits.ways).encode();
        for set in 0..self.sets() {
            create(&index_key(set), &empty)?;
            for way in 0..self.limits.ways as usize {
                create(&slot_key(set, way), &[])?;
            }
        }
        Ok(())
    }

    pub fn bytes_in_cache(&self) -> u64 {
        self.read_bytes().0
    }

    pub fn lookup(&self, key: &CacheKey, now_ms: u64) -> Lookup {
        let set = self.set_of(key);
        let (index, _) = self.read_index(set);
        let Some(way) = index.ways.iter().position(|w| w.holds(key)) else { return Lookup::Miss };
        if index.ways[way].expires_ms <= now_ms {
            return Lookup::Expired;
        }
        let Some((bytes, _)) = self.kv.get(&slot_key(set, way)) else { return Lookup::Miss };
        // The index names only 16 bytes of the key, and a racing writer may have replaced
        // the slot: the stored entry's full key decides.
        if Entry::peek_key(&bytes) != Some(*key) {
            return Lookup::Miss;
        }
        match Entry::decode(&bytes) {
            Ok(e) if e.is_expired(now_ms) => Lookup::Expired,
            Ok(e) => Lookup::Hit(e),
            Err(_) => Lookup::Miss,
        }
    }

    pub fn insert(&self, entry: &Entry, now_ms: u64) -> Result<Stored, StoreError> {
        let bytes = entry.encode();
        let size = bytes.len() as u64;
        if size > self.limits.max_entry_bytes {
            return Err(StoreError::TooLarge(size));
        }
        let set = self.set_of(&entry.key);
        for _ in 0..MAX_CAS_RETRIES {
            let (mut index, cas) = self.read_index(set);
            let (way, replaced_live) = index.choose(&entry.key, now_ms);
            let delta = size as i64 - index.ways[way].len as i64;
            let mut evicted = 0;
            let mut bytes_now = None;
            if delta > 0 {
                let (n, total) = self.reserve(delta as u64, set, &entry.key)?;
                evicted = n;
                bytes_now = Some(total);
            }
            if self.kv.set(&slot_key(set, way), &bytes, None).is_err() {
                self.release(delta)?;
                return Err(StoreError::Host);
            }
            let mut key16 = [0u8; 16];
            key16.copy_from_slice(&entry.key.0[..16]);
            index.ways[way] =
                WayMeta { key16, created_ms: entry.created_ms, expires_ms: entry.expires_ms, len: size as u32 };
            match self.kv.set(&index_key(set), &index.encode(), cas) {
                Ok(()) => {
                    if delta < 0 {
                        bytes_now = Some(self.add_bytes(delta)?);
                    }
                    return Ok(Stored { evicted: evicted + u32::from(replaced_live), bytes_in_cache: bytes_now });
                }
                Err(SetError::CasMismatch) => self.release(delta)?,
                Err(SetError::Host) => {
                    self.release(delta)?;
                    return Err(StoreError::Host);
                }
            }
        }
        Err(StoreError::Contended)
    }

    fn release(&self, delta: i64) -> Result<(), StoreError> {
        if delta > 0 {
            self.add_bytes(-delta)?;
        }
        Ok(())
    }

    /// Take `need` bytes from the budget, emptying ways of other sets while it would overflow.
    /// Returns (entries evicted, bytes in cache after the reservation).
    fn reserve(&self, need: u64, protect: u32, key: &CacheKey) -> Result<(u32, u64), StoreError> {
        let sets = self.sets();
        let mut cursor = ((key.prefix_u64() >> 32) % sets as u64) as u32;
        let mut evicted = 0;
        let mut steps = 0;
        loop {
            let (used, cas) = self.read_bytes();
            if used + need <= self.limits.max_bytes {
                match self.kv.set(BYTES_KEY, &(used + need).to_le_bytes(), cas) {
                    Ok(()) => return Ok((evicted, used + need)),
                    Err(SetError::CasMismatch) => continue,
                    Err(SetError::Host) => return Err(StoreError::Host),
                }
            }
            if steps >= MAX_EVICTION_STEPS {
                return Err(StoreError::Full);
            }
            steps += 1;
            cursor = (cursor + 1) % sets;
            if cursor != protect {
                evicted += self.evict_oldest(cursor)?;
            }
        }
    }

    /// Empty the oldest way of a set; returns 1 if it freed an entry.
    fn evict_oldest(&self, set: u32) -> Result<u32, StoreError> {
        let (mut index, cas) = self.read_index(set);
        let Some((way, meta)) =
            index.ways.iter().enumerate().filter(|(_, w)| w.len > 0).min_by_key(|(_, w)| w.created_ms)
        else {
            return Ok(0);
        };
        let freed = meta.len as i64;
        index.ways[way] = WayMeta::default();
        if self.kv.set(&index_key(set), &index.encode(), cas).is_err() {
            return Ok(0);
        }
        // The index no longer names the slot; emptying it returns the memory.
        let _ = self.kv.set(&slot_key(set, way), &[], None);
        self.add_bytes(-freed)?;
        Ok(1)
    }

    fn read_bytes(&self) -> (u64, Option<u32>) {
        match self.kv.get(BYTES_KEY) {
            Some((v, cas)) => (le_u64(&v), Some(cas)),
            None => (0, None),
        }
    }

    fn add_bytes(&self, delta: i64) -> Result<u64, StoreError> {
        loop {
            let (used, cas) = self.read_bytes();
            let next = (used as i64 + delta).max(0) as u64;
            match self.kv.set(BYTES_KEY, &next.to_le_bytes(), cas) {
                Ok(()) => return Ok(next),
                Err(SetError::CasMismatch) => continue,
                Err(SetError::Host) => return Err(StoreError::Host),
            }
        }
    }
}

#[cfg(test)]
#[path = "tests/store_tests.rs"]
pub(crate) mod tests;
