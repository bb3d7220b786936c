"""Markdown report for bench/run.sh.

Reads the `SCENARIO#ROUND.key=value` lines run.sh collected (wrk's BENCH_RESULT line from
bench/chat.lua, the provider's and Envoy's counter deltas, CPU accounting) and `context.key=value`
lines, and prints the results table, the targets with PASS/MISS and the sanity checks.
Never fails on a target: this is a benchmark, not a test."""

import statistics
import sys
from collections import defaultdict

SCENARIOS = {
    "a": "(a) bare Envoy -> provider",
    "b": "(b) Envoy + no-op Wasm -> provider",
    "c": "(c) Envoy + semgate, misses",
    "d": "(d) Envoy + semgate, exact hits",
    "e": "(e) Envoy buffer + direct_response",
    "f": "(f) as (c), the key a virtual key with a budget, RPM and TPM",
    "g": "(g) as (d), the key a virtual key with a budget, RPM and TPM",
}
BUDGET_ADDED_CPU_US = 3.0  # (f) - (c) and (g) - (d) Envoy CPU per request
MISS_RATIO_TARGET = 0.85  # (c) req/s >= 0.85 x (a)
MISS_ADDED_P50_US = 50  # (c) p50 - (a) p50 <= 50 us
HIT_RATIO_TARGET = 0.70  # (d) req/s >= 0.7 x (e)


def load(path):
    runs, ctx = defaultdict(dict), {}
    for line in open(path):
        line = line.rstrip("\n")
        if "=" not in line:
            continue
        key, value = line.split("=", 1)
        label, name = key.split(".", 1)
        if label == "context":
            ctx[name] = value
        else:
            runs[label][name] = value
    return runs, ctx


def summarize(d):
    def num(k, default=0.0):
        try:
            return float(d[k])
        except (KeyError, ValueError):
            return default

    dur = num("duration_us") / 1e6
    reqs = num("requests")
    wall = num("wall_us") / 1e6 or dur
    envoy, provider, wrk = num("envoy_cpu_us"), num("provider_cpu_us"), num("wrk_cpu_us")
    c1_dur = num("c1_duration_us") / 1e6
    return {
        "rps": reqs / dur if dur else 0.0,
        "requests": int(reqs),
        "p50": num("p50_us"),
        "p99": num("p99_us"),
        "non2xx": int(num("non2xx")),
        "sockerr": {k: int(num(k)) for k in ("connect", "read", "write", "timeout")},
        "c1": "c1_requests" in d,
        "c1_rps": num("c1_requests") / c1_dur if c1_dur else 0.0,
        "c1_p50": num("c1_p50_us"),
        "c1_p99": num("c1_p99_us"),
        "c1_bad": int(num("c1_non2xx") + sum(num("c1_" + k) for k in ("connect", "read", "write", "timeout"))),
        "provider": int(num("provider_requests")),
        "cx": int(num("http.gateway.downstream_cx_total")),
        "hits": int(num("semgate_cache_hits_exact_total")),
        "fast": int(num("semgate_cache_hits_fast_total")),
        "misses": int(num("semgate_cache_misses_total")),
        "stores": int(num("semgate_cache_stores_total")),
        "evictions": int(num("semgate_cache_evictions_total")),
        "envoy_cpu": envoy / reqs if reqs else 0.0,
        "provider_cpu": provider / reqs if reqs else 0.0,
        "wrk_cpu": wrk / reqs if reqs else 0.0,
        # share of one core during the run
        "envoy_util": envoy / 1e6 / wall,
        "provider_util": provider / 1e6 / wall,
        "wrk_util": wrk / 1e6 / wall,
        "busy_util": num("system_busy_us") / 1e6 / wall,
        "steal_util": num("system_steal_us") / 1e6 / wall,
        "other_util": max(0.0, (num("system_busy_us") - envoy - provider - wrk) / 1e6 / wall),
    }


def verdict(ok):
    return "PASS" if ok else "MISS"


def main():
    runs, ctx = load(sys.argv[1])
    conns = int(float(ctx.get("connections", 16)))
    by_scenario = defaultdict(list)
    for label, d in runs.items():
        scenario, _, rnd = label.partition("#")
        by_scenario[scenario].append((int(rnd or 1), summarize(d)))
    r, spread, c1_spread = {}, {}, {}
    for scenario, rounds in by_scenario.items():
        rounds.sort(key=lambda x: x[1]["rps"])
        r[scenario] = dict(rounds[(len(rounds) - 1) // 2][1])  # median round by req/s (lower middle)
        if len(rounds) > 1:
            spread[scenario] = [x[1]["rps"] for x in sorted(rounds, key=lambda x: x[0])]
        # Unloaded latency moves more between rounds than throughput does, and not with it:
        # its own median over the rounds, not the median-throughput round's value.
        c1 = [x[1]["c1_p50"] for x in sorted(rounds, key=lambda x: x[0]) if x[1]["c1"]]
        if c1:
            r[scenario]["c1_p50"] = sorted(c1)[(len(c1) - 1) // 2]
            if len(c1) > 1:
                c1_spread[scenario] = c1

    def ratio(x, y):
        if x in r and y in r and r[y]["rps"]:
            return r[x]["rps"] / r[y]["rps"]
        return None

    def fmt_ratio(v):
        return "n/a" if v is None else f"{v:.2f}x"

    c_vs_a, d_vs_e = ratio("c", "a"), ratio("d", "e")
    added_p50 = r["c"]["p50"] - r["a"]["p50"] if "c" in r and "a" in r else None
    added_c1_p50 = r["c"]["c1_p50"] - r["a"]["c1_p50"] if "c" in r and "a" in r and r["c"]["c1"] and r["a"]["c1"] else None
    any_c1 = any(s["c1"] for s in r.values())
    rounds = int(float(ctx.get("rounds", 1)))

    out = ["## semgate benchmark", ""]
    out.append(
        f"Machine: nproc={ctx.get('nproc', '?')} ({ctx.get('cpu', '?')}), Linux {ctx.get('kernel', '?')}, "
        f"Envoy {ctx.get('envoy', '?')}, wrk {ctx.get('wrk', '?')}; commit {ctx.get('commit', '?')} "
        f"({ctx.get('wasm', '?')}); run {ctx.get('date', '')}")
    out.append(
        f"Load: wrk 1 thread, {conns} connections, {ctx.get('seconds', '?')} s per scenario after "
        f"{ctx.get('warmup', '?')} s warm-up"
        + (f", then {ctx.get('latency_seconds')} s with 1 connection" if any_c1 else "")
        + (f"; {rounds} rounds, median round shown" if rounds > 1 else "")
        + f"; POST /v1/chat/completions with a {ctx.get('body_bytes', '?')} B body; Envoy --concurrency 1, "
        "fake provider --threads 1, wrk, Envoy and provider all on 127.0.0.1 sharing the machine's cores.")
    out.append("")
    head = "| scenario | req/s | p50 (us) | p99 (us) | non-2xx | socket errors | vs (a) | vs (e) | Envoy CPU/req (us) |"
    sep = "|---|---:|---:|---:|---:|---|---:|---:|---:|"
    if any_c1:
        head += " p50 @1 conn (us) |"
        sep += "---:|"
    out += [head + " provider reqs | target | result |", sep + "---:|---|---|"]
    for label, title in SCENARIOS.items():
        if label not in r:
            continue
        s = r[label]
        errs = s["sockerr"]
        errs_txt = "0" if not any(errs.values()) else ", ".join(f"{k} {v}" for k, v in errs.items() if v)
        target = result = ""
        if label == "c":
            target = f">= {MISS_RATIO_TARGET:.2f}x (a) req/s; <= +{MISS_ADDED_P50_US} us p50"
            if c_vs_a is not None and added_p50 is not None:
                result = f"{verdict(c_vs_a >= MISS_RATIO_TARGET)} / {verdict(added_p50 <= MISS_ADDED_P50_US)}"
        elif label in ("f", "g") and {"f": "c", "g": "d"}[label] in r:
            base = {"f": "c", "g": "d"}[label]
            target = f"<= +{BUDGET_ADDED_CPU_US:.0f} us Envoy CPU/req over ({base})"
            result = verdict(s["envoy_cpu"] - r[base]["envoy_cpu"] <= BUDGET_ADDED_CPU_US)
        elif label == "d":
            target = f">= {HIT_RATIO_TARGET:.2f}x (e) req/s"
            if d_vs_e is not None:
                result = verdict(d_vs_e >= HIT_RATIO_TARGET)
        row = (f"| {title} | {s['rps']:,.0f} | {s['p50']:,.0f} | {s['p99']:,.0f} | {s['non2xx']} | {errs_txt} | "
               f"{fmt_ratio(ratio(label, 'a'))} | {fmt_ratio(ratio(label, 'e')) if label == 'd' else ''} | "
               f"{s['envoy_cpu']:.1f} |")
        if any_c1:
            row += f" {s['c1_p50']:,.0f} |" if s["c1"] else " |"
        out.append(row + f" {s['provider']:,} | {target} | {result} |")
    out.append("")
    out.append(
        "(a), (b), (c) send a different body every time, (d) and (e) the same one. Envoy CPU/req: user+system CPU of "
        "the Envoy process (all threads, including the loopback TCP work done in its system calls) per request. "
        f"At {conns} connections Envoy's one worker is saturated, so p50 is mostly queueing (about {conns} / req/s) "
        "and follows throughput; 'p50 @1 conn' is the unloaded latency of one request at a time"
        + (" (median over the rounds)." if c1_spread else "."))
    out.append("")

    out.append("Targets (reported, not enforced):")
    if c_vs_a is None and d_vs_e is None:
        out.append("- n/a: the targets compare (c) with (a) and (d) with (e)")
    if c_vs_a is not None:
        out.append(f"- misses (c): {c_vs_a:.2f}x the bare-Envoy (a) throughput; target >= {MISS_RATIO_TARGET:.2f}x: "
                   f"**{verdict(c_vs_a >= MISS_RATIO_TARGET)}**")
    if added_p50 is not None:
        out.append(f"- misses (c): added p50 over (a) at {conns} connections = **{added_p50:+,.0f} us** "
                   f"({r['c']['p50']:,.0f} - {r['a']['p50']:,.0f}); target <= {MISS_ADDED_P50_US} us: "
                   f"**{verdict(added_p50 <= MISS_ADDED_P50_US)}**")
    if added_c1_p50 is not None:
        out.append(f"  - unloaded (1 connection): added p50 = {added_c1_p50:+,.0f} us "
                   f"({r['c']['c1_p50']:,.0f} - {r['a']['c1_p50']:,.0f}) "
                   f"({verdict(added_c1_p50 <= MISS_ADDED_P50_US)} against the same target, for reference)")
    if d_vs_e is not None:
        out.append(f"- exact hits (d): {d_vs_e:.2f}x the direct_response ceiling (e); target >= {HIT_RATIO_TARGET:.2f}x: "
                   f"**{verdict(d_vs_e >= HIT_RATIO_TARGET)}**")
    if "b" in r and "a" in r:
        extra = ""
        if r["b"]["c1"] and r["a"]["c1"]:
            extra = f", unloaded {r['b']['c1_p50'] - r['a']['c1_p50']:+,.0f} us"
        out.append(f"- for reference, the Wasm floor (b): {ratio('b', 'a'):.2f}x (a), added p50 "
                   f"{r['b']['p50'] - r['a']['p50']:+,.0f} us at {conns} connections{extra}; Envoy CPU/req "
                   f"{r['b']['envoy_cpu'] - r['a']['envoy_cpu']:+.1f} us over (a)")
    if "c" in r and "a" in r:
        out.append(f"- Envoy CPU per request: misses (c) {r['c']['envoy_cpu'] - r['a']['envoy_cpu']:+.1f} us over (a)"
                   + (f"; hits (d) {r['d']['envoy_cpu'] - r['e']['envoy_cpu']:+.1f} us over (e)" if "d" in r and "e" in r else ""))
    for x, y, what in (("f", "c", "misses"), ("g", "d", "hits")):
        if x in r and y in r:
            added = r[x]["envoy_cpu"] - r[y]["envoy_cpu"]
            out.append(f"- budget enforcement on {what}: Envoy CPU/req ({x}) {added:+.1f} us over ({y}); "
                       f"target <= {BUDGET_ADDED_CPU_US:.0f} us: **{verdict(added <= BUDGET_ADDED_CPU_US)}**")
    out.append("")

    out.append("Checks:")
    problems = [label for label, s in r.items() if s["non2xx"] or any(s["sockerr"].values()) or s["c1_bad"]]
    if problems:
        out.append("- WARNING: non-2xx responses or socket errors in " + ", ".join(f"({p})" for p in sorted(problems))
                   + ": those numbers are not valid measurements")
    else:
        out.append("- no non-2xx responses and no socket errors in any scenario")

    def slack(n):
        return 2 * conns + n // 200

    if "c" in r:
        s = r["c"]
        ok = abs(s["provider"] - s["requests"]) <= slack(s["requests"]) and s["misses"] >= s["requests"] - slack(s["requests"])
        out.append(f"- (c) the provider saw {s['provider']:,} requests for wrk's {s['requests']:,}; semgate counted "
                   f"{s['misses']:,} misses, {s['hits']:,} hits, {s['stores']:,} stores, {s['evictions']:,} evictions: "
                   + ("OK" if ok else "UNEXPECTED"))
    if "d" in r:
        s = r["d"]
        ok = s["provider"] <= conns and s["hits"] >= s["requests"] - slack(s["requests"])
        out.append(f"- (d) the provider saw {s['provider']:,} requests during the run (wrk: {s['requests']:,}); "
                   f"semgate counted {s['hits']:,} exact hits ({s['fast']:,} by the fast path for byte-identical requests), {s['misses']:,} misses: " + ("OK" if ok else "UNEXPECTED"))
    cx = ", ".join(f"({label}) {r[label]['cx']:,}" for label in SCENARIOS if label in r)
    out.append(f"- connections Envoy accepted during each run (wrk keeps its {conns} alive and opens one more at start-up; "
               f"more means Envoy closed connections): {cx}")
    out.append("- CPU during each run, % of one core (Envoy / provider / wrk / everything else, incl. kernel softirq; "
               "steal): " + "; ".join(
                   f"({label}) {s['envoy_util'] * 100:.0f} / {s['provider_util'] * 100:.0f} / {s['wrk_util'] * 100:.0f}"
                   f" / {s['other_util'] * 100:.0f}; {s['steal_util'] * 100:.0f}"
                   for label, s in ((label, r[label]) for label in SCENARIOS if label in r)))
    noisy = [label for label in SCENARIOS if label in r and (r[label]["other_util"] > 0.25 or r[label]["steal_util"] > 0.1)]
    if noisy or float(ctx.get("busy_before_pct", 0)) >= 20:
        out.append(f"- WARNING: other load on the machine (busy {ctx.get('busy_before_pct', '?')}% of a core before "
                   f"the start; heavy 'everything else' or steal in {', '.join(f'({n})' for n in noisy) or 'none'}): "
                   "the numbers are noisy")
    for label, values in spread.items():
        out.append(f"- ({label}) req/s over the rounds: " + ", ".join(f"{v:,.0f}" for v in values)
                   + (f"; p50 @1 conn: " + ", ".join(f"{v:,.0f} us" for v in c1_spread[label]) if label in c1_spread else ""))
    print("\n".join(out))


if __name__ == "__main__":
    main()
