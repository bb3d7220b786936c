//! What the request path counts and logs, named in the gateway's language: the core reports
//! into a `Tally`, the host maps each counter to its Envoy metric (and tests just record).

/// Every counter the filter moves; the host defines one Envoy metric per variant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Counter {
    Requests,
    Rejected,
    HitsExact,
    /// Exact hits served by the fast path for byte-identical requests (a subset of HitsExact).
    HitsFast,
    FastRecords,
    Misses,
    Bypasses,
    Expired,
    Stores,
    StoreFailures,
    NotStored,
    Evictions,
    TooLarge,
    HostErrors,
    HitsSemantic,
    HitsShared,
    SemanticMisses,
    SidecarErrors,
    SemanticStores,
    /// Sidecar hits not replayed: their content type is not one the gateway produces.
    UnsafeEntries,
    /// Requests relayed on a `passthrough` path.
    Relayed,
    /// Chain requests whose every attempt failed (answered with one 502 naming them).
    ChainFailures,
    /// Callout answers whose token names no callout in flight (late, or never ours).
    UnknownCallouts,
    /// Ledger syncs answered, and those that failed (kept and resent).
    LedgerSyncs,
    LedgerErrors,
    /// Micro-dollars charged to virtual keys, and saved for them by cache hits.
    SpendMicros,
    SavedMicros,
    /// Vertex access tokens fetched from the sidecar, and fetches that failed.
    VertexTokens,
    VertexTokenErrors,
}

impl Counter {
    pub const ALL: [Counter; 29] = [
        Counter::Requests,
        Counter::Rejected,
        Counter::HitsExact,
        Counter::HitsFast,
        Counter::FastRecords,
        Counter::Misses,
        Counter::Bypasses,
        Counter::Expired,
        Counter::Stores,
        Counter::StoreFailures,
        Counter::NotStored,
        Counter::Evictions,
        Counter::TooLarge,
        Counter::HostErrors,
        Counter::HitsSemantic,
        Counter::HitsShared,
        Counter::SemanticMisses,
        Counter::SidecarErrors,
        Counter::SemanticStores,
        Counter::UnsafeEntries,
        Counter::Relayed,
        Counter::ChainFailures,
        Counter::UnknownCallouts,
        Counter::LedgerSyncs,
        Counter::LedgerErrors,
        Counter::SpendMicros,
        Counter::SavedMicros,
        Counter::VertexTokens,
        Counter::VertexTokenErrors,
    ];

    /// The Prometheus name (Envoy's `wasmcustom` namespace adds no prefix).
    pub fn name(self) -> &'static str {
        match self {
            Counter::Requests => "semgate_requests_total",
            Counter::Rejected => "semgate_rejected_total",
            Counter::HitsExact => "semgate_cache_hits_exact_total",
            Counter::HitsFast => "semgate_cache_hits_fast_total",
            Counter::FastRecords => "semgate_cache_fast_records_total",
            Counter::Misses => "semgate_cache_misses_total",
            Counter::Bypasses => "semgate_cache_bypasses_total",
            Counter::Expired => "semgate_cache_expired_total",
            Counter::Stores => "semgate_cache_stores_total",
            Counter::StoreFailures => "semgate_cache_store_failures_total",
            Counter::NotStored => "semgate_cache_not_stored_total",
            Counter::Evictions => "semgate_cache_evictions_total",
            Counter::TooLarge => "semgate_cache_entries_too_large_total",
            Counter::HostErrors => "semgate_host_errors_total",
            Counter::HitsSemantic => "semgate_cache_hits_semantic_total",
            Counter::HitsShared => "semgate_cache_hits_shared_total",
            Counter::SemanticMisses => "semgate_cache_semantic_misses_total",
            Counter::SidecarErrors => "semgate_sidecar_errors_total",
            Counter::SemanticStores => "semgate_cache_semantic_stores_total",
            Counter::UnsafeEntries => "semgate_sidecar_unsafe_entries_total",
            Counter::Relayed => "semgate_relayed_total",
            Counter::ChainFailures => "semgate_chain_failures_total",
            Counter::UnknownCallouts => "semgate_callouts_unknown_total",
            Counter::LedgerSyncs => "semgate_ledger_syncs_total",
            Counter::LedgerErrors => "semgate_ledger_errors_total",
            Counter::SpendMicros => "semgate_spend_micro_usd_total",
            Counter::SavedMicros => "semgate_saved_micro_usd_total",
            Counter::VertexTokens => "semgate_vertex_token_fetches_total",
            Counter::VertexTokenErrors => "semgate_vertex_token_errors_total",
        }
    }
}

/// A value set rather than counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Gauge {
    /// Bytes the exact cache holds in shared data.
    CacheBytes,
    /// Histogram: time from sending a sidecar lookup to its answer (or timeout), in ms.
    LookupMs,
}

impl Gauge {
    pub fn name(self) -> &'static str {
        match self {
            Gauge::CacheBytes => "semgate_cache_bytes",
            Gauge::LookupMs => "semgate_sidecar_lookup_ms",
        }
    }
}

/// Counters per provider and model (the `models` entry: a name or pattern of the configuration,
/// never a client's text, so the label values are bounded).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ModelCounter {
    /// Attempts sent to a provider (the upstream role, once per attempt).
    Attempts,
    /// Attempts a provider answered with a failure (5xx, 429, 401, 403); attempts with no
    /// answer at all (reset, timeout) are in Envoy's per-cluster stats.
    AttemptFailures,
    /// Answers from a provider after an earlier attempt of the request failed.
    Fallbacks,
    /// Requests whose every attempt failed (the client got one 502 naming them); no provider.
    FinalFailures,
}

impl ModelCounter {
    pub fn name(self) -> &'static str {
        match self {
            ModelCounter::Attempts => "semgate_provider_attempts_total",
            ModelCounter::AttemptFailures => "semgate_provider_attempt_failures_total",
            ModelCounter::Fallbacks => "semgate_provider_fallbacks_total",
            ModelCounter::FinalFailures => "semgate_model_failures_total",
        }
    }

    /// The Envoy stat name with its labels in the form the shipped `stats_tags` extract
    /// (`<name>.provider.=<p>;.model.=<m>;`), so Prometheus gets
    /// `<name>{provider="<p>",model="<m>"}`.
    pub fn stat_name(self, provider: Option<&str>, model: &str) -> String {
        let clean = |s: &str| s.replace(';', "_");
        match provider {
            Some(p) => format!("{}.provider.={};.model.={};", self.name(), clean(p), clean(model)),
            None => format!("{}.model.={};", self.name(), clean(model)),
        }
    }
}

/// Envoy `stats_tags` that turn the labels of [`ModelCounter::stat_name`] into Prometheus
/// labels: (tag name, regex; the first group is cut from the name, the second is the value).
pub const STATS_TAGS: &[(&str, &str)] = &[
    ("provider", r"(\.provider\.=(.*?);)"),
    ("model", r"(\.model\.=(.*?);)"),
    ("key", r"(\.key\.=(.*?);)"),
    ("team", r"(\.team\.=(.*?);)"),
    ("customer", r"(\.customer\.=(.*?);)"),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogLevel {
    Info,
    Warn,
    Error,
    Critical,
}

/// Counters per virtual key, team and end customer (chargeback in Prometheus).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Spend {
    Cost,
    Saved,
    Requests,
}

impl Spend {
    pub fn base(self) -> &'static str {
        match self {
            Spend::Cost => "semgate_key_spend_micro_usd_total",
            Spend::Saved => "semgate_key_saved_micro_usd_total",
            Spend::Requests => "semgate_key_requests_total",
        }
    }

    /// The stat name with its labels, `<base>.key.=<k>;.team.=<t>;.customer.=<c>;`, which
    /// `STATS_TAGS` (in the shipped and generated Envoy configs) turn into Prometheus labels. Label values keep
    /// `[A-Za-z0-9_-]` (anything else becomes `_`); the customer label is already bounded.
    pub fn stat_name(self, key: &str, team: Option<&str>, customer: &str) -> String {
        fn clean(v: &str) -> String {
            let s: String = v
                .chars()
                .take(64)
                .map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' })
                .collect();
            if s.is_empty() {
                "_".to_string()
            } else {
                s
            }
        }
        format!(
            "{}.key.={};.team.={};.customer.={};",
            self.base(),
            clean(key),
            clean(team.unwrap_or("none")),
            clean(customer)
        )
    }
}

/// Where the core reports what it counted, set and logged while deciding.
pub trait Tally {
    /// A labelled counter (`Spend::stat_name`), defined by the host on first use.
    fn count_named(&mut self, name: String, n: u64);
    fn count(&mut self, c: Counter, n: u64);
    fn gauge(&mut self, g: Gauge, v: u64);
    fn log(&mut self, level: LogLevel, msg: String);

    fn inc(&mut self, c: Counter) {
        self.count(c, 1);
    }
}

/// A `Tally` that keeps everything, for tests.
#[derive(Debug, Default, Clone)]
pub struct Effects {
    pub counts: std::collections::BTreeMap<Counter, u64>,
    pub named: std::collections::BTreeMap<String, u64>,
    pub gauges: std::collections::BTreeMap<Gauge, u64>,
    pub logs: Vec<(LogLevel, String)>,
}

impl Effects {
    pub fn get(&self, c: Counter) -> u64 {
        self.counts.get(&c).copied().unwrap_or(0)
    }
}

impl Tally for Effects {
    fn count_named(&mut self, name: String, n: u64) {
        *self.named.entry(name).or_default() += n;
    }
    fn count(&mut self, c: Counter, n: u64) {
        if n > 0 {
            *self.counts.entry(c).or_default() += n;
        }
    }
    fn gauge(&mut self, g: Gauge, v: u64) {
        self.gauges.insert(g, v);
    }
    fn log(&mut self, level: LogLevel, msg: String) {
        self.logs.push((level, msg));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_index_their_own_metric_ids() {
        for (i, c) in Counter::ALL.iter().enumerate() {
            assert_eq!(*c as usize, i, "{c:?}: the host indexes metric ids by discriminant");
        }
        let mut names: Vec<_> = Counter::ALL.iter().map(|c| c.name()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), Counter::ALL.len());
        assert_eq!([Gauge::CacheBytes as usize, Gauge::LookupMs as usize], [0, 1]);
    }

    #[test]
    fn labelled_names_carry_their_labels_for_the_stats_tags() {
        let name = ModelCounter::Attempts.stat_name(Some("anthropic"), "gpt-3.5-*");
        assert_eq!(name, "semgate_provider_attempts_total.provider.=anthropic;.model.=gpt-3.5-*;");
        assert_eq!(ModelCounter::FinalFailures.stat_name(None, "a;b"), "semgate_model_failures_total.model.=a_b;");
    }
}
