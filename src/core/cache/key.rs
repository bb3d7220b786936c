//! Exact-cache keys: blake3 over the request's canonical form and the scope it may be served in.

use std::fmt;

/// Who may be served an entry: a tenant never sees another tenant's answers, and with
/// `cache_by_provider` one provider's answers never serve another's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope {
    pub tenant: String,
    pub provider: Option<String>,
}

#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct CacheKey(pub [u8; 32]);

impl CacheKey {
    /// Hash of the canonical request within its scope. Every field is length-prefixed, so no
    /// two different (scope, request) pairs can produce the same hashed byte string.
    pub fn new(canonical: &[u8], scope: &Scope) -> CacheKey {
        let mut h = blake3::Hasher::new_derive_key("semgate exact cache key v1");
        let provider = scope.provider.as_deref().unwrap_or("");
        for part in [scope.tenant.as_bytes(), provider.as_bytes(), canonical] {
            h.update(&(part.len() as u64).to_le_bytes());
            h.update(part);
        }
        CacheKey(*h.finalize().as_bytes())
    }

    /// First 8 bytes as a number: picks the set in the shared-data store.
    pub fn prefix_u64(&self) -> u64 {
        let mut b = [0u8; 8];
        b.copy_from_slice(&self.0[..8]);
        u64::from_le_bytes(b)
    }

    /// Hex form (the sidecar's exact-tier key).
    pub fn hex(&self) -> String {
        hex(&self.0)
    }

    /// Short hex form for headers and logs (not secret: it identifies, it does not reveal).
    pub fn short(&self) -> String {
        hex(&self.0[..8])
    }
}

/// Lowercase hex, without `format!` per byte (on a cache hit's path, where the formatting
/// machinery is measurable in Wasm).
fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 15)] as char);
    }
    out
}

impl fmt::Debug for CacheKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CacheKey({})", self.short())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scope(t: &str, p: Option<&str>) -> Scope {
        Scope { tenant: t.into(), provider: p.map(Into::into) }
    }

    #[test]
    fn same_request_same_scope_same_key() {
        assert_eq!(CacheKey::new(b"{}", &scope("a", None)), CacheKey::new(b"{}", &scope("a", None)));
    }

    #[test]
    fn scope_separates_keys() {
        let base = CacheKey::new(b"{}", &scope("a", None));
        assert_ne!(base, CacheKey::new(b"{}", &scope("b", None)));
        assert_ne!(base, CacheKey::new(b"{}", &scope("a", Some("openai"))));
        // Length prefixes: moving bytes between fields changes the key.
        assert_ne!(CacheKey::new(b"x", &scope("ab", None)), CacheKey::new(b"bx", &scope("a", None)));
    }

    #[test]
    fn short_is_16_hex_chars() {
        let k = CacheKey::new(b"{}", &scope("a", None));
        assert_eq!(CacheKey([0xab; 32]).hex(), "ab".repeat(32));
        assert_eq!(CacheKey([0x0f; 32]).short(), "0f".repeat(8));
        assert!(k.hex().starts_with(&k.short()));
        assert_eq!(k.short().len(), 16);
        assert!(k.short().chars().all(|c| c.is_ascii_hexdigit()));
    }
}
