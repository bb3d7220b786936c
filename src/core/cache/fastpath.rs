//! The exact cache's fast path for byte-identical requests.
//!
//! An exact hit normally parses the body, builds its canonical form and hashes it with blake3:
//! in Envoy's V8 that is most of what a hit costs (about 10 us for a 2 KB body, against about
//! 4 us for everything else the filter does on a hit). Yet most repeats are byte-identical: the
//! same client code sends the same bytes. So once a request has been *served from the cache*
//! (a canonical hit, or a refresh that stored a new answer), the filter also keeps a record
//! of its exact bytes with a copy of the entry in one shared-data slot. The next request with
//! the same bytes, scope and route is answered from that slot with one host read, a cheap
//! non-cryptographic hash (xxh3) to find the slot, and a byte-for-byte comparison that
//! decides: no parse, no blake3, and no collision can ever serve a wrong answer.
//!
//! - What the record must match, byte for byte: the tenant, the request path, the Envoy route
//!   name (when policies match on it) and the body. Everything else that decides a plan is
//!   either in the body (model, params, stream) or in the configuration, whose fingerprint is
//!   the hash seed and is stored in the record: a reloaded configuration never reads records
//!   written under another.
//! - Only requests with no cache directive take the fast path; `no-cache`, `no-store` and
//!   `x-semgate-cache: bypass` always go the canonical way.
//! - The table is direct-mapped: `slots` records (`semgate:f:<n>`), a new record replaces the
//!   slot's old one. Records larger than `max_record_bytes` are not kept, so the table holds at
//!   most `slots x max_record_bytes` bytes, on top of the canonical store's `max_bytes`.
//! - Coherence: a record carries its entry's expiry and is never served past it. A refresh
//!   (`cache-control: no-cache`) rewrites the record of the bytes that asked for it; a
//!   byte-different variant of the same request that has its own record keeps serving the
//!   previous answer until that answer's expiry, as a second cache in front of the first would.
//!   An eviction from the canonical store does not remove a record: it stays valid until expiry.

use crate::core::cache::entry::Entry;
use crate::core::cache::store::SharedData;
use xxhash_rust::xxh3::xxh3_64_with_seed;

const MAGIC: &[u8; 4] = b"SGF1";
/// magic, seed, hash, four lengths.
const HEADER_BYTES: usize = 4 + 8 + 8 + 4 * 4;

/// What a record must match: everything about a request, other than the configuration, that
/// can change its plan.
#[derive(Debug, Clone, Copy)]
pub struct RawRequest<'a> {
    pub tenant: &'a str,
    pub path: &'a str,
    /// The Envoy route name when a policy matches on routes, else empty.
    pub route: &'a str,
    pub body: &'a [u8],
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FastPathLimits {
    /// 0 turns the fast path off.
    pub slots: u32,
    pub max_record_bytes: u64,
    /// The configuration's fingerprint (see `seed_for`).
    pub seed: u64,
}

impl FastPathLimits {
    pub fn enabled(&self) -> bool {
        self.slots > 0
    }

    /// Whether a request this size could have a record at all (before hashing it).
    pub fn may_hold(&self, raw: &RawRequest) -> bool {
        self.enabled() && (HEADER_BYTES + material_len(raw)) as u64 <= self.max_record_bytes
    }
}

/// The hash seed for a configuration: records written under one configuration never match
/// under another (a reload may change routes, policies or scopes).
pub fn seed_for(config_bytes: &[u8]) -> u64 {
    xxh3_64_with_seed(config_bytes, 0x7365_6d67_6174_6566) // "semgatef"
}

fn material_len(raw: &RawRequest) -> usize {
    raw.tenant.len() + raw.path.len() + raw.route.len() + raw.body.len()
}

/// Where a request's record lives, computed once per request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Probe {
    pub hash: u64,
    pub slot: u32,
}

pub fn probe(limits: &FastPathLimits, raw: &RawRequest) -> Probe {
    let mut h = xxh3_64_with_seed(raw.tenant.as_bytes(), limits.seed);
    h = xxh3_64_with_seed(raw.path.as_bytes(), h);
    h = xxh3_64_with_seed(raw.route.as_bytes(), h);
    h = xxh3_64_with_seed(raw.body, h);
    Probe { hash: h, slot: (h % u64::from(limits.slots.max(1))) as u32 }
}

pub fn slot_key(slot: u32) -> String {
    format!("semgate:f:{slot}")
}

/// A record: header, the request's material, then the encoded entry.
pub fn encode_record(limits: &FastPathLimits, probe: &Probe, raw: &RawRequest, entry: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_BYTES + material_len(raw) + entry.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&limits.seed.to_le_bytes());
    out.extend_from_slice(&probe.hash.to_le_bytes());
    for part in [raw.tenant.as_bytes(), raw.path.as_bytes(), raw.route.as_bytes(), raw.body] {
        out.extend_from_slice(&(part.len() as u32).to_le_bytes());
    }
    for part in [raw.tenant.as_bytes(), raw.path.as_bytes(), raw.route.as_bytes(), raw.body] {
        out.extend_from_slice(part);
    }
    out.extend_from_slice(entry);
    out
}

/// The encoded entry of a record written for exactly this request under this configuration,
/// or `None` (another request's record, another configuration's, or anything malformed).
pub fn match_record<'r>(
    record: &'r [u8],
    limits: &FastPathLimits,
    probe: &Probe,
    raw: &RawRequest,
) -> Option<&'r [u8]> {
    let header = record.get(..HEADER_BYTES)?;
    if &header[..4] != MAGIC || header[4..12] != limits.seed.to_le_bytes() || header[12..20] != probe.hash.to_le_bytes()
    {
        return None;
    }
    let mut at = HEADER_BYTES;
    for (i, part) in
        [raw.tenant.as_bytes(), raw.path.as_bytes(), raw.route.as_bytes(), raw.body].into_iter().enumerate()
    {
        let len_at = 20 + i * 4;
        let len = u32::from_le_bytes(header[len_at..len_at + 4].try_into().ok()?) as usize;
        if len != part.len() {
            return None;
        }
        let end = at.checked_add(len)?;
        if !bytes_eq(record.get(at..end)?, part) {
            return None;
        }
        at = end;
    }
    record.get(at..)
}

/// `a == b`, eight bytes at a time. Slice equality compiles to a call to `memcmp`, which on
/// wasm32 is a byte loop (no libc): comparing a 2 KB body that way took 0.9 us under V8, this
/// takes a fraction of it. Natively it is as fast as `memcmp` for bodies this size.
pub fn bytes_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let (a8, b8) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ra, rb) = (a8.remainder(), b8.remainder());
    let word = |c: &[u8]| u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]);
    a8.zip(b8).all(|(x, y)| word(x) == word(y)) && ra == rb
}

#[derive(Debug, PartialEq, Eq)]
pub enum FastLookup {
    Hit(Entry),
    /// No record for these bytes (or an expired one): take the canonical path.
    Miss,
}

/// The fast-path table over a shared-data map.
pub struct FastPath<'a, S: SharedData> {
    pub kv: &'a S,
    pub limits: FastPathLimits,
}

impl<'a, S: SharedData> FastPath<'a, S> {
    pub fn new(kv: &'a S, limits: FastPathLimits) -> Self {
        FastPath { kv, limits }
    }

    pub fn lookup(&self, probe: &Probe, raw: &RawRequest, now_ms: u64) -> FastLookup {
        let Some((record, _)) = self.kv.get(&slot_key(probe.slot)) else { return FastLookup::Miss };
        let Some(entry) = match_record(&record, &self.limits, probe, raw) else { return FastLookup::Miss };
        match Entry::decode(entry) {
            Ok(e) if !e.is_expired(now_ms) => FastLookup::Hit(e),
            _ => FastLookup::Miss,
        }
    }

    /// Keep a record of `raw` serving `entry`. Returns false when the record would be over
    /// the size limit or the host refused it (the fast path is an optimisation: nothing else
    /// depends on the record being there).
    pub fn remember(&self, probe: &Probe, raw: &RawRequest, entry: &Entry) -> bool {
        if !self.limits.may_hold(raw) {
            return false;
        }
        let record = encode_record(&self.limits, probe, raw, &entry.encode());
        if record.len() as u64 > self.limits.max_record_bytes {
            return false;
        }
        self.kv.set(&slot_key(probe.slot), &record, None).is_ok()
    }
}

#[cfg(test)]
#[path = "tests/fastpath_tests.rs"]
mod tests;
