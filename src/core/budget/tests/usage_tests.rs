//! Unit tests of `core::budget::usage`.

use super::*;
use crate::core::sse::SseParser;
use serde_json::json;

#[test]
fn openai_usage_subtracts_cached_tokens_from_the_prompt() {
    let body = br#"{"id":"x","choices":[{"message":{"content":"hi"}}],
        "usage":{"prompt_tokens":1200,"completion_tokens":80,"total_tokens":1280,
                 "prompt_tokens_details":{"cached_tokens":1024}}}"#;
    let u = parse_usage(body).unwrap();
    assert_eq!(u, TokenUsage { input: 176, output: 80, cached_input: 1024, cache_write: 0 });
    assert_eq!(u.total(), 1280);
    let plain = parse_usage(br#"{"usage":{"prompt_tokens":10,"completion_tokens":2}}"#).unwrap();
    assert_eq!(plain, TokenUsage { input: 10, output: 2, ..Default::default() });
}

#[test]
fn anthropic_usage_keeps_cache_reads_and_writes_apart() {
    let body = br#"{"type":"message","usage":{"input_tokens":50,"output_tokens":300,
        "cache_read_input_tokens":2000,"cache_creation_input_tokens":400}}"#;
    assert_eq!(parse_usage(body).unwrap(), TokenUsage { input: 50, output: 300, cached_input: 2000, cache_write: 400 });
}

#[test]
fn gemini_usage_metadata_counts_thoughts_as_output() {
    let body = br#"{"candidates":[],"usageMetadata":{"promptTokenCount":900,"candidatesTokenCount":120,
        "cachedContentTokenCount":600,"thoughtsTokenCount":30,"totalTokenCount":1050}}"#;
    assert_eq!(parse_usage(body).unwrap(), TokenUsage { input: 300, output: 150, cached_input: 600, cache_write: 0 });
}

#[test]
fn bodies_without_usage_or_not_json_give_none() {
    assert_eq!(parse_usage(br#"{"choices":[]}"#), None);
    assert_eq!(parse_usage(br#"{"usage":null}"#), None);
    assert_eq!(parse_usage(b"not json"), None);
    // A cached count larger than the prompt (a buggy upstream) cannot underflow.
    let odd = parse_usage(
        br#"{"usage":{"prompt_tokens":5,"completion_tokens":1,"prompt_tokens_details":{"cached_tokens":9}}}"#,
    );
    assert_eq!(odd.unwrap().input, 0);
}

fn stream_usage(stream: &str) -> Option<TokenUsage> {
    let mut parser = SseParser::new();
    let mut usage = StreamUsage::default();
    // Feed in small pieces, as the network delivers them.
    for piece in stream.as_bytes().chunks(7) {
        for ev in parser.feed(piece) {
            if !ev.is_done() {
                usage.feed(&ev.data);
            }
        }
    }
    usage.usage()
}

#[test]
fn openai_stream_takes_the_final_usage_chunk() {
    let stream = concat!(
        "data: {\"choices\":[{\"delta\":{\"content\":\"Hel\"}}],\"usage\":null}\n\n",
        "data: {\"choices\":[{\"delta\":{\"content\":\"lo\"},\"finish_reason\":\"stop\"}],\"usage\":null}\n\n",
        "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":12,\"completion_tokens\":2,\"prompt_tokens_details\":{\"cached_tokens\":0}}}\n\n",
        "data: [DONE]\n\n"
    );
    assert_eq!(stream_usage(stream), Some(TokenUsage { input: 12, output: 2, ..Default::default() }));
    assert_eq!(stream_usage("data: {\"choices\":[{\"delta\":{}}]}\n\ndata: [DONE]\n\n"), None);
}

#[test]
fn anthropic_stream_joins_message_start_and_the_last_delta() {
    let stream = concat!(
        "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":25,\"output_tokens\":1,\"cache_read_input_tokens\":100}}}\n\n",
        "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"delta\":{\"text\":\"Hi\"}}\n\n",
        "event: message_delta\ndata: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":15}}\n\n",
        "event: message_delta\ndata: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":42}}\n\n",
        "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n"
    );
    assert_eq!(stream_usage(stream), Some(TokenUsage { input: 25, output: 42, cached_input: 100, cache_write: 0 }));
}

#[test]
fn gemini_stream_keeps_the_last_metadata() {
    let stream = concat!(
        "data: {\"candidates\":[],\"usageMetadata\":{\"promptTokenCount\":9,\"candidatesTokenCount\":3}}\r\n\r\n",
        "data: {\"candidates\":[],\"usageMetadata\":{\"promptTokenCount\":9,\"candidatesTokenCount\":17}}\r\n\r\n"
    );
    assert_eq!(stream_usage(stream), Some(TokenUsage { input: 9, output: 17, ..Default::default() }));
}

#[test]
fn the_usage_only_chunk_is_recognised_and_nothing_else() {
    assert!(is_usage_only_chunk(r#"{"id":"c","choices":[],"usage":{"prompt_tokens":1,"completion_tokens":1}}"#));
    assert!(!is_usage_only_chunk(r#"{"choices":[{"delta":{"content":"x"}}],"usage":null}"#));
    assert!(!is_usage_only_chunk(r#"{"choices":[{"delta":{}}],"usage":{"prompt_tokens":1}}"#), "a choice rides along");
    assert!(!is_usage_only_chunk(r#"{"choices":[],"usage":null}"#));
    assert!(!is_usage_only_chunk("[DONE]"));
    assert!(!is_usage_only_chunk(r#"{"choices":[],"text":"\"usage\""#), "broken JSON");
}

#[test]
fn streams_are_made_to_report_usage_and_the_client_choice_is_kept() {
    let mut req = json!({"model": "gpt-4o", "stream": true, "messages": []});
    assert!(!request_stream_usage(&mut req));
    assert_eq!(req["stream_options"]["include_usage"], true);
    let mut asked = json!({"stream": true, "stream_options": {"include_usage": true}});
    assert!(request_stream_usage(&mut asked));
    let mut other = json!({"stream": true, "stream_options": {"include_obfuscation": false}});
    assert!(!request_stream_usage(&mut other));
    assert_eq!(other["stream_options"], json!({"include_obfuscation": false, "include_usage": true}));
    let mut unary = json!({"stream": false});
    assert!(!request_stream_usage(&mut unary));
    assert!(unary.get("stream_options").is_none(), "non-streaming bodies are left alone");
}
