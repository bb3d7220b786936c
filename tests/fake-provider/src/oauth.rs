//! Google's OAuth 2.0 token endpoint, for service-account keys: `POST /token` with the
//! JWT-bearer grant (`grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer&assertion=JWT`)
//! answers `{"access_token", "expires_in", "token_type": "Bearer"}` as Google does, after
//! checking the assertion the way Google documents it (RS256, `iss`, `scope`, `aud`, `iat`,
//! `exp` at most an hour later; the signature too when `--oauth-public-key` names the
//! account's public key). The Gemini/Vertex endpoints then accept `Authorization: Bearer` with
//! any token issued here and not yet expired.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::{json, Value};

pub struct OAuth {
    /// Lifetime of the tokens issued (`--oauth-token-ttl-s`).
    pub ttl_s: u64,
    /// PKCS#1 DER of the service account's public key (`--oauth-public-key`).
    pub public_key: Option<Vec<u8>>,
    issued: Mutex<HashMap<String, u64>>,
    pub tokens_issued: AtomicU64,
    pub refused: AtomicU64,
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

impl OAuth {
    pub fn new(ttl_s: u64, public_key: Option<Vec<u8>>) -> OAuth {
        OAuth {
            ttl_s,
            public_key,
            issued: Mutex::default(),
            tokens_issued: AtomicU64::new(0),
            refused: AtomicU64::new(0),
        }
    }

    /// Whether `authorization` is `Bearer <a token issued here, unexpired>`.
    pub fn accepts(&self, authorization: Option<&[u8]>) -> bool {
        let Some(token) = authorization.and_then(|a| a.strip_prefix(b"Bearer ")) else { return false };
        let Ok(token) = std::str::from_utf8(token) else { return false };
        let issued = self.issued.lock().unwrap_or_else(|p| p.into_inner());
        issued.get(token).is_some_and(|&expires| expires > now_ms())
    }

    /// `POST /token`: the status and JSON body.
    pub fn token(&self, body: &[u8]) -> (u16, Value) {
        match self.check(body) {
            Ok(()) => {
                let n = self.tokens_issued.fetch_add(1, Relaxed) + 1;
                let token = format!("ya29.fake-{n}");
                let mut issued = self.issued.lock().unwrap_or_else(|p| p.into_inner());
                let now = now_ms();
                issued.retain(|_, &mut e| e > now);
                issued.insert(token.clone(), now + self.ttl_s * 1000);
                (200, json!({"access_token": token, "expires_in": self.ttl_s, "token_type": "Bearer"}))
            }
            Err(why) => {
                self.refused.fetch_add(1, Relaxed);
                (400, json!({"error": "invalid_grant", "error_description": why}))
            }
        }
    }

    fn check(&self, body: &[u8]) -> Result<(), String> {
        let form = parse_form(body);
        if form.get("grant_type").map(String::as_str) != Some("urn:ietf:params:oauth:grant-type:jwt-bearer") {
            return Err("grant_type must be urn:ietf:params:oauth:grant-type:jwt-bearer".into());
        }
        let jwt = form.get("assertion").ok_or("no assertion")?;
        let parts: Vec<&str> = jwt.split('.').collect();
        let [h, c, s] = parts[..] else { return Err("the assertion is not a JWT".into()) };
        let decode = |p: &str| URL_SAFE_NO_PAD.decode(p).map_err(|_| "the JWT is not base64url".to_string());
        let header: Value = serde_json::from_slice(&decode(h)?).map_err(|_| "the JWT header is not JSON")?;
        let claims: Value = serde_json::from_slice(&decode(c)?).map_err(|_| "the JWT claims are not JSON")?;
        let signature = decode(s)?;
        if header["alg"] != "RS256" {
            return Err("alg must be RS256".into());
        }
        if !claims["iss"].as_str().is_some_and(|i| i.contains('@')) {
            return Err("iss must be the service account's email".into());
        }
        if !claims["scope"].as_str().is_some_and(|s| s.split(' ').any(|s| s.ends_with("/auth/cloud-platform"))) {
            return Err("scope must include https://www.googleapis.com/auth/cloud-platform".into());
        }
        if !claims["aud"].as_str().is_some_and(|a| a.ends_with("/token")) {
            return Err("aud must be the token endpoint".into());
        }
        let (Some(iat), Some(exp)) = (claims["iat"].as_u64(), claims["exp"].as_u64()) else {
            return Err("iat and exp are required".into());
        };
        let now = now_ms() / 1000;
        if iat > now + 300 || exp <= now || exp <= iat || exp - iat > 3600 {
            return Err(
                "Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable timeframe".into()
            );
        }
        match &self.public_key {
            Some(key) => {
                let key = ring::signature::UnparsedPublicKey::new(&ring::signature::RSA_PKCS1_2048_8192_SHA256, key);
                key.verify(format!("{h}.{c}").as_bytes(), &signature).map_err(|_| "Invalid JWT Signature.".to_string())
            }
            None if signature.len() >= 256 => Ok(()),
            None => Err("Invalid JWT Signature.".into()),
        }
    }

    pub fn stats(&self) -> Value {
        json!({"oauth_tokens_issued": self.tokens_issued.load(Relaxed), "oauth_refused": self.refused.load(Relaxed)})
    }
}

/// `application/x-www-form-urlencoded`, percent-decoded.
fn parse_form(body: &[u8]) -> HashMap<String, String> {
    let text = String::from_utf8_lossy(body);
    text.split('&')
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| (percent_decode(k), percent_decode(v)))
        .collect()
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                match std::str::from_utf8(&bytes[i + 1..i + 3]).ok().and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms_are_percent_decoded() {
        let f = parse_form(b"grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer&assertion=a.b.c&x=%");
        assert_eq!(f["grant_type"], "urn:ietf:params:oauth:grant-type:jwt-bearer");
        assert_eq!(f["assertion"], "a.b.c");
        assert_eq!(f["x"], "%");
    }

    #[test]
    fn a_bad_grant_is_refused_and_nothing_is_issued() {
        let o = OAuth::new(3600, None);
        for body in [
            &b"grant_type=password"[..],
            b"grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer&assertion=x.y",
        ] {
            let (status, answer) = o.token(body);
            assert_eq!(status, 400);
            assert_eq!(answer["error"], "invalid_grant");
        }
        assert_eq!(o.tokens_issued.load(Relaxed), 0);
        assert!(!o.accepts(Some(b"Bearer ya29.fake-1")));
    }
}
