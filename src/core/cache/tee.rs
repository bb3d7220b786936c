//! A bounded copy of an upstream response as it streams past, and the check that decides
//! whether the complete copy may be stored (status, content type, encoding, completeness).

use crate::core::cache::entry::{is_gateway_content_type, BodyKind, CachedResponse};
use crate::core::wire::sse::SseParser;

/// Why a response is not stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotStorable {
    Status,
    ContentType,
    Encoded,
    TooLarge,
    Truncated,
    Invalid,
}

/// A bounded copy of a response body as it streams past, to store once it is complete.
#[derive(Debug)]
pub struct ResponseTee {
    kind: BodyKind,
    content_type: String,
    limit: usize,
    held: usize,
    json: Vec<u8>,
    sse: SseParser,
    events: Vec<Vec<u8>>,
    saw_done: bool,
    saw_error: bool,
    overflow: bool,
}

impl ResponseTee {
    /// Start teeing a response, if its head says it could be stored.
    pub fn start(
        status: u16,
        content_type: Option<&str>,
        content_encoding: Option<&str>,
        limit: usize,
    ) -> Result<Self, NotStorable> {
        if status != 200 {
            return Err(NotStorable::Status);
        }
        if content_encoding.is_some_and(|e| !e.trim().eq_ignore_ascii_case("identity")) {
            return Err(NotStorable::Encoded);
        }
        let ct = content_type.unwrap_or("").trim();
        let media = ct.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
        let kind = match media.as_str() {
            "application/json" => BodyKind::Json,
            "text/event-stream" => BodyKind::Sse,
            _ => return Err(NotStorable::ContentType),
        };
        // What is stored is the gateway's own form of the type, never the provider's bytes.
        let content_type = if is_gateway_content_type(ct) { ct.to_string() } else { media };
        Ok(ResponseTee {
            kind,
            content_type,
            limit,
            held: 0,
            json: Vec::new(),
            sse: SseParser::new(),
            events: Vec::new(),
            saw_done: false,
            saw_error: false,
            overflow: false,
        })
    }

    /// Copy the next piece; past the limit the copy is dropped (the response still flows).
    pub fn push(&mut self, bytes: &[u8]) {
        if self.overflow {
            return;
        }
        self.held += bytes.len();
        if self.held > self.limit {
            self.overflow = true;
            self.json = Vec::new();
            self.events = Vec::new();
            self.sse = SseParser::new();
            return;
        }
        match self.kind {
            BodyKind::Json => self.json.extend_from_slice(bytes),
            BodyKind::Sse => {
                for ev in self.sse.feed(bytes) {
                    self.saw_done |= ev.is_done();
                    // A provider may report a failure inside a 200 stream.
                    self.saw_error |= ev.data.starts_with('{')
                        && serde_json::from_str::<serde_json::Value>(&ev.data).is_ok_and(|v| v.get("error").is_some());
                    self.events.push(ev.raw);
                }
            }
        }
    }

    pub fn is_overflowed(&self) -> bool {
        self.overflow
    }

    /// At the end of the stream: the response to store, if it is complete and well formed.
    pub fn finish(self) -> Result<CachedResponse, NotStorable> {
        if self.overflow {
            return Err(NotStorable::TooLarge);
        }
        let chunks = match self.kind {
            BodyKind::Json => {
                // A complete completion: valid JSON with a `choices` array. Checked without
                // building the document (every answer stored pays for this check).
                #[derive(serde::Deserialize)]
                struct Completion {
                    #[serde(rename = "choices")]
                    _choices: Vec<serde::de::IgnoredAny>,
                }
                serde_json::from_slice::<Completion>(&self.json).map_err(|_| NotStorable::Invalid)?;
                vec![self.json]
            }
            BodyKind::Sse => {
                if !self.saw_done || !self.sse.pending().iter().all(u8::is_ascii_whitespace) {
                    return Err(NotStorable::Truncated);
                }
                if self.saw_error {
                    return Err(NotStorable::Invalid);
                }
                self.events
            }
        };
        Ok(CachedResponse { kind: self.kind, content_type: self.content_type, chunks })
    }
}
