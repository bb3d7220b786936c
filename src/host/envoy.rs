//! The module as Envoy sees it: the `Host` trait over the raw ABI, and one proxy-wasm root
//! context per role, chosen by the plugin's `root_id`. The downstream root compiles the
//! configuration once at `on_configure` (a bad config makes it fail, so Envoy refuses the
//! filter instead of serving half-configured), defines the metrics and lays out the cache;
//! the upstream root compiles the provider table.

use crate::core::downstream::init_store;
use crate::core::gateway::Gateway;
use crate::core::providers::config::{ProviderTable, ProvidersConfig};
use crate::core::tally::{Counter, Gauge, LogLevel, ModelCounter};
use crate::core::wire::headermap::HeaderMap;
use crate::host::callouts::Callouts;
use crate::host::downstream::DownstreamHttp;
use crate::host::metrics::Metrics;
use crate::host::shared::EnvoySharedData;
use crate::host::upstream::UpstreamHttp;
use crate::host::{abi, Buffer, Flow, Host, HostError, HostTally, Map, Role};
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType};
use std::rc::Rc;

proxy_wasm::main! {{
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { root_for_plugin() });
}}

/// The root context of this plugin's role. The root id is read when the root is created; a
/// host that does not tell it gets the downstream role (the one the shipped configs use).
fn root_for_plugin() -> Box<dyn RootContext> {
    let root_id = abi::get_property(&["plugin_root_id"]).and_then(|v| String::from_utf8(v).ok()).unwrap_or_default();
    match Role::for_root_id(&root_id) {
        Some(Role::Downstream) => Box::new(DownstreamRoot::default()),
        Some(Role::Upstream) => Box::new(UpstreamRoot::default()),
        None => Box::new(UnknownRole(root_id)),
    }
}

/// The `Host` of a context in Envoy.
#[derive(Clone, Default)]
pub struct EnvoyHost {
    metrics: Rc<Metrics>,
}

impl Host for EnvoyHost {
    type Shared = EnvoySharedData;

    fn shared_data(&self) -> &EnvoySharedData {
        &EnvoySharedData
    }
    fn headers(&self, map: Map) -> HeaderMap {
        abi::get_headers(map)
    }
    fn set_header(&self, map: Map, name: &str, value: &str) -> Result<(), HostError> {
        abi::set_header(map, name, value)
    }
    fn remove_header(&self, map: Map, name: &str) -> Result<(), HostError> {
        abi::remove_header(map, name)
    }
    fn buffer(&self, buffer: Buffer, start: usize, max: usize) -> Result<Vec<u8>, HostError> {
        abi::get_buffer(buffer, start, max)
    }
    fn replace_buffer(&self, buffer: Buffer, start: usize, len: usize, data: &[u8]) -> Result<(), HostError> {
        abi::set_buffer(buffer, start, len, data)
    }
    fn send_local_reply(&self, status: u16, headers: &[(&str, &str)], body: &[u8]) -> Result<(), HostError> {
        abi::send_local_response(status, headers, body)
    }
    fn dispatch(
        &self,
        cluster: &str,
        headers: &[(&str, &str)],
        body: &[u8],
        timeout_ms: u64,
    ) -> Result<u32, HostError> {
        abi::http_call(cluster, headers, body, timeout_ms)
    }
    fn resume_request(&self) -> Result<(), HostError> {
        abi::resume_request()
    }
    fn property(&self, path: &[&str]) -> Option<Vec<u8>> {
        abi::get_property(path)
    }
    fn set_property(&self, name: &str, value: &str) -> Result<(), HostError> {
        proxy_wasm::hostcalls::set_property(vec![name], Some(value.as_bytes())).map_err(|s| HostError(s as u32))
    }
    fn now_ms(&self) -> u64 {
        abi::now_ms()
    }
    fn log(&self, level: LogLevel, msg: &str) {
        abi::log(level, msg)
    }
    fn count(&self, c: Counter, n: u64) {
        self.metrics.add(c, n)
    }
    fn count_named(&self, name: &str, n: u64) {
        self.metrics.add_named(name, n)
    }
    fn count_model(&self, c: ModelCounter, provider: Option<&str>, model: &str, n: u64) {
        self.metrics.add_labeled(&c.stat_name(provider, model), n)
    }
    fn gauge(&self, g: Gauge, v: u64) {
        self.metrics.set(g, v)
    }
}

/// Root callouts: a ledger sync, by its id.
#[derive(Debug)]
enum RootCallout {
    LedgerSync(String),
}

/// The downstream role's root context.
#[derive(Default)]
struct DownstreamRoot {
    gw: Option<Rc<Gateway>>,
    host: EnvoyHost,
    callouts: Callouts<RootCallout>,
}

impl Context for DownstreamRoot {
    fn on_http_call_response(&mut self, token_id: u32, _: usize, body_size: usize, _: usize) {
        let Some(RootCallout::LedgerSync(sync_id)) = self.callouts.answer(&self.host, token_id) else { return };
        let headers = self.host.headers(Map::CallResponse);
        let status = headers.get(":status");
        let body = self.host.buffer(Buffer::CallResponseBody, 0, body_size).ok();
        let kv = self.host.shared_data();
        crate::core::downstream::on_ledger_answer(kv, &sync_id, status, body.as_deref(), &mut HostTally(&self.host));
    }
}

impl RootContext for DownstreamRoot {
    fn on_configure(&mut self, _size: usize) -> bool {
        match load() {
            Ok((gw, host)) => {
                abi::log(
                    LogLevel::Info,
                    &format!(
                        "semgate: configured: {} provider(s), cache {} ({} slots, {} bytes max; fast path {} records of <= {} bytes)",
                        gw.config.providers.len(),
                        if gw.config.cache.enabled { "on" } else { "off" },
                        gw.limits.slots,
                        gw.limits.max_bytes,
                        gw.fast.slots,
                        gw.fast.max_record_bytes
                    ),
                );
                if let Some(_cluster) = &gw.config.ledger.cluster {
                    let every = std::time::Duration::from_millis(gw.config.ledger.sync_interval_ms);
                    if proxy_wasm::hostcalls::set_tick_period(every).is_err() {
                        abi::log(LogLevel::Critical, "semgate: cannot start the ledger sync timer");
                        return false;
                    }
                }
                self.gw = Some(Rc::new(gw));
                self.host = host;
                true
            }
            Err(msg) => {
                abi::log(LogLevel::Critical, &format!("semgate: refusing to start: {msg}"));
                false
            }
        }
    }

    fn on_tick(&mut self) {
        // One sync in flight per worker; an unanswered one is resent by the next tick.
        if self.callouts.in_flight() > 0 {
            return;
        }
        let Some(gw) = self.gw.clone() else { return };
        let Some((call, sync_id)) = crate::core::downstream::ledger_sync(&gw, self.host.shared_data()) else { return };
        if self.callouts.send(&self.host, &call, RootCallout::LedgerSync(sync_id)).is_err() {
            self.host.count(Counter::LedgerErrors, 1);
        }
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(DownstreamContext(DownstreamHttp::new(self.host.clone(), self.gw.clone()))))
    }
}

/// Compile the configuration, define the metrics and lay out the cache: once per VM.
fn load() -> Result<(Gateway, EnvoyHost), String> {
    let raw = abi::get_buffer(Buffer::PluginConfiguration, 0, usize::MAX)
        .map_err(|e| format!("cannot read the plugin configuration (status {})", e.0))?;
    let mut gw = Gateway::load(&raw, |var| std::env::var(var).ok()).map_err(|e| e.to_string())?;
    let host = EnvoyHost { metrics: Rc::new(Metrics::define()?) };
    // One name for the process's life, shared by its workers (the first one's start time).
    let nanos = proxy_wasm::hostcalls::get_current_time()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos());
    let epoch = crate::core::downstream::process_epoch(host.shared_data(), None, &format!("{nanos:x}"));
    if gw.replica.is_empty() {
        gw.replica = format!("envoy-{epoch}");
    }
    gw.epoch = epoch;
    let bytes = init_store(&gw, host.shared_data())?;
    host.gauge(Gauge::CacheBytes, bytes);
    Ok((gw, host))
}

/// The upstream role's root context: compiles the provider table (keys from the VM's
/// environment) once, at `on_configure`; with a `sidecar_token` Vertex provider, fetches its
/// access token from the sidecar on a timer into shared data.
#[derive(Default)]
struct UpstreamRoot {
    table: Option<Rc<ProviderTable>>,
    host: EnvoyHost,
    /// Token fetches in flight, by provider name.
    callouts: Callouts<String>,
}

/// How often the upstream root checks whether a Vertex token is due (a check is one shared
/// data read; a fetch happens only when due).
const TOKEN_CHECK_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

impl Context for UpstreamRoot {
    fn on_http_call_response(&mut self, token_id: u32, _: usize, body_size: usize, _: usize) {
        let Some(provider) = self.callouts.answer(&self.host, token_id) else { return };
        let headers = self.host.headers(Map::CallResponse);
        let body = self.host.buffer(Buffer::CallResponseBody, 0, body_size).ok();
        let kv = self.host.shared_data();
        let now = self.host.now_ms();
        if crate::core::upstream::on_vertex_token_answer(kv, &provider, headers.get(":status"), body.as_deref(), now) {
            self.host.count(Counter::VertexTokens, 1);
        } else {
            self.host.count(Counter::VertexTokenErrors, 1);
            abi::log(
                LogLevel::Warn,
                &format!(
                    "semgate upstream: no Vertex token for `{provider}` from the sidecar (status {}); retrying",
                    headers.get(":status").unwrap_or("none")
                ),
            );
        }
    }
}

impl RootContext for UpstreamRoot {
    fn on_configure(&mut self, _size: usize) -> bool {
        let loaded = abi::get_buffer(Buffer::PluginConfiguration, 0, usize::MAX)
            .map_err(|e| format!("cannot read the plugin configuration (status {})", e.0))
            .and_then(|raw| {
                // The same configuration as the gateway's: only `providers`, `models` and
                // `fallback` are read here.
                let value: serde_json::Value =
                    serde_json::from_slice(&raw).map_err(|e| format!("semgate config: not JSON: {e}"))?;
                ProvidersConfig::from_filter_config(&value).map_err(|e| e.to_string())
            })
            .and_then(|c| c.compile(&|var| std::env::var(var).ok()).map_err(|e| e.to_string()))
            .and_then(|table| Ok((table, EnvoyHost { metrics: Rc::new(Metrics::define()?) })));
        match loaded {
            Ok((table, host)) => {
                abi::log(LogLevel::Info, "semgate upstream: configured");
                if crate::core::upstream::fetches_vertex_tokens(&table)
                    && proxy_wasm::hostcalls::set_tick_period(TOKEN_CHECK_EVERY).is_err()
                {
                    abi::log(LogLevel::Critical, "semgate upstream: cannot start the Vertex token timer");
                    return false;
                }
                self.table = Some(Rc::new(table));
                self.host = host;
                true
            }
            Err(msg) => {
                abi::log(LogLevel::Critical, &format!("semgate upstream: refusing to start: {msg}"));
                false
            }
        }
    }

    fn on_tick(&mut self) {
        let Some(table) = self.table.clone() else { return };
        if self.callouts.in_flight() > 0 {
            return;
        }
        let now = self.host.now_ms();
        for (call, provider) in crate::core::upstream::vertex_token_fetches(&table, self.host.shared_data(), now) {
            if self.callouts.send(&self.host, &call, provider).is_err() {
                self.host.count(Counter::VertexTokenErrors, 1);
            }
        }
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(UpstreamContext(UpstreamHttp::new(self.host.clone(), self.table.clone()))))
    }
}

struct UpstreamContext(UpstreamHttp<EnvoyHost>);

impl Context for UpstreamContext {}

impl HttpContext for UpstreamContext {
    fn on_http_request_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        action(self.0.on_request_headers(end_of_stream))
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        action(self.0.on_request_body(body_size, end_of_stream))
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        action(self.0.on_response_headers(end_of_stream))
    }

    fn on_http_response_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        action(self.0.on_response_body(body_size, end_of_stream))
    }
}

/// A plugin whose `root_id` names no role: refuses to configure, so Envoy says why.
struct UnknownRole(String);

impl Context for UnknownRole {}

impl RootContext for UnknownRole {
    fn on_configure(&mut self, _size: usize) -> bool {
        abi::log(
            LogLevel::Critical,
            &format!("semgate: no role for root_id `{}` (the gateway filter is `semgate`)", self.0),
        );
        false
    }
}

fn action(flow: Flow) -> Action {
    match flow {
        Flow::Continue => Action::Continue,
        Flow::Pause => Action::Pause,
    }
}

struct DownstreamContext(DownstreamHttp<EnvoyHost>);

impl Context for DownstreamContext {
    fn on_http_call_response(&mut self, token_id: u32, _num_headers: usize, body_size: usize, _num_trailers: usize) {
        self.0.on_callout_answer(token_id, body_size);
    }
}

impl HttpContext for DownstreamContext {
    fn on_http_request_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        action(self.0.on_request_headers(end_of_stream))
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        action(self.0.on_request_body(body_size, end_of_stream))
    }

    fn on_http_request_trailers(&mut self, _num_trailers: usize) -> Action {
        action(self.0.on_request_trailers())
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        action(self.0.on_response_headers(end_of_stream))
    }

    fn on_http_response_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        action(self.0.on_response_body(body_size, end_of_stream))
    }

    fn on_log(&mut self) {
        self.0.on_done();
    }
}
