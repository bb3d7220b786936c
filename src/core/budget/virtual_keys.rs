//! The governance config (virtual keys, teams, price overrides, end customers), part of the
//! filter's `Config`, and the runtime index it compiles to (`Governance`, in the `Gateway`).
//!
//! A virtual key is stored only as the SHA-256 of the bearer token, lowercase hex, as printed
//! by `printf %s "$KEY" | sha256sum`: the config can be read without leaking keys. A request's
//! key is hashed once and looked up in a map.
//!
//! End customers (chargeback below the key) come from a header or the body's `user` field.
//! They are untrusted: ids are cleaned (`clean_customer_id`) and the set of ids given their own
//! metric label is bounded (`customer_label`), everything past it counted as `other`.

use super::estimate::EstimateConfig;
use super::period::Period;
use super::prices::{Price, PriceTable};
use super::reservation::{BudgetScope, ScopeLevel};
use super::usd_to_micros;
use crate::core::config::{pattern_matches, ConfigError};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet, HashMap};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GovernanceConfig {
    #[serde(default)]
    pub virtual_keys: Vec<VirtualKeyConfig>,
    #[serde(default)]
    pub teams: BTreeMap<String, TeamConfig>,
    /// `provider/model` or `model` -> USD per 1M tokens; wins over the built-in table.
    #[serde(default)]
    pub prices: BTreeMap<String, PriceConfig>,
    #[serde(default)]
    pub customer: CustomerConfig,
    #[serde(default)]
    pub estimate: EstimateConfig,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VirtualKeyConfig {
    /// Names the key in metrics, the ledger and logs (the key itself never appears).
    pub id: String,
    /// `printf %s "$KEY" | sha256sum`, 64 lowercase hex digits.
    pub key_sha256: String,
    #[serde(default)]
    pub team: Option<String>,
    /// The cache scope of the key's requests; default the key's id. Keys that share a tenant
    /// share cached answers, so they must allow the same models.
    #[serde(default)]
    pub tenant: Option<String>,
    /// Models the key may use (`gpt-*`, `*-mini`, exact names); empty allows all.
    #[serde(default)]
    pub models: Vec<String>,
    #[serde(default)]
    pub budget: Option<BudgetConfig>,
    #[serde(default)]
    pub rpm: Option<u64>,
    #[serde(default)]
    pub tpm: Option<u64>,
    #[serde(default)]
    pub customer_budgets: Option<CustomerBudgets>,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BudgetConfig {
    pub usd: f64,
    pub period: Period,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TeamConfig {
    pub budget: BudgetConfig,
}

/// Per end customer of a key: `default` for every customer, `customers` for named ones.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CustomerBudgets {
    #[serde(default)]
    pub default: Option<BudgetConfig>,
    #[serde(default)]
    pub customers: BTreeMap<String, BudgetConfig>,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PriceConfig {
    pub input_usd_per_1m: f64,
    pub output_usd_per_1m: f64,
    /// Defaults to the input price (no caching discount).
    #[serde(default)]
    pub cached_input_usd_per_1m: Option<f64>,
    /// Defaults to the input price.
    #[serde(default)]
    pub cache_write_usd_per_1m: Option<f64>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CustomerConfig {
    /// Request header naming the end customer (lowercase), e.g. `x-customer-id`.
    pub header: Option<String>,
    /// Take the customer from the body's `user` field when the header is absent.
    pub from_user_field: bool,
    /// Bytes kept of a customer id.
    pub max_len: usize,
    /// Customers per key given their own metric label; the rest are `other`.
    pub max_labels: usize,
}

impl Default for CustomerConfig {
    fn default() -> Self {
        CustomerConfig { header: None, from_user_field: false, max_len: 64, max_labels: 100 }
    }
}

/// A key as the request path needs it.
#[derive(Debug, Clone, PartialEq)]
pub struct KeyRecord {
    pub id: String,
    pub team: Option<String>,
    /// The cache scope (the key's `tenant`, else its id).
    pub tenant: String,
    pub models: Vec<String>,
    pub budget: Option<(u64, Period)>,
    pub rpm: Option<u64>,
    pub tpm: Option<u64>,
    pub customer_default: Option<(u64, Period)>,
    pub customer_budgets: BTreeMap<String, (u64, Period)>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyRefusal {
    #[error("model `{0}` is not allowed for this key")]
    ModelNotAllowed(String),
    #[error("model `{0}` has no price, and this key has a budget: add it to `prices`")]
    Unpriced(String),
}

impl KeyRecord {
    pub fn has_budget(&self) -> bool {
        self.budget.is_some() || self.customer_default.is_some() || !self.customer_budgets.is_empty()
    }

    pub fn allows_model(&self, model: &str) -> bool {
        self.models.is_empty() || self.models.iter().any(|p| pattern_matches(p, model))
    }

    /// The budgets a request of this key (for this end customer) must fit, key first.
    pub fn scopes(&self, teams: &BTreeMap<String, (u64, Period)>, customer: Option<&str>) -> Vec<BudgetScope> {
        let mut out = Vec::with_capacity(3);
        if let Some((limit, period)) = self.budget {
            out.push(BudgetScope { level: ScopeLevel::Key, id: self.id.clone(), limit_micros: limit, period });
        }
        if let Some((limit, period)) = self.team.as_ref().and_then(|t| teams.get(t)) {
            let id = self.team.clone().unwrap_or_default();
            out.push(BudgetScope { level: ScopeLevel::Team, id, limit_micros: *limit, period: *period });
        }
        if let Some(c) = customer {
            if let Some((limit, period)) = self.customer_budgets.get(c).or(self.customer_default.as_ref()) {
                let id = format!("{}/{c}", self.id);
                out.push(BudgetScope { level: ScopeLevel::Customer, id, limit_micros: *limit, period: *period });
            }
        }
        out
    }
}

/// The compiled governance config: keys by SHA-256 hex, team budgets, prices.
#[derive(Debug, Clone)]
pub struct Governance {
    pub keys: HashMap<String, KeyRecord>,
    /// The same records by key id (the request path knows the id once authenticated).
    pub by_id: HashMap<String, KeyRecord>,
    pub teams: BTreeMap<String, (u64, Period)>,
    pub prices: PriceTable,
    pub customer: CustomerConfig,
    pub estimate: EstimateConfig,
    /// Spend is recorded for a ledger (`ledger.cluster` is set).
    pub ledger: bool,
}

fn err(path: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError { path: path.into(), message: message.into() }
}

/// Lowercase hex SHA-256 of a bearer token, as `sha256sum` prints it.
pub fn sha256_hex(key: &str) -> String {
    Sha256::digest(key.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

impl GovernanceConfig {
    /// The governance sections of the filter's configuration.
    pub fn of(c: &crate::core::config::Config) -> GovernanceConfig {
        GovernanceConfig {
            virtual_keys: c.virtual_keys.clone(),
            teams: c.teams.clone(),
            prices: c.prices.clone(),
            customer: c.customer.clone(),
            estimate: c.estimate.clone(),
        }
    }

    /// Parse, validate and compile. Errors name the field path (`virtual_keys[1].team`).
    pub fn parse(json: &[u8]) -> Result<Governance, ConfigError> {
        let de = &mut serde_json::Deserializer::from_slice(json);
        let config: GovernanceConfig = serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            err(if path == "." { "(root)".to_string() } else { path }, e.into_inner().to_string())
        })?;
        config.compile()
    }

    pub fn compile(&self) -> Result<Governance, ConfigError> {
        let mut overrides = BTreeMap::new();
        for (name, p) in &self.prices {
            let at = format!("prices.{name}");
            if name.is_empty() || name.starts_with('/') || name.ends_with('/') {
                return Err(err(at, "must be `provider/model` or `model`"));
            }
            let usd = |field: &str, v: f64| {
                usd_to_micros(v)
                    .ok_or_else(|| err(format!("{at}.{field}"), "must be a finite, non-negative USD amount"))
            };
            let input = usd("input_usd_per_1m", p.input_usd_per_1m)?;
            let price = Price {
                input,
                output: usd("output_usd_per_1m", p.output_usd_per_1m)?,
                cached_input: p
                    .cached_input_usd_per_1m
                    .map(|v| usd("cached_input_usd_per_1m", v))
                    .transpose()?
                    .unwrap_or(input),
                cache_write: p
                    .cache_write_usd_per_1m
                    .map(|v| usd("cache_write_usd_per_1m", v))
                    .transpose()?
                    .unwrap_or(input),
            };
            overrides.insert(name.clone(), price);
        }
        let prices = PriceTable::with_overrides(overrides);
        let mut teams = BTreeMap::new();
        for (name, t) in &self.teams {
            if !valid_id(name) {
                return Err(err(format!("teams.{name}"), ID_RULE));
            }
            teams.insert(name.clone(), budget(&format!("teams.{name}.budget"), &t.budget)?);
        }
        let c = &self.customer;
        if let Some(h) = &c.header {
            if h.is_empty()
                || !h.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
            {
                return Err(err("customer.header", "must be a lowercase HTTP header name"));
            }
        }
        if c.max_len == 0 || c.max_len > 256 {
            return Err(err("customer.max_len", "must be between 1 and 256"));
        }
        if c.max_labels > 10_000 {
            return Err(err("customer.max_labels", "must be at most 10000 (each label is a metric series)"));
        }
        let e = &self.estimate;
        if e.bytes_per_token == 0 {
            return Err(err("estimate.bytes_per_token", "must be greater than 0"));
        }
        if e.max_output_tokens == 0 {
            return Err(err("estimate.max_output_tokens", "must be greater than 0"));
        }
        let mut keys = HashMap::new();
        let mut ids = BTreeSet::new();
        for (i, k) in self.virtual_keys.iter().enumerate() {
            let at = format!("virtual_keys[{i}]");
            if !valid_id(&k.id) {
                return Err(err(format!("{at}.id"), ID_RULE));
            }
            if !ids.insert(k.id.as_str()) {
                return Err(err(format!("{at}.id"), "duplicate id"));
            }
            if k.key_sha256.len() != 64
                || !k.key_sha256.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
            {
                return Err(err(
                    format!("{at}.key_sha256"),
                    "must be 64 lowercase hex digits: `printf %s \"$KEY\" | sha256sum`",
                ));
            }
            if keys.contains_key(&k.key_sha256) {
                return Err(err(format!("{at}.key_sha256"), "the same key is configured twice"));
            }
            if let Some(team) = &k.team {
                if !self.teams.contains_key(team) && !valid_id(team) {
                    return Err(err(format!("{at}.team"), ID_RULE));
                }
            }
            for (j, m) in k.models.iter().enumerate() {
                let stars = m.matches('*').count();
                let edge = m.starts_with('*') || m.ends_with('*');
                if m.is_empty() || stars > 1 || (stars == 1 && !edge) {
                    return Err(err(format!("{at}.models[{j}]"), "must be a name, `prefix*`, `*suffix` or `*`"));
                }
            }
            if k.rpm == Some(0) {
                return Err(err(format!("{at}.rpm"), "must be greater than 0 (remove it for no limit)"));
            }
            if k.tpm == Some(0) {
                return Err(err(format!("{at}.tpm"), "must be greater than 0 (remove it for no limit)"));
            }
            let key_budget = k.budget.as_ref().map(|b| budget(&format!("{at}.budget"), b)).transpose()?;
            let (customer_default, customer_budgets) = match &k.customer_budgets {
                None => (None, BTreeMap::new()),
                Some(cb) => {
                    let d = cb
                        .default
                        .as_ref()
                        .map(|b| budget(&format!("{at}.customer_budgets.default"), b))
                        .transpose()?;
                    let mut named = BTreeMap::new();
                    for (cid, b) in &cb.customers {
                        let p = format!("{at}.customer_budgets.customers.{cid}");
                        if clean_customer_id(cid, c.max_len).as_deref() != Some(cid.as_str()) {
                            return Err(err(p, "must be a customer id as the gateway keeps it (no control characters, at most `customer.max_len` bytes)"));
                        }
                        named.insert(cid.clone(), budget(&p, b)?);
                    }
                    if c.header.is_none() && !c.from_user_field {
                        return Err(err(
                            format!("{at}.customer_budgets"),
                            "needs `customer.header` or `customer.from_user_field` to know the customer",
                        ));
                    }
                    (d, named)
                }
            };
            let tenant = k.tenant.clone().unwrap_or_else(|| k.id.clone());
            if tenant.trim().is_empty() || tenant.bytes().any(|b| b.is_ascii_control()) {
                return Err(err(format!("{at}.tenant"), "must be a non-empty name without control characters"));
            }
            if let Some(other) = self.virtual_keys[..i]
                .iter()
                .find(|o| o.tenant.clone().unwrap_or_else(|| o.id.clone()) == tenant && o.models != k.models)
            {
                return Err(err(
                    format!("{at}.models"),
                    format!("key `{}` shares tenant `{tenant}` (and so cached answers) but allows other models: give them the same `models` or separate tenants", other.id),
                ));
            }
            let record = KeyRecord {
                id: k.id.clone(),
                team: k.team.clone(),
                tenant,
                models: k.models.clone(),
                budget: key_budget,
                rpm: k.rpm,
                tpm: k.tpm,
                customer_default,
                customer_budgets,
            };
            let budgeted = record.has_budget() || k.team.as_ref().is_some_and(|t| teams.contains_key(t));
            if budgeted {
                // Exact names are checked now; a pattern's models are checked per request
                // (`Governance::authorize`), since a pattern cannot be enumerated.
                for (j, m) in k.models.iter().enumerate() {
                    if !m.contains('*') && !prices.prices_model(m) {
                        return Err(err(
                            format!("{at}.models[{j}]"),
                            format!("model `{m}` has no price and a budget applies to it: add it to `prices`"),
                        ));
                    }
                }
            }
            keys.insert(k.key_sha256.clone(), record);
        }
        let by_id = keys.values().map(|k| (k.id.clone(), k.clone())).collect();
        Ok(Governance { keys, by_id, teams, prices, customer: c.clone(), estimate: e.clone(), ledger: false })
    }
}

const ID_RULE: &str = "must be 1-64 characters of letters, digits, `-`, `_` or `.`";

fn valid_id(s: &str) -> bool {
    !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

fn budget(at: &str, b: &BudgetConfig) -> Result<(u64, Period), ConfigError> {
    match usd_to_micros(b.usd) {
        Some(m) if m > 0 => Ok((m, b.period)),
        _ => Err(err(format!("{at}.usd"), "must be a positive USD amount")),
    }
}

impl Governance {
    /// The key a bearer token names, if any.
    pub fn key_for_bearer(&self, bearer: &str) -> Option<&KeyRecord> {
        self.keys.get(&sha256_hex(bearer))
    }

    /// May this key call this model (served by `provider`)? A budgeted key is refused a model
    /// with no price: its spend could not be counted.
    pub fn authorize(&self, key: &KeyRecord, provider: Option<&str>, model: &str) -> Result<Option<Price>, KeyRefusal> {
        if !key.allows_model(model) {
            return Err(KeyRefusal::ModelNotAllowed(model.to_string()));
        }
        let price = self.prices.price(provider, model);
        let budgeted = key.has_budget() || key.team.as_ref().is_some_and(|t| self.teams.contains_key(t));
        if price.is_none() && budgeted {
            return Err(KeyRefusal::Unpriced(model.to_string()));
        }
        Ok(price)
    }

    /// The end customer of a request: the configured header first, else the body's `user`.
    pub fn customer_of(&self, header: Option<&str>, user_field: Option<&str>) -> Option<String> {
        let raw = header
            .filter(|_| self.customer.header.is_some())
            .or(user_field.filter(|_| self.customer.from_user_field))?;
        clean_customer_id(raw, self.customer.max_len)
    }
}

/// A customer id fit for a key, a ledger entry and a metric label: control characters
/// removed, surrounding spaces trimmed, cut to `max_len` bytes on a character boundary.
pub fn clean_customer_id(raw: &str, max_len: usize) -> Option<String> {
    let cleaned: String = raw.chars().filter(|c| !c.is_control()).collect();
    let trimmed = cleaned.trim();
    let mut end = trimmed.len().min(max_len);
    while !trimmed.is_char_boundary(end) {
        end -= 1;
    }
    let id = trimmed[..end].trim_end();
    (!id.is_empty()).then(|| id.to_string())
}

/// The label bucket for customers past the bound.
pub const OTHER_CUSTOMER: &str = "other";

/// The metric label for `customer` given the customers already labelled (the bounded set the
/// host keeps in shared data): itself if known or if there is room (then the new set to
/// store is returned), else `other`.
pub fn customer_label(known: &[String], customer: &str, max_labels: usize) -> (String, Option<Vec<String>>) {
    if known.iter().any(|k| k == customer) {
        return (customer.to_string(), None);
    }
    if customer == OTHER_CUSTOMER || known.len() >= max_labels {
        return (OTHER_CUSTOMER.to_string(), None);
    }
    let mut next = known.to_vec();
    next.push(customer.to_string());
    (customer.to_string(), Some(next))
}

/// The bounded label set in shared data: `semgate:cust:<key id>`, ids joined by `\n`
/// (cleaned ids hold no control characters), grown with compare-and-swap.
pub fn label_customer<S: crate::core::store::SharedData>(
    kv: &S,
    key_id: &str,
    customer: &str,
    max_labels: usize,
) -> String {
    let key = format!("semgate:cust:{key_id}");
    for _ in 0..8 {
        let (known, cas) = match kv.get(&key) {
            Some((b, cas)) => {
                let s = String::from_utf8_lossy(&b).into_owned();
                (s.split('\n').filter(|x| !x.is_empty()).map(str::to_string).collect::<Vec<_>>(), Some(cas))
            }
            None => (Vec::new(), None),
        };
        let (label, grown) = customer_label(&known, customer, max_labels);
        let Some(next) = grown else { return label };
        if kv.set(&key, next.join("\n").as_bytes(), cas).is_ok() {
            return label;
        }
    }
    // The set kept changing: count this one as `other` rather than exceed the bound.
    OTHER_CUSTOMER.to_string()
}

#[cfg(test)]
#[path = "tests/virtual_keys_tests.rs"]
mod tests;
