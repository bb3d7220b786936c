//! OpenAI chat-completions requests: validation with messages that name the field, and the
//! canonical form the exact-cache key is hashed from.
//!
//! Canonical form: keys sorted, `null` fields dropped, parameters equal to their documented
//! default dropped, integral floats written as integers, a lone text part written as a plain
//! string, `stop: "x"` as `["x"]`, and base64 image data replaced by the blake3 of its bytes.
//! Fields that cannot change the answer (`user`, `metadata`, `store`) are left out; every
//! other field, including ones this gateway does not know, stays in the key.

use crate::core::errors::GatewayError;
use base64::Engine;
use serde_json::{Map, Number, Value};

/// What the gateway needs to know about a request, after validation.
#[derive(Debug, Clone, PartialEq)]
pub struct ChatRequest {
    pub model: String,
    pub stream: bool,
    /// `temperature` as sent; `None` means the provider default (1.0 for OpenAI).
    pub temperature: Option<f64>,
    pub n: u64,
    /// The canonical form of everything that can change the answer (see the module doc), as
    /// a value: the semantic layer reads its text and context, `canonical` writes it out.
    pub value: Value,
}

impl ChatRequest {
    /// The canonical form as JSON bytes, which the exact-cache key hashes. Written only when a
    /// key is needed: a request that bypasses the cache never pays for it.
    pub fn canonical(&self) -> Vec<u8> {
        serde_json::to_vec(&self.value).unwrap_or_default()
    }
}

/// Fields that do not change the answer: kept out of the cache key.
const NO_EFFECT_FIELDS: &[&str] = &["user", "metadata", "store"];

/// Documented defaults: a request that spells one out is the same request as one that omits it.
fn is_default(field: &str, v: &Value) -> bool {
    let num = v.as_f64();
    match field {
        "temperature" | "top_p" | "n" => num == Some(1.0),
        "presence_penalty" | "frequency_penalty" => num == Some(0.0),
        "stream" | "logprobs" => v == &Value::Bool(false),
        "parallel_tool_calls" => v == &Value::Bool(true),
        _ => false,
    }
}

pub fn parse_chat_request(body: &[u8]) -> Result<ChatRequest, GatewayError> {
    let value: Value = serde_json::from_slice(body).map_err(|e| GatewayError::InvalidJson(e.to_string()))?;
    let Value::Object(obj) = value else {
        return Err(GatewayError::invalid("request body must be a JSON object", ""));
    };
    let model = match obj.get("model") {
        Some(Value::String(m)) if !m.is_empty() => m.clone(),
        Some(_) => return Err(GatewayError::invalid("`model` must be a non-empty string", "model")),
        None => return Err(GatewayError::invalid("missing required parameter: `model`", "model")),
    };
    match obj.get("messages") {
        Some(Value::Array(msgs)) if !msgs.is_empty() => validate_messages(msgs)?,
        Some(_) => return Err(GatewayError::invalid("`messages` must be a non-empty array", "messages")),
        None => return Err(GatewayError::invalid("missing required parameter: `messages`", "messages")),
    }
    let stream = match obj.get("stream") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(GatewayError::invalid("`stream` must be a boolean", "stream")),
    };
    let temperature = number_in(&obj, "temperature", 0.0, 2.0)?;
    number_in(&obj, "top_p", 0.0, 1.0)?;
    let n = match number_in(&obj, "n", 1.0, 128.0)? {
        Some(n) if n.fract() != 0.0 => return Err(GatewayError::invalid("`n` must be an integer", "n")),
        Some(n) => n as u64,
        None => 1,
    };
    for field in ["max_tokens", "max_completion_tokens", "seed"] {
        if let Some(v) = obj.get(field) {
            if !v.is_null() && !v.is_i64() && !v.is_u64() {
                return Err(GatewayError::invalid(format!("`{field}` must be an integer"), field));
            }
        }
    }
    for field in ["max_tokens", "max_completion_tokens"] {
        if obj.get(field).and_then(Value::as_i64).is_some_and(|n| n < 1) {
            return Err(GatewayError::invalid(format!("`{field}` must be at least 1"), field));
        }
    }
    if let Some(v) = obj.get("stop") {
        let ok = match v {
            Value::Null | Value::String(_) => true,
            Value::Array(a) => a.iter().all(Value::is_string),
            _ => false,
        };
        if !ok {
            return Err(GatewayError::invalid("`stop` must be a string or an array of strings", "stop"));
        }
    }
    if let Some(v) = obj.get("tools") {
        if !v.is_null() && !v.is_array() {
            return Err(GatewayError::invalid("`tools` must be an array", "tools"));
        }
    }
    let value = canonicalize(obj);
    Ok(ChatRequest { model, stream, temperature, n, value })
}

fn number_in(obj: &Map<String, Value>, field: &str, lo: f64, hi: f64) -> Result<Option<f64>, GatewayError> {
    match obj.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => match v.as_f64() {
            Some(x) if (lo..=hi).contains(&x) => Ok(Some(x)),
            _ => Err(GatewayError::invalid(format!("`{field}` must be a number between {lo} and {hi}"), field)),
        },
    }
}

/// Roles the OpenAI chat API accepts; any other is refused before the cache and the provider.
const ROLES: &[&str] = &["system", "developer", "user", "assistant", "tool", "function"];
/// Content-part types of the chat API.
const PART_TYPES: &[&str] = &["text", "image_url", "input_audio", "file", "refusal"];

fn invalid_at(at: String, what: &str) -> GatewayError {
    GatewayError::invalid(format!("`{at}` {what}"), at)
}

fn validate_messages(msgs: &[Value]) -> Result<(), GatewayError> {
    for (i, m) in msgs.iter().enumerate() {
        let Value::Object(m) = m else {
            return Err(invalid_at(format!("messages[{i}]"), "must be an object"));
        };
        match m.get("role") {
            Some(Value::String(r)) if ROLES.contains(&r.as_str()) => {}
            Some(Value::String(_)) => {
                return Err(invalid_at(
                    format!("messages[{i}].role"),
                    "must be one of system, developer, user, assistant, tool, function",
                ))
            }
            _ => return Err(invalid_at(format!("messages[{i}].role"), "must be a string")),
        }
        match m.get("content") {
            None | Some(Value::Null) | Some(Value::String(_)) => {}
            Some(Value::Array(parts)) => {
                for (j, p) in parts.iter().enumerate() {
                    validate_part(p, &format!("messages[{i}].content[{j}]"))?;
                }
            }
            Some(_) => {
                return Err(invalid_at(format!("messages[{i}].content"), "must be a string or an array of parts"))
            }
        }
    }
    Ok(())
}

fn validate_part(p: &Value, at: &str) -> Result<(), GatewayError> {
    let kind = match p.get("type") {
        Some(Value::String(t)) if PART_TYPES.contains(&t.as_str()) => t.as_str(),
        Some(Value::String(_)) => {
            return Err(invalid_at(format!("{at}.type"), "must be one of text, image_url, input_audio, file, refusal"))
        }
        _ => return Err(invalid_at(format!("{at}.type"), "must be a string")),
    };
    match kind {
        "text" if !p.get("text").is_some_and(Value::is_string) => {
            Err(invalid_at(format!("{at}.text"), "must be a string"))
        }
        "image_url" => match p.get("image_url") {
            Some(Value::Object(o)) if o.get("url").is_some_and(Value::is_string) => match o.get("detail") {
                None | Some(Value::Null) => Ok(()),
                Some(Value::String(d)) if ["auto", "low", "high"].contains(&d.as_str()) => Ok(()),
                Some(_) => Err(invalid_at(format!("{at}.image_url.detail"), "must be auto, low or high")),
            },
            Some(Value::Object(_)) => Err(invalid_at(format!("{at}.image_url.url"), "must be a string")),
            _ => Err(invalid_at(format!("{at}.image_url"), "must be an object with a `url` string")),
        },
        _ => Ok(()),
    }
}

/// Canonicalizes in place: the parsed document is rewritten, never copied (each rebuilt map
/// is a tree of allocations, and this runs on every cacheable request).
fn canonicalize(mut obj: Map<String, Value>) -> Value {
    obj.retain(|k, v| !(v.is_null() || NO_EFFECT_FIELDS.contains(&k.as_str()) || is_default(k, v)));
    for (k, v) in obj.iter_mut() {
        match (k.as_str(), &mut *v) {
            ("messages", Value::Array(msgs)) => msgs.iter_mut().for_each(canonical_message),
            ("messages", _) => {}
            ("stop", Value::String(s)) => *v = Value::Array(vec![Value::String(std::mem::take(s))]),
            ("stop", _) => {}
            _ => canonical_value(v),
        }
    }
    // `tool_choice` at its default ("none" without tools, "auto" with them) is no choice at all.
    let has_tools = obj.get("tools").and_then(Value::as_array).is_some_and(|t| !t.is_empty());
    if obj.get("tool_choice").and_then(Value::as_str) == Some(if has_tools { "auto" } else { "none" }) {
        obj.remove("tool_choice");
    }
    Value::Object(obj)
}

fn canonical_message(m: &mut Value) {
    let Value::Object(m) = m else { return };
    m.retain(|_, v| !v.is_null());
    for (k, v) in m.iter_mut() {
        if k == "content" {
            canonical_content(v);
        } else {
            canonical_value(v);
        }
    }
}

fn canonical_content(content: &mut Value) {
    let Value::Array(parts) = content else { return };
    parts.iter_mut().for_each(canonical_part);
    // A single text part means the same as a plain string.
    if let [Value::Object(p)] = parts.as_mut_slice() {
        if p.len() == 2 && p.get("type").and_then(Value::as_str) == Some("text") {
            if let Some(Value::String(t)) = p.get_mut("text") {
                *content = Value::String(std::mem::take(t));
            }
        }
    }
}

fn canonical_part(part: &mut Value) {
    canonical_value(part);
    if let Some(url_obj) = part.get_mut("image_url").and_then(Value::as_object_mut) {
        if url_obj.get("detail").and_then(Value::as_str) == Some("auto") {
            url_obj.remove("detail");
        }
        if let Some(Value::String(url)) = url_obj.get_mut("url") {
            if let Some(digest) = data_url_digest(url) {
                *url = digest;
            }
        }
    }
}

/// `data:<mime>;base64,<payload>` -> `blake3:<mime>:<hex of the decoded bytes>`, so the key
/// identifies the image without holding it. Undecodable payloads hash their text instead.
pub fn data_url_digest(url: &str) -> Option<String> {
    let rest = url.strip_prefix("data:")?;
    let (meta, payload) = rest.split_once(',')?;
    let mime = meta.split(';').next().unwrap_or("");
    let hash = if meta.ends_with(";base64") {
        match base64::engine::general_purpose::STANDARD.decode(payload.trim()) {
            Ok(bytes) => blake3::hash(&bytes),
            Err(_) => blake3::hash(payload.as_bytes()),
        }
    } else {
        blake3::hash(payload.as_bytes())
    };
    Some(format!("blake3:{mime}:{}", hash.to_hex()))
}

/// Recursively: drop nulls in objects, and write integral floats as integers (1.0 -> 1).
fn canonical_value(v: &mut Value) {
    match v {
        Value::Object(m) => {
            m.retain(|_, v| !v.is_null());
            m.values_mut().for_each(canonical_value);
        }
        Value::Array(a) => a.iter_mut().for_each(canonical_value),
        Value::Number(n) => {
            let c = canonical_number(n.clone());
            *n = c;
        }
        _ => {}
    }
}

fn canonical_number(n: Number) -> Number {
    match n.as_f64() {
        Some(f) if !n.is_i64() && !n.is_u64() && f.fract() == 0.0 && f.abs() < 9.0e15 => Number::from(f as i64),
        _ => n,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_a_provider_would_reject_are_refused_naming_the_field() {
        let user = |extra: &str| format!(r#"{{"model":"m","messages":[{{"role":"user","content":"hi"}}]{extra}}}"#);
        let cases = [
            (r#"{"model":"m","messages":[{"role":"wizard","content":"hi"}]}"#.to_string(), "messages[0].role"),
            (
                r#"{"model":"m","messages":[{"role":"user","content":[{"type":"video","url":"x"}]}]}"#.to_string(),
                "messages[0].content[0].type",
            ),
            (
                r#"{"model":"m","messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":7}}]}]}"#
                    .to_string(),
                "messages[0].content[0].image_url.url",
            ),
            (
                r#"{"model":"m","messages":[{"role":"user","content":[{"type":"image_url","image_url":"http://x"}]}]}"#
                    .to_string(),
                "messages[0].content[0].image_url",
            ),
            (
                r#"{"model":"m","messages":[{"role":"user","content":[{"type":"text","text":5}]}]}"#.to_string(),
                "messages[0].content[0].text",
            ),
            (user(r#","max_tokens":-5"#), "max_tokens"),
            (user(r#","max_tokens":0"#), "max_tokens"),
            (user(r#","max_completion_tokens":-1"#), "max_completion_tokens"),
        ];
        for (body, param) in cases {
            match parse_chat_request(body.as_bytes()) {
                Err(GatewayError::InvalidRequest { param: Some(p), .. }) => assert_eq!(p, param, "{body}"),
                other => panic!("{body}: {other:?}"),
            }
        }
        for ok in [
            user(r#","max_tokens":1"#),
            r#"{"model":"m","messages":[{"role":"developer","content":"x"},{"role":"user","content":[{"type":"image_url","image_url":{"url":"data:image/png;base64,AA==","detail":"low"}}]}]}"#.to_string(),
        ] {
            assert!(parse_chat_request(ok.as_bytes()).is_ok(), "{ok}");
        }
    }

    fn canon(body: &str) -> String {
        String::from_utf8(parse_chat_request(body.as_bytes()).unwrap().canonical()).unwrap()
    }

    #[test]
    fn key_order_whitespace_and_defaults_do_not_change_canonical_form() {
        let a = r#"{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]}"#;
        let b = r#"{ "messages" : [ {"content":"hi", "role":"user", "name": null} ],
                    "model":"gpt-4o", "temperature": 1.0, "top_p": 1, "n": 1, "stream": false,
                    "presence_penalty": 0, "user": "alice", "metadata": {"x": 1}, "stop": null }"#;
        assert_eq!(canon(a), canon(b));
    }

    #[test]
    fn single_text_part_equals_plain_string_and_stop_string_equals_list() {
        let a = r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"stop":"END"}"#;
        let b = r#"{"model":"m","messages":[{"role":"user","content":[{"type":"text","text":"hi"}]}],"stop":["END"]}"#;
        assert_eq!(canon(a), canon(b));
    }

    #[test]
    fn params_that_change_the_answer_change_the_canonical_form() {
        let base = r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#;
        let variants = [
            r#"{"model":"m2","messages":[{"role":"user","content":"hi"}]}"#,
            r#"{"model":"m","messages":[{"role":"user","content":"hi!"}]}"#,
            r#"{"model":"m","messages":[{"role":"system","content":"hi"}]}"#,
            r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"temperature":0.2}"#,
            r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"top_p":0.5}"#,
            r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"max_tokens":5}"#,
            r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"seed":7}"#,
            r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"stop":["x"]}"#,
            r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"stream":true}"#,
            r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"response_format":{"type":"json_object"}}"#,
            r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"tools":[{"type":"function","function":{"name":"f"}}]}"#,
            r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"tool_choice":"required"}"#,
            r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"some_future_param":true}"#,
        ];
        let base_c = canon(base);
        for v in variants {
            assert_ne!(base_c, canon(v), "{v} must not share a key with the base request");
        }
    }

    #[test]
    fn image_data_is_hashed_not_kept() {
        let img = base64::engine::general_purpose::STANDARD.encode(vec![7u8; 3000]);
        let body = format!(
            r#"{{"model":"m","messages":[{{"role":"user","content":[{{"type":"text","text":"caption"}},{{"type":"image_url","image_url":{{"url":"data:image/png;base64,{img}","detail":"auto"}}}}]}}]}}"#
        );
        let c = canon(&body);
        assert!(!c.contains(&img[..100]), "image bytes must not be in the canonical form");
        assert!(c.contains("blake3:image/png:"));
        let other = base64::engine::general_purpose::STANDARD.encode(vec![8u8; 3000]);
        assert_ne!(c, canon(&body.replace(&img, &other)));
        // `detail: auto` is the default.
        assert_eq!(c, canon(&body.replace(r#","detail":"auto""#, "")));
        assert_ne!(c, canon(&body.replace(r#""detail":"auto""#, r#""detail":"high""#)));
    }

    #[test]
    fn tool_choice_default_is_dropped() {
        let tools = r#""tools":[{"type":"function","function":{"name":"f"}}]"#;
        let a = format!(r#"{{"model":"m","messages":[{{"role":"user","content":"x"}}],{tools}}}"#);
        let b = format!(r#"{{"model":"m","messages":[{{"role":"user","content":"x"}}],{tools},"tool_choice":"auto"}}"#);
        assert_eq!(canon(&a), canon(&b));
    }

    #[test]
    fn bad_inputs_are_errors_naming_the_field() {
        let cases = [
            ("not json", None),
            ("[1,2]", Some("")),
            (r#"{"messages":[{"role":"user","content":"x"}]}"#, Some("model")),
            (r#"{"model":5,"messages":[{"role":"user","content":"x"}]}"#, Some("model")),
            (r#"{"model":"m"}"#, Some("messages")),
            (r#"{"model":"m","messages":[]}"#, Some("messages")),
            (r#"{"model":"m","messages":"hi"}"#, Some("messages")),
            (r#"{"model":"m","messages":[{"content":"x"}]}"#, Some("messages[0].role")),
            (r#"{"model":"m","messages":[{"role":"user","content":5}]}"#, Some("messages[0].content")),
            (
                r#"{"model":"m","messages":[{"role":"user","content":[{"text":"x"}]}]}"#,
                Some("messages[0].content[0].type"),
            ),
            (r#"{"model":"m","messages":[{"role":"user","content":"x"}],"temperature":"hot"}"#, Some("temperature")),
            (r#"{"model":"m","messages":[{"role":"user","content":"x"}],"temperature":5}"#, Some("temperature")),
            (r#"{"model":"m","messages":[{"role":"user","content":"x"}],"stream":"yes"}"#, Some("stream")),
            (r#"{"model":"m","messages":[{"role":"user","content":"x"}],"n":1.5}"#, Some("n")),
            (r#"{"model":"m","messages":[{"role":"user","content":"x"}],"max_tokens":"10"}"#, Some("max_tokens")),
            (r#"{"model":"m","messages":[{"role":"user","content":"x"}],"stop":5}"#, Some("stop")),
            (r#"{"model":"m","messages":[{"role":"user","content":"x"}],"tools":{}}"#, Some("tools")),
        ];
        for (body, param) in cases {
            let e = parse_chat_request(body.as_bytes()).unwrap_err();
            match (param, &e) {
                (None, GatewayError::InvalidJson(_)) => {}
                (Some(p), GatewayError::InvalidRequest { param: Some(got), .. }) => assert_eq!(got, p, "{body}"),
                _ => panic!("{body}: unexpected {e:?}"),
            }
            assert_eq!(e.status(), 400);
        }
    }

    #[test]
    fn facts_are_extracted() {
        let r = parse_chat_request(
            br#"{"model":"m","messages":[{"role":"user","content":"x"}],"stream":true,"temperature":0.3,"n":2}"#,
        )
        .unwrap();
        assert_eq!(r.model, "m");
        assert!(r.stream);
        assert_eq!(r.temperature, Some(0.3));
        assert_eq!(r.n, 2);
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        fn shuffle_keys(v: &Value, seed: u64) -> String {
            // Write objects with keys in a seed-dependent order and random spacing.
            match v {
                Value::Object(m) => {
                    let mut items: Vec<_> = m.iter().collect();
                    let len = items.len().max(1);
                    items.rotate_left((seed as usize) % len);
                    if seed % 2 == 1 {
                        items.reverse();
                    }
                    let parts: Vec<String> = items
                        .iter()
                        .map(|(k, v)| format!("{} : {}", Value::String((*k).clone()), shuffle_keys(v, seed / 3 + 1)))
                        .collect();
                    format!("{{ {} }}", parts.join(" ,\n "))
                }
                Value::Array(a) => {
                    format!("[{}]", a.iter().map(|x| shuffle_keys(x, seed + 7)).collect::<Vec<_>>().join(", "))
                }
                other => other.to_string(),
            }
        }

        proptest! {
            #![proptest_config(ProptestConfig { cases: 128, failure_persistence: None, ..ProptestConfig::default() })]
            #[test]
            fn rewriting_the_same_request_keeps_the_canonical_form(
                text in "[a-zA-Z0-9 ?.,]{1,40}",
                temp in proptest::option::of(0u8..=20),
                max_tokens in proptest::option::of(1u32..4000),
                seed in any::<u64>(),
            ) {
                let mut v = serde_json::json!({"model":"gpt-4o","messages":[{"role":"system","content":"be brief"},{"role":"user","content":text}]});
                if let Some(t) = temp { v["temperature"] = serde_json::json!(t as f64 / 10.0); }
                if let Some(m) = max_tokens { v["max_tokens"] = serde_json::json!(m); }
                let plain = v.to_string();
                let shuffled = shuffle_keys(&v, seed);
                prop_assert_eq!(canon(&plain), canon(&shuffled));
            }

            #[test]
            fn different_user_text_gives_a_different_canonical_form(a in "[a-z ]{1,30}", b in "[a-z ]{1,30}") {
                prop_assume!(a != b);
                let ra = serde_json::json!({"model":"m","messages":[{"role":"user","content":a}]}).to_string();
                let rb = serde_json::json!({"model":"m","messages":[{"role":"user","content":b}]}).to_string();
                prop_assert_ne!(canon(&ra), canon(&rb));
            }
        }
    }
}
