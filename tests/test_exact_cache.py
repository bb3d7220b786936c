"""Layer-1 exact cache through a real Envoy 1.40 with semgate.wasm and the fake provider.

The provider's `started` counter counts every request whose headers reached it, including
aborted ones: a hit or a local rejection must leave it unchanged."""

import http.client
import json
import time
import uuid

import requests
import urllib3

from harness import sse_events, stream_content


def chat(text, **extra):
    return {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": text}], **extra}


def unique(prefix="q"):
    return f"{prefix} {uuid.uuid4().hex}"


def test_same_request_twice_second_is_exact_hit_without_provider(envoy, provider):
    body = chat(unique("What is Envoy?"))
    first = envoy.chat(body)
    assert first.status_code == 200, first.text
    assert first.headers["x-semgate-cache"] == "miss"
    started = provider.started()
    second = envoy.chat(body)
    assert second.status_code == 200
    assert second.headers["x-semgate-cache"] == "hit-exact"
    assert second.headers["content-type"] == first.headers["content-type"]
    assert int(second.headers["age"]) >= 0
    assert second.json() == first.json()
    assert provider.started() == started, "a hit must not open a provider request"


def test_provider_gets_its_own_key_never_the_clients(envoy, provider):
    r = envoy.chat(chat(unique()))
    assert r.status_code == 200
    assert provider.stats()["last_authorization"] == "Bearer sk-fake-provider"


def test_client_cache_and_encoding_headers_never_reach_the_provider(envoy, provider):
    """The filter only writes the headers it must change (each write is a host call), so
    this checks both ways: present ones are stripped, absent ones stay absent."""
    r = envoy.chat(chat(unique("strip")), headers={"accept-encoding": "gzip", "x-semgate-cache": "miss"})
    assert r.headers["x-semgate-cache"] == "miss"
    s = provider.stats()
    assert (s["last_accept_encoding"], s["last_x_semgate_cache"]) == ("", "")
    assert (s["last_path"], s["last_authorization"]) == ("/v1/chat/completions", "Bearer sk-fake-provider")
    r = envoy.chat(chat(unique("strip")), path="/captioning/v1/chat/completions")
    assert r.status_code == 200
    assert provider.stats()["last_path"] == "/v1/chat/completions", "the provider's own path"


def test_key_ignores_json_order_whitespace_and_defaulted_params(envoy, provider):
    text = unique("order")
    assert envoy.chat(chat(text)).headers["x-semgate-cache"] == "miss"
    started = provider.started()
    rewritten = (
        '{ "messages" : [ { "content" : [{"type":"text","text":' + json.dumps(text) + '}], "role":"user" } ],\n'
        '  "temperature": 1.0, "n": 1, "top_p": 1, "stream": false, "user": "someone", "model":"gpt-4o-mini" }'
    )
    r = envoy.chat(rewritten)
    assert r.headers["x-semgate-cache"] == "hit-exact"
    assert provider.started() == started


def test_any_param_that_changes_the_answer_misses(envoy):
    text = unique("params")
    assert envoy.chat(chat(text)).headers["x-semgate-cache"] == "miss"
    variants = [
        chat(text, temperature=0.2),
        chat(text, max_tokens=50),
        chat(text, seed=42),
        chat(text, stop=["\n"]),
        chat(text, response_format={"type": "json_object"}),
        chat(text, tools=[{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}]),
        {**chat(text), "model": "gpt-4o"},
        {"model": "gpt-4o-mini", "messages": [{"role": "system", "content": "terse"}, {"role": "user", "content": text}]},
    ]
    for v in variants:
        r = envoy.chat(v)
        assert r.status_code == 200
        assert r.headers["x-semgate-cache"] == "miss", v
    # ...and each variant is now its own entry.
    assert envoy.chat(variants[0]).headers["x-semgate-cache"] == "hit-exact"


def test_tenants_never_share_entries(envoy, provider):
    body = chat(unique("tenant"))
    assert envoy.chat(body, key="sk-demo").headers["x-semgate-cache"] == "miss"
    r = envoy.chat(body, key="sk-team-b")
    assert r.headers["x-semgate-cache"] == "miss"
    assert envoy.chat(body, key="sk-team-b").headers["x-semgate-cache"] == "hit-exact"


def test_ttl_expiry_turns_a_hit_into_a_miss(envoy, provider):
    body = chat(unique("ttl"))
    assert envoy.chat(body, key="sk-ttl").headers["x-semgate-cache"] == "miss"
    assert envoy.chat(body, key="sk-ttl").headers["x-semgate-cache"] == "hit-exact"
    expired_before = envoy.stat("semgate_cache_expired_total")
    time.sleep(1.2)  # the tenant's policy TTL is 1 s: wait it out (no timing is asserted)
    r = envoy.chat(body, key="sk-ttl")
    assert r.headers["x-semgate-cache"] == "miss"
    assert envoy.stat("semgate_cache_expired_total") == expired_before + 1
    assert envoy.chat(body, key="sk-ttl").headers["x-semgate-cache"] == "hit-exact"


def test_streaming_response_is_replayed_event_for_event(envoy, provider):
    body = chat(unique("stream"), stream=True, stream_options={"include_usage": True})
    first = envoy.chat(body, stream=True)
    assert first.headers["x-semgate-cache"] == "miss"
    assert first.headers["content-type"].startswith("text/event-stream")
    raw1 = first.raw.read()
    started = provider.started()
    second = envoy.chat(body, stream=True)
    assert second.headers["x-semgate-cache"] == "hit-exact"
    assert second.headers["content-type"].startswith("text/event-stream")
    raw2 = second.raw.read()
    assert raw2 == raw1, "the replay must be the stored stream, byte for byte"
    events = sse_events(raw2)
    assert events[-1] == "[DONE]"
    assert len(events) > 4
    assert any(json.loads(e).get("usage") for e in events[:-1])
    # The third time the fast path answers (the second was a hit): the same bytes again.
    fast = envoy.stat("semgate_cache_hits_fast_total")
    third = envoy.chat(body, stream=True)
    assert third.headers["x-semgate-cache"] == "hit-exact"
    assert third.headers["content-type"] == second.headers["content-type"]
    assert third.raw.read() == raw1
    assert envoy.stat("semgate_cache_hits_fast_total") == fast + 1
    assert provider.started() == started


def test_stream_and_non_stream_entries_are_kept_apart(envoy):
    text = unique("apart")
    assert envoy.chat(chat(text, stream=True)).headers["x-semgate-cache"] == "miss"
    r = envoy.chat(chat(text))
    assert r.headers["x-semgate-cache"] == "miss"
    assert r.headers["content-type"] == "application/json"
    assert envoy.chat(chat(text, stream=True)).headers["x-semgate-cache"] == "hit-exact"


def test_streaming_stays_streaming_through_the_filter(envoy, provider):
    """The provider holds the end of the stream until released; the client must already have
    the first chunks, so Envoy+semgate forwarded them as they came (nothing is timed)."""
    token = uuid.uuid4().hex
    body = chat(unique("live stream"), stream=True)
    with envoy.chat(body, stream=True, headers={"x-fake-hold": token}, timeout=20) as r:
        assert r.headers["x-semgate-cache"] == "miss"
        lines = r.iter_lines()
        first = next(l for l in lines if l)
        assert first.startswith(b"data: ")
        assert json.loads(first[6:])["object"] == "chat.completion.chunk"
        stats = provider.stats()
        assert stats["completed"] < stats["started"], "the provider has not finished the stream yet"
        provider.release(token)
        rest = [l for l in lines if l]
    assert rest[-1] == b"data: [DONE]"
    # The completed stream was stored.
    assert envoy.chat(body).headers["x-semgate-cache"] == "hit-exact"


def test_bypass_header_and_no_store_skip_the_cache(envoy, provider):
    body = chat(unique("bypass"))
    for headers in ({"x-semgate-cache": "bypass"}, {"cache-control": "no-store"}):
        started = provider.started()
        r = envoy.chat(body, headers=headers)
        assert r.status_code == 200
        assert r.headers["x-semgate-cache"] == "bypass"
        assert r.headers["x-semgate-cache-reason"] == "client"
        assert provider.started() == started + 1
    # Nothing was stored by the bypassed requests.
    assert envoy.chat(body).headers["x-semgate-cache"] == "miss"


def refresh_then_hit(envoy, body, first):
    """`no-cache` fetches a fresh answer and stores it: the next plain request hits that one."""
    r = envoy.chat(body, headers={"cache-control": "no-cache"})
    assert r.headers["x-semgate-cache"] == "refresh"
    fresh = r.json()
    assert fresh["id"] != first["id"]
    hit = envoy.chat(body)
    assert hit.headers["x-semgate-cache"] == "hit-exact"
    assert hit.json()["id"] == fresh["id"], "the refreshed answer replaced the stored one"


def test_no_cache_refreshes_the_entry(envoy, provider):
    body = chat(unique("refresh"))
    refresh_then_hit(envoy, body, envoy.chat(body).json())


def test_sampling_heavy_requests_bypass_by_default(envoy):
    text = unique("sampling")
    r = envoy.chat(chat(text, temperature=1.7))
    assert (r.headers["x-semgate-cache"], r.headers["x-semgate-cache-reason"]) == ("bypass", "temperature")
    r = envoy.chat(chat(text, n=3))
    assert (r.headers["x-semgate-cache"], r.headers["x-semgate-cache-reason"]) == ("bypass", "n")


def test_errors_are_passed_through_and_never_cached(envoy, provider):
    body = chat(unique("errors"))
    for status in (503, 429, 500):
        r = envoy.chat(body, headers={"x-fake-status": str(status)})
        assert r.status_code == status
        assert r.headers["x-semgate-cache"] == "miss"
    started = provider.started()
    r = envoy.chat(body)
    assert r.status_code == 200
    assert r.headers["x-semgate-cache"] == "miss"
    assert provider.started() == started + 1


def test_truncated_stream_is_not_cached(envoy, provider):
    body = chat(unique("truncated"), stream=True)
    try:
        r = envoy.chat(body, stream=True, headers={"x-fake-drop": "mid-stream"})
        r.raw.read()
    except (requests.exceptions.ChunkedEncodingError, requests.exceptions.ConnectionError, urllib3.exceptions.ProtocolError, http.client.IncompleteRead):
        pass  # the client sees the truncation; what matters is what the cache did
    r = envoy.chat(body, stream=True)
    assert r.headers["x-semgate-cache"] == "miss"
    assert sse_events(r.raw.read())[-1] == "[DONE]"


def assert_off_then_cached(envoy, provider, body, off_path, key="sk-demo"):
    """Caching is off for `body` on `off_path` (two bypasses), and on for it on the captioning
    route (a miss, then a hit that the provider never sees)."""
    for _ in range(2):
        r = envoy.chat(body, key=key, path=off_path)
        assert r.status_code == 200
        assert (r.headers["x-semgate-cache"], r.headers["x-semgate-cache-reason"]) == ("bypass", "disabled")
    captioning = "/captioning/v1/chat/completions"
    assert envoy.chat(body, key=key, path=captioning).headers["x-semgate-cache"] == "miss"
    started = provider.started()
    assert envoy.chat(body, key=key, path=captioning).headers["x-semgate-cache"] == "hit-exact"
    assert provider.started() == started


def test_per_route_policies(envoy, provider):
    # The suggestion endpoint must return fresh variants: caching is off for it (the demo
    # config matches it by path prefix); the captioning route keeps caching on.
    assert_off_then_cached(envoy, provider, chat(unique("routes")), "/suggest/v1/chat/completions")
    # The provider was called on its own path, whatever the route's prefix.
    assert provider.stats()["last_path"] == "/v1/chat/completions"


def test_policies_match_envoy_route_names(envoy, provider):
    # The test config turns caching off for tenant `routes` on the route named `chat`
    # (path /v1/chat/completions); the same tenant on the route `captioning` still caches.
    body = chat(unique("route names"))
    assert_off_then_cached(envoy, provider, body, "/v1/chat/completions", key="sk-routes")
    # Other tenants on the `chat` route are not matched by it.
    assert envoy.chat(body).headers["x-semgate-cache"] == "miss"


def test_hits_keep_the_client_connection_open(envoy):
    body = json.dumps(chat(unique("keepalive")))
    cx_before = envoy.stat("http.gateway.downstream_cx_total")
    conn = http.client.HTTPConnection("127.0.0.1", envoy.port, timeout=10)
    statuses = []
    sock = None
    for _ in range(5):
        conn.request("POST", "/v1/chat/completions", body=body, headers={"authorization": "Bearer sk-demo", "content-type": "application/json"})
        resp = conn.getresponse()
        resp.read()
        statuses.append(resp.getheader("x-semgate-cache"))
        assert resp.getheader("connection") != "close"
        sock = sock or conn.sock
        assert conn.sock is sock, "the connection was replaced"
    conn.close()
    assert statuses == ["miss"] + ["hit-exact"] * 4
    assert envoy.stat("http.gateway.downstream_cx_total") == cx_before + 1


def test_unknown_routes_are_refused_and_passthrough_routes_carry_only_the_providers_key(envoy, provider):
    # No path is proxied with the client's own credential: an unlisted path is a 404 after
    # the key check, a listed passthrough (`/v1/models`) gets the provider's key instead.
    started = provider.started()
    r = requests.post(envoy.url + "/other/echo", data=b"not json at all", headers={"authorization": "Bearer sk-demo"}, timeout=10)
    assert r.status_code == 404 and r.json()["error"]["code"] == "unknown_url"
    r = requests.get(envoy.url + "/v1/models?x=1", headers={"authorization": "Bearer client-own"}, timeout=10)
    assert r.status_code == 401
    assert provider.started() == started
    r = requests.get(envoy.url + "/v1/models?x=1", headers={"authorization": "Bearer sk-demo", "x-custom": "dropped"}, timeout=10)
    assert r.status_code == 200
    echo = r.json()
    assert echo["path"] == "/v1/models?x=1"
    assert echo["headers"]["authorization"] == "Bearer sk-fake-provider"
    assert "x-custom" not in echo["headers"]
    assert "x-semgate-cluster" not in echo["headers"]
    assert "x-semgate-cache" not in r.headers


def test_byte_identical_repeats_take_the_fast_path(envoy, provider):
    """Once a request was served from the cache, its byte-identical repeats are answered from
    the fast path's record (no parse, no blake3); a byte-different form of the same request
    still hits through the canonical key, and the record never crosses tenants or routes."""
    text = unique("fast")
    raw = json.dumps(chat(text))
    spaced = json.dumps(chat(text), indent=1)
    fast0, records0 = envoy.stat("semgate_cache_hits_fast_total"), envoy.stat("semgate_cache_fast_records_total")
    first = envoy.chat(raw)
    assert first.headers["x-semgate-cache"] == "miss"
    assert envoy.stat("semgate_cache_fast_records_total") == records0, "a miss writes no record"
    started = provider.started()
    second = envoy.chat(raw)  # canonical hit: keeps a record of these bytes
    assert second.headers["x-semgate-cache"] == "hit-exact"
    assert envoy.stat("semgate_cache_fast_records_total") == records0 + 1
    assert envoy.stat("semgate_cache_hits_fast_total") == fast0
    for _ in range(3):
        r = envoy.chat(raw)
        assert r.headers["x-semgate-cache"] == "hit-exact"
        assert r.headers["x-semgate-key"] == second.headers["x-semgate-key"]
        assert r.content == first.content
    assert envoy.stat("semgate_cache_hits_fast_total") == fast0 + 3
    # Another byte form of the same request: a canonical hit, then its own record.
    assert envoy.chat(spaced).headers["x-semgate-cache"] == "hit-exact"
    assert envoy.stat("semgate_cache_hits_fast_total") == fast0 + 3
    assert envoy.chat(spaced).headers["x-semgate-cache"] == "hit-exact"
    assert envoy.stat("semgate_cache_hits_fast_total") == fast0 + 4
    assert provider.started() == started
    # The same bytes from another tenant, or on a route whose policy turns caching off.
    assert envoy.chat(raw, key="sk-team-b").headers["x-semgate-cache"] == "miss"
    r = envoy.chat(raw, path="/suggest/v1/chat/completions")
    assert (r.headers["x-semgate-cache"], r.headers["x-semgate-cache-reason"]) == ("bypass", "disabled")
    assert envoy.stat("semgate_cache_hits_fast_total") == fast0 + 4


def test_a_refresh_rewrites_the_fast_path_record(envoy, provider):
    body = chat(unique("fast refresh"))
    first = envoy.chat(body).json()
    assert envoy.chat(body).headers["x-semgate-cache"] == "hit-exact"  # record written
    fast0 = envoy.stat("semgate_cache_hits_fast_total")
    assert envoy.chat(body).json()["id"] == first["id"]
    assert envoy.stat("semgate_cache_hits_fast_total") == fast0 + 1
    refresh_then_hit(envoy, body, first)
    assert envoy.stat("semgate_cache_hits_fast_total") == fast0 + 2, "the record serves the refreshed answer"
    # Directives always take the canonical path: a bypass reaches the provider.
    started = provider.started()
    r = envoy.chat(body, headers={"x-semgate-cache": "bypass"})
    assert r.headers["x-semgate-cache"] == "bypass"
    assert provider.started() == started + 1
