-- MCP tools/call of the e2e MCP server's echo tool over streamable HTTP: the mcp-call and
-- mcp-call-policy phases. The same POST every time (wrk builds it once), with the headers a
-- 2026-07-28 client sends (Mcp-Method and Mcp-Name, which authgate checks against the body on a
-- resource with tool rules).
-- Env: BENCH_BODY (the JSON-RPC request), BENCH_TOKEN (sent as "Authorization: Bearer <token>").
-- Only a 200 JSON (not SSE) JSON-RPC result of id 1 whose text content is "authgate-bench" counts.
-- The first answer of the first thread is printed as "AUTHGATE_BENCH_BODY <status> <start of its
-- body>" (run.sh shows it with VERBOSE=1).
local tally = require("tally")

local token = os.getenv("BENCH_TOKEN") or ""

wrk.method = "POST"
wrk.body = os.getenv("BENCH_BODY") or ""
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Accept"] = "application/json, text/event-stream"
wrk.headers["MCP-Protocol-Version"] = "2025-06-18"
wrk.headers["Mcp-Method"] = "tools/call"
wrk.headers["Mcp-Name"] = "echo"
if token ~= "" then wrk.headers["Authorization"] = "Bearer " .. token end

local function echo_result(body)
  return body ~= nil
    and string.find(body, "^%s*{") ~= nil
    and string.find(body, '"result"%s*:') ~= nil
    and string.find(body, '"content"%s*:%s*%[') ~= nil
    and string.find(body, '"text"%s*:%s*"authgate%-bench"') ~= nil
    and string.find(body, '"id"%s*:%s*1%s*[,}]') ~= nil
end

-- Per-thread global, read back by done() with thread:get().
first_body = nil

function response(status, headers, body)
  local ok = status == 200 and echo_result(body)
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
