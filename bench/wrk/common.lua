-- Shared by the paymesh wrk scripts: a wall clock, thread ids, pacing and the JSON report.
-- wrk runs on LuaJIT, so the clock comes from clock_gettime through the FFI.
local ffi = require("ffi")
ffi.cdef [[
  typedef struct { long tv_sec; long tv_nsec; } paymesh_timespec;
  int clock_gettime(int clock_id, paymesh_timespec *tp);
]]
local CLOCK_REALTIME = 0
local timespec = ffi.new("paymesh_timespec")

local M = {}

-- Microseconds since the epoch (fits a Lua number exactly until the year 2255).
function M.now_us()
  ffi.C.clock_gettime(CLOCK_REALTIME, timespec)
  return tonumber(timespec.tv_sec) * 1000000 + math.floor(tonumber(timespec.tv_nsec) / 1000)
end

-- Tells this wrk process apart from earlier ones (a run is cut into several wrk processes, whose
-- thread ids and counters start again from zero): the clock when the script was loaded.
M.process_tag = string.format("%x", M.now_us())

-- Gives each thread an id (setup runs in the main state, once per thread).
local next_thread_id = 0
function M.setup(thread)
  thread:set("thread_id", next_thread_id)
  next_thread_id = next_thread_id + 1
end

-- A fixed request rate per thread: each call reserves the next slot of this thread's schedule
-- and returns how long to wait for it. A thread that fell more than a second behind restarts
-- its schedule rather than bursting to catch up.
function M.pacer(rate_per_thread)
  local interval_ms = 1000.0 / rate_per_thread
  local next_ms = nil
  return function()
    local now_ms = M.now_us() / 1000.0
    if next_ms == nil or next_ms < now_ms - 1000.0 then
      next_ms = now_ms
    end
    local wait_ms = next_ms - now_ms
    next_ms = next_ms + interval_ms
    if wait_ms < 0 then
      return 0
    end
    return math.floor(wait_ms)
  end
end

-- One JSON line that bench/loadgen.py parses; latencies in microseconds.
function M.done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'PAYMESH_WRK {"requests": %d, "duration_us": %d, "bytes": %d, ' ..
    '"errors": {"connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d}, ' ..
    '"latency_us": {"p50": %d, "p90": %d, "p99": %d, "max": %d, "mean": %.1f}}\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.max, latency.mean))
end

return M
