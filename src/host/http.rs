//! One request through the gateway, as a small state machine (`Phase`): hold the headers,
//! read the body, then answer locally (exact hit, rejection), ask the sidecar (semantic
//! lookup, failing open), or route upstream and tee the response into the caches when it
//! completes.

use crate::core::cache::entry::{CachedResponse, Entry};
use crate::core::cache::fastpath::{self, FastLookup, FastPath, Probe, RawRequest};
use crate::core::cache::key::CacheKey;
use crate::core::cache::store::{CacheStore, Lookup, StoreError};
use crate::core::cache::tee::{NotStorable, ResponseTee};
use crate::core::errors::GatewayError;
use crate::core::gateway::{
    admit, fresh_for, plan, Admitted, CachePlan, ClientDirective, HeadDecision, Plan, RequestHead, Upstream,
};
use crate::core::semantic::{self, HitTier, LookupError, SemanticHit, SemanticQuery};
use crate::core::wire::headermap::HeaderMap;
use crate::host::abi::{self, Buffer, Headers, Level};
use crate::host::root::Runtime;
use crate::host::shared::EnvoySharedData;
use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::Action;
use std::rc::Rc;

enum Phase {
    /// Headers not seen yet.
    Start,
    /// Relayed on a `passthrough` path: every later callback continues untouched.
    PassThrough,
    /// Admitted; the headers are held until the whole body has arrived.
    ReadingBody(Admitted),
    /// Exact miss; the sidecar is looking for a semantic hit while the request is held.
    AwaitingLookup(Box<Pending>),
    /// Sent upstream; the response is marked and, if storable, copied.
    Forwarded(Box<Forwarded>),
    /// Answered by the filter (hit or rejection).
    Answered,
}

struct Forwarded {
    cache_status: &'static str,
    reason: Option<&'static str>,
    provider: String,
    key: CacheKey,
    store: Option<(CacheKey, u64)>,
    tee: Option<ResponseTee>,
    /// Also store the answer in the sidecar under this text and scope.
    semantic: Option<SemanticQuery>,
    /// The semantic entry's TTL, when not the exact entry's.
    semantic_ttl_s: Option<u64>,
    /// A refresh: the fast-path record of these bytes gets the new answer too.
    refresh_record: Option<Box<RefreshRecord>>,
}

struct RefreshRecord {
    probe: Probe,
    admitted: Admitted,
    body: Vec<u8>,
}

fn raw_request<'a>(admitted: &'a Admitted, body: &'a [u8]) -> RawRequest<'a> {
    RawRequest {
        tenant: &admitted.tenant,
        path: &admitted.path,
        route: admitted.route_name.as_deref().unwrap_or(""),
        body,
    }
}

struct Pending {
    plan: Plan,
    query: SemanticQuery,
    token: u32,
    /// When the lookup was sent, for `semgate_sidecar_lookup_ms`.
    sent_ms: u64,
}

pub struct GatewayHttp {
    rt: Option<Rc<Runtime>>,
    phase: Phase,
    /// The client's request headers as read at the headers phase: what `forward` must drop
    /// is decided from them only if the request goes upstream (each removal is a host call).
    client_headers: HeaderMap,
    /// The client's path (query included) is already the provider's.
    path_is_upstream: bool,
}

impl GatewayHttp {
    pub fn new(rt: Option<Rc<Runtime>>) -> Self {
        GatewayHttp { rt, phase: Phase::Start, client_headers: HeaderMap::default(), path_is_upstream: false }
    }

    /// The one place an error becomes a client response.
    fn reject(&mut self, rt: &Runtime, error: GatewayError) -> Action {
        rt.metrics.inc(rt.metrics.rejected);
        if error.status() >= 500 {
            rt.metrics.inc(rt.metrics.host_errors);
        }
        let body = error.to_json();
        if let Err(e) = abi::send_local_response(error.status(), &[("content-type", "application/json")], &body) {
            rt.metrics.inc(rt.metrics.host_errors);
            abi::log(Level::Error, &format!("semgate: local reply refused (status {})", e.0));
        }
        self.phase = Phase::Answered;
        Action::Pause
    }

    fn on_headers(&mut self, rt: &Runtime, end_of_stream: bool) -> Action {
        let headers = abi::get_headers(Headers::Request);
        // One pass over the map for every header read here ("" never names a header).
        let [method, path, authorization, tenant, content_length, cache_control, semgate_cache] = headers.pick([
            ":method",
            ":path",
            "authorization",
            // An untrusted tenant header is never read ("" names no header).
            rt.gw.keys.trusted_tenant_header().unwrap_or(""),
            "content-length",
            "cache-control",
            "x-semgate-cache",
        ]);
        fn nonempty(v: Option<&str>) -> Option<&str> {
            v.filter(|v| !v.is_empty())
        }
        // Property lookups cost a host round trip: only when a policy matches on routes.
        let route_name = if rt.needs_route_name {
            abi::get_property(&["xds", "route_name"]).and_then(|v| String::from_utf8(v).ok()).filter(|v| !v.is_empty())
        } else {
            None
        };
        let head = RequestHead {
            method: nonempty(method).unwrap_or_default(),
            path: nonempty(path).unwrap_or_default(),
            authorization: nonempty(authorization),
            tenant: nonempty(tenant),
            content_length: nonempty(content_length),
            cache_control: nonempty(cache_control),
            semgate_cache: nonempty(semgate_cache),
            route_name: route_name.as_deref(),
        };
        let decision = admit(&rt.gw, &head);
        self.client_headers = headers;
        match decision {
            HeadDecision::Relay(up) => {
                rt.metrics.inc(rt.metrics.relayed);
                self.path_is_upstream = true;
                if let Err(e) = self.rewrite_request_headers(rt, &up) {
                    return self.reject(rt, e);
                }
                self.phase = Phase::PassThrough;
                Action::Continue
            }
            HeadDecision::Reject(e) => self.reject(rt, e),
            HeadDecision::ReadBody(admitted) => {
                rt.metrics.inc(rt.metrics.requests);
                if end_of_stream {
                    return self.reject(rt, GatewayError::InvalidJson("the request has no body".into()));
                }
                self.phase = Phase::ReadingBody(admitted);
                Action::Pause
            }
        }
    }

    fn on_body(&mut self, rt: &Runtime, body_size: usize, end_of_stream: bool) -> Action {
        if body_size as u64 > rt.gw.config.max_body_bytes {
            return self
                .reject(rt, GatewayError::BodyTooLarge { size: body_size as u64, limit: rt.gw.config.max_body_bytes });
        }
        if !end_of_stream {
            return Action::Pause;
        }
        self.on_complete_body(rt, body_size)
    }

    /// The whole body is buffered (end of stream, or trailers arrived): decide.
    fn on_complete_body(&mut self, rt: &Runtime, body_size: usize) -> Action {
        let Phase::ReadingBody(admitted) = std::mem::replace(&mut self.phase, Phase::Answered) else {
            return Action::Continue;
        };
        let body = match abi::get_buffer(Buffer::RequestBody, 0, body_size) {
            Ok(b) => b,
            Err(e) => {
                rt.metrics.inc(rt.metrics.host_errors);
                abi::log(Level::Error, &format!("semgate: cannot read the request body (status {})", e.0));
                return self.reject(rt, GatewayError::Internal("the request body could not be read".into()));
            }
        };
        // One clock read for the whole decision (fast path, then the canonical lookup).
        let now = now_ms();
        // Byte-identical repeat of a request served from the cache: answered before any parse.
        let raw = raw_request(&admitted, &body);
        let fast = (admitted.directive != ClientDirective::Bypass && rt.fast.may_hold(&raw))
            .then(|| fastpath::probe(&rt.fast, &raw));
        if let (Some(probe), ClientDirective::Normal) = (&fast, &admitted.directive) {
            if let FastLookup::Hit(entry) = FastPath::new(&EnvoySharedData, rt.fast).lookup(probe, &raw, now) {
                if self.reply_hit(rt, &entry, now) {
                    rt.metrics.inc(rt.metrics.hits_fast);
                    return Action::Pause;
                }
            }
        }
        let plan = match plan(&rt.gw, &admitted, &body) {
            Ok(p) => p,
            Err(e) => return self.reject(rt, e),
        };
        self.path_is_upstream = !admitted.has_query && admitted.path == plan.upstream.path;
        if let CachePlan::Lookup { key, ttl_s } = plan.cache {
            let kv = EnvoySharedData;
            match CacheStore::new(&kv, rt.limits).lookup(&key, now) {
                // An entry stored under a longer TTL (another path's policy) is as old as
                // this request's policy allows, or it is a miss.
                Lookup::Hit(entry) if !fresh_for(entry.created_ms, ttl_s, now) => rt.metrics.inc(rt.metrics.expired),
                Lookup::Hit(entry) => {
                    if self.reply_hit(rt, &entry, now) {
                        // Served from the cache: its next byte-identical repeat takes the fast path.
                        if let Some(probe) = &fast {
                            Self::remember_fast(rt, probe, &raw, &entry, ttl_s);
                        }
                        return Action::Pause;
                    }
                }
                Lookup::Expired => rt.metrics.inc(rt.metrics.expired),
                Lookup::Miss => {}
            }
        }
        let sem = &rt.gw.config.semantic;
        let query = match plan.cache.store_as() {
            Some(_) if plan.semantic.enabled => {
                let provider = rt.gw.config.cache.cache_by_provider.then_some(plan.upstream.provider.as_str());
                semantic::semantic_query(&plan.request, &admitted.tenant, provider, sem)
            }
            _ => None,
        };
        if let (Some(q), CachePlan::Lookup { key, .. }) = (&query, plan.cache) {
            let body = semantic::lookup_body(q, &key, sem, plan.semantic.threshold);
            match abi::http_call(&sem.cluster, "/v1/lookup", rt.gw.sidecar_auth.as_deref(), &body, sem.timeout_ms) {
                Ok(token) => {
                    let pending = Pending { plan, query: q.clone(), token, sent_ms: now_ms() };
                    self.phase = Phase::AwaitingLookup(Box::new(pending));
                    return Action::Pause;
                }
                Err(e) => {
                    // Sidecar cluster missing or overloaded: fail open.
                    rt.metrics.inc(rt.metrics.sidecar_errors);
                    abi::log(Level::Warn, &format!("semgate: semantic lookup not sent (status {})", e.0));
                }
            }
        }
        let refresh = matches!(plan.cache, CachePlan::Refresh { .. });
        let action = self.forward(rt, plan, query);
        if let (true, Some(probe), Phase::Forwarded(f)) = (refresh, fast, &mut self.phase) {
            f.refresh_record = Some(Box::new(RefreshRecord { probe, admitted, body }));
        }
        action
    }

    /// The sidecar answered (or timed out): reply with a semantic hit, or let the request go on.
    fn on_lookup_answer(&mut self, rt: &Runtime, token: u32, body_size: usize) {
        let Phase::AwaitingLookup(p) = std::mem::replace(&mut self.phase, Phase::Answered) else { return };
        if p.token != token {
            self.phase = Phase::AwaitingLookup(p);
            return;
        }
        let call_headers = abi::get_headers(Headers::CallResponse);
        let status = call_headers.get(":status");
        let answer = match status {
            Some("200") => abi::get_buffer(Buffer::CallResponseBody, 0, body_size)
                .map_err(|e| LookupError::Protocol(format!("status {}", e.0)))
                .and_then(|body| semantic::parse_lookup(&body, p.plan.request.stream)),
            // A timeout or a reset reaches here with no headers at all.
            other => Err(LookupError::Protocol(format!(
                "sidecar answered {}",
                other.unwrap_or("nothing (timeout or connection failure)")
            ))),
        };
        let Pending { plan, query, sent_ms, .. } = *p;
        rt.metrics.set(rt.metrics.lookup_ms, now_ms().saturating_sub(sent_ms));
        match answer {
            Ok(Some(hit)) if hit.tier == HitTier::Exact => {
                if self.reply_shared_exact(rt, &plan, hit) {
                    return;
                }
            }
            Ok(Some(hit)) if !self.semantic_fresh(&plan, hit.created_ms) => rt.metrics.inc(rt.metrics.expired),
            Ok(Some(hit)) => {
                let score = format!("{:.4}", hit.score);
                let marks = [("x-semgate-cache", "hit-semantic"), ("x-semgate-similarity", score.as_str())];
                if self.reply_cached(rt, &hit.response, &marks, rt.metrics.hits_semantic) {
                    return;
                }
            }
            Ok(None) => rt.metrics.inc(rt.metrics.semantic_misses),
            Err(LookupError::UnsafeEntry) => {
                rt.metrics.inc(rt.metrics.unsafe_entries);
                abi::log(Level::Warn, "semgate: a sidecar entry with a foreign content type was not replayed");
            }
            Err(e) => {
                rt.metrics.inc(rt.metrics.sidecar_errors);
                abi::log(Level::Warn, &format!("semgate: semantic lookup failed, failing open: {e}"));
            }
        }
        if let Action::Continue = self.forward(rt, plan, Some(query)) {
            if abi::resume_request().is_err() {
                rt.metrics.inc(rt.metrics.host_errors);
            }
        }
    }

    /// A semantic entry is served only while younger than this request's semantic TTL.
    fn semantic_fresh(&self, plan: &Plan, created_ms: Option<u64>) -> bool {
        let ttl_s = plan.semantic.ttl_s.or(plan.cache.store_as().map(|(_, t)| t));
        match (created_ms, ttl_s) {
            (Some(created), Some(ttl)) => fresh_for(created, ttl, now_ms()),
            _ => true,
        }
    }

    /// Answer an exact hit from the shared-data entry.
    fn reply_hit(&mut self, rt: &Runtime, entry: &Entry, now: u64) -> bool {
        self.reply_exact(rt, entry, now, None, rt.metrics.hits_exact)
    }

    /// An exact hit's reply: its key and age, and the tier that held it when not this replica's.
    fn reply_exact(&mut self, rt: &Runtime, entry: &Entry, now: u64, tier: Option<&str>, hit_metric: u32) -> bool {
        let age = (now.saturating_sub(entry.created_ms) / 1000).to_string();
        let key = entry.key.short();
        let marks = [("x-semgate-cache", "hit-exact"), ("x-semgate-key", key.as_str()), ("age", age.as_str())];
        match tier {
            None => self.reply_cached(rt, &entry.response, &marks, hit_metric),
            Some(t) => {
                let [cache, key, age] = marks;
                self.reply_cached(rt, &entry.response, &[cache, ("x-semgate-tier", t), key, age], hit_metric)
            }
        }
    }

    /// Answer from the sidecar's shared exact tier (another replica stored it), and keep a
    /// copy in this replica's cache until the original expiry, so the next hit is local.
    fn reply_shared_exact(&mut self, rt: &Runtime, plan: &Plan, hit: SemanticHit) -> bool {
        let CachePlan::Lookup { key, ttl_s } = plan.cache else { return false };
        let now = now_ms();
        let created_ms = hit.created_ms.unwrap_or(now).min(now);
        if !fresh_for(created_ms, ttl_s, now) {
            rt.metrics.inc(rt.metrics.expired);
            return false;
        }
        let expires_ms = hit.expires_ms.unwrap_or(u64::MAX).min(now + ttl_s * 1000);
        let entry = Entry { key, created_ms, expires_ms, response: hit.response };
        if !self.reply_exact(rt, &entry, now, Some("shared"), rt.metrics.hits_shared) {
            return false;
        }
        if expires_ms > now {
            Self::store_local(rt, &entry, now);
        }
        true
    }

    /// The one place a cached answer becomes a local reply (exact or semantic hit); false if
    /// the host refused, and the request then goes upstream.
    fn reply_cached(
        &mut self,
        rt: &Runtime,
        response: &CachedResponse,
        marks: &[(&str, &str)],
        hit_metric: u32,
    ) -> bool {
        let mut headers = vec![("content-type", response.content_type.as_str())];
        headers.extend_from_slice(marks);
        match abi::send_local_response(200, &headers, &response.body()) {
            Ok(()) => {
                rt.metrics.inc(hit_metric);
                self.phase = Phase::Answered;
                true
            }
            Err(e) => {
                rt.metrics.inc(rt.metrics.host_errors);
                abi::log(Level::Error, &format!("semgate: cache hit reply refused (status {}), forwarding", e.0));
                false
            }
        }
    }

    /// Set what the gateway decided on the request going upstream: the cluster, the
    /// provider's path (unless the client's is already it), authority and key; and drop every
    /// client header that is not forwarded (credentials, `x-semgate-*`, anything not listed).
    fn rewrite_request_headers(&self, rt: &Runtime, up: &Upstream) -> Result<(), GatewayError> {
        let names = self.client_headers.iter().map(|(k, _)| k);
        let mut result = Ok(());
        // Removals first: a client's own `x-semgate-cluster` goes before the gateway's is set.
        for name in rt.gw.headers_to_drop(names) {
            // Replaced below rather than removed first: one host call, not two.
            if name == "authorization" && up.authorization.is_some() {
                continue;
            }
            result = result.and_then(|_| abi::remove_header(Headers::Request, &name));
        }
        result = result.and_then(|_| abi::set_header(Headers::Request, "x-semgate-cluster", &up.cluster));
        if !self.path_is_upstream {
            result = result.and_then(|_| abi::set_header(Headers::Request, ":path", &up.path));
        }
        if let Some(a) = &up.authority {
            result = result.and_then(|_| abi::set_header(Headers::Request, ":authority", a));
        }
        if let Some(auth) = &up.authorization {
            result = result.and_then(|_| abi::set_header(Headers::Request, "authorization", auth));
        }
        result.map_err(|e| {
            abi::log(Level::Error, &format!("semgate: cannot rewrite the request headers (status {})", e.0));
            GatewayError::Internal("the request could not be routed".into())
        })
    }

    /// Route upstream: the cluster for the model, the provider's path, authority and key.
    fn forward(&mut self, rt: &Runtime, plan: Plan, semantic: Option<SemanticQuery>) -> Action {
        if let Err(e) = self.rewrite_request_headers(rt, &plan.upstream) {
            return self.reject(rt, e);
        }
        let up = &plan.upstream;
        let (cache_status, reason, key) = match plan.cache {
            CachePlan::Lookup { key, .. } => {
                rt.metrics.inc(rt.metrics.misses);
                ("miss", None, key)
            }
            CachePlan::Refresh { key, .. } => {
                rt.metrics.inc(rt.metrics.bypasses);
                ("refresh", None, key)
            }
            CachePlan::Bypass(r) => {
                rt.metrics.inc(rt.metrics.bypasses);
                ("bypass", Some(r.as_str()), CacheKey([0; 32]))
            }
        };
        self.phase = Phase::Forwarded(Box::new(Forwarded {
            cache_status,
            reason,
            provider: up.provider.clone(),
            key,
            store: plan.cache.store_as(),
            tee: None,
            semantic,
            semantic_ttl_s: plan.semantic.ttl_s,
            refresh_record: None,
        }));
        Action::Continue
    }

    /// Keep a fast-path record: `raw` is now answered by `entry` (see `core::fastpath`), for
    /// no longer than this request's TTL allows (the record is read without its policy).
    fn remember_fast(rt: &Runtime, probe: &Probe, raw: &RawRequest, entry: &Entry, ttl_s: u64) {
        let bound = entry.created_ms.saturating_add(ttl_s.saturating_mul(1000));
        let clamped;
        let entry = if entry.expires_ms > bound {
            clamped = Entry { expires_ms: bound, ..entry.clone() };
            &clamped
        } else {
            entry
        };
        if FastPath::new(&EnvoySharedData, rt.fast).remember(probe, raw, entry) {
            rt.metrics.inc(rt.metrics.fast_records);
        }
    }

    /// Keep an entry in this replica's shared-data cache.
    fn store_local(rt: &Runtime, entry: &Entry, now: u64) {
        match CacheStore::new(&EnvoySharedData, rt.limits).insert(entry, now) {
            Ok(stored) => {
                rt.metrics.inc(rt.metrics.stores);
                rt.metrics.add(rt.metrics.evictions, stored.evicted as u64);
                if let Some(bytes) = stored.bytes_in_cache {
                    rt.metrics.set(rt.metrics.bytes, bytes);
                }
            }
            Err(StoreError::TooLarge(_)) => rt.metrics.inc(rt.metrics.too_large),
            Err(e) => {
                rt.metrics.inc(rt.metrics.store_failures);
                abi::log(Level::Warn, &format!("semgate: cache store failed: {e}"));
            }
        }
    }

    fn on_response_headers(&mut self, rt: &Runtime, end_of_stream: bool) {
        let Phase::Forwarded(f) = &mut self.phase else {
            return;
        };
        let mut marks =
            vec![("x-semgate-cache", f.cache_status.to_string()), ("x-semgate-provider", f.provider.clone())];
        if let Some(r) = f.reason {
            marks.push(("x-semgate-cache-reason", r.to_string()));
        }
        if f.store.is_some() {
            marks.push(("x-semgate-key", f.key.short()));
        }
        for (k, v) in &marks {
            if abi::set_header(Headers::Response, k, v).is_err() {
                rt.metrics.inc(rt.metrics.host_errors);
            }
        }
        if f.store.is_none() {
            return;
        }
        let headers = abi::get_headers(Headers::Response);
        let [status, content_type, content_encoding] = headers.pick([":status", "content-type", "content-encoding"]);
        let status = status.and_then(|s| s.parse::<u16>().ok()).unwrap_or(0);
        match ResponseTee::start(status, content_type, content_encoding, rt.limits.max_entry_bytes as usize) {
            Ok(tee) if !end_of_stream => f.tee = Some(tee),
            _ => rt.metrics.inc(rt.metrics.not_stored),
        }
    }

    fn on_response_body(&mut self, rt: &Runtime, body_size: usize, end_of_stream: bool) {
        let Phase::Forwarded(f) = &mut self.phase else {
            return;
        };
        let Some(tee) = f.tee.as_mut() else { return };
        if body_size > 0 {
            match abi::get_buffer(Buffer::ResponseBody, 0, body_size) {
                Ok(chunk) => tee.push(&chunk),
                Err(_) => {
                    rt.metrics.inc(rt.metrics.host_errors);
                    f.tee = None;
                    return;
                }
            }
        }
        if tee.is_overflowed() {
            rt.metrics.inc(rt.metrics.too_large);
            f.tee = None;
            return;
        }
        if !end_of_stream {
            return;
        }
        let (Some(tee), Some((key, ttl_s))) = (f.tee.take(), f.store) else {
            return;
        };
        match tee.finish() {
            Ok(response) => {
                let now = now_ms();
                let entry = Entry { key, created_ms: now, expires_ms: now + ttl_s * 1000, response };
                if let Some(q) = f.semantic.take() {
                    let sem = &rt.gw.config.semantic;
                    let body = semantic::store_body(&q, &key, &entry.response, f.semantic_ttl_s.unwrap_or(ttl_s));
                    // Fire and forget: the answer, if any, is not waited for.
                    match abi::http_call(&sem.cluster, "/v1/store", rt.gw.sidecar_auth.as_deref(), &body, 5_000) {
                        Ok(_) => rt.metrics.inc(rt.metrics.semantic_stores),
                        Err(_) => rt.metrics.inc(rt.metrics.sidecar_errors),
                    }
                }
                Self::store_local(rt, &entry, now);
                if let Some(r) = f.refresh_record.take() {
                    Self::remember_fast(rt, &r.probe, &raw_request(&r.admitted, &r.body), &entry, ttl_s);
                }
            }
            Err(NotStorable::TooLarge) => rt.metrics.inc(rt.metrics.too_large),
            Err(_) => rt.metrics.inc(rt.metrics.not_stored),
        }
    }
}

fn now_ms() -> u64 {
    proxy_wasm::hostcalls::get_current_time()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_millis() as u64)
}

impl Context for GatewayHttp {
    fn on_http_call_response(&mut self, token_id: u32, _num_headers: usize, body_size: usize, _num_trailers: usize) {
        if let Some(rt) = self.rt.clone() {
            self.on_lookup_answer(&rt, token_id, body_size);
        }
    }
}

impl HttpContext for GatewayHttp {
    fn on_http_request_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        let Some(rt) = self.rt.clone() else {
            // Unreachable in practice: Envoy does not serve with a plugin whose configure failed.
            let error = GatewayError::Internal("semgate is not configured".into());
            let _ = abi::send_local_response(503, &[("content-type", "application/json")], &error.to_json());
            self.phase = Phase::Answered;
            return Action::Pause;
        };
        self.on_headers(&rt, end_of_stream)
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        match (&self.phase, self.rt.clone()) {
            (Phase::ReadingBody(_), Some(rt)) => self.on_body(&rt, body_size, end_of_stream),
            (Phase::Answered, _) => Action::Pause,
            _ => Action::Continue,
        }
    }

    /// HTTP/2 clients may end a request with trailers instead of an end-of-stream body frame.
    fn on_http_request_trailers(&mut self, _num_trailers: usize) -> Action {
        match (&self.phase, self.rt.clone()) {
            (Phase::ReadingBody(_), Some(rt)) => self.on_complete_body(&rt, usize::MAX),
            (Phase::Answered, _) => Action::Pause,
            _ => Action::Continue,
        }
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        if let Some(rt) = self.rt.clone() {
            self.on_response_headers(&rt, end_of_stream);
        }
        Action::Continue
    }

    fn on_http_response_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        if let Some(rt) = self.rt.clone() {
            self.on_response_body(&rt, body_size, end_of_stream);
        }
        Action::Continue
    }
}
