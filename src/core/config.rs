//! The filter's JSON configuration: serde types, defaults, and one validation pass whose
//! messages name the field path, so a bad config fails at load with a line that says where.

use serde::Deserialize;
use std::collections::BTreeMap;

use crate::core::providers::config::{FallbackSpec, ProviderSpec, ProvidersConfig};

pub const DEFAULT_API_PATH: &str = "/v1/chat/completions";

/// A configuration error: the dotted path of the offending field and what is wrong with it.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("semgate config: `{path}`: {message}")]
pub struct ConfigError {
    pub path: String,
    pub message: String,
}

fn err(path: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError { path: path.into(), message: message.into() }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Paths the gateway handles, matched as a suffix of the request path (query ignored), so
    /// `/captioning/v1/chat/completions` is handled too and can carry its own policy.
    /// Any other path passes through the filter untouched.
    #[serde(default = "default_api_paths")]
    pub api_paths: Vec<String>,
    /// Largest request body accepted; larger gets 413. Keep it below Envoy's
    /// `per_connection_buffer_limit_bytes`, or Envoy answers 413 itself with a plain-text body.
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: u64,
    /// Client keys without budgets (the older form of `virtual_keys`).
    #[serde(default)]
    pub auth: AuthConfig,
    /// Providers by name: `kind`, cluster, address, keys (`providers::config::ProviderSpec`).
    pub providers: BTreeMap<String, ProviderSpec>,
    /// Public model name or pattern (`gpt-*`, `*-mini`, `*`) -> ordered chain of
    /// `provider/upstream-model`; an exact name wins over patterns, the longest pattern first.
    pub models: BTreeMap<String, Vec<String>>,
    /// What moves a request to the next provider of its chain, and the circuit breaker.
    #[serde(default)]
    pub fallback: FallbackSpec,
    #[serde(default)]
    pub cache: CacheConfig,
    /// Layer 2: the semantic cache through the sidecar (off by default: exact-only).
    #[serde(default)]
    pub semantic: crate::core::semantic::SemanticConfig,
    /// Per route / path prefix / tenant overrides of the cache policy, applied in order.
    #[serde(default)]
    pub policies: Vec<Policy>,
    /// Paths outside `api_paths` that are relayed to a provider (authenticated, with the
    /// provider's key); every other path is refused with 404.
    #[serde(default)]
    pub passthrough: Vec<Passthrough>,
    /// Client request headers forwarded upstream; every other client header is dropped
    /// (the gateway's own `:path`, `:authority`, provider key and cluster are set on top).
    #[serde(default = "default_forward_headers")]
    pub forward_headers: Vec<String>,
    /// Client keys with a team, allowed models, budgets and rate limits (`docs/budgets.md`).
    #[serde(default)]
    pub virtual_keys: Vec<crate::core::budget::virtual_keys::VirtualKeyConfig>,
    /// Team budgets that keys roll up into.
    #[serde(default)]
    pub teams: BTreeMap<String, crate::core::budget::virtual_keys::TeamConfig>,
    /// `provider/model` or `model` -> USD per 1M tokens; wins over the built-in table.
    #[serde(default)]
    pub prices: BTreeMap<String, crate::core::budget::virtual_keys::PriceConfig>,
    /// Where the end customer (chargeback below the key) is read from.
    #[serde(default)]
    pub customer: crate::core::budget::virtual_keys::CustomerConfig,
    /// How a request's cost is estimated before it runs.
    #[serde(default)]
    pub estimate: crate::core::budget::estimate::EstimateConfig,
    /// The spend ledger the replicas share through the sidecar.
    #[serde(default)]
    pub ledger: LedgerConfig,
}

/// Syncing this replica's spend with the sidecar's ledger.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LedgerConfig {
    /// The sidecar's cluster; unset keeps spend per replica only.
    pub cluster: Option<String>,
    /// How often deltas are sent and the global totals read back.
    pub sync_interval_ms: u64,
    /// Timeout of one sync callout.
    pub timeout_ms: u64,
    /// Environment variable naming this replica (stable across restarts: a restarted
    /// replica learns its own earlier spend from the ledger); default the VM's `HOSTNAME`.
    pub replica_env: Option<String>,
    /// Environment variable holding the sidecar's token (as `semantic.token_env`).
    pub token_env: Option<String>,
}

impl Default for LedgerConfig {
    fn default() -> Self {
        LedgerConfig { cluster: None, sync_interval_ms: 1000, timeout_ms: 2000, replica_env: None, token_env: None }
    }
}

/// Headers that carry a client credential: never forwarded, whatever `forward_headers` says.
pub const CREDENTIAL_HEADERS: &[&str] = &["authorization", "x-api-key", "api-key", "proxy-authorization"];

fn default_forward_headers() -> Vec<String> {
    ["content-type", "content-length", "accept", "user-agent", "x-request-id", "traceparent", "tracestate"]
        .map(String::from)
        .to_vec()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Passthrough {
    pub path_prefix: String,
    pub provider: String,
    #[serde(default = "default_passthrough_methods")]
    pub methods: Vec<String>,
}

fn default_passthrough_methods() -> Vec<String> {
    vec!["GET".into()]
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// Accepted client keys and the tenant each one scopes the cache to. A valid key is
    /// always required; the client key itself never reaches a provider.
    #[serde(default)]
    pub keys: Vec<ClientKey>,
    /// A request header that narrows the key's scope to a sub-tenant the key allows
    /// (`tenants` or `tenant_prefix` on the key), e.g. set from a JWT claim by an authn filter
    /// that runs before semgate. Honoured only with `tenant_header_trusted`; otherwise a
    /// client-sent copy is ignored and dropped.
    #[serde(default)]
    pub tenant_header: Option<String>,
    /// The tenant header is written by a filter before semgate that overwrites any client
    /// copy (jwt_authn with claim_to_headers, ext_authz): only then is it read.
    #[serde(default)]
    pub tenant_header_trusted: bool,
}

/// One client key. Exactly one of `key` (visible in Envoy's config dump), `key_env` (an
/// environment variable of the Wasm VM) or `key_sha256` (hex SHA-256 of the key:
/// `printf %s "$KEY" | sha256sum`) identifies it.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientKey {
    #[serde(default)]
    pub key: Option<String>,
    #[serde(default)]
    pub key_env: Option<String>,
    #[serde(default)]
    pub key_sha256: Option<String>,
    pub tenant: String,
    /// Values of `auth.tenant_header` this key may narrow to.
    #[serde(default)]
    pub tenants: Vec<String>,
    /// Or any value of `auth.tenant_header` with this prefix.
    #[serde(default)]
    pub tenant_prefix: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheConfig {
    #[serde(default = "yes")]
    pub enabled: bool,
    #[serde(default = "default_ttl")]
    pub ttl_s: u64,
    /// Hard bound on the bytes the exact cache keeps in Envoy shared data (all workers).
    #[serde(default = "default_max_bytes")]
    pub max_bytes: u64,
    /// Responses whose stored form is larger are not cached (counted as too large).
    #[serde(default = "default_max_entry_bytes")]
    pub max_entry_bytes: u64,
    /// Number of entry slots; default `max_bytes / 4 KiB` (a chat answer is 0.5-2 KB, a streamed
    /// one with its SSE framing 2-8 KB).
    #[serde(default)]
    pub slots: Option<u32>,
    /// Slots per set (associativity): a lookup reads at most this many slots.
    #[serde(default = "default_ways")]
    pub ways: u32,
    /// Requests with `temperature` above this bypass the cache (sampling-heavy traffic must
    /// not get the same answer twice). An absent temperature counts as 1.0, OpenAI's default.
    #[serde(default = "default_max_temperature")]
    pub max_temperature: f64,
    /// Requests asking for several choices (`n > 1`) bypass the cache.
    #[serde(default = "yes")]
    pub bypass_multiple_choices: bool,
    /// Put the provider into the cache scope, so answers of one provider never serve another.
    #[serde(default)]
    pub cache_by_provider: bool,
    /// Byte-identical repeats of requests already served from the cache skip the parse and
    /// the blake3 key (`core::fastpath`).
    #[serde(default)]
    pub fast_path: FastPathConfig,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FastPathConfig {
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Bound on the fast path's shared data, on top of `cache.max_bytes`; default a quarter
    /// of `cache.max_bytes` (with a cache under 64 KiB that holds no record: the path is off).
    #[serde(default)]
    pub max_bytes: Option<u64>,
    /// A record holds the request (tenant, path, route, body) and a copy of its entry; larger
    /// ones are not kept and those requests take the canonical path.
    #[serde(default = "default_fast_record_bytes")]
    pub max_record_bytes: u64,
}

impl Default for FastPathConfig {
    fn default() -> Self {
        FastPathConfig { enabled: true, max_bytes: None, max_record_bytes: default_fast_record_bytes() }
    }
}

fn default_fast_record_bytes() -> u64 {
    16 << 10
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    #[serde(rename = "match")]
    pub matcher: PolicyMatch,
    pub cache: CacheOverride,
}

/// Every field set must match. An empty matcher matches everything.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyMatch {
    /// Envoy route name (`name:` of the route in the route config).
    #[serde(default)]
    pub route: Option<String>,
    #[serde(default)]
    pub path_prefix: Option<String>,
    #[serde(default)]
    pub tenant: Option<String>,
    /// The request's `model`, exactly (known once the body is read).
    #[serde(default)]
    pub model: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheOverride {
    #[serde(default)]
    pub enabled: Option<bool>,
    #[serde(default)]
    pub ttl_s: Option<u64>,
    #[serde(default)]
    pub max_temperature: Option<f64>,
    /// The semantic layer for these requests: off keeps them exact-only (`semantic.enabled`
    /// must be on for `true` to mean anything).
    #[serde(default)]
    pub semantic: Option<bool>,
    /// Cosine threshold sent with these requests' lookups (else `semantic.threshold`).
    #[serde(default)]
    pub semantic_threshold: Option<f64>,
    /// TTL of these requests' semantic entries (else `semantic.ttl_s`, else the cache TTL).
    #[serde(default)]
    pub semantic_ttl_s: Option<u64>,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            enabled: true,
            ttl_s: default_ttl(),
            max_bytes: default_max_bytes(),
            max_entry_bytes: default_max_entry_bytes(),
            slots: None,
            ways: default_ways(),
            max_temperature: default_max_temperature(),
            bypass_multiple_choices: true,
            cache_by_provider: false,
            fast_path: FastPathConfig::default(),
        }
    }
}

fn default_api_paths() -> Vec<String> {
    vec![DEFAULT_API_PATH.to_string()]
}
fn default_max_body_bytes() -> u64 {
    32 << 20
}
fn yes() -> bool {
    true
}
fn default_ttl() -> u64 {
    3600
}
fn default_max_bytes() -> u64 {
    64 << 20
}
fn default_max_entry_bytes() -> u64 {
    1 << 20
}
fn default_ways() -> u32 {
    4
}
fn default_max_temperature() -> f64 {
    1.0
}

impl CacheConfig {
    /// Total slots, rounded down to whole sets.
    pub fn slot_count(&self) -> u32 {
        let slots = self.slots.unwrap_or_else(|| (self.max_bytes / (4 << 10)).clamp(16, 1 << 20) as u32);
        (slots / self.ways).max(1) * self.ways
    }

    /// Records of the fast path: its byte bound over the record size; 0 when it is off.
    pub fn fast_path_slots(&self) -> u32 {
        let f = &self.fast_path;
        if !self.enabled || !f.enabled {
            return 0;
        }
        let bytes = f.max_bytes.unwrap_or(self.max_bytes / 4);
        (bytes / f.max_record_bytes).min(1 << 20) as u32
    }
}

impl Config {
    /// Parse and validate. The error names the field path (`cache.ttl_s`, `models[2].provider`).
    pub fn parse(json: &[u8]) -> Result<Config, ConfigError> {
        if let Ok(value) = serde_json::from_slice::<serde_json::Value>(json) {
            refuse_old_shape(&value)?;
        }
        let de = &mut serde_json::Deserializer::from_slice(json);
        let config: Config = serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            err(if path == "." { "(root)".to_string() } else { path }, e.into_inner().to_string())
        })?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if self.api_paths.is_empty() {
            return Err(err("api_paths", "must list at least one path"));
        }
        for (i, p) in self.api_paths.iter().enumerate() {
            if !p.starts_with('/') {
                return Err(err(format!("api_paths[{i}]"), "must start with `/`"));
            }
        }
        if self.max_body_bytes == 0 {
            return Err(err("max_body_bytes", "must be greater than 0"));
        }
        if self.auth.keys.is_empty() && self.virtual_keys.is_empty() {
            return Err(err(
                "virtual_keys",
                "must list at least one client key (`virtual_keys` or `auth.keys`): every request needs a valid key",
            ));
        }
        if self.ledger.sync_interval_ms < 100 || self.ledger.sync_interval_ms > 600_000 {
            return Err(err("ledger.sync_interval_ms", "must be between 100 and 600000"));
        }
        if self.ledger.timeout_ms == 0 || self.ledger.timeout_ms > 60_000 {
            return Err(err("ledger.timeout_ms", "must be between 1 and 60000"));
        }
        let mut seen = std::collections::BTreeSet::new();
        for (i, k) in self.auth.keys.iter().enumerate() {
            let at = format!("auth.keys[{i}]");
            match (&k.key, &k.key_env, &k.key_sha256) {
                (Some(v), None, None) | (None, Some(v), None) if v.trim().is_empty() => {
                    let field = if k.key.is_some() { "key" } else { "key_env" };
                    return Err(err(format!("{at}.{field}"), "must not be empty"));
                }
                (Some(key), None, None) => {
                    if !seen.insert(key.clone()) {
                        return Err(err(format!("{at}.key"), "duplicate key"));
                    }
                }
                (None, Some(_), None) => {}
                (None, None, Some(h)) => {
                    if h.len() != 64 || !h.bytes().all(|b| b.is_ascii_hexdigit()) {
                        return Err(err(
                            format!("{at}.key_sha256"),
                            "must be 64 hex digits (`printf %s \"$KEY\" | sha256sum`)",
                        ));
                    }
                }
                _ => return Err(err(at, "set exactly one of `key`, `key_env` or `key_sha256`")),
            }
            if k.tenant.trim().is_empty() {
                return Err(err(format!("{at}.tenant"), "must not be empty"));
            }
            if (!k.tenants.is_empty() || k.tenant_prefix.is_some()) && self.auth.tenant_header.is_none() {
                return Err(err(format!("{at}.tenants"), "narrowing needs `auth.tenant_header`"));
            }
            if k.tenant_prefix.as_deref().is_some_and(|p| p.is_empty()) {
                return Err(err(format!("{at}.tenant_prefix"), "must not be empty (it would allow any value)"));
            }
        }
        if let Some(h) = &self.auth.tenant_header {
            if !valid_header_name(h) {
                return Err(err("auth.tenant_header", "must be a lowercase HTTP header name"));
            }
        }
        for (i, h) in self.forward_headers.iter().enumerate() {
            if !valid_header_name(h) {
                return Err(err(format!("forward_headers[{i}]"), "must be a lowercase HTTP header name"));
            }
            if CREDENTIAL_HEADERS.contains(&h.as_str()) || h.starts_with("x-semgate-") {
                return Err(err(
                    format!("forward_headers[{i}]"),
                    "client credentials and x-semgate-* headers are never forwarded",
                ));
            }
        }
        for (i, p) in self.passthrough.iter().enumerate() {
            if !p.path_prefix.starts_with('/') {
                return Err(err(format!("passthrough[{i}].path_prefix"), "must start with `/`"));
            }
            if !self.providers.contains_key(&p.provider) {
                return Err(err(format!("passthrough[{i}].provider"), format!("unknown provider `{}`", p.provider)));
            }
            if p.methods.is_empty()
                || p.methods.iter().any(|m| m.is_empty() || !m.bytes().all(|b| b.is_ascii_uppercase()))
            {
                return Err(err(format!("passthrough[{i}].methods"), "must list upper-case HTTP methods"));
            }
        }
        self.routing().validate()?;
        self.cache.validate("cache")?;
        if let Some((field, message)) = self.semantic.problems() {
            return Err(err(format!("semantic.{field}"), message));
        }
        for (i, p) in self.policies.iter().enumerate() {
            if let Some(prefix) = &p.matcher.path_prefix {
                if !prefix.starts_with('/') {
                    return Err(err(format!("policies[{i}].match.path_prefix"), "must start with `/`"));
                }
            }
            if let Some(0) = p.cache.ttl_s {
                return Err(err(
                    format!("policies[{i}].cache.ttl_s"),
                    "must be greater than 0 (use `enabled: false` to turn caching off)",
                ));
            }
            if let Some(t) = p.cache.max_temperature {
                check_temperature(&format!("policies[{i}].cache.max_temperature"), t)?;
            }
            if let Some(t) = p.cache.semantic_threshold {
                if !(t > 0.0 && t <= 1.0) {
                    return Err(err(format!("policies[{i}].cache.semantic_threshold"), "must be in (0, 1]"));
                }
            }
            if let Some(0) = p.cache.semantic_ttl_s {
                return Err(err(format!("policies[{i}].cache.semantic_ttl_s"), "must be greater than 0"));
            }
        }
        Ok(())
    }

    /// The `providers`, `models` and `fallback` sections, as the upstream role reads them.
    pub fn routing(&self) -> ProvidersConfig {
        ProvidersConfig {
            providers: self.providers.clone(),
            models: self.models.clone(),
            fallback: self.fallback.clone(),
        }
    }
}

/// The shape before `providers.<name>.kind` and model chains: refused at load with what to
/// write instead (docs/configuration.md, "Migrating from the older provider shape").
pub(crate) fn refuse_old_shape(config: &serde_json::Value) -> Result<(), ConfigError> {
    if config.get("models").is_some_and(serde_json::Value::is_array) {
        return Err(err(
            "models",
            "the `[{\"match\": ..., \"provider\": ...}]` list is replaced by a map from a model name or pattern to its chain, e.g. `{\"gpt-*\": [\"openai/*\"], \"claude-3-5-sonnet\": [\"anthropic/claude-3-5-sonnet-20241022\", \"vertex/gemini-1.5-pro\"]}`",
        ));
    }
    let Some(providers) = config.get("providers").and_then(serde_json::Value::as_object) else { return Ok(()) };
    for (name, p) in providers {
        let replaced = [
            ("api_key_env", "is replaced by `keys: [{\"env\": \"VAR\"}]` (one entry per key)"),
            ("path", "is replaced by `kind` (which sets the API path) and an optional `base_path` prefix"),
            ("api", "is replaced by `kind` (`openai`, `anthropic`, `gemini`, `vertex`, `openai_compatible`)"),
            (
                "chain",
                "chains are now `models` entries listing several `provider/model`; remove this provider and list the chain's providers instead",
            ),
        ];
        for (field, message) in replaced {
            if p.get(field).is_some() {
                return Err(err(format!("providers.{name}.{field}"), message));
            }
        }
    }
    Ok(())
}

impl CacheConfig {
    fn validate(&self, at: &str) -> Result<(), ConfigError> {
        if self.ttl_s == 0 {
            return Err(err(
                format!("{at}.ttl_s"),
                "must be greater than 0 (use `enabled: false` to turn caching off)",
            ));
        }
        if self.max_entry_bytes < 1024 {
            return Err(err(format!("{at}.max_entry_bytes"), "must be at least 1024"));
        }
        if self.max_entry_bytes > self.max_bytes {
            return Err(err(format!("{at}.max_entry_bytes"), "must not exceed `max_bytes`"));
        }
        if self.ways == 0 || self.ways > 16 {
            return Err(err(format!("{at}.ways"), "must be between 1 and 16"));
        }
        if let Some(s) = self.slots {
            if s < self.ways {
                return Err(err(format!("{at}.slots"), "must be at least `ways`"));
            }
        }
        let f = &self.fast_path;
        if f.max_record_bytes < 1024 {
            return Err(err(format!("{at}.fast_path.max_record_bytes"), "must be at least 1024"));
        }
        // The default (a quarter of a small cache) may hold no record: then the path is off.
        if f.enabled && self.enabled && f.max_bytes.is_some() && self.fast_path_slots() == 0 {
            return Err(err(
                format!("{at}.fast_path.max_bytes"),
                "must hold at least one record of `max_record_bytes` (or set `enabled: false`)",
            ));
        }
        check_temperature(&format!("{at}.max_temperature"), self.max_temperature)
    }
}

fn check_temperature(at: &str, t: f64) -> Result<(), ConfigError> {
    if !(0.0..=2.0).contains(&t) {
        return Err(err(at, "must be between 0 and 2"));
    }
    Ok(())
}

fn valid_header_name(h: &str) -> bool {
    !h.is_empty() && h.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

/// `*` matches all, `gpt-*` a prefix, `*-mini` a suffix; anything else is an exact name.
pub fn pattern_matches(pattern: &str, name: &str) -> bool {
    if pattern == "*" {
        true
    } else if let Some(prefix) = pattern.strip_suffix('*') {
        name.starts_with(prefix)
    } else if let Some(suffix) = pattern.strip_prefix('*') {
        name.ends_with(suffix)
    } else {
        pattern == name
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: &str = r#"{"auth":{"keys":[{"key":"sk-demo","tenant":"demo"}]},
        "providers":{"openai":{"kind":"openai","keys":[{"env":"OPENAI_API_KEY"}]}},
        "models":{"*":["openai/*"]}}"#;

    fn with(patch: &str) -> String {
        // Merge a JSON object into MIN at top level.
        let mut base: serde_json::Value = serde_json::from_str(MIN).unwrap();
        let patch: serde_json::Value = serde_json::from_str(patch).unwrap();
        for (k, v) in patch.as_object().unwrap() {
            base[k] = v.clone();
        }
        base.to_string()
    }

    #[test]
    fn minimal_config_gets_defaults() {
        let c = Config::parse(MIN.as_bytes()).unwrap();
        assert_eq!(c.api_paths, vec!["/v1/chat/completions"]);
        assert!(c.cache.enabled);
        assert_eq!(c.cache.ttl_s, 3600);
        assert_eq!(c.cache.slot_count(), 16384);
        // A quarter of 64 MiB in 16 KiB records.
        assert_eq!(c.cache.fast_path_slots(), 1024);
        let models = c.routing().model_table().unwrap();
        assert_eq!(models.route("gpt-4o").unwrap().cluster, "provider_openai");
    }

    #[test]
    fn unknown_field_is_named_with_its_path() {
        let e = Config::parse(with(r#"{"cache":{"ttl":5}}"#).as_bytes()).unwrap_err();
        assert_eq!(e.path, "cache.ttl");
        assert!(e.message.contains("unknown field `ttl`"), "{}", e.message);
        assert!(e.to_string().starts_with("semgate config: `cache.ttl`"));
    }

    #[test]
    fn wrong_type_is_named_with_its_path() {
        let e = Config::parse(with(r#"{"cache":{"ttl_s":"soon"}}"#).as_bytes()).unwrap_err();
        assert_eq!(e.path, "cache.ttl_s");
    }

    #[test]
    fn bad_values_are_rejected_with_paths() {
        let cases = [
            (r#"{"cache":{"ttl_s":0}}"#, "cache.ttl_s"),
            (r#"{"cache":{"max_entry_bytes":100}}"#, "cache.max_entry_bytes"),
            (r#"{"cache":{"max_bytes":2048,"max_entry_bytes":4096}}"#, "cache.max_entry_bytes"),
            (r#"{"cache":{"ways":0}}"#, "cache.ways"),
            (r#"{"cache":{"fast_path":{"max_record_bytes":10}}}"#, "cache.fast_path.max_record_bytes"),
            (r#"{"cache":{"fast_path":{"max_bytes":1000}}}"#, "cache.fast_path.max_bytes"),
            (r#"{"cache":{"fast_path":{"slots":4}}}"#, "cache.fast_path.slots"),
            (r#"{"cache":{"max_temperature":3}}"#, "cache.max_temperature"),
            (r#"{"models":{"*":["nope/x"]}}"#, "models.*[0]"),
            (r#"{"models":{"a*b*":["openai/*"]}}"#, "models.a*b*"),
            (r#"{"models":{}}"#, "models"),
            (r#"{"models":[{"match":"*","provider":"openai"}]}"#, "models"),
            (r#"{"providers":{"openai":{"cluster":"c","api_key_env":"K"}}}"#, "providers.openai.api_key_env"),
            (r#"{"providers":{"claude":{"cluster":"chain_x","chain":true}}}"#, "providers.claude.chain"),
            (r#"{"providers":{"openai":{"kind":"openai"}}}"#, "providers.openai.keys"),
            (r#"{"fallback":{"max_attempts":0}}"#, "fallback.max_attempts"),
            (r#"{"api_paths":["v1/chat"]}"#, "api_paths[0]"),
            (r#"{"auth":{"keys":[]}}"#, "virtual_keys"),
            (r#"{"auth":{"tenant_header":"x-tenant"}}"#, "virtual_keys"),
            (r#"{"auth":{"keys":[{"key":"a","tenant":"t"},{"key":"a","tenant":"u"}]}}"#, "auth.keys[1].key"),
            (r#"{"auth":{"keys":[{"tenant":"t"}]}}"#, "auth.keys[0]"),
            (r#"{"auth":{"keys":[{"key":"a","key_env":"B","tenant":"t"}]}}"#, "auth.keys[0]"),
            (r#"{"auth":{"keys":[{"key_sha256":"abc","tenant":"t"}]}}"#, "auth.keys[0].key_sha256"),
            (r#"{"auth":{"keys":[{"key":"a","tenant":"t","tenants":["x"]}]}}"#, "auth.keys[0].tenants"),
            (r#"{"auth":{"keys":[{"key":"a","tenant":"t"}],"tenant_header":"X-Tenant"}}"#, "auth.tenant_header"),
            (r#"{"forward_headers":["authorization"]}"#, "forward_headers[0]"),
            (r#"{"forward_headers":["x-semgate-cluster"]}"#, "forward_headers[0]"),
            (r#"{"passthrough":[{"path_prefix":"/v1/models","provider":"nope"}]}"#, "passthrough[0].provider"),
            (r#"{"passthrough":[{"path_prefix":"v1","provider":"openai"}]}"#, "passthrough[0].path_prefix"),
            (r#"{"policies":[{"match":{"path_prefix":"x"},"cache":{}}]}"#, "policies[0].match.path_prefix"),
            (r#"{"policies":[{"match":{},"cache":{"ttl_s":0}}]}"#, "policies[0].cache.ttl_s"),
            (r#"{"policies":[{"match":{},"cache":{"semantic_threshold":0}}]}"#, "policies[0].cache.semantic_threshold"),
            (r#"{"policies":[{"match":{},"cache":{"semantic_ttl_s":0}}]}"#, "policies[0].cache.semantic_ttl_s"),
            (r#"{"max_body_bytes":0}"#, "max_body_bytes"),
            (r#"{"semantic":{"timeout_ms":0}}"#, "semantic.timeout_ms"),
            (r#"{"semantic":{"threshold":1.5}}"#, "semantic.threshold"),
            (r#"{"semantic":{"cluster":""}}"#, "semantic.cluster"),
        ];
        for (patch, path) in cases {
            let e = Config::parse(with(patch).as_bytes()).unwrap_err();
            assert_eq!(e.path, path, "patch {patch}: {e}");
        }
    }

    #[test]
    fn not_json_is_an_error_not_a_panic() {
        assert!(Config::parse(b"not json").is_err());
        assert!(Config::parse(b"").is_err());
    }

    #[test]
    fn model_patterns() {
        assert!(pattern_matches("*", "x"));
        assert!(pattern_matches("gpt-*", "gpt-4o"));
        assert!(!pattern_matches("gpt-*", "claude"));
        assert!(pattern_matches("*-mini", "gpt-4o-mini"));
        assert!(pattern_matches("exact", "exact"));
        assert!(!pattern_matches("exact", "exactly"));
    }

    #[test]
    fn fast_path_slots_follow_its_bounds() {
        let mut c = CacheConfig::default();
        c.fast_path.max_bytes = Some(1 << 20);
        c.fast_path.max_record_bytes = 8 << 10;
        assert_eq!(c.fast_path_slots(), 128);
        c.fast_path.enabled = false;
        assert_eq!(c.fast_path_slots(), 0);
        c.fast_path.enabled = true;
        c.enabled = false;
        assert_eq!(c.fast_path_slots(), 0, "no cache, no fast path");
        let small = CacheConfig { max_bytes: 32 << 10, max_entry_bytes: 4096, ..CacheConfig::default() };
        assert_eq!(small.fast_path_slots(), 0);
        assert!(small.validate("cache").is_ok(), "the default quietly turns off for a small cache");
    }

    #[test]
    fn slot_count_rounds_to_whole_sets() {
        let mut c = CacheConfig { slots: Some(10), ways: 4, ..CacheConfig::default() };
        assert_eq!(c.slot_count(), 8);
        c.slots = Some(3);
        c.ways = 4;
        assert_eq!(c.slot_count(), 4);
    }
}
