//! Google OAuth access tokens for Vertex AI, minted from service-account keys.
//!
//! The filter's Wasm VM cannot read a key file or sign anything with it, and a Google access
//! token lives about an hour; so the sidecar holds the service-account key (`--vertex-credentials
//! NAME=FILE`, NAME being the provider's name in the filter configuration), signs the RS256 JWT
//! of the OAuth 2.0 JWT-bearer grant, exchanges it at the key file's `token_uri`, and renews the
//! token when a quarter of its life is left. The filter's upstream role fetches the current
//! token with `POST /v1/vertex/token` `{"provider": NAME}` (the sidecar's bearer token required, like every data
//! endpoint) and keeps it in Envoy's shared data.
//!
//! The private key never leaves this process: it is in no answer, log line or error message
//! (errors name the file and the field).

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use ring::rand::SystemRandom;
use ring::signature::{RsaKeyPair, RSA_PKCS1_SHA256};
use serde::Deserialize;
use serde_json::json;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// What Vertex AI needs.
pub const SCOPE: &str = "https://www.googleapis.com/auth/cloud-platform";
/// Google's token endpoint, when the key file names none.
pub const DEFAULT_TOKEN_URI: &str = "https://oauth2.googleapis.com/token";
/// The longest assertion Google accepts.
const ASSERTION_LIFETIME_S: u64 = 3600;
const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(10);
const MAX_ANSWER_BYTES: u64 = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    #[error("{0}")]
    Invalid(String),
    #[error("token exchange at {uri}: {message}")]
    Exchange { uri: String, message: String },
}

/// The fields of a service-account key file (`gcloud iam service-accounts keys create`) that
/// minting uses.
#[derive(Deserialize)]
struct KeyFile {
    #[serde(rename = "type")]
    kind: Option<String>,
    client_email: String,
    private_key: String,
    #[serde(default)]
    private_key_id: Option<String>,
    #[serde(default)]
    token_uri: Option<String>,
}

/// One service account: signs assertions and exchanges them for access tokens.
pub struct ServiceAccount {
    email: String,
    key_id: Option<String>,
    token_uri: String,
    key: RsaKeyPair,
    rng: SystemRandom,
}

impl std::fmt::Debug for ServiceAccount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceAccount").field("email", &self.email).field("token_uri", &self.token_uri).finish()
    }
}

impl ServiceAccount {
    /// From the text of a key file; `what` names it in errors.
    pub fn from_json(text: &str, what: &str) -> Result<Self, CredentialError> {
        let bad = |m: &str| CredentialError::Invalid(format!("{what}: {m}"));
        let file: KeyFile =
            serde_json::from_str(text).map_err(|e| bad(&format!("not a service-account key file ({e})")))?;
        if let Some(kind) = &file.kind {
            if kind != "service_account" {
                return Err(bad(&format!("`type` is `{kind}`, not `service_account`")));
            }
        }
        if file.client_email.trim().is_empty() {
            return Err(bad("`client_email` is empty"));
        }
        let der = pem_body(&file.private_key, "PRIVATE KEY").ok_or_else(|| {
            bad("`private_key` is not a PEM `-----BEGIN PRIVATE KEY-----` block (PKCS#8, as Google issues it)")
        })?;
        let key = RsaKeyPair::from_pkcs8(&der)
            .map_err(|e| bad(&format!("`private_key` is not a usable RSA key of 2048 bits or more ({e})")))?;
        let token_uri = file.token_uri.unwrap_or_else(|| DEFAULT_TOKEN_URI.to_string());
        if !(token_uri.starts_with("https://") || token_uri.starts_with("http://")) {
            return Err(bad("`token_uri` must be an http(s) URL"));
        }
        Ok(ServiceAccount {
            email: file.client_email,
            key_id: file.private_key_id,
            token_uri,
            key,
            rng: SystemRandom::new(),
        })
    }

    pub fn email(&self) -> &str {
        &self.email
    }

    pub fn token_uri(&self) -> &str {
        &self.token_uri
    }

    /// The signed JWT of the JWT-bearer grant, issued at `now_s` (Unix seconds).
    pub fn assertion(&self, now_s: u64) -> Result<String, CredentialError> {
        let mut header = json!({"alg": "RS256", "typ": "JWT"});
        if let Some(kid) = &self.key_id {
            header["kid"] = json!(kid);
        }
        let claims = json!({
            "iss": self.email,
            "scope": SCOPE,
            "aud": self.token_uri,
            "iat": now_s,
            "exp": now_s + ASSERTION_LIFETIME_S,
        });
        let signing_input =
            format!("{}.{}", URL_SAFE_NO_PAD.encode(header.to_string()), URL_SAFE_NO_PAD.encode(claims.to_string()));
        let mut signature = vec![0; self.key.public().modulus_len()];
        self.key
            .sign(&RSA_PKCS1_SHA256, &self.rng, signing_input.as_bytes(), &mut signature)
            .map_err(|_| CredentialError::Invalid("signing the assertion failed".into()))?;
        Ok(format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(signature)))
    }

    /// The public key (PKCS#1 DER), for checking signatures in tests.
    pub fn public_key_der(&self) -> Vec<u8> {
        use ring::signature::KeyPair;
        self.key.public_key().as_ref().to_vec()
    }

    /// Exchange a fresh assertion for an access token (blocking: run it off the async workers).
    pub fn mint(&self, agent: &ureq::Agent, now_s: u64) -> Result<Token, CredentialError> {
        let fail = |message: String| CredentialError::Exchange { uri: self.token_uri.clone(), message };
        let assertion = self.assertion(now_s)?;
        let mut answer = agent
            .post(&self.token_uri)
            .send_form([("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"), ("assertion", &assertion)])
            .map_err(|e| fail(e.to_string()))?;
        let status = answer.status().as_u16();
        let text = answer
            .body_mut()
            .with_config()
            .limit(MAX_ANSWER_BYTES)
            .read_to_string()
            .map_err(|e| fail(format!("reading the answer: {e}")))?;
        #[derive(Deserialize)]
        struct Answer {
            access_token: String,
            expires_in: u64,
        }
        if !(200..300).contains(&status) {
            // Google's error body names the problem (`invalid_grant`, ...), never a secret of ours.
            let reason = serde_json::from_str::<serde_json::Value>(&text)
                .ok()
                .and_then(|v| v.get("error").map(|e| e.to_string()))
                .unwrap_or_default();
            return Err(fail(format!("HTTP {status} {reason}")));
        }
        let a: Answer = serde_json::from_str(&text).map_err(|e| fail(format!("not a token answer: {e}")))?;
        if a.access_token.is_empty() || !a.access_token.chars().all(|c| c.is_ascii_graphic()) || a.expires_in == 0 {
            return Err(fail("the answer holds no usable token".into()));
        }
        let now_ms = now_s * 1000;
        Ok(Token { value: a.access_token, minted_ms: now_ms, expires_ms: now_ms + a.expires_in * 1000 })
    }
}

/// The body of the first PEM block labelled `label`.
fn pem_body(pem: &str, label: &str) -> Option<Vec<u8>> {
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let start = pem.find(&begin)? + begin.len();
    let stop = start + pem[start..].find(&end)?;
    let b64: String = pem[start..stop].chars().filter(|c| !c.is_whitespace()).collect();
    STANDARD.decode(b64).ok()
}

#[derive(Clone, PartialEq, Eq)]
pub struct Token {
    pub value: String,
    pub minted_ms: u64,
    pub expires_ms: u64,
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Token").field("expires_ms", &self.expires_ms).finish_non_exhaustive()
    }
}

impl Token {
    /// Renew once a quarter of the token's life is left (15 minutes of Google's hour).
    pub fn renew_at_ms(&self) -> u64 {
        self.expires_ms - (self.expires_ms - self.minted_ms) / 4
    }
}

/// One credential: the account and its current token.
pub struct Credential {
    pub account: ServiceAccount,
    current: Mutex<Option<Token>>,
    pub mints: std::sync::atomic::AtomicU64,
    pub failures: std::sync::atomic::AtomicU64,
}

/// Every `--vertex-credentials`, by provider name.
#[derive(Clone, Default)]
pub struct Credentials(pub Arc<BTreeMap<String, Arc<Credential>>>);

impl Credentials {
    /// From `NAME=FILE` pairs.
    pub fn load(specs: &[String]) -> Result<Self, CredentialError> {
        let mut map = BTreeMap::new();
        for spec in specs {
            let (name, path) = spec
                .split_once('=')
                .ok_or_else(|| CredentialError::Invalid(format!("--vertex-credentials {spec}: write PROVIDER=FILE")))?;
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
                return Err(CredentialError::Invalid(format!("--vertex-credentials: `{name}` is not a provider name")));
            }
            let text = std::fs::read_to_string(path)
                .map_err(|e| CredentialError::Invalid(format!("--vertex-credentials {name}: {path}: {e}")))?;
            let account = ServiceAccount::from_json(&text, &format!("--vertex-credentials {name} ({path})"))?;
            let credential = Credential {
                account,
                current: Mutex::new(None),
                mints: Default::default(),
                failures: Default::default(),
            };
            if map.insert(name.to_string(), Arc::new(credential)).is_some() {
                return Err(CredentialError::Invalid(format!("--vertex-credentials: `{name}` given twice")));
            }
        }
        Ok(Credentials(Arc::new(map)))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// One task per credential keeps its token fresh: mint at start, renew at a quarter of
    /// the life left, retry a failure after 1, 2, 4 ... 60 s.
    pub fn spawn_renewal(&self) {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(EXCHANGE_TIMEOUT))
            .http_status_as_error(false)
            .max_redirects(0)
            .user_agent("semgate-sidecar")
            .build()
            .into();
        for (name, credential) in self.0.iter() {
            let (name, credential, agent) = (name.clone(), credential.clone(), agent.clone());
            tokio::spawn(async move {
                let mut backoff = Duration::from_secs(1);
                loop {
                    let c = credential.clone();
                    let a = agent.clone();
                    let minted = tokio::task::spawn_blocking(move || c.account.mint(&a, now_ms() / 1000)).await;
                    let wait = match minted {
                        Ok(Ok(token)) => {
                            backoff = Duration::from_secs(1);
                            credential.mints.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            let wait = Duration::from_millis(token.renew_at_ms().saturating_sub(now_ms()).max(1000));
                            *credential.current.lock().unwrap_or_else(|p| p.into_inner()) = Some(token);
                            wait
                        }
                        Ok(Err(e)) => {
                            credential.failures.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            eprintln!("semgate-sidecar: vertex token for `{name}`: {e} (retrying in {backoff:?})");
                            let wait = backoff;
                            backoff = (backoff * 2).min(Duration::from_secs(60));
                            wait
                        }
                        Err(e) => {
                            eprintln!("semgate-sidecar: vertex token for `{name}`: {e}");
                            backoff
                        }
                    };
                    tokio::time::sleep(wait).await;
                }
            });
        }
    }

    /// The current, unexpired token of `name`.
    pub fn current(&self, name: &str, now_ms: u64) -> Option<Token> {
        let c = self.0.get(name)?;
        let token = c.current.lock().unwrap_or_else(|p| p.into_inner()).clone()?;
        (token.expires_ms > now_ms).then_some(token)
    }

    /// Prometheus lines for the credentials.
    pub fn metrics(&self) -> String {
        let mut out = String::new();
        if self.is_empty() {
            return out;
        }
        out.push_str("# TYPE semgate_sidecar_vertex_token_mints_total counter\n");
        for (name, c) in self.0.iter() {
            let n = c.mints.load(std::sync::atomic::Ordering::Relaxed);
            out.push_str(&format!("semgate_sidecar_vertex_token_mints_total{{provider=\"{name}\"}} {n}\n"));
        }
        out.push_str("# TYPE semgate_sidecar_vertex_token_failures_total counter\n");
        for (name, c) in self.0.iter() {
            let n = c.failures.load(std::sync::atomic::Ordering::Relaxed);
            out.push_str(&format!("semgate_sidecar_vertex_token_failures_total{{provider=\"{name}\"}} {n}\n"));
        }
        out
    }
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// `POST /v1/vertex/token` `{"provider": NAME}`: `{"access_token": ..., "expires_in_ms": ...}`,
/// or 404 for a name with no credentials, 503 while no token has been minted.
pub fn routes(credentials: Credentials) -> Router {
    Router::new().route("/v1/vertex/token", post(token)).with_state(credentials)
}

#[derive(Deserialize)]
struct TokenRequest {
    provider: String,
}

async fn token(State(credentials): State<Credentials>, Json(req): Json<TokenRequest>) -> Response {
    let name = req.provider;
    let error = |status: StatusCode, message: String| (status, Json(json!({"error": {"message": message}})));
    if !credentials.0.contains_key(&name) {
        return error(StatusCode::NOT_FOUND, format!("no --vertex-credentials for provider `{name}`")).into_response();
    }
    let now = now_ms();
    match credentials.current(&name, now) {
        Some(t) => Json(json!({"access_token": t.value, "expires_in_ms": t.expires_ms - now})).into_response(),
        None => error(StatusCode::SERVICE_UNAVAILABLE, format!("no token for `{name}` yet (see the sidecar's log)"))
            .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A throwaway 2048-bit key made with the system's openssl for this test run.
    fn test_key_pem() -> Option<String> {
        let out = std::process::Command::new("openssl")
            .args(["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"])
            .output()
            .ok()?;
        out.status.success().then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn key_file(pem: &str) -> String {
        json!({"type": "service_account", "client_email": "captions@proj.iam.gserviceaccount.com",
               "private_key": pem, "private_key_id": "k1", "token_uri": "http://127.0.0.1:1/token"})
        .to_string()
    }

    #[test]
    fn the_assertion_is_an_rs256_jwt_google_can_check() {
        let pem = test_key_pem().expect("openssl makes the test key");
        let account = ServiceAccount::from_json(&key_file(&pem), "test").unwrap();
        let jwt = account.assertion(1_700_000_000).unwrap();
        let parts: Vec<&str> = jwt.split('.').collect();
        assert_eq!(parts.len(), 3);
        let header: serde_json::Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[0]).unwrap()).unwrap();
        let claims: serde_json::Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
        assert_eq!(header, json!({"alg": "RS256", "typ": "JWT", "kid": "k1"}));
        assert_eq!(claims["iss"], "captions@proj.iam.gserviceaccount.com");
        assert_eq!(claims["scope"], SCOPE);
        assert_eq!(claims["aud"], "http://127.0.0.1:1/token");
        assert_eq!(claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap(), 3600);
        let public = ring::signature::UnparsedPublicKey::new(
            &ring::signature::RSA_PKCS1_2048_8192_SHA256,
            account.public_key_der(),
        );
        let signed = format!("{}.{}", parts[0], parts[1]);
        let signature = URL_SAFE_NO_PAD.decode(parts[2]).unwrap();
        assert!(public.verify(signed.as_bytes(), &signature).is_ok());
        assert!(public.verify(b"something else", &signature).is_err());
    }

    #[test]
    fn bad_key_files_are_refused_without_echoing_the_key() {
        let secretish = "-----BEGIN PRIVATE KEY-----\nTUlJQ2VBSUJBREFOQmdrcWhraUc5dzBCQVFFRkFBU0NBbUl3Z2dKZUFnRUFBb0dCQU5vdEFSZWFsS2V5\n-----END PRIVATE KEY-----\n";
        for (text, want) in [
            ("not json".to_string(), "not a service-account key file"),
            (json!({"type": "authorized_user", "client_email": "a@b", "private_key": secretish}).to_string(), "`type`"),
            (json!({"client_email": "a@b", "private_key": "no pem"}).to_string(), "PEM"),
            (json!({"client_email": "a@b", "private_key": secretish}).to_string(), "usable RSA key"),
            (json!({"client_email": "", "private_key": secretish}).to_string(), "`client_email`"),
        ] {
            let e = ServiceAccount::from_json(&text, "sa.json").unwrap_err().to_string();
            assert!(e.contains(want), "{e}");
            assert!(e.starts_with("sa.json: "), "{e}");
            assert!(!e.contains("TUlJQ2VB"), "the key's text never reaches an error: {e}");
        }
    }

    #[test]
    fn a_token_is_renewed_with_a_quarter_of_its_life_left() {
        let t = Token { value: "ya29.x".into(), minted_ms: 1_000_000, expires_ms: 1_000_000 + 3_600_000 };
        assert_eq!(t.renew_at_ms(), 1_000_000 + 2_700_000);
        assert!(!format!("{t:?}").contains("ya29"), "Debug never prints the token");
    }

    #[test]
    fn credentials_are_named_by_provider() {
        for (spec, want) in
            [("vertex", "PROVIDER=FILE"), ("bad name=/x", "not a provider name"), ("v=/nonexistent", "/nonexistent")]
        {
            let e = Credentials::load(&[spec.to_string()]).err().unwrap().to_string();
            assert!(e.contains(want), "{e}");
        }
    }
}
