//! Anthropic Messages wire format (`POST /v1/messages`): request validation as the real API
//! does it, the JSON answer, the SSE events of a streamed answer and error bodies.

use bytes::Bytes;
use serde_json::{json, Value};

use crate::answer::{Prompt, Usage};

/// A request error in Anthropic's terms.
pub struct BadRequest {
    pub message: String,
}

fn bad(message: impl Into<String>) -> BadRequest {
    BadRequest { message: message.into() }
}

/// The parts of a Messages request the fake answer depends on.
pub struct Messages {
    pub model: String,
    pub stream: bool,
    pub prompt: Prompt,
}

/// Collects the text of a `content` (or `system`): a string, or the text of its blocks, each
/// with whether the answer may quote it (a tool result's text counts as prompt, but is not
/// quoted, as the OpenAI shape does not quote tool messages). Returns the image blocks.
fn blocks_text<'a>(content: &'a Value, quoted: bool, texts: &mut Vec<(&'a str, bool)>) -> usize {
    let mut images = 0;
    match content {
        Value::String(s) => texts.push((s, quoted)),
        Value::Array(blocks) => {
            for b in blocks {
                match b.get("type").and_then(Value::as_str) {
                    Some("text") => texts.extend(b.get("text").and_then(Value::as_str).map(|t| (t, quoted))),
                    Some("image") => images += 1,
                    Some("tool_result") => {
                        if let Some(c) = b.get("content") {
                            blocks_text(c, false, texts);
                        }
                    }
                    _ => {}
                }
            }
        }
        _ => {}
    }
    images
}

pub fn parse_messages(body: &[u8]) -> Result<Messages, BadRequest> {
    let req: Value = serde_json::from_slice(body)
        .map_err(|e| bad(format!("There was an error parsing the body of your request: {e}")))?;
    let Some(obj) = req.as_object() else { return Err(bad("Input should be a valid dictionary")) };
    let model = match obj.get("model") {
        Some(Value::String(m)) => m.clone(),
        Some(_) => return Err(bad("model: Input should be a valid string")),
        None => return Err(bad("model: Field required")),
    };
    match obj.get("max_tokens") {
        Some(v) if v.as_u64().is_some_and(|n| n >= 1) => {}
        Some(_) => return Err(bad("max_tokens: Input should be a valid integer greater than or equal to 1")),
        None => return Err(bad("max_tokens: Field required")),
    }
    let messages = match obj.get("messages") {
        Some(Value::Array(m)) if !m.is_empty() => m,
        Some(Value::Array(_)) => return Err(bad("messages: at least one message is required")),
        Some(_) => return Err(bad("messages: Input should be a valid list")),
        None => return Err(bad("messages: Field required")),
    };
    let stream = match obj.get("stream") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(bad("stream: Input should be a valid boolean")),
    };

    let mut prompt = Prompt::default();
    let mut texts = Vec::new();
    if let Some(system) = obj.get("system") {
        blocks_text(system, false, &mut texts);
    }
    let mut previous: Option<&str> = None;
    let last = messages.len() - 1;
    for (i, m) in messages.iter().enumerate() {
        let role = match m.get("role").and_then(Value::as_str) {
            Some(r @ ("user" | "assistant")) => r,
            Some("system") => {
                return Err(bad(format!(
                    "messages.{i}.role: Unexpected role \"system\". The Messages API accepts a top-level \
                     `system` parameter, not \"system\" as an input message role."
                )))
            }
            _ => return Err(bad(format!("messages.{i}.role: Input should be 'user' or 'assistant'"))),
        };
        if previous.is_none() && role != "user" {
            return Err(bad("messages: first message must use the \"user\" role"));
        }
        if previous == Some(role) {
            return Err(bad(format!(
                "messages: roles must alternate between \"user\" and \"assistant\", but found multiple \"{role}\" roles in a row"
            )));
        }
        previous = Some(role);
        let content = m.get("content").unwrap_or(&Value::Null);
        let empty = match content {
            Value::String(s) => s.is_empty(),
            Value::Array(a) => a.is_empty(),
            _ => return Err(bad(format!("messages.{i}.content: Input should be a valid string or list"))),
        };
        if empty && !(role == "assistant" && i == last) {
            return Err(bad(format!(
                "messages.{i}: all messages must have non-empty content except for the optional final assistant message"
            )));
        }
        let start = texts.len();
        let images = blocks_text(content, true, &mut texts);
        if role == "user" {
            prompt.last_user_text.clear();
            prompt.last_user_images = images;
            for (k, (t, _)) in texts[start..].iter().filter(|(_, quoted)| *quoted).enumerate() {
                prompt.push_user_text(t, k > 0);
            }
        }
    }
    prompt.text_bytes = texts.iter().map(|(t, _)| t.len()).sum();
    Ok(Messages { model, stream, prompt })
}

pub fn message_id(n: u64) -> String {
    format!("msg_fake_{n}")
}

/// The non-streaming Messages answer.
pub fn message_json(id: &str, model: &str, content: &str, usage: Usage) -> Bytes {
    let body = json!({
        "id": id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [{"type": "text", "text": content}],
        "stop_reason": "end_turn",
        "stop_sequence": null,
        "usage": {"input_tokens": usage.prompt_tokens, "output_tokens": usage.completion_tokens},
    });
    Bytes::from(body.to_string())
}

/// Renders the SSE events of one streamed answer, in the order Anthropic sends them.
pub struct StreamRenderer {
    pub id: String,
    pub model: String,
    pub usage: Usage,
}

fn event(buf: &mut Vec<u8>, name: &str, data: &Value) {
    buf.extend_from_slice(b"event: ");
    buf.extend_from_slice(name.as_bytes());
    buf.extend_from_slice(b"\ndata: ");
    let _ = serde_json::to_writer(&mut *buf, data);
    buf.extend_from_slice(b"\n\n");
}

fn one_event(name: &str, data: &Value) -> Bytes {
    let mut buf = Vec::with_capacity(128);
    event(&mut buf, name, data);
    Bytes::from(buf)
}

impl StreamRenderer {
    /// `message_start`, the text block's `content_block_start` and a `ping`.
    pub fn start(&self) -> Bytes {
        let mut buf = Vec::with_capacity(512);
        let message = json!({
            "id": self.id, "type": "message", "role": "assistant", "model": self.model, "content": [],
            "stop_reason": null, "stop_sequence": null,
            "usage": {"input_tokens": self.usage.prompt_tokens, "output_tokens": 1},
        });
        event(&mut buf, "message_start", &json!({"type": "message_start", "message": message}));
        let block = json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}});
        event(&mut buf, "content_block_start", &block);
        event(&mut buf, "ping", &json!({"type": "ping"}));
        Bytes::from(buf)
    }

    pub fn content(&self, text: &str) -> Bytes {
        let delta = json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": text}});
        one_event("content_block_delta", &delta)
    }

    /// `content_block_stop` and `message_delta` (stop reason and output tokens).
    pub fn tail(&self) -> Vec<Bytes> {
        let delta = json!({
            "type": "message_delta",
            "delta": {"stop_reason": "end_turn", "stop_sequence": null},
            "usage": {"output_tokens": self.usage.completion_tokens},
        });
        vec![
            one_event("content_block_stop", &json!({"type": "content_block_stop", "index": 0})),
            one_event("message_delta", &delta),
        ]
    }

    pub fn last(&self) -> Bytes {
        one_event("message_stop", &json!({"type": "message_stop"}))
    }
}

/// `{"type":"error","error":{"type":..,"message":..}}`
pub fn error_json(kind: &str, message: &str) -> Bytes {
    Bytes::from(json!({"type": "error", "error": {"type": kind, "message": message}}).to_string())
}

/// The error type Anthropic documents for an HTTP status.
pub fn error_type(status: u16) -> &'static str {
    match status {
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        529 => "overloaded_error",
        400..=499 => "invalid_request_error",
        _ => "api_error",
    }
}

/// The error body for a status forced by `x-fake-status` or `/control`.
pub fn injected_error_json(status: u16) -> Bytes {
    error_json(error_type(status), "Injected by fake-provider.")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(body: Value) -> String {
        parse_messages(body.to_string().as_bytes()).err().map(|e| e.message).unwrap_or_default()
    }

    #[test]
    fn parses_system_blocks_and_last_user_turn() {
        let body = json!({"model": "claude", "max_tokens": 10, "system": "be nice", "stream": true, "messages": [
            {"role": "user", "content": "old"},
            {"role": "assistant", "content": [{"type": "text", "text": "ok"}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t", "content": "r"},
                {"type": "text", "text": "look"}, {"type": "image", "source": {}}, {"type": "text", "text": "here"}]}]});
        let m = parse_messages(body.to_string().as_bytes()).ok().unwrap();
        assert!(m.stream);
        assert_eq!(m.prompt.last_user_text, "look here");
        assert_eq!(m.prompt.last_user_images, 1);
        assert_eq!(m.prompt.text_bytes, 7 + 3 + 2 + 1 + 4 + 4);
    }

    #[test]
    fn rejects_what_the_real_api_rejects() {
        let user = json!([{"role": "user", "content": "x"}]);
        assert_eq!(err(json!({"model": "m", "messages": user})), "max_tokens: Field required");
        assert_eq!(err(json!({"max_tokens": 1, "messages": user})), "model: Field required");
        assert!(err(json!({"model": "m", "max_tokens": 1, "messages": []})).contains("at least one message"));
        let two = json!([{"role": "user", "content": "x"}, {"role": "user", "content": "y"}]);
        assert!(err(json!({"model": "m", "max_tokens": 1, "messages": two})).contains("must alternate"));
        let first = json!([{"role": "assistant", "content": "x"}]);
        assert!(err(json!({"model": "m", "max_tokens": 1, "messages": first})).contains("first message"));
        let system = json!([{"role": "system", "content": "x"}]);
        assert!(err(json!({"model": "m", "max_tokens": 1, "messages": system})).contains("top-level `system`"));
        let empty = json!([{"role": "user", "content": ""}]);
        assert!(err(json!({"model": "m", "max_tokens": 1, "messages": empty})).contains("non-empty content"));
    }
}
