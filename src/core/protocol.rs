//! The sidecar protocol, defined once: the filter serializes these types into its callouts and
//! parses the answers with them, and the sidecar (`semgate-sidecar`, which depends on this
//! crate) uses the same types for its `/v1/lookup` and `/v1/store` handlers.
//!
//! `response` is opaque to the sidecar (it stores and returns it as JSON), so the types are
//! generic over it: the sidecar keeps a `serde_json::Value`, the filter reads and writes a
//! `StoredResponse`. Optional fields are omitted when unset, so the sidecar's defaults apply.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// `POST /v1/lookup`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LookupRequest {
    pub scope: String,
    /// The filter's exact-cache key (hex): a live entry of the shared exact tier under it
    /// answers before anything is embedded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    pub text: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<f32>,
    /// `false` turns the guard off for this lookup (evaluation, or an operator's choice).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guard: Option<bool>,
    /// How long the caller waits for the answer (ms from when the sidecar reads the request):
    /// a lookup that cannot be answered in time is answered at once as a miss with `shed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline_ms: Option<u64>,
}

/// The answer to `/v1/lookup`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LookupResponse<R = Value> {
    #[serde(default)]
    pub hit: bool,
    /// `exact` (the shared exact tier, by key) or `semantic`; absent on a miss.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tier: Option<String>,
    #[serde(default)]
    pub score: f32,
    /// When the answer was stored and until when it lives (ms since the epoch), so a filter
    /// that copies a shared exact hit into its own cache keeps the original expiry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entry_id: Option<u64>,
    #[serde(default = "none", skip_serializing_if = "Option::is_none")]
    pub response: Option<R>,
    /// Why the guard refused the candidates above the threshold, nearest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub guard_rejected: Vec<String>,
    /// A miss because the sidecar could not answer within the deadline (overloaded).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub shed: bool,
}

/// `POST /v1/store` (answered 204).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreRequest<R = Value> {
    pub scope: String,
    /// The filter's exact-cache key (hex): also stored in the shared exact tier.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    pub text: String,
    /// `{status, headers: [[name, value]], body_b64, stream}`: opaque to the sidecar.
    pub response: R,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_s: Option<u64>,
}

/// A stored answer as the filter writes it and reads it back.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredResponse {
    #[serde(default = "ok")]
    pub status: u16,
    /// `[[name, value]]`; the filter writes only `content-type`.
    #[serde(default)]
    pub headers: Vec<(String, String)>,
    pub body_b64: String,
    #[serde(default)]
    pub stream: bool,
}

fn none<R>() -> Option<R> {
    None
}

fn ok() -> u16 {
    200
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn optional_fields_are_omitted_so_the_sidecar_defaults_apply() {
        let req = LookupRequest {
            scope: "s".into(),
            key: None,
            text: "t".into(),
            threshold: None,
            guard: Some(true),
            deadline_ms: None,
        };
        assert_eq!(serde_json::to_value(&req).unwrap(), json!({"scope": "s", "text": "t", "guard": true}));
        let with = LookupRequest { key: Some("ab".into()), threshold: Some(0.9), ..req };
        // An f32 is written in its shortest decimal form: the wire says 0.9.
        let wire: Value = serde_json::from_slice(&serde_json::to_vec(&with).unwrap()).unwrap();
        assert_eq!(wire["threshold"], json!(0.9));
        assert!(serde_json::from_value::<LookupRequest>(json!({"scope": "s", "text": "t", "x": 1})).is_err());
    }

    #[test]
    fn the_filter_reads_what_the_sidecar_writes() {
        let stored = StoredResponse {
            status: 200,
            headers: vec![("content-type".into(), "application/json".into())],
            body_b64: "e30=".into(),
            stream: false,
        };
        let sidecar: LookupResponse = LookupResponse {
            hit: true,
            tier: Some("semantic".into()),
            score: 0.93,
            created_ms: Some(1),
            expires_ms: Some(2),
            entry_id: Some(5),
            response: Some(serde_json::to_value(&stored).unwrap()),
            guard_rejected: vec![],
            shed: false,
        };
        let wire = serde_json::to_vec(&sidecar).unwrap();
        let filter: LookupResponse<StoredResponse> = serde_json::from_slice(&wire).unwrap();
        assert_eq!(filter.response, Some(stored));
        assert_eq!(filter.score, 0.93);
        let miss: LookupResponse<StoredResponse> = serde_json::from_slice(br#"{"hit":false,"score":0.2}"#).unwrap();
        assert!(!miss.hit && miss.response.is_none());
    }
}
