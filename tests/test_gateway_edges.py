"""Bad input, large VLM bodies, metrics, and configuration that must fail at load; all
through a real Envoy 1.40 with semgate.wasm."""

import base64
import json
import os
import uuid

import requests

from conftest import gateway_test_config
from harness import Envoy, render_envoy_config, free_port


def chat(text, **extra):
    return {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": text}], **extra}


def assert_openai_error(r, status, param=None):
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/json"
    err = r.json()["error"]
    assert err["message"] and err["type"]
    if param is not None:
        assert err["param"] == param
    return err


def test_bad_inputs_get_openai_errors_and_never_reach_the_provider(envoy, provider):
    started = provider.started()
    cases = [
        (b"this is not json", 400, None),
        (b"[1, 2, 3]", 400, None),
        (json.dumps({"messages": [{"role": "user", "content": "x"}]}), 400, "model"),
        (json.dumps({"model": 7, "messages": [{"role": "user", "content": "x"}]}), 400, "model"),
        (json.dumps({"model": "gpt-4o-mini"}), 400, "messages"),
        (json.dumps({"model": "gpt-4o-mini", "messages": []}), 400, "messages"),
        (json.dumps({"model": "gpt-4o-mini", "messages": [{"content": "x"}]}), 400, "messages[0].role"),
        (json.dumps(chat("x", temperature="hot")), 400, "temperature"),
        (json.dumps(chat("x", stream="yes")), 400, "stream"),
        (json.dumps(chat("x", max_tokens="many")), 400, "max_tokens"),
    ]
    for body, status, param in cases:
        assert_openai_error(envoy.chat(body), status, param)
    assert_openai_error(envoy.chat(chat("x"), key=None), 401)
    assert_openai_error(envoy.chat(chat("x"), key="sk-unknown"), 401)
    r = requests.get(envoy.url + "/v1/chat/completions", headers={"authorization": "Bearer sk-demo"}, timeout=10)
    assert_openai_error(r, 405)
    r = requests.post(envoy.url + "/v1/chat/completions", headers={"authorization": "Bearer sk-demo"}, timeout=10)
    assert_openai_error(r, 400)
    assert provider.started() == started, "local rejections must not open provider requests"
    # The VM survived all of it.
    assert envoy.chat(chat(uuid.uuid4().hex)).status_code == 200
    assert envoy.stat("semgate_host_errors_total") == 0


def test_errors_are_never_cached(envoy):
    body = b"this is not json"
    for _ in range(2):
        r = envoy.chat(body)
        assert r.status_code == 400
        assert "x-semgate-cache" not in r.headers


def image_request(image_bytes, text="Write a product caption for this photo."):
    data_url = "data:image/png;base64," + base64.b64encode(image_bytes).decode()
    return {
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": [{"type": "text", "text": text}, {"type": "image_url", "image_url": {"url": data_url}}]}],
    }


def test_multi_megabyte_image_requests_are_cached_by_image_hash(envoy, provider):
    photo = os.urandom(5 << 20)  # a 5 MiB "photo": 6.7 MB of base64 in the body
    body = json.dumps(image_request(photo))
    assert len(body) > 6_000_000
    r = envoy.chat(body)
    assert r.status_code == 200, r.text[:300]
    assert r.headers["x-semgate-cache"] == "miss"
    assert "[1 image(s)]" in r.json()["choices"][0]["message"]["content"]
    started = provider.started()
    hit = envoy.chat(body)
    assert hit.headers["x-semgate-cache"] == "hit-exact"
    assert provider.started() == started
    # Another photo with the same caption prompt is another question.
    other = bytearray(photo)
    other[-1] ^= 0xFF
    assert envoy.chat(json.dumps(image_request(bytes(other)))).headers["x-semgate-cache"] == "miss"
    # The cache holds answers, not photos.
    assert envoy.stat("semgate_cache_bytes") < 1 << 20


def test_body_over_the_limit_gets_a_413_json_error(envoy, provider):
    started = provider.started()
    body = json.dumps(image_request(os.urandom(7 << 20)))  # ~9.3 MB > the 8 MiB test limit
    r = envoy.chat(body)
    err = assert_openai_error(r, 413)
    assert err["code"] == "request_too_large"
    # Without content-length (chunked upload) the filter counts the bytes as they arrive.
    def chunks():
        for i in range(0, len(body), 1 << 20):
            yield body[i:i + (1 << 20)].encode()
    r = requests.post(envoy.url + "/v1/chat/completions", data=chunks(), headers={"authorization": "Bearer sk-demo"}, timeout=30)
    assert_openai_error(r, 413)
    assert provider.started() == started


def test_metrics_are_exported_to_prometheus(envoy):
    body = chat(uuid.uuid4().hex)
    envoy.chat(body)
    envoy.chat(body)
    envoy.chat(body, headers={"x-semgate-cache": "bypass"})
    text = envoy.prometheus()
    values = {}
    for line in text.splitlines():
        if line.startswith("semgate_"):
            name, value = line.rsplit(" ", 1)
            values[name.split("{")[0]] = float(value)
    for name in ["semgate_requests_total", "semgate_cache_hits_exact_total", "semgate_cache_misses_total",
                 "semgate_cache_bypasses_total", "semgate_cache_stores_total", "semgate_cache_bytes"]:
        assert values.get(name, 0) > 0, f"{name} missing or zero in /stats/prometheus"
    for name in ["semgate_cache_evictions_total", "semgate_cache_entries_too_large_total", "semgate_rejected_total"]:
        assert name in values


def start_expecting_failure(provider, semgate_config, env_key_values=None):
    doc = render_envoy_config(provider.port, free_port(), free_port(), semgate_config)
    if env_key_values is not None:
        # The provider keys are the upstream role's: its VMs get only these variables.
        from harness import upstream_filters
        for f in upstream_filters(doc):
            f["typed_config"]["config"]["vm_config"]["environment_variables"] = {"key_values": env_key_values}
    e = Envoy(provider, doc=doc, wait=False)
    try:
        code = e.proc.wait(timeout=60)
        return code, e.log()
    finally:
        e.stop()


def test_invalid_config_fails_at_load_naming_the_field(provider):
    cfg = gateway_test_config()
    cfg["cache"]["ttl"] = 5  # a typo of ttl_s
    code, log = start_expecting_failure(provider, cfg)
    assert code != 0
    assert "semgate config: `cache.ttl`" in log, log[-2000:]

    cfg = gateway_test_config()
    cfg["models"] = {"*": ["openia/*"]}
    code, log = start_expecting_failure(provider, cfg)
    assert code != 0
    assert "`models.*[0]`: provider `openia` is not in `providers`" in log, log[-2000:]

    # The shape before model chains is refused with what to write instead.
    cfg = gateway_test_config()
    cfg["models"] = [{"match": "*", "provider": "openai"}]
    code, log = start_expecting_failure(provider, cfg)
    assert code != 0
    assert "`models`: the `[{\"match\": ..., \"provider\": ...}]` list is replaced by a map" in log, log[-2000:]


def test_missing_provider_key_fails_at_load(provider):
    others = {v: "sk-fake-provider" for v in ("ANTHROPIC_KEY_PRIMARY", "ANTHROPIC_KEY_BACKUP", "VERTEX_EXPRESS_KEY")}
    code, log = start_expecting_failure(provider, gateway_test_config(), env_key_values=others)
    assert code != 0
    assert "SEMGATE_OPENAI_KEY" in log and "providers.openai.keys[0].env" in log, log[-2000:]
