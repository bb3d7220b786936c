"""Envoy configs for the benchmark scenarios of bench/run.sh, derived from envoy/envoy.yaml.

usage: envoy_config.py SCENARIO LISTEN_PORT ADMIN_PORT PROVIDER_PORT OUT.json

Every scenario keeps the demo's listener, HTTP connection manager (codec, timeouts) and
per-connection buffer limits, with three changes that apply to all of them alike:
  * ports: the listener, the admin and the provider endpoint are the ones given, on 127.0.0.1;
  * no access log (the demo logs every request to stdout, which would dominate the measurement);
  * Wasm code paths are absolute (Envoy may run from anywhere).
Then per scenario only the route and the HTTP filter chain differ:

  bare      router only; the route goes straight to provider_openai (without the upstream
            filter it carries in the demo) and (standing in for what semgate does) overwrites
            the client's key with the provider's.
  noop      as bare, plus the no-op Wasm filter in the same Wasm filter block (same VM settings)
            as semgate's: the cost of running any Rust proxy-wasm filter.
  semgate   exactly the demo's routes, semgate filter block and provider clusters: a miss runs
            both roles, the gateway filter and the upstream filter on provider_openai.
  semgate_budget  as semgate, with the client key a virtual key (budget, RPM, TPM).
  direct    envoy.filters.http.buffer reads the whole body, then the route answers with a static
            direct_response (200, ~300 B JSON): the ceiling for a local reply.
"""

import copy
import json
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "envoy/envoy.yaml"
SEMGATE_WASM = ROOT / "target/wasm32-wasip1/release/semgate.wasm"
NOOP_WASM = ROOT / "target/wasm32-wasip1/release/semgate_noop_filter.wasm"
PROVIDER_KEY = "sk-fake-provider"

# ~300 B, shaped like a chat completion.
DIRECT_BODY = json.dumps({
    "id": "chatcmpl-direct",
    "object": "chat.completion",
    "created": 1700000000,
    "model": "gpt-4o-mini",
    "choices": [{
        "index": 0,
        "message": {"role": "assistant", "content": "A static answer from Envoy's direct_response, used as the benchmark's ceiling for a local reply."},
        "finish_reason": "stop",
    }],
    "usage": {"prompt_tokens": 480, "completion_tokens": 17, "total_tokens": 497},
}, separators=(",", ":"))


def find_hcm(doc):
    [listener] = doc["static_resources"]["listeners"]
    [chain] = listener["filter_chains"]
    [hcm] = [f for f in chain["filters"] if f["name"] == "envoy.filters.network.http_connection_manager"]
    return listener, hcm["typed_config"]


def find_filter(http_filters, name, root_id=None):
    for f in http_filters:
        if f["name"] == name and (root_id is None or f["typed_config"]["config"].get("root_id") == root_id):
            return f
    raise KeyError(f"no {name} ({root_id}) filter in {DEMO}")


def render(scenario, listen_port, admin_port, provider_port):
    doc = yaml.safe_load(DEMO.read_text())
    listener, hcm = find_hcm(doc)
    listener["address"]["socket_address"].update(address="127.0.0.1", port_value=listen_port)
    doc["admin"]["address"]["socket_address"].update(address="127.0.0.1", port_value=admin_port)
    for cluster in doc["static_resources"]["clusters"]:
        for ep in cluster.get("load_assignment", {}).get("endpoints", []):
            for lb in ep["lb_endpoints"]:
                lb["endpoint"]["address"]["socket_address"].update(address="127.0.0.1", port_value=provider_port)
    hcm.pop("access_log", None)

    demo_filters = hcm["http_filters"]
    semgate = find_filter(demo_filters, "envoy.filters.http.wasm", "semgate")
    semgate["typed_config"]["config"]["vm_config"]["code"]["local"]["filename"] = str(SEMGATE_WASM)
    # The demo reads its keys from Envoy's environment; the benchmark names them inline.
    semgate["typed_config"]["config"]["vm_config"]["environment_variables"] = {
        "key_values": {"SEMGATE_OPENAI_KEY": PROVIDER_KEY, "SEMGATE_SIDECAR_TOKEN": "bench-token-unused-0000"}}
    # The demo's provider chain (not benchmarked here): its upstream role needs its keys to load.
    # (The YAML shares one vm_config between clusters: collect every variable before replacing.)
    upstream_vms = []
    for cluster in doc["static_resources"]["clusters"]:
        opts = cluster.get("typed_extension_protocol_options", {}).get("envoy.extensions.upstreams.http.v3.HttpProtocolOptions", {})
        for f in opts.get("http_filters", []):
            if f["name"] == "envoy.filters.http.wasm":
                upstream_vms.append(f["typed_config"]["config"]["vm_config"])
    variables = {k for vm in upstream_vms for k in vm.get("environment_variables", {}).get("host_env_keys", [])}
    for vm in upstream_vms:
        vm["code"]["local"]["filename"] = str(SEMGATE_WASM)
        vm["environment_variables"] = {"key_values": {k: PROVIDER_KEY for k in sorted(variables)}}
    # The benchmark measures the exact layer: no sidecar runs, so layer 2 is off.
    conf = semgate["typed_config"]["config"]["configuration"]
    filter_cfg = json.loads(conf["value"])
    filter_cfg["semantic"] = {"enabled": False}
    conf["value"] = json.dumps(filter_cfg)
    router = find_filter(demo_filters, "envoy.filters.http.router")
    vhost = hcm["route_config"]["virtual_hosts"][0]
    [chat_route] = [r for r in vhost["routes"] if r.get("name") == "chat"]
    timeout = chat_route["route"].get("timeout", "120s")

    straight_route = {
        "name": "chat",
        "match": {"prefix": "/"},
        "route": {"cluster": "provider_openai", "timeout": timeout},
        "request_headers_to_add": [{
            "header": {"key": "authorization", "value": f"Bearer {PROVIDER_KEY}"},
            "append_action": "OVERWRITE_IF_EXISTS_OR_ADD",
        }],
    }

    if scenario in ("bare", "noop"):
        # The route goes straight to the provider: no upstream role either.
        openai = next(c for c in doc["static_resources"]["clusters"] if c["name"] == "provider_openai")
        openai.pop("typed_extension_protocol_options", None)
    if scenario == "bare":
        vhost["routes"] = [straight_route]
        hcm["http_filters"] = [router]
    elif scenario == "noop":
        noop = copy.deepcopy(semgate)
        cfg = noop["typed_config"]["config"]
        cfg["name"] = cfg["root_id"] = "noop"
        cfg.pop("configuration", None)
        cfg["vm_config"]["vm_id"] = "noop"
        cfg["vm_config"]["code"]["local"]["filename"] = str(NOOP_WASM)
        cfg["vm_config"].pop("environment_variables", None)
        vhost["routes"] = [straight_route]
        hcm["http_filters"] = [noop, router]
    elif scenario == "semgate":
        pass  # the demo's routes and filters, unchanged
    elif scenario == "semgate_budget":
        # The same, with the benchmark's key a virtual key whose budget and limits never run
        # out: every request reserves, settles and counts against RPM/TPM.
        filter_cfg = json.loads(conf["value"])
        demo_key = filter_cfg["auth"]["keys"][0]["key_sha256"]
        filter_cfg["auth"]["keys"] = []
        filter_cfg["virtual_keys"] = [{"id": "bench", "key_sha256": demo_key, "team": "bench",
                                       "budget": {"usd": 1000000, "period": "monthly"},
                                       "rpm": 100000000, "tpm": 10000000000}]
        conf["value"] = json.dumps(filter_cfg)
    elif scenario == "direct":
        vhost["routes"] = [{
            "name": "direct",
            "match": {"prefix": "/"},
            "direct_response": {"status": 200, "body": {"inline_string": DIRECT_BODY}},
            "response_headers_to_add": [{
                "header": {"key": "content-type", "value": "application/json"},
                "append_action": "OVERWRITE_IF_EXISTS_OR_ADD",
            }],
        }]
        hcm["http_filters"] = [
            {
                "name": "envoy.filters.http.buffer",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.http.buffer.v3.Buffer",
                    "max_request_bytes": 1048576,
                },
            },
            router,
        ]
    else:
        raise SystemExit(f"unknown scenario {scenario!r}: bare, noop, semgate, semgate_budget or direct")
    return doc


def main():
    if len(sys.argv) != 6:
        raise SystemExit(__doc__.split("\n\n")[1])
    scenario, listen_port, admin_port, provider_port, out = sys.argv[1:]
    doc = render(scenario, int(listen_port), int(admin_port), int(provider_port))
    Path(out).write_text(json.dumps(doc, indent=1) + "\n")


if __name__ == "__main__":
    main()
