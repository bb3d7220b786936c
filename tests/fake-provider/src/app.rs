//! Request routing: admin endpoints (uncounted), the OpenAI chat and embeddings endpoints,
//! Anthropic Messages, Gemini/Vertex `generateContent` and the echo fallback, plus the
//! per-request `x-fake-*` controls.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use tokio::sync::{mpsc, watch};

use crate::answer::{self, Usage};
use crate::body::{Msg, TrackedBody};
use crate::openai::{self, StreamRenderer};
use crate::state::{wait_hold, App, ControlSettings, Controls, Injection, Stats, Tracker};
use crate::{anthropic, embeddings, gemini};

/// Largest request body read (bigger ones get 413).
const MAX_BODY: usize = 32 << 20;

const JSON: HeaderValue = HeaderValue::from_static("application/json");
const EVENT_STREAM: HeaderValue = HeaderValue::from_static("text/event-stream");
const NO_CACHE: HeaderValue = HeaderValue::from_static("no-cache");

/// Returned to hyper to close the connection without (the rest of) a response.
#[derive(Debug)]
pub struct Dropped;

impl fmt::Display for Dropped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("connection dropped (x-fake-drop, drop_fraction or client went away)")
    }
}

impl std::error::Error for Dropped {}

type HandlerResult = Result<Response<TrackedBody>, Dropped>;

pub async fn handle(app: Arc<App>, req: Request<Incoming>) -> HandlerResult {
    enum Admin {
        Stats,
        GetControl,
        SetControl,
        Reset,
        Release,
        Token,
    }
    let path = req.uri().path();
    let admin = match *req.method() {
        Method::GET if path == "/stats" => Some(Admin::Stats),
        Method::GET if path == "/control" => Some(Admin::GetControl),
        Method::POST if path == "/control" => Some(Admin::SetControl),
        Method::POST if path == "/reset" => Some(Admin::Reset),
        Method::POST if path.starts_with("/release/") => Some(Admin::Release),
        Method::POST if path == "/token" => Some(Admin::Token),
        _ => None,
    };
    match admin {
        None => provider(app, req).await,
        Some(Admin::Stats) => {
            let mut stats = app.stats.to_json();
            if let (Some(s), serde_json::Value::Object(o)) = (stats.as_object_mut(), app.oauth.stats()) {
                s.extend(o);
            }
            Ok(admin_json(StatusCode::OK, &stats))
        }
        Some(Admin::Token) => {
            let body = match read_body(req.into_body()).await {
                Ok(b) => b,
                Err(_) => return Err(Dropped),
            };
            let (status, answer) = app.oauth.token(&body);
            Ok(admin_json(StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST), &answer))
        }
        Some(Admin::GetControl) => Ok(admin_json(StatusCode::OK, &app.controls.current())),
        Some(Admin::SetControl) => set_control(&app, req).await,
        Some(Admin::Reset) => {
            app.reset();
            Ok(admin_json(StatusCode::OK, &serde_json::json!({ "reset": true })))
        }
        Some(Admin::Release) => {
            let token = path.trim_start_matches("/release/");
            let waiters = app.holds.release(token);
            Ok(admin_json(StatusCode::OK, &serde_json::json!({ "released": token, "waiters": waiters })))
        }
    }
}

// ---------------------------------------------------------------- admin

fn admin_json<T: serde::Serialize>(status: StatusCode, value: &T) -> Response<TrackedBody> {
    let body = serde_json::to_vec(value).unwrap_or_default();
    response(status, JSON, TrackedBody::full(Bytes::from(body), None))
}

fn admin_error(status: StatusCode, message: &str, code: &str) -> Response<TrackedBody> {
    let body = openai::error_json(message, "invalid_request_error", None, Some(code));
    response(status, JSON, TrackedBody::full(body, None))
}

async fn set_control(app: &App, req: Request<Incoming>) -> HandlerResult {
    let body = match read_body(req.into_body()).await {
        Ok(b) => b,
        Err(BodyError::TooLarge) => {
            return Ok(admin_error(StatusCode::PAYLOAD_TOO_LARGE, "body too large", "body_too_large"))
        }
        Err(BodyError::Broken) => return Err(Dropped),
    };
    let settings: ControlSettings = if body.iter().all(u8::is_ascii_whitespace) {
        ControlSettings::default()
    } else {
        match serde_json::from_slice(&body) {
            Ok(s) => s,
            Err(e) => {
                let msg = format!("invalid /control body: {e}");
                return Ok(admin_error(StatusCode::BAD_REQUEST, &msg, "invalid_control"));
            }
        }
    };
    if let Err(msg) = Controls::validate(&settings) {
        return Ok(admin_error(StatusCode::BAD_REQUEST, &msg, "invalid_control"));
    }
    app.controls.apply(&settings);
    Ok(admin_json(StatusCode::OK, &app.controls.current()))
}

// ---------------------------------------------------------------- provider requests

enum BodyError {
    TooLarge,
    Broken,
}

async fn read_body(body: Incoming) -> Result<Bytes, BodyError> {
    match Limited::new(body, MAX_BODY).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => Err(BodyError::TooLarge),
        Err(_) => Err(BodyError::Broken),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DropMode {
    BeforeHeaders,
    MidStream,
}

/// Per-request `x-fake-*` headers.
#[derive(Debug, Default)]
struct RequestControls {
    status: Option<u16>,
    latency_ms: Option<u64>,
    drop: Option<DropMode>,
    hold: Option<String>,
    chunks: Option<usize>,
    chunk_delay_ms: Option<u64>,
}

fn header_str<'h>(headers: &'h HeaderMap, name: &str) -> Result<Option<&'h str>, String> {
    match headers.get(name) {
        None => Ok(None),
        Some(v) => v.to_str().map(|s| Some(s.trim())).map_err(|_| format!("header {name} is not visible ASCII")),
    }
}

fn header_num<T: std::str::FromStr>(headers: &HeaderMap, name: &str) -> Result<Option<T>, String> {
    match header_str(headers, name)? {
        None => Ok(None),
        Some(s) => s.parse().map(Some).map_err(|_| format!("header {name}: not a non-negative integer: {s:?}")),
    }
}

impl RequestControls {
    fn parse(headers: &HeaderMap) -> Result<RequestControls, String> {
        let status = match header_num::<u16>(headers, "x-fake-status")? {
            None | Some(200) => None,
            Some(s @ 400..=599) => Some(s),
            Some(s) => return Err(format!("header x-fake-status must be 200 or 400..=599, got {s}")),
        };
        let drop = match header_str(headers, "x-fake-drop")? {
            None => None,
            Some("before-headers") => Some(DropMode::BeforeHeaders),
            Some("mid-stream") => Some(DropMode::MidStream),
            Some(other) => {
                return Err(format!("header x-fake-drop must be before-headers or mid-stream, got {other:?}"))
            }
        };
        let hold = match header_str(headers, "x-fake-hold")? {
            Some("") => return Err("header x-fake-hold needs a token".to_owned()),
            h => h.map(str::to_owned),
        };
        let chunks = header_num::<usize>(headers, "x-fake-chunks")?;
        if chunks == Some(0) {
            return Err("header x-fake-chunks must be at least 1".to_owned());
        }
        Ok(RequestControls {
            status,
            latency_ms: header_num(headers, "x-fake-latency-ms")?,
            drop,
            hold,
            chunks,
            chunk_delay_ms: header_num(headers, "x-fake-chunk-delay-ms")?,
        })
    }
}

/// What will happen to one provider request, from its headers, the global
/// controls and the flags.
struct Plan {
    latency: Duration,
    hold: Option<watch::Receiver<bool>>,
    drop: Option<DropMode>,
    status: Option<u16>,
}

impl Plan {
    fn new(app: &App, ctl: &RequestControls, inj: Injection) -> Plan {
        let latency_ms = ctl.latency_ms.unwrap_or(app.cfg.latency_ms + inj.latency_ms);
        Plan {
            latency: Duration::from_millis(latency_ms),
            hold: ctl.hold.as_deref().map(|t| app.holds.subscribe(t)),
            drop: ctl.drop.or(inj.drop.then_some(DropMode::BeforeHeaders)),
            status: ctl.status.or(inj.fail_status),
        }
    }

    /// Latency, then (unless the hold is kept for a stream) the hold, then a
    /// `before-headers` drop.
    async fn before_response(&mut self, keep_hold: bool) -> Result<(), Dropped> {
        if !self.latency.is_zero() {
            tokio::time::sleep(self.latency).await;
        }
        if !keep_hold {
            if let Some(rx) = self.hold.take() {
                wait_hold(rx).await;
            }
        }
        if self.drop == Some(DropMode::BeforeHeaders) {
            return Err(Dropped);
        }
        Ok(())
    }

    fn mid_stream(&self) -> bool {
        self.drop == Some(DropMode::MidStream)
    }
}

fn response(status: StatusCode, content_type: HeaderValue, body: TrackedBody) -> Response<TrackedBody> {
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    resp.headers_mut().insert(header::CONTENT_TYPE, content_type);
    resp
}

/// A counted, buffered answer (cut off half-way when `truncate`).
fn answer(app: &App, tracker: Tracker, status: u16, body: Bytes, truncate: bool) -> Response<TrackedBody> {
    app.stats.count_status(status);
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let body =
        if truncate { TrackedBody::truncated(body, Some(tracker)) } else { TrackedBody::full(body, Some(tracker)) };
    response(code, JSON, body)
}

fn error_answer(
    app: &App,
    tracker: Tracker,
    status: u16,
    message: &str,
    param: Option<&str>,
    code: Option<&str>,
) -> Response<TrackedBody> {
    let body = openai::error_json(message, "invalid_request_error", param, code);
    answer(app, tracker, status, body, false)
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn path_and_query(req: &hyper::http::request::Parts) -> &str {
    req.uri.path_and_query().map_or_else(|| req.uri.path(), |pq| pq.as_str())
}

async fn provider(app: Arc<App>, req: Request<Incoming>) -> HandlerResult {
    // Counted before the body is read, so a request cut off mid-body still counts.
    let tracker = Tracker::start(app.clone());
    let (parts, body) = req.into_parts();
    app.stats.record_last(&parts.headers, path_and_query(&parts));
    let api = Api::of(&parts.method, parts.uri.path());
    match api {
        Api::Chat => Stats::inc(&app.stats.chat_requests),
        Api::Embeddings => Stats::inc(&app.stats.embedding_requests),
        Api::Anthropic => Stats::inc(&app.stats.anthropic_requests),
        Api::Gemini(_) => Stats::inc(&app.stats.gemini_requests),
        Api::Echo => {}
    }
    let shape = api.shape();

    let body = match read_body(body).await {
        Ok(b) => b,
        Err(BodyError::TooLarge) => {
            let msg = format!("Request body larger than {MAX_BODY} bytes.");
            return Ok(answer(&app, tracker, 413, shape.error(413, &msg, Some("body_too_large")), false));
        }
        Err(BodyError::Broken) => return Err(Dropped),
    };

    let oauth_token = shape == Shape::Gemini
        && app.oauth.accepts(parts.headers.get(header::AUTHORIZATION).map(HeaderValue::as_bytes));
    if oauth_token {
        // A token POST /token issued and that has not expired: Google's OAuth credentials.
    } else if let Some(key) = app.cfg.require_key.as_deref().filter(|_| shape != Shape::OpenAi) {
        if let Some((status, message)) = provider_key_error(shape, &parts.headers, key) {
            if status == 401 {
                Stats::inc(&app.stats.unauthorized);
            }
            return Ok(answer(&app, tracker, status, shape.error(status, message, Some("invalid_api_key")), false));
        }
    } else if let Some(expected) = &app.expected_auth {
        let got = parts.headers.get(header::AUTHORIZATION);
        if got.map(HeaderValue::as_bytes) != Some(expected.as_slice()) {
            Stats::inc(&app.stats.unauthorized);
            let msg = if got.is_some() {
                "Incorrect API key provided."
            } else {
                "You didn't provide an API key. Provide it in the Authorization header (Bearer auth)."
            };
            return Ok(error_answer(&app, tracker, 401, msg, None, Some("invalid_api_key")));
        }
    }

    let ctl = match RequestControls::parse(&parts.headers) {
        Ok(c) => c,
        Err(msg) => {
            return Ok(answer(&app, tracker, 400, shape.error(400, &msg, Some("invalid_fake_header")), false));
        }
    };

    match api {
        Api::Chat => chat(&app, tracker, &ctl, &body).await,
        Api::Embeddings => embed(&app, tracker, &ctl, &body).await,
        Api::Anthropic => messages(&app, tracker, &ctl, &body).await,
        Api::Gemini(route) => {
            let alt_sse = parts.uri.query().is_some_and(|q| q.split('&').any(|kv| kv == "alt=sse"));
            generate(&app, tracker, &ctl, route, alt_sse, &body).await
        }
        Api::Echo => echo(&app, tracker, &ctl, &parts, &body).await,
    }
}

/// Which provider API a request speaks, from its method and path.
enum Api {
    Chat,
    Embeddings,
    Anthropic,
    Gemini(gemini::Route),
    Echo,
}

impl Api {
    fn of(method: &Method, path: &str) -> Api {
        if method != Method::POST {
            return Api::Echo;
        }
        match path {
            "/v1/chat/completions" => Api::Chat,
            "/v1/embeddings" => Api::Embeddings,
            "/v1/messages" => Api::Anthropic,
            _ => gemini::route(path).map_or(Api::Echo, Api::Gemini),
        }
    }

    fn shape(&self) -> Shape {
        match self {
            Api::Anthropic => Shape::Anthropic,
            Api::Gemini(_) => Shape::Gemini,
            Api::Chat | Api::Embeddings | Api::Echo => Shape::OpenAi,
        }
    }
}

/// Whose error bodies a request gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    OpenAi,
    Anthropic,
    Gemini,
}

impl Shape {
    fn error(self, status: u16, message: &str, code: Option<&str>) -> Bytes {
        match self {
            Shape::OpenAi => openai::error_json(message, "invalid_request_error", None, code),
            Shape::Anthropic => anthropic::error_json(anthropic::error_type(status), message),
            Shape::Gemini => gemini::error_json(status, message),
        }
    }

    fn injected(self, status: u16) -> Bytes {
        match self {
            Shape::OpenAi => openai::injected_error_json(status),
            Shape::Anthropic => anthropic::injected_error_json(status),
            Shape::Gemini => gemini::injected_error_json(status),
        }
    }
}

/// With `--require-key`, what Anthropic and Google would answer a request whose credentials
/// are missing or wrong: Anthropic wants `x-api-key` and `anthropic-version`; Google takes
/// `x-goog-api-key` (AI Studio) or `Authorization: Bearer` (Vertex).
fn provider_key_error(shape: Shape, headers: &HeaderMap, key: &str) -> Option<(u16, &'static str)> {
    let has = |name: &str, value: &str| headers.get(name).is_some_and(|v| v.as_bytes() == value.as_bytes());
    match shape {
        Shape::Anthropic if !has("x-api-key", key) => Some((401, "invalid x-api-key")),
        Shape::Anthropic if !headers.contains_key("anthropic-version") => {
            Some((400, "anthropic-version: header is required"))
        }
        Shape::Gemini if !has("x-goog-api-key", key) && !has("authorization", &format!("Bearer {key}")) => Some((
            401,
            "Request had invalid authentication credentials. Expected an API key or an OAuth 2 access token.",
        )),
        _ => None,
    }
}

/// `POST /v1/embeddings`: the same checks and injections as a non-streaming chat request.
async fn embed(app: &App, tracker: Tracker, ctl: &RequestControls, body: &[u8]) -> HandlerResult {
    let req = match embeddings::parse_embeddings(body) {
        Ok(r) => r,
        Err(e) => return Ok(error_answer(app, tracker, 400, &e.message, e.param, e.code)),
    };
    let mut plan = Plan::new(app, ctl, app.controls.decide());
    plan.before_response(false).await?;
    if let Some(status) = plan.status {
        return Ok(answer(app, tracker, status, openai::injected_error_json(status), plan.mid_stream()));
    }
    app.stats.embedding_inputs.fetch_add(req.inputs.len() as u64, std::sync::atomic::Ordering::Relaxed);
    Ok(answer(app, tracker, 200, embeddings::embeddings_json(&req), plan.mid_stream()))
}

async fn chat(app: &App, tracker: Tracker, ctl: &RequestControls, body: &[u8]) -> HandlerResult {
    let chat = match openai::parse_chat(body) {
        Ok(c) => c,
        Err(e) => return Ok(error_answer(app, tracker, 400, &e.message, e.param, e.code)),
    };
    if chat.stream {
        Stats::inc(&app.stats.stream_requests);
    }
    let n = app.next_serial();
    let mut plan = Plan::new(app, ctl, app.controls.decide());
    let stream_ok = chat.stream && plan.status.is_none();
    plan.before_response(stream_ok).await?;
    if let Some(status) = plan.status {
        return Ok(answer(app, tracker, status, openai::injected_error_json(status), plan.mid_stream()));
    }

    let content = answer::answer_text(n, &chat.prompt);
    let usage = Usage::new(&chat.prompt, &content);
    let id = openai::completion_id(n);
    let created = unix_now();
    let mut resp = if chat.stream {
        let renderer =
            StreamRenderer { id, model: chat.model.into_owned(), created, include_usage: chat.include_usage };
        stream_answer(app, tracker, ctl, &mut plan, Renderer::OpenAi(renderer), content, usage)
    } else {
        let body = openai::completion_json(&id, created, &chat.model, &content, usage);
        answer(app, tracker, 200, body, plan.mid_stream())
    };
    resp.headers_mut().insert("x-fake-serial", HeaderValue::from(n));
    Ok(resp)
}

/// `POST /v1/messages`: Anthropic's shape of the same deterministic answer.
async fn messages(app: &App, tracker: Tracker, ctl: &RequestControls, body: &[u8]) -> HandlerResult {
    let req = match anthropic::parse_messages(body) {
        Ok(r) => r,
        Err(e) => return Ok(answer(app, tracker, 400, Shape::Anthropic.error(400, &e.message, None), false)),
    };
    if req.stream {
        Stats::inc(&app.stats.stream_requests);
    }
    let n = app.next_serial();
    let mut plan = Plan::new(app, ctl, app.controls.decide());
    plan.before_response(req.stream && plan.status.is_none()).await?;
    if let Some(status) = plan.status {
        return Ok(answer(app, tracker, status, Shape::Anthropic.injected(status), plan.mid_stream()));
    }
    let content = answer::answer_text(n, &req.prompt);
    let usage = Usage::new(&req.prompt, &content);
    let id = anthropic::message_id(n);
    let mut resp = if req.stream {
        let renderer = anthropic::StreamRenderer { id, model: req.model, usage };
        stream_answer(app, tracker, ctl, &mut plan, Renderer::Anthropic(renderer), content, usage)
    } else {
        let body = anthropic::message_json(&id, &req.model, &content, usage);
        answer(app, tracker, 200, body, plan.mid_stream())
    };
    resp.headers_mut().insert("x-fake-serial", HeaderValue::from(n));
    Ok(resp)
}

/// `POST .../models/{model}:generateContent` and `:streamGenerateContent?alt=sse`, for AI
/// Studio and Vertex paths alike.
async fn generate(
    app: &App,
    tracker: Tracker,
    ctl: &RequestControls,
    route: gemini::Route,
    alt_sse: bool,
    body: &[u8],
) -> HandlerResult {
    if route.stream && !alt_sse {
        let msg = "fake-provider streams generateContent only as server-sent events: add ?alt=sse";
        return Ok(answer(app, tracker, 400, Shape::Gemini.error(400, msg, None), false));
    }
    let prompt = match gemini::parse_generate(body) {
        Ok(p) => p,
        Err(e) => return Ok(answer(app, tracker, 400, Shape::Gemini.error(400, &e.message, None), false)),
    };
    if route.stream {
        Stats::inc(&app.stats.stream_requests);
    }
    let n = app.next_serial();
    let mut plan = Plan::new(app, ctl, app.controls.decide());
    plan.before_response(route.stream && plan.status.is_none()).await?;
    if let Some(status) = plan.status {
        return Ok(answer(app, tracker, status, Shape::Gemini.injected(status), plan.mid_stream()));
    }
    let content = answer::answer_text(n, &prompt);
    let usage = Usage::new(&prompt, &content);
    let id = gemini::response_id(n);
    let mut resp = if route.stream {
        let renderer = gemini::StreamRenderer { id, model: route.model, usage };
        stream_answer(app, tracker, ctl, &mut plan, Renderer::Gemini(renderer), content, usage)
    } else {
        let body = gemini::response_json(&id, &route.model, &content, usage);
        answer(app, tracker, 200, body, plan.mid_stream())
    };
    resp.headers_mut().insert("x-fake-serial", HeaderValue::from(n));
    Ok(resp)
}

/// Starts the producer of a streamed answer and returns the counted 200 response it feeds.
fn stream_answer(
    app: &App,
    tracker: Tracker,
    ctl: &RequestControls,
    plan: &mut Plan,
    renderer: Renderer,
    content: String,
    usage: Usage,
) -> Response<TrackedBody> {
    let job = StreamJob {
        pieces: answer::split(&content, ctl.chunks),
        content,
        renderer,
        usage,
        delay: Duration::from_millis(ctl.chunk_delay_ms.unwrap_or(app.cfg.chunk_delay_ms)),
        hold: plan.hold.take(),
        abort_after_first: plan.mid_stream(),
    };
    let (tx, rx) = mpsc::channel(16);
    tokio::spawn(job.run(tx));
    app.stats.count_status(200);
    let mut resp = response(StatusCode::OK, EVENT_STREAM, TrackedBody::stream(rx, Some(tracker)));
    resp.headers_mut().insert(header::CACHE_CONTROL, NO_CACHE);
    resp
}

/// The SSE events of one answer in each provider's shape.
enum Renderer {
    OpenAi(StreamRenderer),
    Anthropic(anthropic::StreamRenderer),
    Gemini(gemini::StreamRenderer),
}

impl Renderer {
    /// What goes before the first content piece (Gemini sends nothing but content).
    fn start(&self) -> Option<Bytes> {
        match self {
            Renderer::OpenAi(r) => Some(r.role()),
            Renderer::Anthropic(r) => Some(r.start()),
            Renderer::Gemini(_) => None,
        }
    }

    fn content(&self, piece: &str) -> Bytes {
        match self {
            Renderer::OpenAi(r) => r.content(piece),
            Renderer::Anthropic(r) => r.content(piece),
            Renderer::Gemini(r) => r.content(piece),
        }
    }

    /// Events after the content and before the last one (which ends the response).
    fn tail(&self, usage: Usage) -> Vec<Bytes> {
        match self {
            Renderer::OpenAi(r) if r.include_usage => vec![r.finish(), r.usage(usage)],
            Renderer::OpenAi(r) => vec![r.finish()],
            Renderer::Anthropic(r) => r.tail(),
            Renderer::Gemini(_) => Vec::new(),
        }
    }

    fn last(&self) -> Bytes {
        match self {
            Renderer::OpenAi(_) => StreamRenderer::done(),
            Renderer::Anthropic(r) => r.last(),
            Renderer::Gemini(r) => r.last(),
        }
    }
}

/// Produces the SSE events of one streamed answer into the body channel.
struct StreamJob {
    content: String,
    pieces: Vec<std::ops::Range<usize>>,
    renderer: Renderer,
    usage: Usage,
    delay: Duration,
    hold: Option<watch::Receiver<bool>>,
    abort_after_first: bool,
}

impl StreamJob {
    async fn run(self, tx: mpsc::Sender<Msg>) {
        let _ = self.produce(&tx).await;
    }

    /// `Err(())` once the body (so the client) has gone away.
    async fn produce(mut self, tx: &mpsc::Sender<Msg>) -> Result<(), ()> {
        let hold = self.hold.take();
        let r = &self.renderer;
        let delay = self.delay;
        // Every event after the first waits `delay` before it is sent.
        let send = |msg: Msg| async move {
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            tx.send(msg).await.map_err(|_| ())
        };
        let mut first = true;
        if let Some(start) = r.start() {
            tx.send(Msg::Data(start)).await.map_err(|_| ())?;
            first = false;
        }
        for range in &self.pieces {
            let piece = self.content.get(range.clone()).unwrap_or_default();
            if first {
                first = false;
                tx.send(Msg::Data(r.content(piece))).await.map_err(|_| ())?;
            } else {
                send(Msg::Data(r.content(piece))).await?;
            }
            if self.abort_after_first {
                return send(Msg::Abort).await;
            }
        }
        if let Some(rx) = hold {
            tokio::select! {
                _ = wait_hold(rx) => {}
                _ = tx.closed() => return Err(()),
            }
        }
        for event in r.tail(self.usage) {
            send(Msg::Data(event)).await?;
        }
        send(Msg::Last(r.last())).await
    }
}

async fn echo(
    app: &App,
    tracker: Tracker,
    ctl: &RequestControls,
    parts: &hyper::http::request::Parts,
    body: &[u8],
) -> HandlerResult {
    let mut plan = Plan::new(app, ctl, Injection::default());
    plan.before_response(false).await?;
    if let Some(status) = plan.status {
        return Ok(answer(app, tracker, status, openai::injected_error_json(status), plan.mid_stream()));
    }
    let mut headers = serde_json::Map::new();
    for (name, value) in &parts.headers {
        let value = String::from_utf8_lossy(value.as_bytes());
        match headers.get_mut(name.as_str()) {
            Some(serde_json::Value::String(prev)) => {
                prev.push_str(", ");
                prev.push_str(&value);
            }
            _ => {
                headers.insert(name.as_str().to_owned(), value.into_owned().into());
            }
        }
    }
    let echo = serde_json::json!({
        "method": parts.method.as_str(),
        "path": path_and_query(parts),
        "headers": headers,
        "body": String::from_utf8_lossy(body),
    });
    let bytes = Bytes::from(serde_json::to_vec(&echo).unwrap_or_default());
    Ok(answer(app, tracker, 200, bytes, plan.mid_stream()))
}
