//! The downstream HTTP context driven phase by phase against an in-memory host: headers,
//! body, callout answer, response, and the host's refusals.

use super::downstream::DownstreamHttp;
use super::*;
use crate::core::cache::store::tests::MemKv;
use crate::core::gateway::Gateway;
use crate::core::wire::headermap;
use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::rc::Rc;

type Pairs = Vec<(String, String)>;
/// cluster, headers, body, timeout.
type Call = (String, Pairs, Vec<u8>, u64);

#[derive(Default)]
struct Fake {
    kv: MemKv,
    maps: RefCell<BTreeMap<u8, Pairs>>,
    buffers: RefCell<BTreeMap<u8, Vec<u8>>>,
    replies: RefCell<Vec<(u16, Pairs, Vec<u8>)>>,
    calls: RefCell<Vec<Call>>,
    next_token: Cell<u32>,
    resumed: Cell<u32>,
    now: Cell<u64>,
    refuse_set_header: Cell<bool>,
    refuse_dispatch: Cell<bool>,
    refuse_reply: Cell<bool>,
    refuse_body: Cell<bool>,
    counts: RefCell<BTreeMap<Counter, u64>>,
    model_counts: RefCell<BTreeMap<String, u64>>,
    logs: RefCell<Vec<String>>,
}

fn owned(pairs: &[(&str, &str)]) -> Pairs {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

impl Fake {
    fn set_map(&self, map: Map, pairs: &[(&str, &str)]) {
        self.maps.borrow_mut().insert(map as u8, owned(pairs));
    }
    fn map(&self, map: Map) -> Pairs {
        self.maps.borrow().get(&(map as u8)).cloned().unwrap_or_default()
    }
    fn header(&self, map: Map, name: &str) -> Option<String> {
        self.map(map).into_iter().find(|(k, _)| k == name).map(|(_, v)| v)
    }
    fn set_buffer(&self, b: Buffer, bytes: &[u8]) {
        self.buffers.borrow_mut().insert(b as u8, bytes.to_vec());
    }
    fn counted(&self, c: Counter) -> u64 {
        self.counts.borrow().get(&c).copied().unwrap_or(0)
    }
    fn last_reply(&self) -> (u16, Pairs, Vec<u8>) {
        self.replies.borrow().last().cloned().expect("a local reply")
    }
}

impl Host for Rc<Fake> {
    type Shared = MemKv;

    fn shared_data(&self) -> &MemKv {
        &self.kv
    }
    fn headers(&self, map: Map) -> HeaderMap {
        let pairs = self.map(map);
        let refs: Vec<(&str, &str)> = pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        HeaderMap(headermap::encode(&refs))
    }
    fn set_header(&self, map: Map, name: &str, value: &str) -> Result<(), HostError> {
        if self.refuse_set_header.get() {
            return Err(HostError(2));
        }
        let mut maps = self.maps.borrow_mut();
        let pairs = maps.entry(map as u8).or_default();
        pairs.retain(|(k, _)| k != name);
        pairs.push((name.to_string(), value.to_string()));
        Ok(())
    }
    fn remove_header(&self, map: Map, name: &str) -> Result<(), HostError> {
        self.maps.borrow_mut().entry(map as u8).or_default().retain(|(k, _)| k != name);
        Ok(())
    }
    fn buffer(&self, buffer: Buffer, start: usize, max: usize) -> Result<Vec<u8>, HostError> {
        if self.refuse_body.get() {
            return Err(HostError(2));
        }
        let b = self.buffers.borrow().get(&(buffer as u8)).cloned().unwrap_or_default();
        Ok(b.into_iter().skip(start).take(max).collect())
    }
    fn replace_buffer(&self, buffer: Buffer, start: usize, len: usize, data: &[u8]) -> Result<(), HostError> {
        let mut buffers = self.buffers.borrow_mut();
        let b = buffers.entry(buffer as u8).or_default();
        let end = (start + len).min(b.len());
        b.splice(start.min(end)..end, data.iter().copied());
        Ok(())
    }
    fn send_local_reply(&self, status: u16, headers: &[(&str, &str)], body: &[u8]) -> Result<(), HostError> {
        if self.refuse_reply.get() {
            return Err(HostError(2));
        }
        self.replies.borrow_mut().push((status, owned(headers), body.to_vec()));
        Ok(())
    }
    fn dispatch(
        &self,
        cluster: &str,
        headers: &[(&str, &str)],
        body: &[u8],
        timeout_ms: u64,
    ) -> Result<u32, HostError> {
        if self.refuse_dispatch.get() {
            return Err(HostError(1));
        }
        self.calls.borrow_mut().push((cluster.to_string(), owned(headers), body.to_vec(), timeout_ms));
        self.next_token.set(self.next_token.get() + 1);
        Ok(self.next_token.get())
    }
    fn resume_request(&self) -> Result<(), HostError> {
        self.resumed.set(self.resumed.get() + 1);
        Ok(())
    }
    fn count_named(&self, _name: &str, _n: u64) {}
    fn set_property(&self, _name: &str, _value: &str) -> Result<(), HostError> {
        Ok(())
    }
    fn property(&self, _path: &[&str]) -> Option<Vec<u8>> {
        None
    }
    fn now_ms(&self) -> u64 {
        self.now.get()
    }
    fn log(&self, _level: LogLevel, msg: &str) {
        self.logs.borrow_mut().push(msg.to_string());
    }
    fn count(&self, c: Counter, n: u64) {
        *self.counts.borrow_mut().entry(c).or_default() += n;
    }
    fn count_model(&self, c: ModelCounter, provider: Option<&str>, model: &str, n: u64) {
        *self.model_counts.borrow_mut().entry(c.stat_name(provider, model)).or_default() += n;
    }
    fn gauge(&self, _g: Gauge, _v: u64) {}
}

fn gateway(extra: &str) -> Rc<Gateway> {
    let raw = format!(
        r#"{{"auth":{{"keys":[{{"key":"sk-a","tenant":"t1"}}]}},
            "providers":{{"openai":{{"kind":"openai","keys":[{{"env":"OPENAI_API_KEY"}}]}}}},
            "models":{{"*":["openai/*"]}}{extra}}}"#
    );
    Rc::new(Gateway::load(raw.as_bytes(), |_| None).unwrap())
}

const BODY: &[u8] = br#"{"model":"gpt-4o-mini","temperature":0,"messages":[{"role":"user","content":"hi"}]}"#;
const ANSWER: &[u8] = br#"{"choices":[{"message":{"role":"assistant","content":"hello"}}]}"#;

/// A fresh request on the same host (shared data and counters carry over).
fn request(host: &Rc<Fake>, gw: &Rc<Gateway>) -> DownstreamHttp<Rc<Fake>> {
    host.set_map(
        Map::Request,
        &[(":method", "POST"), (":path", "/v1/chat/completions"), ("authorization", "Bearer sk-a"), ("x-foo", "1")],
    );
    host.set_buffer(Buffer::RequestBody, BODY);
    DownstreamHttp::new(host.clone(), Some(gw.clone()))
}

/// Headers and body of a request; what the body phase returned.
fn send_request(ctx: &mut DownstreamHttp<Rc<Fake>>) -> Flow {
    assert_eq!(ctx.on_request_headers(false), Flow::Pause, "headers held for the body");
    assert_eq!(ctx.on_request_body(10, false), Flow::Pause, "still buffering");
    ctx.on_request_body(BODY.len(), true)
}

/// The provider answers a forwarded request.
fn respond(host: &Rc<Fake>, ctx: &mut DownstreamHttp<Rc<Fake>>) {
    host.set_map(Map::Response, &[(":status", "200"), ("content-type", "application/json")]);
    host.set_buffer(Buffer::ResponseBody, ANSWER);
    assert_eq!(ctx.on_response_headers(false), Flow::Continue);
    assert_eq!(ctx.on_response_body(ANSWER.len(), true), Flow::Continue);
}

#[test]
fn a_miss_goes_upstream_then_repeats_are_answered_locally() {
    let (host, gw) = (Rc::new(Fake::default()), gateway(""));
    host.now.set(1_000_000);
    let mut ctx = request(&host, &gw);
    assert_eq!(send_request(&mut ctx), Flow::Continue);
    assert_eq!(host.header(Map::Request, "x-semgate-cluster").as_deref(), Some("provider_openai"));
    assert_eq!(host.header(Map::Request, "authorization"), None, "the client's key never goes upstream");
    assert_eq!(host.header(Map::Request, "x-foo"), None, "unlisted client headers are dropped");
    respond(&host, &mut ctx);
    assert_eq!(host.header(Map::Response, "x-semgate-cache").as_deref(), Some("miss"));
    assert_eq!((host.counted(Counter::Misses), host.counted(Counter::Stores)), (1, 1));

    let mut ctx = request(&host, &gw);
    assert_eq!(send_request(&mut ctx), Flow::Pause, "answered locally");
    let (status, headers, body) = host.last_reply();
    assert_eq!((status, body.as_slice()), (200, ANSWER));
    assert!(headers.contains(&("x-semgate-cache".into(), "hit-exact".into())));
    assert_eq!(ctx.on_request_body(0, true), Flow::Pause, "an answered request stays held");
    assert_eq!(ctx.on_response_headers(false), Flow::Continue, "the local reply is not marked again");

    let mut ctx = request(&host, &gw);
    assert_eq!(send_request(&mut ctx), Flow::Pause);
    assert_eq!((host.counted(Counter::HitsExact), host.counted(Counter::HitsFast)), (2, 1));
    assert_eq!(host.replies.borrow().len(), 2);
}

#[test]
fn a_refused_header_write_is_a_500_not_a_trap() {
    let (host, gw) = (Rc::new(Fake::default()), gateway(""));
    let mut ctx = request(&host, &gw);
    host.refuse_set_header.set(true);
    assert_eq!(send_request(&mut ctx), Flow::Pause);
    let (status, _, body) = host.last_reply();
    assert_eq!(status, 500);
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["error"]["code"], "gateway_error");
    assert_eq!((host.counted(Counter::Rejected), host.counted(Counter::HostErrors)), (1, 1));
    assert_eq!(host.counted(Counter::Misses), 0, "nothing went upstream");
}

#[test]
fn an_unreadable_body_or_a_missing_configuration_is_a_500() {
    let (host, gw) = (Rc::new(Fake::default()), gateway(""));
    let mut ctx = request(&host, &gw);
    host.refuse_body.set(true);
    assert_eq!(send_request(&mut ctx), Flow::Pause);
    assert_eq!(host.last_reply().0, 500);
    let mut ctx = DownstreamHttp::new(host.clone(), None);
    assert_eq!(ctx.on_request_headers(false), Flow::Pause);
    assert_eq!(host.last_reply().0, 500);
}

#[test]
fn client_errors_are_4xx_json() {
    let (host, gw) = (Rc::new(Fake::default()), gateway(""));
    let mut ctx = request(&host, &gw);
    host.set_map(Map::Request, &[(":method", "POST"), (":path", "/v1/chat/completions")]);
    assert_eq!(ctx.on_request_headers(false), Flow::Pause);
    let (status, headers, _) = host.last_reply();
    assert_eq!(status, 401);
    assert_eq!(headers, vec![("content-type".to_string(), "application/json".to_string())]);
    let mut ctx = request(&host, &gw);
    host.set_buffer(Buffer::RequestBody, b"{");
    assert_eq!(send_request(&mut ctx), Flow::Pause);
    assert_eq!(host.last_reply().0, 400);
}

#[test]
fn a_refused_hit_reply_forwards_instead() {
    let (host, gw) = (Rc::new(Fake::default()), gateway(""));
    let mut ctx = request(&host, &gw);
    send_request(&mut ctx);
    respond(&host, &mut ctx);
    let mut ctx = request(&host, &gw);
    host.refuse_reply.set(true);
    assert_eq!(send_request(&mut ctx), Flow::Continue);
    assert_eq!(host.counted(Counter::HostErrors), 1);
    assert_eq!(host.counted(Counter::HitsExact), 0);
    assert_eq!(host.counted(Counter::Misses), 2);
}

fn semantic() -> Rc<Gateway> {
    gateway(r#","semantic":{"enabled":true}"#)
}

#[test]
fn a_semantic_lookup_holds_the_request_until_the_sidecar_answers() {
    let (host, gw) = (Rc::new(Fake::default()), semantic());
    let mut ctx = request(&host, &gw);
    assert_eq!(send_request(&mut ctx), Flow::Pause, "held for the lookup");
    let (cluster, headers, _, timeout) = host.calls.borrow()[0].clone();
    assert_eq!((cluster.as_str(), timeout), ("semgate_sidecar", 50));
    assert!(headers.contains(&(":path".into(), "/v1/lookup".into())));
    // An answer for a token this context never sent is counted and ignored.
    ctx.on_callout_answer(99, 0);
    assert_eq!(host.counted(Counter::UnknownCallouts), 1);
    assert!(host.replies.borrow().is_empty() && host.resumed.get() == 0);
    let hit = serde_json::json!({"hit": true, "score": 0.95, "response": {"status": 200,
        "headers": [["content-type", "application/json"]], "body_b64": "e30=", "stream": false}});
    host.set_map(Map::CallResponse, &[(":status", "200")]);
    host.set_buffer(Buffer::CallResponseBody, hit.to_string().as_bytes());
    ctx.on_callout_answer(1, hit.to_string().len());
    let (status, headers, body) = host.last_reply();
    assert_eq!((status, body.as_slice()), (200, b"{}".as_slice()));
    assert!(headers.contains(&("x-semgate-similarity".into(), "0.9500".into())));
    assert_eq!(host.counted(Counter::HitsSemantic), 1);
    // The same token again is late: ignored.
    ctx.on_callout_answer(1, 0);
    assert_eq!(host.counted(Counter::UnknownCallouts), 2);
}

#[test]
fn a_sidecar_miss_resumes_the_request_and_the_answer_is_stored_in_both_tiers() {
    let (host, gw) = (Rc::new(Fake::default()), semantic());
    let mut ctx = request(&host, &gw);
    assert_eq!(send_request(&mut ctx), Flow::Pause);
    host.set_map(Map::CallResponse, &[(":status", "200")]);
    host.set_buffer(Buffer::CallResponseBody, br#"{"hit":false,"score":0.2}"#);
    ctx.on_callout_answer(1, 100);
    assert_eq!(host.resumed.get(), 1, "the held request goes on");
    assert_eq!(host.header(Map::Request, "x-semgate-cluster").as_deref(), Some("provider_openai"));
    respond(&host, &mut ctx);
    assert_eq!(host.calls.borrow().len(), 2, "the lookup, then the store");
    assert!(host.calls.borrow()[1].1.contains(&(":path".into(), "/v1/store".into())));
    assert_eq!((host.counted(Counter::SemanticStores), host.counted(Counter::Stores)), (1, 1));
    // The store's answer is expected and needs nothing.
    ctx.on_callout_answer(2, 0);
    assert_eq!(host.counted(Counter::UnknownCallouts), 0);
}

#[test]
fn a_refused_callout_fails_open() {
    let (host, gw) = (Rc::new(Fake::default()), semantic());
    host.refuse_dispatch.set(true);
    let mut ctx = request(&host, &gw);
    assert_eq!(send_request(&mut ctx), Flow::Continue, "forwarded without the sidecar");
    assert_eq!((host.counted(Counter::SidecarErrors), host.counted(Counter::Misses)), (1, 1));
    assert_eq!(host.resumed.get(), 0, "never held: no resume");
    respond(&host, &mut ctx);
    assert_eq!((host.counted(Counter::SidecarErrors), host.counted(Counter::Stores)), (2, 1));
}

#[test]
fn a_timed_out_lookup_forwards() {
    let (host, gw) = (Rc::new(Fake::default()), semantic());
    let mut ctx = request(&host, &gw);
    assert_eq!(send_request(&mut ctx), Flow::Pause);
    host.set_map(Map::CallResponse, &[]);
    ctx.on_callout_answer(1, 0);
    assert_eq!((host.counted(Counter::SidecarErrors), host.resumed.get()), (1, 1));
}

#[test]
fn passthrough_paths_are_relayed() {
    let (host, gw) =
        (Rc::new(Fake::default()), gateway(r#","passthrough":[{"path_prefix":"/v1/models","provider":"openai"}]"#));
    host.set_map(Map::Request, &[(":method", "GET"), (":path", "/v1/models"), ("authorization", "Bearer sk-a")]);
    let mut ctx = DownstreamHttp::new(host.clone(), Some(gw));
    assert_eq!(ctx.on_request_headers(true), Flow::Continue);
    assert_eq!(host.header(Map::Request, "authorization"), None, "the upstream role sets the provider's key");
    assert_eq!(host.header(Map::Request, "x-semgate-relay").as_deref(), Some("1"));
    assert_eq!(ctx.on_request_body(0, true), Flow::Continue);
    assert_eq!(host.counted(Counter::Relayed), 1);
}

#[test]
fn the_root_id_chooses_the_role() {
    assert_eq!(Role::for_root_id("semgate"), Some(Role::Downstream));
    assert_eq!(Role::for_root_id(""), Some(Role::Downstream));
    assert_eq!(Role::for_root_id("other"), None);
}
