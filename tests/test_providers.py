"""Provider chains through a real Envoy 1.40: the gateway routes `claude-3-5-sonnet` to the
aggregate cluster of the chain Anthropic -> Vertex (written by `semgate-config envoy`), and
the same semgate.wasm, as an upstream filter of that cluster, speaks each provider's API once
per attempt. Two fake providers play Anthropic (primary) and Vertex (fallback)."""

import json
import subprocess
import uuid

import pytest
import requests

from conftest import gateway_test_config
from harness import PROVIDER_KEY, ROOT, WASM, Envoy, FakeProvider, free_port, render_envoy_config, sse_events, stream_content

SEMGATE_CONFIG = ROOT / "target/release/semgate-config"
MODEL = "claude-3-5-sonnet"


def upstream_config(primary, fallback):
    return {
        "providers": {
            "anthropic": {"kind": "anthropic", "address": f"127.0.0.1:{primary.port}", "tls": False,
                          "keys": [{"env": "ANTHROPIC_KEY_PRIMARY"}, {"env": "ANTHROPIC_KEY_BACKUP"}]},
            "vertex": {"kind": "vertex", "address": f"127.0.0.1:{fallback.port}", "tls": False,
                       "keys": [{"env": "VERTEX_EXPRESS_KEY"}], "vertex": {"auth": "express_key"}},
        },
        "models": {MODEL: ["anthropic/claude-3-5-sonnet-20241022", "vertex/gemini-1.5-pro"]},
        "fallback": {"per_attempt_timeout_ms": 2000, "key_cooldown_s": 60,
                     "ejection": {"consecutive_5xx": 2, "interval_ms": 1000, "base_ejection_ms": 30000,
                                  "max_ejection_percent": 100}},
    }


@pytest.fixture(scope="module")
def providers():
    primary, fallback = FakeProvider(), FakeProvider()
    yield primary, fallback
    primary.stop()
    fallback.stop()


@pytest.fixture(scope="module")
def chain(providers, tmp_path_factory):
    primary, fallback = providers
    if not SEMGATE_CONFIG.exists():
        pytest.fail(f"{SEMGATE_CONFIG} is missing: run `make build`")
    cfg_file = tmp_path_factory.mktemp("chain") / "filter.json"
    cfg_file.write_text(json.dumps(upstream_config(primary, fallback)))
    out = subprocess.run([str(SEMGATE_CONFIG), "envoy", "--filter-config", str(cfg_file), "--format", "json",
                          "--wasm", str(WASM)], capture_output=True, text=True, check=True)
    generated = json.loads(out.stdout)
    cfg = gateway_test_config()
    cfg["providers"]["claude"] = {"cluster": "chain_anthropic_vertex", "chain": True}
    cfg["models"].insert(0, {"match": MODEL, "provider": "claude"})
    doc = render_envoy_config(primary.port, free_port(), free_port(), cfg)
    doc["static_resources"]["clusters"] += generated["clusters"]
    routes = doc["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]["route_config"]["virtual_hosts"][0]["routes"]
    for r in routes:
        if "cluster_header" in r.get("route", {}):
            r["route"]["retry_policy"] = generated["route_retry_policy"]
    keys = {"ANTHROPIC_KEY_PRIMARY": PROVIDER_KEY, "ANTHROPIC_KEY_BACKUP": PROVIDER_KEY, "VERTEX_EXPRESS_KEY": PROVIDER_KEY}
    envoy = Envoy(primary, doc=doc, env=keys)
    yield envoy
    envoy.stop()


@pytest.fixture(autouse=True)
def _healthy(providers):
    for p in providers:
        p.control(fail_fraction=0.0, drop_fraction=0.0, latency_ms=0)


def ask(envoy, text, **extra):
    return envoy.chat({"model": MODEL, "messages": [{"role": "system", "content": "Be brief."},
                                                   {"role": "user", "content": text}], **extra})


def test_the_primary_answers_in_its_own_api_and_the_client_gets_openai_json(chain, providers):
    primary, fallback = providers
    before = primary.stats().get("anthropic_requests", 0)
    r = ask(chain, f"Caption a red leather handbag {uuid.uuid4().hex[:6]}")
    assert r.status_code == 200, r.text
    assert r.headers["x-semgate-provider"] == "anthropic"
    assert r.headers["x-semgate-upstream-model"] == "claude-3-5-sonnet-20241022"
    body = r.json()
    # Like OpenAI, the answer names the dated model that produced it.
    assert body["object"] == "chat.completion" and body["model"] == "claude-3-5-sonnet-20241022"
    assert body["choices"][0]["message"]["content"]
    assert body["usage"]["total_tokens"] > 0
    assert primary.stats()["anthropic_requests"] == before + 1
    assert primary.stats()["last_authorization"] != "Bearer sk-demo"


def test_a_failing_primary_falls_back_and_no_client_sees_an_error(chain, providers):
    primary, fallback = providers
    primary.control(fail_status=503, fail_fraction=1.0)
    started = primary.started()
    answered_by = []
    for i in range(20):
        r = ask(chain, f"fallback {i} {uuid.uuid4().hex[:6]}")
        assert r.status_code == 200, r.text
        assert r.json()["choices"][0]["message"]["content"]
        answered_by.append(r.headers["x-semgate-provider"])
    assert set(answered_by) == {"vertex"}
    # Outlier detection ejects the primary after two 5xx: later requests skip it.
    assert primary.started() - started <= 3, primary.started() - started
    assert fallback.stats().get("gemini_requests", 0) >= 20


def test_a_fallback_answer_is_cached_for_the_request(chain, providers):
    primary, _ = providers
    primary.control(fail_status=500, fail_fraction=1.0)
    text = f"cache the fallback {uuid.uuid4().hex}"
    first = ask(chain, text)
    assert first.status_code == 200 and first.headers["x-semgate-cache"] == "miss"
    second = ask(chain, text)
    assert second.headers["x-semgate-cache"] == "hit-exact"
    assert second.json()["choices"][0]["message"]["content"] == first.json()["choices"][0]["message"]["content"]


def test_a_stream_through_anthropic_is_openai_sse(chain, providers):
    r = ask(chain, f"stream a haiku {uuid.uuid4().hex[:6]}", stream=True)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/event-stream")
    events = sse_events(r.content)
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert stream_content(r.content)
