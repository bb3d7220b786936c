"""Semantic lookup latency, sidecar alone and through Envoy (part of `make bench`).

The sidecar runs the local MiniLM model on one core (RAYON_NUM_THREADS=1) with the embedded
index. One real answer is stored through Envoy, then the scope is filled to 10k and to 100k
entries with synthetic vectors (sidecar/examples/fill_journal.rs appends them to the journal,
which the restarted sidecar replays). At each size:

  * sidecar alone: POST /v1/lookup with rephrasings of the stored question, one at a time,
    timed by this client over HTTP on loopback;
  * through Envoy: the same kind of rephrasing sent to Envoy + semgate (other texts, so the
    sidecar's embedding cache never answers), each a semantic hit answered by Envoy: the
    client's end-to-end time, and Envoy's own `semgate_sidecar_lookup_ms` histogram
    (dispatch to answer, ms resolution).

Every text is new to the sidecar process that answers it (it restarts at each size), so
every lookup embeds. Prints a Markdown table; also written to bench/results-semantic.md.
usage: semantic.py MODEL_DIR
"""

import json
import os
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from conftest import gateway_test_config  # noqa: E402
from harness import Envoy, FakeProvider, Sidecar, free_port, render_envoy_config, wait_until  # noqa: E402

FILL = ROOT / "target/release/examples/fill_journal"
BASE = "How do I reset my password?"
PREFIXES = ["", "Hi, ", "Hello, ", "Hey, ", "Hi there, ", "Hello there, ", "Quick question: ", "Sorry, ",
            "Excuse me, ", "Hi all, ", "Hey there, ", "One question: ", "Question: ", "Hiya, ", "Help: "]
SUFFIXES = ["", " please", " again", " now", " quickly", " today"]
ENDINGS = ["?", "? Thanks.", "? Thank you."]


def variants():
    out = []
    for p in PREFIXES:
        for s in SUFFIXES:
            for e in ENDINGS:
                t = f"{p}{'how' if p else 'How'} do I reset my password{s}{e}"
                if t != BASE:
                    out.append(t)
    return out


def chat(text):
    return {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": text}]}


def pct(values, p):
    v = sorted(values)
    return v[round((len(v) - 1) * p)]


def first_namespace(journal: Path) -> str:
    """The scope of the first record of a sidecar journal (format in sidecar/src/index.rs)."""
    with journal.open("rb") as f:
        f.read(4 + 8 * 3)
        (n,) = struct.unpack("<I", f.read(4))
        return f.read(n).decode()


def envoy_quantiles(envoy, name):
    """Envoy's cumulative P50/P99 of a histogram (after its next stats flush)."""
    def line():
        text = requests.get(f"{envoy.admin}/stats", params={"filter": name}, timeout=5).text
        return text if "P50(" in text else None
    wait_until(line, f"Envoy's {name} histogram", timeout=15)
    text = line()
    q = {}
    for part in text.split(":", 1)[1].split():
        label, vals = part.split("(", 1)
        q[label] = float(vals.rstrip(")").split(",")[1])
    return q["P50"], q["P99"]


def main():
    model_dir = sys.argv[1] if len(sys.argv) > 1 else str(ROOT / ".cache/models/all-MiniLM-L6-v2")
    env = {"RAYON_NUM_THREADS": "1"}
    side_args = ("--model-dir", model_dir, "--max-entries", "200000")
    data = Path(tempfile.mkdtemp(prefix="semgate-bench-"))
    provider = FakeProvider()
    sidecar = Sidecar(data, *side_args, embedder="local", env=env)
    port = sidecar.port
    cfg = gateway_test_config()
    cfg["semantic"] = {"enabled": True, "timeout_ms": 2000}

    def start_envoy():
        return Envoy(provider, doc=render_envoy_config(provider.port, free_port(), free_port(), cfg, sidecar_port=port))

    envoy = start_envoy()
    assert envoy.chat(chat(BASE)).headers["x-semgate-cache"] == "miss"
    wait_until(lambda: sidecar.metric("semgate_sidecar_entries") >= 1, "the stored answer")
    sidecar.stop()
    journal = next(data.glob("vectors-*.journal"))
    scope = first_namespace(journal)

    # Keep the rephrasings the model + guard accept as hits for the stored question.
    sidecar = Sidecar(data, "--listen", f"127.0.0.1:{port}", *side_args, embedder="local", env=env)
    hitting = [t for t in variants() if sidecar.post("/v1/lookup", {"scope": scope, "text": t}).json()["hit"]]
    sidecar.stop()
    envoy.stop()
    direct_texts, envoy_texts = hitting[0::2], hitting[1::2]
    rows = []
    for size in (10_000, 100_000):
        subprocess.run([str(FILL), str(journal), scope, str(size), "384"], check=True, capture_output=True)
        sidecar = Sidecar(data, "--listen", f"127.0.0.1:{port}", *side_args, embedder="local", env=env)
        entries = sidecar.health()["entries"]
        direct_ms, direct_hits = [], 0
        for t in direct_texts:
            t0 = time.perf_counter()
            r = sidecar.post("/v1/lookup", {"scope": scope, "text": t})
            direct_ms.append((time.perf_counter() - t0) * 1e3)
            direct_hits += r.json()["hit"]
        envoy = start_envoy()
        started = provider.started()
        e2e_ms, envoy_hits = [], 0
        for t in envoy_texts:
            t0 = time.perf_counter()
            r = envoy.chat(chat(t))
            e2e_ms.append((time.perf_counter() - t0) * 1e3)
            envoy_hits += r.headers.get("x-semgate-cache") == "hit-semantic"
        provider_calls = provider.started() - started
        in_envoy = envoy_quantiles(envoy, "semgate_sidecar_lookup_ms")
        envoy.stop()
        sidecar.stop()
        rows.append((entries, direct_ms, direct_hits, e2e_ms, envoy_hits, in_envoy, provider_calls))
    provider.stop()

    out = ["## Semantic lookup latency (MiniLM on one core, embedded index, all entries in one scope)", "",
           f"{len(direct_texts)} lookups straight to the sidecar and {len(envoy_texts)} requests through Envoy per "
           "size, one at a time, each a rephrasing never embedded before by that sidecar process.", "",
           "| entries | sidecar alone p50 | p99 | through Envoy, client p50 | p99 | Envoy's lookup_ms p50 | p99 "
           "| hits (alone / Envoy) | provider calls |",
           "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for entries, d, dh, e, eh, (q50, q99), calls in rows:
        out.append(f"| {entries:,} | {pct(d, .5):.1f} ms | {pct(d, .99):.1f} ms | {pct(e, .5):.1f} ms | "
                   f"{pct(e, .99):.1f} ms | {q50:.1f} ms | {q99:.1f} ms | {dh}/{len(d)} / {eh}/{len(e)} | {calls} |")
    out += ["", "targets: lookup p50 <= 20 ms with the local model on one core; p99 <= 50 ms at 100k entries"]
    text = "\n".join(out)
    print(text)
    (ROOT / "bench/results-semantic.md").write_text(text + "\n")


if __name__ == "__main__":
    main()
