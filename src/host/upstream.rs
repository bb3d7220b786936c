//! The upstream role's HTTP context: one attempt of a request to one provider of a chain (an
//! upstream HTTP filter on the chain's aggregate cluster, run by Envoy once per attempt).
//! It reads the attempt's provider from the endpoint metadata, asks `core::upstream` for the
//! headers and body of that provider's API, and translates the response back to OpenAI's
//! shape as it streams (or, for a whole JSON answer or an error, at its end).

use crate::core::providers::config::ProviderTable;
use crate::core::tally::{Counter, LogLevel, ModelCounter};
use crate::core::upstream::{self as core, AttemptRequest, AttemptState, BodyAction, ResponseBody};
use crate::host::{Buffer, Flow, Host, Map};
use std::rc::Rc;

#[derive(Debug)]
enum Phase {
    Start,
    /// The request's headers are held until its body has arrived.
    ReadingBody,
    /// Sent to the provider; waiting for its answer.
    Sent(Box<AttemptState>),
    /// The answer is coming back through the translation.
    Responding(Box<ResponseBody>),
    /// Answered locally, or nothing left to do.
    Done,
}

pub struct UpstreamHttp<H: Host> {
    host: H,
    table: Option<Rc<ProviderTable>>,
    phase: Phase,
}

impl<H: Host> UpstreamHttp<H> {
    pub fn new(host: H, table: Option<Rc<ProviderTable>>) -> Self {
        UpstreamHttp { host, table, phase: Phase::Start }
    }

    fn local_reply(&mut self, status: u16, body: &[u8]) -> Flow {
        if self.host.send_local_reply(status, &[("content-type", "application/json")], body).is_err() {
            self.host.count(Counter::HostErrors, 1);
        }
        self.phase = Phase::Done;
        Flow::Pause
    }

    pub fn on_request_headers(&mut self, end_of_stream: bool) -> Flow {
        if self.table.is_none() {
            let e = crate::core::errors::GatewayError::Internal("semgate's upstream role is not configured".into());
            return self.local_reply(500, &e.to_json());
        }
        if end_of_stream {
            return self.plan(Vec::new(), 0);
        }
        self.phase = Phase::ReadingBody;
        Flow::Pause
    }

    pub fn on_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Flow {
        match self.phase {
            Phase::ReadingBody if !end_of_stream => Flow::Pause,
            Phase::ReadingBody => match self.host.buffer(Buffer::RequestBody, 0, body_size) {
                Ok(body) => self.plan(body, body_size),
                Err(_) => {
                    self.host.count(Counter::HostErrors, 1);
                    let e = crate::core::errors::GatewayError::Internal("the request body could not be read".into());
                    self.local_reply(500, &e.to_json())
                }
            },
            Phase::Done => Flow::Pause,
            _ => Flow::Continue,
        }
    }

    /// The whole request is here: carry out the attempt's plan.
    fn plan(&mut self, body: Vec<u8>, body_size: usize) -> Flow {
        let Some(table) = self.table.clone() else { return Flow::Continue };
        let headers = self.host.headers(Map::Request);
        let [request_id, attempt, path, relay] =
            headers.pick(["x-request-id", core::ENVOY_ATTEMPT_COUNT, ":path", crate::core::downstream::RELAY_HEADER]);
        let provider = self.host.property(core::PROVIDER_PROPERTY).and_then(|v| String::from_utf8(v).ok());
        let key = self.host.property(core::KEY_PROPERTY).and_then(|v| String::from_utf8(v).ok());
        let cluster = match provider {
            Some(_) => None,
            None => self.host.property(core::CLUSTER_PROPERTY).and_then(|v| String::from_utf8(v).ok()),
        };
        let req = AttemptRequest {
            provider: provider.as_deref(),
            request_id,
            envoy_attempt_count: attempt,
            cluster: cluster.as_deref(),
            key: key.as_deref(),
            relay: relay.is_some(),
            path,
            body: &body,
            now_ms: self.host.now_ms(),
        };
        let plan = match core::plan_attempt(&table, self.host.shared_data(), &req) {
            Ok(p) => p,
            Err(e) => {
                self.host.log(LogLevel::Warn, &format!("semgate upstream: attempt refused: {e}"));
                return self.local_reply(e.status(), &e.to_json());
            }
        };
        let mut ok = plan.remove_headers.iter().all(|h| self.host.remove_header(Map::Request, h).is_ok());
        ok &= plan.set_headers.iter().all(|h| self.host.set_header(Map::Request, h.name, &h.value).is_ok());
        if let Some(b) = &plan.body {
            ok &= self.host.replace_buffer(Buffer::RequestBody, 0, body_size, b).is_ok();
        }
        if !ok {
            self.host.count(Counter::HostErrors, 1);
            let e = crate::core::errors::GatewayError::Internal("the attempt could not be prepared".into());
            return self.local_reply(500, &e.to_json());
        }
        if !plan.state.route.is_empty() {
            self.host.count_model(ModelCounter::Attempts, Some(&plan.state.provider), &plan.state.route, 1);
        }
        self.phase = Phase::Sent(Box::new(plan.state));
        Flow::Continue
    }

    pub fn on_response_headers(&mut self, end_of_stream: bool) -> Flow {
        let (Phase::Sent(state), Some(table)) = (&self.phase, self.table.clone()) else { return Flow::Continue };
        let headers = self.host.headers(Map::Response);
        let status = headers.get(":status").and_then(|s| s.parse().ok()).unwrap_or(0);
        let plan = core::on_response_headers(&table, self.host.shared_data(), state, status, self.host.now_ms());
        if let Some(c) = core::attempt_outcome(state, status).filter(|_| !state.route.is_empty()) {
            self.host.count_model(c, Some(&state.provider), &state.route, 1);
        }
        for h in &plan.remove_headers {
            let _ = self.host.remove_header(Map::Response, h);
        }
        for h in &plan.set_headers {
            if self.host.set_header(Map::Response, h.name, &h.value).is_err() {
                self.host.count(Counter::HostErrors, 1);
            }
        }
        let hold = plan.body.holds_headers() && !end_of_stream;
        self.phase = if end_of_stream { Phase::Done } else { Phase::Responding(Box::new(plan.body)) };
        if hold {
            Flow::Pause
        } else {
            Flow::Continue
        }
    }

    pub fn on_response_body(&mut self, body_size: usize, end_of_stream: bool) -> Flow {
        let Phase::Responding(body) = &mut self.phase else { return Flow::Continue };
        let bytes = if body_size > 0 {
            match self.host.buffer(Buffer::ResponseBody, 0, body_size) {
                Ok(b) => b,
                Err(_) => {
                    self.host.count(Counter::HostErrors, 1);
                    return Flow::Continue;
                }
            }
        } else {
            Vec::new()
        };
        match body.on_body(&bytes, end_of_stream) {
            BodyAction::Pass => Flow::Continue,
            BodyAction::Hold => Flow::Pause,
            BodyAction::Replace { body: out, status } => {
                let mut ok = self.host.replace_buffer(Buffer::ResponseBody, 0, body_size, &out).is_ok();
                if let Some(s) = status {
                    ok &= self.host.set_header(Map::Response, ":status", &s.to_string()).is_ok();
                }
                if !ok {
                    self.host.count(Counter::HostErrors, 1);
                }
                Flow::Continue
            }
        }
    }
}
