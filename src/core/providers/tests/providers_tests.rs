//! Unit tests of `core::providers`: each fixture from a provider's API reference is translated
//! and compared with the expected OpenAI (or provider) shape checked in beside it.

use super::*;
use serde_json::json;

macro_rules! fixture {
    ($path:literal) => {
        include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/providers/", $path))
    };
}

const CREATED: u64 = 1_700_000_000;

fn ctx(include_usage: bool) -> ResponseContext<'static> {
    ResponseContext { model: "gpt-4o", created: CREATED, include_usage }
}

fn json_of(s: &str) -> Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("fixture is not JSON ({e}): {s}"))
}

fn request(kind: ProviderKind, body: &str, model: Option<&str>) -> Result<Value, TranslateError> {
    let opts = RequestOptions { model, default_max_tokens: 1024 };
    let out = translate_request(kind, body.as_bytes(), &opts)?.expect("a translated body");
    Ok(serde_json::from_slice(&out).expect("translated body is JSON"))
}

/// The payloads of an SSE text as JSON values (or `[DONE]` as a string), checking that every
/// event is framed exactly as OpenAI frames it.
fn events(sse: &[u8]) -> Vec<Value> {
    let text = std::str::from_utf8(sse).expect("UTF-8 stream");
    assert!(text.is_empty() || text.ends_with("\n\n"), "stream must end with a blank line: {text:?}");
    text.split_terminator("\n\n")
        .map(|ev| {
            let data = ev.strip_prefix("data: ").unwrap_or_else(|| panic!("bad event {ev:?}"));
            assert!(!data.contains('\n'), "one line per event: {ev:?}");
            if data == "[DONE]" {
                Value::String(data.into())
            } else {
                json_of(data)
            }
        })
        .collect()
}

fn translate_stream(kind: ProviderKind, include_usage: bool, pieces: &[&[u8]]) -> (Vec<u8>, StreamTranslator) {
    let mut t = StreamTranslator::new(kind, &ctx(include_usage)).expect("a translating provider");
    let mut out = Vec::new();
    for p in pieces {
        out.extend(t.feed(p));
    }
    out.extend(t.finish());
    (out, t)
}

/// Translates `input` whole, then split at every position and byte by byte: all the same.
fn check_stream(kind: ProviderKind, include_usage: bool, input: &str, expected: &str) -> StreamTranslator {
    let bytes = input.as_bytes();
    let (whole, t) = translate_stream(kind, include_usage, &[bytes]);
    assert_eq!(events(&whole), events(expected.as_bytes()), "{}", String::from_utf8_lossy(&whole));
    // Byte for byte too: the chunk framing is what OpenAI clients parse.
    assert_eq!(String::from_utf8_lossy(&whole), expected);
    for cut in 0..=bytes.len() {
        let (split, _) = translate_stream(kind, include_usage, &[&bytes[..cut], &bytes[cut..]]);
        assert_eq!(split, whole, "split at {cut}");
    }
    let singles: Vec<&[u8]> = bytes.chunks(1).collect();
    let (bytewise, _) = translate_stream(kind, include_usage, &singles);
    assert_eq!(bytewise, whole, "byte by byte");
    t
}

// ---------------------------------------------------------------- requests

#[test]
fn openai_request_to_anthropic_matches_fixture() {
    let got = request(ProviderKind::Anthropic, fixture!("openai/request_tools.json"), Some("claude-sonnet-4-5"));
    assert_eq!(got.unwrap(), json_of(fixture!("anthropic/request_tools.json")));
    let got = request(ProviderKind::Anthropic, fixture!("openai/request_basic.json"), None);
    assert_eq!(got.unwrap(), json_of(fixture!("anthropic/request_basic.json")));
}

#[test]
fn openai_request_to_gemini_matches_fixture() {
    for kind in [ProviderKind::Gemini, ProviderKind::Vertex] {
        let got = request(kind, fixture!("openai/request_tools.json"), None);
        assert_eq!(got.unwrap(), json_of(fixture!("gemini/request_tools.json")));
        let got = request(kind, fixture!("openai/request_basic.json"), None);
        assert_eq!(got.unwrap(), json_of(fixture!("gemini/request_basic.json")));
    }
}

#[test]
fn openai_providers_pass_the_body_through() {
    let opts = RequestOptions { model: None, default_max_tokens: 1 };
    let body = fixture!("openai/request_basic.json").as_bytes();
    assert_eq!(translate_request(ProviderKind::OpenAi, body, &opts), Ok(None));
    let opts = RequestOptions { model: Some("llama-3"), default_max_tokens: 1 };
    let out = translate_request(ProviderKind::OpenAiCompatible, body, &opts).unwrap().unwrap();
    let v: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v["model"], "llama-3");
    assert_eq!(v["messages"], json_of(fixture!("openai/request_basic.json"))["messages"]);
}

fn chat(messages: Value) -> String {
    json!({"model": "m", "messages": messages}).to_string()
}

fn refused(kind: ProviderKind, body: &str) -> (String, String) {
    match request(kind, body, None) {
        Err(TranslateError::Unrepresentable { message, param }) => (message, param),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn anthropic_refuses_conversations_it_cannot_express() {
    let a = ProviderKind::Anthropic;
    let (_, param) =
        refused(a, &chat(json!([{"role": "system", "content": "s"}, {"role": "assistant", "content": "hi"}])));
    assert_eq!(param, "messages");
    let (_, param) = refused(a, &chat(json!([{"role": "system", "content": "only a system prompt"}])));
    assert_eq!(param, "messages");
    let body = json!({"model": "m", "n": 2, "messages": [{"role": "user", "content": "x"}]}).to_string();
    assert_eq!(refused(a, &body).1, "n");
    let (_, param) = refused(a, &chat(json!([{"role": "user", "content": ""}])));
    assert_eq!(param, "messages[0].content");
    let img = json!([{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "ftp://x/y.png"}}]}]);
    assert_eq!(refused(a, &chat(img)).1, "messages[0].content[0].image_url.url");
    let audio = json!([{"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]}]);
    assert_eq!(refused(a, &chat(audio)).1, "messages[0].content[0].type");
    let bad_args = json!([{"role": "user", "content": "x"}, {"role": "assistant", "tool_calls": [
        {"id": "c", "type": "function", "function": {"name": "f", "arguments": "not json"}}]}]);
    assert_eq!(refused(a, &chat(bad_args)).1, "messages[1].tool_calls[0].function.arguments");

    // The gateway answers a refusal with a 400 in OpenAI's shape.
    let e: GatewayError = TranslateError::invalid("nope", "messages").into();
    assert_eq!(e.status(), 400);
    assert_eq!(e.to_string(), "nope");
}

#[test]
fn anthropic_merges_turns_and_keeps_a_prefill() {
    let body = chat(json!([
        {"role": "user", "content": "a"},
        {"role": "user", "content": [{"type": "text", "text": "b"}]},
        {"role": "assistant", "content": ""},
        {"role": "user", "content": "c"},
        {"role": "assistant", "content": "The answer is"}
    ]));
    let got = request(ProviderKind::Anthropic, &body, None).unwrap();
    assert_eq!(
        got["messages"],
        json!([
            {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}, {"type": "text", "text": "c"}]},
            {"role": "assistant", "content": "The answer is"}
        ])
    );
    assert_eq!(got["max_tokens"], 1024, "the configured default");
    let body = json!({"model": "m", "max_tokens": 7, "tool_choice": {"type": "function", "function": {"name": "f"}},
        "messages": [{"role": "user", "content": "x"}]});
    let got = request(ProviderKind::Anthropic, &body.to_string(), None).unwrap();
    assert_eq!(got["max_tokens"], 7);
    assert_eq!(got["tool_choice"], json!({"type": "tool", "name": "f"}));
}

#[test]
fn gemini_refuses_empty_parts_and_unknown_tool_results() {
    for kind in [ProviderKind::Gemini, ProviderKind::Vertex] {
        let (message, param) = refused(kind, &chat(json!([{"role": "user", "content": ""}])));
        assert_eq!(param, "messages[0].content");
        assert!(message.contains("no parts"), "{message}");
        let (_, param) =
            refused(kind, &chat(json!([{"role": "user", "content": "x"}, {"role": "assistant", "content": null}])));
        assert_eq!(param, "messages[1].content");
        assert_eq!(refused(kind, &chat(json!([{"role": "system", "content": "s"}]))).1, "messages");
        let tool = json!([{"role": "user", "content": "x"}, {"role": "tool", "tool_call_id": "nope", "content": "1"}]);
        assert_eq!(refused(kind, &chat(tool)).1, "messages[1].tool_call_id");
        // Several candidates come back as several choices, but a stream carries only one.
        let body = json!({"model": "m", "n": 2, "stream": true, "messages": [{"role": "user", "content": "x"}]});
        assert_eq!(refused(kind, &body.to_string()).1, "n");
        let body = json!({"model": "m", "n": 2, "messages": [{"role": "user", "content": "x"}]});
        assert_eq!(request(kind, &body.to_string(), None).unwrap()["generationConfig"]["candidateCount"], 2);
    }
    // A tool answer that is not a JSON object is wrapped; `required` and a named function map to ANY.
    let body = json!({"model": "m", "tool_choice": "required", "messages": [
        {"role": "user", "content": "x"},
        {"role": "assistant", "tool_calls": [{"id": "c9", "type": "function", "function": {"name": "f", "arguments": ""}}]},
        {"role": "tool", "tool_call_id": "c9", "content": "sunny"}]});
    let got = request(ProviderKind::Gemini, &body.to_string(), None).unwrap();
    assert_eq!(got["contents"][1]["parts"][0]["functionCall"], json!({"name": "f", "args": {}}));
    assert_eq!(
        got["contents"][2]["parts"][0]["functionResponse"],
        json!({"name": "f", "response": {"content": "sunny"}})
    );
    assert_eq!(got["toolConfig"]["functionCallingConfig"]["mode"], "ANY");
}

#[test]
fn upstream_paths() {
    let vertex = VertexLocation { project: "proj-1", location: "europe-west4" };
    let path = |kind, model, stream, v| upstream_path(kind, model, stream, v).unwrap();
    assert_eq!(path(ProviderKind::OpenAi, "gpt-4o", true, None), "/v1/chat/completions");
    assert_eq!(path(ProviderKind::OpenAiCompatible, "x", false, None), "/v1/chat/completions");
    assert_eq!(path(ProviderKind::Anthropic, "claude", true, None), "/v1/messages");
    assert_eq!(
        path(ProviderKind::Gemini, "gemini-2.5-flash", false, None),
        "/v1beta/models/gemini-2.5-flash:generateContent"
    );
    assert_eq!(
        path(ProviderKind::Gemini, "models/gemini-2.5-flash", true, None),
        "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse"
    );
    assert_eq!(
        path(ProviderKind::Vertex, "gemini-2.5-pro", false, Some(vertex)),
        "/v1/projects/proj-1/locations/europe-west4/publishers/google/models/gemini-2.5-pro:generateContent"
    );
    assert_eq!(
        path(ProviderKind::Vertex, "gemini-2.5-pro", true, Some(vertex)),
        "/v1/projects/proj-1/locations/europe-west4/publishers/google/models/gemini-2.5-pro:streamGenerateContent?alt=sse"
    );
    assert_eq!(upstream_path(ProviderKind::Vertex, "m", false, None), Err(TranslateError::MissingLocation("vertex")));
}

// ---------------------------------------------------------------- JSON answers

fn response(kind: ProviderKind, status: u16, body: &str) -> (u16, Value, Option<Usage>) {
    let r = translate_response(kind, status, body.as_bytes(), &ctx(false));
    let body = serde_json::from_slice(&r.body.expect("a translated body")).expect("JSON body");
    (r.status, body, r.usage)
}

#[test]
fn anthropic_responses_match_fixtures() {
    let a = ProviderKind::Anthropic;
    let (status, body, usage) = response(a, 200, fixture!("anthropic/response_text.json"));
    assert_eq!((status, body), (200, json_of(fixture!("anthropic/response_text.openai.json"))));
    assert_eq!(usage.map(|u| u.total_tokens), Some(21));
    let (_, body, usage) = response(a, 200, fixture!("anthropic/response_tool_use.json"));
    assert_eq!(body, json_of(fixture!("anthropic/response_tool_use.openai.json")));
    assert_eq!(
        usage,
        Some(Usage { prompt_tokens: 1700, completion_tokens: 45, total_tokens: 1745, cached_tokens: Some(1200) })
    );
    let (status, body, usage) = response(a, 400, fixture!("anthropic/response_error.json"));
    assert_eq!((status, body, usage), (400, json_of(fixture!("anthropic/response_error.openai.json")), None));
}

#[test]
fn gemini_responses_match_fixtures() {
    for kind in [ProviderKind::Gemini, ProviderKind::Vertex] {
        for (input, expected) in [
            (fixture!("gemini/response_text.json"), fixture!("gemini/response_text.openai.json")),
            (fixture!("gemini/response_function_call.json"), fixture!("gemini/response_function_call.openai.json")),
            (fixture!("gemini/response_safety.json"), fixture!("gemini/response_safety.openai.json")),
            (fixture!("gemini/response_candidates.json"), fixture!("gemini/response_candidates.openai.json")),
        ] {
            let (status, body, usage) = response(kind, 200, input);
            assert_eq!((status, body), (200, json_of(expected)));
            assert!(usage.is_some());
        }
    }
    let (status, body, _) = response(ProviderKind::Gemini, 400, fixture!("gemini/response_error.json"));
    assert_eq!((status, body), (400, json_of(fixture!("gemini/response_error.openai.json"))));
}

#[test]
fn provider_errors_hide_credentials_and_internals() {
    let body = br#"{"type":"error","error":{"type":"authentication_error","message":"invalid x-api-key sk-ant-123"}}"#;
    let e = provider_error(ProviderKind::Anthropic, 401, body);
    assert_eq!((e.status, e.kind, e.code), (502, "server_error", "upstream_authentication_failed"));
    assert!(!e.message.contains("sk-ant"), "{}", e.message);
    let body = br#"{"error":{"code":500,"message":"internal stack trace at server-17","status":"INTERNAL"}}"#;
    let e = provider_error(ProviderKind::Vertex, 500, body);
    assert_eq!((e.status, e.kind), (500, "server_error"));
    assert!(!e.message.contains("server-17"), "{}", e.message);
    let e = provider_error(ProviderKind::Gemini, 429, b"not json");
    assert_eq!((e.status, e.kind), (429, "rate_limit_exceeded"));
    let long =
        format!(r#"{{"type":"error","error":{{"type":"invalid_request_error","message":"{}"}}}}"#, "x".repeat(5000));
    assert!(provider_error(ProviderKind::Anthropic, 400, long.as_bytes()).message.len() < 600);
    // A 200 whose body is not the provider's answer is the provider's fault.
    let r = translate_response(ProviderKind::Anthropic, 200, b"<html>", &ctx(false));
    assert_eq!(r.status, 502);
    assert_eq!(translate_response(ProviderKind::OpenAi, 200, b"{}", &ctx(false)).body, None);
}

// ---------------------------------------------------------------- streams

#[test]
fn anthropic_streams_match_fixtures_at_any_split() {
    let a = ProviderKind::Anthropic;
    let t = check_stream(a, false, fixture!("anthropic/stream_text.sse"), fixture!("anthropic/stream_text.openai.sse"));
    assert!(t.is_complete() && !t.failed());
    assert_eq!(
        t.usage(),
        Usage { prompt_tokens: 35, completion_tokens: 15, total_tokens: 50, cached_tokens: Some(10) }
    );

    let t = check_stream(
        a,
        true,
        fixture!("anthropic/stream_tool_use.sse"),
        fixture!("anthropic/stream_tool_use.openai.sse"),
    );
    assert!(t.is_complete());
    assert_eq!(t.usage().total_tokens, 561);

    let t =
        check_stream(a, false, fixture!("anthropic/stream_error.sse"), fixture!("anthropic/stream_error.openai.sse"));
    assert!(t.failed() && !t.is_complete());
}

#[test]
fn gemini_streams_match_fixtures_at_any_split() {
    for kind in [ProviderKind::Gemini, ProviderKind::Vertex] {
        let t = check_stream(kind, true, fixture!("gemini/stream_text.sse"), fixture!("gemini/stream_text.openai.sse"));
        assert!(t.is_complete());
        assert_eq!(
            t.usage(),
            Usage { prompt_tokens: 9, completion_tokens: 5, total_tokens: 14, cached_tokens: Some(2) }
        );
        let t = check_stream(
            kind,
            false,
            fixture!("gemini/stream_function_call.sse"),
            fixture!("gemini/stream_function_call.openai.sse"),
        );
        assert_eq!(t.usage().total_tokens, 52);
    }
    let t = check_stream(
        ProviderKind::Gemini,
        false,
        fixture!("gemini/stream_error.sse"),
        fixture!("gemini/stream_error.openai.sse"),
    );
    assert!(t.failed());
}

#[test]
fn a_cut_stream_ends_in_an_error_not_done() {
    for (kind, input) in [
        (ProviderKind::Anthropic, fixture!("anthropic/stream_text.sse")),
        (ProviderKind::Gemini, fixture!("gemini/stream_text.sse")),
    ] {
        // Cut after the first content event: no finish reason was ever sent.
        let cut = input.find("Hello").or_else(|| input.find("The sky")).unwrap() + 60;
        let (out, t) = translate_stream(kind, false, &[&input.as_bytes()[..cut]]);
        let evs = events(&out);
        assert_eq!(evs.last().unwrap()["error"]["code"], "upstream_truncated", "{kind:?}");
        assert!(!evs.contains(&Value::String("[DONE]".into())));
        assert!(t.failed() && !t.is_complete());
    }
}

#[test]
fn nothing_is_emitted_after_the_end() {
    let mut t = StreamTranslator::new(ProviderKind::Anthropic, &ctx(false)).unwrap();
    t.feed(fixture!("anthropic/stream_text.sse").as_bytes());
    assert!(t.feed(b"data: {\"type\":\"message_stop\"}\n\n").is_empty());
    assert!(t.finish().is_empty());
    assert!(StreamTranslator::new(ProviderKind::OpenAi, &ctx(false)).is_none());
}

#[test]
fn event_data_joins_lines_and_skips_comments() {
    let mut d = EventData::default();
    let mut got = Vec::new();
    d.feed(b": keep-alive\n\nevent: x\ndata: a\ndata:b\r\n\r\nid: 3\ndata: c\n", |e| got.push(e.to_string()));
    assert_eq!(got, ["a\nb"]);
    assert!(d.has_pending());
    d.feed(b"\n", |e| got.push(e.to_string()));
    assert_eq!(got, ["a\nb", "c"]);
    assert!(!d.has_pending());
}
