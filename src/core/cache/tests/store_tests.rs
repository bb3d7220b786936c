//! Unit tests of `core::store`.

use super::*;
use crate::core::cache::entry::{BodyKind, CachedResponse};
use std::cell::RefCell;
use std::collections::HashMap;

/// Envoy's shared-data semantics: every write bumps a version; CAS compares it.
#[derive(Default)]
pub struct MemKv {
    map: RefCell<HashMap<String, (Vec<u8>, u32)>>,
    next: RefCell<u32>,
    /// Fail the next N CAS-checked writes of slot keys, as a concurrent writer would.
    pub interfere: RefCell<u32>,
}

impl SharedData for MemKv {
    fn get(&self, key: &str) -> Option<(Vec<u8>, u32)> {
        self.map.borrow().get(key).cloned()
    }
    fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), SetError> {
        let mut map = self.map.borrow_mut();
        if let Some(c) = cas {
            if key != BYTES_KEY && *self.interfere.borrow() > 0 {
                *self.interfere.borrow_mut() -= 1;
                return Err(SetError::CasMismatch);
            }
            if map.get(key).map(|v| v.1) != Some(c) {
                return Err(SetError::CasMismatch);
            }
        }
        *self.next.borrow_mut() += 1;
        map.insert(key.to_string(), (value.to_vec(), *self.next.borrow()));
        Ok(())
    }
}

impl MemKv {
    /// Bytes the entry slots really hold.
    pub fn held_bytes(&self) -> u64 {
        self.map.borrow().iter().filter(|(k, _)| is_slot(k)).map(|(_, v)| v.0.len() as u64).sum()
    }

    /// Bytes the set indexes say the slots hold.
    pub fn indexed_bytes(&self, ways: u32) -> u64 {
        let map = self.map.borrow();
        map.iter()
            .filter(|(k, _)| k.starts_with("semgate:i:"))
            .map(|(_, v)| SetIndex::decode(&v.0, ways).ways.iter().map(|w| w.len as u64).sum::<u64>())
            .sum()
    }

    pub fn keys_with_prefix(&self, prefix: &str) -> Vec<String> {
        self.map.borrow().keys().filter(|k| k.starts_with(prefix)).cloned().collect()
    }

    pub fn bytes_with_prefix(&self, prefix: &str) -> u64 {
        self.map.borrow().iter().filter(|(k, _)| k.starts_with(prefix)).map(|(_, v)| v.0.len() as u64).sum()
    }

    pub fn slot_keys(&self) -> Vec<String> {
        self.map.borrow().keys().filter(|k| is_slot(k)).cloned().collect()
    }
}

fn is_slot(k: &str) -> bool {
    k.starts_with("semgate:c:") && k != BYTES_KEY
}

fn key(i: u64) -> CacheKey {
    CacheKey(*blake3::hash(&i.to_le_bytes()).as_bytes())
}

fn entry(i: u64, body_len: usize, now: u64, ttl: u64) -> Entry {
    Entry {
        key: key(i),
        created_ms: now,
        expires_ms: now + ttl,
        response: CachedResponse {
            kind: BodyKind::Json,
            content_type: "application/json".into(),
            chunks: vec![vec![b'x'; body_len]],
        },
    }
}

fn limits(max_bytes: u64, slots: u32) -> StoreLimits {
    StoreLimits { max_bytes, max_entry_bytes: 4096, slots, ways: 4 }
}

#[test]
fn stored_entry_is_found_and_other_keys_miss() {
    let kv = MemKv::default();
    let s = CacheStore::new(&kv, limits(1 << 20, 64));
    s.init().unwrap();
    s.insert(&entry(1, 100, 0, 1000), 0).unwrap();
    assert_eq!(s.lookup(&key(1), 10), Lookup::Hit(entry(1, 100, 0, 1000)));
    assert_eq!(s.lookup(&key(2), 10), Lookup::Miss);
}

#[test]
fn expired_entry_reads_as_expired() {
    let kv = MemKv::default();
    let s = CacheStore::new(&kv, limits(1 << 20, 64));
    s.init().unwrap();
    s.insert(&entry(1, 100, 0, 1000), 0).unwrap();
    assert_eq!(s.lookup(&key(1), 1000), Lookup::Expired);
}

#[test]
fn too_large_entry_is_refused() {
    let kv = MemKv::default();
    let s = CacheStore::new(&kv, limits(1 << 20, 64));
    s.init().unwrap();
    assert!(matches!(s.insert(&entry(1, 5000, 0, 1000), 0), Err(StoreError::TooLarge(_))));
    assert_eq!(s.bytes_in_cache(), 0);
}

#[test]
fn filling_far_past_the_budget_keeps_bytes_bounded_and_counter_exact() {
    let kv = MemKv::default();
    let max = 64 << 10;
    let s = CacheStore::new(&kv, limits(max, 256));
    s.init().unwrap();
    let mut evicted = 0;
    for i in 0..5000u64 {
        let r = s.insert(&entry(i, 200 + (i as usize * 37) % 3000, i, 1 << 40), i).unwrap();
        evicted += r.evicted;
        assert!(kv.held_bytes() <= max, "after {i}: {} > {max}", kv.held_bytes());
        assert_eq!(s.bytes_in_cache(), kv.held_bytes(), "counter drifted after {i}");
        if let Some(b) = r.bytes_in_cache {
            assert_eq!(b, kv.held_bytes(), "reported count after {i}");
        }
    }
    assert!(evicted > 4000, "evicted {evicted}");
    // The newest entry is always there.
    assert!(matches!(s.lookup(&key(4999), 5000), Lookup::Hit(_)));
}

#[test]
fn same_key_overwrites_in_place() {
    let kv = MemKv::default();
    let s = CacheStore::new(&kv, limits(1 << 20, 64));
    s.init().unwrap();
    s.insert(&entry(1, 1000, 0, 1000), 0).unwrap();
    let r = s.insert(&entry(1, 100, 5, 1000), 5).unwrap();
    assert_eq!(r.evicted, 0);
    assert_eq!(s.bytes_in_cache(), kv.held_bytes());
    assert_eq!(r.bytes_in_cache, Some(kv.held_bytes()), "a smaller entry reports the new count");
    // The same size again: the count did not change and is not read back.
    let same = s.insert(&entry(1, 100, 5, 1000), 5).unwrap();
    assert_eq!(same.bytes_in_cache, None);
    assert_eq!(s.bytes_in_cache(), kv.held_bytes());
    match s.lookup(&key(1), 6) {
        Lookup::Hit(e) => assert_eq!(e.created_ms, 5),
        other => panic!("{other:?}"),
    }
}

#[test]
fn full_set_evicts_the_oldest_live_entry() {
    let kv = MemKv::default();
    // One set of 4 ways: the fifth key must replace the oldest.
    let s = CacheStore::new(&kv, StoreLimits { max_bytes: 1 << 20, max_entry_bytes: 4096, slots: 4, ways: 4 });
    s.init().unwrap();
    for i in 0..4 {
        s.insert(&entry(i, 10, i, 1000), i).unwrap();
    }
    let r = s.insert(&entry(9, 10, 10, 1000), 10).unwrap();
    assert_eq!(r.evicted, 1);
    assert_eq!(s.lookup(&key(0), 11), Lookup::Miss);
    for i in [1, 2, 3, 9] {
        assert!(matches!(s.lookup(&key(i), 11), Lookup::Hit(_)));
    }
}

#[test]
fn concurrent_writer_conflicts_are_retried_and_accounting_stays_exact() {
    let kv = MemKv::default();
    let s = CacheStore::new(&kv, limits(1 << 20, 64));
    s.init().unwrap();
    *kv.interfere.borrow_mut() = 3;
    s.insert(&entry(1, 100, 0, 1000), 0).unwrap();
    assert!(matches!(s.lookup(&key(1), 1), Lookup::Hit(_)));
    assert_eq!(s.bytes_in_cache(), kv.held_bytes());
    *kv.interfere.borrow_mut() = 100;
    assert_eq!(s.insert(&entry(2, 100, 0, 1000), 0), Err(StoreError::Contended));
    // The counter follows the indexes; the losing writer's slot is at most one entry extra.
    assert_eq!(s.bytes_in_cache(), kv.indexed_bytes(4));
    assert!(kv.held_bytes() <= kv.indexed_bytes(4) + 4096);
    assert_eq!(s.lookup(&key(2), 1), Lookup::Miss);
}

#[test]
fn lookup_checks_the_full_key_not_just_the_index_prefix() {
    let kv = MemKv::default();
    let s = CacheStore::new(&kv, limits(1 << 20, 64));
    s.init().unwrap();
    s.insert(&entry(1, 100, 0, 1000), 0).unwrap();
    let mut other = key(1);
    other.0[31] ^= 1; // same set, same 16-byte prefix, another key
    assert_eq!(s.lookup(&other, 1), Lookup::Miss);
}

#[test]
fn eviction_for_the_byte_budget_empties_other_sets() {
    let kv = MemKv::default();
    // 64 sets, a budget of ~3 entries of 1 KB: the fourth store must evict elsewhere.
    let s = CacheStore::new(&kv, StoreLimits { max_bytes: 3300, max_entry_bytes: 2048, slots: 256, ways: 4 });
    s.init().unwrap();
    let mut evicted = 0;
    for i in 0..20 {
        evicted += s.insert(&entry(i, 1000, i, 1000), i).unwrap().evicted;
        assert!(kv.held_bytes() <= 3300);
        assert_eq!(s.bytes_in_cache(), kv.held_bytes());
    }
    assert!(evicted >= 17, "evicted {evicted}");
    assert!(matches!(s.lookup(&key(19), 20), Lookup::Hit(_)));
}

#[test]
fn corrupt_slot_reads_as_miss() {
    let kv = MemKv::default();
    let s = CacheStore::new(&kv, limits(1 << 20, 64));
    s.init().unwrap();
    s.insert(&entry(1, 100, 0, 1000), 0).unwrap();
    // Truncate whichever slot holds it.
    let slot = kv.slot_keys().into_iter().find(|k| kv.get(k).is_some_and(|v| v.0.len() > 40)).unwrap();
    let (mut v, cas) = kv.get(&slot).unwrap();
    v.truncate(50);
    kv.set(&slot, &v, Some(cas)).unwrap();
    assert_eq!(s.lookup(&key(1), 1), Lookup::Miss);
}
