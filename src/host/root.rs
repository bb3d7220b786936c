//! The root context: parses and validates the configuration once per VM at load (a bad
//! config makes `on_configure` fail, so Envoy refuses the filter instead of serving
//! half-configured), resolves provider keys, defines metrics and lays out the cache slots.

use crate::core::cache::fastpath::{self, FastPathLimits};
use crate::core::cache::store::{CacheStore, StoreLimits};
use crate::core::config::Config;
use crate::core::gateway::Gateway;
use crate::host::abi::{self, Buffer, Level};
use crate::host::http::GatewayHttp;
use crate::host::metrics::Metrics;
use crate::host::shared::EnvoySharedData;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::ContextType;
use std::rc::Rc;

/// Everything an HTTP context needs, built once at configure time.
pub struct Runtime {
    pub gw: Gateway,
    pub metrics: Metrics,
    pub limits: StoreLimits,
    pub fast: FastPathLimits,
    /// Some policy matches on the Envoy route name, so the filter must read it.
    pub needs_route_name: bool,
}

#[derive(Default)]
pub struct GatewayRoot {
    runtime: Option<Rc<Runtime>>,
}

impl Context for GatewayRoot {}

impl RootContext for GatewayRoot {
    fn on_configure(&mut self, _size: usize) -> bool {
        match load() {
            Ok(rt) => {
                abi::log(
                    Level::Info,
                    &format!(
                        "semgate: configured: {} provider(s), cache {} ({} slots, {} bytes max; fast path {} records of <= {} bytes)",
                        rt.gw.config.providers.len(),
                        if rt.gw.config.cache.enabled { "on" } else { "off" },
                        rt.limits.slots,
                        rt.limits.max_bytes,
                        rt.fast.slots,
                        rt.fast.max_record_bytes
                    ),
                );
                self.runtime = Some(Rc::new(rt));
                true
            }
            Err(msg) => {
                abi::log(Level::Critical, &format!("semgate: refusing to start: {msg}"));
                false
            }
        }
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(GatewayHttp::new(self.runtime.clone())))
    }
}

fn load() -> Result<Runtime, String> {
    let raw = abi::get_buffer(Buffer::PluginConfiguration, 0, usize::MAX)
        .map_err(|e| format!("cannot read the plugin configuration (status {})", e.0))?;
    let config = Config::parse(&raw).map_err(|e| e.to_string())?;
    let gw = Gateway::compile(config, |var| std::env::var(var).ok()).map_err(|e| e.to_string())?;
    let config = &gw.config;
    let metrics = Metrics::define()?;
    let limits = StoreLimits {
        max_bytes: config.cache.max_bytes,
        max_entry_bytes: config.cache.max_entry_bytes,
        slots: config.cache.slot_count(),
        ways: config.cache.ways,
    };
    let store = CacheStore::new(&EnvoySharedData, limits);
    store.init().map_err(|e| format!("cannot lay out the cache in shared data: {e}"))?;
    metrics.set(metrics.bytes, store.bytes_in_cache());
    let fast = FastPathLimits {
        slots: config.cache.fast_path_slots(),
        max_record_bytes: config.cache.fast_path.max_record_bytes,
        seed: fastpath::seed_for(&raw),
    };
    let needs_route_name = config.policies.iter().any(|p| p.matcher.route.is_some());
    Ok(Runtime { gw, metrics, limits, fast, needs_route_name })
}
