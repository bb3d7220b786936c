"""Provider chains in `make bench`: what a fallback adds, and what translation costs.

usage: providers.py [--requests N] [--out FILE]

One Envoy 1.40 (the tests' harness: --concurrency 2) with semgate, configured by `semgate-config envoy` from one
filter configuration, in front of three fake providers on loopback (OpenAI-, Anthropic- and
Vertex-shaped). Requests go one at a time over one keep-alive connection, each with a unique
body and `cache-control: no-store`, so every one is a miss the providers answer. Ratios are
taken within this run only.

  fallback    model `chain`: Anthropic answers 503 to every request (outlier detection off, so
              it is tried every time), Vertex answers; against `vertex-direct`, the same
              Vertex answer with no failed attempt before it. The difference of the p50
              latencies is what a fallback on a 503 adds.
  cpu         Envoy's CPU time (utime + stime of its process) per request for `openai-direct`
              (no translation) and `anthropic-direct` (OpenAI -> Messages and back).
"""

import argparse
import json
import os
import statistics
import sys
import time
import uuid
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from harness import Envoy, FakeProvider, free_port, render_envoy_config  # noqa: E402
from conftest import gateway_test_config  # noqa: E402


def config():
    cfg = gateway_test_config()
    cfg["providers"] = {
        "openai": {"kind": "openai", "address": "127.0.0.1:18001", "keys": [{"env": "SEMGATE_OPENAI_KEY"}]},
        "anthropic": {"kind": "anthropic", "address": "127.0.0.1:18002", "keys": [{"env": "ANTHROPIC_KEY_PRIMARY"}]},
        "vertex": {"kind": "vertex", "address": "127.0.0.1:18003", "keys": [{"env": "VERTEX_EXPRESS_KEY"}],
                   "vertex": {"auth": "express_key"}},
    }
    cfg["models"] = {
        "chain": ["anthropic/claude-3-5-sonnet-20241022", "vertex/gemini-1.5-pro"],
        "vertex-direct": ["vertex/gemini-1.5-pro"],
        "anthropic-direct": ["anthropic/claude-3-5-sonnet-20241022"],
        "openai-direct": ["openai/gpt-4o-mini"],
    }
    # A failing primary is tried on every request: what one fallback costs, not the circuit.
    cfg["fallback"] = {"ejection": {"consecutive_5xx": 1000000, "interval_ms": 60000, "base_ejection_ms": 1000}}
    cfg["passthrough"] = []
    return cfg


def set_port(doc, prefix, port):
    for c in doc["static_resources"]["clusters"]:
        if c["name"].startswith(prefix):
            for group in c["load_assignment"]["endpoints"]:
                for lb in group["lb_endpoints"]:
                    lb["endpoint"]["address"]["socket_address"]["port_value"] = port


def cpu_seconds(pid):
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run(session, envoy, model, n):
    """Latencies (ms) of n sequential misses, and Envoy's CPU seconds for them."""
    body = {"model": model, "max_tokens": 64, "messages": [
        {"role": "system", "content": "You caption product photos in one sentence."},
        {"role": "user", "content": "Caption: a red leather handbag with a gold clasp on a white table."}]}
    headers = {"authorization": "Bearer sk-demo", "content-type": "application/json", "cache-control": "no-store"}
    for _ in range(min(50, n)):  # warm-up: connections, VM caches
        session.post(envoy.url + "/v1/chat/completions", data=json.dumps({**body, "user": uuid.uuid4().hex}), headers=headers)
    lat = []
    cpu0 = cpu_seconds(envoy.proc.pid)
    for i in range(n):
        data = json.dumps({**body, "messages": body["messages"] + [{"role": "user", "content": f"#{i} {uuid.uuid4().hex}"}]})
        t0 = time.perf_counter()
        r = session.post(envoy.url + "/v1/chat/completions", data=data, headers=headers)
        lat.append((time.perf_counter() - t0) * 1000)
        if r.status_code != 200:
            raise RuntimeError(f"{model}: {r.status_code} {r.text[:200]}")
    return lat, cpu_seconds(envoy.proc.pid) - cpu0, r.headers


def p(values, q):
    return statistics.quantiles(values, n=100)[q - 1]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--out", default=str(ROOT / "bench/results-providers.md"))
    args = ap.parse_args()
    openai, anthropic, vertex = FakeProvider(), FakeProvider(), FakeProvider()
    doc = render_envoy_config(openai.port, free_port(), free_port(), config())
    set_port(doc, "provider_openai", openai.port)
    set_port(doc, "provider_anthropic", anthropic.port)
    set_port(doc, "provider_vertex", vertex.port)
    envoy = Envoy(openai, doc=doc)
    try:
        anthropic.control(fail_status=503, fail_fraction=1.0)
        s = requests.Session()
        rows = {}
        for model in ("vertex-direct", "chain", "openai-direct"):
            rows[model] = run(s, envoy, model, args.requests)
        anthropic.control(fail_fraction=0.0)
        rows["anthropic-direct"] = run(s, envoy, "anthropic-direct", args.requests)
        assert rows["chain"][2]["x-semgate-attempts"] == "2", dict(rows["chain"][2])
    finally:
        envoy.stop()
        for f in (openai, anthropic, vertex):
            f.stop()
    n = args.requests
    out = [f"Provider chains, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {n} sequential misses per row, "
           "one connection, Envoy --concurrency 2, fake providers on loopback.", "",
           "| model | what | p50 ms | p90 ms | Envoy CPU us/request |", "|---|---|---:|---:|---:|"]
    what = {"vertex-direct": "Vertex answers (baseline)", "chain": "Anthropic 503, then Vertex answers",
            "openai-direct": "OpenAI, no translation", "anthropic-direct": "Anthropic, translated both ways"}
    for model, (lat, cpu, _) in rows.items():
        out.append(f"| `{model}` | {what[model]} | {p(lat, 50):.2f} | {p(lat, 90):.2f} | {cpu / n * 1e6:.1f} |")
    added = p(rows["chain"][0], 50) - p(rows["vertex-direct"][0], 50)
    ratio = rows["anthropic-direct"][1] / rows["openai-direct"][1]
    out += ["", f"- Fallback on a 503 adds **{added:.2f} ms** at p50 over a direct Vertex answer (target < 2 ms).",
            f"- Envoy CPU per Anthropic-backed miss / OpenAI-backed miss: **{ratio:.2f}x** (target <= 1.3x)."]
    text = "\n".join(out) + "\n"
    print(text)
    if args.out:
        Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
