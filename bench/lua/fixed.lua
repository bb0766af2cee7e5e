-- The same request over and over (wrk builds it once): the metadata and register phases.
-- Env: BENCH_METHOD (default GET), BENCH_BODY (sent as application/json when not empty),
-- BENCH_EXPECT (the one status that counts as success, default 200).
local tally = require("tally")

local expect = tonumber(os.getenv("BENCH_EXPECT") or "") or 200
local payload = os.getenv("BENCH_BODY") or ""

wrk.method = os.getenv("BENCH_METHOD") or "GET"
wrk.headers["Accept"] = "application/json"
if payload ~= "" then
  wrk.body = payload
  wrk.headers["Content-Type"] = "application/json"
end

function response(status, headers, body)
  tally.record(status, status == expect, body)
end
