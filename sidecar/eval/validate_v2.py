#!/usr/bin/env python3
"""Validate sidecar/eval/pairs_v2.jsonl and print counts. Exit 1 on any error."""
import collections
import json
import pathlib
import re
import sys

HERE = pathlib.Path(__file__).parent
PATH = HERE / "pairs_v2.jsonl"
OLD = HERE / "pairs.jsonl"
FIELDS = {"id", "domain", "a", "b", "label", "kind", "family", "split"}
DOMAINS = ["support", "ecommerce", "coding", "conversion", "general"]
SPLITS = ["dev2", "holdout"]
MISS_FAMILIES = [
    "role_swap", "polarity", "substitution", "goal", "tense", "format", "attribute",
    "count", "ordinal", "negation_implicit", "with_without", "range_date", "number",
    "unit", "entity",
]
HIT_FAMILIES = [
    "reorder", "reword", "politeness_typos", "caption_reword", "code_reword",
    "abbreviation", "number_form", "currency_tz_code", "long_reword",
]


def norm(s):
    return re.sub(r"[^a-z0-9]+", " ", s.lower()).strip()


errors = []
rows = []
for n, line in enumerate(PATH.read_text(encoding="utf-8").splitlines(), 1):
    try:
        r = json.loads(line)
    except json.JSONDecodeError as e:
        errors.append(f"line {n}: bad JSON: {e}")
        continue
    if set(r) != FIELDS:
        errors.append(f"line {n}: fields {sorted(r)}")
        continue
    rows.append(r)
    i = r["id"]
    if r["domain"] not in DOMAINS:
        errors.append(f"{i}: domain {r['domain']!r}")
    if r["split"] not in SPLITS:
        errors.append(f"{i}: split {r['split']!r}")
    if r["label"] == "hit":
        if r["kind"] != "paraphrase" or r["family"] not in HIT_FAMILIES:
            errors.append(f"{i}: hit with kind/family {r['kind']}/{r['family']}")
    elif r["label"] == "miss":
        if r["kind"] not in MISS_FAMILIES or r["family"] != r["kind"]:
            errors.append(f"{i}: miss with kind/family {r['kind']}/{r['family']}")
    else:
        errors.append(f"{i}: label {r['label']!r}")
    for f in ("a", "b"):
        w = len(str(r[f]).split())
        if not isinstance(r[f], str) or not 4 <= w <= 40:
            errors.append(f"{i}: {f} has {w} words")
    if norm(r["a"]) == norm(r["b"]):
        errors.append(f"{i}: a and b are the same text")

ids = collections.Counter(r["id"] for r in rows)
errors += [f"duplicate id {i}" for i, c in ids.items() if c > 1]
if sorted(ids) != [f"v{k:04d}" for k in range(1, len(rows) + 1)]:
    errors.append("ids are not exactly v0001..vNNNN")
pairs = collections.Counter(frozenset((norm(r["a"]), norm(r["b"]))) for r in rows)
errors += [f"duplicate pair {sorted(p)}" for p, c in pairs.items() if c > 1]

# No sentence may appear in both splits (compared after lower-casing and
# stripping punctuation).
by_split = collections.defaultdict(set)
for r in rows:
    by_split[r["split"]].update((norm(r["a"]), norm(r["b"])))
for s in sorted(by_split["dev2"] & by_split["holdout"]):
    errors.append(f"sentence in both splits: {s!r}")

# No sentence may be copied from pairs.jsonl.
if OLD.exists():
    old = set()
    for line in OLD.read_text(encoding="utf-8").splitlines():
        o = json.loads(line)
        old.update((norm(o["a"]), norm(o["b"])))
    for r in rows:
        for f in ("a", "b"):
            if norm(r[f]) in old:
                errors.append(f"{r['id']}: {f} also appears in pairs.jsonl")

n = len(rows)
sl = collections.Counter((r["split"], r["label"]) for r in rows)
fs = collections.Counter((r["family"], r["split"]) for r in rows)
ds = collections.Counter((r["domain"], r["split"]) for r in rows)
hits = sum(r["label"] == "hit" for r in rows)

if n < 500:
    errors.append(f"only {n} pairs")
if sl["holdout", "hit"] + sl["holdout", "miss"] < 320:
    errors.append("holdout has < 320 pairs")
if sl["dev2", "hit"] + sl["dev2", "miss"] < 180:
    errors.append("dev2 has < 180 pairs")
for f in MISS_FAMILIES:
    for s in SPLITS:
        if fs[f, s] < 10:
            errors.append(f"family {f} has < 10 misses in {s}")
for f in HIT_FAMILIES:
    for s in SPLITS:
        if fs[f, s] < 10:
            errors.append(f"family {f} has < 10 hits in {s}")

print(f"pairs: {n}   hit: {hits} ({hits / n:.1%})   miss: {n - hits} ({(n - hits) / n:.1%})")
print()
print(f"| {'split':<8} | {'hit':>4} | {'miss':>4} | {'total':>5} | {'hit %':>6} |")
print(f"|{'-' * 10}|{'-' * 6}|{'-' * 6}|{'-' * 7}|{'-' * 8}|")
for s in SPLITS:
    h, m = sl[s, "hit"], sl[s, "miss"]
    print(f"| {s:<8} | {h:>4} | {m:>4} | {h + m:>5} | {h / (h + m):>6.1%} |")
print()
print(f"| {'domain':<10} | {'dev2':>4} | {'holdout':>7} | {'total':>5} |")
print(f"|{'-' * 12}|{'-' * 6}|{'-' * 9}|{'-' * 7}|")
for d in DOMAINS:
    print(f"| {d:<10} | {ds[d, 'dev2']:>4} | {ds[d, 'holdout']:>7} | {ds[d, 'dev2'] + ds[d, 'holdout']:>5} |")
print()
print(f"| {'label':<5} | {'family':<17} | {'dev2':>4} | {'holdout':>7} | {'total':>5} |")
print(f"|{'-' * 7}|{'-' * 19}|{'-' * 6}|{'-' * 9}|{'-' * 7}|")
for label, fams in (("hit", HIT_FAMILIES), ("miss", MISS_FAMILIES)):
    for f in fams:
        print(f"| {label:<5} | {f:<17} | {fs[f, 'dev2']:>4} | {fs[f, 'holdout']:>7} | {fs[f, 'dev2'] + fs[f, 'holdout']:>5} |")

if errors:
    print("\nERRORS:")
    for e in errors:
        print("  " + e)
    sys.exit(1)
print("\nOK")
