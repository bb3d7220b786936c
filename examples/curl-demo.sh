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
# Provider chain: claude-3-5-sonnet goes to the Anthropic fake, then the Vertex fake if it fails.
chain() { curl -s -o /dev/null -w "%{http_code} provider=%header{x-semgate-provider} attempts=%header{x-semgate-attempts}\n" "$GW/v1/chat/completions" \
          -H 'authorization: Bearer sk-demo' -d "{\"model\":\"claude-3-5-sonnet\",\"messages\":[{\"role\":\"user\",\"content\":\"$1\"}]}"; }
echo "chain, primary up:   $(chain "Caption a red mug $RANDOM")"
curl -s -X POST http://127.0.0.1:18002/control -d '{"fail_status":503,"fail_fraction":1.0}' >/dev/null
echo "chain, primary down: $(chain "Caption a blue mug $RANDOM")"
curl -s -X POST http://127.0.0.1:18002/control -d '{"fail_fraction":0.0}' >/dev/null
