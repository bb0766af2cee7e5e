-- MCP tools/list with many distinct access tokens: the builtin-10k phase. The same POST as
-- lua/mcp.lua, but each request carries the next token of BENCH_TOKENS_FILE (one token a line),
-- round-robin: thread N of T takes lines N, N+T, N+2T, ... and cycles through them, so every token
-- is used once before any is used again. The requests are formatted once per token in init(), so
-- the generator's cost per request is that of the single-token phase.
-- Env: BENCH_BODY, BENCH_TOKENS_FILE, BENCH_THREADS (T), BENCH_TOOL (the tool tools/list must name).
-- Anything but a 200 JSON-RPC tools/list result naming BENCH_TOOL counts as an error.
local tally = require("tally")

local tokens_file = os.getenv("BENCH_TOKENS_FILE") or ""
local threads = tonumber(os.getenv("BENCH_THREADS") or "") or 1
local tool = os.getenv("BENCH_TOOL") or "whoami"
local body = os.getenv("BENCH_BODY") or ""

-- Per-thread globals.
requests, next_request = nil, 1

function init(args)
  local f = io.open(tokens_file, "r")
  if not f then error("mcp-tokens.lua: cannot read BENCH_TOKENS_FILE '" .. tokens_file .. "'") end
  requests = {}
  local line_no = 0
  for token in f:lines() do
    line_no = line_no + 1
    if token ~= "" and (line_no - 1) % threads == thread_no - 1 then
      requests[#requests + 1] = wrk.format("POST", nil, {
        ["Host"] = wrk.headers["Host"],
        ["Content-Type"] = "application/json",
        ["Accept"] = "application/json, text/event-stream",
        ["MCP-Protocol-Version"] = "2025-06-18",
        ["Authorization"] = "Bearer " .. token,
      }, body)
    end
  end
  f:close()
  if #requests == 0 then error(string.format("mcp-tokens.lua: thread %d has no token", thread_no)) end
end

function request()
  local r = requests[next_request]
  next_request = next_request % #requests + 1
  return r
end

local function tools_list_result(b)
  return b ~= nil
    and string.find(b, "^%s*{") ~= nil
    and string.find(b, '"result"%s*:') ~= nil
    and string.find(b, '"tools"%s*:%s*%[') ~= nil
    and string.find(b, '"name"%s*:%s*"' .. tool .. '"') ~= nil
    and string.find(b, '"id"%s*:%s*1%s*[,}]') ~= nil
end

function response(status, headers, b)
  tally.record(status, status == 200 and tools_list_result(b), b)
end
