"""The gateway as an attacker inside the mesh sees it: the sidecar's data endpoints, entries
that try to smuggle headers, tenant headers, client headers that try to steer the router or
the operator's provider account, odd paths, Envoy's own error replies, and secrets in the
admin config dump. All through a real Envoy 1.40 with semgate.wasm (or the sidecar itself)."""

import base64
import http.client
import json
import os
import socket
import stat
import subprocess
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests

from conftest import gateway_test_config
from harness import (PROVIDER_KEY, SIDECAR, SIDECAR_TOKEN, Envoy, Sidecar, free_port, render_envoy_config,
                     wait_until)


def chat(text, model="gpt-4o-mini", **extra):
    return {"model": model, "messages": [{"role": "user", "content": text}], **extra}


def assert_openai_error(r, status):
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json"), r.headers
    err = r.json()["error"]
    assert err["message"] and err["type"], err
    return err


def security_config():
    """The demo config plus: an `echo` provider whose upstream path is one the fake provider
    echoes (so a test sees exactly what reached the provider), a trusted tenant header with
    keys that may narrow to sub-tenants, a short default TTL beside the demo's one-day
    captioning policy, and the demo's `/v1/models` passthrough."""
    cfg = gateway_test_config()
    cfg["providers"]["echo"] = {"kind": "openai", "address": "127.0.0.1:18001", "base_path": "/v1/echo",
                                "keys": [{"env": "SEMGATE_OPENAI_KEY"}]}
    cfg["models"]["echo-*"] = ["echo/*"]
    cfg["auth"]["tenant_header"] = "x-tenant"
    cfg["auth"]["tenant_header_trusted"] = True
    cfg["auth"]["keys"] += [
        {"key": "sk-shops", "tenant": "shops", "tenants": ["shop-1"]},
        {"key": "sk-merchants", "tenant": "merchants", "tenant_prefix": "m-"},
    ]
    cfg["cache"]["ttl_s"] = 2
    cfg["policies"] = [p for p in cfg["policies"] if p["match"].get("tenant") != "ttl"]
    return cfg


@pytest.fixture(scope="module")
def gw(provider):
    e = Envoy(provider, security_config())
    yield e
    e.stop()


# ---------------------------------------------------------------- 1. the sidecar is closed

@pytest.fixture(scope="module")
def closed_stack(provider, tmp_path_factory):
    data = tmp_path_factory.mktemp("sidecar")
    sidecar = Sidecar(data / "data")
    cfg = gateway_test_config()
    cfg["semantic"] = {"enabled": True, "threshold": 0.8, "timeout_ms": 2000, "token_env": "SEMGATE_SIDECAR_TOKEN"}
    envoy = Envoy(provider, doc=render_envoy_config(provider.port, free_port(), free_port(), cfg, sidecar_port=sidecar.port))
    yield envoy, sidecar
    envoy.stop()
    sidecar.proc.kill()


def planted_response(text):
    body = json.dumps({"id": "planted", "object": "chat.completion", "choices": [
        {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}]})
    return {"status": 200, "headers": [["content-type", "application/json"]],
            "body_b64": base64.b64encode(body.encode()).decode(), "stream": False}


def test_a_store_or_lookup_without_the_token_is_refused_and_the_provider_still_answers(closed_stack, provider):
    envoy, sidecar = closed_stack
    question = f"What is the warranty on order {uuid.uuid4().hex[:8]}?"
    # The attacker computes what the filter would send, but has no token.
    for token in (None, "guessed-token-guessed-token"):
        store = {"scope": "demo|*|x", "key": "0" * 64, "text": question, "response": planted_response("PLANTED")}
        assert sidecar.post("/v1/store", store, token=token).status_code == 401
        lookup = {"scope": "demo|*|x", "text": question, "threshold": 0.0, "guard": False}
        assert sidecar.post("/v1/lookup", lookup, token=token).status_code == 401
    assert requests.get(f"{sidecar.url}/v1/exact/{'0' * 64}", timeout=5).status_code == 404
    assert sidecar.metric("semgate_sidecar_stores_total") == 0
    started = provider.started()
    r = sidecar.after_store(lambda: envoy.chat(chat(question)))
    assert r.status_code == 200 and r.headers["x-semgate-cache"] == "miss"
    assert "PLANTED" not in r.text
    assert provider.started() == started + 1
    # The filter's own callouts carry the token: the next rephrasing is served by the sidecar.
    assert envoy.chat(chat(question)).headers["x-semgate-cache"] == "hit-exact"
    assert sidecar.metric("semgate_sidecar_unauthorized_total") == 4
    assert requests.get(f"{sidecar.url}/healthz", timeout=5).status_code == 200


def test_the_journal_is_private(closed_stack):
    _, sidecar = closed_stack
    journals = list(sidecar.data_dir.glob("vectors-*.journal"))
    assert journals, list(sidecar.data_dir.iterdir())
    for j in journals:
        assert stat.S_IMODE(j.stat().st_mode) == 0o600
    assert stat.S_IMODE(sidecar.data_dir.stat().st_mode) == 0o700


def test_the_sidecar_refuses_a_network_address_without_a_token(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "SEMGATE_SIDECAR_TOKEN"}
    p = subprocess.run([str(SIDECAR), "--listen", "0.0.0.0:0", "--data-dir", str(tmp_path), "--embedder", "hashing"],
                       capture_output=True, text=True, timeout=30, env=env)
    assert p.returncode != 0
    assert "without a token" in p.stderr, p.stderr
    # With one it starts.
    token_file = tmp_path / "token"
    token_file.write_text(SIDECAR_TOKEN)
    proc = subprocess.Popen([str(SIDECAR), "--listen", "0.0.0.0:0", "--data-dir", str(tmp_path), "--embedder", "hashing",
                             "--token-file", str(token_file)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        assert "listening on" in proc.stdout.readline()
    finally:
        proc.kill()
        proc.wait()


# ------------------------------------------------- 2. entries that try to smuggle headers

class _ForeignSidecar(BaseHTTPRequestHandler):
    """A sidecar (or a tier behind it) that answers every lookup with a hit whose stored
    content type holds CR/LF: the filter must treat it as a miss."""

    def do_POST(self):
        length = int(self.headers.get("content-length", 0))
        self.rfile.read(length)
        body = json.dumps({"hit": True, "tier": "semantic", "score": 0.99, "response": {
            "status": 200, "headers": [["content-type", "application/json\r\nset-cookie: pwned=1"]],
            "body_b64": base64.b64encode(b'{"choices":[]}').decode(), "stream": False}}).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_an_entry_with_a_foreign_content_type_is_never_replayed(provider):
    server = ThreadingHTTPServer(("127.0.0.1", 0), _ForeignSidecar)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    cfg = gateway_test_config()
    cfg["semantic"] = {"enabled": True, "timeout_ms": 2000}
    envoy = Envoy(provider, doc=render_envoy_config(provider.port, free_port(), free_port(), cfg, sidecar_port=server.server_port))
    try:
        started = provider.started()
        r = envoy.chat(chat(f"describe item {uuid.uuid4().hex}"))
        assert r.status_code == 200
        assert r.headers["x-semgate-cache"] == "miss"
        assert "set-cookie" not in r.headers
        assert provider.started() == started + 1
        assert envoy.stat("semgate_sidecar_unsafe_entries_total") == 1
    finally:
        envoy.stop()
        server.shutdown()


# ------------------------------------------------------------------ 3. the tenant header

def test_the_tenant_header_needs_a_valid_key_and_only_narrows_within_it(gw, provider):
    started = provider.started()
    body = chat(f"tenant probe {uuid.uuid4().hex}")
    assert_openai_error(gw.chat(body, key=None, headers={"x-tenant": "shop-1"}), 401)
    assert_openai_error(gw.chat(body, key="sk-wrong", headers={"x-tenant": "shop-1"}), 401)
    assert_openai_error(gw.chat(body, key="sk-shops", headers={"x-tenant": "shop-2"}), 403)
    assert_openai_error(gw.chat(body, key="sk-demo", headers={"x-tenant": "shop-1"}), 403)
    assert_openai_error(gw.chat(body, key="sk-merchants", headers={"x-tenant": "shop-1"}), 403)
    assert provider.started() == started, "no refused request reached the provider"
    # Allowed narrowing: separate scopes, each paid once.
    assert gw.chat(body, key="sk-shops", headers={"x-tenant": "shop-1"}).headers["x-semgate-cache"] == "miss"
    assert gw.chat(body, key="sk-shops", headers={"x-tenant": "shop-1"}).headers["x-semgate-cache"] == "hit-exact"
    assert gw.chat(body, key="sk-shops").headers["x-semgate-cache"] == "miss"
    assert gw.chat(body, key="sk-merchants", headers={"x-tenant": "m-7"}).headers["x-semgate-cache"] == "miss"


def test_an_untrusted_tenant_header_is_ignored(envoy, provider):
    # The default test config names no tenant header: a client's copy changes nothing.
    body = chat(f"untrusted tenant {uuid.uuid4().hex}")
    assert envoy.chat(body, key="sk-team-b").headers["x-semgate-cache"] == "miss"
    r = envoy.chat(body, key="sk-demo", headers={"x-tenant": "team-b"})
    assert r.headers["x-semgate-cache"] == "miss", "another tenant's entry must not be reachable"


# -------------------------------- 4-6. what a client may steer: cluster, credentials, headers

def test_a_client_cannot_pick_the_cluster_on_any_path(gw, provider):
    started = provider.started()
    for path in ("/captioning/anything", "/suggest/x", "/v1/anything"):
        r = requests.post(gw.url + path, data=b"{}", timeout=10,
                          headers={"authorization": "Bearer sk-demo", "x-semgate-cluster": "semgate_sidecar"})
        err = assert_openai_error(r, 404)
        assert err["code"] == "unknown_url"
    assert provider.started() == started
    # On the API path the filter's cluster wins over the client's header.
    r = gw.chat(chat(f"cluster {uuid.uuid4().hex}"), headers={"x-semgate-cluster": "semgate_sidecar"})
    assert r.status_code == 200 and r.headers["x-semgate-provider"] == "openai"


@pytest.mark.parametrize("method,path,status", [
    ("POST", "/v1/chat/completions/", 404),
    ("POST", "/V1/CHAT/COMPLETIONS", 404),
    ("POST", "/v1/chat/completions%20", 404),
    ("POST", "/v1/embeddings", 404),
    ("GET", "/v1/files", 404),
    # These normalise to the API path, and are then served as it is (key checked, key replaced).
    ("POST", "/v1/chat%2Fcompletions", 200),
    ("POST", "/v1//chat/completions/../completions", 200),
])
def test_odd_paths_never_reach_the_provider_with_the_clients_key(gw, provider, method, path, status):
    body = json.dumps(chat(f"odd path {uuid.uuid4().hex}"))
    started = provider.started()
    for key in ("sk-client-unknown", None):
        headers = {"content-type": "application/json", **({"authorization": f"Bearer {key}"} if key else {})}
        assert_openai_error(requests.request(method, gw.url + path, data=body, headers=headers, timeout=10), 401)
    assert provider.started() == started
    r = requests.request(method, gw.url + path, data=body, timeout=10,
                         headers={"authorization": "Bearer sk-demo", "content-type": "application/json"})
    if status == 200:
        assert r.status_code == 200, r.text
        assert provider.started() == started + 1
        assert provider.stats()["last_authorization"] == f"Bearer {PROVIDER_KEY}"
    else:
        assert assert_openai_error(r, status)["code"] == "unknown_url"
        assert provider.started() == started


def test_a_passthrough_path_needs_a_key_and_carries_only_the_providers(gw, provider):
    assert_openai_error(requests.get(gw.url + "/v1/models", timeout=10), 401)
    r = requests.get(gw.url + "/v1/models", timeout=10, headers={
        "authorization": "Bearer sk-demo", "x-api-key": "sk-demo", "api-key": "sk-demo",
        "openai-organization": "org-attacker", "x-semgate-cluster": "semgate_sidecar", "accept": "application/json"})
    assert r.status_code == 200, r.text
    echo = r.json()
    assert echo["path"] == "/v1/models"
    assert echo["headers"]["authorization"] == f"Bearer {PROVIDER_KEY}"
    for dropped in ("x-api-key", "api-key", "openai-organization", "x-semgate-cluster"):
        assert dropped not in echo["headers"], dropped
    assert echo["headers"]["accept"] == "application/json"


def test_only_allowed_client_headers_reach_the_provider(gw):
    r = gw.chat(chat(f"headers {uuid.uuid4().hex}", model="echo-1"), headers={
        "openai-organization": "org-attacker", "openai-project": "proj-attacker", "x-api-key": "sk-demo",
        "cookie": "session=1", "x-envoy-upstream-rq-timeout-ms": "1", "x-semgate-cache": "refresh",
        "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", "user-agent": "probe/1"})
    assert r.status_code == 200, r.text
    echo = r.json()
    assert echo["path"] == "/v1/echo/v1/chat/completions"
    sent = echo["headers"]
    assert sent["authorization"] == f"Bearer {PROVIDER_KEY}"
    for dropped in ("openai-organization", "openai-project", "x-api-key", "cookie", "x-envoy-upstream-rq-timeout-ms",
                    "x-semgate-cache", "x-tenant"):
        assert dropped not in sent, dropped
    assert sent["traceparent"].startswith("00-0af7") and sent["user-agent"] == "probe/1"


# ------------------------------------------------------------ 8. requests a provider rejects

@pytest.mark.parametrize("body,param", [
    ({"model": "gpt-4o-mini", "messages": [{"role": "wizard", "content": "x"}]}, "messages[0].role"),
    ({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": [{"type": "video", "url": "x"}]}]},
     "messages[0].content[0].type"),
    (chat("x", max_tokens=-5), "max_tokens"),
    ({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": 12345}}]}]}, "messages[0].content[0].image_url.url"),
])
def test_requests_a_provider_would_reject_get_a_400_and_are_never_cached(gw, provider, body, param):
    started = provider.started()
    for _ in range(2):
        err = assert_openai_error(gw.chat(body), 400)
        assert err["param"] == param
    assert provider.started() == started


# ----------------------------------------------------------------------- 9-10. key and TTL

def test_the_query_string_is_dropped_and_not_part_of_the_key(gw, provider):
    body = chat(f"query {uuid.uuid4().hex}")
    r = gw.chat(body, path="/v1/chat/completions?api-version=2024-01-01")
    assert r.headers["x-semgate-cache"] == "miss"
    assert provider.stats()["last_path"] == "/v1/chat/completions"
    r = gw.chat(body, path="/v1/chat/completions?api-version=2099-01-01")
    assert r.headers["x-semgate-cache"] == "hit-exact"


def test_the_readers_ttl_bounds_the_age_of_what_it_serves(gw, provider):
    # Stored through /captioning/ (one-day TTL), read through the default path (2 s TTL).
    body = chat(f"ttl {uuid.uuid4().hex}")
    assert gw.chat(body, path="/captioning/v1/chat/completions").headers["x-semgate-cache"] == "miss"
    assert gw.chat(body).headers["x-semgate-cache"] == "hit-exact"
    assert gw.chat(body).headers["x-semgate-cache"] == "hit-exact"  # the fast path's record
    time.sleep(2.2)
    started = provider.started()
    assert gw.chat(body).headers["x-semgate-cache"] == "miss"
    assert provider.started() == started + 1
    assert gw.chat(body, path="/captioning/v1/chat/completions").headers["x-semgate-cache"] == "hit-exact"


# --------------------------------------------------------------- 11. Envoy's own replies

def raw_request(port, data):
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(data)
        chunks = []
        while True:
            try:
                c = s.recv(65536)
            except socket.timeout:
                break
            if not c:
                break
            chunks.append(c)
            if b"\r\n\r\n" in b"".join(chunks):
                head, _, rest = b"".join(chunks).partition(b"\r\n\r\n")
                length = [l for l in head.split(b"\r\n") if l.lower().startswith(b"content-length:")]
                if length and len(rest) >= int(length[0].split(b":")[1]):
                    break
        return b"".join(chunks)


def json_body_of(raw):
    head, _, body = raw.partition(b"\r\n\r\n")
    assert b"content-type: application/json" in head.lower(), head
    return json.loads(body)


def test_envoys_own_replies_are_openai_json(provider):
    cfg = gateway_test_config()
    for name in ("missing", "down"):
        cfg["providers"][name] = {"kind": "openai", "address": "127.0.0.1:18001", "keys": [{"env": "SEMGATE_OPENAI_KEY"}]}
        cfg["models"][f"{name}-*"] = [f"{name}/*"]
    doc = render_envoy_config(provider.port, free_port(), free_port(), cfg)
    clusters = doc["static_resources"]["clusters"]
    # One provider's cluster is gone from Envoy, another's endpoint does not listen.
    clusters[:] = [c for c in clusters if c["name"] != "provider_missing"]
    down = next(c for c in clusters if c["name"] == "provider_down")
    down["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["socket_address"]["port_value"] = free_port()
    doc["static_resources"]["listeners"][0]["per_connection_buffer_limit_bytes"] = 1 << 20
    envoy = Envoy(provider, doc=doc)
    try:
        assert_openai_error(envoy.chat(chat("x", model="missing-1")), 503)
        assert_openai_error(envoy.chat(chat("x", model="down-1")), 503)
        # A body over Envoy's buffer limit (1 MiB here, below max_body_bytes).
        big = json.dumps(chat("y" * (2 << 20)))
        err = assert_openai_error(envoy.chat(big), 413)
        assert err["code"] == "request_payload_too_large", err
        raw = raw_request(envoy.port, b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-length: abc\r\n\r\n")
        assert raw.startswith(b"HTTP/1.1 400"), raw[:200]
        assert json_body_of(raw)["error"]["type"] == "invalid_request_error"
    finally:
        envoy.stop()


# ------------------------------------------------------------ 12. errors keep keep-alive

def test_errors_after_the_body_keep_the_connection_open(gw):
    conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=10)
    headers = {"authorization": "Bearer sk-demo", "content-type": "application/json"}
    sock = None
    for body in (b"not json", json.dumps(chat("x", max_tokens=-1)).encode(), json.dumps(chat(f"ok {uuid.uuid4().hex}")).encode()):
        conn.request("POST", "/v1/chat/completions", body=body, headers=headers)
        resp = conn.getresponse()
        resp.read()
        assert resp.getheader("connection") != "close", resp.status
        sock = sock or conn.sock
        assert conn.sock is sock, "the connection was replaced"
    conn.close()


# ---------------------------------------------------------------- 13. secrets in the admin

def test_no_key_appears_in_the_admin_config_dump(closed_stack):
    envoy, _ = closed_stack
    dump = requests.get(f"{envoy.admin}/config_dump", timeout=10).text
    for secret in (PROVIDER_KEY, SIDECAR_TOKEN, "sk-demo"):
        assert secret not in dump, secret
    assert '"address": "127.0.0.1"' in dump
