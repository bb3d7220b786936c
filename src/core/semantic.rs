//! The semantic layer's pure side: which text the sidecar embeds, the scope a semantic hit
//! must share exactly (tenant, provider, model, and a hash of everything but that text:
//! system prompt, earlier turns, image digests, parameters), and the sidecar's bodies
//! (types in `core::protocol`).

use crate::core::cache::entry::{is_gateway_content_type, BodyKind, CachedResponse};
use crate::core::cache::key::CacheKey;
use crate::core::protocol::{LookupRequest, LookupResponse, StoreRequest, StoredResponse};
use crate::core::request::ChatRequest;
use base64::Engine;
use serde::Deserialize;
use serde_json::Value;

/// What the sidecar embeds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TextMode {
    /// The last user message; everything before it must match exactly (the context hash).
    LastUser,
    /// Every message's text; only roles, images and parameters must match exactly.
    Conversation,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SemanticConfig {
    /// Off by default: the gateway is then an exact-only cache with no sidecar at all.
    pub enabled: bool,
    /// The Envoy cluster of the sidecar.
    pub cluster: String,
    /// How long a lookup may take before the request goes on to the provider (fail open).
    pub timeout_ms: u64,
    /// Cosine threshold sent with each lookup; unset uses the sidecar's default.
    pub threshold: Option<f64>,
    /// Ask the sidecar to verify candidates with its near-miss guard.
    pub guard: bool,
    pub text: TextMode,
    /// Put the model into the scope (Bifrost's `cache_by_model`): one model's answers never
    /// serve another. Provider scoping follows `cache.cache_by_provider`.
    pub cache_by_model: bool,
    /// TTL of semantic entries; unset uses the exact cache's (policy) TTL.
    pub ttl_s: Option<u64>,
    /// Send the exact-cache key with each lookup, so the sidecar's shared exact tier answers
    /// a request another Envoy replica already paid for (then copied into this replica's
    /// cache). Off keeps every replica's exact layer to itself.
    pub shared_exact: bool,
    /// The environment variable of the Wasm VM that holds the sidecar's bearer token (sent
    /// with every lookup and store); unset sends none, which only a loopback sidecar accepts.
    pub token_env: Option<String>,
}

impl Default for SemanticConfig {
    fn default() -> Self {
        SemanticConfig {
            enabled: false,
            cluster: "semgate_sidecar".into(),
            timeout_ms: 50,
            threshold: None,
            guard: true,
            text: TextMode::LastUser,
            cache_by_model: true,
            ttl_s: None,
            shared_exact: true,
            token_env: None,
        }
    }
}

impl SemanticConfig {
    /// Problems as (field, message); `at` is the field path prefix.
    pub fn problems(&self) -> Option<(&'static str, &'static str)> {
        if self.cluster.trim().is_empty() {
            return Some(("cluster", "must name the sidecar's Envoy cluster"));
        }
        if self.timeout_ms == 0 || self.timeout_ms > 10_000 {
            return Some(("timeout_ms", "must be between 1 and 10000"));
        }
        if let Some(t) = self.threshold {
            if !(t > 0.0 && t <= 1.0) {
                return Some(("threshold", "must be in (0, 1]"));
            }
        }
        if self.ttl_s == Some(0) {
            return Some(("ttl_s", "must be greater than 0"));
        }
        if self.token_env.as_deref().is_some_and(str::is_empty) {
            return Some(("token_env", "must name an environment variable"));
        }
        None
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct SemanticQuery {
    pub scope: String,
    pub text: String,
}

fn message_text(m: &Value) -> String {
    match m.get("content") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(parts)) => parts
            .iter()
            .filter(|p| p.get("type").and_then(Value::as_str) == Some("text"))
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join("\n"),
        _ => String::new(),
    }
}

/// Remove the text of a message, keeping its role and any non-text parts (image digests).
fn strip_text(m: &mut Value) {
    match m.get_mut("content") {
        Some(Value::Array(parts)) => parts.retain(|p| p.get("type").and_then(Value::as_str) != Some("text")),
        Some(c) => *c = Value::Null,
        None => {}
    }
}

/// The text to embed and the scope to search in; `None` when there is nothing to embed
/// (e.g. the conversation does not end with a user message).
pub fn semantic_query(
    req: &ChatRequest,
    tenant: &str,
    provider: Option<&str>,
    cfg: &SemanticConfig,
) -> Option<SemanticQuery> {
    let mut ctx = req.value.clone();
    let messages = ctx.get_mut("messages")?.as_array_mut()?;
    let text = match cfg.text {
        TextMode::LastUser => {
            let last = messages.last_mut()?;
            if last.get("role").and_then(Value::as_str) != Some("user") {
                return None;
            }
            let text = message_text(last);
            strip_text(last);
            text
        }
        TextMode::Conversation => {
            let mut lines = Vec::new();
            for m in messages.iter_mut() {
                let role = m.get("role").and_then(Value::as_str).unwrap_or("").to_string();
                lines.push(format!("{role}: {}", message_text(m)));
                strip_text(m);
            }
            lines.join("\n")
        }
    };
    if text.trim().is_empty() {
        return None;
    }
    if !cfg.cache_by_model {
        if let Some(obj) = ctx.as_object_mut() {
            obj.remove("model");
        }
    }
    let context = blake3::hash(ctx.to_string().as_bytes()).to_hex();
    let scope = format!("{tenant}|{}|{}", provider.unwrap_or("*"), &context[..32]);
    Some(SemanticQuery { scope, text })
}

/// `threshold`: the request's (policy) threshold; `None` leaves it to the sidecar.
/// The sidecar's budget for a lookup: the callout's timeout less the time the request and the
/// answer spend on the wire and in Envoy, so a shed answer arrives before the callout gives up.
pub fn lookup_deadline_ms(timeout_ms: u64) -> u64 {
    const MARGIN_MS: u64 = 5;
    timeout_ms.saturating_sub(MARGIN_MS.min(timeout_ms / 5)).max(1)
}

pub fn lookup_body(q: &SemanticQuery, key: &CacheKey, cfg: &SemanticConfig, threshold: Option<f64>) -> Vec<u8> {
    let body = LookupRequest {
        scope: q.scope.clone(),
        key: cfg.shared_exact.then(|| key.hex()),
        text: q.text.clone(),
        // The sidecar compares in f32; the decimal sent is the f32's shortest form.
        threshold: threshold.map(|t| t as f32),
        guard: Some(cfg.guard),
        deadline_ms: Some(lookup_deadline_ms(cfg.timeout_ms)),
    };
    serde_json::to_vec(&body).unwrap_or_default()
}

/// The sidecar's response object for a stored answer.
fn stored_response(r: &CachedResponse) -> StoredResponse {
    StoredResponse {
        status: 200,
        headers: vec![("content-type".into(), r.content_type.clone())],
        body_b64: base64::engine::general_purpose::STANDARD.encode(r.body()),
        stream: r.kind == BodyKind::Sse,
    }
}

pub fn store_body(q: &SemanticQuery, key: &CacheKey, r: &CachedResponse, ttl_s: u64) -> Vec<u8> {
    let body = StoreRequest {
        scope: q.scope.clone(),
        key: Some(key.hex()),
        text: q.text.clone(),
        response: stored_response(r),
        ttl_s: Some(ttl_s),
    };
    serde_json::to_vec(&body).unwrap_or_default()
}

/// Which of the sidecar's tiers answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HitTier {
    /// The shared exact tier, by this request's exact key.
    Exact,
    Semantic,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SemanticHit {
    pub tier: HitTier,
    /// Cosine similarity as the sidecar computed it (f32).
    pub score: f32,
    pub created_ms: Option<u64>,
    pub expires_ms: Option<u64>,
    pub response: CachedResponse,
}

/// Why a lookup answer is not used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LookupError {
    /// Not the protocol's shape (counted as a sidecar error; the request fails open).
    Protocol(String),
    /// A hit whose content type the gateway never produces: not replayed (its bytes would
    /// become response headers), counted, and treated as a miss.
    UnsafeEntry,
}

impl From<String> for LookupError {
    fn from(s: String) -> Self {
        LookupError::Protocol(s)
    }
}

impl From<&str> for LookupError {
    fn from(s: &str) -> Self {
        LookupError::Protocol(s.to_string())
    }
}

impl std::fmt::Display for LookupError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LookupError::Protocol(s) => f.write_str(s),
            LookupError::UnsafeEntry => f.write_str("the entry's content type is not one the gateway produces"),
        }
    }
}

/// A lookup answer: `Ok(Some)` on a usable hit, `Ok(None)` on a miss.
pub fn parse_lookup(body: &[u8], want_stream: bool) -> Result<Option<SemanticHit>, LookupError> {
    let answer: LookupResponse<StoredResponse> =
        serde_json::from_slice(body).map_err(|e| format!("lookup answer is not JSON: {e}"))?;
    if !answer.hit {
        return Ok(None);
    }
    let tier = match answer.tier.as_deref() {
        Some("exact") => HitTier::Exact,
        _ => HitTier::Semantic,
    };
    let r = answer.response.ok_or("hit without a response")?;
    let body = base64::engine::general_purpose::STANDARD.decode(&r.body_b64).map_err(|e| format!("body_b64: {e}"))?;
    if r.stream != want_stream {
        // The scope includes `stream`, so this only happens with a foreign writer: miss.
        return Ok(None);
    }
    let content_type = r
        .headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("content-type"))
        .map(|(_, v)| v.as_str())
        .unwrap_or(if r.stream { "text/event-stream" } else { "application/json" })
        .to_string();
    if !is_gateway_content_type(&content_type) {
        return Err(LookupError::UnsafeEntry);
    }
    let kind = if r.stream { BodyKind::Sse } else { BodyKind::Json };
    let response = CachedResponse { kind, content_type, chunks: vec![body] };
    Ok(Some(SemanticHit {
        tier,
        score: answer.score,
        created_ms: answer.created_ms,
        expires_ms: answer.expires_ms,
        response,
    }))
}

#[cfg(test)]
#[path = "tests/semantic_tests.rs"]
mod tests;
