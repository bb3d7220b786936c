//! Prometheus metrics through Envoy stats (`define_metric`), visible at `/stats/prometheus`
//! under their own names (Envoy's `wasmcustom` namespace adds no `envoy_` prefix).

use proxy_wasm::hostcalls;
use proxy_wasm::types::MetricType;

/// Metric ids of one VM; every worker defines the same names, so Envoy shares the stat.
#[derive(Debug, Default, Clone)]
pub struct Metrics {
    pub requests: u32,
    pub rejected: u32,
    pub hits_exact: u32,
    /// Exact hits served by the fast path for byte-identical requests (a subset of hits_exact).
    pub hits_fast: u32,
    pub fast_records: u32,
    pub misses: u32,
    pub bypasses: u32,
    pub expired: u32,
    pub stores: u32,
    pub store_failures: u32,
    pub not_stored: u32,
    pub evictions: u32,
    pub too_large: u32,
    pub bytes: u32,
    pub host_errors: u32,
    pub hits_semantic: u32,
    pub hits_shared: u32,
    pub semantic_misses: u32,
    pub sidecar_errors: u32,
    pub semantic_stores: u32,
    /// Sidecar hits not replayed: their content type is not one the gateway produces.
    pub unsafe_entries: u32,
    /// Requests relayed on a `passthrough` path.
    pub relayed: u32,
    /// Histogram: time from sending a sidecar lookup to its answer (or timeout), in ms.
    pub lookup_ms: u32,
}

impl Metrics {
    pub fn define() -> Result<Metrics, String> {
        let c = |name: &str| {
            hostcalls::define_metric(MetricType::Counter, name).map_err(|s| format!("define_metric {name}: {s:?}"))
        };
        Ok(Metrics {
            requests: c("semgate_requests_total")?,
            rejected: c("semgate_rejected_total")?,
            hits_exact: c("semgate_cache_hits_exact_total")?,
            hits_fast: c("semgate_cache_hits_fast_total")?,
            fast_records: c("semgate_cache_fast_records_total")?,
            misses: c("semgate_cache_misses_total")?,
            bypasses: c("semgate_cache_bypasses_total")?,
            expired: c("semgate_cache_expired_total")?,
            stores: c("semgate_cache_stores_total")?,
            store_failures: c("semgate_cache_store_failures_total")?,
            not_stored: c("semgate_cache_not_stored_total")?,
            evictions: c("semgate_cache_evictions_total")?,
            too_large: c("semgate_cache_entries_too_large_total")?,
            bytes: hostcalls::define_metric(MetricType::Gauge, "semgate_cache_bytes")
                .map_err(|s| format!("define_metric semgate_cache_bytes: {s:?}"))?,
            host_errors: c("semgate_host_errors_total")?,
            hits_semantic: c("semgate_cache_hits_semantic_total")?,
            hits_shared: c("semgate_cache_hits_shared_total")?,
            semantic_misses: c("semgate_cache_semantic_misses_total")?,
            sidecar_errors: c("semgate_sidecar_errors_total")?,
            semantic_stores: c("semgate_cache_semantic_stores_total")?,
            unsafe_entries: c("semgate_sidecar_unsafe_entries_total")?,
            relayed: c("semgate_relayed_total")?,
            lookup_ms: hostcalls::define_metric(MetricType::Histogram, "semgate_sidecar_lookup_ms")
                .map_err(|s| format!("define_metric semgate_sidecar_lookup_ms: {s:?}"))?,
        })
    }

    pub fn inc(&self, id: u32) {
        self.add(id, 1);
    }

    pub fn add(&self, id: u32, n: u64) {
        if n > 0 {
            let _ = hostcalls::increment_metric(id, n as i64);
        }
    }

    /// Set a gauge, or record one value of a histogram.
    pub fn set(&self, id: u32, value: u64) {
        let _ = hostcalls::record_metric(id, value);
    }
}
