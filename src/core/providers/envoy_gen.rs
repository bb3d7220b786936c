//! The Envoy side of provider chains, derived from the filter's configuration: one cluster per
//! provider (endpoint metadata naming it, outlier detection as the circuit breaker), one
//! aggregate cluster per chain carrying the upstream Wasm filter, and the route's retry
//! policy; plus a checker that finds what a hand-written Envoy config misses.
//!
//! Works on `serde_json::Value` so it stays free of YAML: the `semgate-config` command parses
//! and prints YAML around it. Built for the command and tests only, never into the module.

use serde_json::{json, Map, Value};

use super::config::{EjectionSpec, ProviderSpec, ProvidersConfig};
use crate::core::config::ConfigError;
use crate::core::tally::STATS_TAGS;
use crate::core::upstream::ROOT_ID;

/// The request header the downstream role sets to a chain cluster; the route reads it.
pub const CLUSTER_HEADER: &str = "x-semgate-cluster";
pub const WASM_FILTER: &str = "envoy.filters.http.wasm";
pub const UPSTREAM_CODEC: &str = "envoy.filters.http.upstream_codec";
pub const AGGREGATE: &str = "envoy.clusters.aggregate";
pub const PREVIOUS_PRIORITIES: &str = "envoy.retry_priorities.previous_priorities";
pub const PREVIOUS_HOSTS: &str = "envoy.retry_host_predicates.previous_hosts";
const HTTP_OPTIONS: &str = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions";
/// Envoy's buffer limit when a listener or cluster sets none.
pub const ENVOY_DEFAULT_BUFFER_LIMIT: u64 = 1 << 20;
/// The filter's `max_body_bytes` default.
const DEFAULT_MAX_BODY_BYTES: u64 = 32 << 20;

/// What the generated pieces depend on besides the filter configuration.
#[derive(Debug, Clone)]
pub struct GenOptions {
    /// The module file, the same one the downstream filter loads.
    pub wasm_path: String,
    /// Shared data is per `vm_id`: the same as the downstream filter's, so both roles share it.
    pub vm_id: String,
    pub connect_timeout_ms: u64,
    pub ca_file: String,
}

impl Default for GenOptions {
    fn default() -> Self {
        GenOptions {
            wasm_path: "target/wasm32-wasip1/release/semgate.wasm".into(),
            vm_id: "semgate".into(),
            connect_timeout_ms: 5_000,
            ca_file: "/etc/ssl/certs/ca-certificates.crt".into(),
        }
    }
}

/// The generated pieces.
#[derive(Debug, Clone, PartialEq)]
pub struct Generated {
    /// Provider clusters, then chain clusters.
    pub clusters: Vec<Value>,
    /// The filter configuration as both roles get it (one JSON string).
    pub configuration: String,
    /// Variables the gateway filter's VM reads (client keys, the sidecar token).
    pub downstream_env: Vec<String>,
    /// For every route that routes by [`CLUSTER_HEADER`].
    pub retry_policy: Value,
    /// For listeners and clusters: above the filter's `max_body_bytes`.
    pub buffer_limit: u64,
}

impl Generated {
    /// The pieces as one document, for a human to paste (no base config given).
    pub fn to_document(&self) -> Value {
        json!({
            "clusters": self.clusters,
            "chain_route": chain_route(&self.retry_policy, json!("120s")),
            "route_retry_policy": self.retry_policy,
            "virtual_host": {"include_request_attempt_count": true},
            "listener_per_connection_buffer_limit_bytes": self.buffer_limit,
            "stats_config": {"stats_tags": STATS_TAGS.iter().map(|(n, r)| json!({"tag_name": n, "regex": r})).collect::<Vec<_>>()},
        })
    }
}

fn duration(ms: u64) -> String {
    if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{}.{:03}s", ms / 1000, ms % 1000)
    }
}

/// `max_body_bytes` of the filter config, or its default.
pub fn max_body_bytes(filter_config: &Value) -> u64 {
    filter_config.get("max_body_bytes").and_then(Value::as_u64).unwrap_or(DEFAULT_MAX_BODY_BYTES)
}

/// Twice the largest body, at least 64 MiB: Envoy must never cut a body the filter accepts.
pub fn buffer_limit_for(max_body: u64) -> u64 {
    max_body.saturating_mul(2).max(64 << 20)
}

/// Envoy's `retry_on` and `retriable_status_codes` for `fallback.on`.
pub fn retry_on(on: &[String]) -> (String, Vec<u16>) {
    let mut conditions: Vec<&str> = Vec::new();
    let mut codes = Vec::new();
    for c in on {
        // Envoy resets an attempt at its per-try timeout and retries it as a reset.
        let cond = match c.as_str() {
            "timeout" => "reset",
            other => match other.parse::<u16>() {
                Ok(code) => {
                    if !codes.contains(&code) {
                        codes.push(code);
                    }
                    "retriable-status-codes"
                }
                Err(_) => other,
            },
        };
        if !conditions.contains(&cond) {
            conditions.push(cond);
        }
    }
    (conditions.join(","), codes)
}

/// Attempts Envoy makes per request: one per endpoint (key) of the longest chain by default.
pub fn envoy_attempts(config: &ProvidersConfig) -> u32 {
    config.max_attempts()
}

/// Environment variables the gateway filter reads: `auth.keys[].key_env`, `semantic.token_env`.
pub fn downstream_env(filter_config: &Value) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let keys = filter_config.pointer("/auth/keys").and_then(Value::as_array).into_iter().flatten();
    let vars = keys
        .filter_map(|k| k.get("key_env").and_then(Value::as_str))
        .chain(filter_config.pointer("/semantic/token_env").and_then(Value::as_str));
    for v in vars {
        if !out.iter().any(|o| o == v) {
            out.push(v.to_string());
        }
    }
    out
}

/// The upstream role's filters for a cluster's `HttpProtocolOptions`: semgate, then the codec.
fn upstream_protocol_options(configuration: &str, envs: &[String], opts: &GenOptions) -> Value {
    let mut vm_config = json!({
        "vm_id": opts.vm_id,
        "runtime": "envoy.wasm.runtime.v8",
        "code": {"local": {"filename": opts.wasm_path}},
    });
    if !envs.is_empty() {
        vm_config["environment_variables"] = json!({"host_env_keys": envs});
    }
    json!({HTTP_OPTIONS: {
        "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
        "explicit_http_config": {"http_protocol_options": {}},
        "http_filters": [
            {
                "name": WASM_FILTER,
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
                    "config": {
                        "name": ROOT_ID,
                        "root_id": ROOT_ID,
                        "allow_on_headers_stop_iteration": true,
                        "fail_open": false,
                        "configuration": {
                            "@type": "type.googleapis.com/google.protobuf.StringValue",
                            "value": configuration,
                        },
                        "vm_config": vm_config,
                    },
                },
            },
            {
                "name": UPSTREAM_CODEC,
                "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.upstream_codec.v3.UpstreamCodec"},
            },
        ],
    }})
}

/// The clusters an aggregate lists for a chain: every key cluster of each provider, in order.
pub fn chain_members(config: &ProvidersConfig, providers: &[String]) -> Vec<String> {
    providers.iter().flat_map(|p| config.providers[p].key_clusters(p).into_iter().map(|(c, _)| c)).collect()
}

/// One cluster of a provider for one of its keys: the endpoint's metadata names the provider
/// and the key's variable (never the key), outlier detection takes a failing or refused key
/// out (the circuit breaker), and the upstream role runs on it when a model's chain is this
/// provider alone.
#[allow(clippy::too_many_arguments)]
fn provider_cluster(
    name: &str,
    p: &ProviderSpec,
    cluster: &str,
    key: Option<&str>,
    buffer_limit: u64,
    protocol_options: &Value,
    opts: &GenOptions,
    e: &EjectionSpec,
) -> Value {
    let addr = p.address();
    let mut semgate = json!({"provider": name});
    if let Some(k) = key {
        semgate["key"] = json!(k);
    }
    let mut c = json!({
        "name": cluster,
        "type": if addr.is_ip() { "STATIC" } else { "STRICT_DNS" },
        "connect_timeout": duration(opts.connect_timeout_ms),
        "per_connection_buffer_limit_bytes": buffer_limit,
        "outlier_detection": {
            "consecutive_5xx": e.consecutive_5xx,
            "interval": duration(e.interval_ms),
            "base_ejection_time": duration(e.base_ejection_ms),
            "max_ejection_percent": e.max_ejection_percent,
        },
        "load_assignment": {
            "cluster_name": cluster,
            "endpoints": [{"lb_endpoints": [{
                "endpoint": {"address": {"socket_address": {"address": addr.host, "port_value": addr.port}}},
                "metadata": {"filter_metadata": {"semgate": semgate}},
            }]}],
        },
        // Used when a model's chain is this provider alone (filters listed here do not run
        // when the cluster is reached through an aggregate: the aggregate's do).
        "typed_extension_protocol_options": protocol_options,
    });
    if !addr.is_ip() {
        c["dns_lookup_family"] = json!("V4_PREFERRED");
    }
    if p.tls() {
        c["transport_socket"] = json!({
            "name": "envoy.transport_sockets.tls",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
                "sni": addr.host,
                "common_tls_context": {"validation_context": {
                    "trusted_ca": {"filename": opts.ca_file},
                    "match_typed_subject_alt_names": [{"san_type": "DNS", "matcher": {"exact": addr.host}}],
                }},
            },
        });
    }
    c
}

/// Every cluster the filter configuration needs: one per provider and one aggregate per chain
/// of several providers, each with the upstream role (the same configuration as the gateway's).
pub fn generate(filter_config: &Value, opts: &GenOptions) -> Result<Generated, ConfigError> {
    let config = ProvidersConfig::from_filter_config(filter_config)?;
    let layout = config.chain_layout()?;
    let buffer_limit = buffer_limit_for(max_body_bytes(filter_config));
    let configuration = serde_json::to_string(filter_config).unwrap_or_default();
    let envs = config.key_envs();
    let protocol_options = upstream_protocol_options(&configuration, &envs, opts);
    let e = &config.fallback.ejection;
    let mut clusters = Vec::new();
    for (name, p) in &config.providers {
        for (cluster, key) in p.key_clusters(name) {
            clusters.push(provider_cluster(name, p, &cluster, key, buffer_limit, &protocol_options, opts, e));
        }
    }
    for chain in &layout.chains {
        let members = chain_members(&config, &chain.providers);
        clusters.push(json!({
            "name": chain.name,
            "connect_timeout": duration(opts.connect_timeout_ms),
            "lb_policy": "CLUSTER_PROVIDED",
            "per_connection_buffer_limit_bytes": buffer_limit,
            "cluster_type": {
                "name": AGGREGATE,
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.clusters.aggregate.v3.ClusterConfig",
                    "clusters": members,
                },
            },
            "typed_extension_protocol_options": protocol_options,
        }));
    }
    let (on, codes) = retry_on(&config.fallback.on);
    let mut retry_policy = json!({
        "retry_on": on,
        "num_retries": envoy_attempts(&config).saturating_sub(1),
        // Each attempt goes to the next priority: the provider's next key, then the next provider.
        "retry_priority": {
            "name": PREVIOUS_PRIORITIES,
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.retry.priority.previous_priorities.v3.PreviousPrioritiesConfig",
                "update_frequency": UPDATE_FREQUENCY,
            },
        },
        "retry_host_predicate": [{
            "name": PREVIOUS_HOSTS,
            "typed_config": {"@type": "type.googleapis.com/envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate"},
        }],
        // The next provider is a different service: no reason to wait (Envoy's default is a
        // jittered 25 ms).
        "retry_back_off": {"base_interval": "0.001s", "max_interval": "0.002s"},
    });
    if !codes.is_empty() {
        retry_policy["retriable_status_codes"] = json!(codes);
    }
    if let Some(ms) = config.fallback.per_attempt_timeout_ms {
        retry_policy["per_try_timeout"] = json!(duration(ms));
    }
    Ok(Generated { clusters, configuration, downstream_env: downstream_env(filter_config), retry_policy, buffer_limit })
}

/// Attempts per priority (one key of one provider) before `previous_priorities` moves on.
pub const UPDATE_FREQUENCY: u64 = 1;

/// The gateway's semgate filters (`root_id: semgate`) in the listeners' HTTP chains.
fn downstream_filters_mut(envoy: &mut Value) -> Vec<&mut Value> {
    let mut out = Vec::new();
    let Some(listeners) = envoy.pointer_mut("/static_resources/listeners").and_then(Value::as_array_mut) else {
        return out;
    };
    for l in listeners {
        let Some(chains) = l.get_mut("filter_chains").and_then(Value::as_array_mut) else { continue };
        for fc in chains {
            let Some(filters) = fc.get_mut("filters").and_then(Value::as_array_mut) else { continue };
            for f in filters {
                let Some(http) = f.pointer_mut("/typed_config/http_filters").and_then(Value::as_array_mut) else {
                    continue;
                };
                for hf in http {
                    let root = hf.pointer("/typed_config/config/root_id").and_then(Value::as_str);
                    if hf["name"] == WASM_FILTER && matches!(root, Some("semgate") | Some("")) {
                        out.push(&mut hf["typed_config"]["config"]);
                    }
                }
            }
        }
    }
    out
}

/// Every route config inside the listeners' HTTP connection managers.
fn route_configs_mut(envoy: &mut Value) -> Vec<&mut Value> {
    let mut out = Vec::new();
    let Some(listeners) = envoy.pointer_mut("/static_resources/listeners").and_then(Value::as_array_mut) else {
        return out;
    };
    for l in listeners {
        let Some(chains) = l.get_mut("filter_chains").and_then(Value::as_array_mut) else { continue };
        for fc in chains {
            let Some(filters) = fc.get_mut("filters").and_then(Value::as_array_mut) else { continue };
            for f in filters {
                if let Some(rc) = f.pointer_mut("/typed_config/route_config") {
                    out.push(rc);
                }
            }
        }
    }
    out
}

fn routes_by_header(route_config: &Value) -> impl Iterator<Item = (&Value, &Value)> {
    route_config
        .get("virtual_hosts")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .flat_map(|vh| vh.get("routes").and_then(Value::as_array).into_iter().flatten().map(move |r| (vh, r)))
        .filter(|(_, r)| r.pointer("/route/cluster_header").and_then(Value::as_str) == Some(CLUSTER_HEADER))
}

/// Puts the pieces into a whole Envoy config: clusters replaced by name or added, the retry
/// policy on every route that routes by [`CLUSTER_HEADER`] (its virtual host then sends
/// Envoy's attempt count upstream), listener buffer limits raised. Returns what it changed.
pub fn merge_into(envoy: &mut Value, gen: &Generated) -> Vec<String> {
    let mut notes = Vec::new();
    if !envoy.get("static_resources").is_some_and(Value::is_object) {
        envoy["static_resources"] = json!({});
    }
    let resources = &mut envoy["static_resources"];
    if !resources.get("clusters").is_some_and(Value::is_array) {
        resources["clusters"] = json!([]);
    }
    if let Some(clusters) = resources["clusters"].as_array_mut() {
        // A chain the configuration no longer has: its aggregate cluster goes too.
        let wanted: Vec<&str> = gen.clusters.iter().filter_map(|c| c["name"].as_str()).collect();
        clusters.retain(|c| {
            let name = c["name"].as_str().unwrap_or_default();
            let stale = c.pointer("/cluster_type/name").and_then(Value::as_str) == Some(AGGREGATE)
                && name.starts_with("chain_")
                && !wanted.contains(&name);
            if stale {
                notes.push(format!("removed cluster {name} (no model routes to it)"));
            }
            !stale
        });
        for c in &gen.clusters {
            let name = c["name"].as_str().unwrap_or_default();
            match clusters.iter_mut().find(|x| x["name"].as_str() == Some(name)) {
                Some(existing) => {
                    *existing = c.clone();
                    notes.push(format!("replaced cluster {name}"));
                }
                None => {
                    clusters.push(c.clone());
                    notes.push(format!("added cluster {name}"));
                }
            }
        }
    }
    if let Some(listeners) = envoy.pointer_mut("/static_resources/listeners").and_then(Value::as_array_mut) {
        for l in listeners {
            let current = l.get("per_connection_buffer_limit_bytes").and_then(Value::as_u64).unwrap_or(0);
            if current < gen.buffer_limit {
                l["per_connection_buffer_limit_bytes"] = json!(gen.buffer_limit);
                notes.push(format!(
                    "raised per_connection_buffer_limit_bytes of listener {}",
                    l["name"].as_str().unwrap_or("(unnamed)")
                ));
            }
        }
    }
    for rc in route_configs_mut(envoy) {
        let Some(vhosts) = rc.get_mut("virtual_hosts").and_then(Value::as_array_mut) else { continue };
        for vh in vhosts {
            let Some(routes) = vh.get_mut("routes").and_then(Value::as_array_mut) else { continue };
            let Some(timeout) = routes
                .iter()
                .find(|r| r.pointer("/route/cluster_header").and_then(Value::as_str) == Some(CLUSTER_HEADER))
                .map(|r| r.pointer("/route/timeout").cloned().unwrap_or(json!("120s")))
            else {
                continue;
            };
            // Retries only for chains: a direct provider is never called twice for one answer.
            routes.retain(|r| !(r["name"] == CHAIN_ROUTE && matches_chain_header(r)));
            routes.insert(0, chain_route(&gen.retry_policy, timeout));
            notes.push(format!("set retry_policy on route {CHAIN_ROUTE} (x-semgate-cluster: chain_*)"));
            vh["include_request_attempt_count"] = json!(true);
        }
    }
    if !notes.iter().any(|n| n.starts_with("set retry_policy")) {
        notes.push(format!("no route routes by {CLUSTER_HEADER}: add the retry policy to the route by hand"));
    }
    // Prometheus labels for the counters per provider and model.
    let tags: Vec<Value> = STATS_TAGS.iter().map(|(name, regex)| json!({"tag_name": name, "regex": regex})).collect();
    if !envoy.get("stats_config").is_some_and(Value::is_object) {
        envoy["stats_config"] = json!({});
    }
    let stats = &mut envoy["stats_config"]["stats_tags"];
    if !stats.is_array() {
        *stats = json!([]);
    }
    if let Some(list) = stats.as_array_mut() {
        for t in tags {
            if !list.iter().any(|x| x["tag_name"] == t["tag_name"]) {
                notes.push(format!("added stats tag {}", t["tag_name"]));
                list.push(t);
            }
        }
    }
    let mut gateway_filters = 0;
    for cfg in downstream_filters_mut(envoy) {
        cfg["configuration"] = json!({
            "@type": "type.googleapis.com/google.protobuf.StringValue",
            "value": gen.configuration,
        });
        let env = &mut cfg["vm_config"]["environment_variables"]["host_env_keys"];
        if !env.is_array() {
            *env = json!([]);
        }
        if let Some(list) = env.as_array_mut() {
            for v in &gen.downstream_env {
                if !list.iter().any(|x| x.as_str() == Some(v)) {
                    list.push(json!(v));
                }
            }
        }
        gateway_filters += 1;
    }
    if gateway_filters == 0 {
        notes.push("no semgate filter (root_id: semgate) in a listener: add it with the same configuration".into());
    } else {
        notes.push(format!("set the configuration of {gateway_filters} gateway filter(s)"));
    }
    notes
}

/// One problem `check` found, with the line to fix when it could tell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub line: Option<usize>,
    pub message: String,
}

impl Finding {
    /// `file:line: message`, as compilers print it.
    pub fn render(&self, file: &str) -> String {
        match self.line {
            Some(l) => format!("{file}:{l}: {}", self.message),
            None => format!("{file}: {}", self.message),
        }
    }
}

/// The 1-based line that names `needle` as a whole word, preferring a `name` line.
pub fn line_of(text: &str, needle: &str) -> Option<usize> {
    let is_word = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.';
    let holds = |line: &str| {
        line.match_indices(needle).any(|(i, _)| {
            let before = line[..i].chars().next_back().is_none_or(|c| !is_word(c));
            let after = line[i + needle.len()..].chars().next().is_none_or(|c| !is_word(c));
            before && after
        })
    };
    let mut fallback = None;
    for (i, line) in text.lines().enumerate() {
        if holds(line) {
            if has_name_key(line) {
                return Some(i + 1);
            }
            fallback.get_or_insert(i + 1);
        }
    }
    fallback
}

/// The line sets a `name` key (YAML or JSON), not `cluster_name` or a value mentioning it.
fn has_name_key(line: &str) -> bool {
    line.match_indices("name").any(|(i, _)| {
        let before = line[..i].chars().next_back().is_none_or(|c| !(c.is_ascii_alphanumeric() || c == '_'));
        let rest = &line[i + 4..];
        before && (rest.starts_with(':') || rest.starts_with("\":"))
    })
}

fn clusters_of(envoy: &Value) -> Map<String, Value> {
    let mut out = Map::new();
    for c in envoy.pointer("/static_resources/clusters").and_then(Value::as_array).into_iter().flatten() {
        if let Some(name) = c.get("name").and_then(Value::as_str) {
            out.insert(name.to_string(), c.clone());
        }
    }
    out
}

/// What a hand-written Envoy config (`envoy`, parsed from `text`) misses for the chains of
/// `filter_config`. An empty list means it fits.
pub fn check(filter_config: &Value, envoy: &Value, text: &str) -> Result<Vec<Finding>, ConfigError> {
    let config = ProvidersConfig::from_filter_config(filter_config)?;
    let layout = config.chain_layout()?;
    let max_body = max_body_bytes(filter_config);
    let clusters = clusters_of(envoy);
    let envs = config.key_envs();
    let mut out = Vec::new();
    let clusters_line = text.lines().position(|l| l.trim_start().starts_with("clusters") || l.contains("\"clusters\""));
    let mut find = |line: Option<usize>, message: String| out.push(Finding { line, message });

    for chain in &layout.chains {
        let at = line_of(text, &chain.name);
        let expected = chain_members(&config, &chain.providers);
        let models: Vec<&str> =
            layout.model_cluster.iter().filter(|(_, c)| **c == chain.name).map(|(m, _)| m.as_str()).collect();
        let Some(c) = clusters.get(&chain.name) else {
            find(
                clusters_line.map(|l| l + 1),
                format!(
                    "cluster `{}` is missing: models {} route to it; it must be an `{AGGREGATE}` cluster over [{}]",
                    chain.name,
                    models.join(", "),
                    expected.join(", ")
                ),
            );
            continue;
        };
        if c.pointer("/cluster_type/name").and_then(Value::as_str) != Some(AGGREGATE) {
            find(at, format!("cluster `{}` must have `cluster_type.name: {AGGREGATE}`", chain.name));
        }
        let listed: Vec<&str> = c
            .pointer("/cluster_type/typed_config/clusters")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        if listed != expected {
            find(
                at,
                format!(
                    "cluster `{}` lists [{}]; the chain needs [{}] in this order",
                    chain.name,
                    listed.join(", "),
                    expected.join(", ")
                ),
            );
        }
        if c.get("lb_policy").and_then(Value::as_str) != Some("CLUSTER_PROVIDED") {
            find(at, format!("cluster `{}` needs `lb_policy: CLUSTER_PROVIDED`", chain.name));
        }
        check_upstream_filter(c, &chain.name, &config, &envs, text, at, &mut find);
        check_buffer_limit(c, &chain.name, max_body, at, &mut find);
    }

    for (name, p) in &config.providers {
        for (cluster, key) in p.key_clusters(name) {
            check_provider_cluster(
                &clusters,
                &cluster,
                name,
                key,
                &config,
                &envs,
                max_body,
                text,
                clusters_line,
                &mut find,
            );
        }
        if let Some(v) =
            p.vertex.as_ref().filter(|v| v.auth == crate::core::providers::config::VertexAuth::SidecarToken)
        {
            if !clusters.contains_key(v.token_cluster()) {
                find(
                    clusters_line.map(|l| l + 1),
                    format!(
                        "provider `{name}` fetches its Vertex tokens from cluster `{}`, which is missing (the sidecar's cluster; set `vertex.token_cluster`)",
                        v.token_cluster()
                    ),
                );
            }
        }
    }

    let listeners: Vec<&Value> =
        envoy.pointer("/static_resources/listeners").and_then(Value::as_array).into_iter().flatten().collect();
    for l in &listeners {
        let name = l.get("name").and_then(Value::as_str).unwrap_or("(unnamed)");
        let limit =
            l.get("per_connection_buffer_limit_bytes").and_then(Value::as_u64).unwrap_or(ENVOY_DEFAULT_BUFFER_LIMIT);
        if limit <= max_body {
            find(
                line_of(text, name),
                format!("listener `{name}`: `per_connection_buffer_limit_bytes` is {limit}, not above the filter's `max_body_bytes` {max_body}"),
            );
        }
    }

    let route_configs: Vec<&Value> = listeners
        .iter()
        .flat_map(|l| l.get("filter_chains").and_then(Value::as_array).into_iter().flatten())
        .flat_map(|fc| fc.get("filters").and_then(Value::as_array).into_iter().flatten())
        .filter_map(|f| f.pointer("/typed_config/route_config"))
        .collect();
    let routes: Vec<&Value> = route_configs.iter().flat_map(|rc| routes_by_header(rc).map(|(_, r)| r)).collect();
    if routes.is_empty() {
        find(line_of(text, "route_config"), format!("no route has `cluster_header: {CLUSTER_HEADER}`"));
    }
    let needed = envoy_attempts(&config).saturating_sub(1) as u64;
    // Routes that serve chains: the ones matching `x-semgate-cluster: chain_*` when the config
    // has such routes (direct providers then keep routes without retries), else all of them.
    let chain_routes: Vec<&Value> = routes.iter().copied().filter(|r| matches_chain_header(r)).collect();
    let routes = if chain_routes.is_empty() { routes } else { chain_routes };
    // Without a chain of several providers nothing is retried.
    let routes = if layout.chains.is_empty() { Vec::new() } else { routes };
    for r in routes {
        let name = r.get("name").and_then(Value::as_str).unwrap_or("(unnamed)");
        let at = r
            .get("name")
            .and_then(Value::as_str)
            .and_then(|n| line_of(text, n))
            .or_else(|| line_of(text, CLUSTER_HEADER));
        let policy = r.pointer("/route/retry_policy");
        let Some(policy) = policy else {
            find(at, format!("route `{name}` has no `retry_policy`: no request falls back to the next provider"));
            continue;
        };
        if policy.pointer("/retry_priority/name").and_then(Value::as_str) != Some(PREVIOUS_PRIORITIES) {
            find(at, format!("route `{name}`: `retry_policy.retry_priority` must be `{PREVIOUS_PRIORITIES}` (else a retry may pick the same provider)"));
        } else if policy.pointer("/retry_priority/typed_config/update_frequency").and_then(Value::as_u64)
            != Some(UPDATE_FREQUENCY)
        {
            find(at, format!("route `{name}`: `retry_priority.typed_config.update_frequency` must be {UPDATE_FREQUENCY} (each retry goes to the next key or provider)"));
        }
        // Envoy retries once when a retry policy sets no `num_retries`.
        let retries = policy.get("num_retries").and_then(Value::as_u64).unwrap_or(1);
        if retries < needed {
            find(at, format!("route `{name}`: `num_retries` is {retries}; the longest chain needs {needed}"));
        }
    }
    Ok(out)
}

/// The name of the route that carries the chains' retries.
pub const CHAIN_ROUTE: &str = "chain";

/// The route for chain clusters: the filter sets `x-semgate-cluster: chain_*` and Envoy picks
/// the route again, so only chains get the retry policy.
pub fn chain_route(retry_policy: &Value, timeout: Value) -> Value {
    json!({
        "name": CHAIN_ROUTE,
        "match": {"prefix": "/", "headers": [{"name": CLUSTER_HEADER, "string_match": {"prefix": "chain_"}}]},
        "route": {"cluster_header": CLUSTER_HEADER, "timeout": timeout, "retry_policy": retry_policy},
        "request_headers_to_remove": [CLUSTER_HEADER],
    })
}

/// A route that matches requests whose `x-semgate-cluster` names a chain (`chain_` prefix).
fn matches_chain_header(r: &Value) -> bool {
    r.pointer("/match/headers").and_then(Value::as_array).is_some_and(|hs| {
        hs.iter().any(|h| {
            h.get("name").and_then(Value::as_str) == Some(CLUSTER_HEADER)
                && h.pointer("/string_match/prefix").and_then(Value::as_str) == Some("chain_")
        })
    })
}

/// One key cluster of a provider: present, its endpoints naming the provider and the key,
/// outlier detection, the upstream role, buffer limits.
#[allow(clippy::too_many_arguments)]
fn check_provider_cluster(
    clusters: &Map<String, Value>,
    cluster: &str,
    name: &str,
    key: Option<&str>,
    config: &ProvidersConfig,
    envs: &[String],
    max_body: u64,
    text: &str,
    clusters_line: Option<usize>,
    find: &mut impl FnMut(Option<usize>, String),
) {
    let at = line_of(text, cluster);
    let Some(c) = clusters.get(cluster) else {
        let what = key.map(|k| format!(" for key `{k}`")).unwrap_or_default();
        return find(
            clusters_line.map(|l| l + 1),
            format!("cluster `{cluster}` of provider `{name}`{what} is missing"),
        );
    };
    let endpoints: Vec<&Value> = c
        .pointer("/load_assignment/endpoints")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .flat_map(|e| e.get("lb_endpoints").and_then(Value::as_array).into_iter().flatten())
        .collect();
    if endpoints.is_empty() {
        find(at, format!("cluster `{cluster}` has no `load_assignment` endpoints"));
    }
    for e in endpoints {
        let meta = e.pointer("/metadata/filter_metadata/semgate");
        let got = meta.and_then(|m| m.get("provider")).and_then(Value::as_str);
        let got_key = meta.and_then(|m| m.get("key")).and_then(Value::as_str);
        if got != Some(name) || got_key != key {
            let want = match key {
                Some(k) => format!("{{provider: {name}, key: {k}}}"),
                None => format!("{{provider: {name}}}"),
            };
            find(
                at,
                format!(
                    "cluster `{cluster}`: every endpoint needs `metadata: {{filter_metadata: {{semgate: {want}}}}}` (found {})",
                    meta.map(|m| m.to_string()).unwrap_or_else(|| "none".into())
                ),
            );
            break;
        }
    }
    if c.get("outlier_detection").is_none() {
        find(at, format!("cluster `{cluster}` has no `outlier_detection`: a failing provider is never skipped"));
    }
    check_upstream_filter(c, cluster, config, envs, text, at, find);
    check_buffer_limit(c, cluster, max_body, at, find);
}

/// The upstream role on a cluster: present before the codec, reading the keys' variables, with
/// the same `providers`, `models` and `fallback` as the filter configuration.
fn check_upstream_filter(
    c: &Value,
    cluster: &str,
    config: &ProvidersConfig,
    envs: &[String],
    text: &str,
    at: Option<usize>,
    find: &mut impl FnMut(Option<usize>, String),
) {
    let filters: Vec<&Value> = c
        .pointer(&format!("/typed_extension_protocol_options/{}/http_filters", HTTP_OPTIONS.replace('/', "~1")))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .collect();
    let name_of = |f: &Value| f.get("name").and_then(Value::as_str).unwrap_or_default().to_string();
    let wasm = filters.iter().position(|f| {
        name_of(f) == WASM_FILTER && f.pointer("/typed_config/config/root_id").and_then(Value::as_str) == Some(ROOT_ID)
    });
    let codec = filters.iter().position(|f| name_of(f) == UPSTREAM_CODEC);
    let w = match (wasm, codec) {
        (None, _) => {
            return find(
                at,
                format!(
                    "cluster `{cluster}` has no upstream `{WASM_FILTER}` with `root_id: {ROOT_ID}` in `typed_extension_protocol_options.{HTTP_OPTIONS}.http_filters` (it sets the provider's path and key)"
                ),
            )
        }
        (Some(_), None) => {
            return find(at, format!("cluster `{cluster}`'s upstream filters must end with `{UPSTREAM_CODEC}`"))
        }
        (Some(w), Some(k)) if w > k => {
            return find(at, format!("cluster `{cluster}`: the Wasm filter must come before `{UPSTREAM_CODEC}`"))
        }
        (Some(w), Some(_)) => w,
    };
    let cfg = &filters[w]["typed_config"]["config"];
    if cfg.get("allow_on_headers_stop_iteration").and_then(Value::as_bool) != Some(true) {
        find(
            line_of(text, "allow_on_headers_stop_iteration").or(at),
            format!("cluster `{cluster}`: the upstream Wasm filter needs `allow_on_headers_stop_iteration: true` (it reads the body before the request goes)"),
        );
    }
    let got: Vec<&str> = cfg
        .pointer("/vm_config/environment_variables/host_env_keys")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    for env in envs {
        if !got.contains(&env.as_str()) {
            find(at, format!("cluster `{cluster}`: the upstream Wasm VM does not get `{env}` (add it to `vm_config.environment_variables.host_env_keys`)"));
        }
    }
    let theirs = cfg
        .pointer("/configuration/value")
        .and_then(Value::as_str)
        .and_then(|v| serde_json::from_str::<Value>(v).ok())
        .map(|v| ProvidersConfig::from_filter_config(&v));
    match theirs {
        Some(Ok(theirs)) => {
            let mine = serde_json::to_value(config).unwrap_or_default();
            let theirs = serde_json::to_value(&theirs).unwrap_or_default();
            for section in ["providers", "models", "fallback"] {
                if mine.get(section) != theirs.get(section) {
                    find(at, format!("cluster `{cluster}`: the upstream filter's `{section}` differ from the filter configuration's (give both roles the same configuration)"));
                }
            }
        }
        Some(Err(e)) => find(at, format!("cluster `{cluster}`: the upstream filter's configuration is refused: {e}")),
        None => find(at, format!("cluster `{cluster}`: the upstream filter has no JSON `configuration.value`")),
    }
}

fn check_buffer_limit(
    c: &Value,
    name: &str,
    max_body: u64,
    at: Option<usize>,
    find: &mut impl FnMut(Option<usize>, String),
) {
    let limit =
        c.get("per_connection_buffer_limit_bytes").and_then(Value::as_u64).unwrap_or(ENVOY_DEFAULT_BUFFER_LIMIT);
    if limit <= max_body {
        find(at, format!("cluster `{name}`: `per_connection_buffer_limit_bytes` is {limit}, not above the filter's `max_body_bytes` {max_body}"));
    }
}

#[cfg(test)]
#[path = "tests/envoy_gen_tests.rs"]
mod tests;
