//! Embeddings from any OpenAI-compatible `POST {base}/embeddings` endpoint: OpenAI
//! (text-embedding-3-*), Hugging Face TEI, vLLM, Ollama. The prompt text leaves the machine.
//!
//! What it does, and why:
//! - sends `{"model", "input": [texts], "dimensions"?}`, at most `max_batch` texts a request;
//! - puts the answer's `data[].embedding` back in input order by `data[].index` (the spec does
//!   not promise the order), and checks one vector per text, each of `dim` finite numbers;
//! - L2-normalises every vector: OpenAI's already are, TEI's or Ollama's need not be, and the
//!   index takes the dot product as the cosine;
//! - knows `dim` before the index opens: `dimensions` when set (sent, so the server must answer
//!   that size, and nothing is asked at startup), else the length of one probe embedding;
//! - blocks (ureq, rustls): the server calls it inside `spawn_blocking`;
//! - turns every failure into `EmbedError::Remote` with the URL, the HTTP status and the
//!   upstream's own message. The API key is sent, never shown: not in errors, not in `Debug`.

use super::{EmbedError, Embedder};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Answers larger than this are refused (64 texts x 3072 floats is ~4 MB of JSON).
const MAX_ANSWER_BYTES: u64 = 64 << 20;
/// What the startup probe embeds to learn the dimension.
const PROBE_TEXT: &str = "semgate dimension probe";

#[derive(Clone)]
pub struct OpenAiConfig {
    /// e.g. `https://api.openai.com/v1` or `http://127.0.0.1:8080/v1`; `/embeddings` is appended.
    pub base_url: String,
    pub model: String,
    /// Sent as `Authorization: Bearer <key>` when set.
    pub api_key: Option<String>,
    /// OpenAI's `dimensions` (shortened text-embedding-3 vectors); also skips the startup probe.
    pub dimensions: Option<usize>,
    /// For one whole request (connect, send, answer).
    pub timeout: Duration,
    pub max_batch: usize,
}

impl OpenAiConfig {
    pub fn new(base_url: impl Into<String>, model: impl Into<String>) -> Self {
        OpenAiConfig {
            base_url: base_url.into(),
            model: model.into(),
            api_key: None,
            dimensions: None,
            timeout: Duration::from_secs(10),
            max_batch: 64,
        }
    }
}

impl std::fmt::Debug for OpenAiConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenAiConfig")
            .field("base_url", &self.base_url)
            .field("model", &self.model)
            .field("api_key", &self.api_key.as_ref().map(|_| "<hidden>"))
            .field("dimensions", &self.dimensions)
            .field("timeout", &self.timeout)
            .field("max_batch", &self.max_batch)
            .finish()
    }
}

pub struct OpenAiEmbedder {
    agent: ureq::Agent,
    url: String,
    model: String,
    authorization: Option<String>,
    dimensions: Option<usize>,
    timeout: Duration,
    max_batch: usize,
    dim: usize,
    model_id: String,
}

#[derive(Serialize)]
struct EmbeddingsRequest<'a> {
    model: &'a str,
    input: &'a [&'a str],
    #[serde(skip_serializing_if = "Option::is_none")]
    dimensions: Option<usize>,
}

#[derive(Deserialize)]
struct EmbeddingsAnswer {
    data: Vec<EmbeddingItem>,
}

#[derive(Deserialize)]
struct EmbeddingItem {
    index: usize,
    embedding: Vec<f32>,
}

impl OpenAiEmbedder {
    /// Checks the config; without `dimensions`, embeds one probe text to learn the dimension
    /// (so a wrong URL, model or key fails here, at startup).
    pub fn new(config: OpenAiConfig) -> Result<Self, EmbedError> {
        let base = config.base_url.trim_end_matches('/');
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(EmbedError::Remote(format!("the URL must start with http:// or https://, got {base:?}")));
        }
        if config.model.trim().is_empty() {
            return Err(EmbedError::Remote("the model name is empty".into()));
        }
        if config.max_batch == 0 || config.dimensions == Some(0) {
            return Err(EmbedError::Remote("the batch size and the dimension must be at least 1".into()));
        }
        let agent = ureq::Agent::config_builder()
            .timeout_global(Some(config.timeout))
            // Errors are read from the answer's body, so a 4xx/5xx is an answer, not an Err.
            .http_status_as_error(false)
            // The key goes to the configured host only.
            .max_redirects(0)
            .user_agent("semgate-sidecar")
            .build()
            .into();
        let mut embedder = OpenAiEmbedder {
            agent,
            url: format!("{base}/embeddings"),
            model: config.model.clone(),
            authorization: config.api_key.as_ref().map(|k| format!("Bearer {k}")),
            dimensions: config.dimensions,
            timeout: config.timeout,
            max_batch: config.max_batch,
            dim: config.dimensions.unwrap_or(0),
            model_id: String::new(),
        };
        if embedder.dim == 0 {
            let probe = embedder.request(&[PROBE_TEXT]).map_err(|e| match e {
                EmbedError::Remote(m) => EmbedError::Remote(format!("{m} (while learning the dimension at startup)")),
                other => other,
            })?;
            embedder.dim = probe.first().map_or(0, Vec::len);
        }
        embedder.model_id = model_id(&config.model, embedder.dim);
        Ok(embedder)
    }

    fn error(&self, what: impl std::fmt::Display) -> EmbedError {
        EmbedError::Remote(format!("POST {} (model {}): {what}", self.url, self.model))
    }

    /// One request for `texts`; the vectors come back in input order, normalised. Until the
    /// dimension is known (`dim == 0`, the probe) any non-empty length is accepted.
    fn request(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError> {
        let body =
            serde_json::to_vec(&EmbeddingsRequest { model: &self.model, input: texts, dimensions: self.dimensions })
                .map_err(|e| self.error(e))?;
        let mut call = self.agent.post(&self.url).content_type("application/json");
        if let Some(authorization) = &self.authorization {
            call = call.header("authorization", authorization);
        }
        let mut answer = call.send(&body[..]).map_err(|e| match e {
            ureq::Error::Timeout(_) => self.error(format_args!("no answer within {:?}", self.timeout)),
            e => self.error(e),
        })?;
        let status = answer.status();
        let text = answer.body_mut().with_config().limit(MAX_ANSWER_BYTES).read_to_string().map_err(|e| match e {
            ureq::Error::Timeout(_) => self.error(format_args!("no complete answer within {:?}", self.timeout)),
            e => self.error(format_args!("reading the answer: {e}")),
        })?;
        if !status.is_success() {
            return Err(self.error(format_args!("HTTP {}: {}", status.as_u16(), upstream_message(&text))));
        }
        let answer: EmbeddingsAnswer =
            serde_json::from_str(&text).map_err(|e| self.error(format_args!("not an embeddings answer: {e}")))?;
        if answer.data.len() != texts.len() {
            return Err(self.error(format_args!("{} embeddings for {} texts", answer.data.len(), texts.len())));
        }
        let mut out: Vec<Option<Vec<f32>>> = vec![None; texts.len()];
        for item in answer.data {
            let Some(slot) = out.get_mut(item.index) else {
                return Err(self.error(format_args!("index {} out of range for {} texts", item.index, texts.len())));
            };
            if slot.is_some() {
                return Err(self.error(format_args!("index {} answered twice", item.index)));
            }
            let len = item.embedding.len();
            if len == 0 || (self.dim != 0 && len != self.dim) {
                return Err(self.error(format_args!("an embedding of dimension {len}, expected {}", self.dim)));
            }
            *slot = Some(normalise(item.embedding).ok_or_else(|| {
                self.error(format_args!("embedding {} is zero or not finite: cannot normalise", item.index))
            })?);
        }
        // Exactly one per index: the count matched and no index was out of range or repeated.
        Ok(out.into_iter().flatten().collect())
    }
}

impl Embedder for OpenAiEmbedder {
    fn model_id(&self) -> &str {
        &self.model_id
    }
    fn dim(&self) -> usize {
        self.dim
    }
    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError> {
        let mut out = Vec::with_capacity(texts.len());
        for batch in texts.chunks(self.max_batch) {
            out.extend(self.request(batch)?);
        }
        Ok(out)
    }
}

/// The API key from the environment variable `var`: a key on a command line would show in
/// `ps`. Errors name the variable, never a value.
pub fn key_from_env(var: &str) -> Result<String, EmbedError> {
    match std::env::var(var) {
        Ok(key) if !key.trim().is_empty() => Ok(key.trim().to_string()),
        _ => Err(EmbedError::Remote(format!("the environment variable {var} (the API key) is unset or empty"))),
    }
}

/// `openai-<model>-<dim>` with anything but `[A-Za-z0-9._-]` replaced by `_`: names the journal
/// file, so two models (or two dimensions of one model) never share a vector space.
pub fn model_id(model: &str, dim: usize) -> String {
    let safe: String =
        model.chars().map(|c| if c.is_ascii_alphanumeric() || "._-".contains(c) { c } else { '_' }).collect();
    format!("openai-{safe}-{dim}")
}

fn normalise(mut v: Vec<f32>) -> Option<Vec<f32>> {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if !norm.is_finite() || norm == 0.0 {
        return None;
    }
    v.iter_mut().for_each(|x| *x /= norm);
    Some(v)
}

/// The upstream's own words from an error body: OpenAI, Ollama and vLLM send
/// `{"error": {"message"}}`, TEI `{"error": "..."}`, older vLLM `{"message"}`; else the
/// start of the body as text.
fn upstream_message(body: &str) -> String {
    let json: Option<serde_json::Value> = serde_json::from_str(body).ok();
    let message = json.as_ref().and_then(|v| {
        v.pointer("/error/message").or_else(|| v.get("error")).or_else(|| v.get("message")).and_then(|m| m.as_str())
    });
    let text = message.unwrap_or(body).trim();
    if text.is_empty() {
        return "(no message)".into();
    }
    let cut: String = text.chars().take(300).map(|c| if c.is_control() { ' ' } else { c }).collect();
    if text.chars().count() > 300 {
        format!("{cut}...")
    } else {
        cut
    }
}

#[cfg(test)]
#[path = "../tests/openai_tests.rs"]
mod tests;
