//! The downstream role's request path as decisions: each phase (request headers, the
//! complete body, the sidecar's answer, the response headers and body) is a function of what
//! the host read, the compiled `Gateway`, shared data behind `SharedData` and a clock value,
//! and returns what the host must do. The host carries the value out and reports back only
//! what it could not do (a refused local reply, a refused callout), which is one more step.
//!
//! The body decision runs in stages, each a function: the fast path, the plan and the exact
//! lookup, the semantic lookup, then forwarding. A budget check is one more stage between the
//! plan and the lookups, returning `BodyDecision::Reject` like any other refusal.

use crate::core::budget::charge::{self, Account, Charge, Meter};
use crate::core::budget::ledger::{flush_local, update_book, SyncResponse};
use crate::core::budget::reservation::BudgetLedger;
use crate::core::cache::entry::{CachedResponse, Entry};
use crate::core::cache::fastpath::{self, FastLookup, FastPath, Probe, RawRequest};
use crate::core::cache::key::CacheKey;
use crate::core::cache::store::{CacheStore, Lookup, SharedData, StoreError};
use crate::core::cache::tee::{NotStorable, ResponseTee};
use crate::core::errors::GatewayError;
use crate::core::gateway::{
    admit, fresh_for, plan, Admitted, CachePlan, ClientDirective, Gateway, HeadDecision, Plan, RequestHead, Upstream,
};
use crate::core::semantic::{self, HitTier, LookupError, SemanticHit, SemanticQuery};
use crate::core::tally::{Counter, Gauge, LogLevel, Tally};
use crate::core::wire::headermap::HeaderMap;
use std::borrow::Cow;

/// A header value: the gateway's constants are never copied.
pub type Value = Cow<'static, str>;

/// Faults of the host, not the client's: each is a 5xx through the one error renderer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostFault {
    /// The VM has no configuration (Envoy does not serve with a plugin whose configure failed).
    NotConfigured,
    BodyUnreadable,
    RouteNotSet,
}

impl HostFault {
    pub fn error(self) -> GatewayError {
        GatewayError::Internal(
            match self {
                HostFault::NotConfigured => "semgate is not configured",
                HostFault::BodyUnreadable => "the request body could not be read",
                HostFault::RouteNotSet => "the request could not be routed",
            }
            .into(),
        )
    }
}

/// Header changes on the request going upstream, in order: removals, then sets.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RequestEdit {
    pub remove: Vec<String>,
    pub set: Vec<(&'static str, String)>,
    /// Replace the buffered body (its length as received, the new bytes).
    pub body: Option<(usize, Vec<u8>)>,
}

/// Marks a `passthrough` request for the upstream role (set only by the gateway: every client
/// `x-semgate-*` header is dropped), so it keeps the request's path and body.
pub const RELAY_HEADER: &str = "x-semgate-relay";

impl RequestEdit {
    /// Set the cluster the gateway decided and drop every client header that is not
    /// forwarded (the client's credential included). The provider's path, authority and key
    /// are the upstream role's, on every attempt.
    pub fn to(gw: &Gateway, client_headers: &HeaderMap, up: Upstream) -> RequestEdit {
        let remove = gw.headers_to_drop(client_headers.iter().map(|(k, _)| k));
        let mut set = Vec::with_capacity(2);
        set.push(("x-semgate-cluster", up.cluster));
        if up.relay {
            set.push((RELAY_HEADER, "1".to_string()));
        }
        RequestEdit { remove, set, body: None }
    }
}

/// A request admitted at the headers, held until its body is complete.
#[derive(Debug, Clone, PartialEq)]
pub struct Held {
    pub admitted: Admitted,
    /// The client's headers as read at the headers phase: what to drop is decided from them
    /// only if the request goes upstream (each removal is a host call).
    pub client_headers: HeaderMap,
}

#[derive(Debug, PartialEq)]
pub enum HeadersDecision {
    /// A `passthrough` path: apply the edit and let the request go (no body read, no cache).
    Relay(RequestEdit),
    Reject(GatewayError),
    /// Hold the headers and read the body.
    ReadBody(Held),
}

/// The request headers the headers phase reads, in one pass over the map.
fn head_names(gw: &Gateway) -> [&str; 8] {
    [
        gw.gov.customer.header.as_deref().unwrap_or(""),
        ":method",
        ":path",
        "authorization",
        // An untrusted tenant header is never read ("" names no header).
        gw.keys.trusted_tenant_header().unwrap_or(""),
        "content-length",
        "cache-control",
        "x-semgate-cache",
    ]
}

fn nonempty(v: Option<&str>) -> Option<&str> {
    v.filter(|v| !v.is_empty())
}

/// `route_name`: the Envoy route's name, read only when `gw.needs_route_name()`.
pub fn on_request_headers(
    gw: &Gateway,
    headers: HeaderMap,
    route_name: Option<&str>,
    end_of_stream: bool,
    t: &mut impl Tally,
) -> HeadersDecision {
    let decision = {
        let [customer, method, path, authorization, tenant, content_length, cache_control, semgate_cache] =
            headers.pick(head_names(gw));
        let head = RequestHead {
            method: nonempty(method).unwrap_or_default(),
            path: nonempty(path).unwrap_or_default(),
            authorization: nonempty(authorization),
            tenant: nonempty(tenant),
            content_length: nonempty(content_length),
            cache_control: nonempty(cache_control),
            semgate_cache: nonempty(semgate_cache),
            route_name: route_name.filter(|r| !r.is_empty()),
            customer: nonempty(customer),
        };
        admit(gw, &head)
    };
    match decision {
        HeadDecision::Relay(up) => {
            t.inc(Counter::Relayed);
            HeadersDecision::Relay(RequestEdit::to(gw, &headers, up))
        }
        HeadDecision::Reject(e) => HeadersDecision::Reject(e),
        HeadDecision::ReadBody(admitted) => {
            t.inc(Counter::Requests);
            if end_of_stream {
                return HeadersDecision::Reject(GatewayError::InvalidJson("the request has no body".into()));
            }
            HeadersDecision::ReadBody(Held { admitted, client_headers: headers })
        }
    }
}

#[derive(Debug, PartialEq)]
pub enum BodyProgress {
    /// Keep buffering.
    Wait,
    /// The whole body is buffered: read it and call `on_complete_body`.
    Complete,
    Reject(GatewayError),
}

/// A body chunk arrived; `body_size` is what is buffered so far.
pub fn on_request_body(gw: &Gateway, body_size: usize, end_of_stream: bool) -> BodyProgress {
    let limit = gw.config.max_body_bytes;
    if body_size as u64 > limit {
        BodyProgress::Reject(GatewayError::BodyTooLarge { size: body_size as u64, limit })
    } else if end_of_stream {
        BodyProgress::Complete
    } else {
        BodyProgress::Wait
    }
}

/// Which callout a token was given for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CalloutKind {
    /// `/v1/lookup`: the request waits for its answer.
    Lookup,
    /// `/v1/store`: fire and forget.
    Store,
}

/// An HTTP callout to the sidecar.
#[derive(Debug, Clone, PartialEq)]
pub struct Callout<'g> {
    pub kind: CalloutKind,
    pub cluster: &'g str,
    pub path: &'static str,
    pub authorization: Option<&'g str>,
    pub body: Vec<u8>,
    pub timeout_ms: u64,
}

/// A store is not waited for; its timeout only bounds the callout's life in Envoy.
const STORE_TIMEOUT_MS: u64 = 5_000;

/// A local reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalReply {
    pub status: u16,
    pub headers: Vec<(&'static str, Value)>,
    pub body: Vec<u8>,
}

impl LocalReply {
    /// The one renderer of errors: OpenAI-style JSON with the error's status.
    pub fn error(e: &GatewayError) -> LocalReply {
        let mut headers = vec![("content-type", Cow::Borrowed("application/json"))];
        headers.extend(e.headers().into_iter().map(|(k, v)| (k, Cow::Owned(v))));
        LocalReply { status: e.status(), headers, body: e.to_json() }
    }

    /// A cached answer: its content type, then the marks `mark` adds.
    fn cached(response: &CachedResponse, mark: impl FnOnce(&mut Vec<(&'static str, Value)>)) -> LocalReply {
        let mut headers = Vec::with_capacity(5);
        headers.push(("content-type", Cow::Owned(response.content_type.clone())));
        mark(&mut headers);
        LocalReply { status: 200, headers, body: response.body() }
    }
}

/// A cache hit to answer with. Once the host tried, it calls `after_reply` with the outcome:
/// the hit is then counted and its follow-up done, or the request goes on without it.
#[derive(Debug)]
pub struct CacheReply {
    pub reply: LocalReply,
    hit: Counter,
    state: ReplyState,
    /// What the answer cost when it was paid for (a virtual key's hit).
    saved: Option<u64>,
}

impl CacheReply {
    /// A virtual key's hit for the access log (`wasm.semgate` filter state).
    pub fn access_log(&self, gw: &Gateway) -> Option<String> {
        let (account, model) = match &self.state {
            ReplyState::Fast(ctx) => (hit_account(gw, &ctx.held.admitted)?, None),
            ReplyState::Exact { plan, .. } => (plan.account.clone()?, Some(plan.request.model.clone())),
            ReplyState::Shared { pending, .. } | ReplyState::Semantic(pending) => {
                (pending.plan.account.clone()?, Some(pending.plan.request.model.clone()))
            }
        };
        let team = gw.gov.by_id.get(&account.key_id).and_then(|k| k.team.clone());
        let cache = match self.hit {
            Counter::HitsSemantic => "hit-semantic",
            _ => "hit-exact",
        };
        Some(
            serde_json::json!({
                "key": account.key_id, "team": team, "customer": account.customer, "model": model,
                "cost_usd": charge::usd(0), "saved_usd": self.saved.map(charge::usd), "cache": cache,
            })
            .to_string(),
        )
    }

    /// A hit's reply; a virtual key's hit also says what it saved (`saving_of`).
    fn new(mut reply: LocalReply, saved: Option<u64>, hit: Counter, state: ReplyState) -> CacheReply {
        if let Some(s) = saved {
            reply.headers.push(("x-semgate-saved-usd", Cow::Owned(charge::usd(s))));
        }
        CacheReply { reply, hit, state, saved }
    }
}

#[derive(Debug)]
enum ReplyState {
    /// A fast-path hit: if refused, the canonical path runs.
    Fast(BodyCtx),
    /// A canonical exact hit: once sent, these bytes get a fast-path record.
    Exact {
        ctx: Box<BodyCtx>,
        plan: Box<Plan>,
        entry: Entry,
        ttl_s: u64,
    },
    /// The sidecar's shared exact tier: once sent, a local copy.
    Shared {
        pending: Box<Pending>,
        entry: Entry,
    },
    Semantic(Box<Pending>),
}

#[derive(Debug)]
pub enum BodyDecision<'g> {
    Reply(CacheReply),
    Reject(GatewayError),
    /// Send the lookup and hold the request; if the host cannot send it, `lookup_not_sent`.
    AskSidecar(Callout<'g>, Box<Pending>),
    Forward(Forward),
}

/// Route upstream: apply the edit (a refusal is `HostFault::RouteNotSet`), then count
/// `counter` and keep `forwarded` for the response.
#[derive(Debug)]
pub struct Forward {
    pub edit: RequestEdit,
    pub counter: Counter,
    pub forwarded: Box<Forwarded>,
}

/// The body phase's working set.
#[derive(Debug)]
struct BodyCtx {
    held: Held,
    body: Vec<u8>,
    /// Where these bytes' fast-path record lives, when they may have one.
    probe: Option<Probe>,
}

impl BodyCtx {
    fn raw(&self) -> RawRequest<'_> {
        raw_request(&self.held.admitted, &self.body)
    }
}

fn raw_request<'a>(admitted: &'a Admitted, body: &'a [u8]) -> RawRequest<'a> {
    RawRequest {
        tenant: &admitted.tenant,
        path: &admitted.path,
        route: admitted.route_name.as_deref().unwrap_or(""),
        body,
    }
}

/// A request waiting for the sidecar's answer.
#[derive(Debug)]
pub struct Pending {
    plan: Plan,
    query: SemanticQuery,
    client_headers: HeaderMap,
    /// When the lookup was sent, for the lookup latency histogram.
    sent_ms: u64,
}

/// The whole body is buffered: answer it, refuse it, ask the sidecar, or forward it.
pub fn on_complete_body<'g, S: SharedData>(
    gw: &'g Gateway,
    kv: &S,
    now: u64,
    held: Held,
    body: Vec<u8>,
    t: &mut impl Tally,
) -> BodyDecision<'g> {
    // Every request of a key counts against its requests per minute, cache hits included.
    if let Some(key_id) = &held.admitted.key_id {
        let account = Account { key_id: key_id.clone(), customer: None };
        if let Err(e) = charge::take_request(&gw.gov, kv, &account, now) {
            return BodyDecision::Reject(e);
        }
    }
    let mut ctx = BodyCtx { held, body, probe: None };
    // Byte-identical repeat of a request served from the cache: answered before any parse.
    let directive = ctx.held.admitted.directive;
    if directive != ClientDirective::Bypass && gw.fast.may_hold(&ctx.raw()) {
        ctx.probe = Some(fastpath::probe(&gw.fast, &ctx.raw()));
    }
    let hit = match (&ctx.probe, directive) {
        (Some(probe), ClientDirective::Normal) => match FastPath::new(kv, gw.fast).lookup(probe, &ctx.raw(), now) {
            FastLookup::Hit(entry) => Some(entry),
            FastLookup::Miss => None,
        },
        _ => None,
    };
    if let Some(entry) = hit {
        let reply = LocalReply::cached(&entry.response, |h| exact_marks(h, &entry, now, None));
        let saved = saving_of(gw, ctx.held.admitted.key_id.is_some(), &entry.response);
        return BodyDecision::Reply(CacheReply::new(reply, saved, Counter::HitsFast, ReplyState::Fast(ctx)));
    }
    after_fast_path(gw, kv, now, ctx, t)
}

/// Parse and plan, then the exact lookup.
fn after_fast_path<'g, S: SharedData>(
    gw: &'g Gateway,
    kv: &S,
    now: u64,
    ctx: BodyCtx,
    t: &mut impl Tally,
) -> BodyDecision<'g> {
    let plan = match plan(gw, &ctx.held.admitted, &ctx.body) {
        Ok(p) => p,
        Err(e) => return BodyDecision::Reject(e),
    };
    if let CachePlan::Lookup { key, ttl_s } = plan.cache {
        match CacheStore::new(kv, gw.limits).lookup(&key, now) {
            // An entry stored under a longer TTL (another path's policy) is as old as this
            // request's policy allows, or it is a miss.
            Lookup::Hit(entry) if !fresh_for(entry.created_ms, ttl_s, now) => t.inc(Counter::Expired),
            Lookup::Hit(entry) => {
                let reply = LocalReply::cached(&entry.response, |h| exact_marks(h, &entry, now, None));
                let saved = saving_of(gw, plan.account.is_some(), &entry.response);
                let state = ReplyState::Exact { ctx: Box::new(ctx), plan: Box::new(plan), entry, ttl_s };
                return BodyDecision::Reply(CacheReply::new(reply, saved, Counter::HitsExact, state));
            }
            Lookup::Expired => t.inc(Counter::Expired),
            Lookup::Miss => {}
        }
    }
    after_exact(gw, kv, now, ctx, plan)
}

/// No local answer: ask the sidecar when the semantic layer applies, else forward.
fn after_exact<'g, S: SharedData>(gw: &'g Gateway, kv: &S, now: u64, ctx: BodyCtx, plan: Plan) -> BodyDecision<'g> {
    let sem = &gw.config.semantic;
    let admitted = &ctx.held.admitted;
    let query = match plan.cache.store_as() {
        Some(_) if plan.semantic.enabled => {
            let provider = gw.config.cache.cache_by_provider.then_some(plan.upstream.provider.as_str());
            semantic::semantic_query(&plan.request, &admitted.tenant, provider, sem)
        }
        _ => None,
    };
    let query = match (query, plan.cache) {
        (Some(query), CachePlan::Lookup { key, .. }) => {
            let callout = Callout {
                kind: CalloutKind::Lookup,
                cluster: &sem.cluster,
                path: "/v1/lookup",
                authorization: gw.sidecar_auth.as_deref(),
                body: semantic::lookup_body(&query, &key, sem, plan.semantic.threshold),
                timeout_ms: sem.timeout_ms,
            };
            let client_headers = ctx.held.client_headers;
            let pending = Pending { plan, query, client_headers, sent_ms: now };
            return BodyDecision::AskSidecar(callout, Box::new(pending));
        }
        (query, _) => query,
    };
    // A refresh stores a new answer: the record of the bytes that asked for it follows it.
    let BodyCtx { held, body, probe } = ctx;
    let refresh = match (plan.cache, probe) {
        (CachePlan::Refresh { .. }, Some(probe)) => Some(RefreshRecord { probe, admitted: held.admitted, body }),
        _ => None,
    };
    forward(gw, kv, now, &held.client_headers, plan, query, refresh)
}

/// The host could not send the lookup (sidecar cluster missing or overloaded): fail open.
pub fn lookup_not_sent<'g, S: SharedData>(
    gw: &'g Gateway,
    kv: &S,
    now: u64,
    pending: Box<Pending>,
    status: u32,
    t: &mut impl Tally,
) -> BodyDecision<'g> {
    t.inc(Counter::SidecarErrors);
    t.log(LogLevel::Warn, format!("semgate: semantic lookup not sent (status {status})"));
    forward_pending(gw, kv, now, pending)
}

fn forward_pending<S: SharedData>(gw: &Gateway, kv: &S, now: u64, p: Box<Pending>) -> BodyDecision<'static> {
    let Pending { plan, query, client_headers, .. } = *p;
    forward(gw, kv, now, &client_headers, plan, Some(query), None)
}

/// Whether the host should read the answer's body: only a 200 carries one worth reading.
pub fn lookup_answer_has_body(status: Option<&str>) -> bool {
    status == Some("200")
}

/// The sidecar answered (or the callout timed out: no status at all). `body` is what the
/// host read when `lookup_answer_has_body`, or the status of its refusal.
pub fn on_lookup_answer<'g, S: SharedData>(
    gw: &'g Gateway,
    kv: &S,
    now: u64,
    pending: Box<Pending>,
    status: Option<&str>,
    body: Option<Result<Vec<u8>, u32>>,
    t: &mut impl Tally,
) -> BodyDecision<'g> {
    let answer = match (status, body) {
        (Some("200"), Some(body)) => body
            .map_err(|s| LookupError::Protocol(format!("status {s}")))
            .and_then(|body| semantic::parse_lookup(&body, pending.plan.request.stream)),
        // A timeout or a reset reaches here with no headers at all.
        (other, _) => Err(LookupError::Protocol(format!(
            "sidecar answered {}",
            other.unwrap_or("nothing (timeout or connection failure)")
        ))),
    };
    t.gauge(Gauge::LookupMs, now.saturating_sub(pending.sent_ms));
    match answer {
        Ok(Some(hit)) if hit.tier == HitTier::Exact => return shared_exact(gw, kv, now, pending, hit, t),
        Ok(Some(hit)) if !semantic_fresh(&pending.plan, hit.created_ms, now) => t.inc(Counter::Expired),
        Ok(Some(hit)) => {
            let score = format!("{:.4}", hit.score);
            let reply = LocalReply::cached(&hit.response, |h| {
                h.push(("x-semgate-cache", Cow::Borrowed("hit-semantic")));
                h.push(("x-semgate-similarity", Cow::Owned(score)));
            });
            let saved = saving_of(gw, pending.plan.account.is_some(), &hit.response);
            let state = ReplyState::Semantic(pending);
            return BodyDecision::Reply(CacheReply::new(reply, saved, Counter::HitsSemantic, state));
        }
        Ok(None) => t.inc(Counter::SemanticMisses),
        Err(LookupError::UnsafeEntry) => {
            t.inc(Counter::UnsafeEntries);
            t.log(LogLevel::Warn, "semgate: a sidecar entry with a foreign content type was not replayed".into());
        }
        Err(e) => {
            t.inc(Counter::SidecarErrors);
            t.log(LogLevel::Warn, format!("semgate: semantic lookup failed, failing open: {e}"));
        }
    }
    forward_pending(gw, kv, now, pending)
}

/// What a virtual key's cache hit saved (`None` for other keys: nothing is counted).
fn saving_of(gw: &Gateway, governed: bool, response: &CachedResponse) -> Option<u64> {
    governed.then(|| charge::saving(&gw.gov, response)).flatten()
}

/// A fast-path hit's account: its body was never parsed, so the customer is the header's.
fn hit_account(gw: &Gateway, admitted: &Admitted) -> Option<Account> {
    let key_id = admitted.key_id.clone()?;
    Some(Account { key_id, customer: gw.gov.customer_of(admitted.customer_header.as_deref(), None) })
}

/// A semantic entry is served only while younger than this request's semantic TTL.
fn semantic_fresh(plan: &Plan, created_ms: Option<u64>, now: u64) -> bool {
    let ttl_s = plan.semantic.ttl_s.or(plan.cache.store_as().map(|(_, t)| t));
    match (created_ms, ttl_s) {
        (Some(created), Some(ttl)) => fresh_for(created, ttl, now),
        _ => true,
    }
}

/// Answer from the sidecar's shared exact tier (another replica stored it), and keep a copy
/// in this replica's cache until the original expiry, so the next hit is local.
fn shared_exact<'g, S: SharedData>(
    gw: &'g Gateway,
    kv: &S,
    now: u64,
    pending: Box<Pending>,
    hit: SemanticHit,
    t: &mut impl Tally,
) -> BodyDecision<'g> {
    let CachePlan::Lookup { key, ttl_s } = pending.plan.cache else { return forward_pending(gw, kv, now, pending) };
    let created_ms = hit.created_ms.unwrap_or(now).min(now);
    if !fresh_for(created_ms, ttl_s, now) {
        t.inc(Counter::Expired);
        return forward_pending(gw, kv, now, pending);
    }
    let expires_ms = hit.expires_ms.unwrap_or(u64::MAX).min(now + ttl_s * 1000);
    let entry = Entry { key, created_ms, expires_ms, response: hit.response };
    let reply = LocalReply::cached(&entry.response, |h| exact_marks(h, &entry, now, Some("shared")));
    let saved = saving_of(gw, pending.plan.account.is_some(), &entry.response);
    let state = ReplyState::Shared { pending, entry };
    BodyDecision::Reply(CacheReply::new(reply, saved, Counter::HitsShared, state))
}

/// An exact hit's marks: its key and age, and the tier that held it when not this replica's.
fn exact_marks(h: &mut Vec<(&'static str, Value)>, entry: &Entry, now: u64, tier: Option<&'static str>) {
    h.push(("x-semgate-cache", Cow::Borrowed("hit-exact")));
    if let Some(t) = tier {
        h.push(("x-semgate-tier", Cow::Borrowed(t)));
    }
    h.push(("x-semgate-key", Cow::Owned(entry.key.short())));
    h.push(("age", Cow::Owned((now.saturating_sub(entry.created_ms) / 1000).to_string())));
}

/// The host tried to send a cache hit: count it and do its follow-up, or, if the host
/// refused, go on without it (the next stage of the body decision).
pub fn after_reply<'g, S: SharedData>(
    gw: &'g Gateway,
    kv: &S,
    now: u64,
    reply: CacheReply,
    sent: Result<(), u32>,
    t: &mut impl Tally,
) -> Option<BodyDecision<'g>> {
    let CacheReply { hit, state, saved, .. } = reply;
    if let Err(status) = sent {
        t.inc(Counter::HostErrors);
        t.log(LogLevel::Error, format!("semgate: cache hit reply refused (status {status}), forwarding"));
        return Some(match state {
            ReplyState::Fast(ctx) => after_fast_path(gw, kv, now, ctx, t),
            ReplyState::Exact { ctx, plan, .. } => after_exact(gw, kv, now, *ctx, *plan),
            ReplyState::Shared { pending, .. } | ReplyState::Semantic(pending) => forward_pending(gw, kv, now, pending),
        });
    }
    // A virtual key's hit is free, but counted (requests, and what it saved).
    let account = match &state {
        ReplyState::Fast(ctx) => hit_account(gw, &ctx.held.admitted),
        ReplyState::Exact { plan, .. } => plan.account.clone(),
        ReplyState::Shared { pending, .. } | ReplyState::Semantic(pending) => pending.plan.account.clone(),
    };
    if let Some(account) = account {
        charge::record_hit(&gw.gov, &account, saved, now);
        t.count(Counter::SavedMicros, saved.unwrap_or(0));
        charge::count_spend(&gw.gov, kv, &account, 0, saved.unwrap_or(0), t);
    }
    // A fast hit is an exact hit too (HitsFast is the subset).
    if hit == Counter::HitsFast {
        t.inc(Counter::HitsExact);
    }
    t.inc(hit);
    match state {
        // Served from the cache: its next byte-identical repeat takes the fast path.
        ReplyState::Exact { ctx, entry, ttl_s, .. } => {
            if let Some(probe) = &ctx.probe {
                remember_fast(gw, kv, probe, &ctx.raw(), &entry, ttl_s, t);
            }
        }
        ReplyState::Shared { entry, .. } if entry.expires_ms > now => store_local(gw, kv, &entry, now, t),
        _ => {}
    }
    None
}

/// Keep a fast-path record: `raw` is now answered by `entry` (see `cache::fastpath`), for no
/// longer than this request's TTL allows (the record is read without its policy).
fn remember_fast<S: SharedData>(
    gw: &Gateway,
    kv: &S,
    probe: &Probe,
    raw: &RawRequest,
    entry: &Entry,
    ttl_s: u64,
    t: &mut impl Tally,
) {
    let bound = entry.created_ms.saturating_add(ttl_s.saturating_mul(1000));
    let clamped;
    let entry = if entry.expires_ms > bound {
        clamped = Entry { expires_ms: bound, ..entry.clone() };
        &clamped
    } else {
        entry
    };
    if FastPath::new(kv, gw.fast).remember(probe, raw, entry) {
        t.inc(Counter::FastRecords);
    }
}

/// Keep an entry in this replica's shared-data cache.
fn store_local<S: SharedData>(gw: &Gateway, kv: &S, entry: &Entry, now: u64, t: &mut impl Tally) {
    match CacheStore::new(kv, gw.limits).insert(entry, now) {
        Ok(stored) => {
            t.inc(Counter::Stores);
            t.count(Counter::Evictions, u64::from(stored.evicted));
            if let Some(bytes) = stored.bytes_in_cache {
                t.gauge(Gauge::CacheBytes, bytes);
            }
        }
        Err(StoreError::TooLarge(_)) => t.inc(Counter::TooLarge),
        Err(e) => {
            t.inc(Counter::StoreFailures);
            t.log(LogLevel::Warn, format!("semgate: cache store failed: {e}"));
        }
    }
}

/// A refresh: the fast-path record of these bytes gets the new answer too.
#[derive(Debug)]
struct RefreshRecord {
    probe: Probe,
    admitted: Admitted,
    body: Vec<u8>,
}

/// A request sent upstream: how its response is marked and, if storable, copied.
#[derive(Debug)]
pub struct Forwarded {
    cache_status: &'static str,
    reason: Option<&'static str>,
    /// The `models` entry that routed the request (labels the final-failure metric).
    route: String,
    /// A chain request's `x-request-id`: keys the upstream role's attempt log, read when
    /// every attempt failed.
    chain_request_id: Option<String>,
    /// Every attempt of the chain failed: the answer is replaced by one 502 naming them.
    all_failed: bool,
    /// Where a complete answer is stored, and for how long.
    store: Option<(CacheKey, u64)>,
    tee: Option<ResponseTee>,
    /// Also store the answer in the sidecar under this text and scope.
    semantic: Option<SemanticQuery>,
    /// The semantic entry's TTL, when not the exact entry's.
    semantic_ttl_s: Option<u64>,
    refresh_record: Option<Box<RefreshRecord>>,
    /// A virtual key's hold on its budget and limits, settled or released by the answer.
    charge: Option<Box<Charge>>,
    /// Reads a successful answer's usage (set once its status is known).
    meter: Option<Meter>,
    strip_usage: bool,
    /// The response head is held until the body's end, to carry the cost.
    hold_head: bool,
    /// Who answered (a chain's upstream role says it in `x-semgate-provider`).
    answered_by: Option<String>,
    settled: Option<charge::Settled>,
}

/// Reserve a virtual key's budget (refusing the request if it has no room), then route.
#[allow(clippy::too_many_arguments)]
fn forward<S: SharedData>(
    gw: &Gateway,
    kv: &S,
    now: u64,
    client_headers: &HeaderMap,
    plan: Plan,
    semantic: Option<SemanticQuery>,
    refresh: Option<RefreshRecord>,
) -> BodyDecision<'static> {
    let charge = match &plan.account {
        None => None,
        Some(account) => {
            let (request, up) = (&plan.request, &plan.upstream);
            match charge::reserve(&gw.gov, kv, account, &request.value, &up.provider, &request.model, plan.price, now) {
                Ok(c) => c.map(Box::new),
                Err(e) => return BodyDecision::Reject(e),
            }
        }
    };
    BodyDecision::Forward(route(gw, client_headers, plan, semantic, refresh, charge))
}

fn route(
    gw: &Gateway,
    client_headers: &HeaderMap,
    mut plan: Plan,
    semantic: Option<SemanticQuery>,
    refresh: Option<RefreshRecord>,
    charge: Option<Box<Charge>>,
) -> Forward {
    let (cache_status, reason, counter) = match plan.cache {
        CachePlan::Lookup { .. } => ("miss", None, Counter::Misses),
        CachePlan::Refresh { .. } => ("refresh", None, Counter::Bypasses),
        CachePlan::Bypass(r) => ("bypass", Some(r.as_str()), Counter::Bypasses),
    };
    let store = plan.cache.store_as();
    let semantic_ttl_s = plan.semantic.ttl_s;
    let chain_request_id =
        if plan.upstream.chain { client_headers.get("x-request-id").map(str::to_string) } else { None };
    let route = plan.upstream.route.clone();
    let strip_usage = plan.strip_stream_usage;
    let body = plan.upstream_body.take().map(|b| (plan.body_len, b));
    let mut edit = RequestEdit::to(gw, client_headers, plan.upstream);
    if let Some((_, b)) = &body {
        edit.set.push(("content-length", b.len().to_string()));
    }
    edit.body = body;
    Forward {
        edit,
        counter,
        forwarded: Box::new(Forwarded {
            cache_status,
            reason,
            route,
            chain_request_id,
            all_failed: false,
            store,
            tee: None,
            semantic,
            semantic_ttl_s,
            refresh_record: refresh.map(Box::new),
            charge,
            meter: None,
            strip_usage,
            hold_head: false,
            answered_by: None,
            settled: None,
        }),
    }
}

impl Forwarded {
    /// Response headers that say what the gateway did.
    pub fn response_marks(&self) -> Vec<(&'static str, Value)> {
        let mut marks = Vec::with_capacity(4);
        marks.push(("x-semgate-cache", Cow::Borrowed(self.cache_status)));
        if let Some(r) = self.reason {
            marks.push(("x-semgate-cache-reason", Cow::Borrowed(r)));
        }
        if let Some((key, _)) = &self.store {
            marks.push(("x-semgate-key", Cow::Owned(key.short())));
        }
        marks
    }

    /// Whether the host should read the response headers (a storable answer, a chain's, or
    /// one a virtual key pays for).
    pub fn wants_response_head(&self) -> bool {
        self.store.is_some() || self.chain_request_id.is_some() || self.charge.is_some()
    }

    /// A paid answer's head: a failure releases the reservation; a success starts reading its
    /// usage. Returns the headers to add now and whether to hold the head until the body's
    /// end (a JSON answer, so its head can carry the cost).
    pub fn meter_response<S: SharedData>(
        &mut self,
        gw: &Gateway,
        kv: &S,
        now: u64,
        headers: &HeaderMap,
        end_of_stream: bool,
        t: &mut impl Tally,
    ) -> (Vec<(&'static str, Value)>, bool) {
        let Some(c) = self.charge.as_mut() else { return (Vec::new(), false) };
        let [status, content_type, provider] = headers.pick([":status", "content-type", "x-semgate-provider"]);
        self.answered_by = provider.map(str::to_string);
        let ok = status.and_then(|s| s.parse::<u16>().ok()).is_some_and(|s| (200..300).contains(&s));
        if !ok {
            c.release(kv, now);
            return (Vec::new(), false);
        }
        let meter = Meter::for_response(content_type, self.strip_usage);
        let json = matches!(meter, Meter::Json(_));
        self.meter = Some(meter);
        if end_of_stream {
            return (self.settle(gw, kv, now, t), false);
        }
        if json {
            self.hold_head = true;
            return (Vec::new(), true);
        }
        // A stream's cost is known only at its end (the access log and the ledger have it).
        let marks = match c.remaining(kv, now) {
            Some(r) => vec![("x-semgate-budget-remaining-usd", Cow::Owned(charge::usd(r)))],
            None => Vec::new(),
        };
        (marks, false)
    }

    /// Settle at the answer's usage; the cost headers.
    fn settle<S: SharedData>(&mut self, gw: &Gateway, kv: &S, now: u64, t: &mut impl Tally) -> Vec<(&'static str, Value)> {
        let Some(c) = self.charge.as_mut() else { return Vec::new() };
        let (usage, model) = self.meter.as_ref().map(Meter::usage).unwrap_or((None, None));
        let Some(settled) = c.settle(&gw.gov, kv, usage, self.answered_by.as_deref(), model.as_deref(), now) else {
            return Vec::new();
        };
        t.count(Counter::SpendMicros, settled.cost_micros);
        charge::count_spend(&gw.gov, kv, &c.account, settled.cost_micros, 0, t);
        self.settled = Some(settled);
        let mut marks = vec![("x-semgate-cost-usd", Cow::Owned(charge::usd(settled.cost_micros)))];
        if let Some(r) = c.remaining(kv, now) {
            marks.push(("x-semgate-budget-remaining-usd", Cow::Owned(charge::usd(r))));
        }
        marks
    }

    /// A virtual key's request for the access log (`wasm.semgate` filter state), once settled.
    pub fn access_log(&self) -> Option<String> {
        let c = self.charge.as_ref()?;
        let s = self.settled?;
        let u = s.usage.unwrap_or_default();
        Some(
            serde_json::json!({
                "key": c.account.key_id, "team": c.team, "customer": c.account.customer, "model": c.model,
                "provider": self.answered_by, "input_tokens": u.input + u.cached_input + u.cache_write,
                "output_tokens": u.output, "cost_usd": charge::usd(s.cost_micros), "cache": self.cache_status,
            })
            .to_string(),
        )
    }

    /// The head is held until the body's end (the body is read once, whole, at the end).
    pub fn head_held(&self) -> bool {
        self.hold_head
    }

    /// The stream is over (completed, failed, or the client left). A paid request that never
    /// settled: charged its reservation if an answer had started, else released.
    pub fn on_done<S: SharedData>(&mut self, gw: &Gateway, kv: &S, now: u64, t: &mut impl Tally) {
        match self.charge.as_ref() {
            Some(c) if !c.done => {}
            _ => return,
        }
        if self.meter.is_some() {
            self.settle(gw, kv, now, t);
        } else if let Some(c) = self.charge.as_mut() {
            c.release(kv, now);
        }
    }

    /// A chain's answer was replaced by the all-failed 502: nothing was paid for.
    pub fn release<S: SharedData>(&mut self, kv: &S, now: u64) {
        if let Some(c) = self.charge.as_mut() {
            c.release(kv, now);
        }
    }

    /// A chain's final answer is a failure (5xx or 429 after the retries): the host holds the
    /// response and replaces it with [`Forwarded::all_failed_reply`].
    pub fn check_chain_failure(&mut self, headers: &HeaderMap) -> bool {
        if self.chain_request_id.is_none() {
            return false;
        }
        let status = headers.get(":status").and_then(|s| s.parse::<u16>().ok()).unwrap_or(0);
        self.all_failed = status >= 500 || status == 429;
        if self.all_failed {
            self.store = None;
            self.tee = None;
            self.semantic = None;
        }
        self.all_failed
    }

    pub fn is_all_failed(&self) -> bool {
        self.all_failed
    }

    /// The `models` entry that routed the request.
    pub fn route(&self) -> &str {
        &self.route
    }

    /// The 502 naming each attempt's provider and status (no provider body, no key).
    pub fn all_failed_reply<S: SharedData>(&self, kv: &S) -> Vec<u8> {
        let attempts =
            self.chain_request_id.as_deref().map(|id| crate::core::upstream::read_attempts(kv, id)).unwrap_or_default();
        crate::core::upstream::all_attempts_failed(&attempts)
    }

    /// Start copying the response if its head says it could be stored.
    pub fn on_response_headers(&mut self, gw: &Gateway, headers: &HeaderMap, end_of_stream: bool, t: &mut impl Tally) {
        if self.store.is_none() {
            return;
        }
        let [status, content_type, content_encoding] = headers.pick([":status", "content-type", "content-encoding"]);
        let status = status.and_then(|s| s.parse::<u16>().ok()).unwrap_or(0);
        match ResponseTee::start(status, content_type, content_encoding, gw.limits.max_entry_bytes as usize) {
            Ok(tee) if !end_of_stream => self.tee = Some(tee),
            _ => t.inc(Counter::NotStored),
        }
    }

    /// Whether the host should read the response body (a copy is kept, or usage read).
    pub fn wants_response_body(&self) -> bool {
        self.tee.is_some() || self.meter.is_some()
    }

    /// The host could not read a chunk: the copy is incomplete, drop it.
    pub fn drop_copy(&mut self) {
        self.tee = None;
    }

    /// A response chunk went by: read its usage (cutting the usage chunk the client did not
    /// ask for) and copy what the client gets; at the end, settle the charge and store a
    /// complete answer here, and return the sidecar store to send (fire and forget).
    pub fn on_response_body<'g, S: SharedData>(
        &mut self,
        gw: &'g Gateway,
        kv: &S,
        now: u64,
        chunk: &[u8],
        end_of_stream: bool,
        t: &mut impl Tally,
    ) -> BodyOutcome<'g> {
        let replace = self.meter.as_mut().and_then(|m| m.push(chunk, end_of_stream));
        let sent = replace.as_deref().unwrap_or(chunk);
        let store = self.copy(gw, kv, now, sent, end_of_stream, t);
        let head = if end_of_stream && self.meter.is_some() { self.settle(gw, kv, now, t) } else { Vec::new() };
        BodyOutcome { store, replace, head }
    }

    fn copy<'g, S: SharedData>(
        &mut self,
        gw: &'g Gateway,
        kv: &S,
        now: u64,
        chunk: &[u8],
        end_of_stream: bool,
        t: &mut impl Tally,
    ) -> Option<Callout<'g>> {
        let tee = self.tee.as_mut()?;
        tee.push(chunk);
        if tee.is_overflowed() {
            t.inc(Counter::TooLarge);
            self.tee = None;
            return None;
        }
        if !end_of_stream {
            return None;
        }
        let (tee, (key, ttl_s)) = (self.tee.take()?, self.store?);
        let response = match tee.finish() {
            Ok(r) => r,
            Err(NotStorable::TooLarge) => {
                t.inc(Counter::TooLarge);
                return None;
            }
            Err(_) => {
                t.inc(Counter::NotStored);
                return None;
            }
        };
        let entry = Entry { key, created_ms: now, expires_ms: now + ttl_s * 1000, response };
        let callout = self.semantic.take().map(|q| {
            let sem = &gw.config.semantic;
            Callout {
                kind: CalloutKind::Store,
                cluster: &sem.cluster,
                path: "/v1/store",
                authorization: gw.sidecar_auth.as_deref(),
                body: semantic::store_body(&q, &key, &entry.response, self.semantic_ttl_s.unwrap_or(ttl_s)),
                timeout_ms: STORE_TIMEOUT_MS,
            }
        });
        store_local(gw, kv, &entry, now, t);
        if let Some(r) = self.refresh_record.take() {
            remember_fast(gw, kv, &r.probe, &raw_request(&r.admitted, &r.body), &entry, ttl_s, t);
        }
        callout
    }
}

/// What the host does with a response chunk.
#[derive(Debug)]
pub struct BodyOutcome<'g> {
    /// The sidecar store to send.
    pub store: Option<Callout<'g>>,
    /// Bytes to send instead of the chunk.
    pub replace: Option<Vec<u8>>,
    /// Headers for a held head (the cost), set before it is released.
    pub head: Vec<(&'static str, Value)>,
}

/// The root's periodic ledger sync: the spend every worker settled since the last one (or the
/// sync still unanswered, resent unchanged), sent to the sidecar's ledger. `None` when no
/// ledger is configured or the book cannot be read.
pub fn ledger_sync<'g, S: SharedData>(gw: &'g Gateway, kv: &S) -> Option<(Callout<'g>, String)> {
    let cluster = gw.config.ledger.cluster.as_deref()?;
    let _ = flush_local(kv);
    let sync = update_book(kv, |book| book.begin_sync(&gw.replica, &gw.epoch)).ok()?;
    let body = serde_json::to_vec(&sync).ok()?;
    let callout = Callout {
        kind: CalloutKind::Store,
        cluster,
        path: "/v1/ledger/sync",
        authorization: gw.ledger_auth.as_deref(),
        body,
        timeout_ms: gw.config.ledger.timeout_ms,
    };
    Some((callout, sync.sync_id))
}

/// The ledger answered sync `sync_id`: the sync is done, and every budget record learns what
/// the other replicas spent. Any other answer keeps the sync, to be resent.
pub fn on_ledger_answer<S: SharedData>(kv: &S, sync_id: &str, status: Option<&str>, body: Option<&[u8]>, t: &mut impl Tally) {
    let parsed = match (status, body) {
        (Some("200"), Some(b)) => serde_json::from_slice::<SyncResponse>(b).ok(),
        _ => None,
    };
    let Some(answer) = parsed else {
        t.inc(Counter::LedgerErrors);
        return;
    };
    let _ = update_book(kv, |book| book.ack(sync_id));
    let ledger = BudgetLedger { kv };
    for (record_key, row) in answer.totals.record_keys() {
        let _ = ledger.apply_ledger(&record_key, row.spent_micros, row.own_spent_micros.unwrap_or(0));
    }
    t.inc(Counter::LedgerSyncs);
}

/// This Envoy process's epoch, the same for every worker: the configured one, or the first
/// worker's `fallback` (its start time), kept in shared data (which lives as long as the
/// process).
pub fn process_epoch<S: SharedData>(kv: &S, configured: Option<&str>, fallback: &str) -> String {
    const KEY: &str = "semgate:ledger:epoch";
    if let Some(name) = configured {
        return name.to_string();
    }
    for _ in 0..4 {
        if let Some((b, _)) = kv.get(KEY) {
            return String::from_utf8_lossy(&b).into_owned();
        }
        if kv.set(KEY, fallback.as_bytes(), None).is_ok() {
            return fallback.to_string();
        }
    }
    fallback.to_string()
}

/// Lay out the cache in shared data at configure time; the bytes it already holds (another
/// worker or an earlier configuration filled it).
pub fn init_store<S: SharedData>(gw: &Gateway, kv: &S) -> Result<u64, String> {
    let store = CacheStore::new(kv, gw.limits);
    store.init().map_err(|e| format!("cannot lay out the cache in shared data: {e}"))?;
    Ok(store.bytes_in_cache())
}

#[cfg(test)]
#[path = "tests/downstream_tests.rs"]
mod tests;
