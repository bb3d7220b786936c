"""Attribute semgate's per-request cost: one Envoy (--concurrency 1) per variant, wrk with
16 connections and unique ~2 KB bodies, Envoy CPU time per request from /proc, then the
unloaded p50 and Envoy CPU per request (one connection, one request at a time). Each row adds one piece of work to the
one above it. Run from the repo root after `make build fake-provider`:

    .venv/bin/python bench/decompose.py [seconds] [table ...]

Tables: `miss` and `hit` (the default), and `probe`: the price of one host call, from the no-op
filter's local reply repeating that call 10 times per request (one row per call).

Prints a Markdown table; like `make bench`, it is a measurement, not a test."""

import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import envoy_config  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
ENVOY = os.environ.get("ENVOY", str(ROOT / ".venv/bin/envoy"))
SECONDS = int(sys.argv[1]) if len(sys.argv) > 1 else 5
TABLES = sys.argv[2:] or ["miss", "hit"]
PROBE_REPEAT = 10
TICK = os.sysconf("SC_CLK_TCK")

# (table, name, Envoy scenario, no-op filter mode, path, wrk body mode)
VARIANTS = [
    ("miss", "bare Envoy", "bare", None, "/v1/chat/completions", "unique"),
    ("miss", "no-op Wasm filter", "noop", "noop", "/v1/chat/completions", "unique"),
    ("miss", "+ hold headers, buffer body", "noop", "pause", "/v1/chat/completions", "unique"),
    ("miss", "+ copy body into the VM", "noop", "read", "/v1/chat/completions", "unique"),
    ("miss", "+ header rewrites (req 4, resp 2)", "noop", "rewrite", "/v1/chat/completions", "unique"),
    ("miss", "semgate, cache off for the route", "semgate", None, "/suggest/v1/chat/completions", "unique"),
    ("miss", "semgate, cache miss + store", "semgate", None, "/v1/chat/completions", "unique"),
    ("hit", "Envoy buffer + direct_response", "direct", None, "/v1/chat/completions", "same"),
    ("hit", "no-op Wasm filter: hold, copy body, local reply", "noop", "reply", "/v1/chat/completions", "same"),
    ("hit", "semgate, exact hit", "semgate", None, "/v1/chat/completions", "same"),
    ("hit", "semgate, exact hit, policies on route names", "semgate", "route-policies", "/v1/chat/completions", "same"),
    ("hit", "semgate, exact hit, fast path off", "semgate", "no-fast-path", "/v1/chat/completions", "same"),
    ("probe", "no-op local reply", "noop", "reply", "/v1/chat/completions", "same"),
] + [
    ("rewrite", name, "noop", mode, "/v1/chat/completions", "unique")
    for name, mode in [
        ("no-op: hold, copy body", "read"),
        ("+ get_map(request headers)", "rewrite:g"),
        ("+ x-semgate-cluster", "rewrite:gc"),
        ("+ :path", "rewrite:gcp"),
        ("+ authorization", "rewrite:gcpa"),
        ("+ accept-encoding removed", "rewrite:gcpae"),
        ("+ get_map(response headers)", "rewrite:gcpaeG"),
        ("+ x-semgate-cache (response)", "rewrite:gcpaeGx"),
        ("+ x-semgate-provider (response)", "rewrite:gcpaeGxy"),
    ]
] + [
    ("probe", f"+ {PROBE_REPEAT} x {what}", "noop", f"reply,{probe}*{PROBE_REPEAT}", "/v1/chat/completions", "same")
    for probe, what in [
        ("getheaders", "get_map(request headers)"),
        ("getheader", "get_map_value(authorization)"),
        ("setheader", "set_map_value(request header)"),
        ("getshared", "get_shared_data(4 KiB)"),
        ("getsharedabsent", "get_shared_data(absent key)"),
        ("setshared", "set_shared_data(4 KiB)"),
        ("metric", "increment_metric"),
        ("time", "get_current_time"),
    ]
]


def free_port():
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(pid):
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def semgate_variant(doc, mode):
    """The demo's semgate configuration with one change, to price one feature."""
    _, hcm = envoy_config.find_hcm(doc)
    conf = envoy_config.find_filter(hcm["http_filters"], "envoy.filters.http.wasm")["typed_config"]["config"]["configuration"]
    cfg = json.loads(conf["value"])
    if mode == "route-policies":  # the same policies matched on Envoy route names: one more host call
        names = {"/captioning/": "captioning", "/suggest/": "suggest"}
        for p in cfg.get("policies", []):
            prefix = p.get("match", {}).pop("path_prefix", None)
            if prefix is not None:
                p["match"]["route"] = names[prefix]
    elif mode == "no-fast-path":
        cfg.setdefault("cache", {})["fast_path"] = {"enabled": False}
    conf["value"] = json.dumps(cfg)


def main():
    provider = subprocess.Popen([str(ROOT / "target/release/fake-provider"), "--listen", "127.0.0.1:0", "--require-key", "sk-fake-provider"],
                                stdout=subprocess.PIPE, text=True)
    port = int(provider.stdout.readline().strip().rsplit(":", 1)[1])
    rows = []
    try:
        for table, name, scenario, mode, path, body_mode in VARIANTS:
            if table not in TABLES:
                continue
            lp, ap = free_port(), free_port()
            doc = envoy_config.render(scenario, lp, ap, port)
            if scenario == "semgate" and mode is not None:
                semgate_variant(doc, mode)
            elif mode is not None:
                wasm = envoy_config.find_filter(envoy_config.find_hcm(doc)[1]["http_filters"], "envoy.filters.http.wasm")
                wasm["typed_config"]["config"]["configuration"] = {"@type": "type.googleapis.com/google.protobuf.StringValue", "value": mode}
            with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
                json.dump(doc, f)
            envoy = subprocess.Popen([ENVOY, "-c", f.name, "--concurrency", "1", "--disable-hot-restart", "--log-level", "error"],
                                     cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            try:
                for _ in range(200):
                    if subprocess.run(["curl", "-s", "-o", "/dev/null", f"http://127.0.0.1:{ap}/ready"]).returncode == 0:
                        break
                    time.sleep(0.05)
                wrk = ["wrk", "-t1", "-c16", "--timeout", "5s", "-s", str(ROOT / "bench/chat.lua"), f"http://127.0.0.1:{lp}{path}",
                       "--", body_mode, f"dec{lp}", str(ROOT / "bench/chat-body.json"), path]
                subprocess.run(wrk[:3] + ["-d2s"] + wrk[3:], capture_output=True)  # warm-up
                c0 = cpu_seconds(envoy.pid)
                out = subprocess.run(wrk[:3] + [f"-d{SECONDS}s"] + wrk[3:], capture_output=True, text=True).stdout
                c1 = cpu_seconds(envoy.pid)
                reqs = int(re.search(r"(\d+) requests in", out).group(1))
                non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
                # Unloaded latency: one connection, one request at a time.
                one = [w if w != "-c16" else "-c1" for w in wrk]
                c2 = cpu_seconds(envoy.pid)
                out1 = subprocess.run(one[:3] + [f"-d{max(SECONDS // 2, 1)}s"] + one[3:], capture_output=True, text=True).stdout
                c3 = cpu_seconds(envoy.pid)
                p50 = int(re.search(r"p50_us=(\d+)", out1).group(1))
                cpu1 = (c3 - c2) / int(re.search(r"(\d+) requests in", out1).group(1)) * 1e6
                rows.append((table, name, reqs / SECONDS, (c1 - c0) / reqs * 1e6, p50, cpu1, int(non2xx.group(1)) if non2xx else 0))
            finally:
                envoy.terminate()
                envoy.wait()
                os.unlink(f.name)
    finally:
        provider.kill()
    for table, title in (("miss", "misses: unique bodies, the provider answers"),
                         ("hit", "local replies: the same body every time"),
                         ("rewrite", "the miss path's header work, one step at a time (unique bodies)"),
                         ("probe", f"host calls: each row repeats one call {PROBE_REPEAT} times per request")):
        group = [r for r in rows if r[0] == table]
        if not group:
            continue
        base_rps, base_cpu, base_p50, base_cpu1 = group[0][2], group[0][3], group[0][4], group[0][5]
        print(f"\n{title}; each row against the first\n")
        print("| variant | req/s | ratio | Envoy CPU/req (us) | added (us) | p50 @1 conn (us) | added p50 (us) "
              "| Envoy CPU/req @1 conn (us) | added (us) | non-2xx |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for _, name, rps, cpu, p50, cpu1, bad in group:
            print(f"| {name} | {rps:,.0f} | {rps / base_rps:.2f}x | {cpu:.1f} | {cpu - base_cpu:+.1f} | {p50} | {p50 - base_p50:+d} "
                  f"| {cpu1:.1f} | {cpu1 - base_cpu1:+.1f} | {bad} |")
        if table == "probe":
            print(f"\nOne call costs its row's added CPU / {PROBE_REPEAT}.")


if __name__ == "__main__":
    main()
