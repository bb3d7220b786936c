//! Governance on the request path: the decisions the downstream role takes for a virtual key,
//! built from the pieces beside this module.
//!
//! 1. `take_request` (every request the key sends, cache hits included): the RPM bucket.
//! 2. `authorize` (once the body is parsed): the model is allowed and priced.
//! 3. `reserve` (only before a request goes upstream): the TPM bucket takes the token
//!    estimate, then every budget scope (key, team, customer) reserves the estimated cost.
//! 4. The response settles the `Charge` at the cost of the usage it reports, or releases it
//!    (not a success, nothing sent); a success cut before its usage is charged the reservation.
//!
//! Settled spend and cache savings go into the `UsageBook`, which the root context syncs to the
//! ledger. Shared-data failures never let a request through uncounted: a reservation that could
//! not be taken becomes a plain charge at settlement (fail open on the limit, not on the bill).

use super::bucket::{LimitKind, RateBuckets, RateDecision};
use super::estimate::{estimate_tokens, OutputLearner};
use super::ledger::{record_local, LedgerDelta};
use super::period::Period;
use super::prices::Price;
use super::reservation::{BudgetError, BudgetLedger, BudgetScope, Reservation};
use super::usage::{is_usage_only_chunk, usage_of, StreamUsage, TokenUsage};
use crate::core::cache::entry::{BodyKind, CachedResponse};
use crate::core::wire::sse::SseParser;
use super::virtual_keys::{Governance, KeyRecord, KeyRefusal};
use super::MICROS_PER_USD;
use crate::core::errors::GatewayError;
use crate::core::store::SharedData;
use serde_json::Value;

/// Who a request is charged to: the virtual key and, below it, the end customer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub key_id: String,
    pub customer: Option<String>,
}

/// `12345` micro-dollars as `0.012345`.
pub fn usd(micros: u64) -> String {
    format!("{}.{:06}", micros / MICROS_PER_USD, micros % MICROS_PER_USD)
}

fn key<'g>(gov: &'g Governance, account: &Account) -> Option<&'g KeyRecord> {
    gov.by_id.get(&account.key_id)
}

/// The requests-per-minute bucket; `Ok(None)` when the key has no RPM limit. A bucket that
/// shared data cannot update lets the request through (the limit is a rate, not a bill).
pub fn take_request<S: SharedData>(
    gov: &Governance,
    kv: &S,
    account: &Account,
    now_ms: u64,
) -> Result<Option<RateDecision>, GatewayError> {
    let Some(rpm) = key(gov, account).and_then(|k| k.rpm) else { return Ok(None) };
    match (RateBuckets { kv }).take(LimitKind::Requests, &account.key_id, rpm, 1, now_ms) {
        Ok(d) if d.allowed => Ok(Some(d)),
        Ok(d) => Err(rate_limited(&d)),
        Err(_) => Ok(None),
    }
}

fn rate_limited(d: &RateDecision) -> GatewayError {
    GatewayError::RateLimited { kind: d.kind.name(), retry_after_s: d.retry_after_s(), headers: d.named_headers() }
}

/// The key may call `model` (served by `provider`), and a budgeted key's model has a price.
pub fn authorize(
    gov: &Governance,
    account: &Account,
    provider: &str,
    model: &str,
) -> Result<Option<Price>, GatewayError> {
    let Some(k) = key(gov, account) else { return Ok(None) };
    gov.authorize(k, Some(provider), model).map_err(|e| match e {
        KeyRefusal::ModelNotAllowed(m) => GatewayError::Forbidden(format!("this key may not use model `{m}`")),
        KeyRefusal::Unpriced(m) => GatewayError::Forbidden(format!(
            "model `{m}` has no price configured and this key has a budget: the gateway cannot count its spend"
        )),
    })
}

/// A request's hold on its key's limits while it runs upstream.
#[derive(Debug, Clone, PartialEq)]
pub struct Charge {
    pub account: Account,
    pub team: Option<String>,
    /// The public model name the client asked for (the learned output estimate's key).
    pub model: String,
    pub provider: String,
    pub price: Option<Price>,
    pub scopes: Vec<BudgetScope>,
    /// `None` when no budget applies, or shared data refused the hold (then charged plainly).
    pub reservation: Option<Reservation>,
    pub estimate_micros: u64,
    pub estimate_tokens: u64,
    pub tpm: Option<u64>,
    pub tokens: Option<RateDecision>,
    /// Settled or released: nothing more happens.
    pub done: bool,
}

/// What a settled request cost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settled {
    pub cost_micros: u64,
    pub usage: Option<TokenUsage>,
}

/// Reserve before the request goes upstream: tokens per minute, then every budget scope.
/// `request`: the parsed request (its messages and `max_tokens` make the estimate).
pub fn reserve<S: SharedData>(
    gov: &Governance,
    kv: &S,
    account: &Account,
    request: &Value,
    provider: &str,
    model: &str,
    price: Option<Price>,
    now_ms: u64,
) -> Result<Option<Charge>, GatewayError> {
    let Some(k) = key(gov, account) else { return Ok(None) };
    let learned = (OutputLearner { kv }).estimate(model);
    let est = estimate_tokens(request, learned, &gov.estimate);
    let estimate_tokens = est.input + est.output;
    let tokens = match k.tpm {
        None => None,
        Some(tpm) => match (RateBuckets { kv }).take(LimitKind::Tokens, &k.id, tpm, estimate_tokens, now_ms) {
            Ok(d) if d.allowed => Some(d),
            Ok(d) => return Err(rate_limited(&d)),
            Err(_) => None,
        },
    };
    let estimate_micros = price.map(|p| p.cost(&est.as_usage())).unwrap_or(0);
    let scopes = k.scopes(&gov.teams, account.customer.as_deref());
    let reservation = if scopes.is_empty() {
        None
    } else {
        match (BudgetLedger { kv }).reserve(&scopes, estimate_micros, now_ms) {
            Ok(r) => Some(r),
            Err(BudgetError::Refused(r)) => {
                if let (Some(tpm), Some(_)) = (k.tpm, tokens) {
                    let _ = (RateBuckets { kv }).adjust(LimitKind::Tokens, &k.id, tpm, -(estimate_tokens as i64), now_ms);
                }
                let level = r.level.name();
                let message = format!(
                    "{level} budget of `{}` exhausted: ${} of ${} spent, ${} held by requests in flight, this request needs up to ${}; it resets in {}s",
                    r.id,
                    usd(r.spent_micros),
                    usd(r.limit_micros),
                    usd(r.reserved_micros),
                    usd(r.estimate_micros),
                    r.reset_ms.saturating_sub(now_ms).div_ceil(1000),
                );
                return Err(GatewayError::BudgetExceeded { message, retry_after_s: r.retry_after_ms.div_ceil(1000).max(1) });
            }
            // Contended or refused by the host: admit, and charge plainly at the end.
            Err(_) => None,
        }
    };
    Ok(Some(Charge {
        account: account.clone(),
        team: k.team.clone(),
        model: model.to_string(),
        provider: provider.to_string(),
        price,
        scopes,
        reservation,
        estimate_micros,
        estimate_tokens,
        tpm: k.tpm,
        tokens,
        done: false,
    }))
}

fn day(now_ms: u64) -> String {
    Period::Daily.window(now_ms).id
}

impl Charge {
    /// The request succeeded. `usage` as the response reported it (`None`: cut before its
    /// usage, charged the reservation); `answered_by`/`answered_model`: who served it, whose
    /// price applies when it has one.
    pub fn settle<S: SharedData>(
        &mut self,
        gov: &Governance,
        kv: &S,
        usage: Option<TokenUsage>,
        answered_by: Option<&str>,
        answered_model: Option<&str>,
        now_ms: u64,
    ) -> Option<Settled> {
        if self.done {
            return None;
        }
        self.done = true;
        let price = answered_model
            .and_then(|m| gov.prices.price(answered_by.or(Some(&self.provider)), m))
            .or(self.price);
        let cost = match (usage, price) {
            (Some(u), Some(p)) => p.cost(&u),
            (None, _) => self.estimate_micros,
            (Some(_), None) => 0,
        };
        let ledger = BudgetLedger { kv };
        match &self.reservation {
            Some(r) => {
                let _ = ledger.settle(r, cost);
            }
            None if !self.scopes.is_empty() => {
                let _ = ledger.charge(&self.scopes, cost, now_ms);
            }
            None => {}
        }
        if let Some(u) = usage {
            if let (Some(tpm), Some(_)) = (self.tpm, self.tokens) {
                let delta = u.total() as i64 - self.estimate_tokens as i64;
                let _ = (RateBuckets { kv }).adjust(LimitKind::Tokens, &self.account.key_id, tpm, delta, now_ms);
            }
            let _ = (OutputLearner { kv }).observe(&self.model, u.output);
        }
        record(gov, &self.account, self.team.clone(), now_ms, cost, 0);
        Some(Settled { cost_micros: cost, usage })
    }

    /// The request failed or was abandoned before any answer: give its holds back.
    pub fn release<S: SharedData>(&mut self, kv: &S, now_ms: u64) {
        if self.done {
            return;
        }
        self.done = true;
        if let Some(r) = &self.reservation {
            let _ = (BudgetLedger { kv }).release(r);
        }
        if let (Some(tpm), Some(_)) = (self.tpm, self.tokens) {
            let delta = -(self.estimate_tokens as i64);
            let _ = (RateBuckets { kv }).adjust(LimitKind::Tokens, &self.account.key_id, tpm, delta, now_ms);
        }
    }

    /// What is left of the tightest budget this request counts against, after it.
    pub fn remaining<S: SharedData>(&self, kv: &S, now_ms: u64) -> Option<u64> {
        let ledger = BudgetLedger { kv };
        self.scopes
            .iter()
            .map(|s| {
                let rec = ledger.read(&s.record_key(now_ms));
                s.limit_micros.saturating_sub(rec.known_spent().saturating_add(rec.reserved))
            })
            .min()
    }
}

/// The labelled chargeback counters of one settled request or hit: spend (or savings) and one
/// request, per key, team and end customer. Customers past `customer.max_labels` per key are
/// counted as `other`.
pub fn count_spend<S: SharedData>(
    gov: &Governance,
    kv: &S,
    account: &Account,
    cost: u64,
    saved: u64,
    t: &mut impl crate::core::tally::Tally,
) {
    use crate::core::tally::Spend;
    let Some(k) = key(gov, account) else { return };
    let customer = match &account.customer {
        Some(c) => super::virtual_keys::label_customer(kv, &k.id, c, gov.customer.max_labels),
        None => "none".to_string(),
    };
    let team = k.team.as_deref();
    t.count_named(Spend::Requests.stat_name(&k.id, team, &customer), 1);
    if cost > 0 {
        t.count_named(Spend::Cost.stat_name(&k.id, team, &customer), cost);
    }
    if saved > 0 {
        t.count_named(Spend::Saved.stat_name(&k.id, team, &customer), saved);
    }
}

/// One settled request or cache hit, in this VM's book (`ledger::record_local`), which the
/// root context moves to the shared book and syncs to the ledger; nothing when no ledger is
/// configured.
fn record(gov: &Governance, account: &Account, team: Option<String>, now_ms: u64, spent: u64, saved: u64) {
    if !gov.ledger {
        return;
    }
    let delta = LedgerDelta {
        key_id: account.key_id.clone(),
        team,
        customer: account.customer.clone(),
        period: day(now_ms),
        spent_micros: spent,
        requests: 1,
        saved_micros: saved,
    };
    record_local(delta);
}

/// A cache hit for this account: free, but counted (requests, and what the answer cost when
/// it was paid for: `saving`).
pub fn record_hit(gov: &Governance, account: &Account, saved: Option<u64>, now_ms: u64) {
    if let Some(k) = key(gov, account) {
        record(gov, account, k.team.clone(), now_ms, 0, saved.unwrap_or(0));
    }
}

/// Largest JSON answer read for its usage; a larger one is charged its reservation.
const MAX_METERED_JSON: usize = 16 << 20;

/// Reads a successful answer's usage as it goes by: a JSON body whole, a stream event by
/// event. With `strip`, the usage-only chunk the gateway asked for is cut out of the stream.
#[derive(Debug)]
pub enum Meter {
    Json(Vec<u8>),
    Sse { parser: SseParser, usage: StreamUsage, model: Option<String>, strip: bool },
}

impl Meter {
    pub fn for_response(content_type: Option<&str>, strip: bool) -> Meter {
        if content_type.is_some_and(|c| c.trim_start().starts_with("text/event-stream")) {
            Meter::Sse { parser: SseParser::new(), usage: StreamUsage::default(), model: None, strip }
        } else {
            Meter::Json(Vec::new())
        }
    }

    /// A piece of the answer; returns the bytes to send instead, when some were cut.
    pub fn push(&mut self, chunk: &[u8], end_of_stream: bool) -> Option<Vec<u8>> {
        match self {
            Meter::Json(buf) => {
                if buf.len() + chunk.len() <= MAX_METERED_JSON {
                    buf.extend_from_slice(chunk);
                } else {
                    buf.clear();
                    buf.shrink_to_fit();
                    *self = Meter::Json(vec![0]); // unparseable: charged the reservation
                }
                None
            }
            Meter::Sse { parser, usage, model, strip } => {
                let events = parser.feed(chunk);
                let mut out = strip.then(Vec::new);
                for e in &events {
                    usage.feed(&e.data);
                    if model.is_none() && e.data.contains("\"model\"") {
                        *model = serde_json::from_str::<Value>(&e.data)
                            .ok()
                            .and_then(|v| v.get("model").and_then(Value::as_str).map(str::to_string));
                    }
                    if let Some(out) = out.as_mut() {
                        if !is_usage_only_chunk(&e.data) {
                            out.extend_from_slice(&e.raw);
                        }
                    }
                }
                if let (Some(out), true) = (out.as_mut(), end_of_stream) {
                    out.extend_from_slice(parser.pending());
                }
                out
            }
        }
    }

    /// The usage the answer reported, and the model it names.
    pub fn usage(&self) -> (Option<TokenUsage>, Option<String>) {
        match self {
            Meter::Json(buf) => json_usage(buf),
            Meter::Sse { usage, model, .. } => (usage.usage(), model.clone()),
        }
    }
}

/// The usage and model of a JSON answer, reading only those two fields: the `usage` (or
/// Gemini's `usageMetadata`) object is cut out and parsed alone, the rest of the body (the
/// answer's text) is scanned, never parsed.
fn json_usage(body: &[u8]) -> (Option<TokenUsage>, Option<String>) {
    let usage = ["\"usage\"", "\"usageMetadata\""].iter().find_map(|k| {
        let obj = object_after_key(body, k.as_bytes())?;
        let v: Value = serde_json::from_slice(obj).ok()?;
        usage_of(&serde_json::json!({ k.trim_matches('"'): v }))
    });
    let model = string_after_key(body, b"\"model\"");
    (usage, model)
}

/// JSON's string state over one byte: true when `b` belongs to a string (its closing quote
/// included), so a scanner skips it.
fn string_byte(state: &mut (bool, bool), b: u8) -> bool {
    let (in_str, esc) = state;
    if !*in_str {
        return false;
    }
    if *esc {
        *esc = false;
    } else if b == b'\\' {
        *esc = true;
    } else if b == b'"' {
        *in_str = false;
    }
    true
}

/// Where `key` (quoted) occurs as an object key: the last occurrence not inside a string.
fn key_at(body: &[u8], key: &[u8]) -> Option<usize> {
    let mut state = (false, false);
    let mut found = None;
    let mut i = 0;
    while i < body.len() {
        let b = body[i];
        if !string_byte(&mut state, b) && b == b'"' {
            if body[i..].starts_with(key) {
                let rest = body[i + key.len()..].iter().find(|c| !c.is_ascii_whitespace());
                if rest == Some(&b':') {
                    found = Some(i + key.len());
                    i += key.len();
                    continue;
                }
            }
            state.0 = true;
        }
        i += 1;
    }
    found
}

/// The object that is the value of `key`.
fn object_after_key<'a>(body: &'a [u8], key: &[u8]) -> Option<&'a [u8]> {
    let at = key_at(body, key)?;
    let start = at + body[at..].iter().position(|&c| c == b'{')?;
    if body[at..start].iter().any(|&c| c != b':' && !c.is_ascii_whitespace()) {
        return None;
    }
    let (mut depth, mut state) = (0usize, (false, false));
    for (j, &b) in body[start..].iter().enumerate() {
        if string_byte(&mut state, b) {
            continue;
        }
        match b {
            b'"' => state.0 = true,
            b'{' => depth += 1,
            b'}' => {
                depth -= 1;
                if depth == 0 {
                    return Some(&body[start..=start + j]);
                }
            }
            _ => {}
        }
    }
    None
}

/// The string that is the value of `key` (escapes kept out: a model name has none).
fn string_after_key(body: &[u8], key: &[u8]) -> Option<String> {
    let at = key_at(body, key)?;
    let rest = &body[at..];
    let open = rest.iter().position(|&c| c == b'"')?;
    if rest[..open].iter().any(|&c| c != b':' && !c.is_ascii_whitespace()) {
        return None;
    }
    let len = rest[open + 1..].iter().position(|&c| c == b'"' || c == b'\\')?;
    std::str::from_utf8(&rest[open + 1..open + 1 + len]).ok().map(str::to_string)
}

/// The usage a cached answer reported when it was paid for, and its model.
pub fn cached_usage(response: &CachedResponse) -> (Option<TokenUsage>, Option<String>) {
    match response.kind {
        BodyKind::Json => json_usage(&response.body()),
        _ => {
            let mut m = Meter::for_response(Some("text/event-stream"), false);
            for c in &response.chunks {
                m.push(c, false);
            }
            m.usage()
        }
    }
}

/// What a cached answer saved, at the price of the model that wrote it.
pub fn saving(gov: &Governance, response: &CachedResponse) -> Option<u64> {
    let (usage, model) = cached_usage(response);
    Some(gov.prices.price(None, model.as_deref()?)?.cost(&usage?))
}

#[cfg(test)]
#[path = "tests/charge_tests.rs"]
mod tests;
