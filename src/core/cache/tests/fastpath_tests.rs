//! Unit tests of `core::fastpath`.

use super::*;
use crate::core::cache::entry::{BodyKind, CachedResponse};
use crate::core::cache::key::CacheKey;
use crate::core::cache::store::tests::MemKv;

const LIMITS: FastPathLimits = FastPathLimits { slots: 64, max_record_bytes: 16 << 10, seed: 42 };

fn raw<'a>(tenant: &'a str, body: &'a [u8]) -> RawRequest<'a> {
    RawRequest { tenant, path: "/v1/chat/completions", route: "chat", body }
}

fn entry(expires_ms: u64, answer: &str) -> Entry {
    Entry {
        key: CacheKey([3; 32]),
        created_ms: 1_000,
        expires_ms,
        response: CachedResponse {
            kind: BodyKind::Json,
            content_type: "application/json".into(),
            chunks: vec![answer.as_bytes().to_vec()],
        },
    }
}

const BODY: &[u8] = br#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}"#;

#[test]
fn remembered_bytes_hit_until_expiry() {
    let kv = MemKv::default();
    let fp = FastPath::new(&kv, LIMITS);
    let r = raw("acme", BODY);
    let p = probe(&LIMITS, &r);
    assert_eq!(fp.lookup(&p, &r, 2_000), FastLookup::Miss);
    let e = entry(10_000, "answer");
    assert!(fp.remember(&p, &r, &e));
    assert_eq!(fp.lookup(&p, &r, 2_000), FastLookup::Hit(e));
    assert_eq!(fp.lookup(&p, &r, 10_000), FastLookup::Miss, "expired at expires_ms");
}

#[test]
fn every_part_of_the_request_must_match() {
    let kv = MemKv::default();
    let fp = FastPath::new(&kv, LIMITS);
    let r = raw("acme", BODY);
    assert!(fp.remember(&probe(&LIMITS, &r), &r, &entry(10_000, "answer")));
    let spaced = br#"{"model":"gpt-4o-mini", "messages":[{"role":"user","content":"hi"}]}"#;
    let others = [
        raw("globex", BODY),
        RawRequest { path: "/suggest/v1/chat/completions", ..r },
        RawRequest { route: "captioning", ..r },
        raw("acme", spaced),
        // Moving bytes between parts is not the same request.
        RawRequest { tenant: "acm", path: "e/v1/chat/completions", ..r },
    ];
    for other in others {
        // Force the other request onto the same slot: only the bytes may decide.
        let p = Probe { hash: probe(&LIMITS, &other).hash, slot: probe(&LIMITS, &r).slot };
        assert_eq!(fp.lookup(&p, &other, 2_000), FastLookup::Miss, "{other:?}");
    }
}

#[test]
fn a_colliding_hash_still_compares_the_bytes() {
    let kv = MemKv::default();
    let fp = FastPath::new(&kv, LIMITS);
    let r = raw("acme", BODY);
    let p = probe(&LIMITS, &r);
    assert!(fp.remember(&p, &r, &entry(10_000, "answer")));
    let other = raw("acme", br#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"ho"}]}"#);
    // The same hash and slot as the remembered request, as a collision would give.
    assert_eq!(fp.lookup(&p, &other, 2_000), FastLookup::Miss);
}

#[test]
fn another_configuration_never_reads_a_record() {
    let kv = MemKv::default();
    let r = raw("acme", BODY);
    let p = probe(&LIMITS, &r);
    assert!(FastPath::new(&kv, LIMITS).remember(&p, &r, &entry(10_000, "answer")));
    let reloaded = FastPathLimits { seed: seed_for(b"{\"cache\":{}}"), ..LIMITS };
    assert_ne!(reloaded.seed, LIMITS.seed);
    // Even at the very same slot and hash, the stored seed differs.
    assert_eq!(FastPath::new(&kv, reloaded).lookup(&p, &r, 2_000), FastLookup::Miss);
}

#[test]
fn a_new_record_replaces_the_slot() {
    let kv = MemKv::default();
    let fp = FastPath::new(&kv, FastPathLimits { slots: 1, ..LIMITS });
    let a = raw("acme", BODY);
    let b = raw("globex", BODY);
    let (pa, pb) = (probe(&fp.limits, &a), probe(&fp.limits, &b));
    assert_eq!(pa.slot, pb.slot);
    assert!(fp.remember(&pa, &a, &entry(10_000, "for acme")));
    assert!(fp.remember(&pb, &b, &entry(10_000, "for globex")));
    assert_eq!(fp.lookup(&pa, &a, 2_000), FastLookup::Miss);
    assert_eq!(fp.lookup(&pb, &b, 2_000), FastLookup::Hit(entry(10_000, "for globex")));
    // Refreshed answer for the same bytes: the record is rewritten.
    assert!(fp.remember(&pb, &b, &entry(20_000, "fresh")));
    assert_eq!(fp.lookup(&pb, &b, 2_000), FastLookup::Hit(entry(20_000, "fresh")));
}

#[test]
fn records_are_bounded_in_size_and_count() {
    let kv = MemKv::default();
    let limits = FastPathLimits { slots: 8, max_record_bytes: 1024, seed: 7 };
    let fp = FastPath::new(&kv, limits);
    let big = vec![b'x'; 1024];
    let r = raw("acme", &big);
    assert!(!limits.may_hold(&r));
    assert!(!fp.remember(&probe(&limits, &r), &r, &entry(10_000, "answer")), "request alone over the limit");
    let r = raw("acme", BODY);
    let long_answer = "y".repeat(1024);
    assert!(!fp.remember(&probe(&limits, &r), &r, &entry(10_000, &long_answer)), "record over the limit");
    for i in 0..500 {
        let body = format!("{{\"model\":\"m\",\"n\":{i}}}");
        let r = raw("acme", body.as_bytes());
        assert!(fp.remember(&probe(&limits, &r), &r, &entry(10_000, "answer")));
    }
    let keys = kv.keys_with_prefix("semgate:f:");
    assert!(keys.len() <= 8, "{} slots used", keys.len());
    assert!(kv.bytes_with_prefix("semgate:f:") <= 8 * 1024);
}

#[test]
fn malformed_records_are_misses() {
    let r = raw("acme", BODY);
    let p = probe(&LIMITS, &r);
    let good = encode_record(&LIMITS, &p, &r, &entry(10_000, "answer").encode());
    assert!(match_record(&good, &LIMITS, &p, &r).is_some());
    for cut in [0, 3, 20, HEADER_BYTES, good.len() - 1] {
        let torn = &good[..cut];
        let matched = match_record(torn, &LIMITS, &p, &r);
        // A torn record either fails to match or yields an entry that does not decode.
        assert!(matched.is_none_or(|e| Entry::decode(e).is_err()), "cut at {cut}");
    }
    let kv = MemKv::default();
    kv.set(&slot_key(p.slot), &good[..good.len() - 1], None).unwrap();
    assert_eq!(FastPath::new(&kv, LIMITS).lookup(&p, &r, 2_000), FastLookup::Miss);
}

#[test]
fn bytes_eq_is_slice_equality() {
    let base: Vec<u8> = (0..40u8).collect();
    for len in 0..base.len() {
        let a = &base[..len];
        assert!(bytes_eq(a, a));
        assert!(!bytes_eq(a, &base[..len + 1]), "lengths differ at {len}");
        // One byte changed anywhere, in the 8-byte words or in the tail.
        for at in 0..len {
            let mut b = a.to_vec();
            b[at] ^= 0x01;
            assert!(!bytes_eq(a, &b), "len {len}, byte {at}");
        }
    }
}
