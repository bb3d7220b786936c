"""The sidecar's shared exact tier through two real Envoy replicas: a request answered through
replica A is an exact hit on replica B (no provider call), which then keeps its own copy."""

import uuid

import pytest

from conftest import gateway_test_config
from harness import Envoy, Sidecar, free_port, render_envoy_config


@pytest.fixture(scope="module")
def replicas(provider, tmp_path_factory):
    sidecar = Sidecar(tmp_path_factory.mktemp("sidecar"))
    cfg = gateway_test_config()
    cfg["semantic"] = {"enabled": True, "threshold": 0.99, "timeout_ms": 2000}
    envoys = []
    for _ in range(2):
        doc = render_envoy_config(provider.port, free_port(), free_port(), cfg, sidecar_port=sidecar.port)
        envoys.append(Envoy(provider, doc=doc))
    yield envoys, sidecar
    for e in envoys:
        e.stop()
    sidecar.proc.kill()


def chat(text, **extra):
    return {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": text}], **extra}


@pytest.mark.parametrize("stream", [False, True])
def test_an_answer_paid_for_on_one_replica_is_an_exact_hit_on_another(replicas, provider, stream):
    (a, b), sidecar = replicas
    body = chat(f"What are the opening hours of store {uuid.uuid4().hex[:8]}?", stream=stream)
    first = sidecar.after_store(lambda: a.chat(body))
    assert first.status_code == 200 and first.headers["x-semgate-cache"] == "miss"
    started = provider.started()
    r = b.chat(body)
    assert r.status_code == 200
    assert r.headers["x-semgate-cache"] == "hit-exact"
    assert r.headers["x-semgate-tier"] == "shared"
    assert r.headers["x-semgate-key"] == first.headers["x-semgate-key"]
    assert r.content == first.content
    assert provider.started() == started
    assert b.stat("semgate_cache_hits_shared_total") >= 1
    # Replica B kept a copy: the next identical request is answered from its own cache.
    shared_before = b.stat("semgate_cache_hits_shared_total")
    r = b.chat(body)
    assert r.headers["x-semgate-cache"] == "hit-exact" and "x-semgate-tier" not in r.headers
    assert b.stat("semgate_cache_hits_shared_total") == shared_before
    assert provider.started() == started


def test_the_shared_tier_keeps_tenants_and_parameters_apart(replicas, provider):
    (a, b), sidecar = replicas
    body = chat(f"Summarise ticket {uuid.uuid4().hex[:8]}")
    assert sidecar.after_store(lambda: a.chat(body)).headers["x-semgate-cache"] == "miss"
    started = provider.started()
    # Another tenant and another temperature are other keys: B must ask the provider.
    assert b.chat(body, key="sk-team-b").headers["x-semgate-cache"] == "miss"
    assert b.chat({**body, "temperature": 0.3}).headers["x-semgate-cache"] == "miss"
    assert provider.started() == started + 2


def test_bypass_on_one_replica_never_reads_the_shared_tier(replicas, provider):
    (a, b), sidecar = replicas
    body = chat(f"Draft a reply for case {uuid.uuid4().hex[:8]}")
    assert sidecar.after_store(lambda: a.chat(body)).headers["x-semgate-cache"] == "miss"
    started = provider.started()
    r = b.chat(body, headers={"x-semgate-cache": "bypass"})
    assert r.headers["x-semgate-cache"] == "bypass"
    assert provider.started() == started + 1
