#!/usr/bin/env bash
# Spend the demo's capped key ($0.01 a day) until the gateway refuses it (make demo first).
# Each answer says what it cost and what is left; the refusal is a 429 `budget_exceeded` with
# `retry-after` at the next midnight UTC.
set -euo pipefail
URL=${URL:-http://127.0.0.1:10000/v1/chat/completions}
KEY=${KEY:-sk-demo-capped}
# About 500 input tokens a request on claude-3-5-sonnet ($3 / $15 per 1M tokens): a few
# requests spend the $0.01.
LONG=$(printf 'Describe the product photo: a ceramic mug, matte red glaze, on a wooden table. %.0s' $(seq 1 25))
for i in $(seq 1 100); do
  body=$(printf '{"model":"claude-3-5-sonnet","max_tokens":200,"messages":[{"role":"user","content":"%s (%s-%s)"}]}' "$LONG" "$i" "$RANDOM")
  out=$(curl -s -D - -o /tmp/semgate-budget-body -H "authorization: Bearer $KEY" -H 'x-customer-id: merchant-7' "$URL" -d "$body")
  code=$(head -n1 <<<"$out" | awk '{print $2}')
  cost=$(grep -i '^x-semgate-cost-usd:' <<<"$out" | tr -d '\r' | awk '{print $2}' || true)
  left=$(grep -i '^x-semgate-budget-remaining-usd:' <<<"$out" | tr -d '\r' | awk '{print $2}' || true)
  if [[ $code != 200 ]]; then
    echo "request $i: $code, retry-after $(grep -i '^retry-after:' <<<"$out" | tr -d '\r' | awk '{print $2}')s"
    cat /tmp/semgate-budget-body; echo
    exit 0
  fi
  echo "request $i: 200, cost \$$cost, left \$$left"
done
