-- wrk script for bench/run.sh: POST /v1/chat/completions with the ~2 KB OpenAI chat body of
-- bench/chat-body.json, in which "@ID@" (inside the user message) is replaced by
--   unique: RUNID-<thread random>-<counter>, a new one for every request (every request is a
--           different cache key: a semgate miss);
--   same:   "fixed", the same body every time (after one warm-up request: a semgate exact hit).
-- Every scenario builds its requests in request(), so wrk spends the same kind of work per
-- request whatever it is measuring.
--
-- usage: wrk ... -s bench/chat.lua URL -- MODE RUNID BODYFILE [PATH]  (PATH: /v1/chat/completions)
-- done() prints one line:  BENCH_RESULT key=value ... (latencies in microseconds)

local mode, runid, prefix, suffix, path
local counter = 0
local headers = {
  ["Content-Type"] = "application/json",
  ["Authorization"] = "Bearer sk-demo",
}
local fixed_request

function init(args)
  mode, runid, path = args[1], args[2], args[4] or "/v1/chat/completions"
  local f = assert(io.open(args[3], "rb"))
  local template = f:read("*a"):gsub("%s+$", "")
  f:close()
  local at = template:find("@ID@", 1, true)
  assert(at, "no @ID@ marker in " .. args[3])
  prefix, suffix = template:sub(1, at - 1), template:sub(at + 4)
  if mode == "same" then
    fixed_request = wrk.format("POST", path, headers, prefix .. "fixed" .. suffix)
  elseif mode == "unique" then
    math.randomseed(os.time() + tonumber(tostring({}):match("0x(%x+)") or "0", 16) % 100000)
    runid = runid .. "-" .. math.random(1, 1000000000)
  else
    error("mode must be 'unique' or 'same', not " .. tostring(mode))
  end
end

function request()
  if fixed_request then
    return fixed_request
  end
  counter = counter + 1
  return wrk.format("POST", path, headers, prefix .. runid .. "-" .. counter .. suffix)
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "BENCH_RESULT requests=%d duration_us=%d p50_us=%d p90_us=%d p99_us=%d max_us=%d mean_us=%.1f "
      .. "non2xx=%d connect=%d read=%d write=%d timeout=%d bytes=%d\n",
    summary.requests, summary.duration,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max, latency.mean,
    e.status, e.connect, e.read, e.write, e.timeout, summary.bytes))
end
