"""Virtual keys through a real Envoy: USD budgets held by reservations (cut off at the right
request, never overspent by a burst, never refusing while there is room), RPM and TPM with
OpenAI's rate-limit headers, free cache hits that say what they saved, the stream-usage chunk
asked for and stripped, chargeback to end customers in the access log, the metrics and the
sidecar's ledger, and hostile keys and customer ids."""

import concurrent.futures
import datetime
import hashlib
import json
import re
import time
import uuid

import openai
import pytest
import requests

from conftest import gateway_test_config
from harness import SIDECAR_TOKEN, Envoy, Sidecar, free_port, render_envoy_config, wait_until

CAPPED, LIMITED, OPEN, CHEAP = "sk-test-capped", "sk-test-limited", "sk-test-open", "sk-test-cheap"


def sha(key):
    return hashlib.sha256(key.encode()).hexdigest()


def budget_config(**extra):
    cfg = gateway_test_config()
    cfg["virtual_keys"] = [
        # Room for a few requests of ~60 micro-dollars reserved each.
        {"id": "capped", "key_sha256": sha(CAPPED), "team": "t1", "models": ["gpt-4o-mini"],
         "budget": {"usd": 0.0003, "period": "daily"}},
        {"id": "limited", "key_sha256": sha(LIMITED), "rpm": 3, "tpm": 2000},
        {"id": "open", "key_sha256": sha(OPEN), "team": "t2", "budget": {"usd": 100, "period": "monthly"}},
        # Room for about 50 reservations of a burst.
        {"id": "cheap", "key_sha256": sha(CHEAP), "budget": {"usd": 0.003, "period": "daily"}},
    ]
    cfg["customer"] = {"header": "x-customer-id", "from_user_field": True, "max_len": 32}
    cfg.update(extra)
    return cfg


@pytest.fixture(scope="module")
def gw(provider):
    e = Envoy(provider, budget_config())
    yield e
    e.stop()


def ask(gw, key, text=None, max_tokens=100, headers=None, **body):
    req = {"model": "gpt-4o-mini", "max_tokens": max_tokens,
           "messages": [{"role": "user", "content": text or f"caption photo {uuid.uuid4().hex}"}], **body}
    return gw.chat(req, key=key, headers=headers)


def usd(v):
    return round(float(v) * 1_000_000)


def seconds_to_utc_midnight():
    now = datetime.datetime.now(datetime.timezone.utc)
    midnight = (now + datetime.timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    return (midnight - now).total_seconds()


def needed_micros(refusal):
    m = re.search(r"needs up to \$([0-9.]+)", refusal.json()["error"]["message"])
    return usd(m.group(1))


def test_a_capped_key_is_cut_off_at_the_request_that_does_not_fit(gw, provider):
    budget = usd("0.0003")
    spent, answered = 0, 0
    while True:
        r = ask(gw, CAPPED)
        if r.status_code != 200:
            break
        answered += 1
        cost = usd(r.headers["x-semgate-cost-usd"])
        assert cost > 0
        spent += cost
        assert usd(r.headers["x-semgate-budget-remaining-usd"]) == budget - spent
        assert answered < 100, "the budget never ran out"
    assert r.status_code == 429, r.text
    err = r.json()["error"]
    assert err["type"] == "budget_exceeded" and err["code"] == "budget_exceeded"
    # Refused exactly when the reservation no longer fits what is left.
    need = needed_micros(r)
    assert spent + need > budget and answered >= 1
    # Nothing is in flight: only the reset gives room back.
    assert abs(int(r.headers["retry-after"]) - seconds_to_utc_midnight()) < 5
    # The refusal reached no provider.
    before = provider.started()
    assert ask(gw, CAPPED).status_code == 429
    assert provider.started() == before


def test_a_model_the_key_may_not_use_is_403_and_unknown_keys_401(gw):
    r = gw.chat({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}, key=CAPPED)
    assert r.status_code == 403, r.text
    assert "gpt-4o" in r.json()["error"]["message"]
    for forged in [sha(CAPPED), CAPPED[:-1], CAPPED.upper(), "x" * 5000, None]:
        r = ask(gw, forged)
        assert r.status_code == 401, (forged and forged[:20], r.status_code)
        assert r.headers["content-type"].startswith("application/json")


def test_cache_hits_are_free_say_what_they_saved_and_count_against_rpm(gw):
    text = f"describe the red mug {uuid.uuid4().hex}"
    first = ask(gw, OPEN, text)
    assert first.status_code == 200 and first.headers["x-semgate-cache"] == "miss"
    paid = usd(first.headers["x-semgate-cost-usd"])
    hit = ask(gw, OPEN, text)
    assert hit.headers["x-semgate-cache"] == "hit-exact"
    assert "x-semgate-cost-usd" not in hit.headers
    assert usd(hit.headers["x-semgate-saved-usd"]) == paid
    # RPM counts hits: 3 requests a minute, the 4th is refused even though it would be a hit.
    text = f"rpm probe {uuid.uuid4().hex}"
    codes = [ask(gw, LIMITED, text, max_tokens=10).status_code for _ in range(4)]
    assert codes == [200, 200, 200, 429], codes
    r = ask(gw, LIMITED, text, max_tokens=10)
    assert r.json()["error"]["code"] == "rate_limit_exceeded"
    assert r.headers["x-ratelimit-limit-requests"] == "3"
    assert r.headers["x-ratelimit-remaining-requests"] == "0"
    assert 1 <= int(r.headers["retry-after"]) <= 20


def test_tokens_per_minute_refuses_a_request_larger_than_what_is_left(provider):
    cfg = budget_config()
    cfg["virtual_keys"][1].update({"rpm": 1000, "tpm": 2000})
    e = Envoy(provider, cfg)
    try:
        ok = ask(e, LIMITED, max_tokens=1500)
        assert ok.status_code == 200, ok.text
        # The first took ~1500 estimated tokens and was corrected to its real (small) count,
        # so a small request fits and a large one does not.
        assert ask(e, LIMITED, max_tokens=100).status_code == 200
        r = ask(e, LIMITED, max_tokens=1990)
        assert r.status_code == 429, r.text
        assert r.json()["error"]["type"] == "tokens"
        assert "x-ratelimit-remaining-tokens" in r.headers
    finally:
        e.stop()


def test_a_burst_of_200_neither_overspends_nor_refuses_while_there_is_room(provider):
    e = Envoy(provider, budget_config())
    try:
        budget = usd("0.003")
        # Every request is held at the provider for a while, so the burst is in flight at once.
        headers = {"x-fake-latency-ms": "1500"}
        with concurrent.futures.ThreadPoolExecutor(200) as pool:
            futures = [pool.submit(ask, e, CHEAP, None, 200, headers) for _ in range(200)]
            results = [f.result() for f in futures]
        ok = [r for r in results if r.status_code == 200]
        refused = [r for r in results if r.status_code == 429]
        assert len(ok) + len(refused) == 200, {r.status_code for r in results}
        spent = sum(usd(r.headers["x-semgate-cost-usd"]) for r in ok)
        assert spent <= budget, (spent, budget)
        need = max(needed_micros(r) for r in refused)
        # Admitted while spent + reserved + estimate fit: every refusal came when the room
        # left (the budget minus what was held by requests in flight) was below one estimate.
        assert len(ok) >= budget // need, (len(ok), budget, need)
        # In-flight holds come back soon: the refusals say so.
        assert {r.headers["retry-after"] for r in refused} == {"1"}
        assert all(r.json()["error"]["type"] == "budget_exceeded" for r in refused)
    finally:
        e.stop()


def test_the_stream_usage_chunk_is_stripped_unless_asked_and_the_stream_is_charged(gw):
    client = openai.OpenAI(base_url=f"{gw.url}/v1", api_key=OPEN, max_retries=0)
    msgs = [{"role": "user", "content": f"stream the caption {uuid.uuid4().hex}"}]
    before = gw.stat("semgate_spend_micro_usd_total")
    chunks = list(client.chat.completions.create(model="gpt-4o-mini", messages=msgs, stream=True, max_tokens=50))
    assert chunks and all(c.usage is None for c in chunks), "the gateway's usage chunk reached the client"
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    wait_until(lambda: gw.stat("semgate_spend_micro_usd_total") > before, "the stream to be charged")
    msgs = [{"role": "user", "content": f"stream the caption {uuid.uuid4().hex}"}]
    chunks = list(client.chat.completions.create(model="gpt-4o-mini", messages=msgs, stream=True, max_tokens=50,
                                                 stream_options={"include_usage": True}))
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0


def test_customer_spend_reaches_the_access_log_the_ledger_and_hostile_ids_are_cleaned(provider, tmp_path):
    side = Sidecar(tmp_path / "sidecar")
    cfg = budget_config(ledger={"cluster": "semgate_sidecar", "token_env": "SEMGATE_SIDECAR_TOKEN",
                                "sync_interval_ms": 200})
    doc = render_envoy_config(provider.port, free_port(), free_port(), cfg, sidecar_port=side.port)
    e = Envoy(provider, doc=doc)
    try:
        paid = 0
        for customer in ["merchant-7", "merchant-7", "merchant-9"]:
            r = ask(e, OPEN, headers={"x-customer-id": customer})
            assert r.status_code == 200, r.text
            paid += usd(r.headers["x-semgate-cost-usd"])
        # The body's `user` names the customer when no header does; 10 KB of it is cut.
        r = ask(e, OPEN, user="u" * 10_000)
        assert r.status_code == 200, r.text
        paid += usd(r.headers["x-semgate-cost-usd"])
        r = ask(e, OPEN, headers={"x-customer-id": "evil\tcust"})
        assert r.status_code == 200, r.text
        paid += usd(r.headers["x-semgate-cost-usd"])

        def ledger():
            v = requests.get(f"{side.url}/v1/ledger", headers={"authorization": f"Bearer {SIDECAR_TOKEN}"}, timeout=5)
            v.raise_for_status()
            return v.json()

        def customer_total(view, ident):
            rows = [c for c in view["customers"] if c["id"] == ident]
            return sum(c["spent_micros"] for c in rows if len(c["period"]) == 10)

        wait_until(lambda: sum(k["spent_micros"] for k in ledger()["keys"]
                               if k["id"] == "open" and len(k["period"]) == 10) == paid, "the ledger to hold the spend")
        view = ledger()
        assert customer_total(view, "open/merchant-7") > 0
        assert customer_total(view, "open/merchant-9") > 0
        assert customer_total(view, "open/" + "u" * 32) > 0
        assert all("\t" not in c["id"] and len(c["id"]) <= len("open/") + 32 for c in view["customers"])
        # The access log line of each paid request names key, team, customer, model and cost.
        wait_until(lambda: "merchant-9" in e.log(), "the access log")
        line = next(l for l in e.log().splitlines() if "merchant-9" in l)
        spend = json.loads(line.split("spend=", 1)[1])
        assert spend["key"] == "open" and spend["team"] == "t2" and spend["customer"] == "merchant-9"
        assert spend["model"] == "gpt-4o-mini" and spend["cache"] == "miss" and usd(spend["cost_usd"]) > 0
        assert spend["input_tokens"] > 0 and spend["output_tokens"] > 0
        assert e.stat("semgate_ledger_syncs_total") > 0
        # Prometheus has the spend per key, team and customer (bounded: 100 customers a key).
        prom = e.prometheus()
        assert re.search(r'semgate_key_spend_micro_usd_total\{[^}]*customer="merchant-9"[^}]*\} [1-9]', prom), \
            [l for l in prom.splitlines() if "semgate_key_" in l][:10]
    finally:
        e.stop()
        side.stop()


def priced(body):
    """What an answer cost at gpt-4o-mini's list price ($0.15 / $0.60 per 1M tokens), from the
    usage the provider put in the body the client received, rounded up per request."""
    u = body["usage"]
    return -(-(u["prompt_tokens"] * 150_000 + u["completion_tokens"] * 600_000) // 1_000_000)


def test_two_replicas_share_one_budget_through_the_ledger_across_kills_and_restarts(provider, tmp_path):
    from harness import _semgate_filter
    side = Sidecar(tmp_path / "sidecar")
    side_port = side.port
    cfg = budget_config(ledger={"cluster": "semgate_sidecar", "token_env": "SEMGATE_SIDECAR_TOKEN",
                                "sync_interval_ms": 200, "replica_env": "SEMGATE_REPLICA"})
    cfg["virtual_keys"].append({"id": "shared", "key_sha256": sha("sk-test-shared"),
                                "budget": {"usd": 0.0008, "period": "daily"}})

    def replica(name):
        doc = render_envoy_config(provider.port, free_port(), free_port(), cfg, sidecar_port=side_port)
        _semgate_filter(doc)["config"]["vm_config"]["environment_variables"]["host_env_keys"].append("SEMGATE_REPLICA")
        return Envoy(provider, doc=doc, env={"SEMGATE_REPLICA": name})

    def ledger_total():
        v = requests.get(f"{side.url}/v1/ledger", headers={"authorization": f"Bearer {SIDECAR_TOKEN}"}, timeout=5)
        v.raise_for_status()
        return sum(k["spent_micros"] for k in v.json()["keys"] if k["id"] == "shared" and len(k["period"]) == 10)

    a, b = replica("a"), replica("b")
    paid, costs, refused = 0, [], set()
    prompt = "Describe the product photo: a ceramic mug, matte red glaze, on a wooden table. " * 4
    try:
        for i in range(200):
            if refused == {"a", "b"}:
                break
            name, gw = ("a", a) if i % 2 == 0 else ("b", b)
            r = ask(gw, "sk-test-shared", f"{prompt} {uuid.uuid4().hex}", max_tokens=20)
            if r.status_code == 429:
                refused.add(name)
            else:
                assert r.status_code == 200, r.text
                cost = priced(r.json())
                assert usd(r.headers["x-semgate-cost-usd"]) == cost
                paid += cost
                costs.append(cost)
            if i == 6:
                side.proc.kill()  # SIGKILL: the ledger is gone; the replicas keep their deltas
                side.proc.wait()
            if i == 12:
                side = Sidecar(tmp_path / "sidecar", "--listen", f"127.0.0.1:{side_port}")
            if i == 18:
                time.sleep(1.0)  # b's spend is synced; then b is killed and comes back
                b.proc.kill()
                b.proc.wait()
                b = replica("b")
                wait_until(lambda: b.stat("semgate_ledger_syncs_total") > 0, "the restarted replica to sync")
            # Slower than the ledger's staleness (two syncs): each replica sees the other's spend.
            time.sleep(0.45)
        assert refused == {"a", "b"}, "the budget never ran out"
        budget = usd("0.0008")
        # Sequential requests, each admitted after the other replica's spend reached it: at most
        # the last request's cost over the budget (the README's bound with N = 1, A = 0).
        assert paid <= budget + max(costs), (paid, budget)
        # Nothing lost across the kills, nothing counted twice.
        wait_until(lambda: ledger_total() == paid, f"the ledger to hold all {paid} micro-dollars")
    finally:
        a.stop()
        b.stop()
        side.stop()


def test_an_answer_from_a_provider_chain_is_priced_for_the_provider_that_gave_it(gw):
    r = gw.chat({"model": "claude-3-5-sonnet", "max_tokens": 50,
                 "messages": [{"role": "user", "content": f"caption the mug {uuid.uuid4().hex}"}]}, key=OPEN)
    assert r.status_code == 200, r.text
    assert r.headers["x-semgate-provider"] == "anthropic"
    u = r.json()["usage"]
    # Claude 3.5 Sonnet: $3 in, $15 out per 1M tokens.
    want = -(-(u["prompt_tokens"] * 3_000_000 + u["completion_tokens"] * 15_000_000) // 1_000_000)
    assert usd(r.headers["x-semgate-cost-usd"]) == want
