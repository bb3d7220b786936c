#!/usr/bin/env bash
# One month's chargeback from the sidecar's ledger as CSV: level,id,spent_usd,saved_usd,requests
# usage: examples/chargeback-csv.sh 2026-12 > chargeback.csv   (needs curl and jq)
set -euo pipefail
MONTH=${1:?usage: chargeback-csv.sh YYYY-MM}
LEDGER=${LEDGER:-http://127.0.0.1:18100}
TOKEN=${TOKEN:-$(cat "$(dirname "$0")/../.run/sidecar-token")}
curl -sf "$LEDGER/v1/ledger" -H "authorization: Bearer $TOKEN" | jq -r --arg m "$MONTH" '
  "level,id,spent_usd,saved_usd,requests",
  (["keys","teams","customers"][] as $l | .[$l][] | select(.period == $m)
   | [$l[:-1], .id, (.spent_micros / 1e6), (.saved_micros / 1e6), .requests] | @csv)'
