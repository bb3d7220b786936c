//! Unit tests of `core::gateway`.

use super::*;

fn config(extra: &str) -> Config {
    let base = r#"{"auth":{"keys":[{"key":"sk-demo","tenant":"demo"},{"key":"sk-b","tenant":"team-b"}]},
        "providers":{"openai":{"cluster":"provider_openai","api_key_env":"OPENAI_API_KEY","authority":"api.openai.com"}},
        "models":[{"match":"gpt-*","provider":"openai"}]"#;
    Config::parse(format!("{base}{extra}}}").as_bytes()).unwrap()
}

fn head<'a>(path: &'a str, auth: Option<&'a str>) -> RequestHead<'a> {
    RequestHead { method: "POST", path, authorization: auth, ..Default::default() }
}

fn admitted(c: &Config, h: &RequestHead) -> Admitted {
    match admit(c, h) {
        HeadDecision::ReadBody(a) => a,
        other => panic!("{other:?}"),
    }
}

const BODY: &[u8] = br#"{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]}"#;

fn keys() -> ProviderKeys {
    [("openai".to_string(), "sk-provider".to_string())].into()
}

#[test]
fn provider_keys_come_from_env_and_missing_ones_fail_at_load() {
    let c = config("");
    let k = resolve_provider_keys(&c, |v| (v == "OPENAI_API_KEY").then(|| "sk-real".to_string())).unwrap();
    assert_eq!(k["openai"], "sk-real");
    let e = resolve_provider_keys(&c, |_| None).unwrap_err();
    assert_eq!(e.path, "providers.openai.api_key_env");
    assert!(resolve_provider_keys(&c, |_| Some("  ".into())).is_err());
}

#[test]
fn admission() {
    let c = config("");
    assert_eq!(admit(&c, &head("/v1/models", None)), HeadDecision::PassThrough);
    assert_eq!(admit(&c, &head("/v1/chat/completions", None)), HeadDecision::Reject(GatewayError::Unauthorized));
    assert_eq!(
        admit(&c, &head("/v1/chat/completions", Some("Bearer nope"))),
        HeadDecision::Reject(GatewayError::Unauthorized)
    );
    let a = admitted(&c, &head("/v1/chat/completions?x=1", Some("Bearer sk-demo")));
    assert_eq!(a.tenant, "demo");
    assert_eq!(a.path, "/v1/chat/completions");
    let a = admitted(&c, &head("/captioning/v1/chat/completions", Some("Bearer sk-b")));
    assert_eq!(a.tenant, "team-b");
    let get = RequestHead { method: "GET", ..head("/v1/chat/completions", Some("Bearer sk-demo")) };
    assert_eq!(admit(&c, &get), HeadDecision::Reject(GatewayError::MethodNotAllowed("GET".into())));
    let big =
        RequestHead { content_length: Some("999999999999"), ..head("/v1/chat/completions", Some("Bearer sk-demo")) };
    assert!(matches!(admit(&c, &big), HeadDecision::Reject(GatewayError::BodyTooLarge { .. })));
}

#[test]
fn tenant_header_overrides_key_when_configured() {
    let c = Config::parse(
        br#"{"auth":{"tenant_header":"x-tenant"},"providers":{"p":{"cluster":"c"}},"models":[{"match":"*","provider":"p"}]}"#,
    )
    .unwrap();
    let h = RequestHead { tenant: Some("acme"), ..head("/v1/chat/completions", None) };
    assert_eq!(admitted(&c, &h).tenant, "acme");
    assert_eq!(admit(&c, &head("/v1/chat/completions", None)), HeadDecision::Reject(GatewayError::Unauthorized));
    // Without tenant_header configured, a client cannot pick its tenant by header.
    let c = config("");
    let h = RequestHead { tenant: Some("acme"), ..head("/v1/chat/completions", Some("Bearer sk-demo")) };
    assert_eq!(admitted(&c, &h).tenant, "demo");
}

#[test]
fn client_directives() {
    assert_eq!(client_directive(Some("no-store"), None), ClientDirective::Bypass);
    assert_eq!(client_directive(Some("max-age=0, No-Store"), None), ClientDirective::Bypass);
    assert_eq!(client_directive(None, Some("bypass")), ClientDirective::Bypass);
    assert_eq!(client_directive(Some("no-cache"), None), ClientDirective::Refresh);
    assert_eq!(client_directive(None, None), ClientDirective::Normal);
}

#[test]
fn plan_routes_by_model_and_sets_provider_key() {
    let c = config("");
    let a = admitted(&c, &head("/v1/chat/completions", Some("Bearer sk-demo")));
    let p = plan(&c, &keys(), &a, BODY).unwrap();
    assert_eq!(p.upstream.cluster, "provider_openai");
    assert_eq!(p.upstream.authorization.as_deref(), Some("Bearer sk-provider"));
    assert_eq!(p.upstream.authority.as_deref(), Some("api.openai.com"));
    assert!(matches!(p.cache, CachePlan::Lookup { ttl_s: 3600, .. }));
    let e = plan(&c, &keys(), &a, br#"{"model":"claude-3","messages":[{"role":"user","content":"hi"}]}"#).unwrap_err();
    assert_eq!(e, GatewayError::UnknownModel("claude-3".into()));
}

#[test]
fn tenants_get_different_keys_for_the_same_body() {
    let c = config("");
    let a = admitted(&c, &head("/v1/chat/completions", Some("Bearer sk-demo")));
    let b = admitted(&c, &head("/v1/chat/completions", Some("Bearer sk-b")));
    let ka = plan(&c, &keys(), &a, BODY).unwrap().cache.store_as().unwrap().0;
    let kb = plan(&c, &keys(), &b, BODY).unwrap().cache.store_as().unwrap().0;
    assert_ne!(ka, kb);
}

#[test]
fn sampling_heavy_requests_bypass() {
    let c = config("");
    let a = admitted(&c, &head("/v1/chat/completions", Some("Bearer sk-demo")));
    let hot = br#"{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}],"temperature":1.5}"#;
    assert_eq!(plan(&c, &keys(), &a, hot).unwrap().cache, CachePlan::Bypass(BypassReason::Temperature));
    let many = br#"{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}],"n":3}"#;
    assert_eq!(plan(&c, &keys(), &a, many).unwrap().cache, CachePlan::Bypass(BypassReason::MultipleChoices));
}

#[test]
fn policies_by_path_prefix_route_and_tenant() {
    let c = config(
        r#","policies":[
            {"match":{"path_prefix":"/suggest/"},"cache":{"enabled":false}},
            {"match":{"route":"captioning"},"cache":{"ttl_s":86400}},
            {"match":{"tenant":"team-b"},"cache":{"max_temperature":0.2}}]"#,
    );
    let a = admitted(&c, &head("/suggest/v1/chat/completions", Some("Bearer sk-demo")));
    assert_eq!(plan(&c, &keys(), &a, BODY).unwrap().cache, CachePlan::Bypass(BypassReason::Disabled));
    let mut h = head("/v1/chat/completions", Some("Bearer sk-demo"));
    h.route_name = Some("captioning");
    let a = admitted(&c, &h);
    assert!(matches!(plan(&c, &keys(), &a, BODY).unwrap().cache, CachePlan::Lookup { ttl_s: 86400, .. }));
    let a = admitted(&c, &head("/v1/chat/completions", Some("Bearer sk-b")));
    let warm = br#"{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}],"temperature":0.5}"#;
    assert_eq!(plan(&c, &keys(), &a, warm).unwrap().cache, CachePlan::Bypass(BypassReason::Temperature));
}

#[test]
fn client_bypass_and_refresh() {
    let c = config("");
    let mut h = head("/v1/chat/completions", Some("Bearer sk-demo"));
    h.cache_control = Some("no-store");
    assert_eq!(plan(&c, &keys(), &admitted(&c, &h), BODY).unwrap().cache, CachePlan::Bypass(BypassReason::Client));
    h.cache_control = Some("no-cache");
    assert!(matches!(plan(&c, &keys(), &admitted(&c, &h), BODY).unwrap().cache, CachePlan::Refresh { .. }));
}

#[test]
fn tee_stores_complete_json_only() {
    let body = br#"{"id":"x","choices":[{"message":{"content":"a"}}]}"#;
    let mut t = ResponseTee::start(200, Some("application/json"), None, 1 << 20).unwrap();
    t.push(&body[..10]);
    t.push(&body[10..]);
    let r = t.finish().unwrap();
    assert_eq!(r.body(), body);
    assert_eq!(ResponseTee::start(503, Some("application/json"), None, 1 << 20).unwrap_err(), NotStorable::Status);
    assert_eq!(ResponseTee::start(200, Some("text/html"), None, 1 << 20).unwrap_err(), NotStorable::ContentType);
    assert_eq!(
        ResponseTee::start(200, Some("application/json"), Some("gzip"), 1 << 20).unwrap_err(),
        NotStorable::Encoded
    );
    let mut t = ResponseTee::start(200, Some("application/json"), None, 1 << 20).unwrap();
    t.push(&body[..10]);
    assert_eq!(t.finish().unwrap_err(), NotStorable::Invalid);
    let mut t = ResponseTee::start(200, Some("application/json"), None, 10).unwrap();
    t.push(body);
    assert_eq!(t.finish().unwrap_err(), NotStorable::TooLarge);
}

#[test]
fn tee_stores_sse_only_when_done() {
    let stream = b"data: {\"choices\":[]}\n\ndata: [DONE]\n\n";
    let mut t = ResponseTee::start(200, Some("text/event-stream; charset=utf-8"), None, 1 << 20).unwrap();
    t.push(&stream[..7]);
    t.push(&stream[7..]);
    let r = t.finish().unwrap();
    assert_eq!(r.chunks.len(), 2);
    assert_eq!(r.body(), stream);
    let mut t = ResponseTee::start(200, Some("text/event-stream"), None, 1 << 20).unwrap();
    t.push(b"data: {\"choices\":[]}\n\n");
    assert_eq!(t.finish().unwrap_err(), NotStorable::Truncated);
    let mut t = ResponseTee::start(200, Some("text/event-stream"), None, 1 << 20).unwrap();
    t.push(b"data: {\"error\":{\"message\":\"overloaded\"}}\n\ndata: [DONE]\n\n");
    assert_eq!(t.finish().unwrap_err(), NotStorable::Invalid);
}

#[test]
fn semantic_settings_per_route_and_per_model() {
    let c = config(
        r#","semantic":{"enabled":true,"threshold":0.8,"ttl_s":600},
        "policies":[
          {"match":{"model":"gpt-4o"},"cache":{"semantic_threshold":0.9,"semantic_ttl_s":60}},
          {"match":{"path_prefix":"/support/"},"cache":{"semantic":false}}
        ]"#,
    );
    let auth = Some("Bearer sk-demo");
    let plain = plan(&c, &keys(), &admitted(&c, &head("/v1/chat/completions", auth)), BODY).unwrap();
    assert_eq!(plain.semantic, SemanticPolicy { enabled: true, threshold: Some(0.9), ttl_s: Some(60) });
    let mini = br#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}"#;
    let other_model = plan(&c, &keys(), &admitted(&c, &head("/v1/chat/completions", auth)), mini).unwrap();
    assert_eq!(other_model.semantic, SemanticPolicy { enabled: true, threshold: Some(0.8), ttl_s: Some(600) });
    let support = plan(&c, &keys(), &admitted(&c, &head("/support/v1/chat/completions", auth)), mini).unwrap();
    assert!(!support.semantic.enabled);
    assert!(matches!(support.cache, CachePlan::Lookup { .. }), "the exact layer stays on");
    // A policy cannot turn the layer on when the sidecar is not configured.
    let off = config(r#","policies":[{"match":{},"cache":{"semantic":true}}]"#);
    let p = plan(&off, &keys(), &admitted(&off, &head("/v1/chat/completions", auth)), BODY).unwrap();
    assert!(!p.semantic.enabled);
}
