"""Layer 2 through a real Envoy 1.40 + semgate.wasm + the sidecar (sidecar/), here with the
sidecar's hashing test embedder (bag of words) so no model is needed: what is tested is the
filter's callouts, scoping, the guard, failing open and persistence, not embedding quality."""

import json
import uuid

import pytest

from conftest import gateway_test_config
from harness import ROOT, Envoy, Sidecar, free_port, render_envoy_config, wait_until


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("sidecar")


@pytest.fixture(scope="module")
def stack(provider, data_dir):
    sidecar = Sidecar(data_dir)
    cfg = gateway_test_config()
    cfg["semantic"] = {"enabled": True, "threshold": 0.8, "timeout_ms": 2000}
    cfg["auth"]["keys"].append({"key": "sk-strict", "tenant": "strict"})
    cfg["policies"] += [
        {"match": {"tenant": "strict"}, "cache": {"semantic_threshold": 0.999}},
        {"match": {"model": "gpt-4.1-nano"}, "cache": {"semantic": False}},
    ]
    doc = render_envoy_config(provider.port, free_port(), free_port(), cfg, sidecar_port=sidecar.port)
    envoy = Envoy(provider, doc=doc)
    box = {"sidecar": sidecar, "envoy": envoy}
    yield box
    envoy.stop()
    box["sidecar"].proc.kill()


def chat(text, **extra):
    return {"model": "gpt-4o-mini", "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": text}], **extra}


def test_a_rephrased_question_is_a_semantic_hit_without_the_provider(stack, provider):
    envoy = stack["envoy"]
    tag = uuid.uuid4().hex[:8]
    first = stack["sidecar"].after_store(lambda: envoy.chat(chat(f"How do I reset my password for account {tag}?")))
    assert first.headers["x-semgate-cache"] == "miss"
    started = provider.started()
    r = envoy.chat(chat(f"How do I reset my password for account {tag}, please?"))
    assert r.status_code == 200
    assert r.headers["x-semgate-cache"] == "hit-semantic"
    assert float(r.headers["x-semgate-similarity"]) >= 0.8
    assert r.json()["choices"][0]["message"]["content"] == first.json()["choices"][0]["message"]["content"]
    assert provider.started() == started
    assert envoy.stat("semgate_cache_hits_semantic_total") >= 1
    # Lookup latency is a histogram in Envoy's stats (exported at its next stats flush).
    def lookups_recorded():
        count = [l for l in envoy.prometheus().splitlines() if l.startswith("semgate_sidecar_lookup_ms_count")]
        return count and int(count[0].split()[-1]) >= 2

    wait_until(lookups_recorded, "two lookups in the semgate_sidecar_lookup_ms histogram")


def test_near_misses_go_to_the_provider(stack, provider):
    envoy = stack["envoy"]
    tag = uuid.uuid4().hex[:8]
    assert envoy.chat(chat(f"Convert 100 USD to EUR for order {tag}")).headers["x-semgate-cache"] == "miss"
    for near in [f"Convert 100 EUR to USD for order {tag}", f"Convert 200 USD to EUR for order {tag}", f"Convert 100 GBP to EUR for order {tag}"]:
        started = provider.started()
        r = envoy.chat(chat(near))
        assert r.headers["x-semgate-cache"] == "miss", near
        assert provider.started() == started + 1
    assert "semgate_sidecar_guard_rejections_total" in stack["sidecar"].metrics()


def test_scopes_never_leak(stack, provider):
    envoy = stack["envoy"]
    tag = uuid.uuid4().hex[:8]
    first = stack["sidecar"].after_store(lambda: envoy.chat(chat(f"What is the warranty on item {tag}?")))
    assert first.headers["x-semgate-cache"] == "miss"
    rephrased = f"What is the warranty on item {tag}, please?"
    # Another tenant, another model, another system prompt: never served tenant A's answer.
    assert envoy.chat(chat(rephrased), key="sk-team-b").headers["x-semgate-cache"] == "miss"
    assert envoy.chat({**chat(rephrased), "model": "gpt-4o"}).headers["x-semgate-cache"] == "miss"
    other_system = {"model": "gpt-4o-mini", "messages": [{"role": "system", "content": "Answer in French."}, {"role": "user", "content": rephrased}]}
    assert envoy.chat(other_system).headers["x-semgate-cache"] == "miss"
    assert envoy.chat(chat(rephrased)).headers["x-semgate-cache"] == "hit-semantic"


def test_streamed_answers_are_replayed_as_streams(stack, provider):
    envoy = stack["envoy"]
    tag = uuid.uuid4().hex[:8]
    first = stack["sidecar"].after_store(lambda: envoy.chat(chat(f"Stream the shipping times for parcel {tag}", stream=True)))
    raw = first.content
    assert first.headers["x-semgate-cache"] == "miss"
    r = envoy.chat(chat(f"Stream the shipping times for parcel {tag} please", stream=True))
    assert r.headers["x-semgate-cache"] == "hit-semantic"
    assert r.headers["content-type"].startswith("text/event-stream")
    assert r.content == raw
    # A JSON request never gets the streamed entry.
    assert envoy.chat(chat(f"Stream the shipping times for parcel {tag} please")).headers["x-semgate-cache"] == "miss"


def test_sidecar_down_fails_open_and_restart_keeps_entries(stack, provider, data_dir):
    envoy = stack["envoy"]
    tag = uuid.uuid4().hex[:8]
    first = stack["sidecar"].after_store(lambda: envoy.chat(chat(f"Where is my refund for ticket {tag}?")))
    assert first.headers["x-semgate-cache"] == "miss"
    assert envoy.chat(chat(f"Where is my refund for ticket {tag}, please?")).headers["x-semgate-cache"] == "hit-semantic"
    old = stack["sidecar"]
    port = old.port
    old.stop()  # SIGTERM: flushes the journal
    errors = envoy.stat("semgate_sidecar_errors_total")
    for i in range(3):
        r = envoy.chat(chat(f"Sidecar is down {tag} {i}"))
        assert r.status_code == 200 and r.headers["x-semgate-cache"] == "miss"
    assert envoy.stat("semgate_sidecar_errors_total") >= errors + 3
    # Restart on the same port and data folder: the stored entry still hits.
    stack["sidecar"] = Sidecar(data_dir, "--listen", f"127.0.0.1:{port}")
    assert stack["sidecar"].port == port
    r = envoy.chat(chat(f"Where is my refund for ticket {tag}, please, now?"))
    assert r.headers["x-semgate-cache"] == "hit-semantic"


def test_threshold_and_layer_per_policy(stack, provider):
    envoy, sidecar = stack["envoy"], stack["sidecar"]
    tag = uuid.uuid4().hex[:8]
    # A tenant whose policy demands 0.999: a rephrasing that hits at 0.8 goes to the provider.
    assert envoy.chat(chat(f"How long does delivery take for box {tag}?"), key="sk-strict").headers["x-semgate-cache"] == "miss"
    r = envoy.chat(chat(f"How long does delivery take for box {tag}, please?"), key="sk-strict")
    assert r.headers["x-semgate-cache"] == "miss"
    r = sidecar.after_store(lambda: envoy.chat(chat(f"How long does delivery take for box {tag}, please?")))
    assert r.headers["x-semgate-cache"] == "miss"
    assert envoy.chat(chat(f"How long does delivery take for box {tag}?")).headers["x-semgate-cache"] == "hit-semantic"
    # A model whose policy turns the layer off never calls the sidecar, and keeps exact hits.
    nano = {**chat(f"Name a colour for item {tag}"), "model": "gpt-4.1-nano"}
    lookups = sidecar.metric("semgate_sidecar_lookups_total")
    assert envoy.chat(nano).headers["x-semgate-cache"] == "miss"
    assert envoy.chat(nano).headers["x-semgate-cache"] == "hit-exact"
    rephrased = {**nano, "messages": chat(f"Name a colour for item {tag}, please")["messages"]}
    assert envoy.chat(rephrased).headers["x-semgate-cache"] == "miss"
    assert sidecar.metric("semgate_sidecar_lookups_total") == lookups


def test_near_miss_pairs_of_the_eval_set_never_hit(stack, provider):
    """Every near-miss pair of the eval set's dev split, each in its own scope (a system
    prompt naming the pair): the first text is answered and stored, the second must reach the
    provider. The hashing embedder scores many pairs above the threshold (same words), so it
    is the guard that refuses them."""
    envoy, sidecar = stack["envoy"], stack["sidecar"]
    rows = [json.loads(line) for line in (ROOT / "sidecar/eval/pairs.jsonl").read_text().splitlines() if line.strip()]
    near = [r for r in rows if r["label"] == "miss" and r["split"] == "dev"]
    assert len(near) >= 100
    run = uuid.uuid4().hex[:8]
    rejected_before = guard_rejections(sidecar)
    for r in near:
        system = {"role": "system", "content": f"Eval pair {r['id']} run {run}."}
        first = sidecar.after_store(
            lambda: envoy.chat({"model": "gpt-4o-mini", "messages": [system, {"role": "user", "content": r["a"]}]}))
        assert first.headers["x-semgate-cache"] == "miss", r["id"]
        started = provider.started()
        second = envoy.chat({"model": "gpt-4o-mini", "messages": [system, {"role": "user", "content": r["b"]}]})
        assert second.headers["x-semgate-cache"] == "miss", (r["id"], r["a"], r["b"])
        assert provider.started() == started + 1
    rejected = guard_rejections(sidecar) - rejected_before
    print(f"{len(near)} near-miss pairs, {rejected:.0f} refused by the guard")
    assert rejected >= len(near) // 2, "most pairs must reach the guard, or the test proves little"


def guard_rejections(sidecar):
    return sum(float(line.split()[-1]) for line in sidecar.metrics().splitlines()
               if line.startswith("semgate_sidecar_guard_rejections_total{"))


def hashing_cosine(a, b, dim=384):
    """The sidecar's hashing test embedder (sidecar/src/embed/mod.rs: FNV-1a of each lowercase
    word, counted in `dim` buckets), so the test knows which pairs reach the guard."""
    import math
    import re

    def vec(text):
        v = [0.0] * dim
        for w in re.split(r"[^0-9a-z]+", text.lower()):
            if w:
                h = 0xcbf29ce484222325
                for byte in w.encode():
                    h = ((h ^ byte) * 0x100000001b3) % (1 << 64)
                v[h % dim] += 1
        n = math.sqrt(sum(x * x for x in v)) or 1e-9
        return [x / n for x in v]

    return sum(x * y for x, y in zip(vec(a), vec(b)))


# Near-misses of the families the structural guard exists for, written for this test.
FAMILY_NEAR_MISSES = [
    ("role swap", "Alt text: a nurse helping a pilot carry luggage", "Alt text: a pilot helping a nurse carry luggage"),
    ("operands around a frame", "Exchange my kroner for zloty at the airport", "Exchange my zloty for kroner at the airport"),
    ("opposite superlative", "Which is the cheapest train from Milan to Turin?", "Which is the most expensive train from Milan to Turin?"),
    ("lowercase name", "how do I read a parquet file with pandas", "how do I read a parquet file with duckdb"),
    ("ordinal", "What is the second tallest mountain in Peru?", "What is the fourth tallest mountain in Peru?"),
    ("count", "Summarise a chapter of this book in French", "Summarise every chapter of this book in French"),
    ("negation without not", "Rewrite my cover letter but leave out the salary", "Rewrite my cover letter but focus on the salary"),
    ("attribute", "Caption for a floral silk scarf with fringe", "Caption for a paisley silk scarf with fringe"),
    ("tense", "When was the next total eclipse visible from Chile?", "When will the next total eclipse be visible from Chile?"),
    ("with or without", "Caption a leather tote bag with a shoulder strap", "Caption a leather tote bag without a shoulder strap"),
    ("unit", "How many grams of flour are in 3 cups for this bread?", "How many ounces of flour are in 3 cups for this bread?"),
    ("earliest or latest", "List the earliest flights from Oslo to Bergen on Friday", "List the latest flights from Oslo to Bergen on Friday"),
    ("number", "Alt text: 3 ceramic mugs on a wooden shelf", "Alt text: 5 ceramic mugs on a wooden shelf"),
    ("colour", "Caption a navy wool coat with brass buttons", "Caption a beige wool coat with brass buttons"),
]


def test_near_misses_of_every_guard_family_reach_the_provider(stack, provider):
    """One stored answer per family, each in its own scope; its near-miss must reach the fake
    provider (its started-requests counter is the witness). The hashing embedder scores these
    pairs at or above the threshold (0.8), so it is the guard that refuses them."""
    envoy, sidecar = stack["envoy"], stack["sidecar"]
    run = uuid.uuid4().hex[:8]
    rejected_before = guard_rejections(sidecar)
    reaching_guard = 0
    for family, a, b in FAMILY_NEAR_MISSES:
        reaching_guard += hashing_cosine(a, b) >= 0.8
        system = {"role": "system", "content": f"Family {family} run {run}."}
        first = sidecar.after_store(
            lambda: envoy.chat({"model": "gpt-4o-mini", "messages": [system, {"role": "user", "content": a}]}))
        assert first.headers["x-semgate-cache"] == "miss", family
        started = provider.started()
        second = envoy.chat({"model": "gpt-4o-mini", "messages": [system, {"role": "user", "content": b}]})
        assert second.headers["x-semgate-cache"] == "miss", (family, a, b)
        assert provider.started() == started + 1, family
    assert reaching_guard >= 10, "most pairs must score above the threshold, or the test proves little"
    assert guard_rejections(sidecar) - rejected_before >= reaching_guard
