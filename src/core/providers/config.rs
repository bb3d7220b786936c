//! Provider chains as configured (`providers`, `models`, `fallback`): serde types, one
//! validation pass whose errors name the field path, and the compile step into the
//! [`ProviderTable`] the upstream role reads on every attempt (keys resolved, headers built).
//!
//! The same types feed the `semgate-config` generator, which needs the layout (clusters,
//! chains, retry policy) but never the keys: [`ProvidersConfig::chain_layout`] works without
//! the environment, [`ProvidersConfig::compile`] needs it.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::ProviderKind;
use crate::core::config::ConfigError;

/// `anthropic-version` sent when the config names none.
pub const DEFAULT_ANTHROPIC_VERSION: &str = "2023-06-01";
/// `max_tokens` sent to Anthropic when the client gave none (Anthropic requires one).
pub const DEFAULT_MAX_TOKENS: u64 = 4096;
/// Statuses and failures that move a request to the next provider when `fallback.on` is unset.
pub const DEFAULT_FALLBACK_ON: &[&str] = &["5xx", "429", "connect-failure", "reset", "timeout"];
/// Conditions `fallback.on` accepts besides HTTP status codes.
pub const FALLBACK_CONDITIONS: &[&str] =
    &["5xx", "gateway-error", "connect-failure", "reset", "timeout", "refused-stream"];
/// Upper bound on attempts: each one is a provider call the client waits for.
pub const MAX_ATTEMPTS_LIMIT: u32 = 10;

fn err(path: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError { path: path.into(), message: message.into() }
}

/// The `providers`, `models` and `fallback` sections of the filter's configuration.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ProvidersConfig {
    pub providers: BTreeMap<String, ProviderSpec>,
    /// Public model name (or pattern: `gpt-*`, `*-mini`, `*`) -> ordered chain of
    /// `provider/upstream-model` (`provider/*` sends the client's model name).
    pub models: BTreeMap<String, Vec<String>>,
    #[serde(default)]
    pub fallback: FallbackSpec,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum KindName {
    Openai,
    Anthropic,
    Gemini,
    Vertex,
    OpenaiCompatible,
}

impl KindName {
    pub fn kind(self) -> ProviderKind {
        match self {
            KindName::Openai => ProviderKind::OpenAi,
            KindName::Anthropic => ProviderKind::Anthropic,
            KindName::Gemini => ProviderKind::Gemini,
            KindName::Vertex => ProviderKind::Vertex,
            KindName::OpenaiCompatible => ProviderKind::OpenAiCompatible,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderSpec {
    pub kind: KindName,
    /// Envoy cluster of this provider; default `provider_<name>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
    /// `host:port` the generated cluster connects to; default the provider's public API host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// TLS to the provider; default on, except for loopback addresses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<bool>,
    /// `:authority` sent upstream; default the address's host (with its port unless 443/80).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authority: Option<String>,
    /// Prefix put before the provider's API path (a proxy in front of the provider).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_path: Option<String>,
    /// The provider's keys, each read from an environment variable of the Wasm VM.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub keys: Vec<KeySource>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub anthropic_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vertex: Option<VertexSpec>,
    /// `max_tokens` for Anthropic when the client sends none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens_default: Option<u64>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct KeySource {
    pub env: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum VertexAuth {
    /// A Vertex express-mode API key, sent as `x-goog-api-key`.
    ExpressKey,
    /// An OAuth token minted by the sidecar from a service-account key, read from shared data.
    SidecarToken,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct VertexSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    pub auth: VertexAuth,
    /// `sidecar_token`: the Envoy cluster of the sidecar that mints the tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_cluster: Option<String>,
    /// `sidecar_token`: the environment variable holding the sidecar's bearer token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_env: Option<String>,
}

/// The sidecar's cluster in the shipped configurations.
pub const DEFAULT_TOKEN_CLUSTER: &str = "semgate_sidecar";

impl VertexSpec {
    pub fn token_cluster(&self) -> &str {
        self.token_cluster.as_deref().unwrap_or(DEFAULT_TOKEN_CLUSTER)
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FallbackSpec {
    /// What moves a request to the next provider: `5xx`, `gateway-error`, `connect-failure`,
    /// `reset`, `timeout`, `refused-stream`, or an HTTP status such as `429`.
    #[serde(default = "default_on")]
    pub on: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_attempt_timeout_ms: Option<u64>,
    /// Attempts per request, first included; default the longest chain's length.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_attempts: Option<u32>,
    #[serde(default)]
    pub ejection: EjectionSpec,
    /// How long a key that got 401, 403 or 429 is skipped by the rotation.
    #[serde(default = "default_key_cooldown_s")]
    pub key_cooldown_s: u64,
}

impl Default for FallbackSpec {
    fn default() -> Self {
        FallbackSpec {
            on: default_on(),
            per_attempt_timeout_ms: None,
            max_attempts: None,
            ejection: EjectionSpec::default(),
            key_cooldown_s: default_key_cooldown_s(),
        }
    }
}

/// Envoy's `outlier_detection` on every provider cluster: the circuit breaker.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct EjectionSpec {
    #[serde(default = "default_consecutive_5xx")]
    pub consecutive_5xx: u32,
    #[serde(default = "default_interval_ms")]
    pub interval_ms: u64,
    #[serde(default = "default_base_ejection_ms")]
    pub base_ejection_ms: u64,
    /// 100 by default: a provider cluster usually has one host, and it must be ejectable.
    #[serde(default = "default_max_ejection_percent")]
    pub max_ejection_percent: u32,
}

impl Default for EjectionSpec {
    fn default() -> Self {
        EjectionSpec {
            consecutive_5xx: default_consecutive_5xx(),
            interval_ms: default_interval_ms(),
            base_ejection_ms: default_base_ejection_ms(),
            max_ejection_percent: default_max_ejection_percent(),
        }
    }
}

fn default_on() -> Vec<String> {
    DEFAULT_FALLBACK_ON.iter().map(|s| s.to_string()).collect()
}
fn default_key_cooldown_s() -> u64 {
    60
}
fn default_consecutive_5xx() -> u32 {
    3
}
fn default_interval_ms() -> u64 {
    10_000
}
fn default_base_ejection_ms() -> u64 {
    30_000
}
fn default_max_ejection_percent() -> u32 {
    100
}

/// A `host:port` address split in its parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Address {
    pub host: String,
    pub port: u16,
}

impl Address {
    pub fn parse(s: &str) -> Option<Address> {
        let (host, port) = s.rsplit_once(':')?;
        let host = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
        if host.is_empty() || host.contains(char::is_whitespace) || host.contains('/') {
            return None;
        }
        let port: u16 = port.parse().ok().filter(|p| *p > 0)?;
        Some(Address { host: host.to_string(), port })
    }

    /// Loopback hosts get no TLS by default (a fake or local provider).
    pub fn is_loopback(&self) -> bool {
        self.host == "localhost" || self.host == "::1" || self.host.starts_with("127.")
    }

    /// An IP literal needs a STATIC cluster; a name needs DNS.
    pub fn is_ip(&self) -> bool {
        self.host.parse::<std::net::IpAddr>().is_ok()
    }
}

impl ProviderSpec {
    pub fn cluster_name(&self, name: &str) -> String {
        self.cluster.clone().unwrap_or_else(|| format!("provider_{name}"))
    }

    /// The provider's clusters: one per key (the first is [`ProviderSpec::cluster_name`], the
    /// others `<cluster>_key2`, `_key3`...), each naming its key's variable; one cluster
    /// without a key for a provider with none. Envoy retries a chain cluster by cluster, so a
    /// refused key's retry goes to the same provider's next key before the next provider.
    pub fn key_clusters(&self, name: &str) -> Vec<(String, Option<&str>)> {
        let base = self.cluster_name(name);
        let keys: Vec<&str> = self.key_envs().collect();
        if keys.is_empty() {
            return vec![(base, None)];
        }
        keys.iter()
            .enumerate()
            .map(|(i, k)| (if i == 0 { base.clone() } else { format!("{base}_key{}", i + 1) }, Some(*k)))
            .collect()
    }

    fn vertex_location(&self) -> Option<(&str, &str)> {
        let v = self.vertex.as_ref()?;
        Some((v.project.as_deref()?, v.location.as_deref()?))
    }

    /// The address the generated cluster connects to (validated before it is called).
    pub fn address(&self) -> Address {
        if let Some(a) = self.address.as_deref().and_then(Address::parse) {
            return a;
        }
        let host = match self.kind {
            KindName::Openai | KindName::OpenaiCompatible => "api.openai.com".to_string(),
            KindName::Anthropic => "api.anthropic.com".to_string(),
            KindName::Gemini => "generativelanguage.googleapis.com".to_string(),
            KindName::Vertex => match self.vertex.as_ref().and_then(|v| v.location.as_deref()) {
                Some(loc) if loc != "global" => format!("{loc}-aiplatform.googleapis.com"),
                _ => "aiplatform.googleapis.com".to_string(),
            },
        };
        Address { host, port: 443 }
    }

    pub fn tls(&self) -> bool {
        self.tls.unwrap_or_else(|| !self.address().is_loopback())
    }

    pub fn authority(&self) -> String {
        if let Some(a) = &self.authority {
            return a.clone();
        }
        let addr = self.address();
        match addr.port {
            443 | 80 => addr.host,
            port if addr.host.contains(':') => format!("[{}]:{port}", addr.host),
            port => format!("{}:{port}", addr.host),
        }
    }

    /// Environment variables holding this provider's keys, in order.
    pub fn key_envs(&self) -> impl Iterator<Item = &str> {
        self.keys.iter().map(|k| k.env.as_str())
    }

    /// Every environment variable the upstream role reads for this provider: its keys, and
    /// the sidecar's bearer token for minted Vertex tokens.
    pub fn vm_envs(&self) -> impl Iterator<Item = &str> {
        let token_env =
            self.vertex.as_ref().filter(|v| v.auth == VertexAuth::SidecarToken).and_then(|v| v.token_env.as_deref());
        self.key_envs().chain(token_env)
    }

    fn validate(&self, name: &str) -> Result<(), ConfigError> {
        let at = |field: &str| format!("providers.{name}.{field}");
        if let Some(c) = &self.cluster {
            if c.trim().is_empty() {
                return Err(err(at("cluster"), "must not be empty"));
            }
        }
        match &self.address {
            Some(a) if Address::parse(a).is_none() => {
                return Err(err(at("address"), format!("`{a}` is not `host:port`")));
            }
            None if self.kind == KindName::OpenaiCompatible => {
                return Err(err(at("address"), "is required for kind `openai_compatible`"));
            }
            _ => {}
        }
        if let Some(a) = &self.authority {
            if a.is_empty() || a.contains(|c: char| c.is_whitespace() || c.is_control() || c == '/') {
                return Err(err(at("authority"), "must be a host name, optionally with `:port`"));
            }
        }
        if let Some(p) = &self.base_path {
            if !p.starts_with('/') || p.contains(['?', '#']) || p.contains(char::is_whitespace) {
                return Err(err(at("base_path"), "must start with `/` and hold no query or spaces"));
            }
        }
        if self.anthropic_version.is_some() && self.kind != KindName::Anthropic {
            return Err(err(at("anthropic_version"), "only applies to kind `anthropic`"));
        }
        if let Some(v) = &self.anthropic_version {
            if v.is_empty() || !v.chars().all(|c| c.is_ascii_graphic()) {
                return Err(err(at("anthropic_version"), "must be a version such as `2023-06-01`"));
            }
        }
        match self.max_tokens_default {
            Some(_) if self.kind != KindName::Anthropic => {
                return Err(err(at("max_tokens_default"), "only applies to kind `anthropic`"));
            }
            Some(0) => return Err(err(at("max_tokens_default"), "must be greater than 0")),
            _ => {}
        }
        let sidecar_token = match (&self.vertex, self.kind) {
            (Some(_), k) if k != KindName::Vertex => {
                return Err(err(at("vertex"), "only applies to kind `vertex`"));
            }
            (None, KindName::Vertex) => {
                return Err(err(
                    at("vertex"),
                    "is required for kind `vertex` (`auth` and, for tokens, `project`, `location`)",
                ));
            }
            (Some(v), _) => {
                for (field, value) in [("project", &v.project), ("location", &v.location)] {
                    if let Some(s) = value {
                        if s.is_empty() || !s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
                            return Err(err(at(&format!("vertex.{field}")), "must be letters, digits, `-` or `_`"));
                        }
                    }
                }
                match (v.auth, v.project.is_some(), v.location.is_some()) {
                    (VertexAuth::SidecarToken, true, true) | (VertexAuth::ExpressKey, true, true) => {}
                    (VertexAuth::ExpressKey, false, false) => {}
                    (VertexAuth::SidecarToken, _, _) => {
                        return Err(err(at("vertex"), "`sidecar_token` needs both `project` and `location`"));
                    }
                    (VertexAuth::ExpressKey, _, _) => {
                        return Err(err(at("vertex"), "set both `project` and `location`, or neither (express mode)"));
                    }
                }
                if v.auth != VertexAuth::SidecarToken && (v.token_cluster.is_some() || v.token_env.is_some()) {
                    return Err(err(
                        at("vertex"),
                        "`token_cluster` and `token_env` only apply to `auth: sidecar_token`",
                    ));
                }
                if v.token_cluster.as_deref().is_some_and(|c| c.trim().is_empty()) {
                    return Err(err(at("vertex.token_cluster"), "must not be empty"));
                }
                if v.token_env.as_deref().is_some_and(|e| e.trim().is_empty()) {
                    return Err(err(at("vertex.token_env"), "must not be empty"));
                }
                v.auth == VertexAuth::SidecarToken
            }
            (None, _) => false,
        };
        if sidecar_token {
            if !self.keys.is_empty() {
                return Err(err(
                    at("keys"),
                    "must be empty with `vertex.auth: sidecar_token` (the sidecar mints tokens)",
                ));
            }
        } else if self.keys.is_empty() {
            return Err(err(at("keys"), "must list at least one key: `[{\"env\": \"VAR\"}]`"));
        }
        let mut seen = BTreeSet::new();
        for (i, k) in self.keys.iter().enumerate() {
            let path = at(&format!("keys[{i}].env"));
            if !valid_env_name(&k.env) {
                return Err(err(path, "must be an environment variable name (letters, digits, `_`)"));
            }
            if !seen.insert(k.env.as_str()) {
                return Err(err(path, format!("`{}` is listed twice", k.env)));
            }
        }
        Ok(())
    }
}

fn valid_env_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Provider names end up in cluster names, shared-data keys and response headers.
fn valid_provider_name(s: &str) -> bool {
    !s.is_empty() && s.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
}

/// One entry of a model's chain, split: (`provider`, `upstream model`).
pub fn split_entry(entry: &str) -> Option<(&str, &str)> {
    let (p, m) = entry.split_once('/')?;
    (!p.is_empty() && !m.is_empty()).then_some((p, m))
}

/// One aggregate cluster: the provider clusters a chain tries, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainSpec {
    /// `chain_<provider>_<provider>...`: one per distinct sequence of providers.
    pub name: String,
    pub providers: Vec<String>,
}

/// Which chain cluster each model goes to, and the distinct chains.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainLayout {
    pub model_cluster: BTreeMap<String, String>,
    pub chains: Vec<ChainSpec>,
}

impl ProvidersConfig {
    /// Parse and validate; errors name the field path (`providers.vertex.vertex.location`).
    pub fn parse(json: &[u8]) -> Result<Self, ConfigError> {
        let de = &mut serde_json::Deserializer::from_slice(json);
        let config: Self = serde_path_to_error::deserialize(de).map_err(path_error)?;
        config.validate()?;
        Ok(config)
    }

    /// The three sections out of a whole filter configuration; other sections are ignored.
    pub fn from_filter_config(config: &Value) -> Result<Self, ConfigError> {
        crate::core::config::refuse_old_shape(config)?;
        let mut sections = serde_json::Map::new();
        for name in ["providers", "models", "fallback"] {
            if let Some(v) = config.get(name) {
                sections.insert(name.to_string(), v.clone());
            }
        }
        let config: Self = serde_path_to_error::deserialize(Value::Object(sections)).map_err(path_error)?;
        config.validate()?;
        Ok(config)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.providers.is_empty() {
            return Err(err("providers", "must name at least one provider"));
        }
        let mut clusters = BTreeMap::new();
        for (name, p) in &self.providers {
            if !valid_provider_name(name) {
                return Err(err(format!("providers.{name}"), "names use lowercase letters, digits, `_` and `-`"));
            }
            p.validate(name)?;
            for (cluster, _) in p.key_clusters(name) {
                if let Some(other) = clusters.insert(cluster.clone(), name) {
                    return Err(err(
                        format!("providers.{name}.cluster"),
                        format!("`{cluster}` is also a cluster of `{other}`"),
                    ));
                }
            }
        }
        if self.models.is_empty() {
            return Err(err("models", "must map at least one model to a chain of `provider/model`"));
        }
        for (model, chain) in &self.models {
            if model.is_empty() || model.contains(char::is_control) {
                return Err(err(format!("models.{model}"), "model names must be non-empty text"));
            }
            let stars = model.matches('*').count();
            if stars > 1 || (stars == 1 && !(model.starts_with('*') || model.ends_with('*'))) {
                return Err(err(format!("models.{model}"), "must be a name, `prefix*`, `*suffix` or `*`"));
            }
            if chain.is_empty() {
                return Err(err(format!("models.{model}"), "must list at least one `provider/model`"));
            }
            let mut seen = BTreeSet::new();
            for (i, entry) in chain.iter().enumerate() {
                let at = format!("models.{model}[{i}]");
                let Some((provider, _)) = split_entry(entry) else {
                    return Err(err(at, format!("`{entry}` is not `provider/upstream-model`")));
                };
                if !self.providers.contains_key(provider) {
                    return Err(err(at, format!("provider `{provider}` is not in `providers`")));
                }
                if !seen.insert(provider) {
                    // An aggregate cluster cannot list one provider cluster twice.
                    return Err(err(at, format!("provider `{provider}` appears twice in this chain")));
                }
            }
        }
        let f = &self.fallback;
        for (i, cond) in f.on.iter().enumerate() {
            let status_ok = cond.parse::<u16>().is_ok_and(|s| (400..=599).contains(&s));
            if !status_ok && !FALLBACK_CONDITIONS.contains(&cond.as_str()) {
                return Err(err(
                    format!("fallback.on[{i}]"),
                    format!("`{cond}` is not one of {} or an HTTP status 400-599", FALLBACK_CONDITIONS.join(", ")),
                ));
            }
        }
        if f.per_attempt_timeout_ms == Some(0) {
            return Err(err("fallback.per_attempt_timeout_ms", "must be greater than 0"));
        }
        if let Some(n) = f.max_attempts {
            if n == 0 || n > MAX_ATTEMPTS_LIMIT {
                return Err(err("fallback.max_attempts", format!("must be between 1 and {MAX_ATTEMPTS_LIMIT}")));
            }
        }
        let e = &f.ejection;
        if e.consecutive_5xx == 0 {
            return Err(err("fallback.ejection.consecutive_5xx", "must be greater than 0"));
        }
        if e.interval_ms == 0 {
            return Err(err("fallback.ejection.interval_ms", "must be greater than 0"));
        }
        if e.base_ejection_ms == 0 {
            return Err(err("fallback.ejection.base_ejection_ms", "must be greater than 0"));
        }
        if e.max_ejection_percent > 100 {
            return Err(err("fallback.ejection.max_ejection_percent", "must be at most 100"));
        }
        self.chain_layout().map(|_| ())
    }

    /// Attempts per request: `max_attempts`, else the longest chain's count of keys (each key
    /// of each provider is one endpoint Envoy may try, a provider without keys one).
    pub fn max_attempts(&self) -> u32 {
        self.fallback.max_attempts.unwrap_or_else(|| {
            let endpoints = |entry: &String| {
                split_entry(entry).and_then(|(p, _)| self.providers.get(p)).map_or(1, |p| p.keys.len().max(1) as u32)
            };
            self.models.values().map(|c| c.iter().map(endpoints).sum::<u32>()).max().unwrap_or(1)
        })
    }

    /// One aggregate cluster per distinct sequence of providers (over their key clusters), named
    /// after its providers; a chain of one provider with one key routes to that provider's
    /// own cluster.
    pub fn chain_layout(&self) -> Result<ChainLayout, ConfigError> {
        let mut by_seq: BTreeMap<Vec<String>, String> = BTreeMap::new();
        let mut names: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let mut model_cluster = BTreeMap::new();
        for (model, chain) in &self.models {
            let seq: Vec<String> = chain.iter().filter_map(|e| split_entry(e)).map(|(p, _)| p.to_string()).collect();
            if let [only] = seq.as_slice() {
                match self.providers.get(only) {
                    Some(spec) if spec.keys.len() <= 1 => {
                        model_cluster.insert(model.clone(), spec.cluster_name(only));
                        continue;
                    }
                    _ => {}
                }
            }
            let name = match by_seq.get(&seq) {
                Some(n) => n.clone(),
                None => {
                    let name =
                        format!("chain_{}", seq.iter().map(|p| p.replace('-', "_")).collect::<Vec<_>>().join("_"));
                    if names.contains_key(&name)
                        || self.providers.iter().any(|(n, p)| p.key_clusters(n).iter().any(|(c, _)| *c == name))
                    {
                        return Err(err(
                            format!("models.{model}"),
                            format!(
                                "its chain's cluster name `{name}` collides with another cluster; rename a provider"
                            ),
                        ));
                    }
                    names.insert(name.clone(), seq.clone());
                    by_seq.insert(seq, name.clone());
                    name
                }
            };
            model_cluster.insert(model.clone(), name);
        }
        let chains = names.into_iter().map(|(name, providers)| ChainSpec { name, providers }).collect();
        Ok(ChainLayout { model_cluster, chains })
    }

    /// Where each public model goes, without the keys: what the downstream role routes by.
    pub fn model_table(&self) -> Result<ModelTable, ConfigError> {
        let layout = self.chain_layout()?;
        let names: Vec<&String> = self.providers.keys().collect();
        let index = |p: &str| names.iter().position(|n| n.as_str() == p);
        let mut exact = BTreeMap::new();
        let mut patterns = Vec::new();
        for (model, chain) in &self.models {
            let entries = chain
                .iter()
                .filter_map(|e| split_entry(e))
                .filter_map(|(p, m)| Some(ChainEntry { provider: index(p)?, upstream_model: m.to_string() }))
                .collect();
            let cluster = layout.model_cluster[model].clone();
            let aggregate = layout.chains.iter().any(|c| c.name == cluster);
            let route = ModelChain { model: model.clone(), cluster, aggregate, entries };
            if model.contains('*') {
                patterns.push(route);
            } else {
                exact.insert(model.clone(), route);
            }
        }
        // The most specific pattern wins: the longest literal part first, `*` last.
        patterns.sort_by(|a, b| b.model.len().cmp(&a.model.len()).then_with(|| a.model.cmp(&b.model)));
        Ok(ModelTable { exact, patterns, chains: layout.chains })
    }

    /// Every environment variable a key is read from (the VM's `host_env_keys`).
    pub fn key_envs(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for p in self.providers.values() {
            for e in p.vm_envs() {
                if !out.iter().any(|o| o == e) {
                    out.push(e.to_string());
                }
            }
        }
        out
    }

    /// Resolve keys through `env` and build the runtime table. Unset or empty keys fail the load.
    pub fn compile(&self, env: &dyn Fn(&str) -> Option<String>) -> Result<ProviderTable, ConfigError> {
        self.validate()?;
        let models = self.model_table()?;
        let mut providers = Vec::with_capacity(self.providers.len());
        for (name, spec) in &self.providers {
            providers.push(compile_provider(name, spec, self.fallback.key_cooldown_s, env)?);
        }
        Ok(ProviderTable { providers, models, max_attempts: self.max_attempts() })
    }
}

fn path_error(e: serde_path_to_error::Error<serde_json::Error>) -> ConfigError {
    let path = e.path().to_string();
    err(if path == "." { "(root)".to_string() } else { path }, e.into_inner().to_string())
}

fn compile_provider(
    name: &str,
    spec: &ProviderSpec,
    key_cooldown_s: u64,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Provider, ConfigError> {
    let kind = spec.kind.kind();
    let sidecar = spec.vertex.as_ref().filter(|v| v.auth == VertexAuth::SidecarToken);
    let auth = if let Some(v) = sidecar {
        let bearer = match &v.token_env {
            None => None,
            Some(var) => {
                let value = env(var).map(|v| v.trim().to_string()).unwrap_or_default();
                if value.is_empty() || !value.chars().all(|c| c.is_ascii_graphic()) {
                    return Err(err(
                        format!("providers.{name}.vertex.token_env"),
                        format!("environment variable `{var}` is unset, empty or not a header value"),
                    ));
                }
                Some(Secret(format!("Bearer {value}")))
            }
        };
        ProviderAuth::SidecarToken { cluster: v.token_cluster().to_string(), bearer }
    } else {
        let mut sets = Vec::with_capacity(spec.keys.len());
        for (i, k) in spec.keys.iter().enumerate() {
            let path = format!("providers.{name}.keys[{i}].env");
            let value = env(&k.env).map(|v| v.trim().to_string()).unwrap_or_default();
            if value.is_empty() {
                return Err(err(path, format!("environment variable `{}` is unset or empty", k.env)));
            }
            // Named by its variable only: the key itself never reaches an error message.
            if !value.chars().all(|c| c.is_ascii_graphic()) {
                return Err(err(path, format!("the key in `{}` holds characters a header cannot carry", k.env)));
            }
            sets.push(key_headers(spec, &value));
        }
        ProviderAuth::Keys(sets)
    };
    Ok(Provider {
        name: name.to_string(),
        kind,
        cluster: spec.cluster_name(name),
        authority: spec.authority(),
        base_path: spec.base_path.as_deref().unwrap_or("").trim_end_matches('/').to_string(),
        auth,
        max_tokens_default: spec.max_tokens_default.unwrap_or(DEFAULT_MAX_TOKENS),
        vertex: spec.vertex_location().map(|(p, l)| VertexPlace { project: p.to_string(), location: l.to_string() }),
        key_cooldown_ms: key_cooldown_s.saturating_mul(1000),
        key_envs: spec.key_envs().map(str::to_string).collect(),
    })
}

/// The headers that carry one key, in the provider's own scheme.
fn key_headers(spec: &ProviderSpec, key: &str) -> KeyHeaders {
    let headers = match spec.kind {
        KindName::Openai | KindName::OpenaiCompatible => vec![("authorization", Secret(format!("Bearer {key}")))],
        KindName::Anthropic => vec![
            ("x-api-key", Secret(key.to_string())),
            (
                "anthropic-version",
                Secret(spec.anthropic_version.clone().unwrap_or_else(|| DEFAULT_ANTHROPIC_VERSION.to_string())),
            ),
        ],
        KindName::Gemini | KindName::Vertex => vec![("x-goog-api-key", Secret(key.to_string()))],
    };
    KeyHeaders { headers }
}

/// A header value that holds a credential: `Debug` never prints it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: String) -> Self {
        Secret(value)
    }

    /// The value, for the one place that sets the header.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// The precomputed headers of one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyHeaders {
    pub headers: Vec<(&'static str, Secret)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProviderAuth {
    /// One header set per key, rotated in turn.
    Keys(Vec<KeyHeaders>),
    /// A Vertex token the sidecar mints, read from shared data on every attempt; the upstream
    /// root fetches it from `cluster`, sending `bearer` as its `authorization`.
    SidecarToken { cluster: String, bearer: Option<Secret> },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VertexPlace {
    pub project: String,
    pub location: String,
}

/// One provider, ready for the request path.
#[derive(Debug, Clone)]
pub struct Provider {
    pub name: String,
    pub kind: ProviderKind,
    pub cluster: String,
    pub authority: String,
    /// Empty, or a prefix without a trailing `/`.
    pub base_path: String,
    pub auth: ProviderAuth,
    pub max_tokens_default: u64,
    /// Project and location; `None` for Vertex express mode (and other kinds).
    pub vertex: Option<VertexPlace>,
    pub key_cooldown_ms: u64,
    /// The variable each key was read from, in order: an endpoint's `key` metadata names one.
    pub key_envs: Vec<String>,
}

impl Provider {
    pub fn key_count(&self) -> usize {
        match &self.auth {
            ProviderAuth::Keys(k) => k.len(),
            ProviderAuth::SidecarToken { .. } => 0,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainEntry {
    /// Index into [`ProviderTable::providers`].
    pub provider: usize,
    pub upstream_model: String,
}

/// A public model (or pattern): the cluster the downstream role routes it to (an aggregate
/// cluster for a chain of several providers, else the provider's own), and its chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelChain {
    /// The `models` entry: a name or a pattern (it also labels the model's metrics).
    pub model: String,
    pub cluster: String,
    /// `cluster` is an aggregate (several providers, or one with several keys): Envoy retries
    /// it, and when every attempt fails the client gets one 502 naming them.
    pub aggregate: bool,
    pub entries: Vec<ChainEntry>,
}

impl ModelChain {
    /// Routed to an aggregate cluster with retries.
    pub fn is_fallback_chain(&self) -> bool {
        self.aggregate
    }

    /// The upstream model `entry` is asked for when the client asked for `client_model`.
    pub fn upstream_model<'a>(entry: &'a ChainEntry, client_model: &'a str) -> &'a str {
        if entry.upstream_model == "*" {
            client_model
        } else {
            &entry.upstream_model
        }
    }
}

/// `models` compiled: exact names, then patterns from the most specific.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelTable {
    exact: BTreeMap<String, ModelChain>,
    patterns: Vec<ModelChain>,
    pub chains: Vec<ChainSpec>,
}

impl ModelTable {
    /// The chain serving `model`: its exact entry, else the most specific matching pattern.
    pub fn route(&self, model: &str) -> Option<&ModelChain> {
        self.exact
            .get(model)
            .or_else(|| self.patterns.iter().find(|p| crate::core::config::pattern_matches(&p.model, model)))
    }

    pub fn all(&self) -> impl Iterator<Item = &ModelChain> {
        self.exact.values().chain(self.patterns.iter())
    }
}

/// The compiled `providers`/`models`/`fallback` sections: every lookup the request path makes.
#[derive(Debug, Clone)]
pub struct ProviderTable {
    /// Sorted by name.
    pub providers: Vec<Provider>,
    pub models: ModelTable,
    pub max_attempts: u32,
}

impl ProviderTable {
    pub fn provider(&self, name: &str) -> Option<&Provider> {
        self.providers.binary_search_by(|p| p.name.as_str().cmp(name)).ok().map(|i| &self.providers[i])
    }

    pub fn model(&self, model: &str) -> Option<&ModelChain> {
        self.models.route(model)
    }

    /// The provider whose (first key's) cluster this is.
    pub fn provider_by_cluster(&self, cluster: &str) -> Option<&Provider> {
        self.providers.iter().find(|p| p.cluster == cluster)
    }

    /// The `x-semgate-cluster` value for a model (the downstream role's routing decision).
    pub fn cluster_for_model(&self, model: &str) -> Option<&str> {
        self.models.route(model).map(|m| m.cluster.as_str())
    }

    pub fn models(&self) -> impl Iterator<Item = &ModelChain> {
        self.models.all()
    }

    /// The upstream model name `provider` is asked for when serving `model`.
    pub fn upstream_model<'a>(&'a self, model: &'a str, provider: &str) -> Option<&'a str> {
        let chain = self.models.route(model)?;
        let entry = chain.entries.iter().find(|e| self.providers[e.provider].name == provider)?;
        Some(ModelChain::upstream_model(entry, model))
    }

    /// Where `provider` stands in `model`'s chain: (0-based position, chain length).
    pub fn position(&self, model: &str, provider: &str) -> Option<(usize, usize)> {
        let chain = self.models.route(model)?;
        let at = chain.entries.iter().position(|e| self.providers[e.provider].name == provider)?;
        Some((at, chain.entries.len()))
    }
}

#[cfg(test)]
#[path = "tests/config_tests.rs"]
mod tests;
