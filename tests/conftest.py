"""Fixtures: one fake provider and one Envoy+semgate per test module, from the shipped demo
config with test keys and policies added."""

import pytest

from harness import ROOT, Envoy, FakeProvider, filter_config, render_envoy_config
import yaml


def demo_filter_config():
    doc = yaml.safe_load((ROOT / "envoy/envoy.yaml").read_text())
    return filter_config(doc)


def gateway_test_config(**cache):
    """The demo config plus: a second tenant, a tenant whose entries live one second, a tenant
    whose caching is off on the Envoy route named `chat` (a policy matched on the route name),
    and an 8 MiB body limit (so the 413 test stays small)."""
    cfg = demo_filter_config()
    cfg["auth"]["keys"] += [
        {"key": "sk-team-b", "tenant": "team-b"},
        {"key": "sk-ttl", "tenant": "ttl"},
        {"key": "sk-routes", "tenant": "routes"},
    ]
    cfg["policies"].append({"match": {"tenant": "ttl"}, "cache": {"ttl_s": 1}})
    cfg["policies"].append({"match": {"route": "chat", "tenant": "routes"}, "cache": {"enabled": False}})
    cfg["max_body_bytes"] = 8 << 20
    # The fake provider's failure controls are request headers: forward them, beside the
    # default allow-list (every other client header is dropped).
    cfg["forward_headers"] = ["content-type", "content-length", "accept", "user-agent", "x-request-id",
                              "traceparent", "tracestate", "x-fake-status", "x-fake-drop", "x-fake-hold",
                              "x-fake-latency-ms", "x-fake-chunks", "x-fake-chunk-delay-ms"]
    cfg["cache"].update(cache)
    # Layer 1 alone unless a test starts the sidecar and turns layer 2 on (test_semantic.py).
    cfg["semantic"] = {"enabled": False}
    return cfg


@pytest.fixture(scope="module")
def provider():
    p = FakeProvider()
    yield p
    p.stop()


@pytest.fixture(scope="module")
def envoy(provider):
    e = Envoy(provider, gateway_test_config())
    yield e
    e.stop()


@pytest.fixture(autouse=True)
def _fresh_provider_controls(request):
    if "provider" in request.fixturenames:
        request.getfixturevalue("provider").control(fail_fraction=0.0, drop_fraction=0.0, latency_ms=0)
