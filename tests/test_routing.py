"""Routing follows `model`: two providers on two Envoy clusters, each with its own key."""

import copy
import uuid

import pytest

from conftest import gateway_test_config
from harness import Envoy, FakeProvider, _semgate_filter, free_port, render_envoy_config


@pytest.fixture(scope="module")
def second_provider():
    p = FakeProvider()
    yield p
    p.stop()


@pytest.fixture(scope="module")
def two_provider_envoy(provider, second_provider):
    cfg = gateway_test_config()
    cfg["providers"]["local"] = {"kind": "openai_compatible", "address": "127.0.0.1:18009",
                                 "keys": [{"env": "SEMGATE_LOCAL_KEY"}]}
    cfg["models"] = {"llama-*": ["local/*"], "gpt-*": ["openai/*"]}
    doc = render_envoy_config(provider.port, free_port(), free_port(), cfg)
    local = next(c for c in doc["static_resources"]["clusters"] if c["name"] == "provider_local")
    local["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["socket_address"]["port_value"] = second_provider.port
    # Both fake providers require the same key; the variable name differs per provider.
    e = Envoy(provider, doc=doc, env={"SEMGATE_LOCAL_KEY": "sk-fake-provider"})
    yield e
    e.stop()


def body(model):
    return {"model": model, "messages": [{"role": "user", "content": f"route me {uuid.uuid4().hex}"}]}


def test_model_picks_the_cluster(two_provider_envoy, provider, second_provider):
    a, b = provider.started(), second_provider.started()
    r = two_provider_envoy.chat(body("llama-3-8b"))
    assert r.status_code == 200
    assert r.headers["x-semgate-provider"] == "local"
    assert (provider.started(), second_provider.started()) == (a, b + 1)
    r = two_provider_envoy.chat(body("gpt-4o-mini"))
    assert r.headers["x-semgate-provider"] == "openai"
    assert (provider.started(), second_provider.started()) == (a + 1, b + 1)


def test_unrouted_model_is_a_404_without_upstream(two_provider_envoy, provider, second_provider):
    a, b = provider.started(), second_provider.started()
    r = two_provider_envoy.chat(body("claude-3-haiku"))
    assert r.status_code == 404
    assert r.json()["error"]["code"] == "model_not_found"
    assert (provider.started(), second_provider.started()) == (a, b)


def test_client_cannot_choose_the_cluster(two_provider_envoy, provider, second_provider):
    a, b = provider.started(), second_provider.started()
    r = two_provider_envoy.chat(body("gpt-4o-mini"), headers={"x-semgate-cluster": "provider_local"})
    assert r.status_code == 200
    assert (provider.started(), second_provider.started()) == (a + 1, b)
