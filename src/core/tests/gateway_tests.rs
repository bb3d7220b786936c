//! Unit tests of `core::gateway`.

use super::*;
use crate::core::cache::tee::{NotStorable, ResponseTee};

fn config(extra: &str) -> Gateway {
    let base = r#"{"auth":{"keys":[{"key":"sk-demo","tenant":"demo"},{"key":"sk-b","tenant":"team-b"}]},
        "providers":{"openai":{"kind":"openai","keys":[{"env":"OPENAI_API_KEY"}]},
            "anthropic":{"kind":"anthropic","keys":[{"env":"ANTHROPIC_KEY"}]},
            "vertex":{"kind":"vertex","keys":[{"env":"VERTEX_KEY"}],"vertex":{"auth":"express_key"}}},
        "models":{"gpt-*":["openai/*"],"gpt-4o-*":["openai/gpt-4o-2024-08-06"],
            "claude-3-5-sonnet":["anthropic/claude-3-5-sonnet-20241022","vertex/gemini-1.5-pro"]}"#;
    compile(Config::parse(format!("{base}{extra}}}").as_bytes()).unwrap())
}

fn compile(c: Config) -> Gateway {
    // The gateway never reads provider keys (the upstream role does): none are set here.
    Gateway::compile(c, |_| None).unwrap()
}

fn head<'a>(path: &'a str, auth: Option<&'a str>) -> RequestHead<'a> {
    RequestHead { method: "POST", path, authorization: auth, ..Default::default() }
}

fn admitted(c: &Gateway, h: &RequestHead) -> Admitted {
    match admit(c, h) {
        HeadDecision::ReadBody(a) => a,
        other => panic!("{other:?}"),
    }
}

const BODY: &[u8] = br#"{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]}"#;

#[test]
fn the_gateway_routes_without_provider_keys() {
    // Keys belong to the upstream role: the gateway loads with none of them set, and its
    // routing decisions carry no credential.
    let c = config("");
    assert_eq!(c.models.route("gpt-4o").unwrap().cluster, "provider_openai");
}

#[test]
fn models_route_exact_names_before_patterns_and_long_patterns_first() {
    let c = config("");
    let a = admitted(&c, &head("/v1/chat/completions", Some("Bearer sk-demo")));
    let route = |model: &str| {
        let body = format!(r#"{{"model":"{model}","messages":[{{"role":"user","content":"hi"}}]}}"#);
        plan(&c, &a, body.as_bytes()).map(|p| p.upstream)
    };
    let sonnet = route("claude-3-5-sonnet").unwrap();
    assert_eq!((sonnet.cluster.as_str(), sonnet.chain), ("chain_anthropic_vertex", true));
    let mini = route("gpt-4o-mini").unwrap();
    assert_eq!((mini.cluster.as_str(), mini.chain, mini.provider.as_str()), ("provider_openai", false, "openai"));
    assert_eq!(c.models.route("gpt-4o-mini").unwrap().model, "gpt-4o-*");
    assert_eq!(c.models.route("gpt-3.5").unwrap().model, "gpt-*");
    assert_eq!(route("claude-3-haiku").unwrap_err(), GatewayError::UnknownModel("claude-3-haiku".into()));
}

#[test]
fn admission() {
    let c = config("");
    // Every path needs a key; a path the gateway does not serve is refused after that.
    assert_eq!(admit(&c, &head("/v1/models", None)), HeadDecision::Reject(GatewayError::Unauthorized));
    let unknown = GatewayError::UnknownPath { method: "POST".into(), path: "/v1/models".into() };
    assert_eq!(admit(&c, &head("/v1/models", Some("Bearer sk-demo"))), HeadDecision::Reject(unknown));
    for odd in ["/v1/chat/completions/", "/V1/CHAT/COMPLETIONS", "/v1/chat%2Fcompletions", "/v1/chat/completions%20"] {
        assert!(
            matches!(
                admit(&c, &head(odd, Some("Bearer sk-demo"))),
                HeadDecision::Reject(GatewayError::UnknownPath { .. })
            ),
            "{odd}"
        );
    }
    assert_eq!(admit(&c, &head("/v1/chat/completions", None)), HeadDecision::Reject(GatewayError::Unauthorized));
    assert_eq!(
        admit(&c, &head("/v1/chat/completions", Some("Bearer nope"))),
        HeadDecision::Reject(GatewayError::Unauthorized)
    );
    let a = admitted(&c, &head("/v1/chat/completions?x=1", Some("Bearer sk-demo")));
    assert_eq!(a.tenant, "demo");
    assert_eq!(a.path, "/v1/chat/completions");
    assert!(a.has_query);
    let a = admitted(&c, &head("/captioning/v1/chat/completions", Some("Bearer sk-b")));
    assert_eq!(a.tenant, "team-b");
    let get = RequestHead { method: "GET", ..head("/v1/chat/completions", Some("Bearer sk-demo")) };
    assert_eq!(admit(&c, &get), HeadDecision::Reject(GatewayError::MethodNotAllowed("GET".into())));
    let big =
        RequestHead { content_length: Some("999999999999"), ..head("/v1/chat/completions", Some("Bearer sk-demo")) };
    assert!(matches!(admit(&c, &big), HeadDecision::Reject(GatewayError::BodyTooLarge { .. })));
}

#[test]
fn the_tenant_header_never_replaces_the_key() {
    let raw = br#"{"auth":{"tenant_header":"x-tenant","tenant_header_trusted":true,
        "keys":[{"key":"sk-a","tenant":"a","tenants":["shop-1"]},{"key":"sk-b","tenant":"b"}]},
        "providers":{"p":{"kind":"openai","keys":[{"env":"K"}]}},"models":{"*":["p/*"]}}"#;
    let c = compile(Config::parse(raw).unwrap());
    // No key, or a bad key, with the header: 401.
    let h = RequestHead { tenant: Some("shop-1"), ..head("/v1/chat/completions", None) };
    assert_eq!(admit(&c, &h), HeadDecision::Reject(GatewayError::Unauthorized));
    let h = RequestHead { tenant: Some("shop-1"), ..head("/v1/chat/completions", Some("Bearer nope")) };
    assert_eq!(admit(&c, &h), HeadDecision::Reject(GatewayError::Unauthorized));
    // A valid key narrows to what it allows, and nothing else.
    let h = RequestHead { tenant: Some("shop-1"), ..head("/v1/chat/completions", Some("Bearer sk-a")) };
    assert_eq!(admitted(&c, &h).tenant, "a/shop-1");
    let h = RequestHead { tenant: Some("b"), ..head("/v1/chat/completions", Some("Bearer sk-a")) };
    assert!(matches!(admit(&c, &h), HeadDecision::Reject(GatewayError::Forbidden(_))));
    let h = RequestHead { tenant: Some("shop-1"), ..head("/v1/chat/completions", Some("Bearer sk-b")) };
    assert!(matches!(admit(&c, &h), HeadDecision::Reject(GatewayError::Forbidden(_))));
    assert_eq!(admitted(&c, &head("/v1/chat/completions", Some("Bearer sk-b"))).tenant, "b");
    // Without tenant_header configured, a client cannot pick its tenant by header.
    let c = config("");
    let h = RequestHead { tenant: Some("acme"), ..head("/v1/chat/completions", Some("Bearer sk-demo")) };
    assert_eq!(admitted(&c, &h).tenant, "demo");
}

#[test]
fn passthrough_paths_are_relayed_to_the_providers_cluster_and_need_a_client_key() {
    let c = config(r#","passthrough":[{"path_prefix":"/v1/models","provider":"openai"}]"#);
    let get = RequestHead { method: "GET", ..head("/v1/models", Some("Bearer sk-demo")) };
    match admit(&c, &get) {
        HeadDecision::Relay(up) => {
            assert_eq!(up.cluster, "provider_openai");
            assert!(up.relay, "the upstream role keeps a relay's path and sets the key");
        }
        other => panic!("{other:?}"),
    }
    let get = RequestHead { method: "GET", ..head("/v1/models", None) };
    assert_eq!(admit(&c, &get), HeadDecision::Reject(GatewayError::Unauthorized));
    // Only the listed methods.
    assert!(matches!(
        admit(&c, &head("/v1/models", Some("Bearer sk-demo"))),
        HeadDecision::Reject(GatewayError::UnknownPath { .. })
    ));
}

#[test]
fn only_listed_client_headers_go_upstream() {
    let c = config("");
    let names = [
        ":method",
        ":path",
        "authorization",
        "x-api-key",
        "api-key",
        "content-type",
        "openai-organization",
        "openai-project",
        "x-semgate-cluster",
        "x-semgate-cache",
        "accept-encoding",
        "user-agent",
        "cookie",
        "x-envoy-upstream-rq-timeout-ms",
        "traceparent",
    ];
    let dropped = c.headers_to_drop(names.into_iter());
    assert_eq!(
        dropped,
        [
            "authorization",
            "x-api-key",
            "api-key",
            "openai-organization",
            "openai-project",
            "x-semgate-cluster",
            "x-semgate-cache",
            "accept-encoding",
            "cookie",
            "x-envoy-upstream-rq-timeout-ms"
        ]
    );
    let c = config(r#","forward_headers":["openai-beta"]"#);
    assert_eq!(c.headers_to_drop(["openai-beta", "content-type"].into_iter()), ["content-type"]);
}

#[test]
fn an_entry_is_served_only_while_younger_than_the_readers_ttl() {
    assert!(fresh_for(1_000, 10, 10_999));
    assert!(!fresh_for(1_000, 10, 11_000));
    assert!(fresh_for(5_000, 10, 1_000), "a clock step back is not an expiry");
}

#[test]
fn a_query_string_is_not_part_of_the_request() {
    let c = config("");
    let a = admitted(&c, &head("/v1/chat/completions?api-version=1", Some("Bearer sk-demo")));
    let b = admitted(&c, &head("/v1/chat/completions?api-version=2", Some("Bearer sk-demo")));
    // Both forward the provider's path without the query, so they may share an entry.
    assert_eq!(plan(&c, &a, BODY).unwrap().cache, plan(&c, &b, BODY).unwrap().cache);
    assert!(a.has_query && b.has_query);
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
fn plan_routes_by_model() {
    let c = config("");
    let a = admitted(&c, &head("/v1/chat/completions", Some("Bearer sk-demo")));
    let p = plan(&c, &a, BODY).unwrap();
    assert_eq!(p.upstream.cluster, "provider_openai");
    assert!(!p.upstream.chain && !p.upstream.relay);
    assert!(matches!(p.cache, CachePlan::Lookup { ttl_s: 3600, .. }));
    let e = plan(&c, &a, br#"{"model":"claude-3","messages":[{"role":"user","content":"hi"}]}"#).unwrap_err();
    assert_eq!(e, GatewayError::UnknownModel("claude-3".into()));
    // A provider's stored content type is kept only in the gateway's own form.
    let t = ResponseTee::start(200, Some("application/json; x=\"\r\nset-cookie: a\""), None, 1024).unwrap();
    let body = br#"{"choices":[]}"#;
    let mut t = t;
    t.push(body);
    assert_eq!(t.finish().unwrap().content_type, "application/json");
    assert_eq!(e, GatewayError::UnknownModel("claude-3".into()));
}

#[test]
fn tenants_get_different_keys_for_the_same_body() {
    let c = config("");
    let a = admitted(&c, &head("/v1/chat/completions", Some("Bearer sk-demo")));
    let b = admitted(&c, &head("/v1/chat/completions", Some("Bearer sk-b")));
    let ka = plan(&c, &a, BODY).unwrap().cache.store_as().unwrap().0;
    let kb = plan(&c, &b, BODY).unwrap().cache.store_as().unwrap().0;
    assert_ne!(ka, kb);
}

#[test]
fn sampling_heavy_requests_bypass() {
    let c = config("");
    let a = admitted(&c, &head("/v1/chat/completions", Some("Bearer sk-demo")));
    let hot = br#"{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}],"temperature":1.5}"#;
    assert_eq!(plan(&c, &a, hot).unwrap().cache, CachePlan::Bypass(BypassReason::Temperature));
    let many = br#"{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}],"n":3}"#;
    assert_eq!(plan(&c, &a, many).unwrap().cache, CachePlan::Bypass(BypassReason::MultipleChoices));
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
    assert_eq!(plan(&c, &a, BODY).unwrap().cache, CachePlan::Bypass(BypassReason::Disabled));
    let mut h = head("/v1/chat/completions", Some("Bearer sk-demo"));
    h.route_name = Some("captioning");
    let a = admitted(&c, &h);
    assert!(matches!(plan(&c, &a, BODY).unwrap().cache, CachePlan::Lookup { ttl_s: 86400, .. }));
    let a = admitted(&c, &head("/v1/chat/completions", Some("Bearer sk-b")));
    let warm = br#"{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}],"temperature":0.5}"#;
    assert_eq!(plan(&c, &a, warm).unwrap().cache, CachePlan::Bypass(BypassReason::Temperature));
}

#[test]
fn client_bypass_and_refresh() {
    let c = config("");
    let mut h = head("/v1/chat/completions", Some("Bearer sk-demo"));
    h.cache_control = Some("no-store");
    assert_eq!(plan(&c, &admitted(&c, &h), BODY).unwrap().cache, CachePlan::Bypass(BypassReason::Client));
    h.cache_control = Some("no-cache");
    assert!(matches!(plan(&c, &admitted(&c, &h), BODY).unwrap().cache, CachePlan::Refresh { .. }));
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
    let plain = plan(&c, &admitted(&c, &head("/v1/chat/completions", auth)), BODY).unwrap();
    assert_eq!(plain.semantic, SemanticPolicy { enabled: true, threshold: Some(0.9), ttl_s: Some(60) });
    let mini = br#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}"#;
    let other_model = plan(&c, &admitted(&c, &head("/v1/chat/completions", auth)), mini).unwrap();
    assert_eq!(other_model.semantic, SemanticPolicy { enabled: true, threshold: Some(0.8), ttl_s: Some(600) });
    let support = plan(&c, &admitted(&c, &head("/support/v1/chat/completions", auth)), mini).unwrap();
    assert!(!support.semantic.enabled);
    assert!(matches!(support.cache, CachePlan::Lookup { .. }), "the exact layer stays on");
    // A policy cannot turn the layer on when the sidecar is not configured.
    let off = config(r#","policies":[{"match":{},"cache":{"semantic":true}}]"#);
    let p = plan(&off, &admitted(&off, &head("/v1/chat/completions", auth)), BODY).unwrap();
    assert!(!p.semantic.enabled);
}
