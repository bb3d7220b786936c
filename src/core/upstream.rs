//! The upstream role: what the filter does on each attempt Envoy makes to a provider of a
//! chain (the aggregate cluster runs this role once per attempt, retries included).
//!
//! Every decision is a function of what the host reads (the endpoint's `provider` metadata,
//! the request body, the response status, body chunks), the compiled [`ProviderTable`], the
//! shared-data map ([`SharedData`], CAS) and a clock passed in. The host carries out the
//! answer: set and remove headers, replace bodies. Keys appear only in [`SetHeader`] values
//! marked secret, never in errors, records or debug output.
//!
//! Shared data written here (bounded: one record per provider, a fixed ring for attempts):
//! - `semgate:u:k:<provider>`: key rotation, `[next u32][n u32][cooled_until_ms u64; n]`;
//! - `semgate:u:a:<slot>`: the attempts of one request, `[request hash u64][n u8]` then per
//!   attempt `[status u16 (0 = no answer)][name len u8][provider name]`;
//! - `semgate:u:vt:<provider>`: a Vertex token minted by the sidecar, `[expires_ms u64][token]`.

use serde::Deserialize;
use serde_json::json;

use crate::core::downstream::{Callout, CalloutKind};
use crate::core::errors::GatewayError;
use crate::core::providers::config::{Provider, ProviderAuth, ProviderTable};
use crate::core::providers::{
    upstream_path, vertex_express_path, ErrorOut, ProviderKind, RequestOptions, ResponseContext, StreamTranslator,
    TranslateError, Usage, VertexLocation,
};
use crate::core::store::{SetError, SharedData};

/// The upstream role's `root_id` in the Envoy config.
pub const ROOT_ID: &str = "semgate_upstream";
/// The `get_property` path naming the attempt's provider (endpoint metadata of the chosen host).
pub const PROVIDER_PROPERTY: &[&str] = &["xds", "upstream_host_metadata", "filter_metadata", "semgate", "provider"];
/// The `get_property` path naming the key of the attempt's endpoint (its environment variable):
/// a provider cluster lists one endpoint per key, each in its own priority, so Envoy's retry
/// moves to the provider's next key before the chain's next provider.
pub const KEY_PROPERTY: &[&str] = &["xds", "upstream_host_metadata", "filter_metadata", "semgate", "key"];
/// The attempt's cluster, for clusters whose endpoints carry no metadata.
pub const CLUSTER_PROPERTY: &[&str] = &["xds", "cluster_name"];
/// Response headers the upstream role sets for the downstream role.
pub const HEADER_PROVIDER: &str = "x-semgate-provider";
pub const HEADER_UPSTREAM_MODEL: &str = "x-semgate-upstream-model";
/// Provider attempts the answer took (1: the first provider answered with its first key).
pub const HEADER_ATTEMPTS: &str = "x-semgate-attempts";
/// Set by Envoy on upstream requests when the virtual host has `include_request_attempt_count`.
pub const ENVOY_ATTEMPT_COUNT: &str = "x-envoy-attempt-count";

/// Request headers dropped before every attempt: the downstream's credential placeholder,
/// any provider credential, and compression (translation needs the provider's plain bytes).
pub const REMOVE_REQUEST_HEADERS: &[&str] = &[
    "authorization",
    "x-api-key",
    "api-key",
    "x-goog-api-key",
    "anthropic-version",
    "accept-encoding",
    crate::core::downstream::RELAY_HEADER,
];
/// Slots of the attempt log ring; a request whose slot is reused loses its history (lossy).
pub const ATTEMPT_LOG_SLOTS: u64 = 4096;
/// Attempts one record keeps (well above any sensible `max_attempts`).
const MAX_LOGGED_ATTEMPTS: usize = 16;
const MAX_CAS_RETRIES: u32 = 8;
/// Status recorded for an attempt that got no response (connect failure, reset, timeout).
const NO_ANSWER: u16 = 0;

/// A header to set. Values holding a key are `secret`: `Debug` prints them redacted.
#[derive(Clone, PartialEq, Eq)]
pub struct SetHeader {
    pub name: &'static str,
    pub value: String,
    pub secret: bool,
}

impl SetHeader {
    fn plain(name: &'static str, value: impl Into<String>) -> Self {
        SetHeader { name, value: value.into(), secret: false }
    }
}

impl std::fmt::Debug for SetHeader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let value = if self.secret { "<redacted>" } else { self.value.as_str() };
        write!(f, "{}: {}", self.name, value)
    }
}

/// What the host read for one attempt's request (headers and the whole body).
#[derive(Debug, Clone, Copy)]
pub struct AttemptRequest<'a> {
    /// The endpoint metadata at [`PROVIDER_PROPERTY`].
    pub provider: Option<&'a str>,
    /// `x-request-id`: keys the attempt log the downstream role reads after a failure.
    pub request_id: Option<&'a str>,
    /// [`ENVOY_ATTEMPT_COUNT`], when Envoy sends it.
    pub envoy_attempt_count: Option<&'a str>,
    /// The attempt's cluster ([`CLUSTER_PROPERTY`]), read only when the endpoint names no
    /// provider: a provider whose `cluster` it is (an Istio `outbound|...` cluster).
    pub cluster: Option<&'a str>,
    /// The endpoint metadata at [`KEY_PROPERTY`]: the key (by its variable) this attempt uses.
    pub key: Option<&'a str>,
    /// The gateway marked the request as a `passthrough` relay: `path` is kept.
    pub relay: bool,
    /// The request's `:path` (read for relays).
    pub path: Option<&'a str>,
    pub body: &'a [u8],
    pub now_ms: u64,
}

/// What a refused attempt is answered with (a local reply from the upstream filter).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AttemptError {
    #[error("the upstream host carries no `semgate.provider` endpoint metadata, and its cluster is no provider's")]
    NoProvider,
    #[error("provider `{0}` of the upstream host is not configured")]
    UnknownProvider(String),
    #[error("model `{model}` has no entry for provider `{provider}`")]
    NotInChain { model: String, provider: String },
    #[error("request body has no `model`")]
    MissingModel,
    #[error("model `{0}` is not served by this gateway")]
    UnknownModel(String),
    #[error(transparent)]
    Request(#[from] TranslateError),
    #[error("no valid Vertex token for provider `{0}` yet")]
    TokenUnavailable(String),
}

impl AttemptError {
    pub fn status(&self) -> u16 {
        match self {
            AttemptError::Request(_) | AttemptError::MissingModel => 400,
            AttemptError::UnknownModel(_) => 404,
            // Retriable: the next provider of the chain may still answer.
            AttemptError::TokenUnavailable(_) => 503,
            AttemptError::NoProvider | AttemptError::UnknownProvider(_) | AttemptError::NotInChain { .. } => 500,
        }
    }

    /// The OpenAI-style body of the local reply.
    pub fn to_json(&self) -> Vec<u8> {
        match self {
            AttemptError::Request(e) => GatewayError::from(e.clone()).to_json(),
            AttemptError::MissingModel => GatewayError::invalid("request body has no `model`", "model").to_json(),
            AttemptError::UnknownModel(m) => GatewayError::UnknownModel(m.clone()).to_json(),
            AttemptError::TokenUnavailable(_) => {
                error_json(&self.to_string(), "server_error", "upstream_credentials_unavailable", None)
            }
            _ => GatewayError::Internal(self.to_string()).to_json(),
        }
    }
}

/// What the host must remember from the request phase to handle the response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptState {
    pub provider: String,
    pub kind: ProviderKind,
    /// The `models` entry that routed the request (a name or pattern: bounded, for metrics).
    pub route: String,
    /// This provider is not its chain's first: its answer is a fallback's.
    pub fallback_provider: bool,
    /// The model the client asked for (names the OpenAI answer).
    pub client_model: String,
    pub upstream_model: String,
    pub stream: bool,
    pub include_usage: bool,
    /// Index of the key used (never the key); `None` for token auth.
    pub key: Option<usize>,
    /// Every key was cooling down; the one whose cooldown ends first was used.
    pub all_keys_cooling: bool,
    /// A 429 is answered as a 503 (`upstream_rate_limited`), so Envoy's outlier detection
    /// takes this key's endpoint out and the retry goes to the next key or provider: the
    /// provider has another key or the chain another provider.
    pub rate_limit_fails_over: bool,
    /// 1 for the first attempt; `None` when neither Envoy nor the log could tell.
    pub attempt: Option<u32>,
    /// This attempt's place in the attempt log (it may differ from Envoy's count).
    pub logged: Option<u32>,
    pub request_id: Option<String>,
}

/// The request-phase answer: headers to set and remove, the body to send, and the state.
#[derive(Debug, Clone)]
pub struct AttemptPlan {
    pub set_headers: Vec<SetHeader>,
    pub remove_headers: Vec<&'static str>,
    /// `None`: the client's body goes as it is.
    pub body: Option<Vec<u8>>,
    pub state: AttemptState,
}

#[derive(Deserialize)]
struct BodyHead {
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default)]
    stream_options: Option<StreamOptions>,
}

#[derive(Deserialize)]
struct StreamOptions {
    #[serde(default)]
    include_usage: Option<bool>,
}

/// (a) The request phase of one attempt: provider, key, headers and translated body.
pub fn plan_attempt<S: SharedData>(
    table: &ProviderTable,
    kv: &S,
    req: &AttemptRequest<'_>,
) -> Result<AttemptPlan, AttemptError> {
    let provider = match req.provider.filter(|p| !p.is_empty()) {
        Some(name) => table.provider(name).ok_or_else(|| AttemptError::UnknownProvider(name.to_string()))?,
        None => req.cluster.and_then(|c| table.provider_by_cluster(c)).ok_or(AttemptError::NoProvider)?,
    };
    let name = provider.name.as_str();
    if req.relay {
        return Ok(plan_relay(provider, kv, req));
    }
    let head: BodyHead = serde_json::from_slice(req.body).map_err(|e| TranslateError::InvalidJson(e.to_string()))?;
    let client_model = head.model.ok_or(AttemptError::MissingModel)?;
    let Some(chain) = table.model(&client_model) else {
        return Err(AttemptError::UnknownModel(client_model));
    };
    let route = chain.model.clone();
    let upstream_model = table
        .upstream_model(&client_model, name)
        .ok_or_else(|| AttemptError::NotInChain { model: client_model.clone(), provider: name.to_string() })?
        .to_string();
    let position = table.position(&client_model, name);
    let is_last = position.is_none_or(|(at, len)| at + 1 == len);
    let stream = head.stream.unwrap_or(false);
    let include_usage = stream && head.stream_options.and_then(|o| o.include_usage).unwrap_or(false);

    let path = attempt_path(provider, &upstream_model, stream)?;
    let rename = (upstream_model != client_model).then_some(upstream_model.as_str());
    let opts = RequestOptions { model: rename, default_max_tokens: provider.max_tokens_default };
    let body = super::providers::translate_request(provider.kind, req.body, &opts)?;

    let mut set_headers =
        vec![SetHeader::plain(":path", path), SetHeader::plain(":authority", provider.authority.clone())];
    let (key, all_keys_cooling) = match &provider.auth {
        ProviderAuth::Keys(keys) => {
            let choice = key_for(provider, kv, req);
            for (header, value) in &keys[choice.index].headers {
                set_headers.push(SetHeader { name: header, value: value.expose().to_string(), secret: true });
            }
            (Some(choice.index), choice.all_cooling)
        }
        ProviderAuth::SidecarToken { .. } => {
            let Some(token) = read_vertex_token(kv, &provider.name, req.now_ms) else {
                // In the attempt log, so a 502 after it names this attempt.
                if let Some(id) = req.request_id {
                    if let Some(n) = log_attempt_start(kv, id, &provider.name) {
                        log_attempt_status(kv, id, n, 503);
                    }
                }
                return Err(AttemptError::TokenUnavailable(provider.name.clone()));
            };
            set_headers.push(SetHeader { name: "authorization", value: format!("Bearer {token}"), secret: true });
            (None, false)
        }
    };
    let mut remove_headers = REMOVE_REQUEST_HEADERS.to_vec();
    if body.is_some() {
        remove_headers.push("content-length");
    }
    let logged = req.request_id.and_then(|id| log_attempt_start(kv, id, &provider.name));
    let attempt = logged.or_else(|| req.envoy_attempt_count.and_then(|a| a.trim().parse().ok()));
    let state = AttemptState {
        provider: provider.name.clone(),
        kind: provider.kind,
        route,
        fallback_provider: position.is_some_and(|(at, _)| at > 0),
        client_model,
        upstream_model,
        stream,
        include_usage,
        key,
        all_keys_cooling,
        rate_limit_fails_over: req.key.is_some() && (provider.key_count() > 1 || !is_last),
        attempt,
        logged,
        request_id: req.request_id.map(str::to_string),
    };
    Ok(AttemptPlan { set_headers, remove_headers, body, state })
}

/// A `passthrough` request (e.g. `GET /v1/models`): the provider's authority and key, its
/// base path before the request's path; the body and the answer pass as they are.
fn plan_relay<S: SharedData>(provider: &Provider, kv: &S, req: &AttemptRequest<'_>) -> AttemptPlan {
    let path = format!("{}{}", provider.base_path, req.path.unwrap_or("/"));
    let mut set_headers =
        vec![SetHeader::plain(":path", path), SetHeader::plain(":authority", provider.authority.clone())];
    let key = match &provider.auth {
        ProviderAuth::Keys(keys) => {
            let choice = key_for(provider, kv, req);
            for (header, value) in &keys[choice.index].headers {
                set_headers.push(SetHeader { name: header, value: value.expose().to_string(), secret: true });
            }
            Some(choice.index)
        }
        ProviderAuth::SidecarToken { .. } => {
            if let Some(token) = read_vertex_token(kv, &provider.name, req.now_ms) {
                set_headers.push(SetHeader { name: "authorization", value: format!("Bearer {token}"), secret: true });
            }
            None
        }
    };
    let state = AttemptState {
        provider: provider.name.clone(),
        kind: ProviderKind::OpenAi,
        route: String::new(),
        fallback_provider: false,
        client_model: String::new(),
        upstream_model: String::new(),
        stream: false,
        include_usage: false,
        key,
        all_keys_cooling: false,
        rate_limit_fails_over: false,
        attempt: None,
        logged: None,
        request_id: None,
    };
    AttemptPlan { set_headers, remove_headers: REMOVE_REQUEST_HEADERS.to_vec(), body: None, state }
}

fn attempt_path(provider: &Provider, model: &str, stream: bool) -> Result<String, TranslateError> {
    let path = match (&provider.kind, &provider.vertex) {
        (ProviderKind::Vertex, None) => vertex_express_path(model, stream),
        (_, place) => upstream_path(
            provider.kind,
            model,
            stream,
            place.as_ref().map(|v| VertexLocation { project: &v.project, location: &v.location }),
        )?,
    };
    Ok(format!("{}{path}", provider.base_path))
}

// ---------------------------------------------------------------- keys

/// The key of this attempt: the one its endpoint names (Envoy chose the endpoint: a retry after
/// a refused key lands on the next key's endpoint), else the next in turn that is not cooling.
fn key_for<S: SharedData>(provider: &Provider, kv: &S, req: &AttemptRequest<'_>) -> KeyChoice {
    let named = req.key.and_then(|env| provider.key_envs.iter().position(|e| e == env));
    match named {
        Some(index) => KeyChoice { index, all_cooling: false },
        None => choose_key(kv, &provider.name, provider.key_count(), req.now_ms),
    }
}

/// The key an attempt uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyChoice {
    pub index: usize,
    pub all_cooling: bool,
}

fn key_state_key(provider: &str) -> String {
    format!("semgate:u:k:{provider}")
}

/// A provider's rotation state: the next key to try and when each key's cooldown ends.
#[derive(Debug, Clone, PartialEq, Eq)]
struct KeyState {
    next: u32,
    cooled_until_ms: Vec<u64>,
}

impl KeyState {
    fn fresh(n: usize) -> Self {
        KeyState { next: 0, cooled_until_ms: vec![0; n] }
    }

    /// A record of another key count (the config changed) reads as fresh.
    fn decode(bytes: &[u8], n: usize) -> Self {
        if bytes.len() != 8 + 8 * n || u32_at(bytes, 4) as usize != n {
            return Self::fresh(n);
        }
        let cooled_until_ms = (0..n).map(|i| u64_at(bytes, 8 + 8 * i)).collect();
        KeyState { next: u32_at(bytes, 0), cooled_until_ms }
    }

    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(8 + 8 * self.cooled_until_ms.len());
        out.extend_from_slice(&self.next.to_le_bytes());
        out.extend_from_slice(&(self.cooled_until_ms.len() as u32).to_le_bytes());
        for t in &self.cooled_until_ms {
            out.extend_from_slice(&t.to_le_bytes());
        }
        out
    }
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    b.get(at..at + 4).map(|s| u32::from_le_bytes(s.try_into().unwrap_or_default())).unwrap_or(0)
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    b.get(at..at + 8).map(|s| u64::from_le_bytes(s.try_into().unwrap_or_default())).unwrap_or(0)
}

/// Reads, changes and writes a record with CAS, retrying on a concurrent writer. Returns the
/// value `change` produced on the write that landed (or on the last try: best effort).
fn update<S: SharedData, T>(kv: &S, key: &str, mut change: impl FnMut(Option<&[u8]>) -> (Vec<u8>, T)) -> T {
    let mut tries = 0;
    loop {
        tries += 1;
        let current = kv.get(key);
        let (bytes, out) = change(current.as_ref().map(|(v, _)| v.as_slice()));
        match kv.set(key, &bytes, current.map(|(_, cas)| cas)) {
            Err(SetError::CasMismatch) if tries < MAX_CAS_RETRIES => continue,
            _ => return out,
        }
    }
}

/// Rotate in turn across `n` keys, skipping those cooling down; when all are, the one whose
/// cooldown ends first. Rotation is best effort: a lost CAS race only repeats a key.
pub fn choose_key<S: SharedData>(kv: &S, provider: &str, n: usize, now_ms: u64) -> KeyChoice {
    if n <= 1 {
        let all_cooling = n == 1 && key_cooled_until(kv, provider, 1, 0) > now_ms;
        return KeyChoice { index: 0, all_cooling };
    }
    update(kv, &key_state_key(provider), |bytes| {
        let mut state = bytes.map(|b| KeyState::decode(b, n)).unwrap_or_else(|| KeyState::fresh(n));
        let start = state.next as usize % n;
        let free = (0..n).map(|i| (start + i) % n).find(|&k| state.cooled_until_ms[k] <= now_ms);
        let choice = match free {
            Some(index) => KeyChoice { index, all_cooling: false },
            None => {
                let index = (0..n).min_by_key(|&k| state.cooled_until_ms[k]).unwrap_or(0);
                KeyChoice { index, all_cooling: true }
            }
        };
        state.next = ((choice.index + 1) % n) as u32;
        (state.encode(), choice)
    })
}

/// Marks key `index` of `provider` as cooling down until `now_ms + cooldown_ms`.
pub fn cool_down_key<S: SharedData>(kv: &S, provider: &str, n: usize, index: usize, now_ms: u64, cooldown_ms: u64) {
    if index >= n {
        return;
    }
    let until = now_ms.saturating_add(cooldown_ms);
    update(kv, &key_state_key(provider), |bytes| {
        let mut state = bytes.map(|b| KeyState::decode(b, n)).unwrap_or_else(|| KeyState::fresh(n));
        state.cooled_until_ms[index] = state.cooled_until_ms[index].max(until);
        (state.encode(), ())
    })
}

/// When key `index` of `provider` stops cooling down (0 = not cooling).
pub fn key_cooled_until<S: SharedData>(kv: &S, provider: &str, n: usize, index: usize) -> u64 {
    kv.get(&key_state_key(provider))
        .map(|(b, _)| KeyState::decode(&b, n))
        .and_then(|s| s.cooled_until_ms.get(index).copied())
        .unwrap_or(0)
}

/// Statuses that say this key (not the provider) is refused or exhausted.
pub fn cools_key(status: u16) -> bool {
    matches!(status, 401 | 403 | 429)
}

// ---------------------------------------------------------------- Vertex tokens

pub fn vertex_token_key(provider: &str) -> String {
    format!("semgate:u:vt:{provider}")
}

fn vertex_lease_key(provider: &str) -> String {
    format!("semgate:u:vtl:{provider}")
}

/// How long one root's token fetch holds off the others (every worker's root ticks).
const TOKEN_LEASE_MS: u64 = 5_000;
const TOKEN_FETCH_TIMEOUT_MS: u64 = 5_000;

/// The shared-data record the token fetcher writes: `[expires_ms u64][refresh_ms u64][token]`.
pub fn encode_vertex_token(token: &str, expires_ms: u64, refresh_ms: u64) -> Vec<u8> {
    let mut out = expires_ms.to_le_bytes().to_vec();
    out.extend_from_slice(&refresh_ms.to_le_bytes());
    out.extend_from_slice(token.as_bytes());
    out
}

/// The token, if one is stored, readable, and not expired at `now_ms`.
pub fn read_vertex_token<S: SharedData>(kv: &S, provider: &str, now_ms: u64) -> Option<String> {
    let (bytes, _) = kv.get(&vertex_token_key(provider))?;
    let expires = u64_at(&bytes, 0);
    let token = std::str::from_utf8(bytes.get(16..)?).ok()?;
    (expires > now_ms && !token.is_empty() && token.chars().all(|c| c.is_ascii_graphic())).then(|| token.to_string())
}

/// Whether `provider`'s token is missing or past its refresh time.
fn token_refresh_due<S: SharedData>(kv: &S, provider: &str, now_ms: u64) -> bool {
    match kv.get(&vertex_token_key(provider)) {
        Some((bytes, _)) if bytes.len() > 16 => u64_at(&bytes, 8) <= now_ms,
        _ => true,
    }
}

/// Take the fetch lease of `provider` unless another root holds it.
fn take_token_lease<S: SharedData>(kv: &S, provider: &str, now_ms: u64) -> bool {
    let key = vertex_lease_key(provider);
    let until = (now_ms + TOKEN_LEASE_MS).to_le_bytes();
    match kv.get(&key) {
        Some((bytes, _)) if bytes.len() >= 8 && u64_at(&bytes, 0) > now_ms => false,
        Some((_, cas)) => kv.set(&key, &until, Some(cas)).is_ok(),
        None => kv.set(&key, &until, None).is_ok(),
    }
}

/// The sidecar token fetches due now: one per `sidecar_token` provider whose token is missing
/// or past its refresh time (half its remaining life when it was fetched), and whose lease no
/// other root holds. Each comes with the provider's name for the answer.
pub fn vertex_token_fetches<'t, S: SharedData>(
    table: &'t ProviderTable,
    kv: &S,
    now_ms: u64,
) -> Vec<(Callout<'t>, String)> {
    let mut out = Vec::new();
    for p in &table.providers {
        let ProviderAuth::SidecarToken { cluster, bearer } = &p.auth else { continue };
        if !token_refresh_due(kv, &p.name, now_ms) || !take_token_lease(kv, &p.name, now_ms) {
            continue;
        }
        let body = serde_json::to_vec(&serde_json::json!({"provider": p.name})).unwrap_or_default();
        let callout = Callout {
            kind: CalloutKind::Store,
            cluster,
            path: "/v1/vertex/token",
            authorization: bearer.as_ref().map(|b| b.expose()),
            body,
            timeout_ms: TOKEN_FETCH_TIMEOUT_MS,
        };
        out.push((callout, p.name.clone()));
    }
    out
}

/// Whether any provider needs the token fetcher (the upstream root's timer).
pub fn fetches_vertex_tokens(table: &ProviderTable) -> bool {
    table.providers.iter().any(|p| matches!(p.auth, ProviderAuth::SidecarToken { .. }))
}

/// The sidecar answered a token fetch for `provider`: keep the token, to be fetched again
/// after half its remaining life, and free the lease. Any other answer keeps the old record
/// (it may still be valid) and the first tick after the lease retries; `false` is counted as
/// an error.
pub fn on_vertex_token_answer<S: SharedData>(
    kv: &S,
    provider: &str,
    status: Option<&str>,
    body: Option<&[u8]>,
    now_ms: u64,
) -> bool {
    #[derive(serde::Deserialize)]
    struct Answer {
        access_token: String,
        expires_in_ms: u64,
    }
    let parsed = match (status, body) {
        (Some("200"), Some(b)) => serde_json::from_slice::<Answer>(b).ok(),
        _ => None,
    };
    let Some(a) = parsed else { return false };
    if a.access_token.is_empty() || !a.access_token.chars().all(|c| c.is_ascii_graphic()) || a.expires_in_ms == 0 {
        return false;
    }
    let expires = now_ms.saturating_add(a.expires_in_ms);
    let refresh = now_ms.saturating_add(a.expires_in_ms / 2);
    let stored = kv.set(&vertex_token_key(provider), &encode_vertex_token(&a.access_token, expires, refresh), None);
    // The lease is for fetches that fail; the next refresh need not wait for it.
    let _ = kv.set(&vertex_lease_key(provider), &0u64.to_le_bytes(), None);
    stored.is_ok()
}

// ---------------------------------------------------------------- attempt log

/// One attempt as the downstream role reports it after every attempt failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptRecord {
    pub provider: String,
    /// `None`: no response (connect failure, reset or timeout).
    pub status: Option<u16>,
}

fn request_hash(request_id: &str) -> u64 {
    // Never 0, so an empty record (all zeros) matches no request.
    xxhash_rust::xxh3::xxh3_64(request_id.as_bytes()) | 1
}

fn attempt_slot_key(hash: u64) -> String {
    format!("semgate:u:a:{}", hash % ATTEMPT_LOG_SLOTS)
}

fn decode_attempts(bytes: &[u8], hash: u64) -> Vec<AttemptRecord> {
    if u64_at(bytes, 0) != hash {
        return Vec::new();
    }
    let n = bytes.get(8).copied().unwrap_or(0) as usize;
    let mut out = Vec::with_capacity(n);
    let mut at = 9;
    for _ in 0..n {
        let Some(&[lo, hi, len]) = bytes.get(at..at + 3) else { break };
        let Some(name) = bytes.get(at + 3..at + 3 + len as usize) else { break };
        let status = u16::from_le_bytes([lo, hi]);
        out.push(AttemptRecord {
            provider: String::from_utf8_lossy(name).into_owned(),
            status: (status != NO_ANSWER).then_some(status),
        });
        at += 3 + len as usize;
    }
    out
}

fn encode_attempts(hash: u64, records: &[AttemptRecord]) -> Vec<u8> {
    let mut out = hash.to_le_bytes().to_vec();
    out.push(records.len() as u8);
    for r in records {
        let name = &r.provider.as_bytes()[..r.provider.len().min(255)];
        out.extend_from_slice(&r.status.unwrap_or(NO_ANSWER).to_le_bytes());
        out.push(name.len() as u8);
        out.extend_from_slice(name);
    }
    out
}

/// Appends an attempt with no status yet; returns its number (1 for the first).
pub fn log_attempt_start<S: SharedData>(kv: &S, request_id: &str, provider: &str) -> Option<u32> {
    let hash = request_hash(request_id);
    update(kv, &attempt_slot_key(hash), |bytes| {
        let mut records = bytes.map(|b| decode_attempts(b, hash)).unwrap_or_default();
        if records.len() >= MAX_LOGGED_ATTEMPTS {
            return (encode_attempts(hash, &records), None);
        }
        records.push(AttemptRecord { provider: provider.to_string(), status: None });
        (encode_attempts(hash, &records), Some(records.len() as u32))
    })
}

/// Records the status of attempt `attempt` (1-based).
pub fn log_attempt_status<S: SharedData>(kv: &S, request_id: &str, attempt: u32, status: u16) {
    let hash = request_hash(request_id);
    update(kv, &attempt_slot_key(hash), |bytes| {
        let mut records = bytes.map(|b| decode_attempts(b, hash)).unwrap_or_default();
        if let Some(r) = records.get_mut((attempt as usize).wrapping_sub(1)) {
            r.status = Some(status);
        }
        (encode_attempts(hash, &records), ())
    })
}

/// The attempts logged for a request (empty when its slot was reused since).
pub fn read_attempts<S: SharedData>(kv: &S, request_id: &str) -> Vec<AttemptRecord> {
    let hash = request_hash(request_id);
    kv.get(&attempt_slot_key(hash)).map(|(b, _)| decode_attempts(&b, hash)).unwrap_or_default()
}

// ---------------------------------------------------------------- response

/// The response-phase answer for one attempt.
#[derive(Debug)]
pub struct ResponsePlan {
    /// Headers for the downstream role (provider, upstream model, attempt) and content type.
    pub set_headers: Vec<SetHeader>,
    pub remove_headers: Vec<&'static str>,
    /// The key that was put in cooldown by this status (its index, never the key).
    pub cooled_key: Option<usize>,
    /// Drives the body; the host keeps it for the body callbacks.
    pub body: ResponseBody,
}

/// (b) The response headers of one attempt: key cooldown, headers, how the body is handled.
pub fn on_response_headers<S: SharedData>(
    table: &ProviderTable,
    kv: &S,
    state: &AttemptState,
    status: u16,
    now_ms: u64,
) -> ResponsePlan {
    let provider = table.provider(&state.provider);
    let mut cooled_key = None;
    if let (Some(p), Some(index)) = (provider, state.key) {
        if cools_key(status) && p.key_cooldown_ms > 0 {
            cool_down_key(kv, &p.name, p.key_count(), index, now_ms, p.key_cooldown_ms);
            cooled_key = Some(index);
        }
    }
    if let (Some(id), Some(n)) = (&state.request_id, state.logged) {
        log_attempt_status(kv, id, n, status);
    }
    let mut set_headers = vec![SetHeader::plain(HEADER_PROVIDER, state.provider.clone())];
    // Seen by Envoy's retry and outlier detection, which run after this filter (a translated
    // error body keeps the provider's 429 in its own words: only the status changes).
    if status == 429 && state.rate_limit_fails_over {
        set_headers.push(SetHeader::plain(":status", "503"));
    }
    if !state.upstream_model.is_empty() {
        set_headers.push(SetHeader::plain(HEADER_UPSTREAM_MODEL, state.upstream_model.clone()));
    }
    if let Some(n) = state.attempt {
        set_headers.push(SetHeader::plain(HEADER_ATTEMPTS, n.to_string()));
    }
    let ctx =
        ResponseContext { model: &state.client_model, created: now_ms / 1000, include_usage: state.include_usage };
    let ok = (200..300).contains(&status);
    let body = match StreamTranslator::new(state.kind, &ctx) {
        None => ResponseBody::Passthrough,
        Some(tr) if ok && state.stream => ResponseBody::Stream(Box::new(tr)),
        Some(_) => ResponseBody::Buffered {
            kind: state.kind,
            status,
            model: state.client_model.clone(),
            created: ctx.created,
            usage: None,
        },
    };
    let mut remove_headers = Vec::new();
    match &body {
        ResponseBody::Passthrough => {}
        ResponseBody::Stream(_) => {
            remove_headers.push("content-length");
            set_headers.push(SetHeader::plain("content-type", "text/event-stream"));
        }
        ResponseBody::Buffered { .. } => {
            remove_headers.push("content-length");
            set_headers.push(SetHeader::plain("content-type", "application/json"));
        }
    }
    ResponsePlan { set_headers, remove_headers, cooled_key, body }
}

/// The per-provider counter an attempt's answer moves, besides `Attempts` (counted when the
/// attempt is sent): a failure, or a fallback: an answer after an earlier attempt of the request
/// failed, or from a provider after the chain's first (the first is ejected).
pub fn attempt_outcome(state: &AttemptState, status: u16) -> Option<crate::core::tally::ModelCounter> {
    use crate::core::tally::ModelCounter;
    match status {
        200..=299 if state.fallback_provider || state.attempt.is_some_and(|n| n > 1) => Some(ModelCounter::Fallbacks),
        401 | 403 | 429 | 500..=599 => Some(ModelCounter::AttemptFailures),
        _ => None,
    }
}

/// What the host does with one response body callback.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyAction {
    /// Leave the bytes as they are and continue.
    Pass,
    /// Pause: Envoy keeps buffering until the end of the body.
    Hold,
    /// Replace the bytes of this callback (the whole buffered body for [`ResponseBody::Buffered`])
    /// and, when `status` is set, the response's `:status` (headers were held).
    Replace { body: Vec<u8>, status: Option<u16> },
}

/// (c) The response body of one attempt, in OpenAI's shape.
#[derive(Debug)]
pub enum ResponseBody {
    /// An OpenAI-speaking provider: nothing to translate.
    Passthrough,
    /// A successful stream: each chunk is translated as it comes.
    Stream(Box<StreamTranslator>),
    /// A whole JSON answer or a provider error: translated at the end of the body.
    Buffered { kind: ProviderKind, status: u16, model: String, created: u64, usage: Option<Usage> },
}

impl ResponseBody {
    /// The host must pause the response headers until the body's end (the status and length
    /// may change); streams and passthrough continue at once.
    pub fn holds_headers(&self) -> bool {
        matches!(self, ResponseBody::Buffered { .. })
    }

    /// `bytes`: this callback's chunk for streams; for buffered bodies, the whole body Envoy
    /// has buffered (read at `end_of_stream`).
    pub fn on_body(&mut self, bytes: &[u8], end_of_stream: bool) -> BodyAction {
        match self {
            ResponseBody::Passthrough => BodyAction::Pass,
            ResponseBody::Stream(tr) => {
                let mut out = tr.feed(bytes);
                if end_of_stream {
                    out.extend_from_slice(&tr.finish());
                }
                BodyAction::Replace { body: out, status: None }
            }
            ResponseBody::Buffered { .. } if !end_of_stream => BodyAction::Hold,
            ResponseBody::Buffered { kind, status, model, created, usage } => {
                let ctx = ResponseContext { model, created: *created, include_usage: false };
                let t = super::providers::translate_response(*kind, *status, bytes, &ctx);
                *usage = t.usage;
                let new_status = (t.status != *status).then_some(t.status);
                match t.body {
                    Some(body) => BodyAction::Replace { body, status: new_status },
                    None => BodyAction::Pass,
                }
            }
        }
    }

    /// Token counts the provider reported (streams: so far).
    pub fn usage(&self) -> Option<Usage> {
        match self {
            ResponseBody::Passthrough => None,
            ResponseBody::Stream(tr) => Some(tr.usage()),
            ResponseBody::Buffered { usage, .. } => *usage,
        }
    }

    /// A stream that ended in an error event (not to be cached).
    pub fn failed(&self) -> bool {
        matches!(self, ResponseBody::Stream(tr) if tr.failed())
    }
}

// ---------------------------------------------------------------- all attempts failed

/// Status the downstream role answers with when no attempt succeeded.
pub const ALL_FAILED_STATUS: u16 = 502;

fn error_json(message: &str, kind: &str, code: &str, attempts: Option<serde_json::Value>) -> Vec<u8> {
    let mut error = json!({"message": message, "type": kind, "param": null, "code": code});
    if let Some(a) = attempts {
        error["attempts"] = a;
    }
    json!({ "error": error }).to_string().into_bytes()
}

/// (d) The body of the 502 the downstream role sends when every attempt failed: each
/// attempt's provider and status, never a provider's body or a key.
pub fn all_attempts_failed(attempts: &[AttemptRecord]) -> Vec<u8> {
    let describe = |r: &AttemptRecord| match r.status {
        Some(s) => format!("{} ({s})", r.provider),
        None => format!("{} (no response: connect failure, reset or timeout)", r.provider),
    };
    let message = if attempts.is_empty() {
        "every provider for this model failed".to_string()
    } else {
        format!(
            "every provider for this model failed: {}",
            attempts.iter().map(describe).collect::<Vec<_>>().join(", ")
        )
    };
    let list = attempts.iter().map(|r| json!({"provider": r.provider, "status": r.status})).collect();
    error_json(&message, "server_error", "all_providers_failed", Some(serde_json::Value::Array(list)))
}

/// The error a provider's failed answer becomes, for the downstream role's logs and metrics:
/// its status class in the gateway's words (the provider's message stays out).
pub fn attempt_failure_label(status: Option<u16>) -> &'static str {
    match status {
        None => "no_response",
        Some(401 | 403) => "auth",
        Some(429) => "rate_limited",
        Some(500..=599) => "server_error",
        Some(_) => "other",
    }
}

/// A stream that fails after its first byte reached the client: the error event to send
/// (the downstream role must not cache the answer).
pub fn stream_failure_event(provider: &str) -> Vec<u8> {
    let mut out = Vec::new();
    ErrorOut::truncated(provider).to_event(&mut out);
    out
}

#[cfg(test)]
#[path = "tests/upstream_tests.rs"]
mod tests;
