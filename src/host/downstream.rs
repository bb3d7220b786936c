//! The downstream role's HTTP context: one request through the gateway as a small state
//! machine (`Phase`). Each callback reads what the core asks for, calls the core's decision
//! for that phase (`core::downstream`), and carries out the value it returns: hold or release
//! the request, edit its headers, answer locally, send a callout, mark and copy the response.

use crate::core::downstream::{
    self as core, BodyDecision, BodyProgress, CalloutKind, Forwarded, HeadersDecision, Held, HostFault, LocalReply,
    Pending, RequestEdit,
};
use crate::core::errors::GatewayError;
use crate::core::gateway::Gateway;
use crate::core::tally::{Counter, LogLevel, ModelCounter};
use crate::host::callouts::Callouts;
use crate::host::{Buffer, Flow, Host, HostError, HostTally, Map};
use std::rc::Rc;

/// Everything a request carries between callbacks lives in its phase.
#[derive(Debug)]
enum Phase {
    /// Headers not seen yet.
    Start,
    /// Relayed on a `passthrough` path: every later callback continues untouched.
    PassThrough,
    /// Admitted; the headers are held until the whole body has arrived.
    ReadingBody(Held),
    /// No local answer; the sidecar is looking for one while the request is held.
    AwaitingLookup(Box<Pending>),
    /// Sent upstream; the response is marked and, if storable, copied.
    Forwarded(Box<Forwarded>),
    /// Answered by the filter (hit or rejection).
    Answered,
}

pub struct DownstreamHttp<H: Host> {
    host: H,
    /// `None` only if the VM was never configured (Envoy does not serve such a plugin).
    gw: Option<Rc<Gateway>>,
    phase: Phase,
    callouts: Callouts<CalloutKind>,
}

impl<H: Host> DownstreamHttp<H> {
    pub fn new(host: H, gw: Option<Rc<Gateway>>) -> Self {
        DownstreamHttp { host, gw, phase: Phase::Start, callouts: Callouts::default() }
    }

    /// The one place an error becomes a client response (through `GatewayError::to_json`).
    fn reject(&mut self, error: &GatewayError) -> Flow {
        self.host.count(Counter::Rejected, 1);
        if error.status() >= 500 {
            self.host.count(Counter::HostErrors, 1);
        }
        if let Err(e) = self.send(&LocalReply::error(error)) {
            self.host.count(Counter::HostErrors, 1);
            self.host.log(LogLevel::Error, &format!("semgate: local reply refused (status {})", e.0));
        }
        self.phase = Phase::Answered;
        Flow::Pause
    }

    fn send(&self, reply: &LocalReply) -> Result<(), HostError> {
        // A reply has a handful of headers: borrowed on the stack, no allocation.
        let mut pairs = [("", ""); 16];
        let n = reply.headers.len().min(pairs.len());
        for (slot, (k, v)) in pairs.iter_mut().zip(&reply.headers) {
            *slot = (k, v.as_ref());
        }
        self.host.send_local_reply(reply.status, &pairs[..n], &reply.body)
    }

    /// Apply a header edit to the request; a refusal means the request cannot be routed.
    fn edit_request(&self, edit: &RequestEdit) -> Result<(), GatewayError> {
        let apply = || -> Result<(), HostError> {
            for name in &edit.remove {
                self.host.remove_header(Map::Request, name)?;
            }
            for (name, value) in &edit.set {
                self.host.set_header(Map::Request, name, value)?;
            }
            if let Some((len, body)) = &edit.body {
                self.host.replace_buffer(Buffer::RequestBody, 0, *len, body)?;
            }
            Ok(())
        };
        apply().map_err(|e| {
            self.host.log(LogLevel::Error, &format!("semgate: cannot rewrite the request headers (status {})", e.0));
            HostFault::RouteNotSet.error()
        })
    }

    pub fn on_request_headers(&mut self, end_of_stream: bool) -> Flow {
        let Some(gw) = self.gw.clone() else { return self.reject(&HostFault::NotConfigured.error()) };
        let headers = self.host.headers(Map::Request);
        // Property reads cost a host round trip: only when a policy matches on routes.
        let route = if gw.needs_route_name() {
            self.host.property(&["xds", "route_name"]).and_then(|v| String::from_utf8(v).ok())
        } else {
            None
        };
        let decision =
            core::on_request_headers(&gw, headers, route.as_deref(), end_of_stream, &mut HostTally(&self.host));
        match decision {
            HeadersDecision::Relay(edit) => {
                if let Err(e) = self.edit_request(&edit) {
                    return self.reject(&e);
                }
                self.phase = Phase::PassThrough;
                Flow::Continue
            }
            HeadersDecision::Reject(e) => self.reject(&e),
            HeadersDecision::ReadBody(held) => {
                self.phase = Phase::ReadingBody(held);
                Flow::Pause
            }
        }
    }

    pub fn on_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Flow {
        match (&self.phase, self.gw.clone()) {
            (Phase::ReadingBody(_), Some(gw)) => match core::on_request_body(&gw, body_size, end_of_stream) {
                BodyProgress::Wait => Flow::Pause,
                BodyProgress::Reject(e) => self.reject(&e),
                BodyProgress::Complete => self.on_complete_body(&gw, body_size),
            },
            (Phase::Answered, _) => Flow::Pause,
            _ => Flow::Continue,
        }
    }

    /// HTTP/2 clients may end a request with trailers instead of an end-of-stream body frame.
    pub fn on_request_trailers(&mut self) -> Flow {
        match (&self.phase, self.gw.clone()) {
            (Phase::ReadingBody(_), Some(gw)) => self.on_complete_body(&gw, usize::MAX),
            (Phase::Answered, _) => Flow::Pause,
            _ => Flow::Continue,
        }
    }

    fn on_complete_body(&mut self, gw: &Gateway, body_size: usize) -> Flow {
        let Phase::ReadingBody(held) = std::mem::replace(&mut self.phase, Phase::Answered) else {
            return Flow::Continue;
        };
        let body = match self.host.buffer(Buffer::RequestBody, 0, body_size) {
            Ok(b) => b,
            Err(e) => {
                self.host.count(Counter::HostErrors, 1);
                self.host.log(LogLevel::Error, &format!("semgate: cannot read the request body (status {})", e.0));
                return self.reject(&HostFault::BodyUnreadable.error());
            }
        };
        // One clock read for the whole decision (fast path, then the canonical lookup).
        let now = self.host.now_ms();
        let decision = core::on_complete_body(gw, self.host.shared_data(), now, held, body, &mut HostTally(&self.host));
        self.carry_out(gw, now, decision, false)
    }

    /// Carry out a body-phase decision; a refused reply or callout is reported back to the
    /// core, whose next decision is carried out in turn. `resume`: the request is held by an
    /// earlier Pause (a callout), so going upstream needs an explicit resume.
    fn carry_out<'g>(&mut self, gw: &'g Gateway, now: u64, mut decision: BodyDecision<'g>, resume: bool) -> Flow {
        loop {
            decision = match decision {
                BodyDecision::Reply(hit) => {
                    if let Some(line) = hit.access_log(gw) {
                        let _ = self.host.set_property("semgate", &line);
                    }
                    let sent = self.send(&hit.reply).map_err(|e| e.0);
                    let kv = self.host.shared_data();
                    match core::after_reply(gw, kv, now, hit, sent, &mut HostTally(&self.host)) {
                        None => {
                            self.phase = Phase::Answered;
                            return Flow::Pause;
                        }
                        Some(next) => next,
                    }
                }
                BodyDecision::Reject(e) => return self.reject(&e),
                BodyDecision::AskSidecar(call, pending) => {
                    match self.callouts.send(&self.host, &call, CalloutKind::Lookup) {
                        Ok(_) => {
                            self.phase = Phase::AwaitingLookup(pending);
                            return Flow::Pause;
                        }
                        Err(e) => {
                            let kv = self.host.shared_data();
                            core::lookup_not_sent(gw, kv, now, pending, e.0, &mut HostTally(&self.host))
                        }
                    }
                }
                BodyDecision::Forward(f) => {
                    if let Err(e) = self.edit_request(&f.edit) {
                        return self.reject(&e);
                    }
                    self.host.count(f.counter, 1);
                    self.phase = Phase::Forwarded(f.forwarded);
                    if resume && self.host.resume_request().is_err() {
                        self.host.count(Counter::HostErrors, 1);
                    }
                    return Flow::Continue;
                }
            }
        }
    }

    /// A callout answered (or timed out). Only a lookup's answer is waited for.
    pub fn on_callout_answer(&mut self, token: u32, body_size: usize) {
        let Some(CalloutKind::Lookup) = self.callouts.answer(&self.host, token) else { return };
        let Some(gw) = self.gw.clone() else { return };
        let pending = match std::mem::replace(&mut self.phase, Phase::Answered) {
            Phase::AwaitingLookup(p) => p,
            other => {
                self.phase = other;
                return;
            }
        };
        let answer_headers = self.host.headers(Map::CallResponse);
        let status = answer_headers.get(":status");
        let body = core::lookup_answer_has_body(status)
            .then(|| self.host.buffer(Buffer::CallResponseBody, 0, body_size).map_err(|e| e.0));
        let now = self.host.now_ms();
        let kv = self.host.shared_data();
        let decision = core::on_lookup_answer(&gw, kv, now, pending, status, body, &mut HostTally(&self.host));
        self.carry_out(&gw, now, decision, true);
    }


    pub fn on_response_headers(&mut self, end_of_stream: bool) -> Flow {
        let (Phase::Forwarded(f), Some(gw)) = (&mut self.phase, self.gw.as_ref()) else { return Flow::Continue };
        let marks = f.response_marks();
        if f.wants_response_head() {
            let headers = self.host.headers(Map::Response);
            if f.check_chain_failure(&headers) {
                f.release(self.host.shared_data(), self.host.now_ms());
                set_response_headers(&self.host, &marks);
                self.host.count(Counter::ChainFailures, 1);
                self.host.count_model(ModelCounter::FinalFailures, None, f.route(), 1);
                let status = crate::core::upstream::ALL_FAILED_STATUS.to_string();
                let ok = self.host.set_header(Map::Response, ":status", &status).is_ok()
                    && self.host.set_header(Map::Response, "content-type", "application/json").is_ok()
                    && self.host.remove_header(Map::Response, "content-length").is_ok();
                if !ok {
                    self.host.count(Counter::HostErrors, 1);
                }
                if end_of_stream {
                    return Flow::Continue;
                }
                // Held until the body's end, which is replaced by the 502's.
                return Flow::Pause;
            }
            f.on_response_headers(gw, &headers, end_of_stream, &mut HostTally(&self.host));
            let now = self.host.now_ms();
            let kv = self.host.shared_data();
            let (more, hold) = f.meter_response(gw, kv, now, &headers, end_of_stream, &mut HostTally(&self.host));
            set_response_headers(&self.host, &marks);
            set_response_headers(&self.host, &more);
            return if hold { Flow::Pause } else { Flow::Continue };
        }
        set_response_headers(&self.host, &marks);
        Flow::Continue
    }

    /// The stream is over: a paid request's charge is settled or released now at the latest.
    pub fn on_done(&mut self) {
        if let (Phase::Forwarded(f), Some(gw)) = (&mut self.phase, self.gw.as_ref()) {
            f.on_done(gw, self.host.shared_data(), self.host.now_ms(), &mut HostTally(&self.host));
        }
    }

    pub fn on_response_body(&mut self, body_size: usize, end_of_stream: bool) -> Flow {
        let (Phase::Forwarded(f), Some(gw)) = (&mut self.phase, self.gw.as_ref()) else { return Flow::Continue };
        if f.is_all_failed() {
            if !end_of_stream {
                return Flow::Pause;
            }
            let reply = f.all_failed_reply(self.host.shared_data());
            if self.host.replace_buffer(Buffer::ResponseBody, 0, body_size, &reply).is_err() {
                self.host.count(Counter::HostErrors, 1);
            }
            return Flow::Continue;
        }
        if !f.wants_response_body() {
            return Flow::Continue;
        }
        // A held head: Envoy buffers the body; it is read once, whole, at the end.
        if f.head_held() && !end_of_stream {
            return Flow::Pause;
        }
        let chunk = if body_size > 0 {
            match self.host.buffer(Buffer::ResponseBody, 0, body_size) {
                Ok(c) => c,
                Err(_) => {
                    self.host.count(Counter::HostErrors, 1);
                    f.drop_copy();
                    return Flow::Continue;
                }
            }
        } else {
            Vec::new()
        };
        // The clock is read once, at the end, when an entry is made.
        let now = if end_of_stream { self.host.now_ms() } else { 0 };
        let kv = self.host.shared_data();
        let out = f.on_response_body(gw, kv, now, &chunk, end_of_stream, &mut HostTally(&self.host));
        if let Some(bytes) = &out.replace {
            if self.host.replace_buffer(Buffer::ResponseBody, 0, body_size, bytes).is_err() {
                self.host.count(Counter::HostErrors, 1);
            }
        }
        set_response_headers(&self.host, &out.head);
        if end_of_stream {
            if let Some(line) = f.access_log() {
                let _ = self.host.set_property("semgate", &line);
            }
        }
        if let Some(store) = out.store {
            // Fire and forget: the answer, if any, is not waited for.
            match self.callouts.send(&self.host, &store, CalloutKind::Store) {
                Ok(_) => self.host.count(Counter::SemanticStores, 1),
                Err(_) => self.host.count(Counter::SidecarErrors, 1),
            }
        }
        Flow::Continue
    }
}

fn set_response_headers<H: Host>(host: &H, marks: &[(&'static str, core::Value)]) {
    for (name, value) in marks {
        if host.set_header(Map::Response, name, value).is_err() {
            host.count(Counter::HostErrors, 1);
        }
    }
}
