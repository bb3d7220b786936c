//! The gateway's decisions for one request, as functions of what the host read: admit or
//! refuse at the headers, plan the route and the cache at the end of the body, and decide
//! whether the response that came back may be stored.

use crate::core::auth::KeyTable;
use crate::core::config::{Config, ConfigError, ProviderConfig, CREDENTIAL_HEADERS};
use crate::core::entry::{is_gateway_content_type, BodyKind, CachedResponse};
use crate::core::errors::GatewayError;
use crate::core::key::{CacheKey, Scope};
use crate::core::request::{parse_chat_request, ChatRequest};
use crate::core::sse::SseParser;
use std::collections::BTreeMap;

/// Provider keys resolved from the environment once, at load.
pub type ProviderKeys = BTreeMap<String, String>;

/// Read each provider's `api_key_env`; an unset or empty variable is a load error, so a
/// gateway never starts that would fail every request to that provider.
pub fn resolve_provider_keys(
    config: &Config,
    env: impl Fn(&str) -> Option<String>,
) -> Result<ProviderKeys, ConfigError> {
    let mut keys = ProviderKeys::new();
    for (name, p) in &config.providers {
        if let Some(var) = &p.api_key_env {
            match env(var).filter(|v| !v.trim().is_empty()) {
                Some(v) => {
                    keys.insert(name.clone(), v.trim().to_string());
                }
                None => {
                    return Err(ConfigError {
                        path: format!("providers.{name}.api_key_env"),
                        message: format!("environment variable `{var}` is unset or empty in the Wasm VM (list it in vm_config.environment_variables)"),
                    })
                }
            }
        }
    }
    Ok(keys)
}

/// The configuration compiled for the request path, once at load: the client key table,
/// the provider keys as header values, and the forwarded-header allow-list.
#[derive(Debug, Clone)]
pub struct Gateway {
    pub config: Config,
    pub keys: KeyTable,
    /// Provider name -> `Authorization` value sent upstream.
    pub provider_auth: ProviderKeys,
    /// `Authorization` value of the sidecar callouts (`semantic.token_env`).
    pub sidecar_auth: Option<String>,
}

impl Gateway {
    /// Resolve every key the config names through `env` (the VM's environment).
    pub fn compile(config: Config, env: impl Fn(&str) -> Option<String>) -> Result<Gateway, ConfigError> {
        let provider_auth =
            resolve_provider_keys(&config, &env)?.into_iter().map(|(p, k)| (p, format!("Bearer {k}"))).collect();
        let keys = KeyTable::compile(&config.auth, &env)?;
        let sidecar_auth = match &config.semantic.token_env {
            None => None,
            Some(var) => match env(var).map(|t| t.trim().to_string()).filter(|t| !t.is_empty()) {
                Some(t) => Some(format!("Bearer {t}")),
                None => {
                    return Err(ConfigError {
                        path: "semantic.token_env".into(),
                        message: format!("environment variable `{var}` is unset or empty in the Wasm VM (list it in vm_config.environment_variables)"),
                    })
                }
            },
        };
        Ok(Gateway { config, keys, provider_auth, sidecar_auth })
    }

    /// Client request headers that must not go upstream: credentials, `x-semgate-*`, and
    /// anything not in `forward_headers` (pseudo-headers and the ones Envoy itself writes
    /// before any filter, which route matching reads, stay).
    pub fn headers_to_drop<'a>(&self, names: impl Iterator<Item = &'a str>) -> Vec<String> {
        names
            .filter(|n| {
                !n.starts_with(':')
                    && !ENVOY_OWNED_HEADERS.contains(n)
                    && (CREDENTIAL_HEADERS.contains(n) || !self.config.forward_headers.iter().any(|f| f == n))
            })
            .map(str::to_string)
            .collect()
    }
}

/// Written by Envoy's connection manager before any filter (a client's copy is overwritten
/// at the edge), and read by route matching: never dropped.
pub const ENVOY_OWNED_HEADERS: &[&str] = &["x-forwarded-proto"];

/// What the host read from the request headers.
#[derive(Debug, Default, Clone)]
pub struct RequestHead<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub authorization: Option<&'a str>,
    pub tenant: Option<&'a str>,
    pub content_length: Option<&'a str>,
    pub cache_control: Option<&'a str>,
    pub semgate_cache: Option<&'a str>,
    pub route_name: Option<&'a str>,
}

/// What the client asked of the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientDirective {
    Normal,
    /// `cache-control: no-store` or `x-semgate-cache: bypass`: neither read nor write.
    Bypass,
    /// `cache-control: no-cache`: do not serve from cache, but store the fresh answer.
    Refresh,
}

/// A request the gateway will handle, waiting for its body.
#[derive(Debug, Clone, PartialEq)]
pub struct Admitted {
    pub tenant: String,
    /// The path without its query string.
    pub path: String,
    /// The client sent a query string: it is dropped (the provider's path is sent), so it is
    /// not part of the cache key either.
    pub has_query: bool,
    pub route_name: Option<String>,
    pub directive: ClientDirective,
}

#[derive(Debug, PartialEq)]
pub enum HeadDecision {
    /// A `passthrough` path: forward it now to this provider (no body read, no cache).
    Relay(Upstream),
    Reject(GatewayError),
    ReadBody(Admitted),
}

/// Every request needs a valid key; then an API path reads its body, a `passthrough` path
/// is relayed, and any other path is refused.
pub fn admit(gw: &Gateway, head: &RequestHead) -> HeadDecision {
    let config = &gw.config;
    let (path, query) = match head.path.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (head.path, None),
    };
    let grant = match gw.keys.authenticate(head.authorization) {
        Ok(g) => g,
        Err(e) => return HeadDecision::Reject(e),
    };
    if !config.api_paths.iter().any(|p| path.ends_with(p.as_str())) {
        let relay = config
            .passthrough
            .iter()
            .find(|p| path.starts_with(p.path_prefix.as_str()) && p.methods.iter().any(|m| m == head.method));
        return match relay.and_then(|r| config.providers.get_key_value(r.provider.as_str())) {
            Some((name, pc)) => HeadDecision::Relay(upstream_for(name, pc, &gw.provider_auth)),
            None => HeadDecision::Reject(GatewayError::UnknownPath {
                method: head.method.chars().take(16).collect(),
                path: path.chars().take(256).collect(),
            }),
        };
    }
    if head.method != "POST" {
        return HeadDecision::Reject(GatewayError::MethodNotAllowed(head.method.to_string()));
    }
    let tenant = match gw.keys.scope(grant, head.tenant) {
        Ok(t) => t,
        Err(e) => return HeadDecision::Reject(e),
    };
    if let Some(len) = head.content_length.and_then(|l| l.trim().parse::<u64>().ok()) {
        if len > config.max_body_bytes {
            return HeadDecision::Reject(GatewayError::BodyTooLarge { size: len, limit: config.max_body_bytes });
        }
    }
    HeadDecision::ReadBody(Admitted {
        tenant,
        path: path.to_string(),
        has_query: query.is_some(),
        route_name: head.route_name.map(str::to_string),
        directive: client_directive(head.cache_control, head.semgate_cache),
    })
}

fn client_directive(cache_control: Option<&str>, semgate: Option<&str>) -> ClientDirective {
    let has =
        |v: Option<&str>, token: &str| v.is_some_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)));
    if has(cache_control, "no-store") || has(semgate, "bypass") {
        ClientDirective::Bypass
    } else if has(cache_control, "no-cache") || has(semgate, "refresh") {
        ClientDirective::Refresh
    } else {
        ClientDirective::Normal
    }
}

/// The cache policy in force for one request, after the per-route/tenant overrides.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EffectivePolicy {
    pub enabled: bool,
    pub ttl_s: u64,
    pub max_temperature: f64,
    pub semantic: SemanticPolicy,
}

/// The semantic layer's settings for one request.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SemanticPolicy {
    pub enabled: bool,
    /// Sent with the lookup; `None` leaves it to the sidecar's default.
    pub threshold: Option<f64>,
    /// TTL of the semantic entry; `None` means the exact entry's TTL.
    pub ttl_s: Option<u64>,
}

/// Defaults from `cache` and `semantic`, then every matching entry of `policies` in order
/// (later wins). `model` is the request's model.
pub fn effective_policy(config: &Config, admitted: &Admitted, model: &str) -> EffectivePolicy {
    let mut p = EffectivePolicy {
        enabled: config.cache.enabled,
        ttl_s: config.cache.ttl_s,
        max_temperature: config.cache.max_temperature,
        semantic: SemanticPolicy {
            enabled: config.semantic.enabled,
            threshold: config.semantic.threshold,
            ttl_s: config.semantic.ttl_s,
        },
    };
    for policy in &config.policies {
        let m = &policy.matcher;
        let matches = m.route.as_ref().is_none_or(|r| admitted.route_name.as_deref() == Some(r.as_str()))
            && m.path_prefix.as_ref().is_none_or(|pre| admitted.path.starts_with(pre.as_str()))
            && m.tenant.as_ref().is_none_or(|t| *t == admitted.tenant)
            && m.model.as_ref().is_none_or(|name| name == model);
        if matches {
            let c = &policy.cache;
            p.enabled = c.enabled.unwrap_or(p.enabled);
            p.ttl_s = c.ttl_s.unwrap_or(p.ttl_s);
            p.max_temperature = c.max_temperature.unwrap_or(p.max_temperature);
            // A route can turn the layer off, never on without a sidecar configured.
            p.semantic.enabled = config.semantic.enabled && c.semantic.unwrap_or(p.semantic.enabled);
            p.semantic.threshold = c.semantic_threshold.or(p.semantic.threshold);
            p.semantic.ttl_s = c.semantic_ttl_s.or(p.semantic.ttl_s);
        }
    }
    p
}

/// Why a request does not use the cache; sent as `x-semgate-cache-reason`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BypassReason {
    Disabled,
    Client,
    Temperature,
    MultipleChoices,
}

impl BypassReason {
    pub fn as_str(&self) -> &'static str {
        match self {
            BypassReason::Disabled => "disabled",
            BypassReason::Client => "client",
            BypassReason::Temperature => "temperature",
            BypassReason::MultipleChoices => "n",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum CachePlan {
    /// Look up, and store a complete 200 on a miss.
    Lookup {
        key: CacheKey,
        ttl_s: u64,
    },
    /// Skip the lookup, store the answer (client asked for a fresh one).
    Refresh {
        key: CacheKey,
        ttl_s: u64,
    },
    Bypass(BypassReason),
}

impl CachePlan {
    pub fn store_as(&self) -> Option<(CacheKey, u64)> {
        match *self {
            CachePlan::Lookup { key, ttl_s } | CachePlan::Refresh { key, ttl_s } => Some((key, ttl_s)),
            CachePlan::Bypass(_) => None,
        }
    }
}

/// Where a request goes upstream.
#[derive(Debug, Clone, PartialEq)]
pub struct Upstream {
    pub provider: String,
    pub cluster: String,
    pub path: String,
    pub authority: Option<String>,
    /// `Authorization` value for the provider (the client's never goes upstream).
    pub authorization: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub request: ChatRequest,
    pub upstream: Upstream,
    pub cache: CachePlan,
    pub semantic: SemanticPolicy,
}

/// The body-phase decision: validate, route by model, and plan the cache.
pub fn plan(gw: &Gateway, admitted: &Admitted, body: &[u8]) -> Result<Plan, GatewayError> {
    let (config, keys) = (&gw.config, &gw.provider_auth);
    if body.len() as u64 > config.max_body_bytes {
        return Err(GatewayError::BodyTooLarge { size: body.len() as u64, limit: config.max_body_bytes });
    }
    let request = parse_chat_request(body)?;
    let (provider, pc) =
        config.route_model(&request.model).ok_or_else(|| GatewayError::UnknownModel(request.model.clone()))?;
    let upstream = upstream_for(provider, pc, keys);
    let policy = effective_policy(config, admitted, &request.model);
    let scope = Scope {
        tenant: admitted.tenant.clone(),
        provider: config.cache.cache_by_provider.then(|| provider.to_string()),
    };
    // The key (blake3 over the canonical form) is only computed when the cache is used.
    let key = || CacheKey::new(&request.canonical(), &scope);
    let cache = if !policy.enabled {
        CachePlan::Bypass(BypassReason::Disabled)
    } else if admitted.directive == ClientDirective::Bypass {
        CachePlan::Bypass(BypassReason::Client)
    } else if request.temperature.unwrap_or(1.0) > policy.max_temperature {
        CachePlan::Bypass(BypassReason::Temperature)
    } else if config.cache.bypass_multiple_choices && request.n > 1 {
        CachePlan::Bypass(BypassReason::MultipleChoices)
    } else if admitted.directive == ClientDirective::Refresh {
        CachePlan::Refresh { key: key(), ttl_s: policy.ttl_s }
    } else {
        CachePlan::Lookup { key: key(), ttl_s: policy.ttl_s }
    };
    Ok(Plan { request, upstream, cache, semantic: policy.semantic })
}

/// `auth`: provider name -> the `Authorization` value (compiled at load).
fn upstream_for(provider: &str, pc: &ProviderConfig, auth: &ProviderKeys) -> Upstream {
    Upstream {
        provider: provider.to_string(),
        cluster: pc.cluster.clone(),
        path: pc.path.clone(),
        authority: pc.authority.clone(),
        authorization: auth.get(provider).cloned(),
    }
}

/// Whether an entry may be served to a request whose policy TTL is `ttl_s`: an entry stored
/// under a longer TTL (another path's policy) is served only while it is younger than this
/// reader's TTL.
pub fn fresh_for(created_ms: u64, ttl_s: u64, now_ms: u64) -> bool {
    now_ms.saturating_sub(created_ms) < ttl_s.saturating_mul(1000)
}

/// Why a response is not stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotStorable {
    Status,
    ContentType,
    Encoded,
    TooLarge,
    Truncated,
    Invalid,
}

/// A bounded copy of a response body as it streams past, to store once it is complete.
#[derive(Debug)]
pub struct ResponseTee {
    kind: BodyKind,
    content_type: String,
    limit: usize,
    held: usize,
    json: Vec<u8>,
    sse: SseParser,
    events: Vec<Vec<u8>>,
    saw_done: bool,
    saw_error: bool,
    overflow: bool,
}

impl ResponseTee {
    /// Start teeing a response, if its head says it could be stored.
    pub fn start(
        status: u16,
        content_type: Option<&str>,
        content_encoding: Option<&str>,
        limit: usize,
    ) -> Result<Self, NotStorable> {
        if status != 200 {
            return Err(NotStorable::Status);
        }
        if content_encoding.is_some_and(|e| !e.trim().eq_ignore_ascii_case("identity")) {
            return Err(NotStorable::Encoded);
        }
        let ct = content_type.unwrap_or("").trim();
        let media = ct.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
        let kind = match media.as_str() {
            "application/json" => BodyKind::Json,
            "text/event-stream" => BodyKind::Sse,
            _ => return Err(NotStorable::ContentType),
        };
        // What is stored is the gateway's own form of the type, never the provider's bytes.
        let content_type = if is_gateway_content_type(ct) { ct.to_string() } else { media };
        Ok(ResponseTee {
            kind,
            content_type,
            limit,
            held: 0,
            json: Vec::new(),
            sse: SseParser::new(),
            events: Vec::new(),
            saw_done: false,
            saw_error: false,
            overflow: false,
        })
    }

    /// Copy the next piece; past the limit the copy is dropped (the response still flows).
    pub fn push(&mut self, bytes: &[u8]) {
        if self.overflow {
            return;
        }
        self.held += bytes.len();
        if self.held > self.limit {
            self.overflow = true;
            self.json = Vec::new();
            self.events = Vec::new();
            self.sse = SseParser::new();
            return;
        }
        match self.kind {
            BodyKind::Json => self.json.extend_from_slice(bytes),
            BodyKind::Sse => {
                for ev in self.sse.feed(bytes) {
                    self.saw_done |= ev.is_done();
                    // A provider may report a failure inside a 200 stream.
                    self.saw_error |= ev.data.starts_with('{')
                        && serde_json::from_str::<serde_json::Value>(&ev.data).is_ok_and(|v| v.get("error").is_some());
                    self.events.push(ev.raw);
                }
            }
        }
    }

    pub fn is_overflowed(&self) -> bool {
        self.overflow
    }

    /// At the end of the stream: the response to store, if it is complete and well formed.
    pub fn finish(self) -> Result<CachedResponse, NotStorable> {
        if self.overflow {
            return Err(NotStorable::TooLarge);
        }
        let chunks = match self.kind {
            BodyKind::Json => {
                // A complete completion: valid JSON with a `choices` array. Checked without
                // building the document (every answer stored pays for this check).
                #[derive(serde::Deserialize)]
                struct Completion {
                    #[serde(rename = "choices")]
                    _choices: Vec<serde::de::IgnoredAny>,
                }
                serde_json::from_slice::<Completion>(&self.json).map_err(|_| NotStorable::Invalid)?;
                vec![self.json]
            }
            BodyKind::Sse => {
                if !self.saw_done || !self.sse.pending().iter().all(u8::is_ascii_whitespace) {
                    return Err(NotStorable::Truncated);
                }
                if self.saw_error {
                    return Err(NotStorable::Invalid);
                }
                self.events
            }
        };
        Ok(CachedResponse { kind: self.kind, content_type: self.content_type, chunks })
    }
}

#[cfg(test)]
#[path = "tests/gateway_tests.rs"]
mod tests;
