-- Refresh-token rotation: the refresh phase. One chain per wrk thread (run it with as many threads
-- as connections, so each chain is strictly sequential): each request is POST /token
-- grant_type=refresh_token with the chain's newest refresh token and client_secret_post
-- credentials, and each 200 answer's refresh_token replaces it. Anything but a 200 with a
-- refresh_token counts as an error (the chain then keeps its last good token).
-- Env: BENCH_CHAINS, a file of "client_id<TAB>client_secret<TAB>refresh_token" lines; thread N uses
-- line N. At the end the newest token of every chain is written back to that file, so a later run
-- (the measured one after a warm-up) continues the chains.
local tally = require("tally")

local chains_file = os.getenv("BENCH_CHAINS") or ""

local function urlencode(s)
  return (string.gsub(s, "[^%w%-%._~]", function(c) return string.format("%%%02X", string.byte(c)) end))
end

local function read_chains()
  local f = io.open(chains_file, "r")
  if not f then error("refresh.lua: cannot read BENCH_CHAINS '" .. chains_file .. "'") end
  local chains = {}
  for line in f:lines() do
    local id, secret, token = string.match(line, "^([^\t]+)\t([^\t]+)\t([^\t]+)$")
    if id then chains[#chains + 1] = { id = id, secret = secret, token = token } end
  end
  f:close()
  return chains
end

-- Per-thread globals (token is read back by done() with thread:get()).
client_id, client_prefix, token = nil, nil, nil

function init(args)
  local chains = read_chains()
  local mine = chains[thread_no]
  if not mine then
    error(string.format("refresh.lua: thread %d has no chain (%d in %s)", thread_no, #chains, chains_file))
  end
  client_id, token = mine.id, mine.token
  client_prefix = "grant_type=refresh_token&client_id=" .. urlencode(mine.id)
    .. "&client_secret=" .. urlencode(mine.secret) .. "&refresh_token="
  wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
  wrk.headers["Accept"] = "application/json"
end

function request()
  return wrk.format("POST", nil, nil, client_prefix .. urlencode(token))
end

function response(status, headers, body)
  local next_token = status == 200 and string.match(body or "", '"refresh_token"%s*:%s*"([^"]+)"')
  if next_token then token = next_token end
  -- `next_token` is false (not nil) for a non-200 answer: test it for truth, not for nil.
  tally.record(status, next_token and true or false, body)
end

-- Write every chain's newest token back, then let tally print the figures.
local tally_done = done
function done(summary, latency, requests)
  local chains = read_chains()
  for _, h in ipairs(tally.handles) do
    local n, id, t = h:get("thread_no"), h:get("client_id"), h:get("token")
    if chains[n] and chains[n].id == id and t then chains[n].token = t end
  end
  local f = io.open(chains_file, "w")
  if f then
    for _, c in ipairs(chains) do f:write(c.id, "\t", c.secret, "\t", c.token, "\n") end
    f:close()
  end
  tally_done(summary, latency, requests)
end
