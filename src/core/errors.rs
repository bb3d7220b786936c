//! Gateway errors as values, and the one place they become OpenAI-style JSON bodies.

use serde_json::json;

/// Everything the gateway can refuse a client for. The host turns it into a local reply
/// with `status()` and `to_json()`; nothing else writes error bodies.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum GatewayError {
    #[error("request body is not valid JSON: {0}")]
    InvalidJson(String),
    #[error("{message}")]
    InvalidRequest { message: String, param: Option<String> },
    #[error("request body of {size} bytes exceeds this gateway's limit of {limit} bytes")]
    BodyTooLarge { size: u64, limit: u64 },
    #[error("method {0} is not allowed here; use POST")]
    MethodNotAllowed(String),
    #[error("missing or unknown API key: send `Authorization: Bearer <key>` with a key this gateway knows")]
    Unauthorized,
    #[error("model `{0}` is not served by this gateway")]
    UnknownModel(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("this gateway serves no {method} {path}")]
    UnknownPath { method: String, path: String },
    /// The gateway itself failed (a host call refused): never the client's fault.
    #[error("the gateway could not process this request: {0}")]
    Internal(String),
    /// A key's requests- or tokens-per-minute limit; `headers` are the `x-ratelimit-*` ones.
    #[error("rate limit reached for {kind} per minute on this key; retry after {retry_after_s}s")]
    RateLimited { kind: &'static str, retry_after_s: u64, headers: Vec<(&'static str, String)> },
    /// A budget (key, team or end customer) has no room for this request.
    #[error("{message}")]
    BudgetExceeded { message: String, retry_after_s: u64 },
}

impl GatewayError {
    pub fn invalid(message: impl Into<String>, param: impl Into<String>) -> Self {
        GatewayError::InvalidRequest { message: message.into(), param: Some(param.into()) }
    }

    pub fn status(&self) -> u16 {
        match self {
            GatewayError::InvalidJson(_) | GatewayError::InvalidRequest { .. } => 400,
            GatewayError::BodyTooLarge { .. } => 413,
            GatewayError::MethodNotAllowed(_) => 405,
            GatewayError::Unauthorized => 401,
            GatewayError::UnknownModel(_) => 404,
            GatewayError::Forbidden(_) => 403,
            GatewayError::UnknownPath { .. } => 404,
            GatewayError::Internal(_) => 500,
            GatewayError::RateLimited { .. } | GatewayError::BudgetExceeded { .. } => 429,
        }
    }

    /// Headers the refusal carries besides its content type: `retry-after`, and a rate
    /// limit's `x-ratelimit-*`.
    pub fn headers(&self) -> Vec<(&'static str, String)> {
        match self {
            GatewayError::RateLimited { retry_after_s, headers, .. } => {
                let mut h = headers.clone();
                h.push(("retry-after", retry_after_s.to_string()));
                h
            }
            GatewayError::BudgetExceeded { retry_after_s, .. } => vec![("retry-after", retry_after_s.to_string())],
            _ => Vec::new(),
        }
    }

    fn kind(&self) -> (&'static str, &'static str) {
        match self {
            GatewayError::InvalidJson(_) => ("invalid_request_error", "invalid_json"),
            GatewayError::InvalidRequest { .. } => ("invalid_request_error", "invalid_request"),
            GatewayError::BodyTooLarge { .. } => ("invalid_request_error", "request_too_large"),
            GatewayError::MethodNotAllowed(_) => ("invalid_request_error", "method_not_allowed"),
            GatewayError::Unauthorized => ("authentication_error", "invalid_api_key"),
            GatewayError::UnknownModel(_) => ("invalid_request_error", "model_not_found"),
            GatewayError::Forbidden(_) => ("permission_error", "permission_denied"),
            GatewayError::UnknownPath { .. } => ("invalid_request_error", "unknown_url"),
            GatewayError::Internal(_) => ("server_error", "gateway_error"),
            GatewayError::RateLimited { kind, .. } => (kind, "rate_limit_exceeded"),
            GatewayError::BudgetExceeded { .. } => ("budget_exceeded", "budget_exceeded"),
        }
    }

    /// `{"error":{"message","type","param","code"}}`, the shape OpenAI SDKs parse.
    pub fn to_json(&self) -> Vec<u8> {
        let (kind, code) = self.kind();
        let param = match self {
            GatewayError::InvalidRequest { param, .. } => param.clone(),
            GatewayError::UnknownModel(_) => Some("model".to_string()),
            _ => None,
        };
        let body = json!({"error": {"message": self.to_string(), "type": kind, "param": param, "code": code}});
        body.to_string().into_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_render_openai_shape_with_status() {
        let e = GatewayError::invalid("`messages` must be a non-empty array", "messages");
        assert_eq!(e.status(), 400);
        let v: serde_json::Value = serde_json::from_slice(&e.to_json()).unwrap();
        assert_eq!(v["error"]["type"], "invalid_request_error");
        assert_eq!(v["error"]["param"], "messages");
        assert_eq!(v["error"]["message"], "`messages` must be a non-empty array");

        let e = GatewayError::BodyTooLarge { size: 10, limit: 5 };
        assert_eq!(e.status(), 413);
        let v: serde_json::Value = serde_json::from_slice(&e.to_json()).unwrap();
        assert_eq!(v["error"]["code"], "request_too_large");
        assert_eq!(GatewayError::Unauthorized.status(), 401);
        assert_eq!(GatewayError::UnknownModel("x".into()).status(), 404);
        assert_eq!(GatewayError::Forbidden("x".into()).status(), 403);
        let e = GatewayError::UnknownPath { method: "GET".into(), path: "/v1/models".into() };
        assert_eq!(e.status(), 404);
        let e = GatewayError::Internal("the request body could not be read".into());
        assert_eq!(e.status(), 500);
        let v: serde_json::Value = serde_json::from_slice(&e.to_json()).unwrap();
        assert_eq!(v["error"]["type"], "server_error");
    }
}
