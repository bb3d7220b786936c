"""Vertex AI with a service-account key, through a real Envoy: the sidecar signs the JWT-bearer
grant with the key, exchanges it at the key file's `token_uri` (here the fake provider, which
checks the RS256 signature against the account's public key, as Google does), renews the
token before it expires; the upstream role fetches it into shared data and sends it as
`Authorization: Bearer`. The key and the token reach neither the client nor the logs."""

import json
import subprocess
import time
import uuid

import pytest
import requests

from conftest import gateway_test_config
from harness import Envoy, FakeProvider, Sidecar, free_port, render_envoy_config

TOKEN_TTL_S = 6


@pytest.fixture(scope="module")
def service_account(tmp_path_factory):
    d = tmp_path_factory.mktemp("sa")
    key, public = d / "key.pem", d / "public.der"
    subprocess.run(["openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", str(key)],
                   check=True, capture_output=True)
    subprocess.run(["openssl", "rsa", "-in", str(key), "-RSAPublicKey_out", "-outform", "DER", "-out", str(public)],
                   check=True, capture_output=True)
    return d, key.read_text(), public


@pytest.fixture(scope="module")
def google(service_account):
    """The Vertex endpoint and Google's token endpoint, tokens living TOKEN_TTL_S seconds."""
    _, _, public = service_account
    g = FakeProvider("--oauth-public-key", str(public), "--oauth-token-ttl-s", str(TOKEN_TTL_S))
    yield g
    g.stop()


def vertex_gateway(google, sidecar):
    cfg = gateway_test_config()
    cfg["providers"]["vertex"] = {
        "kind": "vertex", "address": "127.0.0.1:18003",
        "vertex": {"auth": "sidecar_token", "project": "captions-prod", "location": "us-central1",
                   "token_env": "SEMGATE_SIDECAR_TOKEN"},
    }
    cfg["models"]["gemini-1.5-pro"] = ["vertex/gemini-1.5-pro"]
    doc = render_envoy_config(google.port, free_port(), free_port(), cfg, sidecar_port=sidecar.port)
    return Envoy(google, doc=doc)


def ask(envoy):
    return envoy.chat({"model": "gemini-1.5-pro", "messages": [{"role": "user", "content": f"caption {uuid.uuid4().hex[:8]}"}]})


def test_the_sidecar_mints_vertex_tokens_and_the_gateway_renews_them(tmp_path, service_account, google):
    d, key_pem, _ = service_account
    sa = d / "service-account.json"
    sa.write_text(json.dumps({"type": "service_account", "client_email": "captions@captions-prod.iam.gserviceaccount.com",
                              "private_key": key_pem, "private_key_id": "k1", "token_uri": f"{google.url}/token"}))
    sidecar = Sidecar(tmp_path / "side", "--vertex-credentials", f"vertex={sa}")
    envoy = vertex_gateway(google, sidecar)
    try:
        # The token endpoint is the sidecar's, behind its bearer token like every data endpoint.
        r = requests.post(f"{sidecar.url}/v1/vertex/token", json={"provider": "vertex"}, timeout=5)
        assert r.status_code == 401
        # Until the first token is in shared data (the upstream root checks every second), an
        # attempt is refused with a clear 503; then every request is answered.
        deadline = time.time() + 15
        while True:
            r = ask(envoy)
            if r.status_code == 200:
                break
            assert r.status_code == 503 and r.json()["error"]["code"] == "upstream_credentials_unavailable", r.text
            assert time.time() < deadline, "no Vertex token reached the gateway"
            time.sleep(0.2)
        # Across more than two token lifetimes: every request is answered, with a token the
        # fake Google issued and has not expired (it refuses anything else with 401).
        started, answered = time.time(), 0
        while time.time() - started < 2.5 * TOKEN_TTL_S:
            r = ask(envoy)
            assert r.status_code == 200, r.text
            assert r.headers["x-semgate-provider"] == "vertex"
            assert "ya29" not in r.text and not any("ya29" in v for v in r.headers.values())
            answered += 1
            time.sleep(0.25)
        stats = google.stats()
        assert stats["last_authorization"].startswith("Bearer ya29.fake-")
        assert stats["last_path"].startswith("/v1/projects/captions-prod/locations/us-central1/publishers/google/models/gemini-1.5-pro:generateContent")
        assert stats["unauthorized"] == 0
        assert stats["oauth_refused"] == 0
        # Renewed: at least one token per lifetime, and not one per request.
        assert 3 <= stats["oauth_tokens_issued"] < answered / 2, (stats["oauth_tokens_issued"], answered)
        assert envoy.stat("semgate_vertex_token_fetches_total") >= 3
        assert envoy.stat("semgate_vertex_token_errors_total") == 0
        assert "semgate_sidecar_vertex_token_mints_total{provider=\"vertex\"}" in sidecar.metrics()
        # Nothing secret in the logs.
        logs = envoy.log()
        assert "ya29" not in logs and "PRIVATE KEY" not in logs
    finally:
        envoy.stop()
        sidecar.stop()


def test_a_key_google_refuses_leaves_no_token_and_a_clear_error(tmp_path, google):
    # A key that is not the one whose public key the fake Google holds: the grant is refused.
    other = tmp_path / "other.pem"
    subprocess.run(["openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", str(other)],
                   check=True, capture_output=True)
    sa = tmp_path / "sa.json"
    sa.write_text(json.dumps({"type": "service_account", "client_email": "x@p.iam.gserviceaccount.com",
                              "private_key": other.read_text(), "token_uri": f"{google.url}/token"}))
    refused_before = google.stats()["oauth_refused"]
    sidecar = Sidecar(tmp_path / "side", "--vertex-credentials", f"vertex={sa}")
    envoy = vertex_gateway(google, sidecar)
    try:
        deadline = time.time() + 5
        while google.stats()["oauth_refused"] == refused_before and time.time() < deadline:
            time.sleep(0.1)
        time.sleep(1.5)  # a tick of the upstream root
        r = ask(envoy)
        assert r.status_code == 503, r.text
        assert r.json()["error"]["code"] == "upstream_credentials_unavailable"
        assert "PRIVATE" not in r.text
        assert google.stats()["oauth_refused"] > refused_before
        assert 'semgate_sidecar_vertex_token_failures_total{provider="vertex"} 0' not in sidecar.metrics()
        assert envoy.stat("semgate_vertex_token_errors_total") >= 1
    finally:
        envoy.stop()
        sidecar.stop()
