//! Translation between the OpenAI chat-completions API that clients speak and each provider's
//! own API: requests one way, JSON answers, SSE streams and errors the other way.
//!
//! Everything here works on bytes and values the host hands in (the clock included), so a
//! translation is tested natively against fixtures taken from each provider's API reference.

pub mod anthropic;
pub mod config;
#[cfg(any(test, feature = "cli"))]
pub mod envoy_gen;
pub mod gemini;
pub mod openai;

use serde_json::Value;

use crate::core::errors::GatewayError;
pub use openai::{ErrorOut, FinishReason, Usage};

/// The API a provider speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProviderKind {
    OpenAi,
    Anthropic,
    /// Gemini on Google AI Studio (`generativelanguage.googleapis.com`).
    Gemini,
    /// Gemini on Vertex AI: the same bodies as [`ProviderKind::Gemini`], another path.
    Vertex,
    /// Any server that speaks OpenAI's API (vLLM, Ollama, a fake provider...).
    OpenAiCompatible,
}

impl ProviderKind {
    /// True when bodies pass through untranslated.
    pub fn speaks_openai(self) -> bool {
        matches!(self, ProviderKind::OpenAi | ProviderKind::OpenAiCompatible)
    }

    /// The name error messages use for this provider.
    pub fn label(self) -> &'static str {
        match self {
            ProviderKind::OpenAi => "openai",
            ProviderKind::Anthropic => "anthropic",
            ProviderKind::Gemini => "gemini",
            ProviderKind::Vertex => "vertex",
            ProviderKind::OpenAiCompatible => "upstream",
        }
    }
}

/// A client request this provider cannot be sent: a client fault, answered with a 400.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TranslateError {
    #[error("request body is not valid JSON: {0}")]
    InvalidJson(String),
    #[error("{message}")]
    Unrepresentable { message: String, param: String },
    #[error("{0} needs a project and a location to build its path")]
    MissingLocation(&'static str),
}

impl TranslateError {
    pub fn invalid(message: impl Into<String>, param: impl Into<String>) -> Self {
        TranslateError::Unrepresentable { message: message.into(), param: param.into() }
    }
}

impl From<TranslateError> for GatewayError {
    fn from(e: TranslateError) -> Self {
        match e {
            TranslateError::InvalidJson(m) => GatewayError::InvalidJson(m),
            TranslateError::Unrepresentable { message, param } => GatewayError::invalid(message, param),
            TranslateError::MissingLocation(_) => GatewayError::invalid(e.to_string(), ""),
        }
    }
}

/// What a request translation needs beyond the client's body.
#[derive(Debug, Clone, Copy)]
pub struct RequestOptions<'a> {
    /// The provider's name for the model, when it differs from the one the client asked for.
    pub model: Option<&'a str>,
    /// `max_tokens` for providers that require one (Anthropic) when the client sent none.
    pub default_max_tokens: u64,
}

/// What a response translation needs beyond the provider's body.
#[derive(Debug, Clone, Copy)]
pub struct ResponseContext<'a> {
    /// The model the client asked for: used when the provider's answer does not name one.
    pub model: &'a str,
    /// `created` of the OpenAI answer, in Unix seconds (from the host's clock).
    pub created: u64,
    /// The client asked for `stream_options.include_usage`.
    pub include_usage: bool,
}

/// Where a Vertex model lives.
#[derive(Debug, Clone, Copy)]
pub struct VertexLocation<'a> {
    pub project: &'a str,
    pub location: &'a str,
}

/// The upstream `:path` for one request.
pub fn upstream_path(
    kind: ProviderKind,
    model: &str,
    stream: bool,
    vertex: Option<VertexLocation<'_>>,
) -> Result<String, TranslateError> {
    // Gemini's docs write model names both bare and as `models/<name>`.
    let model = model.strip_prefix("models/").unwrap_or(model);
    let method = if stream { "streamGenerateContent?alt=sse" } else { "generateContent" };
    Ok(match kind {
        ProviderKind::OpenAi | ProviderKind::OpenAiCompatible => "/v1/chat/completions".to_string(),
        ProviderKind::Anthropic => "/v1/messages".to_string(),
        ProviderKind::Gemini => format!("/v1beta/models/{model}:{method}"),
        ProviderKind::Vertex => {
            let v = vertex.ok_or(TranslateError::MissingLocation("vertex"))?;
            format!("/v1/projects/{}/locations/{}/publishers/google/models/{model}:{method}", v.project, v.location)
        }
    })
}

/// The upstream `:path` for Vertex AI in express mode, where the API key names the project.
pub fn vertex_express_path(model: &str, stream: bool) -> String {
    let model = model.strip_prefix("models/").unwrap_or(model);
    let method = if stream { "streamGenerateContent?alt=sse" } else { "generateContent" };
    format!("/v1/publishers/google/models/{model}:{method}")
}

/// The body to send upstream, or `None` when the client's body goes as it is.
pub fn translate_request(
    kind: ProviderKind,
    body: &[u8],
    opts: &RequestOptions<'_>,
) -> Result<Option<Vec<u8>>, TranslateError> {
    if kind.speaks_openai() && opts.model.is_none() {
        return Ok(None);
    }
    let value: Value = serde_json::from_slice(body).map_err(|e| TranslateError::InvalidJson(e.to_string()))?;
    let Value::Object(obj) = value else {
        return Err(TranslateError::invalid("request body must be a JSON object", ""));
    };
    let out = match kind {
        ProviderKind::OpenAi | ProviderKind::OpenAiCompatible => {
            let mut obj = obj;
            if let Some(m) = opts.model {
                obj.insert("model".into(), Value::String(m.to_string()));
            }
            Value::Object(obj)
        }
        ProviderKind::Anthropic => anthropic::to_request(obj, opts)?,
        ProviderKind::Gemini | ProviderKind::Vertex => gemini::to_request(obj)?,
    };
    Ok(Some(serde_json::to_vec(&out).unwrap_or_default()))
}

/// A provider's whole (non-streamed) answer, in OpenAI's shape.
#[derive(Debug, Clone, PartialEq)]
pub struct TranslatedResponse {
    pub status: u16,
    /// `None` when the provider's body goes to the client as it is.
    pub body: Option<Vec<u8>>,
    /// Token counts to bill, when the provider reported them.
    pub usage: Option<Usage>,
}

pub fn translate_response(
    kind: ProviderKind,
    status: u16,
    body: &[u8],
    ctx: &ResponseContext<'_>,
) -> TranslatedResponse {
    let translated = match kind {
        ProviderKind::OpenAi | ProviderKind::OpenAiCompatible => {
            return TranslatedResponse { status, body: None, usage: None };
        }
        _ if !(200..300).contains(&status) => Err(provider_error(kind, status, body)),
        ProviderKind::Anthropic => anthropic::from_response(body, ctx).ok_or(ErrorOut::malformed(kind.label())),
        ProviderKind::Gemini | ProviderKind::Vertex => {
            gemini::from_response(body, ctx).ok_or(ErrorOut::malformed(kind.label()))
        }
    };
    match translated {
        Ok((body, usage)) => TranslatedResponse { status, body: Some(body), usage: Some(usage) },
        Err(e) => TranslatedResponse { status: e.status, body: Some(e.to_json()), usage: None },
    }
}

/// A provider's error answer as an OpenAI-style error.
pub fn provider_error(kind: ProviderKind, status: u16, body: &[u8]) -> ErrorOut {
    let message = match kind {
        ProviderKind::Anthropic => anthropic::error_message(body),
        ProviderKind::Gemini | ProviderKind::Vertex => gemini::error_message(body),
        ProviderKind::OpenAi | ProviderKind::OpenAiCompatible => None,
    };
    ErrorOut::from_provider(kind.label(), status, message.as_deref().unwrap_or("request rejected"))
}

/// Turns a provider's SSE stream into OpenAI `chat.completion.chunk` events, fed in pieces.
#[derive(Debug)]
pub enum StreamTranslator {
    Anthropic(anthropic::StreamState),
    Gemini(gemini::StreamState),
}

impl StreamTranslator {
    /// `None` for providers whose stream goes to the client as it is.
    pub fn new(kind: ProviderKind, ctx: &ResponseContext<'_>) -> Option<Self> {
        match kind {
            ProviderKind::OpenAi | ProviderKind::OpenAiCompatible => None,
            ProviderKind::Anthropic => Some(StreamTranslator::Anthropic(anthropic::StreamState::new(ctx))),
            ProviderKind::Gemini | ProviderKind::Vertex => {
                Some(StreamTranslator::Gemini(gemini::StreamState::new(ctx, kind.label())))
            }
        }
    }

    /// Feeds the next bytes of the provider's stream; returns the bytes to send the client.
    pub fn feed(&mut self, bytes: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        match self {
            StreamTranslator::Anthropic(s) => s.feed(bytes, &mut out),
            StreamTranslator::Gemini(s) => s.feed(bytes, &mut out),
        }
        out
    }

    /// The provider's stream ended: returns the last bytes for the client (`[DONE]`, or an
    /// error event when the stream stopped before it was complete).
    pub fn finish(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        match self {
            StreamTranslator::Anthropic(s) => s.finish(&mut out),
            StreamTranslator::Gemini(s) => s.finish(&mut out),
        }
        out
    }

    /// Token counts so far; final once the stream is complete.
    pub fn usage(&self) -> Usage {
        match self {
            StreamTranslator::Anthropic(s) => s.usage(),
            StreamTranslator::Gemini(s) => s.usage(),
        }
    }

    /// True once the provider said the answer is complete (the only answers worth caching).
    pub fn is_complete(&self) -> bool {
        match self {
            StreamTranslator::Anthropic(s) => s.is_complete(),
            StreamTranslator::Gemini(s) => s.is_complete(),
        }
    }

    /// True when the stream ended in an error (the provider's or a truncation).
    pub fn failed(&self) -> bool {
        match self {
            StreamTranslator::Anthropic(s) => s.failed(),
            StreamTranslator::Gemini(s) => s.failed(),
        }
    }
}

/// Splits an SSE byte stream into the `data` of its events. Unlike [`crate::core::sse`] it
/// keeps no raw copy and resumes its scan where the last piece ended, so feeding a stream
/// byte by byte costs the same as feeding it whole. Lines end with `\n` or `\r\n`.
#[derive(Debug, Default)]
pub struct EventData {
    buf: Vec<u8>,
    /// Where the line being read starts in `buf`.
    line_start: usize,
    /// Where the search for the end of that line resumes.
    scan: usize,
    data: String,
    has_data: bool,
}

impl EventData {
    /// Feeds bytes; calls `on_event` with the data of each event they complete.
    pub fn feed(&mut self, bytes: &[u8], mut on_event: impl FnMut(&str)) {
        self.buf.extend_from_slice(bytes);
        while let Some(nl) = self.buf[self.scan..].iter().position(|&b| b == b'\n') {
            let end = self.scan + nl;
            let mut line = &self.buf[self.line_start..end];
            if let [rest @ .., b'\r'] = line {
                line = rest;
            }
            if line.is_empty() {
                if self.has_data {
                    on_event(&self.data);
                }
                self.data.clear();
                self.has_data = false;
            } else if let Some(rest) = line.strip_prefix(b"data:") {
                let rest = rest.strip_prefix(b" ").unwrap_or(rest);
                if self.has_data {
                    self.data.push('\n');
                }
                self.data.push_str(&String::from_utf8_lossy(rest));
                self.has_data = true;
            }
            self.line_start = end + 1;
            self.scan = self.line_start;
        }
        self.scan = self.buf.len();
        // Drop the consumed lines once per feed, not once per line.
        if self.line_start > 0 {
            self.buf.drain(..self.line_start);
            self.scan -= self.line_start;
            self.line_start = 0;
        }
    }

    /// Bytes of an unfinished line or event are left over (the stream was cut).
    pub fn has_pending(&self) -> bool {
        self.has_data || !self.buf.is_empty()
    }
}

#[cfg(test)]
#[path = "tests/providers_tests.rs"]
mod tests;
