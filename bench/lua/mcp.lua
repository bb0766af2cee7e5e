-- MCP tools/list over streamable HTTP: the mcp-direct, mcp, mcp401 and builtin phases. The same POST every
-- time (wrk builds it once), with the headers an MCP client sends after initialize.
-- Env: BENCH_BODY (the JSON-RPC request), BENCH_EXPECT (200 or 401), BENCH_TOKEN (sent as
-- "Authorization: Bearer <token>" when not empty).
-- A 200 counts only when it is a JSON (not SSE) JSON-RPC result of tools/list: "result", a "tools"
-- array and the tool BENCH_TOOL (default the e2e MCP server's "echo"; the built-in server's is
-- "whoami"). A 401 counts only with authgate's challenge (WWW-Authenticate: Bearer ...
-- resource_metadata=...). The first answer of the first thread is
-- printed as "AUTHGATE_BENCH_BODY <status> <start of its body>" (run.sh shows it with VERBOSE=1).
local tally = require("tally")

local expect = tonumber(os.getenv("BENCH_EXPECT") or "") or 200
local token = os.getenv("BENCH_TOKEN") or ""
local tool = os.getenv("BENCH_TOOL") or "echo"

wrk.method = "POST"
wrk.body = os.getenv("BENCH_BODY") or ""
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Accept"] = "application/json, text/event-stream"
wrk.headers["MCP-Protocol-Version"] = "2025-06-18"
if token ~= "" then wrk.headers["Authorization"] = "Bearer " .. token end

local function header(headers, name)
  for k, v in pairs(headers) do
    if string.lower(k) == name then return v end
  end
  return nil
end

local function tools_list_result(body)
  return body ~= nil
    and string.find(body, "^%s*{") ~= nil
    and string.find(body, '"result"%s*:') ~= nil
    and string.find(body, '"tools"%s*:%s*%[') ~= nil
    and string.find(body, '"name"%s*:%s*"' .. tool .. '"') ~= nil
    and string.find(body, '"id"%s*:%s*1%s*[,}]') ~= nil
end

local function challenge(headers)
  local v = header(headers, "www-authenticate")
  return v ~= nil and string.find(v, "^Bearer ") ~= nil and string.find(v, "resource_metadata=", 1, true) ~= nil
end

-- Per-thread global, read back by done() with thread:get().
first_body = nil

function response(status, headers, body)
  local ok = status == expect
  if ok and expect == 200 then ok = tools_list_result(body) end
  if ok and expect == 401 then ok = challenge(headers) end
  if first_body == nil then
    first_body = tostring(status) .. " " .. string.sub((string.gsub(body or "", "%s+", " ")), 1, 300)
  end
  tally.record(status, ok, body)
end

local tally_done = done
function done(summary, latency, requests)
  tally_done(summary, latency, requests)
  local h = tally.handles[1]
  local sample = h and h:get("first_body")
  if sample then io.write("AUTHGATE_BENCH_BODY " .. sample .. "\n") end
end
