-- wrk script for scripts/bench-appends.sh: POST /api/messages with a unique body per request.
--
-- Environment, all optional:
--   BENCH_PORTS        comma-separated ports on the URL's host. Thread i (from 1) is sent to
--                      port number ((i - 1) mod n) + 1, so `-t3` with three ports puts one
--                      thread, and its share of the connections, on each backend instance.
--                      wrk itself sends every thread to the URL's port.
--   BENCH_IDEMPOTENCY  "1": every request carries its own Idempotency-Key.
--   BENCH_SUMMARY      file to which the run's figures are written as one JSON line, so the
--                      caller does not have to parse wrk's human-readable units.

local ports = {}
for port in string.gmatch(os.getenv("BENCH_PORTS") or "", "%d+") do
  ports[#ports + 1] = port
end

-- setup() runs in wrk's main Lua state, once per thread, before the threads start.
local threads = 0

function setup(thread)
  threads = threads + 1
  thread:set("thread_id", threads)
  if #ports > 0 then
    local port = ports[(threads - 1) % #ports + 1]
    thread.addr = wrk.lookup(wrk.host, port)[1]
  end
end

-- Everything below runs in each thread's own Lua state.
local with_key = os.getenv("BENCH_IDEMPOTENCY") == "1"
local headers = { ["Content-Type"] = "application/json" }
local counter = 0
local prefix

function init(args)
  local id = thread_id or 0
  math.randomseed(os.time() + id * 7919)
  -- A per-process random part keeps keys unique across wrk processes and runs.
  prefix = string.format("%x-%x-%d", os.time(), math.random(0, 0x7fffffff), id)
end

function request()
  counter = counter + 1
  local tag = prefix .. "-" .. counter
  if with_key then
    headers["Idempotency-Key"] = "bench-" .. tag
  end
  local body = string.format('{"author":"bench %d","text":"message %s"}', thread_id or 0, tag)
  return wrk.format("POST", "/api/messages", headers, body)
end

function done(summary, latency, requests)
  local path = os.getenv("BENCH_SUMMARY")
  if path == nil or path == "" then
    return
  end
  local e = summary.errors
  local file = assert(io.open(path, "w"))
  file:write(string.format(
    '{"duration_us":%.0f,"requests":%.0f,"bytes":%.0f,'
      .. '"errors":{"connect":%.0f,"read":%.0f,"write":%.0f,"status":%.0f,"timeout":%.0f},'
      .. '"latency_us":{"p50":%.0f,"p99":%.0f,"max":%.0f,"mean":%.1f}}\n',
    summary.duration, summary.requests, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(99), latency.max, latency.mean
  ))
  file:close()
end
