//! OpenAI embeddings wire format (`POST /v1/embeddings`): request parsing and a deterministic
//! answer. A vector is a hashed bag of words: lowercase alphanumeric words, FNV-1a into
//! `dimensions` buckets, L2-normalised as OpenAI's are. So identical texts get identical
//! vectors, texts sharing words are close, and no model is needed.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::openai::{missing, BadRequest};

/// Vector size when the request has no `dimensions`.
pub const DEFAULT_DIMENSIONS: usize = 64;
pub const MAX_DIMENSIONS: usize = 4096;
/// OpenAI's limit on inputs per request.
pub const MAX_INPUTS: usize = 2048;

#[derive(Deserialize)]
struct EmbeddingsRequest {
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    input: Option<Input>,
    #[serde(default)]
    dimensions: Option<u64>,
    #[serde(default)]
    encoding_format: Option<String>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Input {
    One(String),
    Many(Vec<String>),
    /// Token arrays: valid for OpenAI, not embedded here.
    Other(serde_json::Value),
}

/// The parts of an embeddings request the answer depends on.
#[derive(Debug)]
pub struct Embeddings {
    pub model: String,
    pub inputs: Vec<String>,
    pub dimensions: usize,
}

fn invalid(param: &'static str, code: &'static str, message: String) -> BadRequest {
    BadRequest { message, param: Some(param), code: Some(code) }
}

pub fn parse_embeddings(body: &[u8]) -> Result<Embeddings, BadRequest> {
    let req: EmbeddingsRequest = serde_json::from_slice(body).map_err(|e| BadRequest {
        message: format!("We could not parse the JSON body of your request: {e}"),
        param: None,
        code: None,
    })?;
    let model = req.model.ok_or_else(|| missing("model"))?;
    let inputs = match req.input.ok_or_else(|| missing("input"))? {
        Input::One(text) => vec![text],
        Input::Many(texts) => texts,
        Input::Other(v) => {
            let got = match v {
                serde_json::Value::Array(_) => "an array of non-strings (fake-provider embeds no token ids)",
                serde_json::Value::Number(_) => "a number",
                serde_json::Value::Object(_) => "an object",
                _ => "null or a boolean",
            };
            let msg = format!("Invalid 'input': expected a string or an array of strings, got {got}.");
            return Err(invalid("input", "invalid_type", msg));
        }
    };
    if inputs.is_empty() || inputs.len() > MAX_INPUTS {
        let msg = format!("Invalid 'input': {} items. Expected 1 to {MAX_INPUTS}.", inputs.len());
        return Err(invalid("input", "invalid_value", msg));
    }
    if let Some(i) = inputs.iter().position(String::is_empty) {
        return Err(invalid("input", "invalid_value", format!("Invalid 'input[{i}]': empty string.")));
    }
    let dimensions = match req.dimensions {
        None => DEFAULT_DIMENSIONS,
        Some(d) if (1..=MAX_DIMENSIONS as u64).contains(&d) => d as usize,
        Some(d) => {
            let msg = format!("Invalid 'dimensions': {d}. Expected 1 to {MAX_DIMENSIONS}.");
            return Err(invalid("dimensions", "invalid_value", msg));
        }
    };
    match req.encoding_format.as_deref() {
        None | Some("float") => {}
        Some(other) => {
            let msg = format!("'encoding_format' {other:?}: fake-provider answers \"float\" only.");
            return Err(invalid("encoding_format", "unsupported_value", msg));
        }
    }
    Ok(Embeddings { model, inputs, dimensions })
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf29ce484222325, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x100000001b3))
}

/// The unit-length hashed bag of words of `text`. A text with no word ("?!") counts as one
/// word, itself, so no vector is zero.
pub fn vector(text: &str, dimensions: usize) -> Vec<f32> {
    let mut v = vec![0f32; dimensions];
    let mut bucket = |bytes: &[u8]| v[(fnv1a(bytes) % dimensions as u64) as usize] += 1.0;
    let mut words = 0;
    for word in text.split(|c: char| !c.is_alphanumeric()).filter(|w| !w.is_empty()) {
        bucket(word.to_lowercase().as_bytes());
        words += 1;
    }
    if words == 0 {
        bucket(text.as_bytes());
    }
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.iter_mut().for_each(|x| *x /= norm);
    v
}

#[derive(Serialize)]
struct Item {
    object: &'static str,
    index: usize,
    embedding: Vec<f32>,
}

#[derive(Serialize)]
struct EmbeddingsUsage {
    prompt_tokens: u64,
    total_tokens: u64,
}

#[derive(Serialize)]
struct List<'a> {
    object: &'static str,
    data: Vec<Item>,
    model: &'a str,
    usage: EmbeddingsUsage,
}

/// `prompt_tokens = ceil(bytes of all inputs / 4)`, as for chat.
pub fn prompt_tokens(req: &Embeddings) -> u64 {
    (req.inputs.iter().map(String::len).sum::<usize>() as u64).div_ceil(4)
}

/// The `list` answer, `data` in input order.
pub fn embeddings_json(req: &Embeddings) -> Bytes {
    let data = req
        .inputs
        .iter()
        .enumerate()
        .map(|(index, text)| Item { object: "embedding", index, embedding: vector(text, req.dimensions) })
        .collect();
    let tokens = prompt_tokens(req);
    let list = List {
        object: "list",
        data,
        model: &req.model,
        usage: EmbeddingsUsage { prompt_tokens: tokens, total_tokens: tokens },
    };
    // Serializing plain structs into a Vec cannot fail.
    Bytes::from(serde_json::to_vec(&list).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cosine(a: &[f32], b: &[f32]) -> f32 {
        a.iter().zip(b).map(|(x, y)| x * y).sum()
    }

    #[test]
    fn parses_a_string_or_an_array_and_dimensions() {
        let e = parse_embeddings(br#"{"model":"m","input":"hello"}"#).ok().unwrap();
        assert_eq!((e.model.as_str(), e.inputs.len(), e.dimensions), ("m", 1, DEFAULT_DIMENSIONS));
        let e = parse_embeddings(br#"{"model":"m","input":["a","b c"],"dimensions":8,"encoding_format":"float"}"#)
            .ok()
            .unwrap();
        assert_eq!(e.inputs, ["a", "b c"]);
        assert_eq!(e.dimensions, 8);
    }

    #[test]
    fn rejects_bad_requests() {
        let code = |b: &[u8]| parse_embeddings(b).err().map(|e| (e.param, e.code));
        assert_eq!(code(b"not json"), Some((None, None)));
        assert_eq!(code(br#"{"input":"x"}"#), Some((Some("model"), Some("missing_required_parameter"))));
        assert_eq!(code(br#"{"model":"m"}"#), Some((Some("input"), Some("missing_required_parameter"))));
        assert_eq!(code(br#"{"model":"m","input":[]}"#), Some((Some("input"), Some("invalid_value"))));
        assert_eq!(code(br#"{"model":"m","input":["a",""]}"#), Some((Some("input"), Some("invalid_value"))));
        assert_eq!(code(br#"{"model":"m","input":[[1,2]]}"#), Some((Some("input"), Some("invalid_type"))));
        assert_eq!(
            code(br#"{"model":"m","input":"x","dimensions":0}"#),
            Some((Some("dimensions"), Some("invalid_value")))
        );
        assert_eq!(
            code(br#"{"model":"m","input":"x","dimensions":5000}"#),
            Some((Some("dimensions"), Some("invalid_value")))
        );
        assert_eq!(
            code(br#"{"model":"m","input":"x","encoding_format":"base64"}"#),
            Some((Some("encoding_format"), Some("unsupported_value")))
        );
    }

    #[test]
    fn vectors_are_deterministic_unit_length_and_close_for_shared_words() {
        let a = vector("How do I reset my password?", 64);
        assert_eq!(a, vector("how do i RESET my password", 64));
        assert_eq!(a.len(), 64);
        assert!((cosine(&a, &a) - 1.0).abs() < 1e-5);
        let near = cosine(&a, &vector("How do I reset my password, please?", 64));
        let far = cosine(&a, &vector("Shipping times to Norway", 64));
        assert!(near > 0.9 && far < near, "near {near}, far {far}");
        let no_words = vector("?!", 16);
        assert!((cosine(&no_words, &no_words) - 1.0).abs() < 1e-5);
    }

    #[test]
    fn answer_shape() {
        let req = Embeddings { model: "m".into(), inputs: vec!["a b".into(), "hello".into()], dimensions: 4 };
        let v: serde_json::Value = serde_json::from_slice(&embeddings_json(&req)).unwrap();
        assert_eq!(v["object"], "list");
        assert_eq!(v["model"], "m");
        assert_eq!(v["usage"], serde_json::json!({"prompt_tokens": 2, "total_tokens": 2}));
        let data = v["data"].as_array().unwrap();
        assert_eq!(data.len(), 2);
        for (i, item) in data.iter().enumerate() {
            assert_eq!(item["object"], "embedding");
            assert_eq!(item["index"], i);
            assert_eq!(item["embedding"].as_array().unwrap().len(), 4);
        }
    }
}
