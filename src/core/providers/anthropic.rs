//! Anthropic Messages API (`POST /v1/messages`): OpenAI chat requests into Messages requests,
//! and Messages answers, SSE streams and errors back into OpenAI's shapes.
//!
//! OpenAI fields Anthropic has no counterpart for (`logprobs`, `seed`, the penalties,
//! `response_format`) are dropped; `n > 1` cannot be expressed and is refused.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::openai::{
    self, Choice, ChunkWriter, Completion, ErrorOut, FinishReason, Part, ToolCallOut, ToolChoice, Usage,
};
use super::{EventData, RequestOptions, ResponseContext, TranslateError};

const PROVIDER: &str = "anthropic";

// ---------------------------------------------------------------- request

#[derive(Clone, Copy, PartialEq, Eq)]
enum Role {
    User,
    Assistant,
}

/// Appends a turn, merging it into the previous one when the role repeats (Anthropic wants
/// turns to alternate; several OpenAI tool messages in a row become one user turn).
fn push_turn(turns: &mut Vec<(Role, Vec<Value>)>, role: Role, blocks: Vec<Value>) {
    match turns.last_mut() {
        Some((last, prev)) if *last == role => prev.extend(blocks),
        _ => turns.push((role, blocks)),
    }
}

fn text_block(text: String) -> Value {
    json!({"type": "text", "text": text})
}

fn part_block(part: Part) -> Option<Value> {
    match part {
        // Anthropic refuses empty text blocks.
        Part::Text(t) if t.is_empty() => None,
        Part::Text(t) => Some(text_block(t)),
        Part::InlineImage { mime, data } => {
            Some(json!({"type": "image", "source": {"type": "base64", "media_type": mime, "data": data}}))
        }
        Part::ImageUrl(url) => Some(json!({"type": "image", "source": {"type": "url", "url": url}})),
    }
}

/// An OpenAI chat request as an Anthropic Messages request.
pub fn to_request(mut obj: Map<String, Value>, opts: &RequestOptions<'_>) -> Result<Value, TranslateError> {
    if obj.get("n").and_then(Value::as_u64).is_some_and(|n| n > 1) {
        return Err(TranslateError::invalid("anthropic answers one choice per request: `n` must be 1", "n"));
    }
    let Some(Value::Array(messages)) = obj.remove("messages") else {
        return Err(TranslateError::invalid("`messages` must be a non-empty array", "messages"));
    };
    let mut system = String::new();
    let mut turns: Vec<(Role, Vec<Value>)> = Vec::with_capacity(messages.len());
    let last = messages.len().saturating_sub(1);
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
                let blocks: Vec<Value> =
                    openai::content_parts(content, i)?.into_iter().filter_map(part_block).collect();
                if blocks.is_empty() {
                    let at = format!("messages[{i}].content");
                    return Err(TranslateError::invalid(format!("`{at}` is empty; anthropic needs content"), at));
                }
                push_turn(&mut turns, Role::User, blocks);
            }
            "assistant" => {
                let mut blocks: Vec<Value> =
                    openai::content_parts(content, i)?.into_iter().filter_map(part_block).collect();
                let calls = openai::tool_calls(m.remove("tool_calls").unwrap_or(Value::Null), i)?;
                for c in calls {
                    blocks.push(json!({"type": "tool_use", "id": c.id, "name": c.name, "input": c.arguments}));
                }
                // An empty assistant turn says nothing; Anthropic would refuse it anywhere but last.
                if !blocks.is_empty() || i == last {
                    push_turn(&mut turns, Role::Assistant, blocks);
                }
            }
            "tool" => {
                let id = match m.remove("tool_call_id") {
                    Some(Value::String(s)) => s,
                    _ => {
                        let at = format!("messages[{i}].tool_call_id");
                        return Err(TranslateError::invalid(format!("`{at}` must be a string"), at));
                    }
                };
                let text = openai::content_text(content, "\n");
                push_turn(
                    &mut turns,
                    Role::User,
                    vec![json!({"type": "tool_result", "tool_use_id": id, "content": text})],
                );
            }
            other => {
                let at = format!("messages[{i}].role");
                return Err(TranslateError::invalid(format!("role `{other}` cannot be sent to anthropic"), at));
            }
        }
    }
    match turns.first() {
        None => {
            return Err(TranslateError::invalid("anthropic needs at least one user message", "messages"));
        }
        Some((Role::Assistant, _)) => {
            return Err(TranslateError::invalid(
                "anthropic needs the conversation to start with a user message (after any system messages)",
                "messages",
            ));
        }
        Some((Role::User, _)) => {}
    }
    if let Some((Role::Assistant, blocks)) = turns.last() {
        if blocks.is_empty() {
            turns.pop();
        }
    }

    let mut out = Map::new();
    let model = match (opts.model, obj.remove("model")) {
        (Some(m), _) => Value::String(m.to_string()),
        (None, Some(m)) => m,
        (None, None) => Value::Null,
    };
    out.insert("model".into(), model);
    out.insert("max_tokens".into(), openai::max_tokens(&obj).unwrap_or(opts.default_max_tokens).into());
    if !system.is_empty() {
        out.insert("system".into(), Value::String(system));
    }
    let messages: Vec<Value> = turns
        .into_iter()
        .map(|(role, mut blocks)| {
            let role = if role == Role::User { "user" } else { "assistant" };
            // A lone text block is written as a plain string, as Anthropic's own examples do.
            let content = match blocks.as_mut_slice() {
                [Value::Object(b)] if b.get("type").and_then(Value::as_str) == Some("text") => {
                    b.remove("text").unwrap_or(Value::Null)
                }
                _ => Value::Array(blocks),
            };
            json!({"role": role, "content": content})
        })
        .collect();
    out.insert("messages".into(), Value::Array(messages));
    if let Some(t) = obj.get("temperature").and_then(Value::as_f64) {
        // Anthropic's range is 0..=1 where OpenAI's is 0..=2: the hottest OpenAI settings map
        // to Anthropic's hottest rather than to a refused request.
        out.insert("temperature".into(), json!(t.min(1.0)));
    }
    if let Some(p) = obj.remove("top_p").filter(Value::is_number) {
        out.insert("top_p".into(), p);
    }
    if let Some(stop) = obj.remove("stop").and_then(openai::stop_sequences) {
        out.insert("stop_sequences".into(), stop);
    }
    if obj.get("stream").and_then(Value::as_bool) == Some(true) {
        out.insert("stream".into(), Value::Bool(true));
    }
    if let Some(Value::String(user)) = obj.remove("user") {
        out.insert("metadata".into(), json!({"user_id": user}));
    }
    let tools = openai::functions(obj.remove("tools").unwrap_or(Value::Null))?;
    if !tools.is_empty() {
        let tools: Vec<Value> = tools
            .into_iter()
            .map(|f| {
                let mut t = Map::new();
                t.insert("name".into(), Value::String(f.name));
                if let Some(d) = f.description {
                    t.insert("description".into(), Value::String(d));
                }
                let schema = f.parameters.unwrap_or_else(|| json!({"type": "object", "properties": {}}));
                t.insert("input_schema".into(), schema);
                Value::Object(t)
            })
            .collect();
        out.insert("tools".into(), Value::Array(tools));
    }
    let parallel = obj.get("parallel_tool_calls").and_then(Value::as_bool);
    let choice = openai::tool_choice(obj.remove("tool_choice").unwrap_or(Value::Null))?;
    let mut choice = match choice {
        None if parallel == Some(false) => Some(json!({"type": "auto"})),
        None => None,
        Some(ToolChoice::Auto) => Some(json!({"type": "auto"})),
        Some(ToolChoice::None) => Some(json!({"type": "none"})),
        Some(ToolChoice::Required) => Some(json!({"type": "any"})),
        Some(ToolChoice::Function(name)) => Some(json!({"type": "tool", "name": name})),
    };
    if let (Some(Value::Object(c)), Some(false)) = (choice.as_mut(), parallel) {
        if c.get("type").and_then(Value::as_str) != Some("none") {
            c.insert("disable_parallel_tool_use".into(), Value::Bool(true));
        }
    }
    if let Some(c) = choice {
        out.insert("tool_choice".into(), c);
    }
    Ok(Value::Object(out))
}

// ---------------------------------------------------------------- answers

#[derive(Debug, Default, Clone, Copy, Deserialize)]
struct WireUsage {
    input_tokens: Option<u64>,
    output_tokens: Option<u64>,
    cache_read_input_tokens: Option<u64>,
    cache_creation_input_tokens: Option<u64>,
}

impl WireUsage {
    /// Later reports (a stream's `message_delta`) replace the counts they carry.
    fn update(&mut self, newer: &WireUsage) {
        self.input_tokens = newer.input_tokens.or(self.input_tokens);
        self.output_tokens = newer.output_tokens.or(self.output_tokens);
        self.cache_read_input_tokens = newer.cache_read_input_tokens.or(self.cache_read_input_tokens);
        self.cache_creation_input_tokens = newer.cache_creation_input_tokens.or(self.cache_creation_input_tokens);
    }

    fn to_openai(self) -> Usage {
        let cached = self.cache_read_input_tokens;
        let prompt =
            self.input_tokens.unwrap_or(0) + cached.unwrap_or(0) + self.cache_creation_input_tokens.unwrap_or(0);
        let completion = self.output_tokens.unwrap_or(0);
        Usage {
            prompt_tokens: prompt,
            completion_tokens: completion,
            total_tokens: prompt + completion,
            cached_tokens: cached,
        }
    }
}

#[derive(Deserialize)]
struct Block<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(borrow, default)]
    text: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    name: Option<Cow<'a, str>>,
    #[serde(default)]
    input: Option<Value>,
}

#[derive(Deserialize)]
struct Message<'a> {
    #[serde(borrow, default)]
    id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    model: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    content: Vec<Block<'a>>,
    #[serde(borrow, default)]
    stop_reason: Option<Cow<'a, str>>,
    #[serde(default)]
    usage: WireUsage,
}

fn finish_reason(stop_reason: &str) -> FinishReason {
    match stop_reason {
        "max_tokens" | "model_context_window_exceeded" => FinishReason::Length,
        "tool_use" => FinishReason::ToolCalls,
        "refusal" => FinishReason::ContentFilter,
        // end_turn, stop_sequence, pause_turn
        _ => FinishReason::Stop,
    }
}

/// A Messages answer as a `chat.completion` body, with its usage; `None` if it is not one.
pub fn from_response(body: &[u8], ctx: &ResponseContext<'_>) -> Option<(Vec<u8>, Usage)> {
    let msg: Message = serde_json::from_slice(body).ok()?;
    let mut text = String::new();
    let mut calls = Vec::new();
    for block in &msg.content {
        match block.kind.as_ref() {
            "text" => text.push_str(block.text.as_deref().unwrap_or_default()),
            "tool_use" => {
                let args = block.input.as_ref().map_or_else(|| "{}".to_string(), Value::to_string);
                let id = block.id.as_deref().unwrap_or_default().to_string();
                calls.push(ToolCallOut::new(id, block.name.as_deref().unwrap_or_default(), args));
            }
            _ => {}
        }
    }
    let usage = msg.usage.to_openai();
    let choice = Choice {
        content: (!text.is_empty() || calls.is_empty()).then_some(text.as_str()),
        tool_calls: &calls,
        finish_reason: msg.stop_reason.as_deref().map(finish_reason),
    };
    let completion = Completion {
        id: msg.id.as_deref().unwrap_or_default(),
        model: msg.model.as_deref().unwrap_or(ctx.model),
        created: ctx.created,
        choices: &[choice],
        usage,
    };
    Some((completion.to_json(), usage))
}

#[derive(Deserialize)]
struct WireError<'a> {
    #[serde(rename = "type", borrow, default)]
    kind: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    message: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct ErrorBody<'a> {
    #[serde(borrow)]
    error: WireError<'a>,
}

/// The `error.message` of an Anthropic error body.
pub fn error_message(body: &[u8]) -> Option<String> {
    let e: ErrorBody = serde_json::from_slice(body).ok()?;
    e.error.message.map(Cow::into_owned)
}

/// The HTTP status Anthropic documents for each error type (a stream carries only the type).
fn error_status(kind: &str) -> u16 {
    match kind {
        "invalid_request_error" => 400,
        "authentication_error" => 401,
        "permission_error" => 403,
        "not_found_error" => 404,
        "request_too_large" => 413,
        "rate_limit_error" => 429,
        "overloaded_error" => 529,
        _ => 500,
    }
}

// ---------------------------------------------------------------- streams

#[derive(Deserialize)]
struct Delta<'a> {
    #[serde(borrow, default)]
    text: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    partial_json: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    stop_reason: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct Event<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(default)]
    index: Option<usize>,
    #[serde(borrow, default)]
    message: Option<Message<'a>>,
    #[serde(borrow, default)]
    content_block: Option<Block<'a>>,
    #[serde(borrow, default)]
    delta: Option<Delta<'a>>,
    #[serde(default)]
    usage: Option<WireUsage>,
    #[serde(borrow, default)]
    error: Option<WireError<'a>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Open,
    Complete,
    Failed,
}

/// The state of one Anthropic stream being translated.
#[derive(Debug)]
pub struct StreamState {
    events: EventData,
    inner: Translator,
}

#[derive(Debug)]
struct Translator {
    writer: Option<ChunkWriter>,
    model: String,
    created: u64,
    include_usage: bool,
    /// OpenAI's `tool_calls[].index` of each Anthropic content block that is a tool call.
    tool_of_block: Vec<Option<u32>>,
    tools: u32,
    usage: WireUsage,
    finish: Option<FinishReason>,
    phase: Phase,
}

impl StreamState {
    pub fn new(ctx: &ResponseContext<'_>) -> Self {
        StreamState {
            events: EventData::default(),
            inner: Translator {
                writer: None,
                model: ctx.model.to_string(),
                created: ctx.created,
                include_usage: ctx.include_usage,
                tool_of_block: Vec::new(),
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
        if self.inner.phase == Phase::Open {
            self.inner.fail(ErrorOut::truncated(PROVIDER), out);
        }
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
    /// The chunk writer, made (with the role chunk) on the first event that needs one.
    fn writer(&mut self, id: Option<&str>, model: Option<&str>, out: &mut Vec<u8>) -> &ChunkWriter {
        let (created, include_usage) = (self.created, self.include_usage);
        let fallback = &self.model;
        self.writer.get_or_insert_with(|| {
            let w = ChunkWriter::new(id.unwrap_or("msg"), model.unwrap_or(fallback), created, include_usage);
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
        let Ok(ev) = serde_json::from_str::<Event>(data) else {
            return self.fail(ErrorOut::malformed(PROVIDER), out);
        };
        match ev.kind.as_ref() {
            "message_start" => {
                let msg = ev.message.as_ref();
                if let Some(m) = msg {
                    self.usage.update(&m.usage);
                }
                self.writer(msg.and_then(|m| m.id.as_deref()), msg.and_then(|m| m.model.as_deref()), out);
            }
            "content_block_start" => {
                let Some(block) = ev.content_block else { return };
                match block.kind.as_ref() {
                    "text" => {
                        let text = block.text.as_deref().unwrap_or_default();
                        let w = self.writer(None, None, out);
                        if !text.is_empty() {
                            w.content(out, text);
                        }
                    }
                    "tool_use" => {
                        let index = self.tools;
                        self.tools += 1;
                        let block_index = ev.index.unwrap_or(0);
                        if self.tool_of_block.len() <= block_index {
                            self.tool_of_block.resize(block_index + 1, None);
                        }
                        self.tool_of_block[block_index] = Some(index);
                        // The start event's `input` is `{}`: the arguments come as deltas.
                        let id = block.id.as_deref().unwrap_or_default();
                        let name = block.name.as_deref().unwrap_or_default();
                        self.writer(None, None, out).tool_call_start(out, index, id, name, "");
                    }
                    // thinking and server-tool blocks have no place in a chat completion
                    _ => {}
                }
            }
            "content_block_delta" => {
                let Some(delta) = ev.delta else { return };
                if let Some(text) = delta.text.as_deref() {
                    if !text.is_empty() {
                        self.writer(None, None, out).content(out, text);
                    }
                } else if let Some(json) = delta.partial_json.as_deref() {
                    let tool = ev.index.and_then(|i| self.tool_of_block.get(i).copied().flatten());
                    if let (Some(tool), false) = (tool, json.is_empty()) {
                        self.writer(None, None, out).tool_call_arguments(out, tool, json);
                    }
                }
            }
            "message_delta" => {
                if let Some(reason) = ev.delta.and_then(|d| d.stop_reason) {
                    self.finish = Some(finish_reason(&reason));
                }
                if let Some(u) = ev.usage {
                    self.usage.update(&u);
                }
            }
            "message_stop" => {
                let usage = self.usage.to_openai();
                let reason = self.finish.unwrap_or(FinishReason::Stop);
                let w = self.writer(None, None, out);
                w.finish(out, reason);
                if w.include_usage_chunk() {
                    w.usage(out, &usage);
                }
                out.extend_from_slice(openai::DONE);
                self.phase = Phase::Complete;
            }
            "error" => {
                let (kind, message) = ev.error.map_or((None, None), |e| (e.kind, e.message));
                let status = error_status(kind.as_deref().unwrap_or_default());
                self.fail(ErrorOut::from_provider(PROVIDER, status, message.as_deref().unwrap_or_default()), out);
            }
            // ping, content_block_stop and event types added later carry nothing to translate
            _ => {}
        }
    }
}
