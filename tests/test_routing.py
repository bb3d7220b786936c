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
    cfg["providers"]["local"] = {"cluster": "provider_local", "api_key_env": "SEMGATE_LOCAL_KEY", "path": "/v1/chat/completions"}
    cfg["models"] = [{"match": "llama-*", "provider": "local"}, {"match": "gpt-*", "provider": "openai"}]
    doc = render_envoy_config(provider.port, free_port(), free_port(), cfg)
    clusters = doc["static_resources"]["clusters"]
    local = copy.deepcopy(next(c for c in clusters if c["name"] == "provider_openai"))
    local["name"] = local["load_assignment"]["cluster_name"] = "provider_local"
    local["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["socket_address"]["port_value"] = second_provider.port
    clusters.append(local)
    # Both fake providers require the same key; the variable name differs per provider.
    env = _semgate_filter(doc)["config"]["vm_config"]["environment_variables"]
    env.setdefault("key_values", {})["SEMGATE_LOCAL_KEY"] = "sk-fake-provider"
    e = Envoy(provider, doc=doc)
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
