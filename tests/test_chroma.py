"""The sidecar with `--vectors chroma` against a real Chroma server (`chroma run`, chromadb from
tests/requirements.txt; a missing Chroma fails these tests, it does not skip them), with the
hashing test embedder: the protocol's round trip, that the records really live in Chroma,
expiry, persistence across restarts of both processes, and semantic hits through Envoy."""

import uuid

import pytest

from conftest import gateway_test_config
from harness import Chroma, Envoy, Sidecar, free_port, render_envoy_config

COLLECTION = "semgate-it"


def response(text):
    return {"status": 200, "headers": [["content-type", "application/json"]], "body_b64": text, "stream": False}


def chat(text):
    return {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": text}]}


def start_sidecar(data_dir, chroma, *extra):
    return Sidecar(data_dir, "--vectors", "chroma", "--chroma-url", chroma.url, "--chroma-collection", COLLECTION, *extra)


@pytest.fixture(scope="module")
def sidecar_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("sidecar")


@pytest.fixture(scope="module")
def stack(provider, tmp_path_factory, sidecar_dir):
    chroma = Chroma(tmp_path_factory.mktemp("chroma"))
    sidecar = start_sidecar(sidecar_dir, chroma)
    cfg = gateway_test_config()
    cfg["semantic"] = {"enabled": True, "threshold": 0.8, "timeout_ms": 2000}
    doc = render_envoy_config(provider.port, free_port(), free_port(), cfg, sidecar_port=sidecar.port)
    envoy = Envoy(provider, doc=doc)
    box = {"chroma": chroma, "sidecar": sidecar, "envoy": envoy}
    yield box
    envoy.stop()
    box["sidecar"].proc.kill()
    box["sidecar"].proc.wait()
    box["chroma"].stop()


def store(sidecar, scope, text, body, **extra):
    r = sidecar.post("/v1/store", {"scope": scope, "text": text, "response": response(body), **extra})
    assert r.status_code == 204, r.text


def lookup(sidecar, scope, text):
    r = sidecar.post("/v1/lookup", {"scope": scope, "text": text})
    assert r.status_code == 200, r.text
    return r.json()


def chroma_ids(stack, namespace):
    return stack["chroma"].records(COLLECTION, {"namespace": namespace})["ids"]


def miss_then_stored(stack, text):
    """A first request through Envoy (a miss), once the filter's fire-and-forget store of its
    answer has reached the sidecar."""
    first = stack["sidecar"].after_store(lambda: stack["envoy"].chat(chat(text)))
    assert first.status_code == 200 and first.headers["x-semgate-cache"] == "miss"
    return first


def test_store_and_lookup_go_through_chroma(stack):
    sidecar = stack["sidecar"]
    scope = f"tenant-{uuid.uuid4().hex[:8]}|gpt-4o-mini"
    text = "Convert 100 USD to EUR for invoice 7"
    store(sidecar, scope, text, "ZXVybw==")

    hit = lookup(sidecar, scope, text)
    assert hit["hit"] is True
    assert hit["response"] == response("ZXVybw==")
    assert hit["score"] >= 0.99
    # Another scope never sees it; the same words with the operands swapped are refused.
    assert lookup(sidecar, "another-tenant|gpt-4o-mini", text)["hit"] is False
    near = lookup(sidecar, scope, "Convert 100 EUR to USD for invoice 7")
    assert near["hit"] is False and near["guard_rejected"]

    # The record is Chroma's, not a journal's: Chroma holds it, and the sidecar wrote no journal.
    records = stack["chroma"].records(COLLECTION, {"namespace": scope})
    assert records["documents"] == [text]
    assert records["ids"] == [str(hit["entry_id"])]
    assert not list(sidecar.data_dir.glob("vectors-*.journal"))


def test_a_rephrased_request_through_envoy_is_a_semantic_hit_from_chroma(stack, provider):
    tag = uuid.uuid4().hex[:8]
    first = miss_then_stored(stack, f"How do I reset my password for account {tag}?")
    started = provider.started()
    r = stack["envoy"].chat(chat(f"How do I reset my password for account {tag}, please?"))
    assert r.status_code == 200
    assert r.headers["x-semgate-cache"] == "hit-semantic"
    assert r.json()["choices"][0]["message"]["content"] == first.json()["choices"][0]["message"]["content"]
    assert provider.started() == started


def test_entries_survive_restarts_and_expired_ones_are_swept(stack, provider, sidecar_dir):
    tag = uuid.uuid4().hex[:8]
    kept, expired = f"keep-{tag}", f"expired-{tag}"
    store(stack["sidecar"], kept, f"Where is my refund for ticket {tag}?", "cmVmdW5k")
    # ttl_s 0: stored already expired, so it is in Chroma but never served.
    store(stack["sidecar"], expired, f"What is the weather at {tag}?", "c3Vu", ttl_s=0)
    assert len(chroma_ids(stack, expired)) == 1
    assert lookup(stack["sidecar"], expired, f"What is the weather at {tag}?")["hit"] is False
    first = miss_then_stored(stack, f"Where is the invoice for order {tag}?")

    # Stop both; Chroma starts again on its data folder, the sidecar on its old port.
    port = stack["sidecar"].port
    stack["sidecar"].stop()
    stack["chroma"].stop()
    stack["chroma"] = Chroma(stack["chroma"].path)
    stack["sidecar"] = start_sidecar(sidecar_dir, stack["chroma"], "--listen", f"127.0.0.1:{port}")
    assert stack["sidecar"].port == port

    hit = lookup(stack["sidecar"], kept, f"Where is my refund for ticket {tag}?")
    assert hit["hit"] is True and hit["response"] == response("cmVmdW5k")
    # The restarted sidecar's startup sweep deleted the expired record from Chroma.
    assert chroma_ids(stack, expired) == []
    # Envoy, pointed at the same port, is served from the persisted entry.
    started = provider.started()
    r = stack["envoy"].chat(chat(f"Where is the invoice for order {tag}, please?"))
    assert r.headers["x-semgate-cache"] == "hit-semantic"
    assert r.json()["choices"][0]["message"]["content"] == first.json()["choices"][0]["message"]["content"]
    assert provider.started() == started
