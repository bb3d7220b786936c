#!/usr/bin/env bash
# Against `make demo`: the same question twice (miss, then an exact hit answered by Envoy),
# a streamed answer replayed from cache, a bypass, and the metrics.
set -euo pipefail
GW=${GW:-http://127.0.0.1:10000}
ADMIN=${ADMIN:-http://127.0.0.1:9901}
ask() { curl -s -o /dev/null -w "%{http_code} cache=%header{x-semgate-cache} similarity=%header{x-semgate-similarity} %{time_total}s\n" "$GW/v1/chat/completions" \
          -H 'authorization: Bearer sk-demo' -H 'content-type: application/json' "$@"; }
Q='{"model":"gpt-4o-mini","messages":[{"role":"user","content":"What does an LLM gateway do?"}]}'
echo "1st: $(ask -d "$Q")"
echo "2nd: $(ask -d "$Q")"
S='{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"Stream a haiku about caches"}]}'
echo "stream 1st: $(ask -d "$S")"
echo "stream 2nd: $(ask -d "$S")"
echo "bypass: $(ask -H 'x-semgate-cache: bypass' -d "$Q")"
# Layer 2: a rephrasing is served from the semantic cache; a near miss is not.
say() { printf '{"model":"gpt-4o-mini","messages":[{"role":"user","content":"%s"}]}' "$1"; }
echo "semantic, 1st:      $(ask -d "$(say 'How do I reset my password?')")"
echo "semantic, rephrase: $(ask -d "$(say 'I forgot my password, how do I reset it?')")"
echo "near miss:          $(ask -d "$(say 'How do I change my password?')")"
curl -s "$ADMIN/stats/prometheus" | grep '^semgate_'
curl -s http://127.0.0.1:18100/metrics | grep -v '^#'
