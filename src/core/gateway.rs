//! The configuration compiled for the request path (`Gateway`: key table, provider routes
//! with their header values, policy index, store and fast-path limits), and the two decisions
//! that read it most: admit or refuse at the headers, plan the route and the cache at the end
//! of the body.

use crate::core::auth::KeyTable;
use crate::core::budget::charge::{self, Account};
use crate::core::budget::prices::Price;
use crate::core::budget::usage::request_stream_usage;
use crate::core::budget::virtual_keys::{Governance, GovernanceConfig};
use crate::core::cache::fastpath::{self, FastPathLimits};
use crate::core::cache::key::{CacheKey, Scope};
use crate::core::cache::store::StoreLimits;
use crate::core::config::{Config, ConfigError, PolicyMatch, CREDENTIAL_HEADERS};
use crate::core::errors::GatewayError;
use crate::core::providers::config::ModelTable;
use crate::core::request::{parse_chat_request, ChatRequest};
use std::collections::BTreeMap;

/// `Bearer <value of var>`, if a variable is named; unset or empty is a load error.
fn bearer_from_env(
    env: &impl Fn(&str) -> Option<String>,
    path: &str,
    var: Option<&str>,
) -> Result<Option<String>, ConfigError> {
    let Some(var) = var else { return Ok(None) };
    match env(var).map(|t| t.trim().to_string()).filter(|t| !t.is_empty()) {
        Some(t) => Ok(Some(format!("Bearer {t}"))),
        None => Err(ConfigError {
            path: path.into(),
            message: format!("environment variable `{var}` is unset or empty in the Wasm VM (list it in vm_config.environment_variables)"),
        }),
    }
}

/// The configuration compiled for the request path, once at load: the client key table,
/// every provider's upstream headers, the policy index, and the cache's limits.
#[derive(Debug, Clone)]
pub struct Gateway {
    pub config: Config,
    pub keys: KeyTable,
    /// Virtual keys' teams, models, budgets and limits; prices.
    pub gov: Governance,
    /// `Authorization` value of the ledger syncs (`ledger.token_env`).
    pub ledger_auth: Option<String>,
    /// This replica's name in the ledger (`ledger.replica_env`; else set by the host at load).
    pub replica: String,
    /// This process's life, in its ledger sync ids (set by the host at load).
    pub epoch: String,
    /// Public model (or pattern) -> its chain's cluster. Provider keys are the upstream
    /// role's: the gateway never holds them.
    pub models: ModelTable,
    /// Provider name -> where a `passthrough` request to it goes.
    pub relays: BTreeMap<String, Upstream>,
    /// `Authorization` value of the sidecar callouts (`semantic.token_env`).
    pub sidecar_auth: Option<String>,
    pub policies: PolicyIndex,
    pub limits: StoreLimits,
    pub fast: FastPathLimits,
}

impl Gateway {
    /// Parse, validate and compile the plugin configuration as Envoy hands it over; the fast
    /// path's records are seeded with the bytes' fingerprint (see `fastpath::seed_for`).
    pub fn load(raw: &[u8], env: impl Fn(&str) -> Option<String>) -> Result<Gateway, ConfigError> {
        let mut gw = Gateway::compile(Config::parse(raw)?, env)?;
        gw.fast.seed = fastpath::seed_for(raw);
        Ok(gw)
    }

    /// Resolve every key the config names through `env` (the VM's environment).
    pub fn compile(config: Config, env: impl Fn(&str) -> Option<String>) -> Result<Gateway, ConfigError> {
        let models = config.routing().model_table()?;
        let relays = config
            .providers
            .iter()
            .map(|(name, spec)| {
                let up = Upstream {
                    provider: name.clone(),
                    cluster: spec.cluster_name(name),
                    chain: false,
                    relay: true,
                    route: String::new(),
                };
                (name.clone(), up)
            })
            .collect();
        let mut keys = KeyTable::compile(&config.auth, &env)?;
        let mut gov = GovernanceConfig::of(&config).compile()?;
        gov.ledger = config.ledger.cluster.is_some();
        for (i, k) in config.virtual_keys.iter().enumerate() {
            let record = &gov.keys[&k.key_sha256];
            keys.add_virtual(i, &k.key_sha256, &record.tenant, &record.id)?;
        }
        let ledger_auth = bearer_from_env(&env, "ledger.token_env", config.ledger.token_env.as_deref())?;
        // Empty: the host names the replica once per process (`downstream::process_epoch`).
        let replica = config
            .ledger
            .replica_env
            .as_deref()
            .and_then(|v| env(v))
            .map(|r| r.trim().chars().filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')).take(64).collect::<String>())
            .unwrap_or_default();
        let sidecar_auth = bearer_from_env(&env, "semantic.token_env", config.semantic.token_env.as_deref())?;
        let policies = PolicyIndex::compile(&config);
        let limits = StoreLimits {
            max_bytes: config.cache.max_bytes,
            max_entry_bytes: config.cache.max_entry_bytes,
            slots: config.cache.slot_count(),
            ways: config.cache.ways,
        };
        let fast = FastPathLimits {
            slots: config.cache.fast_path_slots(),
            max_record_bytes: config.cache.fast_path.max_record_bytes,
            seed: 0,
        };
        Ok(Gateway { config, keys, gov, ledger_auth, replica, epoch: String::new(), models, relays, sidecar_auth, policies, limits, fast })
    }

    /// Some policy matches on the Envoy route name, so the host must read it (a property
    /// read costs a host round trip: only then).
    pub fn needs_route_name(&self) -> bool {
        self.policies.needs_route_name
    }

    fn relay(&self, provider: &str) -> Option<Upstream> {
        self.relays.get(provider).cloned()
    }

    /// Where a model's requests go: its chain's cluster. The scope label of a chain of one is
    /// its provider, of a longer chain its aggregate cluster (`cache_by_provider`).
    fn route(&self, model: &str) -> Option<Upstream> {
        let chain = self.models.route(model)?;
        let provider = match chain.entries.as_slice() {
            [only] => self.config.providers.keys().nth(only.provider).cloned().unwrap_or_default(),
            _ => chain.cluster.clone(),
        };
        Some(Upstream {
            provider,
            cluster: chain.cluster.clone(),
            chain: chain.is_fallback_chain(),
            relay: false,
            route: chain.model.clone(),
        })
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
    /// The `customer.header` value, when configured.
    pub customer: Option<&'a str>,
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
    /// The virtual key's id; `None` for an `auth.keys` key (no budget, no limits).
    pub key_id: Option<String>,
    /// The raw `customer.header` value (cleaned when the account is made).
    pub customer_header: Option<String>,
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
        return match relay.and_then(|r| gw.relay(&r.provider)) {
            Some(up) => HeadDecision::Relay(up),
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
        key_id: grant.key_id.clone(),
        // Read at most what a cleaned id keeps (plus room for the control characters removed).
        customer_header: head.customer.map(|c| c.chars().take(4 * gw.gov.customer.max_len).collect()),
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

/// The cache policies compiled at load: the defaults from `cache` and `semantic` as one value,
/// then the `policies` entries in order (later wins), each a matcher and its overrides.
#[derive(Debug, Clone)]
pub struct PolicyIndex {
    defaults: EffectivePolicy,
    rules: Vec<(PolicyMatch, crate::core::config::CacheOverride)>,
    /// A route can turn the semantic layer off, never on without a sidecar configured.
    semantic_configured: bool,
    needs_route_name: bool,
}

impl PolicyIndex {
    pub fn compile(config: &Config) -> PolicyIndex {
        PolicyIndex {
            defaults: EffectivePolicy {
                enabled: config.cache.enabled,
                ttl_s: config.cache.ttl_s,
                max_temperature: config.cache.max_temperature,
                semantic: SemanticPolicy {
                    enabled: config.semantic.enabled,
                    threshold: config.semantic.threshold,
                    ttl_s: config.semantic.ttl_s,
                },
            },
            rules: config.policies.iter().map(|p| (p.matcher.clone(), p.cache.clone())).collect(),
            semantic_configured: config.semantic.enabled,
            needs_route_name: config.policies.iter().any(|p| p.matcher.route.is_some()),
        }
    }

    /// The policy for one request; `model` is the request's model.
    pub fn resolve(&self, admitted: &Admitted, model: &str) -> EffectivePolicy {
        let mut p = self.defaults;
        for (m, c) in &self.rules {
            let matches = m.route.as_ref().is_none_or(|r| admitted.route_name.as_deref() == Some(r.as_str()))
                && m.path_prefix.as_ref().is_none_or(|pre| admitted.path.starts_with(pre.as_str()))
                && m.tenant.as_ref().is_none_or(|t| *t == admitted.tenant)
                && m.model.as_ref().is_none_or(|name| name == model);
            if matches {
                p.enabled = c.enabled.unwrap_or(p.enabled);
                p.ttl_s = c.ttl_s.unwrap_or(p.ttl_s);
                p.max_temperature = c.max_temperature.unwrap_or(p.max_temperature);
                p.semantic.enabled = self.semantic_configured && c.semantic.unwrap_or(p.semantic.enabled);
                p.semantic.threshold = c.semantic_threshold.or(p.semantic.threshold);
                p.semantic.ttl_s = c.semantic_ttl_s.or(p.semantic.ttl_s);
            }
        }
        p
    }
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

/// Where a request goes upstream. The upstream role on that cluster sets the provider's path,
/// authority and key, translates, and names the provider that answered.
#[derive(Debug, Clone, PartialEq)]
pub struct Upstream {
    /// The provider, or for a chain of several its aggregate cluster (the cache scope's label
    /// with `cache_by_provider`).
    pub provider: String,
    pub cluster: String,
    /// A chain of several providers: retried by Envoy, and a 502 names the attempts when all fail.
    pub chain: bool,
    /// A `passthrough` request: the upstream role keeps its path and body.
    pub relay: bool,
    /// The `models` entry that routed the request (empty for a relay): labels its metrics.
    pub route: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub request: ChatRequest,
    pub upstream: Upstream,
    pub cache: CachePlan,
    pub semantic: SemanticPolicy,
    /// Governance of a virtual key's request: who pays, at what price.
    pub account: Option<Account>,
    pub price: Option<Price>,
    /// The body to send instead of the client's: a stream asked for its usage report, which
    /// the gateway needs to charge it and strips before the client sees it.
    pub upstream_body: Option<Vec<u8>>,
    pub strip_stream_usage: bool,
    /// Bytes of the client's body (what `upstream_body` replaces).
    pub body_len: usize,
}

/// The body-phase decision: validate, route by model, and plan the cache.
pub fn plan(gw: &Gateway, admitted: &Admitted, body: &[u8]) -> Result<Plan, GatewayError> {
    let config = &gw.config;
    if body.len() as u64 > config.max_body_bytes {
        return Err(GatewayError::BodyTooLarge { size: body.len() as u64, limit: config.max_body_bytes });
    }
    let request = parse_chat_request(body)?;
    let upstream = gw.route(&request.model).ok_or_else(|| GatewayError::UnknownModel(request.model.clone()))?;
    let provider = upstream.provider.as_str();
    let policy = gw.policies.resolve(admitted, &request.model);
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
    let mut plan = Plan {
        request,
        upstream,
        cache,
        semantic: policy.semantic,
        account: None,
        price: None,
        upstream_body: None,
        strip_stream_usage: false,
        body_len: body.len(),
    };
    if let Some(key_id) = &admitted.key_id {
        govern(gw, admitted, key_id, body, &mut plan)?;
    }
    Ok(plan)
}

/// A virtual key's request: its account (with the end customer), the model check and price,
/// and, for a stream, the usage report asked of the provider.
fn govern(gw: &Gateway, admitted: &Admitted, key_id: &str, body: &[u8], plan: &mut Plan) -> Result<(), GatewayError> {
    let gov = &gw.gov;
    let wants_user = gov.customer.from_user_field && admitted.customer_header.is_none();
    let raw: Option<serde_json::Value> =
        if wants_user || plan.request.stream { serde_json::from_slice(body).ok() } else { None };
    let user = raw.as_ref().and_then(|v| v.get("user")).and_then(|u| u.as_str());
    let customer = gov.customer_of(admitted.customer_header.as_deref(), user);
    let account = Account { key_id: key_id.to_string(), customer };
    plan.price = charge::authorize(gov, &account, &plan.upstream.provider, &plan.request.model)?;
    if let Some(mut raw) = raw.filter(|_| plan.request.stream) {
        if !request_stream_usage(&mut raw) {
            plan.upstream_body = serde_json::to_vec(&raw).ok();
            plan.strip_stream_usage = plan.upstream_body.is_some();
        }
    }
    plan.account = Some(account);
    Ok(())
}

/// Whether an entry may be served to a request whose policy TTL is `ttl_s`: an entry stored
/// under a longer TTL (another path's policy) is served only while it is younger than this
/// reader's TTL.
pub fn fresh_for(created_ms: u64, ttl_s: u64, now_ms: u64) -> bool {
    now_ms.saturating_sub(created_ms) < ttl_s.saturating_mul(1000)
}

#[cfg(test)]
#[path = "tests/gateway_tests.rs"]
mod tests;
