//! OpenAI chat-completions wire format: request parsing, JSON answer, SSE
//! chunks and error bodies.

use std::borrow::Cow;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::answer::{Prompt, Usage};

// ---------------------------------------------------------------- request

/// A string that borrows from the request body when it has no escapes.
#[derive(Deserialize)]
#[serde(transparent)]
pub struct Str<'a>(#[serde(borrow)] pub Cow<'a, str>);

#[derive(Deserialize)]
pub struct ChatRequest<'a> {
    #[serde(borrow, default)]
    pub model: Option<Str<'a>>,
    #[serde(borrow, default)]
    pub messages: Option<Vec<Message<'a>>>,
    #[serde(default)]
    pub stream: Option<bool>,
    #[serde(default)]
    pub stream_options: Option<StreamOptions>,
}

#[derive(Deserialize)]
pub struct StreamOptions {
    #[serde(default)]
    pub include_usage: Option<bool>,
}

#[derive(Deserialize)]
pub struct Message<'a> {
    #[serde(borrow, default)]
    pub role: Option<Str<'a>>,
    #[serde(borrow, default)]
    pub content: Option<Content<'a>>,
}

#[derive(Deserialize)]
#[serde(untagged)]
pub enum Content<'a> {
    Text(#[serde(borrow)] Str<'a>),
    Parts(#[serde(borrow)] Vec<Part<'a>>),
}

#[derive(Deserialize)]
pub struct Part<'a> {
    #[serde(borrow, rename = "type")]
    pub kind: Str<'a>,
    #[serde(borrow, default)]
    pub text: Option<Str<'a>>,
}

/// A request error in OpenAI's terms.
pub struct BadRequest {
    pub message: String,
    pub param: Option<&'static str>,
    pub code: Option<&'static str>,
}

/// The parts of a chat request the fake answer depends on.
pub struct Chat<'a> {
    pub model: Cow<'a, str>,
    pub stream: bool,
    pub include_usage: bool,
    pub prompt: Prompt,
}

pub fn parse_chat(body: &[u8]) -> Result<Chat<'_>, BadRequest> {
    let req: ChatRequest = serde_json::from_slice(body).map_err(|e| BadRequest {
        message: format!("We could not parse the JSON body of your request: {e}"),
        param: None,
        code: None,
    })?;
    let model = req.model.ok_or_else(|| missing("model"))?.0;
    let messages = req.messages.ok_or_else(|| missing("messages"))?;
    if messages.is_empty() {
        return Err(BadRequest {
            message: "Invalid 'messages': empty array. Expected an array with minimum length 1, \
                      but got an empty array instead."
                .to_owned(),
            param: Some("messages"),
            code: Some("empty_array"),
        });
    }

    let mut prompt = Prompt::default();
    let last_user = messages.iter().rposition(|m| m.role.as_ref().is_some_and(|r| r.0 == "user"));
    for (i, m) in messages.iter().enumerate() {
        let is_last_user = Some(i) == last_user;
        match &m.content {
            None => {}
            Some(Content::Text(t)) => {
                prompt.text_bytes += t.0.len();
                if is_last_user {
                    prompt.push_user_text(&t.0, false);
                }
            }
            Some(Content::Parts(parts)) => {
                let mut first_text = true;
                for p in parts {
                    match (&*p.kind.0, &p.text) {
                        ("text", Some(t)) => {
                            prompt.text_bytes += t.0.len();
                            if is_last_user {
                                prompt.push_user_text(&t.0, !first_text);
                                first_text = false;
                            }
                        }
                        ("image_url", _) if is_last_user => prompt.last_user_images += 1,
                        _ => {}
                    }
                }
            }
        }
    }

    Ok(Chat {
        model,
        stream: req.stream.unwrap_or(false),
        include_usage: req.stream_options.and_then(|o| o.include_usage).unwrap_or(false),
        prompt,
    })
}

pub fn missing(param: &'static str) -> BadRequest {
    BadRequest {
        message: format!("Missing required parameter: '{param}'."),
        param: Some(param),
        code: Some("missing_required_parameter"),
    }
}

// ---------------------------------------------------------------- answers

#[derive(Serialize)]
struct UsageJson {
    prompt_tokens: u64,
    completion_tokens: u64,
    total_tokens: u64,
}

impl From<Usage> for UsageJson {
    fn from(u: Usage) -> Self {
        UsageJson { prompt_tokens: u.prompt_tokens, completion_tokens: u.completion_tokens, total_tokens: u.total() }
    }
}

#[derive(Serialize)]
struct AssistantMessage<'a> {
    role: &'static str,
    content: &'a str,
}

#[derive(Serialize)]
struct Choice<'a> {
    index: u32,
    message: AssistantMessage<'a>,
    finish_reason: &'static str,
}

#[derive(Serialize)]
struct Completion<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    choices: [Choice<'a>; 1],
    usage: UsageJson,
}

pub fn completion_id(n: u64) -> String {
    format!("chatcmpl-fake-{n}")
}

/// The non-streaming `chat.completion` body.
pub fn completion_json(id: &str, created: u64, model: &str, content: &str, usage: Usage) -> Bytes {
    let body = Completion {
        id,
        object: "chat.completion",
        created,
        model,
        choices: [Choice { index: 0, message: AssistantMessage { role: "assistant", content }, finish_reason: "stop" }],
        usage: usage.into(),
    };
    to_bytes(&body, 256 + content.len())
}

#[derive(Serialize)]
struct Delta<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    role: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    content: Option<&'a str>,
}

#[derive(Serialize)]
struct ChunkChoice<'a> {
    index: u32,
    delta: Delta<'a>,
    finish_reason: Option<&'static str>,
}

#[derive(Serialize)]
struct Chunk<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    choices: &'a [ChunkChoice<'a>],
    /// Absent unless `include_usage`; then `null` except on the usage chunk
    /// (as OpenAI does).
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<Option<UsageJson>>,
}

/// Renders the SSE events of one streamed answer.
pub struct StreamRenderer {
    pub id: String,
    pub model: String,
    pub created: u64,
    pub include_usage: bool,
}

impl StreamRenderer {
    fn event(&self, choices: &[ChunkChoice<'_>], usage: Option<Usage>) -> Bytes {
        let chunk = Chunk {
            id: &self.id,
            object: "chat.completion.chunk",
            created: self.created,
            model: &self.model,
            choices,
            usage: self.include_usage.then(|| usage.map(UsageJson::from)),
        };
        let mut buf = Vec::with_capacity(256);
        buf.extend_from_slice(b"data: ");
        // Serializing plain structs into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut buf, &chunk);
        buf.extend_from_slice(b"\n\n");
        Bytes::from(buf)
    }

    fn delta(&self, delta: Delta<'_>, finish_reason: Option<&'static str>) -> Bytes {
        self.event(&[ChunkChoice { index: 0, delta, finish_reason }], None)
    }

    pub fn role(&self) -> Bytes {
        self.delta(Delta { role: Some("assistant"), content: Some("") }, None)
    }

    pub fn content(&self, text: &str) -> Bytes {
        self.delta(Delta { role: None, content: Some(text) }, None)
    }

    pub fn finish(&self) -> Bytes {
        self.delta(Delta { role: None, content: None }, Some("stop"))
    }

    /// The extra `choices: []` chunk sent when `include_usage` is set.
    pub fn usage(&self, usage: Usage) -> Bytes {
        self.event(&[], Some(usage))
    }

    pub fn done() -> Bytes {
        Bytes::from_static(b"data: [DONE]\n\n")
    }
}

// ---------------------------------------------------------------- errors

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: ErrorDetail<'a>,
}

#[derive(Serialize)]
struct ErrorDetail<'a> {
    message: &'a str,
    #[serde(rename = "type")]
    kind: &'a str,
    param: Option<&'a str>,
    code: Option<&'a str>,
}

/// `{"error":{"message":..,"type":..,"param":..,"code":..}}`
pub fn error_json(message: &str, kind: &str, param: Option<&str>, code: Option<&str>) -> Bytes {
    let body = ErrorBody { error: ErrorDetail { message, kind, param, code } };
    to_bytes(&body, 128 + message.len())
}

/// The error body for a status forced by `x-fake-status` or `/control`.
pub fn injected_error_json(status: u16) -> Bytes {
    let (message, kind, code) = match status {
        429 => ("Rate limit reached (injected by fake-provider).", "rate_limit_exceeded", "rate_limit_exceeded"),
        400..=499 => ("Request rejected (injected by fake-provider).", "invalid_request_error", "injected_error"),
        _ => (
            "The server had an error while processing your request (injected by fake-provider).",
            "server_error",
            "server_error",
        ),
    };
    error_json(message, kind, None, Some(code))
}

fn to_bytes<T: Serialize>(value: &T, capacity: usize) -> Bytes {
    let mut buf = Vec::with_capacity(capacity);
    // Serializing plain structs into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut buf, value);
    Bytes::from(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_string_and_parts() {
        let body = br#"{"model":"m","messages":[
            {"role":"system","content":"be nice"},
            {"role":"user","content":"old"},
            {"role":"assistant","content":null},
            {"role":"user","content":[{"type":"text","text":"look at"},
                {"type":"image_url","image_url":{"url":"data:,"}},
                {"type":"text","text":"this \"pic\""}]}],
            "stream":true,"stream_options":{"include_usage":true}}"#;
        let chat = parse_chat(body).ok().unwrap();
        assert_eq!(chat.model, "m");
        assert!(chat.stream && chat.include_usage);
        assert_eq!(chat.prompt.last_user_text, "look at this \"pic\"");
        assert_eq!(chat.prompt.last_user_images, 1);
        assert_eq!(chat.prompt.text_bytes, 7 + 3 + 7 + 10);
    }

    #[test]
    fn rejects_bad_requests() {
        let code = |b: &[u8]| parse_chat(b).err().map(|e| (e.param, e.code));
        assert_eq!(code(b"not json"), Some((None, None)));
        assert_eq!(code(br#"{"messages":[]}"#), Some((Some("model"), Some("missing_required_parameter"))));
        assert_eq!(code(br#"{"model":"m"}"#), Some((Some("messages"), Some("missing_required_parameter"))));
        assert_eq!(code(br#"{"model":"m","messages":[]}"#), Some((Some("messages"), Some("empty_array"))));
        assert!(code(br#"{"model":"m","messages":[{"role":"user","content":5}]}"#).is_some());
        assert!(code(br#"{"model":"m","messages":[],"stream":"yes"}"#).is_some());
    }

    #[test]
    fn chunk_shapes() {
        let r = StreamRenderer { id: "x".into(), model: "m".into(), created: 1, include_usage: false };
        let s = String::from_utf8(r.content("hi").to_vec()).unwrap();
        assert_eq!(
            s,
            "data: {\"id\":\"x\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\
             \"choices\":[{\"index\":0,\"delta\":{\"content\":\"hi\"},\"finish_reason\":null}]}\n\n"
        );
        let r = StreamRenderer { include_usage: true, ..r };
        let s = String::from_utf8(r.finish().to_vec()).unwrap();
        assert!(s.contains("\"delta\":{},\"finish_reason\":\"stop\"}],\"usage\":null}"));
        let u = Usage { prompt_tokens: 1, completion_tokens: 2 };
        let s = String::from_utf8(r.usage(u).to_vec()).unwrap();
        assert!(s.contains("\"choices\":[],\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":2,\"total_tokens\":3}"));
    }
}
