"""Provider chains through a real Envoy 1.40, with the shipped demo config: the gateway routes
`claude-3-5-sonnet` to the aggregate cluster of the chain Anthropic -> Vertex, and
the same semgate.wasm, as an upstream filter of that cluster, speaks each provider's API once
per attempt. Two fake providers play Anthropic (primary) and Vertex (fallback)."""

import json
import re
import subprocess
import time
import uuid

import pytest
import requests

from conftest import gateway_test_config
import yaml

from harness import (ROOT, Envoy, FakeProvider, filter_config, free_port, render_envoy_config, sse_events, stream_content,
                     upstream_filters)

SEMGATE_CONFIG = ROOT / "target/release/semgate-config"
MODEL = "claude-3-5-sonnet"


@pytest.fixture(scope="module")
def providers():
    primary, fallback = FakeProvider(), FakeProvider()
    yield primary, fallback
    primary.stop()
    fallback.stop()


def set_port(doc, cluster_name, port):
    """Every endpoint (one per key) of a provider's cluster on `port`."""
    for c in doc["static_resources"]["clusters"]:
        if c["name"] == cluster_name:
            for group in c["load_assignment"]["endpoints"]:
                for lb in group["lb_endpoints"]:
                    lb["endpoint"]["address"]["socket_address"]["port_value"] = port


@pytest.fixture(scope="module")
def chain(providers):
    """The shipped demo config (its chain of Anthropic then Vertex), with the two fakes."""
    primary, fallback = providers
    doc = render_envoy_config(primary.port, free_port(), free_port(), gateway_test_config())
    set_port(doc, "provider_anthropic", primary.port)
    set_port(doc, "provider_vertex", fallback.port)
    envoy = Envoy(primary, doc=doc)
    yield envoy
    envoy.stop()


@pytest.mark.parametrize("shipped", ["envoy/envoy.yaml", "envoy/production.yaml"])
def test_the_shipped_configs_pass_semgate_config_check(tmp_path, shipped):
    doc = yaml.safe_load((ROOT / shipped).read_text())
    cfg = tmp_path / "semgate.json"
    cfg.write_text(json.dumps(filter_config(doc)))
    # Both roles run with the one configuration.
    for f in upstream_filters(doc):
        assert json.loads(f["typed_config"]["config"]["configuration"]["value"]) == filter_config(doc)
    out = subprocess.run([str(SEMGATE_CONFIG), "check", "--filter-config", str(cfg), "--envoy", str(ROOT / shipped)],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


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


def own_chain(providers, cfg=None, **env):
    """A gateway of its own: its circuit breaker state starts clean."""
    primary, fallback = providers
    doc = render_envoy_config(primary.port, free_port(), free_port(), cfg or gateway_test_config())
    set_port(doc, "provider_anthropic", primary.port)
    set_port(doc, "provider_vertex", fallback.port)
    return Envoy(primary, doc=doc, env=env)


def test_when_every_provider_fails_the_client_gets_one_502_naming_the_attempts(providers):
    primary, fallback = providers
    primary.control(fail_status=503, fail_fraction=1.0)
    fallback.control(fail_status=500, fail_fraction=1.0)
    envoy = own_chain(providers)
    try:
        text = f"all down {uuid.uuid4().hex[:6]}"
        for attempt in range(2):
            r = ask(envoy, text)
            assert r.status_code == 502, r.text
            assert r.headers["content-type"] == "application/json"
            assert r.headers.get("x-semgate-cache") != "hit-exact", "a failure is never cached"
            err = r.json()["error"]
            assert err["message"] and err["type"] and err["code"] == "all_providers_failed"
            assert len(err["attempts"]) == 3 and all(a["status"] in (500, 503) for a in err["attempts"]), r.text
            if attempt == 0:
                # Every provider of the chain was tried once, in order.
                assert [a["provider"] for a in err["attempts"]] == ["anthropic", "anthropic", "vertex"], r.text
            # Afterwards every key cluster may be ejected: Envoy's panic routing then starts
            # from the chain's first provider again (docs/providers.md), still one 502.
            assert "sk-fake" not in r.text and "Answer" not in r.text
        assert envoy.stat("semgate_chain_failures_total") == 2
    finally:
        envoy.stop()


def test_a_stream_falls_back_to_vertex_as_a_stream_the_openai_sdk_reads(chain, providers):
    openai = pytest.importorskip("openai")
    primary, _ = providers
    primary.control(fail_status=503, fail_fraction=1.0)
    client = openai.OpenAI(base_url=chain.url + "/v1", api_key="sk-demo", max_retries=0)
    stream = client.chat.completions.create(
        model=MODEL, stream=True, stream_options={"include_usage": True},
        messages=[{"role": "user", "content": f"stream through the fallback {uuid.uuid4().hex[:6]}"}])
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text
    assert any(c.usage and c.usage.total_tokens > 0 for c in chunks)
    assert any(c.choices and c.choices[0].finish_reason == "stop" for c in chunks)


def test_a_refused_key_is_retried_with_the_backup_key_before_the_chain_moves_on(providers):
    from harness import PROVIDER_KEY
    # The primary key is revoked: Anthropic answers 401, and the same request is retried on
    # Anthropic with the backup key (its own cluster, next in the chain) before Vertex.
    primary, fallback = providers
    envoy = own_chain(providers, ANTHROPIC_KEY_PRIMARY="sk-revoked", ANTHROPIC_KEY_BACKUP=PROVIDER_KEY)
    try:
        vertex_before = fallback.stats().get("gemini_requests", 0)
        first = ask(envoy, f"key one {uuid.uuid4().hex[:6]}")
        assert first.status_code == 200, first.text
        assert (first.headers["x-semgate-provider"], first.headers["x-semgate-attempts"]) == ("anthropic", "2")
        assert "sk-revoked" not in first.text
        # The refused key's cluster is ejected: the next requests go straight to the backup key.
        started = primary.started()
        answered = [ask(envoy, f"key two {i} {uuid.uuid4().hex[:6]}") for i in range(4)]
        assert [(r.headers["x-semgate-provider"], r.headers["x-semgate-attempts"]) for r in answered] == [("anthropic", "1")] * 4
        assert primary.started() == started + 4
        assert fallback.stats().get("gemini_requests", 0) == vertex_before
        assert envoy.stat("cluster.provider_anthropic.outlier_detection.ejections_active") == 1
    finally:
        envoy.stop()


def chain_config(**fallback):
    cfg = gateway_test_config()
    cfg["fallback"] = {**cfg["fallback"], **fallback}
    return cfg


def model_stat(envoy, name, provider, model=MODEL):
    try:
        return envoy.stat(f"{name}.provider.={provider};.model.={model};")
    except KeyError:
        return 0


# Each way the primary can be down. A 429 carries no retry-after; `timeout` hangs past the
# per-attempt timeout (300 ms in this gateway's configuration).
PRIMARY_DOWN = {
    "500": {"fail_status": 500, "fail_fraction": 1.0},
    "503": {"fail_status": 503, "fail_fraction": 1.0},
    "429": {"fail_status": 429, "fail_fraction": 1.0},
    "drop": {"drop_fraction": 1.0},
    "timeout": {"latency_ms": 2000},
}


@pytest.mark.parametrize("mode", PRIMARY_DOWN)
def test_a_primary_down_is_invisible_to_clients_and_tried_at_most_once_per_key(providers, mode):
    """200 requests with the primary down: every one is answered by the fallback, and the
    primary (two keys, consecutive_5xx: 1, a 60 s ejection) sees at most one attempt per key."""
    primary, fallback = providers
    envoy = own_chain(providers, chain_config(per_attempt_timeout_ms=300,
                                              ejection={"consecutive_5xx": 1, "interval_ms": 1000, "base_ejection_ms": 60000}))
    try:
        primary.control(**PRIMARY_DOWN[mode])
        started = primary.started()
        statuses, answered_by = [], set()
        first = None
        for i in range(200):
            r = ask(envoy, f"down {mode} {i} {uuid.uuid4().hex[:8]}")
            statuses.append(r.status_code)
            answered_by.add(r.headers.get("x-semgate-provider"))
            first = first or r
        assert set(statuses) == {200}, [s for s in statuses if s != 200][:5]
        assert answered_by == {"vertex"}
        # The first request tried both Anthropic keys, then Vertex answered.
        assert first.headers["x-semgate-attempts"] == "3", dict(first.headers)
        assert primary.started() - started <= 2, primary.started() - started
        assert model_stat(envoy, "semgate_provider_fallbacks_total", "vertex") == 200
        assert model_stat(envoy, "semgate_provider_attempts_total", "anthropic") == 2
        if mode in ("500", "503", "429"):
            assert model_stat(envoy, "semgate_provider_attempt_failures_total", "anthropic") == 2
        assert 'semgate_provider_fallbacks_total{provider="vertex",model="claude-3-5-sonnet"} 200' in envoy.prometheus()
        # Envoy's own view of the same: retries on the chain, both key clusters ejected.
        assert envoy.stat("cluster.chain_anthropic_vertex.upstream_rq_retry") >= 2
        for cluster in ("provider_anthropic", "provider_anthropic_key2"):
            assert envoy.stat(f"cluster.{cluster}.outlier_detection.ejections_active") == 1
    finally:
        primary.control(fail_fraction=0.0, drop_fraction=0.0, latency_ms=0)
        envoy.stop()


def test_the_circuit_opens_then_closes_after_the_ejection_period(providers):
    primary, fallback = providers
    envoy = own_chain(providers, chain_config(ejection={"consecutive_5xx": 1, "interval_ms": 100, "base_ejection_ms": 1000}))
    try:
        primary.control(fail_status=503, fail_fraction=1.0)
        for i in range(3):
            assert ask(envoy, f"open {i} {uuid.uuid4().hex}").status_code == 200
        # Open: the primary sees nothing while both of its keys are ejected.
        started = primary.started()
        answered = [ask(envoy, f"open more {i} {uuid.uuid4().hex}").headers["x-semgate-provider"] for i in range(10)]
        assert answered == ["vertex"] * 10 and primary.started() == started
        # The primary recovers; once the ejection period ends, traffic returns to it.
        primary.control(fail_fraction=0.0)
        deadline = time.monotonic() + 20
        back = None
        while time.monotonic() < deadline:
            r = ask(envoy, f"closed {uuid.uuid4().hex}")
            assert r.status_code == 200, r.text
            if r.headers["x-semgate-provider"] == "anthropic":
                back = r
                break
            time.sleep(0.1)
        assert back is not None, "traffic never returned to the primary"
        assert back.headers["x-semgate-attempts"] == "1"
    finally:
        primary.control(fail_fraction=0.0)
        envoy.stop()


def test_a_stream_through_gemini_reads_as_the_openai_sdk_expects(providers):
    """The chain's Vertex leg alone (primary down): a stream and a JSON answer of the same
    request carry the same text, and usage comes when asked."""
    openai = pytest.importorskip("openai")
    primary, _ = providers
    envoy = own_chain(providers)
    try:
        primary.control(fail_status=503, fail_fraction=1.0)
        client = openai.OpenAI(base_url=envoy.url + "/v1", api_key="sk-demo", max_retries=0)
        messages = [{"role": "user", "content": f"the same question {uuid.uuid4().hex[:6]}"}]
        whole = client.chat.completions.with_raw_response.create(model=MODEL, messages=messages)
        assert whole.headers["x-semgate-provider"] == "vertex"
        text = whole.parse().choices[0].message.content
        stream = client.chat.completions.create(model=MODEL, messages=messages, stream=True,
                                                stream_options={"include_usage": True})
        chunks = list(stream)
        assert all(c.object == "chat.completion.chunk" for c in chunks)
        streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        # The fake numbers its answers ("Answer #12 to: ..."): the rest is the same text.
        assert re.sub(r"#\d+", "#", streamed) == re.sub(r"#\d+", "#", text) and streamed
        usage = [c.usage for c in chunks if c.usage]
        assert usage and usage[-1].total_tokens == usage[-1].prompt_tokens + usage[-1].completion_tokens > 0
        plain = list(client.chat.completions.create(model=MODEL, messages=messages, stream=True))
        assert not any(c.usage for c in plain), "usage only when asked"
    finally:
        primary.control(fail_fraction=0.0)
        envoy.stop()


def test_a_conversation_anthropic_cannot_take_gets_a_clear_400_from_the_gateway(chain, providers):
    primary, fallback = providers
    started = (primary.started(), fallback.started())
    # Only a system message: after translation Anthropic would get no message at all.
    r = chain.chat({"model": MODEL, "messages": [{"role": "system", "content": "Be brief."}]})
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    # The gateway's words, naming the field, not a provider's error passed through.
    assert (err["type"], err["param"]) == ("invalid_request_error", "messages"), err
    assert "user message" in err["message"], err
    # Refused before any provider saw it, and no fallback tried it either.
    assert (primary.started(), fallback.started()) == started


def test_an_anthropic_stream_cut_mid_way_is_an_error_at_the_client_and_is_not_cached(chain, providers):
    """The provider's connection drops after half the stream: Envoy cannot retry after the first
    byte, so the client's stream ends without `[DONE]` (Envoy resets it), the official SDK
    raises instead of returning a silently short caption, and nothing is cached."""
    primary, _ = providers
    primary.control(fail_fraction=0.0)
    messages = [{"role": "user", "content": f"a stream cut half-way {uuid.uuid4().hex[:6]}"}]
    body = {"model": MODEL, "stream": True, "messages": messages}
    with requests.post(chain.url + "/v1/chat/completions", json=body, stream=True, timeout=30,
                       headers={"authorization": "Bearer sk-demo", "x-fake-drop": "mid-stream"}) as r:
        assert r.status_code == 200 and r.headers["x-semgate-provider"] == "anthropic"
        received = b""
        try:
            for chunk in r.iter_content(None):
                received += chunk
        except requests.exceptions.ChunkedEncodingError:
            pass
    events = sse_events(received)
    assert "[DONE]" not in events, events
    assert all("error" in json.loads(e) or json.loads(e)["object"] == "chat.completion.chunk" for e in events)
    openai = pytest.importorskip("openai")
    client = openai.OpenAI(base_url=chain.url + "/v1", api_key="sk-demo", max_retries=0,
                           default_headers={"x-fake-drop": "mid-stream"})
    with pytest.raises((openai.APIError, openai.APIConnectionError)):
        list(client.chat.completions.create(model=MODEL, stream=True, messages=messages))
    # Nothing was cached: the same request is a miss a provider answers whole (Vertex, when the
    # drops got Anthropic ejected).
    _, fallback = providers
    started = primary.started() + fallback.started()
    again = chain.chat(body)
    assert again.status_code == 200 and again.headers["x-semgate-cache"] == "miss"
    assert sse_events(again.content)[-1] == "[DONE]"
    assert primary.started() + fallback.started() == started + 1
