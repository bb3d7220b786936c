//! The Chroma backend of `VectorStore` (chromadb 1.x, HTTP API `/api/v2`, tenant
//! `default_tenant`, database `default_database`), for when the vectors should live in a
//! shared, separately scaled store instead of the sidecar's own journal.
//!
//! Mapping: one collection (cosine space) holds every namespace. A record is one Chroma
//! record: id = the record id in decimal, embedding = the vector, document = the prompt text,
//! metadata = {namespace, created_ms, expires_ms, response (the protocol's response JSON as a
//! string)}. The collection's metadata names the embedding model and dimension, and a sidecar
//! with another model refuses it: vectors of two models in one space would match nonsense.
//!
//! TTL: a search asks only for `namespace == ns && expires_ms > now`, so an expired record is
//! never served. Expired records are deleted at startup and then by at most one `delete` per
//! minute, run by the insert that finds the last sweep old enough. There is no cap on entries
//! (Chroma has no "delete oldest"): the TTL bounds the collection.
//!
//! Every call is blocking with a connect and an overall timeout; the server runs them off the
//! async workers (`spawn_blocking`).

use super::{Candidate, IndexError, Record, VectorStore};
use serde::Deserialize;
use serde_json::{json, Map, Value};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

const TENANT_DB: &str = "tenants/default_tenant/databases/default_database";
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// End to end per call. The filter gives up on a lookup sooner (`semantic.timeout_ms`) and
/// fails open; this bounds how long a blocking thread can wait on Chroma.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);
const SWEEP_EVERY_MS: u64 = 60_000;
/// Query answers carry up to top-k cached responses; ureq's default body limit is 10 MB.
const MAX_BODY: u64 = 64 << 20;

pub struct ChromaStore {
    agent: ureq::Agent,
    /// `{url}/api/v2`, no trailing slash.
    api: String,
    collection_id: String,
    dim: usize,
    last_sweep_ms: AtomicU64,
}

impl ChromaStore {
    /// Check that Chroma answers, then get or create the collection (cosine space, tagged with
    /// the model) and sweep its expired records.
    pub fn connect(url: &str, collection: &str, model_id: &str, dim: usize, now_ms: u64) -> Result<Self, IndexError> {
        let config = ureq::Agent::config_builder()
            .timeout_connect(Some(CONNECT_TIMEOUT))
            .timeout_global(Some(CALL_TIMEOUT))
            .http_status_as_error(false)
            .build();
        let mut store = ChromaStore {
            agent: ureq::Agent::new_with_config(config),
            api: format!("{}/api/v2", url.trim_end_matches('/')),
            collection_id: String::new(),
            dim,
            last_sweep_ms: AtomicU64::new(now_ms),
        };
        store.call("heartbeat", "heartbeat", None).map_err(|e| match e {
            IndexError::Backend(why) => IndexError::Backend(format!("Chroma at {url} is unreachable ({why})")),
            other => other,
        })?;
        let created = store.call(
            "create collection",
            &format!("{TENANT_DB}/collections"),
            Some(&create_collection_body(collection, model_id, dim)),
        )?;
        store.collection_id = check_collection(&created, collection, model_id, dim)?;
        store.sweep(now_ms)?;
        Ok(store)
    }

    fn collection_path(&self, op: &str) -> String {
        format!("{TENANT_DB}/collections/{}/{op}", self.collection_id)
    }

    /// Delete every record expired at `now_ms`.
    fn sweep(&self, now_ms: u64) -> Result<(), IndexError> {
        self.call("delete expired", &self.collection_path("delete"), Some(&sweep_body(now_ms))).map(drop)
    }

    /// One request: POST with a JSON body, or GET without. A non-2xx answer is an error that
    /// carries Chroma's own message.
    fn call(&self, what: &str, path: &str, body: Option<&Value>) -> Result<Value, IndexError> {
        let url = format!("{}/{path}", self.api);
        let sent = match body {
            Some(b) => self.agent.post(&url).send_json(b),
            None => self.agent.get(&url).call(),
        };
        let mut resp = sent.map_err(|e| IndexError::Backend(format!("{what}: {e}")))?;
        let status = resp.status().as_u16();
        let text = resp
            .body_mut()
            .with_config()
            .limit(MAX_BODY)
            .read_to_string()
            .map_err(|e| IndexError::Backend(format!("{what}: reading the answer: {e}")))?;
        if !(200..300).contains(&status) {
            return Err(IndexError::Backend(format!("{what}: HTTP {status}: {}", error_message(&text))));
        }
        serde_json::from_str(&text).map_err(|e| IndexError::Backend(format!("{what}: bad JSON from Chroma: {e}")))
    }

    fn check_dim(&self, v: &[f32]) -> Result<(), IndexError> {
        if v.len() == self.dim {
            Ok(())
        } else {
            Err(IndexError::Dimension { got: v.len(), want: self.dim })
        }
    }
}

impl VectorStore for ChromaStore {
    fn search(&self, namespace: &str, vector: &[f32], k: usize, now_ms: u64) -> Result<Vec<Candidate>, IndexError> {
        self.check_dim(vector)?;
        if k == 0 {
            // Chroma 1.5 drops the connection on `n_results: 0`.
            return Ok(Vec::new());
        }
        let answer =
            self.call("query", &self.collection_path("query"), Some(&query_body(namespace, vector, k, now_ms)))?;
        parse_query(answer)
    }

    fn insert(&self, record: Record) -> Result<(), IndexError> {
        self.check_dim(&record.vector)?;
        let now = record.created_ms;
        self.call("upsert", &self.collection_path("upsert"), Some(&upsert_body(&record)?))?;
        let last = self.last_sweep_ms.load(Ordering::Relaxed);
        // One inserter wins the sweep; a failed sweep is retried a minute later.
        if now >= last.saturating_add(SWEEP_EVERY_MS)
            && self.last_sweep_ms.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).is_ok()
        {
            if let Err(e) = self.sweep(now) {
                eprintln!("semgate-sidecar: Chroma sweep of expired records failed: {e}");
            }
        }
        Ok(())
    }

    /// Chroma's count, expired records not yet swept included; 0 if Chroma does not answer.
    fn len(&self) -> usize {
        self.call("count", &self.collection_path("count"), None).ok().and_then(|v| v.as_u64()).unwrap_or(0) as usize
    }

    /// Chroma persists every accepted write itself.
    fn flush(&self) -> Result<(), IndexError> {
        Ok(())
    }
}

/// Millisecond times as Chroma's int metadata (i64).
fn ms(t: u64) -> i64 {
    i64::try_from(t).unwrap_or(i64::MAX)
}

fn create_collection_body(name: &str, model_id: &str, dim: usize) -> Value {
    json!({
        "name": name,
        "get_or_create": true,
        "configuration": {"hnsw": {"space": "cosine"}},
        "metadata": {"semgate_model": model_id, "semgate_dim": dim},
    })
}

/// The collection's id, once it is known to be cosine and to hold this model's vectors.
fn check_collection(c: &Value, name: &str, model_id: &str, dim: usize) -> Result<String, IndexError> {
    let id = c["id"].as_str().ok_or_else(|| IndexError::Backend(format!("collection {name}: no id in {c}")))?;
    let meta = &c["metadata"];
    let (Some(model), Some(their_dim)) = (meta["semgate_model"].as_str(), meta["semgate_dim"].as_u64()) else {
        return Err(IndexError::Backend(format!(
            "Chroma collection {name} was not created by semgate (no semgate_model/semgate_dim metadata): \
             pick another --chroma-collection"
        )));
    };
    if model != model_id || their_dim != dim as u64 {
        return Err(IndexError::Backend(format!(
            "Chroma collection {name} holds vectors of model {model} ({their_dim} dimensions), this sidecar \
             embeds with {model_id} ({dim}): pick another --chroma-collection"
        )));
    }
    let config = &c["configuration_json"];
    let space = config["hnsw"]["space"].as_str().or_else(|| config["spann"]["space"].as_str());
    if space.is_some_and(|s| s != "cosine") {
        return Err(IndexError::Backend(format!(
            "Chroma collection {name} uses the {} space, semgate needs cosine",
            space.unwrap_or_default()
        )));
    }
    Ok(id.to_string())
}

fn upsert_body(r: &Record) -> Result<Value, IndexError> {
    let response = std::str::from_utf8(&r.response)
        .map_err(|_| IndexError::Backend(format!("record {}: the response is not UTF-8 JSON", r.id)))?;
    Ok(json!({
        "ids": [r.id.to_string()],
        "embeddings": [r.vector],
        "documents": [r.text],
        "metadatas": [{
            "namespace": r.namespace,
            "created_ms": ms(r.created_ms),
            "expires_ms": ms(r.expires_ms),
            "response": response,
        }],
    }))
}

fn query_body(namespace: &str, vector: &[f32], k: usize, now_ms: u64) -> Value {
    json!({
        "query_embeddings": [vector],
        "n_results": k,
        "where": {"$and": [{"namespace": namespace}, {"expires_ms": {"$gt": ms(now_ms)}}]},
        "include": ["distances", "documents", "metadatas"],
    })
}

fn sweep_body(now_ms: u64) -> Value {
    json!({"where": {"expires_ms": {"$lte": ms(now_ms)}}})
}

/// One list per query embedding (we send one); a field not asked for in `include` is null.
type PerQuery<T> = Option<Vec<Vec<Option<T>>>>;

#[derive(Deserialize)]
struct QueryAnswer {
    ids: Vec<Vec<String>>,
    #[serde(default)]
    distances: PerQuery<f32>,
    #[serde(default)]
    documents: PerQuery<String>,
    #[serde(default)]
    metadatas: PerQuery<Map<String, Value>>,
}

/// Candidates best first; score = 1 - cosine distance. `vector` stays empty: nothing
/// downstream of a search reads it, and fetching it would triple the answer. A record this
/// sidecar did not write (no numeric id, no metadata) cannot be served and is skipped rather
/// than failing every lookup of its namespace.
fn parse_query(answer: Value) -> Result<Vec<Candidate>, IndexError> {
    let a: QueryAnswer =
        serde_json::from_value(answer).map_err(|e| IndexError::Backend(format!("query: unexpected answer: {e}")))?;
    fn first<T>(v: Option<Vec<Vec<T>>>) -> Vec<T> {
        v.and_then(|v| v.into_iter().next()).unwrap_or_default()
    }
    let ids = first(Some(a.ids));
    let (distances, documents, metadatas) = (first(a.distances), first(a.documents), first(a.metadatas));
    let mut out: Vec<Candidate> = ids
        .into_iter()
        .enumerate()
        .filter_map(|(i, id)| {
            let distance = distances.get(i).copied().flatten()?;
            let meta = metadatas.get(i).cloned().flatten()?;
            let record = Record {
                id: id.parse().ok()?,
                namespace: meta.get("namespace")?.as_str()?.to_string(),
                text: documents.get(i).cloned().flatten().unwrap_or_default(),
                response: meta.get("response")?.as_str()?.as_bytes().to_vec(),
                vector: Vec::new(),
                created_ms: meta.get("created_ms")?.as_u64()?,
                expires_ms: meta.get("expires_ms")?.as_u64()?,
            };
            Some(Candidate { score: 1.0 - distance, record })
        })
        .collect();
    out.sort_by(|a, b| b.score.total_cmp(&a.score));
    Ok(out)
}

/// Chroma's `{"error", "message"}`, or the raw text.
fn error_message(body: &str) -> String {
    serde_json::from_str::<Value>(body)
        .ok()
        .and_then(|v| v["message"].as_str().map(str::to_string))
        .unwrap_or_else(|| body.chars().take(300).collect())
}

#[cfg(test)]
#[path = "../tests/chroma_tests.rs"]
mod tests;
