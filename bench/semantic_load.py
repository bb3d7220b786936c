"""What the semantic layer adds to exact misses under load, through Envoy (part of `make bench`).

The fake provider answers every request after 300 ms. Each request body is new (no exact or
semantic hit is possible), so every request is a miss that goes to the provider; with the
semantic layer on, each first waits for a sidecar lookup (the filter's default
`semantic.timeout_ms`, 50 ms). The sidecar runs the local MiniLM model on one core
(RAYON_NUM_THREADS=1, one embedding worker) with the embedded index, its scope filled with
10,000 stored synthetic request texts, with the WordLlama first stage (`--stage-one`) when a
WordLlama directory is given, as `make bench` and `make demo` run it.

Two loads, each run with the layer off (exact-only, the baseline) and on:
  * 20 misses/s offered: 8 clients, each sending one request every 0.4 s;
  * 210 misses/s offered: 64 clients, each sending its next request as soon as the last is
    answered (64 / 0.3 s).
Reported: the client's p50/p99 latency and throughput, the added p50/p99 over exact-only,
and the sidecar's own counts: lookups, completed (answered with a decision: lookups less the
shed; Envoy may have given up on a few of them), shed (answered at once as a miss because the queue could not meet
the deadline), expired and abandoned in the queue (stores included), answered by the first
stage, and lookups Envoy gave up on (`semgate_sidecar_errors_total`: its timeout passed
first); and where the sidecar's lookup time went, per phase. Written to bench/results-load.md.

usage: semantic_load.py MODEL_DIR [WORDLLAMA_DIR] [SECONDS]
"""

import json
import os
import re
import random
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from conftest import gateway_test_config  # noqa: E402
from harness import Envoy, FakeProvider, Sidecar, free_port, render_envoy_config, wait_until  # noqa: E402

FILL = ROOT / "target/release/examples/fill_journal"
LATENCY_MS = 300
STORED = 10_000
VERBS = ["reverse", "sort", "parse", "merge", "filter", "cache", "serialize", "validate", "compress", "index"]
NOUNS = ["list", "map", "string", "file", "table", "queue", "tree", "date", "matrix", "stream"]
LANGS = ["Python", "Rust", "Go", "Java", "Kotlin", "Ruby", "C#", "Swift", "Scala", "Elixir"]


def text(k, rng):
    return (f"How do I {rng.choice(VERBS)} a {rng.choice(NOUNS)} of {rng.choice(NOUNS)}s in "
            f"{rng.choice(LANGS)} when it holds {k} items and {rng.randint(2, 999)} of them repeat?")


def chat(t):
    return {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": t}]}


def cpu_s(pid):
    """CPU seconds (user + system) a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def envoy_quantiles(envoy, name):
    """(p50, p99) of one of Envoy's histograms, cumulative since start, from its text /stats
    (after a stats flush; None when it has no samples)."""
    text = requests.get(f"{envoy.admin}/stats", params={"filter": name}, timeout=5).text
    for line in text.splitlines():
        if line.split(":")[0].endswith(name) and "P50(" in line:
            q = {k: v for k, _, v in re.findall(r"P([0-9.]+)\(([^,]+),([^)]+)\)", line)}
            try:
                return float(q["50"]), float(q["99"])
            except (KeyError, ValueError):
                return None
    return None


def pct(values, p):
    v = sorted(values)
    return v[round((len(v) - 1) * p)] if v else float("nan")


def load(envoy, clients, period_s, seconds, seed):
    """`clients` threads, each sending one new request every `period_s` (or at once when the
    last took longer) for `seconds`. Returns (latencies in ms, failures, requests per second)."""
    lat, failures, lock, statuses = [], [0], threading.Lock(), {}
    stop_at = time.monotonic() + seconds

    def client(c):
        rng = random.Random(seed * 1000 + c)
        session = requests.Session()
        headers = {"content-type": "application/json", "authorization": "Bearer sk-demo"}
        k = 0
        # Spread the clients' first requests over one period.
        next_at = time.monotonic() + period_s * c / clients
        while True:
            now = time.monotonic()
            if next_at > now:
                time.sleep(next_at - now)
            if time.monotonic() >= stop_at:
                return
            k += 1
            body = json.dumps(chat(text(seed * 10_000_000 + c * 100_000 + k, rng)))
            t0 = time.perf_counter()
            try:
                r = session.post(envoy.url + "/v1/chat/completions", data=body, headers=headers, timeout=10)
                ok = r.status_code == 200
                if not ok:
                    with lock:
                        statuses[r.status_code] = statuses.get(r.status_code, 0) + 1
            except requests.RequestException as e:
                ok = False
                with lock:
                    statuses[type(e).__name__] = statuses.get(type(e).__name__, 0) + 1
            ms = (time.perf_counter() - t0) * 1e3
            with lock:
                if ok:
                    lat.append(ms)
                else:
                    failures[0] += 1
            next_at = max(next_at + period_s, time.monotonic())

    started = time.monotonic()
    threads = [threading.Thread(target=client, args=(c,)) for c in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if statuses:
        print("failures by status:", statuses, flush=True)
    return lat, failures[0], len(lat) / (time.monotonic() - started)


def main():
    model_dir = sys.argv[1] if len(sys.argv) > 1 else str(ROOT / ".cache/models/all-MiniLM-L6-v2")
    stage_one = sys.argv[2] if len(sys.argv) > 2 and sys.argv[2] else None
    seconds = float(sys.argv[3]) if len(sys.argv) > 3 else 20.0
    env = {"RAYON_NUM_THREADS": "1"}
    data = Path(tempfile.mkdtemp(prefix="semgate-load-"))
    config = data / "sidecar.json"
    config.write_text(json.dumps({"embed_workers": 1}))
    side_args = ["--model-dir", model_dir, "--max-entries", "200000", "--config", str(config)]
    if stage_one:
        side_args += ["--stage-one", stage_one]
    provider = FakeProvider("--latency-ms", str(LATENCY_MS))
    port = free_port()

    def sidecar():
        return Sidecar(data, "--listen", f"127.0.0.1:{port}", *side_args, embedder="local", env=env)

    def envoy(semantic):
        cfg = gateway_test_config()
        cfg["semantic"] = {"enabled": semantic}
        return Envoy(provider, doc=render_envoy_config(provider.port, free_port(), free_port(), cfg, sidecar_port=port))

    # One real entry gives the scope; fill it to STORED entries and restart on the journal.
    side = sidecar()
    e = envoy(True)
    e.chat(chat("How do I reset my password?"))
    wait_until(lambda: side.metric("semgate_sidecar_entries") >= 1, "the stored answer")
    e.stop()
    side.stop()
    journal = next(data.glob("vectors-*.journal"))
    from semantic import first_namespace  # noqa: E402  (bench/semantic.py)
    # Synthetic request texts (coding questions, captions, conversions, support), so the first
    # stage reads the scope as it would read real traffic; their MiniLM vectors are pseudo-random.
    subprocess.run([str(FILL), str(journal), first_namespace(journal), str(STORED), "384", "requests"], check=True,
                   capture_output=True)

    rows = []
    for label, clients, period in (("20 misses/s", 8, 0.4), ("210 misses/s (64 clients)", 64, 0.0)):
        base = envoy(False)
        envoy_cpu = cpu_s(base.proc.pid)
        off, off_fail, off_rps = load(base, clients, period, seconds, seed=1)
        off_cpu = {"envoy": cpu_s(base.proc.pid) - envoy_cpu}
        base.stop()
        side = sidecar()
        before = {m: side.metric(m) for m in COUNTERS + PHASE_METRICS}
        on_envoy = envoy(True)
        cpu0 = (cpu_s(on_envoy.proc.pid), cpu_s(side.proc.pid))
        on, on_fail, on_rps = load(on_envoy, clients, period, seconds, seed=2)
        on_cpu = {"envoy": cpu_s(on_envoy.proc.pid) - cpu0[0], "sidecar": cpu_s(side.proc.pid) - cpu0[1]}
        time.sleep(0.5)
        counts = {m: side.metric(m) - before[m] for m in COUNTERS}
        counts["envoy_errors"] = on_envoy.stat("semgate_sidecar_errors_total")
        time.sleep(5.5)  # Envoy's stats flush (5 s) makes its histograms' quantiles readable
        counts["callout"] = envoy_quantiles(on_envoy, "semgate_sidecar_lookup_ms")
        for phase in PHASES:
            for kind in ("seconds_total", "total"):
                name = f'semgate_sidecar_lookup_phase_{kind}{{phase="{phase}"}}'
                counts[f"{phase}_{kind}"] = side.metric(name) - before[name]
        on_envoy.stop()
        side.stop()
        counts["cpu"] = (off_cpu, on_cpu, seconds)
        rows.append((label, off, off_fail, off_rps, on, on_fail, on_rps, counts))
        print(label, "off p50", pct(off, .5), "on p50", pct(on, .5), counts, flush=True)
    provider.stop()

    out = ["## Exact misses under load through Envoy, semantic layer off and on", "",
           f"Fake provider answering in {LATENCY_MS} ms; every request body new; sidecar: MiniLM on one core "
           f"(one embedding worker), embedded index with {STORED:,} entries in the scope"
           + (", WordLlama first stage" if stage_one else "") + f"; filter `semantic.timeout_ms` 50; "
           f"{seconds:.0f} s per run.", "",
           "| offered | layer | requests/s | p50 | p99 | added p50 | added p99 | failed | lookups | completed | shed "
           "| expired | abandoned | first stage | Envoy gave up |",
           "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for label, off, off_fail, off_rps, on, on_fail, on_rps, c in rows:
        out.append(f"| {label} | off | {off_rps:.0f} | {pct(off, .5):.1f} ms | {pct(off, .99):.1f} ms | | | {off_fail} "
                   "| | | | | | | |")
        lookups = c["semgate_sidecar_lookups_total"]
        completed = lookups - c["semgate_sidecar_lookups_shed_total"]
        out.append(f"| {label} | on | {on_rps:.0f} | {pct(on, .5):.1f} ms | {pct(on, .99):.1f} ms | "
                   f"{pct(on, .5) - pct(off, .5):+.1f} ms | {pct(on, .99) - pct(off, .99):+.1f} ms | {on_fail} | "
                   f"{lookups:.0f} | {completed:.0f} | {c['semgate_sidecar_lookups_shed_total']:.0f} | "
                   f"{c['semgate_sidecar_expired_total']:.0f} | {c['semgate_sidecar_abandoned_total']:.0f} | "
                   f"{c['semgate_sidecar_stage_one_misses_total']:.0f} | {c['envoy_errors']:.0f} |")
    out += ["", "Where a lookup's time went in the sidecar (mean per lookup that reached the phase, ms; "
            "lookups that reached it), and the callout as the filter saw it (Envoy's `semgate_sidecar_lookup_ms`, "
            "from sending the lookup to its answer or timeout):", "",
            "| offered | " + " | ".join(PHASES) + " | callout p50 / p99 in Envoy |", "|---|" + "---:|" * (len(PHASES) + 1)]
    for label, *_, c in rows:
        cells = []
        for phase in PHASES:
            n = c[f"{phase}_total"]
            cells.append(f"{c[f'{phase}_seconds_total'] * 1e3 / n:.2f} ms ({n:.0f})" if n else "-")
        callout = c.get("callout")
        cells.append(f"{callout[0]:.1f} / {callout[1]:.1f} ms" if callout else "-")
        out.append(f"| {label} | " + " | ".join(cells) + " |")
    out += ["", "CPU used during each run, in cores (CPU seconds per second; the machine has "
            f"{os.cpu_count()}):", "", "| offered | Envoy, layer off | Envoy, layer on | sidecar |", "|---|---:|---:|---:|"]
    for label, *_, c in rows:
        off_cpu, on_cpu, secs = c["cpu"]
        out.append(f"| {label} | {off_cpu['envoy'] / secs:.2f} | {on_cpu['envoy'] / secs:.2f} | "
                   f"{on_cpu['sidecar'] / secs:.2f} |")
    text_out = "\n".join(out)
    print(text_out)
    (ROOT / "bench" / "results-load.md").write_text(text_out + "\n")


PHASES = ["stage_one", "embed", "search", "guard", "total"]
PHASE_METRICS = [f'semgate_sidecar_lookup_phase_{kind}{{phase="{p}"}}' for p in PHASES for kind in ("seconds_total", "total")]
COUNTERS = ["semgate_sidecar_lookups_total", "semgate_sidecar_lookups_shed_total", "semgate_sidecar_expired_total",
            "semgate_sidecar_abandoned_total", "semgate_sidecar_stage_one_misses_total"]

if __name__ == "__main__":
    main()
