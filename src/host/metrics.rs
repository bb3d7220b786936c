//! Prometheus metrics through Envoy stats (`define_metric`), visible at `/stats/prometheus`
//! under their own names (Envoy's `wasmcustom` namespace adds no `envoy_` prefix). Names come
//! from `core::tally`; every worker defines the same names, so Envoy shares the stat.

use crate::core::tally::{Counter, Gauge};
use proxy_wasm::hostcalls;
use proxy_wasm::types::MetricType;

/// Metric ids of one VM, indexed by `Counter` and `Gauge`; counters per provider and model are
/// defined on first use (their names come from the configuration, so they are bounded).
#[derive(Debug, Default, Clone)]
pub struct Metrics {
    counters: Vec<u32>,
    gauges: Vec<u32>,
    /// Counters named at run time (per key, team and customer), by name.
    named: std::cell::RefCell<std::collections::HashMap<String, u32>>,
}

impl Metrics {
    pub fn define() -> Result<Metrics, String> {
        let define =
            |kind, name: &str| hostcalls::define_metric(kind, name).map_err(|s| format!("define_metric {name}: {s:?}"));
        let counters = Counter::ALL.iter().map(|c| define(MetricType::Counter, c.name())).collect::<Result<_, _>>()?;
        let gauges = vec![
            define(MetricType::Gauge, Gauge::CacheBytes.name())?,
            define(MetricType::Histogram, Gauge::LookupMs.name())?,
        ];
        Ok(Metrics { counters, gauges, named: Default::default() })
    }

    /// Add to a counter whose name carries its labels (`ModelCounter::stat_name`).
    pub fn add_labeled(&self, name: &str, n: u64) {
        self.add_named(name, n)
    }

    pub fn add(&self, c: Counter, n: u64) {
        if let (Some(&id), true) = (self.counters.get(c as usize), n > 0) {
            let _ = hostcalls::increment_metric(id, n as i64);
        }
    }

    /// Add to a counter named at run time, defining it on first use (its label values are
    /// bounded by the caller).
    pub fn add_named(&self, name: &str, n: u64) {
        if n == 0 {
            return;
        }
        let known = self.named.borrow().get(name).copied();
        let id = match known {
            Some(id) => id,
            None => match hostcalls::define_metric(MetricType::Counter, name) {
                Ok(id) => {
                    self.named.borrow_mut().insert(name.to_string(), id);
                    id
                }
                Err(_) => return,
            },
        };
        let _ = hostcalls::increment_metric(id, n as i64);
    }

    /// Set a gauge, or record one value of a histogram.
    pub fn set(&self, g: Gauge, value: u64) {
        if let Some(&id) = self.gauges.get(g as usize) {
            let _ = hostcalls::record_metric(id, value);
        }
    }
}
