//! Gemini `generateContent` (AI Studio and Vertex share the body): OpenAI chat requests into
//! `GenerateContentRequest`s, and answers, SSE streams and errors back into OpenAI's shapes.
//!
//! `response_format`, `logprobs` and `logit_bias` have no direct counterpart and are dropped.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::openai::{
    self, Choice, ChunkWriter, Completion, ErrorOut, FinishReason, Part, ToolCallOut, ToolChoice, Usage,
};
use super::{EventData, ResponseContext, TranslateError};

// ---------------------------------------------------------------- request

/// Appends a turn, merging it into the previous one when the role repeats (a tool result and
/// the user's next words are one user turn to Gemini).
fn push_turn(turns: &mut Vec<(&'static str, Vec<Value>)>, role: &'static str, parts: Vec<Value>) {
    match turns.last_mut() {
        Some((last, prev)) if *last == role => prev.extend(parts),
        _ => turns.push((role, parts)),
    }
}

/// Gemini needs a MIME type for a file URI; an image URL's extension is the best hint.
fn mime_of_url(url: &str) -> &'static str {
    let path = url.split(['?', '#']).next().unwrap_or(url);
    let ext = path.rsplit_once('.').map(|(_, e)| e.to_ascii_lowercase()).unwrap_or_default();
    match ext.as_str() {
        "png" => "image/png",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "heic" => "image/heic",
        "heif" => "image/heif",
        "pdf" => "application/pdf",
        _ => "image/jpeg",
    }
}

fn part_value(part: Part) -> Option<Value> {
    match part {
        // Gemini refuses empty text parts.
        Part::Text(t) if t.is_empty() => None,
        Part::Text(t) => Some(json!({"text": t})),
        Part::InlineImage { mime, data } => Some(json!({"inline_data": {"mime_type": mime, "data": data}})),
        Part::ImageUrl(url) => Some(json!({"file_data": {"mime_type": mime_of_url(&url), "file_uri": url}})),
    }
}

fn empty_parts(i: usize) -> TranslateError {
    let at = format!("messages[{i}].content");
    TranslateError::invalid(format!("`{at}` is empty; gemini refuses a turn with no parts"), at)
}

/// Gemini's `Schema` is an OpenAPI subset that refuses these JSON-schema keywords.
fn gemini_schema(v: &mut Value) {
    match v {
        Value::Object(o) => {
            o.remove("additionalProperties");
            o.remove("$schema");
            o.remove("strict");
            o.values_mut().for_each(gemini_schema);
        }
        Value::Array(a) => a.iter_mut().for_each(gemini_schema),
        _ => {}
    }
}

/// An OpenAI chat request as a Gemini `GenerateContentRequest` (the model goes in the path).
pub fn to_request(mut obj: Map<String, Value>) -> Result<Value, TranslateError> {
    let streaming = obj.get("stream").and_then(Value::as_bool) == Some(true);
    if streaming && obj.get("n").and_then(Value::as_u64).is_some_and(|n| n > 1) {
        return Err(TranslateError::invalid("gemini streams one choice per request: `n` must be 1", "n"));
    }
    let Some(Value::Array(messages)) = obj.remove("messages") else {
        return Err(TranslateError::invalid("`messages` must be a non-empty array", "messages"));
    };
    let mut system = String::new();
    let mut turns: Vec<(&'static str, Vec<Value>)> = Vec::with_capacity(messages.len());
    // (tool_call_id, function name): Gemini answers a call by name, OpenAI by id.
    let mut calls: Vec<(String, String)> = Vec::new();
    for (i, m) in messages.into_iter().enumerate() {
        let Value::Object(mut m) = m else {
            return Err(TranslateError::invalid(
                format!("`messages[{i}]` must be an object"),
                format!("messages[{i}]"),
            ));
        };
        let content = m.remove("content").unwrap_or(Value::Null);
        match m.get("role").and_then(Value::as_str).unwrap_or_default() {
            "system" | "developer" => {
                let text = openai::content_text(content, "\n");
                if !text.is_empty() {
                    if !system.is_empty() {
                        system.push_str("\n\n");
                    }
                    system.push_str(&text);
                }
            }
            "user" => {
                let parts: Vec<Value> = openai::content_parts(content, i)?.into_iter().filter_map(part_value).collect();
                if parts.is_empty() {
                    return Err(empty_parts(i));
                }
                push_turn(&mut turns, "user", parts);
            }
            "assistant" => {
                let mut parts: Vec<Value> =
                    openai::content_parts(content, i)?.into_iter().filter_map(part_value).collect();
                for c in openai::tool_calls(m.remove("tool_calls").unwrap_or(Value::Null), i)? {
                    parts.push(json!({"functionCall": {"name": c.name, "args": c.arguments}}));
                    calls.push((c.id, c.name));
                }
                if parts.is_empty() {
                    return Err(empty_parts(i));
                }
                push_turn(&mut turns, "model", parts);
            }
            "tool" => {
                let id = m.get("tool_call_id").and_then(Value::as_str).unwrap_or_default();
                let Some(name) = calls.iter().rev().find(|(c, _)| c == id).map(|(_, n)| n.clone()) else {
                    let at = format!("messages[{i}].tool_call_id");
                    return Err(TranslateError::invalid(
                        format!("`{at}` names no tool call of an earlier assistant message"),
                        at,
                    ));
                };
                let text = openai::content_text(content, "\n");
                // Gemini wants an object: a tool's JSON object answer goes as is, anything else wrapped.
                let response = match serde_json::from_str::<Value>(&text) {
                    Ok(v @ Value::Object(_)) => v,
                    _ => json!({"content": text}),
                };
                push_turn(&mut turns, "user", vec![json!({"functionResponse": {"name": name, "response": response}})]);
            }
            other => {
                let at = format!("messages[{i}].role");
                return Err(TranslateError::invalid(format!("role `{other}` cannot be sent to gemini"), at));
            }
        }
    }
    if turns.is_empty() {
        return Err(TranslateError::invalid("gemini needs at least one user or assistant message", "messages"));
    }

    let mut out = Map::new();
    let contents: Vec<Value> = turns.into_iter().map(|(role, parts)| json!({"role": role, "parts": parts})).collect();
    out.insert("contents".into(), Value::Array(contents));
    if !system.is_empty() {
        out.insert("systemInstruction".into(), json!({"parts": [{"text": system}]}));
    }
    let mut config = Map::new();
    for (from, to) in [
        ("temperature", "temperature"),
        ("top_p", "topP"),
        ("n", "candidateCount"),
        ("seed", "seed"),
        ("presence_penalty", "presencePenalty"),
        ("frequency_penalty", "frequencyPenalty"),
    ] {
        if let Some(v) = obj.remove(from).filter(Value::is_number) {
            config.insert(to.into(), v);
        }
    }
    if let Some(max) = openai::max_tokens(&obj) {
        config.insert("maxOutputTokens".into(), max.into());
    }
    if let Some(stop) = obj.remove("stop").and_then(openai::stop_sequences) {
        config.insert("stopSequences".into(), stop);
    }
    if !config.is_empty() {
        out.insert("generationConfig".into(), Value::Object(config));
    }
    let functions = openai::functions(obj.remove("tools").unwrap_or(Value::Null))?;
    if !functions.is_empty() {
        let decls: Vec<Value> = functions
            .into_iter()
            .map(|f| {
                let mut d = Map::new();
                d.insert("name".into(), Value::String(f.name));
                if let Some(desc) = f.description {
                    d.insert("description".into(), Value::String(desc));
                }
                if let Some(mut p) = f.parameters {
                    gemini_schema(&mut p);
                    d.insert("parameters".into(), p);
                }
                Value::Object(d)
            })
            .collect();
        out.insert("tools".into(), json!([{"functionDeclarations": decls}]));
    }
    let config = match openai::tool_choice(obj.remove("tool_choice").unwrap_or(Value::Null))? {
        None => None,
        Some(ToolChoice::Auto) => Some(json!({"mode": "AUTO"})),
        Some(ToolChoice::None) => Some(json!({"mode": "NONE"})),
        Some(ToolChoice::Required) => Some(json!({"mode": "ANY"})),
        Some(ToolChoice::Function(name)) => Some(json!({"mode": "ANY", "allowedFunctionNames": [name]})),
    };
    if let Some(c) = config {
        out.insert("toolConfig".into(), json!({"functionCallingConfig": c}));
    }
    Ok(Value::Object(out))
}

// ---------------------------------------------------------------- answers

#[derive(Debug, Default, Clone, Copy, Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireUsage {
    prompt_token_count: Option<u64>,
    candidates_token_count: Option<u64>,
    thoughts_token_count: Option<u64>,
    total_token_count: Option<u64>,
    cached_content_token_count: Option<u64>,
}

impl WireUsage {
    fn to_openai(self) -> Usage {
        let prompt = self.prompt_token_count.unwrap_or(0);
        // Thinking tokens are billed as output, as OpenAI counts reasoning tokens.
        let completion = self.candidates_token_count.unwrap_or(0) + self.thoughts_token_count.unwrap_or(0);
        Usage {
            prompt_tokens: prompt,
            completion_tokens: completion,
            total_tokens: self.total_token_count.unwrap_or(prompt + completion),
            cached_tokens: self.cached_content_token_count,
        }
    }
}

#[derive(Deserialize)]
struct FunctionCall<'a> {
    #[serde(borrow, default)]
    id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    name: Option<Cow<'a, str>>,
    #[serde(default)]
    args: Option<Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WirePart<'a> {
    #[serde(borrow, default)]
    text: Option<Cow<'a, str>>,
    #[serde(default)]
    thought: Option<bool>,
    #[serde(borrow, default)]
    function_call: Option<FunctionCall<'a>>,
}

#[derive(Deserialize)]
struct WireContent<'a> {
    #[serde(borrow, default)]
    parts: Vec<WirePart<'a>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Candidate<'a> {
    #[serde(borrow, default)]
    content: Option<WireContent<'a>>,
    #[serde(borrow, default)]
    finish_reason: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PromptFeedback<'a> {
    #[serde(borrow, default)]
    block_reason: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct WireError<'a> {
    #[serde(default)]
    code: Option<u16>,
    #[serde(borrow, default)]
    message: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Response<'a> {
    #[serde(borrow, default)]
    candidates: Vec<Candidate<'a>>,
    #[serde(default)]
    usage_metadata: Option<WireUsage>,
    #[serde(borrow, default)]
    model_version: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    response_id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    prompt_feedback: Option<PromptFeedback<'a>>,
    #[serde(borrow, default)]
    error: Option<WireError<'a>>,
}

impl Response<'_> {
    fn parts(&self) -> &[WirePart<'_>] {
        self.candidates.first().and_then(|c| c.content.as_ref()).map_or(&[], |c| c.parts.as_slice())
    }

    /// The answer's finish reason, a blocked prompt counting as filtered content.
    fn finish_reason(&self) -> Option<FinishReason> {
        if let Some(reason) = self.candidates.first().and_then(|c| c.finish_reason.as_deref()) {
            return Some(finish_reason(reason));
        }
        self.prompt_feedback.as_ref().and_then(|f| f.block_reason.as_ref()).map(|_| FinishReason::ContentFilter)
    }
}

fn finish_reason(reason: &str) -> FinishReason {
    match reason {
        "MAX_TOKENS" => FinishReason::Length,
        "SAFETY" | "RECITATION" | "BLOCKLIST" | "PROHIBITED_CONTENT" | "SPII" | "IMAGE_SAFETY" => {
            FinishReason::ContentFilter
        }
        // STOP, and reasons OpenAI has no word for (LANGUAGE, MALFORMED_FUNCTION_CALL, OTHER)
        _ => FinishReason::Stop,
    }
}

fn is_answer_text(p: &WirePart<'_>) -> bool {
    p.thought != Some(true)
}

/// A tool call's id: Gemini's own when it sends one, else one made from its position.
fn call_id(fc: &FunctionCall<'_>, index: u32) -> String {
    fc.id.as_deref().map_or_else(|| format!("call_{index}"), str::to_string)
}

fn arguments(fc: &FunctionCall<'_>) -> String {
    fc.args.as_ref().map_or_else(|| "{}".to_string(), Value::to_string)
}

/// A `GenerateContentResponse` as a `chat.completion` body, with its usage: one choice per
/// candidate (`n` asks for several).
pub fn from_response(body: &[u8], ctx: &ResponseContext<'_>) -> Option<(Vec<u8>, Usage)> {
    let resp: Response = serde_json::from_slice(body).ok()?;
    let mut texts = Vec::with_capacity(resp.candidates.len().max(1));
    let mut calls = Vec::with_capacity(texts.capacity());
    let blocked =
        resp.prompt_feedback.as_ref().and_then(|f| f.block_reason.as_ref()).map(|_| FinishReason::ContentFilter);
    let mut finishes = Vec::with_capacity(texts.capacity());
    for candidate in &resp.candidates {
        let mut text = String::new();
        let mut tool_calls = Vec::new();
        for part in candidate.content.as_ref().map_or(&[][..], |c| c.parts.as_slice()) {
            if let Some(fc) = &part.function_call {
                let id = call_id(fc, tool_calls.len() as u32);
                tool_calls.push(ToolCallOut::new(id, fc.name.as_deref().unwrap_or_default(), arguments(fc)));
            } else if let (Some(t), true) = (&part.text, is_answer_text(part)) {
                text.push_str(t);
            }
        }
        let finish = match candidate.finish_reason.as_deref().map(finish_reason) {
            Some(FinishReason::Stop) if !tool_calls.is_empty() => Some(FinishReason::ToolCalls),
            other => other,
        };
        texts.push(text);
        calls.push(tool_calls);
        finishes.push(finish);
    }
    if resp.candidates.is_empty() {
        // A blocked prompt has no candidates: still one (empty, filtered) choice for the client.
        texts.push(String::new());
        calls.push(Vec::new());
        finishes.push(blocked);
    }
    let choices: Vec<Choice> = texts
        .iter()
        .zip(&calls)
        .zip(finishes)
        .map(|((text, calls), finish_reason)| Choice {
            content: (!text.is_empty() || calls.is_empty()).then_some(text.as_str()),
            tool_calls: calls,
            finish_reason,
        })
        .collect();
    let usage = resp.usage_metadata.unwrap_or_default().to_openai();
    let completion = Completion {
        id: resp.response_id.as_deref().unwrap_or("gemini"),
        model: resp.model_version.as_deref().unwrap_or(ctx.model),
        created: ctx.created,
        choices: &choices,
        usage,
    };
    Some((completion.to_json(), usage))
}

#[derive(Deserialize)]
struct ErrorBody<'a> {
    #[serde(borrow)]
    error: WireError<'a>,
}

/// The `error.message` of a Google API error body.
pub fn error_message(body: &[u8]) -> Option<String> {
    let e: ErrorBody = serde_json::from_slice(body).ok()?;
    e.error.message.map(Cow::into_owned)
}

// ---------------------------------------------------------------- streams

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Open,
    Complete,
    Failed,
}

/// The state of one Gemini stream (`alt=sse`: one whole `GenerateContentResponse` per event)
/// being translated. Gemini ends a stream by closing it, so the finish chunk and `[DONE]` are
/// written by [`StreamState::finish`].
#[derive(Debug)]
pub struct StreamState {
    events: EventData,
    inner: Translator,
}

#[derive(Debug)]
struct Translator {
    provider: &'static str,
    writer: Option<ChunkWriter>,
    model: String,
    created: u64,
    include_usage: bool,
    tools: u32,
    usage: WireUsage,
    finish: Option<FinishReason>,
    phase: Phase,
}

impl StreamState {
    pub fn new(ctx: &ResponseContext<'_>, provider: &'static str) -> Self {
        StreamState {
            events: EventData::default(),
            inner: Translator {
                provider,
                writer: None,
                model: ctx.model.to_string(),
                created: ctx.created,
                include_usage: ctx.include_usage,
                tools: 0,
                usage: WireUsage::default(),
                finish: None,
                phase: Phase::Open,
            },
        }
    }

    pub fn feed(&mut self, bytes: &[u8], out: &mut Vec<u8>) {
        if self.inner.phase != Phase::Open {
            return;
        }
        let inner = &mut self.inner;
        self.events.feed(bytes, |data| inner.on_event(data, out));
    }

    pub fn finish(&mut self, out: &mut Vec<u8>) {
        let t = &mut self.inner;
        if t.phase != Phase::Open {
            return;
        }
        let Some(mut reason) = t.finish else {
            return t.fail(ErrorOut::truncated(t.provider), out);
        };
        if reason == FinishReason::Stop && t.tools > 0 {
            reason = FinishReason::ToolCalls;
        }
        let usage = t.usage.to_openai();
        let w = t.writer(None, None, out);
        w.finish(out, reason);
        if w.include_usage_chunk() {
            w.usage(out, &usage);
        }
        out.extend_from_slice(openai::DONE);
        t.phase = Phase::Complete;
    }

    pub fn usage(&self) -> Usage {
        self.inner.usage.to_openai()
    }

    pub fn is_complete(&self) -> bool {
        self.inner.phase == Phase::Complete
    }

    pub fn failed(&self) -> bool {
        self.inner.phase == Phase::Failed
    }
}

impl Translator {
    /// The chunk writer, made (with the role chunk) on the first event.
    fn writer(&mut self, id: Option<&str>, model: Option<&str>, out: &mut Vec<u8>) -> &ChunkWriter {
        let (created, include_usage) = (self.created, self.include_usage);
        let fallback = &self.model;
        self.writer.get_or_insert_with(|| {
            let w = ChunkWriter::new(id.unwrap_or("gemini"), model.unwrap_or(fallback), created, include_usage);
            w.role(out);
            w
        })
    }

    fn fail(&mut self, error: ErrorOut, out: &mut Vec<u8>) {
        error.to_event(out);
        self.phase = Phase::Failed;
    }

    fn on_event(&mut self, data: &str, out: &mut Vec<u8>) {
        if self.phase != Phase::Open {
            return;
        }
        let Ok(resp) = serde_json::from_str::<Response>(data) else {
            return self.fail(ErrorOut::malformed(self.provider), out);
        };
        if let Some(e) = &resp.error {
            let status = e.code.unwrap_or(500);
            let error = ErrorOut::from_provider(self.provider, status, e.message.as_deref().unwrap_or_default());
            return self.fail(error, out);
        }
        if let Some(u) = resp.usage_metadata {
            // Each event reports the totals so far: the last one is the answer's.
            self.usage = u;
        }
        if let Some(f) = resp.finish_reason() {
            self.finish = Some(f);
        }
        self.writer(resp.response_id.as_deref(), resp.model_version.as_deref(), out);
        let parts = resp.parts();
        // All text of one event goes out as one chunk.
        let text_parts = parts.iter().filter(|p| p.function_call.is_none() && is_answer_text(p));
        let text: Cow<'_, str> = match text_parts.clone().filter_map(|p| p.text.as_deref()).count() {
            0 => Cow::Borrowed(""),
            1 => text_parts.filter_map(|p| p.text.as_deref()).map(Cow::Borrowed).next().unwrap_or_default(),
            _ => Cow::Owned(text_parts.filter_map(|p| p.text.as_deref()).collect()),
        };
        let Some(w) = self.writer.as_ref() else { return };
        if !text.is_empty() {
            w.content(out, &text);
        }
        for fc in parts.iter().filter_map(|p| p.function_call.as_ref()) {
            let index = self.tools;
            self.tools += 1;
            // Gemini sends each call whole: one chunk carries its id, name and arguments.
            w.tool_call_start(out, index, &call_id(fc, index), fc.name.as_deref().unwrap_or_default(), &arguments(fc));
        }
    }
}
