//! Bench helper (`bench/semantic.py`): append synthetic entries to a sidecar journal so a
//! restarted sidecar holds N entries in one scope without embedding N texts first.
//! usage: fill_journal JOURNAL NAMESPACE TOTAL DIM [requests]
//! Vectors are deterministic pseudo-random unit vectors; the responses are small JSON. The
//! texts are "synthetic stored question number N", or with `requests` synthetic request texts
//! (`synthetic::request_text`: coding questions, captions, conversions, support) that a first
//! stage reads as it would read real ones.

use semgate_sidecar::index::{FlatIndex, Record, VectorStore};
use semgate_sidecar::synthetic::{request_text, unit_vector};

fn main() -> Result<(), String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (journal, namespace, total, dim, requests) = match args.as_slice() {
        [j, n, t, d] => (j, n, t, d, false),
        [j, n, t, d, kind] if kind == "requests" => (j, n, t, d, true),
        _ => return Err("usage: fill_journal JOURNAL NAMESPACE TOTAL DIM [requests]".into()),
    };
    let total: usize = total.parse().map_err(|e| format!("TOTAL: {e}"))?;
    let dim: usize = dim.parse().map_err(|e| format!("DIM: {e}"))?;
    let now = semgate_sidecar::server::now_ms();
    let index = FlatIndex::open(std::path::Path::new(journal), dim, total + 1, now).map_err(|e| e.to_string())?;
    let response =
        br#"{"status":200,"headers":[["content-type","application/json"]],"body_b64":"e30=","stream":false}"#;
    for i in index.len()..total {
        let record = Record {
            id: (1 << 40) + i as u64,
            namespace: namespace.clone(),
            text: if requests { request_text(i) } else { format!("synthetic stored question number {i}") },
            response: response.to_vec(),
            vector: unit_vector(i as u64 + 1, dim),
            created_ms: now,
            expires_ms: now + 86_400_000,
        };
        index.insert(record).map_err(|e| e.to_string())?;
    }
    index.flush().map_err(|e| e.to_string())?;
    println!("{journal}: {} entries", index.len());
    Ok(())
}
