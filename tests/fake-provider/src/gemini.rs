//! Gemini `generateContent` wire format, as AI Studio and Vertex AI serve it: the routes,
//! request validation as the real API does it, the JSON answer, the SSE events of
//! `streamGenerateContent?alt=sse` and Google's error bodies.

use bytes::Bytes;
use serde_json::{json, Value};

use crate::answer::{Prompt, Usage};

/// A `generateContent` or `streamGenerateContent` call, from its path.
#[derive(Debug, PartialEq, Eq)]
pub struct Route {
    pub model: String,
    pub stream: bool,
}

/// Recognises `/{version}/models/{model}:{method}` (AI Studio),
/// `/{version}/projects/{p}/locations/{l}/publishers/google/models/{model}:{method}` (Vertex)
/// and `/{version}/publishers/google/models/{model}:{method}` (Vertex express mode).
pub fn route(path: &str) -> Option<Route> {
    let rest = path.strip_prefix('/')?;
    let (version, rest) = rest.split_once('/')?;
    if !version.starts_with("v1") {
        return None;
    }
    let rest = match rest.strip_prefix("models/") {
        Some(r) => r,
        None => {
            if let Some(tail) = rest.strip_prefix("publishers/google/models/") {
                tail
            } else {
                let segs: Vec<&str> = rest.splitn(7, '/').collect();
                match segs.as_slice() {
                    ["projects", _, "locations", _, "publishers", "google", tail] => tail.strip_prefix("models/")?,
                    _ => return None,
                }
            }
        }
    };
    let (model, method) = rest.split_once(':')?;
    if model.is_empty() || model.contains('/') {
        return None;
    }
    let stream = match method {
        "generateContent" => false,
        "streamGenerateContent" => true,
        _ => return None,
    };
    Some(Route { model: model.to_owned(), stream })
}

/// A request error in Google's terms (always `INVALID_ARGUMENT` here).
pub struct BadRequest {
    pub message: String,
}

fn bad(message: impl Into<String>) -> BadRequest {
    BadRequest { message: message.into() }
}

/// Either spelling of a field: Google's JSON accepts the proto name and the camelCase one.
fn field<'a>(v: &'a Value, snake: &str, camel: &str) -> Option<&'a Value> {
    v.get(camel).or_else(|| v.get(snake))
}

/// Text and images of a `parts` array; text is quotable unless it is a function response.
fn parts_text<'a>(parts: &'a [Value], texts: &mut Vec<&'a str>) -> usize {
    let mut images = 0;
    for p in parts {
        if let Some(t) = p.get("text").and_then(Value::as_str) {
            texts.push(t);
        } else if field(p, "inline_data", "inlineData").is_some() || field(p, "file_data", "fileData").is_some() {
            images += 1;
        }
    }
    images
}

/// Validates a `GenerateContentRequest`; returns what the answer depends on.
pub fn parse_generate(body: &[u8]) -> Result<Prompt, BadRequest> {
    let req: Value = serde_json::from_slice(body).map_err(|e| bad(format!("Invalid JSON payload received. {e}")))?;
    let contents = match req.get("contents") {
        Some(Value::Array(c)) if !c.is_empty() => c,
        Some(Value::Array(_)) | None => {
            return Err(bad("* GenerateContentRequest.contents: contents is not specified"));
        }
        Some(_) => return Err(bad("Invalid JSON payload received. Invalid value at 'contents'")),
    };
    let mut prompt = Prompt::default();
    let mut bytes = 0;
    if let Some(parts) =
        field(&req, "system_instruction", "systemInstruction").and_then(|s| s.get("parts")).and_then(Value::as_array)
    {
        let mut texts = Vec::new();
        parts_text(parts, &mut texts);
        bytes += texts.iter().map(|t| t.len()).sum::<usize>();
    }
    for (i, c) in contents.iter().enumerate() {
        let role = c.get("role").and_then(Value::as_str).unwrap_or("user");
        if role != "user" && role != "model" {
            return Err(bad(format!("Please use a valid role: user, model. (contents[{i}].role)")));
        }
        let parts = match c.get("parts") {
            Some(Value::Array(p)) if !p.is_empty() => p,
            _ => {
                return Err(bad(format!(
                    "* GenerateContentRequest.contents[{i}].parts: contents.parts must not be empty."
                )))
            }
        };
        let mut texts = Vec::new();
        let images = parts_text(parts, &mut texts);
        bytes += texts.iter().map(|t| t.len()).sum::<usize>();
        // A turn of only function responses is the tool's voice, not the user's.
        let speaks = !texts.is_empty() || images > 0;
        if role == "user" && speaks {
            prompt.last_user_text.clear();
            prompt.last_user_images = images;
            for (k, t) in texts.iter().enumerate() {
                prompt.push_user_text(t, k > 0);
            }
        }
    }
    prompt.text_bytes = bytes;
    Ok(prompt)
}

pub fn response_id(n: u64) -> String {
    format!("fake-{n}")
}

fn usage_json(usage: Usage) -> Value {
    json!({
        "promptTokenCount": usage.prompt_tokens,
        "candidatesTokenCount": usage.completion_tokens,
        "totalTokenCount": usage.total(),
    })
}

/// The non-streaming `GenerateContentResponse`.
pub fn response_json(id: &str, model: &str, content: &str, usage: Usage) -> Bytes {
    let body = json!({
        "candidates": [{
            "content": {"parts": [{"text": content}], "role": "model"},
            "finishReason": "STOP",
            "index": 0,
        }],
        "usageMetadata": usage_json(usage),
        "modelVersion": model,
        "responseId": id,
    });
    Bytes::from(body.to_string())
}

/// Renders `alt=sse` events: one `GenerateContentResponse` per piece, framed with CRLF as
/// Google frames them; the last carries the finish reason and the full usage.
pub struct StreamRenderer {
    pub id: String,
    pub model: String,
    pub usage: Usage,
}

impl StreamRenderer {
    fn event(&self, text: &str, finish: bool) -> Bytes {
        let mut candidate = json!({"content": {"parts": [{"text": text}], "role": "model"}, "index": 0});
        let usage = if finish {
            candidate["finishReason"] = json!("STOP");
            usage_json(self.usage)
        } else {
            json!({"promptTokenCount": self.usage.prompt_tokens, "totalTokenCount": self.usage.prompt_tokens})
        };
        let body = json!({
            "candidates": [candidate],
            "usageMetadata": usage,
            "modelVersion": self.model,
            "responseId": self.id,
        });
        let mut buf = Vec::with_capacity(256);
        buf.extend_from_slice(b"data: ");
        let _ = serde_json::to_writer(&mut buf, &body);
        buf.extend_from_slice(b"\r\n\r\n");
        Bytes::from(buf)
    }

    pub fn content(&self, text: &str) -> Bytes {
        self.event(text, false)
    }

    pub fn last(&self) -> Bytes {
        self.event("", true)
    }
}

/// Google's status name for an HTTP status.
pub fn status_name(status: u16) -> &'static str {
    match status {
        400 => "INVALID_ARGUMENT",
        401 => "UNAUTHENTICATED",
        403 => "PERMISSION_DENIED",
        404 => "NOT_FOUND",
        429 => "RESOURCE_EXHAUSTED",
        499 => "CANCELLED",
        501 => "UNIMPLEMENTED",
        503 => "UNAVAILABLE",
        504 => "DEADLINE_EXCEEDED",
        _ if status < 500 => "FAILED_PRECONDITION",
        _ => "INTERNAL",
    }
}

/// `{"error":{"code":..,"message":..,"status":..}}`
pub fn error_json(status: u16, message: &str) -> Bytes {
    Bytes::from(json!({"error": {"code": status, "message": message, "status": status_name(status)}}).to_string())
}

/// The error body for a status forced by `x-fake-status` or `/control`.
pub fn injected_error_json(status: u16) -> Bytes {
    error_json(status, "Injected by fake-provider.")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        let r = |p| route(p);
        assert_eq!(
            r("/v1beta/models/gemini-2.5-flash:generateContent"),
            Some(Route { model: "gemini-2.5-flash".into(), stream: false })
        );
        assert_eq!(r("/v1/models/g:streamGenerateContent"), Some(Route { model: "g".into(), stream: true }));
        assert_eq!(
            r("/v1/projects/p1/locations/us-central1/publishers/google/models/gemini-2.5-pro:generateContent"),
            Some(Route { model: "gemini-2.5-pro".into(), stream: false })
        );
        assert_eq!(r("/v1beta/models/g:countTokens"), None);
        assert_eq!(r("/v1/chat/completions"), None);
        assert_eq!(r("/v1/projects/p/locations/l/publishers/other/models/g:generateContent"), None);
        assert!(r("/v1/publishers/google/models/gemini-1.5-pro:generateContent").is_some());
    }

    #[test]
    fn parses_and_validates() {
        let body = json!({"systemInstruction": {"parts": [{"text": "sys"}]}, "contents": [
            {"role": "user", "parts": [{"text": "old"}]},
            {"role": "model", "parts": [{"functionCall": {"name": "f", "args": {}}}]},
            {"role": "user", "parts": [{"functionResponse": {"name": "f", "response": {}}}]},
            {"parts": [{"text": "look"}, {"inline_data": {"mime_type": "image/png", "data": "AA"}}, {"text": "here"}]}]});
        let p = parse_generate(body.to_string().as_bytes()).ok().unwrap();
        assert_eq!(p.last_user_text, "look here");
        assert_eq!(p.last_user_images, 1);
        assert_eq!(p.text_bytes, 3 + 3 + 4 + 4);
        let err = |b: Value| parse_generate(b.to_string().as_bytes()).err().map(|e| e.message).unwrap_or_default();
        assert!(err(json!({"contents": []})).contains("contents is not specified"));
        assert!(err(json!({"contents": [{"role": "user", "parts": []}]})).contains("contents[0].parts"));
        assert!(err(json!({"contents": [{"role": "system", "parts": [{"text": "x"}]}]})).contains("valid role"));
    }
}
