"""The sidecar with `--embedder openai` against the fake provider's OpenAI-shaped
`/v1/embeddings`: the real HTTP client, the key read from the environment, the CachedEmbedder in
front of the provider, errors, and one rephrased question through Envoy. The fake's vectors
are a hashed bag of words: what is tested is the wiring, not embedding quality."""

import base64
import json
import uuid

import pytest

from conftest import gateway_test_config
from harness import PROVIDER_KEY, Envoy, Sidecar, free_port, render_envoy_config

KEY_ENV = "SEMGATE_TEST_EMBED_KEY"
MODEL = "text-embedding-3-small"


def openai_sidecar(provider, data_dir, *extra, key=PROVIDER_KEY):
    return Sidecar(
        data_dir, "--embed-url", f"{provider.url}/v1", "--embed-model", MODEL, "--embed-key-env", KEY_ENV, *extra,
        embedder="openai", env={KEY_ENV: key},
    )


@pytest.fixture(scope="module")
def sidecar(provider, tmp_path_factory):
    s = openai_sidecar(provider, tmp_path_factory.mktemp("sidecar-openai"))
    yield s
    s.proc.kill()
    s.proc.wait()


def cached_response(text):
    body = json.dumps({"choices": [{"message": {"role": "assistant", "content": text}}]}).encode()
    return {"status": 200, "headers": [["content-type", "application/json"]], "body_b64": base64.b64encode(body).decode(), "stream": False}


def embedding_requests(provider):
    return provider.stats()["embedding_requests"]


def test_the_dimension_is_probed_at_startup_and_names_the_journal(sidecar):
    health = sidecar.health()
    assert health["model"] == f"openai-{MODEL}-64"
    assert health["dim"] == 64
    assert (sidecar.data_dir / f"vectors-openai-{MODEL}-64.journal").exists()


def test_store_then_lookup_of_a_rephrasing_hits_through_the_provider(sidecar, provider):
    tag = uuid.uuid4().hex[:8]
    before = provider.stats()
    scope = f"team-a|{MODEL}|{tag}"
    r = sidecar.post("/v1/store", {"scope": scope, "text": f"How do I reset my password for account {tag}?", "response": cached_response("Use the reset link.")})
    assert r.status_code == 204, r.text
    r = sidecar.post("/v1/lookup", {"scope": scope, "text": f"How do I reset my password for account {tag}, please?"})
    assert r.status_code == 200, r.text
    hit = r.json()
    assert hit["hit"] is True, hit
    assert hit["response"] == cached_response("Use the reset link.")
    after = provider.stats()
    assert after["embedding_requests"] == before["embedding_requests"] + 2
    assert after["embedding_inputs"] == before["embedding_inputs"] + 2
    assert after["chat_requests"] == before["chat_requests"]
    assert after["last_path"] == "/v1/embeddings"
    assert after["last_authorization"] == f"Bearer {PROVIDER_KEY}"


def test_a_text_seen_before_is_not_embedded_again(sidecar, provider):
    tag = uuid.uuid4().hex[:8]
    scope, text = f"s-{tag}", f"What is the warranty on item {tag}?"
    before = embedding_requests(provider)
    first = sidecar.post("/v1/lookup", {"scope": scope, "text": text}).json()
    assert embedding_requests(provider) == before + 1
    second = sidecar.post("/v1/lookup", {"scope": scope, "text": text}).json()
    assert sidecar.post("/v1/store", {"scope": scope, "text": text, "response": cached_response("2 years")}).status_code == 204
    assert embedding_requests(provider) == before + 1, "the CachedEmbedder answered the repeats"
    assert first == second == {"hit": False, "score": 0.0}
    assert sidecar.post("/v1/lookup", {"scope": scope, "text": text}).json()["hit"] is True


def test_a_wrong_key_stops_the_sidecar_at_startup_with_the_upstreams_message(provider, tmp_path):
    with pytest.raises(RuntimeError) as failed:
        openai_sidecar(provider, tmp_path, key="sk-wrong-key")
    message = str(failed.value)
    assert "HTTP 401: Incorrect API key provided." in message, message
    assert "/v1/embeddings" in message and "sk-wrong-key" not in message


def test_with_a_dimension_it_starts_without_asking_and_upstream_errors_are_503s(provider, tmp_path):
    before = embedding_requests(provider)
    s = openai_sidecar(provider, tmp_path, "--embed-dim", "32", key="sk-wrong-key")
    try:
        assert s.health()["model"] == f"openai-{MODEL}-32"
        assert embedding_requests(provider) == before, "no probe when the dimension is given"
        r = s.post("/v1/lookup", {"scope": "s", "text": "anything"})
        assert r.status_code == 503
        assert "HTTP 401: Incorrect API key provided." in r.json()["error"]["message"]
        assert embedding_requests(provider) == before + 1
        assert s.metric("semgate_sidecar_errors_total") == 1
    finally:
        s.proc.kill()
        s.proc.wait()


def test_through_envoy_a_rephrased_question_is_a_semantic_hit(sidecar, provider):
    cfg = gateway_test_config()
    cfg["semantic"] = {"enabled": True, "timeout_ms": 2000}
    doc = render_envoy_config(provider.port, free_port(), free_port(), cfg, sidecar_port=sidecar.port)
    envoy = Envoy(provider, doc=doc)
    try:
        tag = uuid.uuid4().hex[:8]

        def chat(text):
            return {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": text}]}

        first = sidecar.after_store(lambda: envoy.chat(chat(f"Where is my refund for ticket {tag}?")))
        assert first.status_code == 200 and first.headers["x-semgate-cache"] == "miss"
        before = provider.stats()
        r = envoy.chat(chat(f"Where is my refund for ticket {tag}, please?"))
        assert r.status_code == 200
        assert r.headers["x-semgate-cache"] == "hit-semantic"
        assert r.json()["choices"][0]["message"]["content"] == first.json()["choices"][0]["message"]["content"]
        after = provider.stats()
        assert after["chat_requests"] == before["chat_requests"], "the provider's chat was not called"
        assert after["embedding_requests"] == before["embedding_requests"] + 1, "one embedding for the new text"
    finally:
        envoy.stop()
