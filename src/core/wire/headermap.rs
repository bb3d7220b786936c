//! proxy-wasm's header-map wire format, read in place: a count (u32), then per pair the name
//! and value lengths (u32 each), then each name and value NUL-terminated. Envoy hands the
//! filter a whole map in one host call; reading it without building a `String` per name and
//! value keeps that call cheap on every request.

/// A serialized header map as the host returned it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HeaderMap(pub Vec<u8>);

impl HeaderMap {
    /// The pairs in order. Reading stops at the first malformed pair; pairs whose name or
    /// value is not UTF-8 are skipped (no header the gateway reads may be binary).
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.raw_pairs().filter_map(|(k, v)| Some((std::str::from_utf8(k).ok()?, std::str::from_utf8(v).ok()?)))
    }

    /// The pairs as bytes, in order, up to the first malformed one.
    fn raw_pairs(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        let bytes = self.0.as_slice();
        let word =
            move |at: usize| bytes.get(at..at + 4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize);
        let n = word(0).unwrap_or(0);
        let mut data = 4usize.saturating_add(n.saturating_mul(8));
        (0..n).map_while(move |i| {
            let (kl, vl) = (word(4 + i * 8)?, word(8 + i * 8)?);
            let k = bytes.get(data..data.checked_add(kl)?)?;
            let v_at = data + kl + 1;
            let v = bytes.get(v_at..v_at.checked_add(vl)?)?;
            data = v_at + vl + 1;
            Some((k, v))
        })
    }

    /// The first value of `name` (lowercase, as Envoy keeps names).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.iter().find(|(k, _)| *k == name).map(|(_, v)| v)
    }

    /// Several headers in one pass over the map (each `get` is a pass of its own, and the
    /// filter reads about ten per request). Per name: `None` if absent, else its first
    /// non-empty value, else `Some("")` (present, but only empty). Only the values of the
    /// names asked for are checked for UTF-8; a name whose values are all binary is absent.
    pub fn pick<const N: usize>(&self, names: [&str; N]) -> [Option<&str>; N] {
        let mut out: [Option<&str>; N] = [None; N];
        for (k, v) in self.raw_pairs() {
            for (slot, name) in out.iter_mut().zip(names) {
                if k != name.as_bytes() || matches!(slot, Some(s) if !s.is_empty()) {
                    continue;
                }
                if let Ok(v) = std::str::from_utf8(v) {
                    *slot = Some(v);
                }
            }
        }
        out
    }
}

/// Serialize pairs in the same format (for local replies and callouts).
pub fn encode(pairs: &[(&str, &str)]) -> Vec<u8> {
    let size = 4 + pairs.iter().map(|(k, v)| 8 + k.len() + v.len() + 2).sum::<usize>();
    let mut out = Vec::with_capacity(size);
    out.extend_from_slice(&(pairs.len() as u32).to_le_bytes());
    for (k, v) in pairs {
        out.extend_from_slice(&(k.len() as u32).to_le_bytes());
        out.extend_from_slice(&(v.len() as u32).to_le_bytes());
    }
    for (k, v) in pairs {
        out.extend_from_slice(k.as_bytes());
        out.push(0);
        out.extend_from_slice(v.as_bytes());
        out.push(0);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_lookup() {
        let pairs = [(":status", "200"), ("x-empty", ""), ("content-type", "application/json"), ("x-empty", "later")];
        let map = HeaderMap(encode(&pairs));
        assert_eq!(map.iter().collect::<Vec<_>>(), pairs.to_vec());
        assert_eq!(map.get(":status"), Some("200"));
        assert_eq!(map.get("x-empty"), Some(""));
        assert_eq!(map.get("absent"), None);
        assert_eq!(HeaderMap::default().iter().count(), 0);
    }

    #[test]
    fn pick_reads_many_headers_in_one_pass_like_get() {
        let pairs = [
            (":path", "/v1/chat/completions"),
            ("x-empty", ""),
            ("authorization", "Bearer a"),
            ("x-empty", "later"),
            ("authorization", "Bearer b"),
            ("x-only-empty", ""),
        ];
        let map = HeaderMap(encode(&pairs));
        let [path, empty, auth, only_empty, absent] =
            map.pick([":path", "x-empty", "authorization", "x-only-empty", "absent"]);
        assert_eq!(path, Some("/v1/chat/completions"));
        assert_eq!(empty, Some("later"), "the first non-empty value");
        assert_eq!(auth, Some("Bearer a"), "the first value, as get");
        assert_eq!(only_empty, Some(""), "present though empty");
        assert_eq!(absent, None);
        for name in [":path", "x-empty", "authorization", "x-only-empty", "absent"] {
            let [picked] = map.pick([name]);
            let first_nonempty = map.iter().find(|(k, v)| *k == name && !v.is_empty()).map(|(_, v)| v);
            assert_eq!(picked.filter(|v| !v.is_empty()), first_nonempty, "{name}");
            assert_eq!(picked.is_some(), map.get(name).is_some(), "{name}");
        }
        assert_eq!(HeaderMap::default().pick(["a"]), [None]);
    }

    #[test]
    fn malformed_maps_yield_what_was_readable() {
        let full = encode(&[("a", "1"), ("b", "2")]);
        for cut in 0..full.len() {
            let map = HeaderMap(full[..cut].to_vec());
            // Never panics; never yields a pair that was not in the map.
            for (k, v) in map.iter() {
                assert!(matches!((k, v), ("a", "1") | ("b", "2")), "cut {cut}: {k}={v}");
            }
        }
        // A count far larger than the bytes.
        let mut huge = full.clone();
        huge[..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(HeaderMap(huge.clone()).iter().count() <= 2);
        assert!(matches!(HeaderMap(huge).pick(["a", "b"]), [None | Some("1"), None | Some("2")]));
        for cut in 0..full.len() {
            let map = HeaderMap(full[..cut].to_vec());
            let picked = map.pick(["a", "b"]);
            assert!(matches!(picked, [None | Some("1"), None | Some("2")]), "cut {cut}: {picked:?}");
        }
        // Binary values are skipped, the rest still read.
        let bin = HeaderMap(encode(&[("a", "1")]));
        let mut raw = bin.0.clone();
        let at = raw.len() - 2;
        raw[at] = 0xff;
        assert_eq!(HeaderMap(raw).iter().count(), 0);
    }
}
