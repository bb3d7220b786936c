//! OpenAI chat-completions shapes every translation shares: reading the parts of a client
//! request, and writing `chat.completion` bodies, `chat.completion.chunk` SSE events and error
//! bodies for answers that came from another provider.

use serde::Serialize;
use serde_json::{Map, Value};

use super::TranslateError;

// ---------------------------------------------------------------- reading requests

/// The integer `max_completion_tokens` (the current name) or `max_tokens` (the old one).
pub fn max_tokens(obj: &Map<String, Value>) -> Option<u64> {
    obj.get("max_completion_tokens").and_then(Value::as_u64).or_else(|| obj.get("max_tokens").and_then(Value::as_u64))
}

/// `stop` as a list: OpenAI accepts a string or an array of strings.
pub fn stop_sequences(stop: Value) -> Option<Value> {
    match stop {
        Value::String(s) => Some(Value::Array(vec![Value::String(s)])),
        Value::Array(a) if !a.is_empty() => Some(Value::Array(a)),
        _ => None,
    }
}

/// Text of a `content` that must be text only (system, developer and tool messages): a string,
/// or the `text` of its text parts joined by `sep`.
pub fn content_text(content: Value, sep: &str) -> String {
    match content {
        Value::String(s) => s,
        Value::Array(parts) => {
            let mut out = String::new();
            for part in parts {
                if let Value::Object(mut p) = part {
                    if let Some(Value::String(t)) = p.remove("text") {
                        if !out.is_empty() && !t.is_empty() {
                            out.push_str(sep);
                        }
                        out.push_str(&t);
                    }
                }
            }
            out
        }
        _ => String::new(),
    }
}

/// One user or assistant content part, taken out of the request.
pub enum Part {
    Text(String),
    /// A `data:<mime>;base64,<data>` image.
    InlineImage {
        mime: String,
        data: String,
    },
    /// An http(s) image URL the provider fetches itself.
    ImageUrl(String),
}

/// The parts of message `i`'s `content`, in order.
pub fn content_parts(content: Value, i: usize) -> Result<Vec<Part>, TranslateError> {
    // Names the message in error messages only; built lazily since most requests are valid.
    let at = || format!("messages[{i}]");
    match content {
        Value::Null => Ok(Vec::new()),
        Value::String(s) => Ok(vec![Part::Text(s)]),
        Value::Array(parts) => {
            let mut out = Vec::with_capacity(parts.len());
            for (j, part) in parts.into_iter().enumerate() {
                let Value::Object(mut p) = part else { continue };
                let kind = p.get("type").and_then(Value::as_str).unwrap_or_default();
                match kind {
                    "text" | "refusal" => {
                        let key = if kind == "text" { "text" } else { "refusal" };
                        if let Some(Value::String(t)) = p.remove(key) {
                            out.push(Part::Text(t));
                        }
                    }
                    "image_url" => {
                        let url = match p.remove("image_url") {
                            Some(Value::Object(mut u)) => u.remove("url"),
                            Some(url @ Value::String(_)) => Some(url),
                            _ => None,
                        };
                        let where_ = || format!("{}.content[{j}].image_url.url", at());
                        let Some(Value::String(url)) = url else {
                            return Err(TranslateError::invalid(format!("`{}` must be a string", where_()), where_()));
                        };
                        out.push(image_part(url, where_)?);
                    }
                    other => {
                        let at = format!("{}.content[{j}].type", at());
                        return Err(TranslateError::invalid(
                            format!("content parts of type `{other}` cannot be sent to this provider"),
                            at,
                        ));
                    }
                }
            }
            Ok(out)
        }
        _ => {
            let at = format!("{}.content", at());
            Err(TranslateError::invalid(format!("`{at}` must be a string or an array"), at))
        }
    }
}

fn image_part(url: String, at: impl Fn() -> String) -> Result<Part, TranslateError> {
    if let Some(rest) = url.strip_prefix("data:") {
        let Some((meta, data)) = rest.split_once(',') else {
            return Err(TranslateError::invalid(format!("`{}` is not a valid data URL", at()), at()));
        };
        let Some(mime) = meta.strip_suffix(";base64") else {
            return Err(TranslateError::invalid(format!("`{}` must be a base64 data URL", at()), at()));
        };
        let mime = mime.to_string();
        // Reuse the URL's allocation for the (much larger) base64 payload.
        let skip = url.len() - data.len();
        let mut data = url;
        data.drain(..skip);
        return Ok(Part::InlineImage { mime, data });
    }
    if url.starts_with("https://") || url.starts_with("http://") {
        return Ok(Part::ImageUrl(url));
    }
    Err(TranslateError::invalid(format!("`{}` must be an http(s) URL or a base64 data URL", at()), at()))
}

/// One assistant `tool_calls` entry: id, function name and the arguments parsed as JSON.
pub struct ToolCallIn {
    pub id: String,
    pub name: String,
    pub arguments: Value,
}

/// The `tool_calls` of assistant message `i`.
pub fn tool_calls(calls: Value, i: usize) -> Result<Vec<ToolCallIn>, TranslateError> {
    let Value::Array(calls) = calls else { return Ok(Vec::new()) };
    let mut out = Vec::with_capacity(calls.len());
    for (k, call) in calls.into_iter().enumerate() {
        let at = format!("messages[{i}].tool_calls[{k}]");
        let Value::Object(mut call) = call else {
            return Err(TranslateError::invalid(format!("`{at}` must be an object"), at));
        };
        let id = match call.remove("id") {
            Some(Value::String(s)) => s,
            _ => String::new(),
        };
        let Some(Value::Object(mut f)) = call.remove("function") else {
            return Err(TranslateError::invalid(
                format!("`{at}.function` must be an object"),
                format!("{at}.function"),
            ));
        };
        let Some(Value::String(name)) = f.remove("name") else {
            let at = format!("{at}.function.name");
            return Err(TranslateError::invalid(format!("`{at}` must be a string"), at));
        };
        let arguments = match f.remove("arguments") {
            Some(Value::String(s)) if s.trim().is_empty() => Value::Object(Map::new()),
            Some(Value::String(s)) => match serde_json::from_str::<Value>(&s) {
                Ok(v @ Value::Object(_)) => v,
                _ => {
                    let at = format!("{at}.function.arguments");
                    return Err(TranslateError::invalid(format!("`{at}` must be a JSON object"), at));
                }
            },
            _ => Value::Object(Map::new()),
        };
        out.push(ToolCallIn { id, name, arguments });
    }
    Ok(out)
}

/// One `tools[]` function: name, description and JSON-schema parameters.
pub struct FunctionDecl {
    pub name: String,
    pub description: Option<String>,
    pub parameters: Option<Value>,
}

pub fn functions(tools: Value) -> Result<Vec<FunctionDecl>, TranslateError> {
    let Value::Array(tools) = tools else { return Ok(Vec::new()) };
    let mut out = Vec::with_capacity(tools.len());
    for (i, tool) in tools.into_iter().enumerate() {
        let Value::Object(mut tool) = tool else { continue };
        if tool.get("type").and_then(Value::as_str).is_some_and(|t| t != "function") {
            let at = format!("tools[{i}].type");
            return Err(TranslateError::invalid("only `function` tools can be sent to this provider", at));
        }
        let Some(Value::Object(mut f)) = tool.remove("function") else {
            let at = format!("tools[{i}].function");
            return Err(TranslateError::invalid(format!("`{at}` must be an object"), at));
        };
        let Some(Value::String(name)) = f.remove("name") else {
            let at = format!("tools[{i}].function.name");
            return Err(TranslateError::invalid(format!("`{at}` must be a string"), at));
        };
        let description = match f.remove("description") {
            Some(Value::String(d)) => Some(d),
            _ => None,
        };
        let parameters = f.remove("parameters").filter(|p| !p.is_null());
        out.push(FunctionDecl { name, description, parameters });
    }
    Ok(out)
}

/// What `tool_choice` asks for, in provider-neutral terms.
pub enum ToolChoice {
    Auto,
    None,
    Required,
    Function(String),
}

pub fn tool_choice(choice: Value) -> Result<Option<ToolChoice>, TranslateError> {
    match choice {
        Value::Null => Ok(None),
        Value::String(s) => match s.as_str() {
            "auto" => Ok(Some(ToolChoice::Auto)),
            "none" => Ok(Some(ToolChoice::None)),
            "required" => Ok(Some(ToolChoice::Required)),
            _ => Err(TranslateError::invalid(format!("unknown `tool_choice` `{s}`"), "tool_choice")),
        },
        Value::Object(mut o) => match o.remove("function").and_then(|mut f| f.get_mut("name").map(Value::take)) {
            Some(Value::String(name)) => Ok(Some(ToolChoice::Function(name))),
            _ => Err(TranslateError::invalid("`tool_choice.function.name` must be a string", "tool_choice")),
        },
        _ => Err(TranslateError::invalid("`tool_choice` must be a string or an object", "tool_choice")),
    }
}

// ---------------------------------------------------------------- writing answers

/// Token counts of one answer, as the gateway bills them and OpenAI reports them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// All input tokens, cached ones included.
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub total_tokens: u64,
    /// Input tokens read from the provider's prompt cache (a part of `prompt_tokens`).
    pub cached_tokens: Option<u64>,
}

#[derive(Serialize)]
struct PromptDetails {
    cached_tokens: u64,
}

#[derive(Serialize)]
struct UsageJson {
    prompt_tokens: u64,
    completion_tokens: u64,
    total_tokens: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    prompt_tokens_details: Option<PromptDetails>,
}

impl Serialize for Usage {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        UsageJson {
            prompt_tokens: self.prompt_tokens,
            completion_tokens: self.completion_tokens,
            total_tokens: self.total_tokens,
            prompt_tokens_details: self.cached_tokens.map(|cached_tokens| PromptDetails { cached_tokens }),
        }
        .serialize(s)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    Stop,
    Length,
    ToolCalls,
    ContentFilter,
}

impl FinishReason {
    pub fn as_str(self) -> &'static str {
        match self {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
            FinishReason::ToolCalls => "tool_calls",
            FinishReason::ContentFilter => "content_filter",
        }
    }
}

impl Serialize for FinishReason {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

#[derive(Debug, Serialize)]
pub struct FunctionOut<'a> {
    pub name: &'a str,
    pub arguments: String,
}

#[derive(Debug, Serialize)]
pub struct ToolCallOut<'a> {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub function: FunctionOut<'a>,
}

impl<'a> ToolCallOut<'a> {
    pub fn new(id: String, name: &'a str, arguments: String) -> Self {
        ToolCallOut { id, kind: "function", function: FunctionOut { name, arguments } }
    }
}

#[derive(Serialize)]
struct MessageOut<'a> {
    role: &'static str,
    content: Option<&'a str>,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    tool_calls: &'a [ToolCallOut<'a>],
}

#[derive(Serialize)]
struct ChoiceOut<'a> {
    index: u32,
    message: MessageOut<'a>,
    finish_reason: Option<FinishReason>,
}

#[derive(Serialize)]
struct CompletionOut<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    choices: Vec<ChoiceOut<'a>>,
    usage: Usage,
}

/// One choice of an answer, in provider-neutral form.
pub struct Choice<'a> {
    /// `None` when the answer has no text (only tool calls), as OpenAI writes it.
    pub content: Option<&'a str>,
    pub tool_calls: &'a [ToolCallOut<'a>],
    pub finish_reason: Option<FinishReason>,
}

/// A whole answer in provider-neutral form, ready to be written as a `chat.completion`.
pub struct Completion<'a> {
    pub id: &'a str,
    pub model: &'a str,
    pub created: u64,
    pub choices: &'a [Choice<'a>],
    pub usage: Usage,
}

impl Completion<'_> {
    pub fn to_json(&self) -> Vec<u8> {
        let choices = self
            .choices
            .iter()
            .enumerate()
            .map(|(i, c)| ChoiceOut {
                index: i as u32,
                message: MessageOut { role: "assistant", content: c.content, tool_calls: c.tool_calls },
                finish_reason: c.finish_reason,
            })
            .collect();
        let text: usize = self.choices.iter().map(|c| c.content.map_or(0, str::len)).sum();
        let body = CompletionOut {
            id: self.id,
            object: "chat.completion",
            created: self.created,
            model: self.model,
            choices,
            usage: self.usage,
        };
        let mut out = Vec::with_capacity(256 + text);
        // Serializing plain structs into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut out, &body);
        out
    }
}

/// Writes `chat.completion.chunk` events. The part every chunk shares (`id`, `object`,
/// `created`, `model`) is serialized once, when the writer is made.
#[derive(Debug)]
pub struct ChunkWriter {
    head: Vec<u8>,
    include_usage: bool,
}

impl ChunkWriter {
    pub fn new(id: &str, model: &str, created: u64, include_usage: bool) -> Self {
        let mut head = Vec::with_capacity(96 + id.len() + model.len());
        head.extend_from_slice(b"data: {\"id\":");
        let _ = serde_json::to_writer(&mut head, id);
        head.extend_from_slice(b",\"object\":\"chat.completion.chunk\",\"created\":");
        head.extend_from_slice(created.to_string().as_bytes());
        head.extend_from_slice(b",\"model\":");
        let _ = serde_json::to_writer(&mut head, model);
        head.extend_from_slice(b",\"choices\":");
        ChunkWriter { head, include_usage }
    }

    /// One chunk with a single choice whose `delta` is the JSON `write_delta` writes.
    fn choice(&self, out: &mut Vec<u8>, finish: Option<FinishReason>, write_delta: impl FnOnce(&mut Vec<u8>)) {
        out.extend_from_slice(&self.head);
        out.extend_from_slice(b"[{\"index\":0,\"delta\":");
        write_delta(out);
        out.extend_from_slice(b",\"finish_reason\":");
        match finish {
            Some(f) => {
                out.push(b'"');
                out.extend_from_slice(f.as_str().as_bytes());
                out.push(b'"');
            }
            None => out.extend_from_slice(b"null"),
        }
        out.extend_from_slice(b"}]");
        self.close(out);
    }

    fn close(&self, out: &mut Vec<u8>) {
        // With `include_usage` OpenAI writes `"usage": null` on every chunk but the last.
        if self.include_usage {
            out.extend_from_slice(b",\"usage\":null");
        }
        out.extend_from_slice(b"}\n\n");
    }

    /// The client asked for the `choices: []` usage chunk at the end.
    pub fn include_usage_chunk(&self) -> bool {
        self.include_usage
    }

    pub fn role(&self, out: &mut Vec<u8>) {
        self.choice(out, None, |o| o.extend_from_slice(b"{\"role\":\"assistant\",\"content\":\"\"}"));
    }

    pub fn content(&self, out: &mut Vec<u8>, text: &str) {
        self.choice(out, None, |o| {
            o.extend_from_slice(b"{\"content\":");
            let _ = serde_json::to_writer(&mut *o, text);
            o.push(b'}');
        });
    }

    /// The first delta of a tool call: its id and name, and arguments when they came whole.
    pub fn tool_call_start(&self, out: &mut Vec<u8>, index: u32, id: &str, name: &str, arguments: &str) {
        self.choice(out, None, |o| {
            o.extend_from_slice(b"{\"tool_calls\":[{\"index\":");
            o.extend_from_slice(index.to_string().as_bytes());
            o.extend_from_slice(b",\"id\":");
            let _ = serde_json::to_writer(&mut *o, id);
            o.extend_from_slice(b",\"type\":\"function\",\"function\":{\"name\":");
            let _ = serde_json::to_writer(&mut *o, name);
            o.extend_from_slice(b",\"arguments\":");
            let _ = serde_json::to_writer(&mut *o, arguments);
            o.extend_from_slice(b"}}]}");
        });
    }

    pub fn tool_call_arguments(&self, out: &mut Vec<u8>, index: u32, fragment: &str) {
        self.choice(out, None, |o| {
            o.extend_from_slice(b"{\"tool_calls\":[{\"index\":");
            o.extend_from_slice(index.to_string().as_bytes());
            o.extend_from_slice(b",\"function\":{\"arguments\":");
            let _ = serde_json::to_writer(&mut *o, fragment);
            o.extend_from_slice(b"}}]}");
        });
    }

    pub fn finish(&self, out: &mut Vec<u8>, reason: FinishReason) {
        self.choice(out, Some(reason), |o| o.extend_from_slice(b"{}"));
    }

    /// The `choices: []` chunk OpenAI sends last when the client asked for `include_usage`.
    pub fn usage(&self, out: &mut Vec<u8>, usage: &Usage) {
        out.extend_from_slice(&self.head);
        out.extend_from_slice(b"[],\"usage\":");
        let _ = serde_json::to_writer(&mut *out, usage);
        out.extend_from_slice(b"}\n\n");
    }
}

pub const DONE: &[u8] = b"data: [DONE]\n\n";

// ---------------------------------------------------------------- errors

/// An OpenAI-style error a provider's error was translated into.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorOut {
    pub status: u16,
    pub kind: &'static str,
    pub code: &'static str,
    pub message: String,
}

/// Longest provider message passed on to the client.
const MAX_MESSAGE: usize = 512;

impl ErrorOut {
    /// Maps a provider error by its HTTP status. The provider's own message is passed on only
    /// for faults of the client's request (4xx other than credentials), where it helps the
    /// client fix it; for the gateway's credentials and the provider's own faults the message
    /// says what happened in the gateway's words, so nothing about its keys or internals leaks.
    pub fn from_provider(provider: &str, status: u16, message: &str) -> Self {
        let passed = || format!("{provider}: {}", clean(message));
        match status {
            401 | 403 => ErrorOut {
                status: 502,
                kind: "server_error",
                code: "upstream_authentication_failed",
                message: format!("{provider} refused the gateway's credentials"),
            },
            404 => ErrorOut { status, kind: "invalid_request_error", code: "model_not_found", message: passed() },
            413 => ErrorOut { status, kind: "invalid_request_error", code: "request_too_large", message: passed() },
            429 => ErrorOut {
                status,
                kind: "rate_limit_exceeded",
                code: "rate_limit_exceeded",
                message: format!("{provider} is rate limiting requests; retry later"),
            },
            400..=499 => ErrorOut { status, kind: "invalid_request_error", code: "invalid_request", message: passed() },
            _ => ErrorOut {
                status: if (500..=599).contains(&status) { status } else { 502 },
                kind: "server_error",
                code: "upstream_error",
                message: format!("{provider} failed to answer (status {status})"),
            },
        }
    }

    /// A provider answer this gateway could not read.
    pub fn malformed(provider: &str) -> Self {
        ErrorOut {
            status: 502,
            kind: "server_error",
            code: "upstream_malformed",
            message: format!("{provider} sent an answer the gateway could not read"),
        }
    }

    /// A provider stream that stopped before it said it was complete.
    pub fn truncated(provider: &str) -> Self {
        ErrorOut {
            status: 502,
            kind: "server_error",
            code: "upstream_truncated",
            message: format!("{provider} ended the stream before the answer was complete"),
        }
    }

    fn body(&self) -> Value {
        serde_json::json!({"error": {"message": self.message, "type": self.kind, "param": null, "code": self.code}})
    }

    /// `{"error":{"message","type","param","code"}}`.
    pub fn to_json(&self) -> Vec<u8> {
        self.body().to_string().into_bytes()
    }

    /// The same body as an SSE event, which OpenAI SDKs raise as an error mid-stream.
    pub fn to_event(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"data: ");
        let _ = serde_json::to_writer(&mut *out, &self.body());
        out.extend_from_slice(b"\n\n");
    }
}

/// A provider message cut to [`MAX_MESSAGE`] characters, control characters dropped.
fn clean(message: &str) -> String {
    message.chars().filter(|c| !c.is_control()).take(MAX_MESSAGE).collect()
}
