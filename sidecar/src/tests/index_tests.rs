//! Unit tests of the embedded vector store.

use super::*;

fn unit(v: &[f32]) -> Vec<f32> {
    let n = dot(v, v).sqrt();
    v.iter().map(|x| x / n).collect()
}

fn rec(id: u64, ns: &str, v: &[f32], created: u64, ttl: u64) -> Record {
    Record {
        id,
        namespace: ns.into(),
        text: format!("text {id}"),
        response: format!("{{\"answer\":{id}}}").into_bytes(),
        vector: unit(v),
        created_ms: created,
        expires_ms: created + ttl,
    }
}

#[test]
fn nearest_first_within_the_namespace_only() {
    let idx = FlatIndex::in_memory(3, 100);
    idx.insert(rec(1, "a", &[1.0, 0.0, 0.0], 0, 1000)).unwrap();
    idx.insert(rec(2, "a", &[0.7, 0.7, 0.0], 0, 1000)).unwrap();
    idx.insert(rec(3, "b", &[1.0, 0.0, 0.0], 0, 1000)).unwrap();
    let hits = idx.search("a", &unit(&[1.0, 0.1, 0.0]), 5, 1).unwrap();
    assert_eq!(hits.iter().map(|c| c.record.id).collect::<Vec<_>>(), vec![1, 2]);
    assert!(hits[0].score > hits[1].score);
    assert!(idx.search("c", &unit(&[1.0, 0.0, 0.0]), 5, 1).unwrap().is_empty());
}

#[test]
fn expired_records_are_not_returned() {
    let idx = FlatIndex::in_memory(3, 100);
    idx.insert(rec(1, "a", &[1.0, 0.0, 0.0], 0, 10)).unwrap();
    assert_eq!(idx.search("a", &unit(&[1.0, 0.0, 0.0]), 5, 9).unwrap().len(), 1);
    assert!(idx.search("a", &unit(&[1.0, 0.0, 0.0]), 5, 10).unwrap().is_empty());
}

#[test]
fn cap_evicts_the_oldest() {
    let idx = FlatIndex::in_memory(3, 2);
    idx.insert(rec(1, "a", &[1.0, 0.0, 0.0], 1, 1000)).unwrap();
    idx.insert(rec(2, "b", &[1.0, 0.0, 0.0], 2, 1000)).unwrap();
    idx.insert(rec(3, "a", &[1.0, 0.0, 0.0], 3, 1000)).unwrap();
    assert_eq!(idx.len(), 2);
    let ids: Vec<u64> = idx.search("a", &unit(&[1.0, 0.0, 0.0]), 5, 4).unwrap().iter().map(|c| c.record.id).collect();
    assert_eq!(ids, vec![3]);
}

#[test]
fn wrong_dimension_is_an_error() {
    let idx = FlatIndex::in_memory(3, 10);
    assert!(idx.insert(rec(1, "a", &[1.0, 0.0], 0, 10)).is_err());
    assert!(idx.search("a", &[1.0], 1, 0).is_err());
}

#[test]
fn journal_survives_a_restart_and_drops_expired_records() {
    let dir = std::env::temp_dir().join(format!("semgate-index-{}", std::process::id()));
    let path = dir.join("vectors.journal");
    let _ = std::fs::remove_file(&path);
    {
        let idx = FlatIndex::open(&path, 3, 100, 0).unwrap();
        idx.insert(rec(1, "a", &[1.0, 0.0, 0.0], 0, 1000)).unwrap();
        idx.insert(rec(2, "a", &[0.0, 1.0, 0.0], 0, 50)).unwrap();
        idx.flush().unwrap();
    }
    let idx = FlatIndex::open(&path, 3, 100, 100).unwrap();
    assert_eq!(idx.len(), 1);
    let hit = &idx.search("a", &unit(&[1.0, 0.0, 0.0]), 1, 100).unwrap()[0];
    assert_eq!(hit.record, rec(1, "a", &[1.0, 0.0, 0.0], 0, 1000));
    // A torn tail (crash mid-write) is ignored.
    drop(idx);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes.extend_from_slice(&RECORD_MAGIC.to_le_bytes());
    bytes.extend_from_slice(&[1, 2, 3]);
    std::fs::write(&path, bytes).unwrap();
    assert_eq!(FlatIndex::open(&path, 3, 100, 100).unwrap().len(), 1);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_shortlisted_scan_finds_the_exact_nearest_among_many() {
    // 5,000 pseudo-random vectors in one scope: the int8 scan plus exact rescoring must rank
    // exactly as a full f32 scan does, and report exact scores.
    let dim = 64;
    let idx = FlatIndex::in_memory(dim, 10_000);
    let mut all = Vec::new();
    for id in 0..5_000u64 {
        let v = crate::synthetic::unit_vector(id, dim);
        all.push((id, v.clone()));
        idx.insert(Record { vector: v, ..rec(id, "s", &[1.0; 64], 0, 1000) }).unwrap();
    }
    for seed in 100_000..100_020 {
        let q = crate::synthetic::unit_vector(seed, dim);
        let mut want: Vec<(f32, u64)> = all.iter().map(|(id, v)| (dot(&q, v), *id)).collect();
        want.sort_by(|a, b| b.0.total_cmp(&a.0));
        let got = idx.search("s", &q, 5, 1).unwrap();
        assert_eq!(
            got.iter().map(|c| c.record.id).collect::<Vec<_>>(),
            want[..5].iter().map(|w| w.1).collect::<Vec<_>>()
        );
        assert_eq!(got[0].score, want[0].0);
    }
}

#[test]
fn the_journal_is_private_and_bounded() {
    use std::os::unix::fs::PermissionsExt;
    let dir = std::env::temp_dir().join(format!("semgate-index-priv-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let path = dir.join("data").join("vectors.journal");
    let big = |id: u64| Record { response: vec![b'x'; 100_000], ..rec(id, "a", &[1.0, 0.0, 0.0], id, 1_000_000) };
    let max_bytes = 1_000_000;
    {
        let idx = FlatIndex::open_bounded(&path, 3, 1000, max_bytes, 0).unwrap();
        for id in 0..100 {
            idx.insert(big(id)).unwrap();
        }
        idx.flush().unwrap();
        // Live records stay under the byte bound; the file under twice that (or the minimum).
        assert!(idx.len() <= 10, "{}", idx.len());
        let on_disk = std::fs::metadata(&path).unwrap().len() as usize;
        assert!(on_disk <= 2 * max_bytes + record_bytes(&big(0)), "journal grew to {on_disk}");
        assert_eq!(on_disk, idx.journal_bytes());
        // The newest survive.
        let ids: Vec<u64> =
            idx.search("a", &unit(&[1.0, 0.0, 0.0]), 20, 1).unwrap().iter().map(|c| c.record.id).collect();
        assert!(ids.contains(&99), "{ids:?}");
        // A record larger than the whole bound is refused, not stored.
        assert!(idx.insert(Record { response: vec![0; 2_000_000], ..rec(500, "a", &[1.0, 0.0, 0.0], 0, 10) }).is_err());
    }
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&path), 0o600);
    assert_eq!(mode(path.parent().unwrap()), 0o700);
    // A reopened journal keeps the bound and the newest records.
    let idx = FlatIndex::open_bounded(&path, 3, 1000, max_bytes, 1).unwrap();
    assert!(idx.len() >= 1 && idx.len() <= 10);
    assert_eq!(mode(&path), 0o600);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn an_existing_world_readable_journal_is_made_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = std::env::temp_dir().join(format!("semgate-index-perm-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("vectors.journal");
    std::fs::write(&path, b"").unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let _idx = FlatIndex::open(&path, 3, 10, 0).unwrap();
    assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
    assert_eq!(std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777, 0o700);
    let _ = std::fs::remove_dir_all(&dir);
}
