//! A cached response and its binary form in a shared-data slot.
//!
//! Layout (little endian): magic `SGE1` | key [32] | created_ms u64 | expires_ms u64 |
//! kind u8 (0 json, 1 sse) | content-type len u16 + bytes | chunk count u32 |
//! per chunk: len u32 + bytes. A JSON body is one chunk; an SSE body is its events in order.

use crate::core::cache::key::CacheKey;

const MAGIC: &[u8; 4] = b"SGE1";
/// Bytes before the key: lets a lookup reject a slot after reading its first 36 bytes' worth.
pub const KEY_OFFSET: usize = 4;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyKind {
    Json,
    Sse,
}

/// The content types the gateway itself produces (`application/json`, `text/event-stream`,
/// optionally `; charset=utf-8`). A stored or received entry with any other is not replayed:
/// its bytes would be written out as a response header.
pub fn is_gateway_content_type(ct: &str) -> bool {
    if ct.bytes().any(|b| b.is_ascii_control() || !b.is_ascii()) {
        return false;
    }
    let mut parts = ct.split(';').map(str::trim);
    let media = parts.next().unwrap_or("");
    if !media.eq_ignore_ascii_case("application/json") && !media.eq_ignore_ascii_case("text/event-stream") {
        return false;
    }
    parts.all(|p| p.eq_ignore_ascii_case("charset=utf-8") || p.eq_ignore_ascii_case("charset=\"utf-8\""))
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachedResponse {
    pub kind: BodyKind,
    pub content_type: String,
    /// The body in order: one chunk for JSON, one SSE event (with its framing) per chunk.
    pub chunks: Vec<Vec<u8>>,
}

impl CachedResponse {
    /// The body as sent to a client on a hit: the chunks back to back, framing included.
    pub fn body(&self) -> Vec<u8> {
        self.chunks.concat()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub key: CacheKey,
    pub created_ms: u64,
    pub expires_ms: u64,
    pub response: CachedResponse,
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("cache slot holds no valid entry")]
pub struct DecodeError;

impl Entry {
    pub fn is_expired(&self, now_ms: u64) -> bool {
        now_ms >= self.expires_ms
    }

    pub fn encode(&self) -> Vec<u8> {
        let ct = self.response.content_type.as_bytes();
        let ct = &ct[..ct.len().min(u16::MAX as usize)];
        let body_len: usize = self.response.chunks.iter().map(|c| c.len() + 4).sum();
        let mut out = Vec::with_capacity(4 + 32 + 16 + 1 + 2 + ct.len() + 4 + body_len);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&self.key.0);
        out.extend_from_slice(&self.created_ms.to_le_bytes());
        out.extend_from_slice(&self.expires_ms.to_le_bytes());
        out.push(match self.response.kind {
            BodyKind::Json => 0,
            BodyKind::Sse => 1,
        });
        out.extend_from_slice(&(ct.len() as u16).to_le_bytes());
        out.extend_from_slice(ct);
        out.extend_from_slice(&(self.response.chunks.len() as u32).to_le_bytes());
        for c in &self.response.chunks {
            out.extend_from_slice(&(c.len() as u32).to_le_bytes());
            out.extend_from_slice(c);
        }
        out
    }

    /// The key stored in a slot, without decoding the rest (cheap check on lookups).
    pub fn peek_key(bytes: &[u8]) -> Option<CacheKey> {
        if bytes.len() < KEY_OFFSET + 32 || &bytes[..4] != MAGIC {
            return None;
        }
        let mut k = [0u8; 32];
        k.copy_from_slice(&bytes[KEY_OFFSET..KEY_OFFSET + 32]);
        Some(CacheKey(k))
    }

    /// Creation and expiry times, without decoding the body.
    pub fn peek_times(bytes: &[u8]) -> Option<(u64, u64)> {
        let mut r = Reader { buf: bytes, pos: KEY_OFFSET + 32 };
        Self::peek_key(bytes)?;
        Some((r.u64()?, r.u64()?))
    }

    pub fn decode(bytes: &[u8]) -> Result<Entry, DecodeError> {
        let key = Self::peek_key(bytes).ok_or(DecodeError)?;
        let mut r = Reader { buf: bytes, pos: KEY_OFFSET + 32 };
        let created_ms = r.u64().ok_or(DecodeError)?;
        let expires_ms = r.u64().ok_or(DecodeError)?;
        let kind = match r.take(1).ok_or(DecodeError)?[0] {
            0 => BodyKind::Json,
            1 => BodyKind::Sse,
            _ => return Err(DecodeError),
        };
        let ct_len = r.u16().ok_or(DecodeError)? as usize;
        let content_type = String::from_utf8(r.take(ct_len).ok_or(DecodeError)?.to_vec()).map_err(|_| DecodeError)?;
        let n = r.u32().ok_or(DecodeError)? as usize;
        // Each chunk needs at least its 4-byte length: bound the allocation by what is there.
        if n > bytes.len() / 4 {
            return Err(DecodeError);
        }
        let mut chunks = Vec::with_capacity(n);
        for _ in 0..n {
            let len = r.u32().ok_or(DecodeError)? as usize;
            chunks.push(r.take(len).ok_or(DecodeError)?.to_vec());
        }
        if r.pos != bytes.len() {
            return Err(DecodeError);
        }
        Ok(Entry { key, created_ms, expires_ms, response: CachedResponse { kind, content_type, chunks } })
    }
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.pos.checked_add(n)?;
        let s = self.buf.get(self.pos..end)?;
        self.pos = end;
        Some(s)
    }
    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_le_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Option<u32> {
        self.take(4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&mut self) -> Option<u64> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Some(u64::from_le_bytes(a))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(kind: BodyKind) -> Entry {
        Entry {
            key: CacheKey([9; 32]),
            created_ms: 1_000,
            expires_ms: 61_000,
            response: CachedResponse {
                kind,
                content_type: "text/event-stream".into(),
                chunks: vec![b"data: {\"x\":1}\n\n".to_vec(), b"data: [DONE]\n\n".to_vec()],
            },
        }
    }

    #[test]
    fn round_trip() {
        for kind in [BodyKind::Json, BodyKind::Sse] {
            let e = sample(kind);
            let bytes = e.encode();
            assert_eq!(Entry::decode(&bytes).unwrap(), e);
            assert_eq!(Entry::peek_key(&bytes), Some(e.key));
            assert_eq!(Entry::peek_times(&bytes), Some((1_000, 61_000)));
        }
    }

    #[test]
    fn expiry() {
        let e = sample(BodyKind::Json);
        assert!(!e.is_expired(60_999));
        assert!(e.is_expired(61_000));
    }

    #[test]
    fn every_truncation_and_garbage_is_an_error_not_a_panic() {
        let bytes = sample(BodyKind::Sse).encode();
        for cut in 0..bytes.len() {
            assert!(Entry::decode(&bytes[..cut]).is_err(), "cut {cut}");
        }
        let mut extra = bytes.clone();
        extra.push(0);
        assert!(Entry::decode(&extra).is_err());
        assert!(Entry::decode(b"").is_err());
        let mut huge = bytes[..4 + 32 + 16 + 1 + 2 + 17].to_vec();
        huge.extend_from_slice(&u32::MAX.to_le_bytes());
        assert!(Entry::decode(&huge).is_err());
    }

    #[test]
    fn body_concatenates_chunks() {
        assert_eq!(sample(BodyKind::Sse).response.body(), b"data: {\"x\":1}\n\ndata: [DONE]\n\n");
    }
}
