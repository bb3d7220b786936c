//! Token usage as the providers report it, in one shape: OpenAI (`usage.prompt_tokens`, with
//! `prompt_tokens_details.cached_tokens`), Anthropic (`usage.input_tokens`,
//! `cache_read_input_tokens`, `cache_creation_input_tokens`) and Gemini (`usageMetadata`),
//! from a JSON body or from a stream's events; and OpenAI's usage-only stream chunk, which the
//! gateway asks for on every stream and strips when the client did not.

use serde_json::Value;

/// Tokens by how they are priced. `input` excludes the cached and cache-written tokens:
/// OpenAI and Gemini count cached tokens inside the prompt, so they are subtracted here.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TokenUsage {
    pub input: u64,
    pub output: u64,
    pub cached_input: u64,
    pub cache_write: u64,
}

impl TokenUsage {
    /// All tokens, the unit of a tokens-per-minute limit.
    pub fn total(&self) -> u64 {
        self.input + self.output + self.cached_input + self.cache_write
    }
}

fn num(v: &Value, path: &[&str]) -> Option<u64> {
    path.iter().try_fold(v, |v, k| v.get(k))?.as_u64()
}

/// The usage of a response body of any of the three APIs, `None` if it reports none.
pub fn parse_usage(body: &[u8]) -> Option<TokenUsage> {
    usage_of(&serde_json::from_slice(body).ok()?)
}

/// The usage in a parsed response (or stream chunk) of any of the three APIs.
pub fn usage_of(v: &Value) -> Option<TokenUsage> {
    if let Some(m) = v.get("usageMetadata").filter(|m| m.is_object()) {
        return Some(gemini(m));
    }
    let u = v.get("usage").filter(|u| u.is_object())?;
    if u.get("prompt_tokens").is_some() || u.get("completion_tokens").is_some() {
        Some(openai(u))
    } else if u.get("input_tokens").is_some() || u.get("output_tokens").is_some() {
        Some(anthropic(u))
    } else {
        None
    }
}

fn openai(u: &Value) -> TokenUsage {
    let prompt = num(u, &["prompt_tokens"]).unwrap_or(0);
    let cached = num(u, &["prompt_tokens_details", "cached_tokens"]).unwrap_or(0).min(prompt);
    TokenUsage {
        input: prompt - cached,
        output: num(u, &["completion_tokens"]).unwrap_or(0),
        cached_input: cached,
        cache_write: 0,
    }
}

fn anthropic(u: &Value) -> TokenUsage {
    TokenUsage {
        input: num(u, &["input_tokens"]).unwrap_or(0),
        output: num(u, &["output_tokens"]).unwrap_or(0),
        cached_input: num(u, &["cache_read_input_tokens"]).unwrap_or(0),
        cache_write: num(u, &["cache_creation_input_tokens"]).unwrap_or(0),
    }
}

fn gemini(m: &Value) -> TokenUsage {
    let prompt = num(m, &["promptTokenCount"]).unwrap_or(0);
    let cached = num(m, &["cachedContentTokenCount"]).unwrap_or(0).min(prompt);
    // Thinking tokens are billed as output and are not inside `candidatesTokenCount`.
    let output = num(m, &["candidatesTokenCount"]).unwrap_or(0) + num(m, &["thoughtsTokenCount"]).unwrap_or(0);
    TokenUsage { input: prompt - cached, output, cached_input: cached, cache_write: 0 }
}

/// Usage gathered from a stream's events, whichever API produced it: OpenAI's final chunk,
/// Anthropic's `message_start` (input) then `message_delta` (cumulative output), Gemini's
/// `usageMetadata` on each chunk (the last one is the total).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct StreamUsage {
    usage: Option<TokenUsage>,
}

impl StreamUsage {
    /// Feed one event's `data` (the SSE parser's `SseEvent::data`).
    pub fn feed(&mut self, data: &str) {
        // Most chunks carry text only: skip the parse unless the chunk can hold usage
        // (`usage` or Gemini's `usageMetadata`).
        if !data.contains("usage") {
            return;
        }
        let Ok(v) = serde_json::from_str::<Value>(data) else { return };
        match v.get("type").and_then(Value::as_str) {
            Some("message_start") => {
                if let Some(u) = v.get("message").and_then(|m| m.get("usage")).filter(|u| u.is_object()) {
                    self.usage = Some(anthropic(u));
                }
            }
            Some("message_delta") => {
                if let Some(u) = v.get("usage").filter(|u| u.is_object()) {
                    let mut total = self.usage.unwrap_or_default();
                    let delta = anthropic(u);
                    total.output = delta.output;
                    // Later API versions repeat the input counts here; take them when present.
                    if u.get("input_tokens").is_some() {
                        total.input = delta.input;
                    }
                    if u.get("cache_read_input_tokens").is_some() {
                        total.cached_input = delta.cached_input;
                    }
                    if u.get("cache_creation_input_tokens").is_some() {
                        total.cache_write = delta.cache_write;
                    }
                    self.usage = Some(total);
                }
            }
            _ => {
                if let Some(u) = usage_of(&v) {
                    self.usage = Some(u);
                }
            }
        }
    }

    pub fn usage(&self) -> Option<TokenUsage> {
        self.usage
    }
}

/// OpenAI's extra chunk sent with `stream_options.include_usage`: `choices` empty, `usage` set.
/// The gateway always asks for it (to account the stream) and drops it when the client did not.
pub fn is_usage_only_chunk(data: &str) -> bool {
    if !data.contains("\"usage\"") {
        return false;
    }
    let Ok(v) = serde_json::from_str::<Value>(data) else { return false };
    v.get("choices").and_then(Value::as_array).is_some_and(|c| c.is_empty())
        && v.get("usage").is_some_and(Value::is_object)
}

/// Whether the client asked for the usage chunk itself (`stream_options.include_usage`).
pub fn client_wants_stream_usage(request: &Value) -> bool {
    request.get("stream_options").and_then(|o| o.get("include_usage")).and_then(Value::as_bool) == Some(true)
}

/// Ask for the usage chunk on a streaming request; returns whether the client had asked,
/// which decides whether the chunk is passed on or stripped.
pub fn request_stream_usage(request: &mut Value) -> bool {
    let asked = client_wants_stream_usage(request);
    let streaming = request.get("stream").and_then(Value::as_bool) == Some(true);
    if streaming && !asked {
        if let Some(obj) = request.as_object_mut() {
            let opts = obj.entry("stream_options").or_insert_with(|| Value::Object(Default::default()));
            if let Some(o) = opts.as_object_mut() {
                o.insert("include_usage".to_string(), Value::Bool(true));
            }
        }
    }
    asked
}

#[cfg(test)]
#[path = "tests/usage_tests.rs"]
mod tests;
