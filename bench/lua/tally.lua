-- Status tally for the wrk scripts of bench/run.sh.
--
-- A phase script does `local tally = require("tally")` and calls tally.record(status, ok, body)
-- from its response() hook, ok meaning "the answer is what this phase expects". This module owns
-- wrk's setup() and done() hooks. done() prints one line that run.sh parses:
--
--   AUTHGATE_BENCH requests=N us=N p50_us=N p99_us=N max_us=N bad=N sockerr=N statuses=201x900,429x3
--
-- and, if any answer was unexpected, a line "AUTHGATE_BENCH_SAMPLE <status> <start of its body>".
-- Each wrk thread runs its own Lua state: the counters below are per thread, and done() (which runs
-- in the main state) adds them up through the thread handles kept by setup().
local M = {}
local handles = {}
-- The thread handles, for a phase script's own done() (wrapping this one) to read its per-thread state.
M.handles = handles

function setup(thread)
  handles[#handles + 1] = thread
  -- 1-based thread number, for scripts that give each thread its own state (a token chain, a session).
  thread:set("thread_no", #handles)
end

-- Per-thread globals, read back by done() with thread:get().
seen, unexpected, first_unexpected = {}, 0, nil

function M.record(status, ok, body)
  seen[status] = (seen[status] or 0) + 1
  if not ok then
    unexpected = unexpected + 1
    if first_unexpected == nil then
      local flat = (string.gsub(body or "", "%s+", " "))
      first_unexpected = tostring(status) .. " " .. string.sub(flat, 1, 160)
    end
  end
end

function done(summary, latency, requests)
  local per_status, bad, sample = {}, 0, nil
  for _, h in ipairs(handles) do
    for status, n in pairs(h:get("seen") or {}) do
      per_status[status] = (per_status[status] or 0) + n
    end
    bad = bad + (h:get("unexpected") or 0)
    sample = sample or h:get("first_unexpected")
  end
  local codes = {}
  for status in pairs(per_status) do codes[#codes + 1] = status end
  table.sort(codes)
  local parts = {}
  for _, status in ipairs(codes) do parts[#parts + 1] = tostring(status) .. "x" .. per_status[status] end
  if #parts == 0 then parts[1] = "none" end

  local e = summary.errors
  io.write(string.format(
    "AUTHGATE_BENCH requests=%d us=%d p50_us=%.0f p99_us=%.0f max_us=%.0f bad=%d sockerr=%d statuses=%s\n",
    summary.requests, summary.duration,
    latency:percentile(50), latency:percentile(99), latency.max,
    bad, e.connect + e.read + e.write + e.timeout, table.concat(parts, ",")))
  if sample then io.write("AUTHGATE_BENCH_SAMPLE " .. sample .. "\n") end
end

return M
