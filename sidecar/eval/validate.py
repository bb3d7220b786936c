#!/usr/bin/env python3
"""Validate sidecar/eval/pairs.jsonl and print counts. Exit 1 on any error."""
import collections
import json
import pathlib
import sys

PATH = pathlib.Path(__file__).with_name("pairs.jsonl")
FIELDS = {"id", "domain", "a", "b", "label", "kind", "split"}
DOMAINS = ["support", "ecommerce", "coding", "conversion"]
MISS_KINDS = ["number", "unit", "colour", "size", "negation", "entity", "operand_order", "other"]
KINDS = ["paraphrase"] + MISS_KINDS

errors = []
rows = []
for n, line in enumerate(PATH.read_text(encoding="utf-8").splitlines(), 1):
    try:
        r = json.loads(line)
    except json.JSONDecodeError as e:
        errors.append(f"line {n}: bad JSON: {e}")
        continue
    rows.append(r)
    if set(r) != FIELDS:
        errors.append(f"line {n}: fields {sorted(r)}")
        continue
    if r["domain"] not in DOMAINS:
        errors.append(f"{r['id']}: domain {r['domain']!r}")
    if r["label"] not in ("hit", "miss"):
        errors.append(f"{r['id']}: label {r['label']!r}")
    if r["kind"] not in KINDS:
        errors.append(f"{r['id']}: kind {r['kind']!r}")
    if (r["label"] == "hit") != (r["kind"] == "paraphrase"):
        errors.append(f"{r['id']}: label/kind mismatch {r['label']}/{r['kind']}")
    if r["split"] not in ("dev", "test"):
        errors.append(f"{r['id']}: split {r['split']!r}")
    for f in ("a", "b"):
        if not isinstance(r[f], str) or not (4 <= len(r[f].split()) <= 40):
            errors.append(f"{r['id']}: {f} has {len(str(r[f]).split())} words")
    if r["a"] == r["b"]:
        errors.append(f"{r['id']}: a == b")

ids = collections.Counter(r.get("id") for r in rows)
errors += [f"duplicate id {i}" for i, c in ids.items() if c > 1]
expected = [f"p{i:04d}" for i in range(1, len(rows) + 1)]
if sorted(ids) != expected:
    errors.append("ids are not exactly p0001..pNNNN")
pairs = collections.Counter(frozenset((r["a"], r["b"])) for r in rows)
errors += [f"duplicate pair {sorted(p)}" for p, c in pairs.items() if c > 1]

n = len(rows)
dl = collections.Counter((r["domain"], r["label"]) for r in rows)
kd = collections.Counter((r["kind"], r["domain"]) for r in rows)
ks = collections.Counter((r["kind"], r["split"]) for r in rows)
hits = sum(r["label"] == "hit" for r in rows)

if n < 480:
    errors.append(f"only {n} pairs")
for d in DOMAINS:
    if dl[d, "hit"] + dl[d, "miss"] < 100:
        errors.append(f"domain {d} has < 100 pairs")
for k in MISS_KINDS:
    if sum(kd[k, d] for d in DOMAINS) < 25:
        errors.append(f"kind {k} has < 25 pairs")

print(f"pairs: {n}   hit: {hits} ({hits / n:.1%})   miss: {n - hits} ({(n - hits) / n:.1%})")
print()
print(f"| {'domain':<10} | {'hit':>4} | {'miss':>4} | {'total':>5} |")
print(f"|{'-' * 12}|{'-' * 6}|{'-' * 6}|{'-' * 7}|")
for d in DOMAINS:
    print(f"| {d:<10} | {dl[d, 'hit']:>4} | {dl[d, 'miss']:>4} | {dl[d, 'hit'] + dl[d, 'miss']:>5} |")
print(f"| {'total':<10} | {hits:>4} | {n - hits:>4} | {n:>5} |")
print()
head = " | ".join(f"{d:>10}" for d in DOMAINS)
print(f"| {'kind':<13} | {head} | {'total':>5} | {'dev':>4} | {'test':>4} |")
print("|" + "|".join("-" * (w + 2) for w in [13] + [10] * 4 + [5, 4, 4]) + "|")
for k in KINDS:
    cells = " | ".join(f"{kd[k, d]:>10}" for d in DOMAINS)
    tot = sum(kd[k, d] for d in DOMAINS)
    print(f"| {k:<13} | {cells} | {tot:>5} | {ks[k, 'dev']:>4} | {ks[k, 'test']:>4} |")
sp = collections.Counter(r["split"] for r in rows)
print()
print(f"split: dev {sp['dev']}, test {sp['test']}")

if errors:
    print("\nERRORS:")
    for e in errors:
        print("  " + e)
    sys.exit(1)
print("OK")
