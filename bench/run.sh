#!/usr/bin/env bash
# Load figures for authgate: starts a fresh server per storage backend on a free loopback port,
# drives each phase with wrk, prints one line per figure, then stops everything it started.
#
#   bench/run.sh [BINARY]          default target/release/authgate (see bench/README.md)
#
# Figure lines go to stdout; progress and warnings go to stderr (`bench/run.sh 2>/dev/null` keeps
# only the figures). Adding a phase: write `phase_<name>` below (it may prepare state with curl, then
# calls run_wrk) and add <name> to PHASES. The flows and refresh phases log in through the project's
# upstream OpenID provider (tests/e2e/idp), which then runs next to authgate, driven by bench/flows.mjs.
# The mcp-direct, mcp and mcp401 phases put the e2e MCP server (tests/e2e/clients/mcp-server.mjs)
# behind authgate and compare tools/list straight to it with tools/list through authgate's /mcp.
# The mcp-call and mcp-call-policy phases compare tools/call through /mcp (no tool rules) with
# tools/call through /policy/mcp (tool rules: the body read, the call decided and audited), in
# POLICY_ROUNDS alternated rounds when both are listed.
set -euo pipefail
export LC_ALL=C

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)

# ------------------------------------------------------------------------------------ settings
DURATION=${DURATION:-10}
THREADS=${THREADS:-2}
CONNECTIONS=${CONNECTIONS:-16}
PHASES=${PHASES:-metadata register flows refresh mcp-direct mcp mcp401 mcp-call mcp-call-policy}
BACKENDS=${BACKENDS:-sqlite postgres}
PG_URL=${BENCH_PG_URL:-postgres://postgres@127.0.0.1:5432/postgres}
PG_DB=${BENCH_PG_DB:-authgate_bench}
STARTUP_TIMEOUT=${STARTUP_TIMEOUT:-60}
WARMUP=${WARMUP:-0}
VERBOSE=${VERBOSE:-0}
FLOW_CONCURRENCY=${FLOW_CONCURRENCY:-4}
FLOW_SECONDS=${FLOW_SECONDS:-20}
FLOW_MAX=${FLOW_MAX:-200}
REFRESH_CHAINS=${REFRESH_CHAINS:-16}
IDP_SKIP_CONSENT=${IDP_SKIP_CONSENT:-1}
MCP_WARMUP=${MCP_WARMUP:-5}
BUILTIN_TOKENS=${BUILTIN_TOKENS:-10000}
BUILTIN_GRANTS=${BUILTIN_GRANTS:-16}
BUILTIN_MIN_RATIO=0.80
POLICY_MIN_RATIO=0.90
POLICY_ROUNDS=${POLICY_ROUNDS:-3}
IDP_DIR=$ROOT/tests/e2e/idp
MCP_DIR=$ROOT/tests/e2e/clients
# The JSON-RPC request of the MCP phases (MCP-Protocol-Version and Accept are set in lua/mcp.lua).
MCP_TOOLS_LIST='{"jsonrpc":"2.0","id":1,"method":"tools/list"}'
# The tools/call of the mcp-call phases (lua/mcp-call.lua adds Mcp-Method and Mcp-Name).
MCP_TOOLS_CALL='{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"text":"authgate-bench"}}}'
# Claude.ai's Dynamic Client Registration body.
DCR_BODY='{"redirect_uris":["https://claude.ai/api/mcp/auth_callback"],"token_endpoint_auth_method":"client_secret_post","grant_types":["authorization_code","refresh_token"],"response_types":["code"],"client_name":"Claude"}'

say() { printf '[bench] %s\n' "$*" >&2; }
die() { printf '[bench] FAILED: %s\n' "$*" >&2; exit 1; }
is_uint() { [[ $1 =~ ^[0-9]+$ ]] && [ "$1" -gt 0 ]; }
[[ $PG_DB =~ ^[a-z_][a-z0-9_]*$ ]] || die "BENCH_PG_DB must be a plain database name (lower case, digits, _)"
is_uint "$DURATION" || die "DURATION must be a positive number of seconds, not '$DURATION'"
is_uint "$THREADS" || die "THREADS must be a positive integer"
is_uint "$CONNECTIONS" || die "CONNECTIONS must be a positive integer"
is_uint "$STARTUP_TIMEOUT" || die "STARTUP_TIMEOUT must be a positive number of seconds"
[[ $WARMUP =~ ^[0-9]+$ ]] || die "WARMUP must be a number of seconds (0: none)"
is_uint "$FLOW_CONCURRENCY" || die "FLOW_CONCURRENCY must be a positive integer"
is_uint "$FLOW_SECONDS" || die "FLOW_SECONDS must be a positive number of seconds"
is_uint "$FLOW_MAX" || die "FLOW_MAX must be a positive integer"
is_uint "$REFRESH_CHAINS" || die "REFRESH_CHAINS must be a positive integer"
is_uint "$POLICY_ROUNDS" || die "POLICY_ROUNDS must be a positive integer"
[[ $MCP_WARMUP =~ ^[0-9]+$ ]] || die "MCP_WARMUP must be a number of seconds (0: none)"
is_uint "$BUILTIN_TOKENS" && [ "$BUILTIN_TOKENS" -le 100000 ] || die "BUILTIN_TOKENS must be an integer from 1 to 100000"
is_uint "$BUILTIN_GRANTS" && [ "$BUILTIN_GRANTS" -le "$BUILTIN_TOKENS" ] || die "BUILTIN_GRANTS must be a positive integer, at most BUILTIN_TOKENS"
# The upstream IdP runs (next to each authgate) only for the phases that log in (mcp: for its token).
NEEDS_IDP=0
case " $PHASES " in *" flows "* | *" refresh "* | *" mcp "* | *" builtin "* | *" builtin-10k "* | *" mcp-call "* | *" mcp-call-policy "*) NEEDS_IDP=1 ;; esac
# The upstream MCP server runs (next to each authgate, which forwards /mcp to it) for the MCP phases.
NEEDS_MCP=0
case " $PHASES " in *" mcp-direct "* | *" mcp "* | *" mcp401 "* | *" mcp-call "* | *" mcp-call-policy "*) NEEDS_MCP=1 ;; esac
# mcp-call-policy needs the resource with tool rules (/policy/mcp), from a --config file.
NEEDS_POLICY=0
case " $PHASES " in *" mcp-call-policy "*) NEEDS_POLICY=1 ;; esac
# The builtin phases measure authgate's own MCP server, so /mcp must not forward anywhere.
case " $PHASES " in
  *" builtin "* | *" builtin-10k "*)
    [ "$NEEDS_MCP" = 0 ] || die "the builtin phases need /mcp on the built-in server: run them apart from mcp-direct, mcp, mcp401, mcp-call and mcp-call-policy (PHASES=\"builtin builtin-10k\")" ;;
esac
for b in $BACKENDS; do
  case $b in sqlite | postgres) ;; *) die "unknown backend '$b' in BACKENDS (sqlite, postgres)" ;; esac
done

# ------------------------------------------------------------------------------------- binary
if [ $# -ge 1 ]; then
  BIN=$1
  [ -x "$BIN" ] || die "$BIN is not an executable"
  BIN=$(cd "$(dirname "$BIN")" && pwd)/$(basename "$BIN")
else
  BIN=$ROOT/target/release/authgate
  if [ ! -x "$BIN" ]; then
    say "WARNING: $BIN is missing; falling back to target/debug/authgate"
    BIN=$ROOT/target/debug/authgate
    [ -x "$BIN" ] || die "no authgate binary: run 'cargo build --release' (or pass BINARY)"
  fi
fi
case $BIN in
  */debug/*) BUILD=debug ;;
  */release/*) BUILD=release ;;
  *) BUILD=unknown ;;
esac
debug_banner() {
  [ "$BUILD" = debug ] || return 0
  echo "# !!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!"
  echo "# !!! DEBUG BUILD ($BIN)"
  echo "# !!! These figures are NOT representative: measure target/release/authgate for the record."
  echo "# !!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!"
}
if [ -d "$ROOT/src" ] && [ -n "$(find "$ROOT/src" "$ROOT/migrations" "$ROOT/Cargo.toml" "$ROOT/Cargo.lock" \
  -newer "$BIN" -print -quit 2>/dev/null)" ]; then
  say "WARNING: $BIN is older than the sources; rebuild it to measure the current code"
fi

# -------------------------------------------------------------------------------------- tools
SUDO=""
[ "$(id -u)" = 0 ] || SUDO=$(command -v sudo || true)
APT_UPDATED=0
apt_install() {
  command -v apt-get >/dev/null || die "apt-get is not available to install: $*"
  if [ "$APT_UPDATED" = 0 ]; then
    say "apt-get update"
    $SUDO apt-get update -qq >/dev/null
    APT_UPDATED=1
  fi
  say "installing $*"
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "$@" >/dev/null
}
command -v wrk >/dev/null || apt_install wrk
command -v curl >/dev/null || apt_install curl
case " $BACKENDS " in *" postgres "*) command -v psql >/dev/null || apt_install postgresql-client ;; esac
WRK=$(command -v wrk) || die "wrk is still missing"
if [ "$NEEDS_IDP" = 1 ] || [ "$NEEDS_MCP" = 1 ]; then
  command -v node >/dev/null || die "the flows, refresh and MCP phases need Node 20 or later (node is missing)"
  node -e 'process.exit(Number(process.versions.node.split(".")[0]) >= 20 ? 0 : 1)' \
    || die "the flows, refresh and MCP phases need Node 20 or later, not $(node --version)"
fi
if [ "$NEEDS_MCP" = 1 ] && [ ! -d "$MCP_DIR/node_modules" ]; then
  say "installing the MCP server's packages (npm ci in tests/e2e/clients)"
  (cd "$MCP_DIR" && npm ci --no-audit --no-fund >&2) || die "npm ci failed in $MCP_DIR"
fi
if [ "$NEEDS_IDP" = 1 ]; then
  if [ ! -d "$IDP_DIR/node_modules" ]; then
    say "installing the upstream IdP's packages (npm ci in tests/e2e/idp)"
    (cd "$IDP_DIR" && npm ci --no-audit --no-fund >&2) || die "npm ci failed in $IDP_DIR"
  fi
fi

# ------------------------------------------------------------------------ state and clean-up
WORK=$(mktemp -d /tmp/authgate-bench.XXXXXX)
SERVER_PID=""
WRK_PID=""
IDP_PID=""
IDP_ISSUER=""
FLOW_PID=""
MCP_PID=""
MCP_URL=""
MCP_TOKEN=""
declare -A TOKEN_OF=() TOKEN_UNTIL=()
declare -A PHASE_RPS=() PHASE_P50=() PHASE_DBQ=() PHASE_REQUESTS=()
METRICS_URL=""
PG_CREATED=0
PG_BENCH_URL=""
MEMORY_LINES=()
FAILED_PHASES=0

# stop_pid NAME PID: SIGTERM, up to 10 s, then SIGKILL.
stop_pid() {
  local name=$1 pid=$2 i
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    for i in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$pid" 2>/dev/null; then
      say "$name ($pid) did not stop within 10 s of SIGTERM; killing it"
      kill -KILL "$pid" 2>/dev/null || true
    fi
  fi
  wait "$pid" 2>/dev/null || true
}
stop_server() {
  [ -n "$SERVER_PID" ] || return 0
  local pid=$SERVER_PID
  SERVER_PID=""
  stop_pid authgate "$pid"
}
stop_idp() {
  [ -n "$IDP_PID" ] || return 0
  local pid=$IDP_PID
  IDP_PID=""
  IDP_ISSUER=""
  stop_pid "the upstream IdP" "$pid"
}
stop_mcp() {
  [ -n "$MCP_PID" ] || return 0
  local pid=$MCP_PID
  MCP_PID=""
  MCP_URL=""
  stop_pid "the MCP server" "$pid"
}

pg_admin() { PGCONNECT_TIMEOUT=5 psql "$PG_URL" -XqAt -v ON_ERROR_STOP=1 "$@"; }
pg_drop() {
  [ "$PG_CREATED" = 1 ] || return 0
  pg_admin -c "DROP DATABASE IF EXISTS $PG_DB WITH (FORCE)" >/dev/null 2>&1 \
    || pg_admin -c "DROP DATABASE IF EXISTS $PG_DB" >/dev/null \
    || { say "WARNING: could not drop database $PG_DB"; return 0; }
  PG_CREATED=0
}

cleanup() {
  local rc=$?
  set +e
  if [ -n "$WRK_PID" ]; then
    kill -TERM "$WRK_PID" 2>/dev/null
    wait "$WRK_PID" 2>/dev/null
  fi
  if [ -n "$FLOW_PID" ]; then
    kill -TERM "$FLOW_PID" 2>/dev/null
    wait "$FLOW_PID" 2>/dev/null
  fi
  stop_server
  stop_idp
  stop_mcp
  pg_drop
  rm -rf "$WORK"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---------------------------------------------------------------------------------- helpers
is_loopback_host() {
  case $1 in
    localhost | ::1 | 127.*) return 0 ;;
    *) return 1 ;;
  esac
}

# PostgreSQL: refuse anything but loopback (or the local socket), then derive the bench database URL.
pg_prepare_url() {
  local base=${PG_URL%%\?*} query="" rest hostport host
  [[ $PG_URL == *\?* ]] && query="?${PG_URL#*\?}"
  case $base in postgres://* | postgresql://*) ;; *) die "BENCH_PG_URL must be a postgres:// URL" ;; esac
  rest=${base#*://}
  hostport=${rest%%/*}
  hostport=${hostport##*@}
  if [[ $hostport == \[* ]]; then host=${hostport#[}; host=${host%%]*}; else host=${hostport%%:*}; fi
  if [ -n "$host" ] && ! is_loopback_host "$host"; then
    die "BENCH_PG_URL must point at a loopback PostgreSQL, not '$host'"
  fi
  if [[ $query == *host=* && $query != *host=/* ]]; then
    die "BENCH_PG_URL: a host= parameter must name a local socket directory"
  fi
  [[ $rest == */* ]] && base=${base%/*}
  PG_BENCH_URL="$base/$PG_DB$query"
}

pg_create() {
  pg_admin -c "DROP DATABASE IF EXISTS $PG_DB WITH (FORCE)" >/dev/null 2>&1 \
    || pg_admin -c "DROP DATABASE IF EXISTS $PG_DB" >/dev/null
  PG_CREATED=1
  pg_admin -c "CREATE DATABASE $PG_DB" >/dev/null
}

# A TCP port no socket on this machine uses (IPv4 or IPv6), from the range above the usual ephemeral
# ports' lower end; authgate itself reports a bind failure, which the readiness wait notices.
free_port() {
  local used port i
  used=$(awk 'NR > 1 { split($2, a, ":"); print a[2] }' /proc/net/tcp /proc/net/tcp6 2>/dev/null | sort -u)
  for i in $(seq 1 200); do
    port=$((20000 + RANDOM % 30000))
    grep -qx "$(printf '%04X' "$port")" <<<"$used" || { echo "$port"; return 0; }
  done
  die "no free port found"
}

status_kib() { awk -v k="$2:" '$1 == k { print $2 }' "/proc/$1/status" 2>/dev/null; }
mib() { awk -v k="${1:-0}" 'BEGIN { printf "%.1f", k / 1024 }'; }

# start_idp CALLBACK_URL: the upstream OpenID provider on an ephemeral loopback port, with only the
# settings below (other IDP_* variables of the caller are dropped); sets IDP_PID and IDP_ISSUER.
start_idp() {
  local callback=$1 unset_args=() v t0 waited=0
  for v in $(compgen -e | grep '^IDP_' || true); do unset_args+=(-u "$v"); done
  env "${unset_args[@]}" \
    IDP_PORT=0 \
    IDP_REDIRECT_URIS="$callback" \
    IDP_SKIP_CONSENT="$IDP_SKIP_CONSENT" \
    node "$IDP_DIR/idp.mjs" >"$WORK/$BACKEND-idp.out" 2>"$WORK/$BACKEND-idp.log" &
  IDP_PID=$!
  t0=$(date +%s%N)
  until grep -q '^IDP READY ' "$WORK/$BACKEND-idp.out" 2>/dev/null; do
    if ! kill -0 "$IDP_PID" 2>/dev/null; then
      cat "$WORK/$BACKEND-idp.log" >&2
      IDP_PID=""
      die "the upstream IdP exited during start-up"
    fi
    waited=$(( ($(date +%s%N) - t0) / 1000000000 ))
    [ "$waited" -lt "$STARTUP_TIMEOUT" ] || { cat "$WORK/$BACKEND-idp.log" >&2; die "the upstream IdP was not ready within $STARTUP_TIMEOUT s"; }
    sleep 0.05
  done
  IDP_ISSUER=$(awk '$1 == "IDP" && $2 == "READY" { print $3; exit }' "$WORK/$BACKEND-idp.out")
  [[ $IDP_ISSUER =~ ^http://127\.0\.0\.1:[0-9]+$ ]] || die "unexpected IdP issuer '$IDP_ISSUER'"
  IDP_START_RSS=$(status_kib "$IDP_PID" VmRSS)
  say "$BACKEND: upstream IdP pid $IDP_PID at $IDP_ISSUER (consent page: $([ "$IDP_SKIP_CONSENT" = 1 ] && echo skipped || echo shown)), ready after $(( ($(date +%s%N) - t0) / 1000000 )) ms"
}

# start_mcp: the e2e MCP server (tests/e2e/clients/mcp-server.mjs, TypeScript SDK) on an ephemeral
# loopback port, stateless and answering with JSON, so that each tools/list POST is one independent
# request/response; sets MCP_PID and MCP_URL (http://127.0.0.1:PORT/mcp). Its per-request log (stderr)
# goes to a file in $WORK.
start_mcp() {
  local t0 waited=0
  env -u MCP_STATELESS -u MCP_JSON_RESPONSE -u PORT MCP_STATELESS=1 MCP_JSON_RESPONSE=1 PORT=0 \
    node "$MCP_DIR/mcp-server.mjs" >"$WORK/$BACKEND-mcp.out" 2>"$WORK/$BACKEND-mcp.log" &
  MCP_PID=$!
  t0=$(date +%s%N)
  until grep -q '^MCP SERVER READY ' "$WORK/$BACKEND-mcp.out" 2>/dev/null; do
    if ! kill -0 "$MCP_PID" 2>/dev/null; then
      cat "$WORK/$BACKEND-mcp.log" >&2
      MCP_PID=""
      die "the MCP server exited during start-up"
    fi
    waited=$(( ($(date +%s%N) - t0) / 1000000000 ))
    [ "$waited" -lt "$STARTUP_TIMEOUT" ] || { cat "$WORK/$BACKEND-mcp.log" >&2; die "the MCP server was not ready within $STARTUP_TIMEOUT s"; }
    sleep 0.05
  done
  MCP_URL=$(awk '$1 == "MCP" && $3 == "READY" { print $4; exit }' "$WORK/$BACKEND-mcp.out")
  [[ $MCP_URL =~ ^http://127\.0\.0\.1:[0-9]+/mcp$ ]] || die "unexpected MCP server URL '$MCP_URL'"
  MCP_START_RSS=$(status_kib "$MCP_PID" VmRSS)
  say "$BACKEND: MCP server pid $MCP_PID at $MCP_URL (stateless, JSON answers), ready after $(( ($(date +%s%N) - t0) / 1000000 )) ms"
}

# start_server DATABASE_URL PORT: authgate with only the settings below (other AUTHGATE_* variables of
# the caller are dropped); with the upstream IdP running, it logs users in there; with the MCP server
# running, /mcp forwards to it (AUTHGATE_MCP_UPSTREAM), else /mcp is the built-in server.
start_server() {
  local db_url=$1 port=$2 unset_args=() upstream=() config=() v t0 waited=0 metrics_port
  BASE="http://127.0.0.1:$port"
  metrics_port=$(free_port)
  [ "$metrics_port" != "$port" ] || metrics_port=$(free_port)
  METRICS_URL="http://127.0.0.1:$metrics_port/metrics"
  for v in $(compgen -e | grep '^AUTHGATE_' || true); do unset_args+=(-u "$v"); done
  if [ -n "$IDP_ISSUER" ]; then
    upstream=(AUTHGATE_UPSTREAM_ISSUER="$IDP_ISSUER" AUTHGATE_UPSTREAM_CLIENT_ID=authgate
      AUTHGATE_UPSTREAM_CLIENT_SECRET=authgate-secret AUTHGATE_ALLOW_ANY_USER=true)
  fi
  [ -z "$MCP_URL" ] || upstream+=(AUTHGATE_MCP_UPSTREAM="$MCP_URL")
  if [ "$NEEDS_POLICY" = 1 ]; then
    # A second resource on the same MCP server, with tool rules a tools/call of echo must pass:
    # every rule is evaluated (two do not match echo), and the bench users are @example.test.
    cat >"$WORK/policy.toml" <<EOF
[[resource]]
path = "/policy/mcp"
upstream = "$MCP_URL"

[[resource.tool]]
name = "delete_*"
scopes = ["admin"]

[[resource.tool]]
name = "payroll"
allow_domains = ["hr.example"]

[[resource.tool]]
name = "echo"
allow_domains = ["example.test"]
EOF
    config=(--config "$WORK/policy.toml")
  fi
  env "${unset_args[@]}" \
    AUTHGATE_LISTEN="127.0.0.1:$port" \
    DATABASE_URL="$db_url" \
    AUTHGATE_REGISTER_RATE_LIMIT=1000000/sec \
    AUTHGATE_TOKEN_RATE_LIMIT=1000000/sec \
    AUTHGATE_AUTHORIZE_RATE_LIMIT=1000000/sec \
    AUTHGATE_CALLBACK_RATE_LIMIT=1000000/sec \
    AUTHGATE_REVOKE_RATE_LIMIT=1000000/sec \
    AUTHGATE_METRICS_LISTEN="127.0.0.1:$metrics_port" \
    AUTHGATE_LOG=warn \
    "${upstream[@]}" \
    "$BIN" "${config[@]}" serve >"$WORK/$BACKEND-server.log" 2>&1 &
  SERVER_PID=$!
  t0=$(date +%s%N)
  until curl -fsS -o /dev/null --max-time 2 "$BASE/.well-known/oauth-authorization-server" 2>/dev/null; do
    if ! kill -0 "$SERVER_PID" 2>/dev/null; then
      cat "$WORK/$BACKEND-server.log" >&2
      SERVER_PID=""
      die "authgate ($BACKEND) exited during start-up"
    fi
    waited=$(( ($(date +%s%N) - t0) / 1000000000 ))
    if [ "$waited" -ge "$STARTUP_TIMEOUT" ]; then
      cat "$WORK/$BACKEND-server.log" >&2
      die "authgate ($BACKEND) did not answer within $STARTUP_TIMEOUT s"
    fi
    sleep 0.1
  done
  START_RSS=$(status_kib "$SERVER_PID" VmRSS)
  say "$BACKEND: authgate pid $SERVER_PID on $BASE, ready after $(( ($(date +%s%N) - t0) / 1000000 )) ms"
}

# CPU accounting around a wrk (or flows.mjs) run: authgate's ticks, the upstream IdP's, the MCP
# server's, PostgreSQL's (all postgres processes), the generator's (this shell's reaped children, via
# `times`) and everything else busy on the machine.
CLK_TCK=$(getconf CLK_TCK 2>/dev/null || echo 100)
pid_ticks() {
  local s
  s=$(cat "/proc/$1/stat" 2>/dev/null) || { echo 0; return; }
  s=${s##*) }
  # shellcheck disable=SC2086
  set -- $s
  echo $(( ${12} + ${13} ))
}
# A process that exits between the glob and the read makes cat fail: not an error here (pipefail).
postgres_ticks() { { cat /proc/[0-9]*/stat 2>/dev/null || true; } | awk '$2 == "(postgres)" { t += $14 + $15 } END { print t + 0 }'; }
machine_ticks() { awk '$1 == "cpu" { print $2 + $3 + $4 + $7 + $8; exit }' /proc/stat; }
children_secs() { awk 'NR == 2 { t = 0; for (i = 1; i <= 2; i++) { split($i, a, "m"); sub("s", "", a[2]); t += a[1] * 60 + a[2] } print t }' "$1"; }

cpu_begin() {
  CPU0_WALL=$(date +%s%N)
  CPU0_SERVER=$(pid_ticks "$SERVER_PID")
  CPU0_IDP=0
  [ -z "$IDP_PID" ] || CPU0_IDP=$(pid_ticks "$IDP_PID")
  CPU0_MCP=0
  [ -z "$MCP_PID" ] || CPU0_MCP=$(pid_ticks "$MCP_PID")
  CPU0_PG=$(postgres_ticks)
  CPU0_MACHINE=$(machine_ticks)
  times >"$WORK/times0"
}
cpu_end() {
  times >"$WORK/times1"
  local wall=$(( $(date +%s%N) - CPU0_WALL )) idp=0 mcp=0
  [ -z "$IDP_PID" ] || idp=$(( $(pid_ticks "$IDP_PID") - CPU0_IDP ))
  [ -z "$MCP_PID" ] || mcp=$(( $(pid_ticks "$MCP_PID") - CPU0_MCP ))
  read -r CPU_WALL CPU_SERVER CPU_WRK CPU_PG CPU_OTHER CPU_IDP CPU_MCP < <(awk -v wall="$wall" -v hz="$CLK_TCK" \
    -v srv="$(( $(pid_ticks "$SERVER_PID") - CPU0_SERVER ))" -v idp="$idp" -v mcp="$mcp" \
    -v pg="$(( $(postgres_ticks) - CPU0_PG ))" \
    -v all="$(( $(machine_ticks) - CPU0_MACHINE ))" \
    -v gen0="$(children_secs "$WORK/times0")" -v gen1="$(children_secs "$WORK/times1")" '
    BEGIN {
      s = wall / 1e9; srv /= hz; idp /= hz; mcp /= hz; pg /= hz; all /= hz; gen = gen1 - gen0
      if (srv < 0) srv = 0; if (idp < 0) idp = 0; if (mcp < 0) mcp = 0; if (pg < 0) pg = 0
      other = all - srv - idp - mcp - gen - pg; if (other < 0) other = 0
      printf "%.3f %.3f %.3f %.3f %.3f %.3f %.3f\n", s, srv, gen, pg, other, idp, mcp
    }')
}

# db_queries: authgate's authgate_db_queries_total (the MCP guard's revocation look-ups), all
# operations added up, from its metrics listener; 0 when it does not answer.
db_queries() {
  [ -n "$METRICS_URL" ] || { echo 0; return; }
  { curl -sS --max-time 5 "$METRICS_URL" 2>/dev/null || true; } \
    | awk '$1 ~ /^authgate_db_queries_total([{]|$)/ { n += $NF } END { printf "%.0f\n", n + 0 }'
}

# wrk_for SECONDS SCRIPT METHOD BODY EXPECT URL OUTPUT: wrk in the background and `wait` for it, so
# that an INT or TERM runs the clean-up at once instead of after the phase. The layout is
# $WRK_THREADS x $WRK_CONNECTIONS when a phase sets them, else $THREADS x $CONNECTIONS.
wrk_for() {
  local rc=0
  BENCH_METHOD=$3 BENCH_BODY=$4 BENCH_EXPECT=$5 LUA_PATH="$HERE/lua/?.lua;;" \
    timeout -k 5 $(($1 + 30)) "$WRK" -t"${WRK_THREADS:-$THREADS}" -c"${WRK_CONNECTIONS:-$CONNECTIONS}" \
    -d"$1s" -s "$HERE/lua/$2" "$6" >"$7" 2>&1 &
  WRK_PID=$!
  wait "$WRK_PID" || rc=$?
  WRK_PID=""
  return "$rc"
}

# run_wrk PHASE EXPECTED_STATUS METHOD PATH [JSON_BODY]
# Runs wrk with bench/lua/$WRK_SCRIPT (default fixed.lua) against $BASE$PATH and prints the figure.
# A phase with its own request logic writes bench/lua/<its>.lua (require "tally") and sets WRK_SCRIPT
# (and WRK_THREADS / WRK_CONNECTIONS for its own layout); the script reads any other variables the
# phase sets on the call. WRK_BASE (set on the call) aims at another server than authgate.
run_wrk() {
  local phase=$1 expect=$2 method=$3 path=$4 body=${5:-} script=${WRK_SCRIPT:-fixed.lua}
  local out="$WORK/$BACKEND-$phase.wrk" rc=0 base=${WRK_BASE:-$BASE}
  if [ "$WARMUP" -gt 0 ]; then
    say "$BACKEND $phase: ${WARMUP}s warm-up (not counted)"
    wrk_for "$WARMUP" "$script" "$method" "$body" "$expect" "$base$path" "$out" \
      || { cat "$out" >&2; die "wrk failed in the warm-up of $phase"; }
  fi
  say "$BACKEND $phase: wrk -t${WRK_THREADS:-$THREADS} -c${WRK_CONNECTIONS:-$CONNECTIONS} -d${DURATION}s $method $path${WRK_BASE:+ on $WRK_BASE}"
  local db0 db1
  db0=$(db_queries)
  cpu_begin
  wrk_for "$DURATION" "$script" "$method" "$body" "$expect" "$base$path" "$out" || rc=$?
  cpu_end
  db1=$(db_queries)
  PHASE_DBQ[$phase]=$((db1 - db0))
  if [ "$rc" != 0 ] || ! grep -q '^AUTHGATE_BENCH ' "$out"; then
    cat "$out" >&2
    die "wrk failed in phase $phase (exit $rc)"
  fi
  [ "$VERBOSE" = 1 ] && sed 's/^/    /' "$out" >&2
  report "$phase" "$out"
}

# cpu_line GENERATOR COUNT UNIT TAIL: where the cores went during the last cpu_begin/cpu_end window,
# authgate's (and the IdP's, or the MCP server's) CPU per UNIT, then TAIL. The idp column is there
# while the IdP runs, the mcp-server column while the MCP server runs (its CPU per request only when
# it did work: more than 1% of a core).
cpu_line() {
  awk -v s="$CPU_WALL" -v srv="$CPU_SERVER" -v gen="$CPU_WRK" -v pg="$CPU_PG" -v other="$CPU_OTHER" \
    -v idp="$CPU_IDP" -v show_idp="$([ -n "$IDP_PID" ] && echo 1 || echo 0)" -v gen_name="$1" -v n="$2" \
    -v mcp="$CPU_MCP" -v show_mcp="$([ -n "$MCP_PID" ] && echo 1 || echo 0)" \
    -v unit="$3" -v tail="$4" -v show_pg="$([ "$BACKEND" = postgres ] && echo 1 || echo 0)" '
    BEGIN {
      line = sprintf("    cores used over %.1f s: authgate %.2f", s, srv / s)
      if (show_idp) line = line sprintf(", idp %.2f", idp / s)
      else other += idp
      if (show_mcp) line = line sprintf(", mcp-server %.2f", mcp / s)
      else other += mcp
      line = line sprintf(", %s %.2f", gen_name, gen / s)
      if (show_pg) line = line sprintf(", postgres %.2f", pg / s)
      else other += pg
      line = line sprintf(", other %.2f; authgate CPU %.3f ms/%s", other / s, (n > 0 ? srv * 1000 / n : 0), unit)
      if (show_idp && unit != "request") line = line sprintf(", idp %.3f ms/%s", (n > 0 ? idp * 1000 / n : 0), unit)
      if (show_mcp && unit == "request" && mcp > 0.01 * s) line = line sprintf(", mcp-server %.3f ms/%s", (n > 0 ? mcp * 1000 / n : 0), unit)
      print line "; " tail
    }'
}

report() {
  local phase=$1 out=$2 kv requests=0 us=1 p50=0 p99=0 max=0 bad=0 sockerr=0 statuses="" errors
  for kv in $(grep '^AUTHGATE_BENCH ' "$out"); do
    case $kv in
      requests=*) requests=${kv#*=} ;;
      us=*) us=${kv#*=} ;;
      p50_us=*) p50=${kv#*=} ;;
      p99_us=*) p99=${kv#*=} ;;
      max_us=*) max=${kv#*=} ;;
      bad=*) bad=${kv#*=} ;;
      sockerr=*) sockerr=${kv#*=} ;;
      statuses=*) statuses=${kv#*=} ;;
    esac
  done
  errors=$((bad + sockerr))
  awk -v b="$BACKEND" -v ph="$phase" -v n="$requests" -v us="$us" -v p50="$p50" -v p99="$p99" -v e="$errors" \
    'BEGIN { printf "%s %s: %.0f req/s, p50 %.2f ms, p99 %.2f ms, %d requests, %d errors\n",
             b, ph, n * 1e6 / us, p50 / 1000, p99 / 1000, n, e }'
  # Kept for figures that compare phases (the MCP overhead line).
  PHASE_RPS[$phase]=$(awk -v n="$requests" -v us="$us" 'BEGIN { printf "%.3f", n * 1e6 / us }')
  PHASE_P50[$phase]=$p50
  PHASE_REQUESTS[$phase]=$requests
  cpu_line wrk "$requests" request "max latency $(awk -v m="$max" 'BEGIN { printf "%.1f", m / 1000 }') ms"
  if [ "$errors" != 0 ]; then
    FAILED_PHASES=$((FAILED_PHASES + 1))
    echo "    errors: statuses $statuses; socket errors $sockerr"
    grep '^AUTHGATE_BENCH_SAMPLE ' "$out" | sed 's/^AUTHGATE_BENCH_SAMPLE /    first unexpected answer: /' || true
  fi
}

# ------------------------------------------------------------------------------------ phases
# Each phase runs against a started server: $BACKEND, $BASE (http://127.0.0.1:PORT), $SERVER_PID,
# $WORK (scratch directory, removed on exit) are set.

# RFC 8414 metadata: the cheapest request, no storage.
phase_metadata() {
  run_wrk metadata 200 GET /.well-known/oauth-authorization-server
}

# Dynamic Client Registration with Claude.ai's body: validation, secret generation and hashing, one
# INSERT per request. Anything but 201 counts as an error.
phase_register() {
  run_wrk register 201 POST /register "$DCR_BODY"
}

# flows_for MODE OUTPUT [COUNT]: bench/flows.mjs in the background (like wrk_for). MODE flows: the
# measured run (FLOW_*); MODE tokens: COUNT unmeasured flows. Finished flows append their client and
# refresh token to $TOKENS.
flows_for() {
  local rc=0 limit=$FLOW_SECONDS
  [ "$1" = tokens ] && limit=60
  FLOW_CONCURRENCY=$FLOW_CONCURRENCY FLOW_SECONDS=$FLOW_SECONDS FLOW_MAX=$FLOW_MAX \
    FLOW_RESOURCE_PATH=${FLOW_RESOURCE_PATH:-/mcp} timeout -k 5 $((limit + 90)) node "$HERE/flows.mjs" "$1" "$BASE" "$IDP_ISSUER" "$TOKENS" ${3:+"$3"} >"$2" 2>&1 &
  FLOW_PID=$!
  wait "$FLOW_PID" || rc=$?
  FLOW_PID=""
  return "$rc"
}

# Unmeasured flows that must all succeed (warm-up, tokens for the refresh chains).
flows_setup() {
  local count=$1 what=$2 out="$WORK/$BACKEND-flows-setup.out" rc=0
  [ -n "$IDP_PID" ] || die "$what needs the upstream IdP, which is not running"
  say "$BACKEND: $count unmeasured flow(s): $what"
  flows_for tokens "$out" "$count" || rc=$?
  if [ "$rc" != 0 ] || ! grep -q "^AUTHGATE_FLOWS flows=$count errors=0 " "$out"; then
    cat "$out" >&2
    tail -n 20 "$WORK/$BACKEND-server.log" "$WORK/$BACKEND-idp.log" >&2
    die "$BACKEND: the unmeasured flows for $what failed (exit $rc)"
  fi
}

# Full authorization-code flows, as Claude.ai and its user's browser make them, through the real
# upstream OpenID provider (tests/e2e/idp): register, /authorize, authgate's consent, the IdP's
# login (and consent with IDP_SKIP_CONSENT=0), /oauth/callback (authgate redeems the upstream code
# and checks the ID token), /token. FLOW_CONCURRENCY flows at a time, each with its own cookie jar
# and user, for FLOW_SECONDS or FLOW_MAX flows. One unmeasured flow first (or WARMUP seconds of them).
phase_flows() {
  local out="$WORK/$BACKEND-flows.out" rc=0
  if [ "$WARMUP" -gt 0 ]; then
    say "$BACKEND flows: ${WARMUP}s warm-up (not counted)"
    FLOW_SECONDS=$WARMUP FLOW_MAX=1000000 flows_for flows "$out" || { cat "$out" >&2; die "flows.mjs failed in the warm-up"; }
  else
    flows_setup 1 "warm-up"
  fi
  say "$BACKEND flows: node flows.mjs, $FLOW_CONCURRENCY at a time, for ${FLOW_SECONDS}s or $FLOW_MAX flows"
  cpu_begin
  flows_for flows "$out" || rc=$?
  cpu_end
  if [ "$rc" != 0 ] || ! grep -q '^AUTHGATE_FLOWS ' "$out"; then
    cat "$out" >&2
    die "flows.mjs failed in phase flows (exit $rc)"
  fi
  [ "$VERBOSE" = 1 ] && sed 's/^/    /' "$out" >&2
  report_flows "$out"
}

report_flows() {
  local out=$1 kv flows=0 errors=0 us=1 p50=0 p99=0 max=0 requests=0 idp_us=0 flow_us=0
  for kv in $(grep '^AUTHGATE_FLOWS ' "$out"); do
    case $kv in
      flows=*) flows=${kv#*=} ;;
      errors=*) errors=${kv#*=} ;;
      us=*) us=${kv#*=} ;;
      p50_us=*) p50=${kv#*=} ;;
      p99_us=*) p99=${kv#*=} ;;
      max_us=*) max=${kv#*=} ;;
      requests=*) requests=${kv#*=} ;;
      idp_us=*) idp_us=${kv#*=} ;;
      flow_us=*) flow_us=${kv#*=} ;;
    esac
  done
  awk -v b="$BACKEND" -v n="$flows" -v us="$us" -v p50="$p50" -v p99="$p99" -v e="$errors" \
    'BEGIN { printf "%s flows: %.1f flows/s, p50 %.1f ms, p99 %.1f ms, %d flows, %d errors\n",
             b, n * 1e6 / us, p50 / 1000, p99 / 1000, n, e }'
  cpu_line node "$flows" flow "$(awk -v n="$flows" -v r="$requests" -v idp="$idp_us" -v all="$flow_us" -v max="$max" '
    BEGIN { printf "%.0f requests/flow, %.0f%% of flow time waiting for the IdP; max flow %.1f ms",
            (n > 0 ? r / n : 0), (all > 0 ? 100 * idp / all : 0), max / 1000 }')"
  if [ "$errors" != 0 ]; then
    FAILED_PHASES=$((FAILED_PHASES + 1))
    echo "    errors: $errors failed flow(s)"
    grep '^AUTHGATE_FLOWS_SAMPLE ' "$out" | sed 's/^AUTHGATE_FLOWS_SAMPLE /    first failure: /' || true
  fi
}

# Refresh-token rotation: REFRESH_CHAINS chains (the newest grants from the flows phase, or from
# unmeasured flows made here), one wrk thread and connection each. Every request sends the chain's
# newest refresh token with client_secret_post credentials; anything but 200 is an error.
phase_refresh() {
  local chains="$WORK/$BACKEND-chains.tsv" have=0
  if [ ! -s "$chains" ]; then
    [ -f "$TOKENS" ] && have=$(wc -l <"$TOKENS")
    [ "$have" -ge "$REFRESH_CHAINS" ] || flows_setup $((REFRESH_CHAINS - have)) "refresh tokens for $REFRESH_CHAINS chains"
    tail -n "$REFRESH_CHAINS" "$TOKENS" >"$chains"
  fi
  BENCH_CHAINS=$chains WRK_SCRIPT=refresh.lua WRK_THREADS=$REFRESH_CHAINS WRK_CONNECTIONS=$REFRESH_CHAINS \
    run_wrk refresh 200 POST /token
}

# ------------------------------------------------------------------------------------ MCP
# tools/list (MCP_TOOLS_LIST, lua/mcp.lua) at THREADS x CONNECTIONS: straight to the MCP server, through
# authgate with a valid token, and through authgate without one. The MCP server (start_mcp) is
# stateless and answers with JSON, so each POST is one request and one answer on both paths.

# mcp_token [PATH]: sets MCP_TOKEN to an access token for authgate's PATH (default /mcp) that outlives
# the next phase (with its warm-up). One unmeasured flow through the IdP, in its own tokens file (the
# refresh chains never see it), then one refresh grant with that flow's refresh token, whose answer
# gives the access token and its expires_in. The token is kept (per path) for a later phase while it
# is valid long enough.
mcp_token() {
  local path=${1:-/mcp} need=$((WARMUP + DURATION + 30)) TOKENS="$WORK/$BACKEND-mcp-token.tsv" id secret refresh answer ttl
  if [ -n "${TOKEN_OF[$path]:-}" ] && [ $(( TOKEN_UNTIL[$path] - $(date +%s) )) -ge "$need" ]; then
    MCP_TOKEN=${TOKEN_OF[$path]}
    return 0
  fi
  : >"$TOKENS"
  FLOW_RESOURCE_PATH=$path flows_setup 1 "an access token for $path"
  IFS=$'\t' read -r id secret refresh <"$TOKENS"
  answer=$(curl -sS --max-time 10 -X POST "$BASE/token" -H 'Accept: application/json' \
    --data-urlencode grant_type=refresh_token --data-urlencode "client_id=$id" \
    --data-urlencode "client_secret=$secret" --data-urlencode "refresh_token=$refresh") \
    || die "$BACKEND: POST /token (refresh grant for the mcp token) failed"
  read -r MCP_TOKEN ttl < <(node -e '
    let j = {}; try { j = JSON.parse(require("fs").readFileSync(0, "utf8")); } catch {}
    console.log(j.access_token || "-", Number.isInteger(j.expires_in) ? j.expires_in : 0)' <<<"$answer")
  [ "$MCP_TOKEN" != - ] || die "$BACKEND: no access_token from /token: $(head -c 300 <<<"$answer")"
  TOKEN_OF[$path]=$MCP_TOKEN
  TOKEN_UNTIL[$path]=$(( $(date +%s) + ttl ))
  [ "$ttl" -ge "$need" ] \
    || die "$BACKEND: the access token expires in $ttl s, before the end of the mcp phase ($need s with margin); raise AUTHGATE_ACCESS_TOKEN_TTL"
  say "$BACKEND: access token for $path obtained (expires in $ttl s; the phase needs $need s)"
}

# mcp_check URL [TOKEN [TOOL]]: one tools/list with curl before the measured run (naming TOOL, by
# default the e2e MCP server's echo), so that a wrong set-up fails with its answer instead of a phase
# full of errors.
mcp_check() {
  local url=$1 token=${2:-} tool=${3:-echo} status auth=()
  [ -z "$token" ] || auth=(-H "Authorization: Bearer $token")
  status=$(curl -sS --max-time 10 -o "$WORK/mcp-check.body" -w '%{http_code}' -X POST "$url" "${auth[@]}" \
    -H 'Content-Type: application/json' -H 'Accept: application/json, text/event-stream' \
    -H 'MCP-Protocol-Version: 2025-06-18' --data "$MCP_TOOLS_LIST") || status=000
  if [ "$status" != 200 ] || ! grep -q '"tools"' "$WORK/mcp-check.body" || ! grep -q "\"$tool\"" "$WORK/mcp-check.body"; then
    head -c 500 "$WORK/mcp-check.body" >&2; echo >&2
    tail -n 20 "$WORK/$BACKEND-server.log" "$WORK/$BACKEND-mcp.log" >&2
    die "$BACKEND: tools/list at $url answered $status before the run, not a tools/list result"
  fi
}

# The overhead line, once both mcp-direct and mcp have run on this backend: requests/s through authgate
# over requests/s direct, and the two medians (through vs direct).
mcp_overhead() {
  [ -n "${PHASE_RPS[mcp]:-}" ] && [ -n "${PHASE_RPS[mcp-direct]:-}" ] || return 0
  awk -v b="$BACKEND" -v t="${PHASE_RPS[mcp]}" -v d="${PHASE_RPS[mcp-direct]}" \
    -v tp="${PHASE_P50[mcp]}" -v dp="${PHASE_P50[mcp-direct]}" \
    'BEGIN { printf "%s overhead: through/direct = %.2f (p50 %.2f vs %.2f ms)\n", b, (d > 0 ? t / d : 0), tp / 1000, dp / 1000 }'
}

# mcp_warmup: MCP_WARMUP seconds of tools/list straight to the MCP server, unmeasured, right after it
# started. Node's JIT is cold at first (the first seconds run ~15% slower); without this, whichever MCP
# phase ran first would pay for it.
mcp_warmup() {
  [ "$MCP_WARMUP" -gt 0 ] || return 0
  local out="$WORK/$BACKEND-mcp-warmup.wrk" rc=0
  say "$BACKEND: ${MCP_WARMUP}s of tools/list straight to the MCP server (JIT warm-up, not counted)"
  wrk_for "$MCP_WARMUP" mcp.lua POST "$MCP_TOOLS_LIST" 200 "$MCP_URL" "$out" || rc=$?
  if [ "$rc" != 0 ] || ! grep -q '^AUTHGATE_BENCH .* bad=0 sockerr=0 ' "$out"; then
    cat "$out" >&2
    die "$BACKEND: the MCP server's warm-up failed (exit $rc)"
  fi
}

# tools/list straight to the MCP server: the baseline. Anything but a 200 tools/list result is an error.
phase_mcp-direct() {
  [ -n "$MCP_URL" ] || die "mcp-direct needs the MCP server, which is not running"
  mcp_check "$MCP_URL"
  WRK_SCRIPT=mcp.lua WRK_BASE=${MCP_URL%/mcp} run_wrk mcp-direct 200 POST /mcp "$MCP_TOOLS_LIST"
  mcp_overhead
}

# tools/list through authgate's /mcp with a valid bearer token: the guard (signature, claims, cached
# revocation check) and the forwarding. Anything but a 200 tools/list result is an error.
phase_mcp() {
  [ -n "$MCP_URL" ] || die "mcp needs the MCP server, which is not running"
  mcp_token
  mcp_check "$BASE/mcp" "$MCP_TOKEN"
  BENCH_TOKEN=$MCP_TOKEN WRK_SCRIPT=mcp.lua run_wrk mcp 200 POST /mcp "$MCP_TOOLS_LIST"
  mcp_overhead
}

# tools/list through authgate without a token: the guard's 401 with its WWW-Authenticate challenge
# (the MCP server is not reached). Anything but a 401 with a Bearer resource_metadata challenge is an error.
phase_mcp401() {
  WRK_SCRIPT=mcp.lua run_wrk mcp401 401 POST /mcp "$MCP_TOOLS_LIST"
}

# ------------------------------------------------------------------------------ MCP tool calls
# tools/call of echo (MCP_TOOLS_CALL, lua/mcp-call.lua) through /mcp, which has no tool rules (the body
# is not read), and through /policy/mcp, which has (the body is read, Mcp-Method/Mcp-Name checked, the
# rules evaluated, the call audited). Once both have run, one line compares them: the policy path must
# keep at least POLICY_MIN_RATIO of the rate without it.

# call_check URL TOKEN: one tools/call with curl before the measured run.
call_check() {
  local url=$1 token=$2 status
  status=$(curl -sS --max-time 10 -o "$WORK/call-check.body" -w '%{http_code}' -X POST "$url" \
    -H "Authorization: Bearer $token" -H 'Content-Type: application/json' \
    -H 'Accept: application/json, text/event-stream' -H 'MCP-Protocol-Version: 2025-06-18' \
    -H 'Mcp-Method: tools/call' -H 'Mcp-Name: echo' --data "$MCP_TOOLS_CALL") || status=000
  if [ "$status" != 200 ] || ! grep -q '"authgate-bench"' "$WORK/call-check.body"; then
    head -c 500 "$WORK/call-check.body" >&2; echo >&2
    tail -n 20 "$WORK/$BACKEND-server.log" "$WORK/$BACKEND-mcp.log" >&2
    die "$BACKEND: tools/call at $url answered $status before the run, not the echo result"
  fi
}

policy_ratio() {
  [ -n "${PHASE_RPS[mcp-call]:-}" ] && [ -n "${PHASE_RPS[mcp-call-policy]:-}" ] || return 0
  local verdict
  verdict=$(awk -v p="${PHASE_RPS[mcp-call-policy]}" -v o="${PHASE_RPS[mcp-call]}" -v min="$POLICY_MIN_RATIO" \
    'BEGIN { print ((o > 0 && p / o >= min) ? "ok" : "BELOW") }')
  awk -v b="$BACKEND" -v p="${PHASE_RPS[mcp-call-policy]}" -v o="${PHASE_RPS[mcp-call]}" \
    -v pp="${PHASE_P50[mcp-call-policy]}" -v op="${PHASE_P50[mcp-call]}" -v min="$POLICY_MIN_RATIO" -v v="$verdict" \
    'BEGIN { printf "%s policy: mcp-call-policy/mcp-call = %.2f (%.0f vs %.0f req/s, p50 %.2f vs %.2f ms; at least %.2f: %s)\n",
             b, (o > 0 ? p / o : 0), p, o, pp / 1000, op / 1000, min, v }'
  if [ "$verdict" != ok ]; then
    FAILED_PHASES=$((FAILED_PHASES + 1))
    echo "    errors: tools/call through the tool policy is below $POLICY_MIN_RATIO of the rate without it"
  fi
}

# One measured tools/call run: $1 is the phase's name in the report, $2 the resource's path.
call_run() {
  local name=$1 path=$2
  mcp_token "$path"
  call_check "$BASE$path" "$MCP_TOKEN"
  BENCH_TOKEN=$MCP_TOKEN WRK_SCRIPT=mcp-call.lua run_wrk "$name" 200 POST "$path" "$MCP_TOOLS_CALL"
}

# Both tool-call phases in PHASES: POLICY_ROUNDS rounds of each, alternated, compared by their mean
# rates. The MCP server (one Node process) sets the rate of both, and its CPU per request drifts by
# up to a fifth between one run and the next (its garbage collector, its JIT): one run of each
# would compare that drift as much as the policy; alternating lays it on both sides alike.
POLICY_ROUNDS_DONE=""
policy_rounds() {
  local r side name sum_rps sum_p50
  declare -A SUM_RPS=() SUM_P50=()
  for r in $(seq 1 "$POLICY_ROUNDS"); do
    for side in mcp-call mcp-call-policy; do
      name="$side.r$r"
      if [ "$side" = mcp-call ]; then call_run "$name" /mcp; else call_run "$name" /policy/mcp; fi
      SUM_RPS[$side]=$(awk -v a="${SUM_RPS[$side]:-0}" -v b="${PHASE_RPS[$name]}" 'BEGIN { printf "%.3f", a + b }')
      SUM_P50[$side]=$(( ${SUM_P50[$side]:-0} + PHASE_P50[$name] ))
    done
  done
  for side in mcp-call mcp-call-policy; do
    sum_rps=${SUM_RPS[$side]} sum_p50=${SUM_P50[$side]}
    PHASE_RPS[$side]=$(awk -v a="$sum_rps" -v n="$POLICY_ROUNDS" 'BEGIN { printf "%.3f", a / n }')
    PHASE_P50[$side]=$(( sum_p50 / POLICY_ROUNDS ))
    awk -v b="$BACKEND" -v ph="$side" -v r="${PHASE_RPS[$side]}" -v p="${PHASE_P50[$side]}" -v n="$POLICY_ROUNDS" \
      'BEGIN { printf "%s %s: mean of %d rounds %.0f req/s, p50 %.2f ms\n", b, ph, n, r, p / 1000 }'
  done
  POLICY_ROUNDS_DONE=$BACKEND
  policy_ratio
}

# Whether this run alternates the two tool-call phases (both listed, more than one round).
alternating_calls() {
  [ "$POLICY_ROUNDS" -gt 1 ] && [ "$NEEDS_POLICY" = 1 ] && case " $PHASES " in *" mcp-call "*) true ;; *) false ;; esac
}

# tools/call through /mcp, no tool rules: the guard and the forwarding only.
phase_mcp-call() {
  [ -n "$MCP_URL" ] || die "mcp-call needs the MCP server, which is not running"
  if alternating_calls; then
    [ "$POLICY_ROUNDS_DONE" = "$BACKEND" ] || policy_rounds
    return 0
  fi
  call_run mcp-call /mcp
  policy_ratio
}

# tools/call through /policy/mcp: the same, plus the tool policy and an audit row per call.
phase_mcp-call-policy() {
  [ -n "$MCP_URL" ] || die "mcp-call-policy needs the MCP server, which is not running"
  if alternating_calls; then
    [ "$POLICY_ROUNDS_DONE" = "$BACKEND" ] || policy_rounds
    return 0
  fi
  call_run mcp-call-policy /policy/mcp
  policy_ratio
}

# ------------------------------------------------------------------------------- built-in MCP
# tools/list on authgate's own MCP server (no upstream): the guard and the built-in server only, so
# the guard's revocation check and its cache show. builtin: one token; builtin-10k: BUILTIN_TOKENS
# distinct tokens, round-robin. Once both have run, one line compares them (the 10k rate must be at
# least BUILTIN_MIN_RATIO of the single-token rate) with the database queries per request of each.

# builtin_tokens: BUILTIN_GRANTS unmeasured flows, then real refresh-token rotations on those grants
# (bench/mint.mjs) until BUILTIN_TOKENS distinct access tokens exist, in $BUILTIN_TOKENS_FILE.
builtin_tokens() {
  local need=$((WARMUP + DURATION + 30)) TOKENS="$WORK/$BACKEND-builtin-grants.tsv" out="$WORK/$BACKEND-mint.out" rc=0 minted ttl
  BUILTIN_TOKENS_FILE="$WORK/$BACKEND-builtin-tokens.txt"
  : >"$TOKENS"
  flows_setup "$BUILTIN_GRANTS" "grants for $BUILTIN_TOKENS access tokens"
  say "$BACKEND: minting $BUILTIN_TOKENS access tokens by refresh-token rotation on $BUILTIN_GRANTS grants"
  timeout -k 5 150 node "$HERE/mint.mjs" "$BASE" "$TOKENS" "$BUILTIN_TOKENS" "$BUILTIN_TOKENS_FILE" >"$out" 2>&1 &
  FLOW_PID=$!
  wait "$FLOW_PID" || rc=$?
  FLOW_PID=""
  minted=$(awk '$1 == "AUTHGATE_MINT" { for (i = 2; i <= NF; i++) if ($i ~ /^tokens=/) { sub("tokens=", "", $i); print $i } }' "$out")
  ttl=$(awk '$1 == "AUTHGATE_MINT" { for (i = 2; i <= NF; i++) if ($i ~ /^min_expires_in=/) { sub("min_expires_in=", "", $i); print $i } }' "$out")
  if [ "$rc" != 0 ] || [ "${minted:-0}" != "$BUILTIN_TOKENS" ] || ! grep -q '^AUTHGATE_MINT .* errors=0 ' "$out"; then
    cat "$out" >&2
    die "$BACKEND: minting $BUILTIN_TOKENS access tokens failed (exit $rc, ${minted:-0} minted)"
  fi
  [ "${ttl:-0}" -ge "$need" ] \
    || die "$BACKEND: the access tokens expire in ${ttl:-0} s, before the end of the builtin-10k phase ($need s with margin)"
  say "$BACKEND: $(grep '^AUTHGATE_MINT ' "$out" | sed 's/^AUTHGATE_MINT //')"
}

# db_line PHASE: the database queries the phase's measured run made, per request.
db_line() {
  awk -v q="${PHASE_DBQ[$1]:-0}" -v n="${PHASE_REQUESTS[$1]:-0}" \
    'BEGIN { printf "    database queries: %d over %d requests = %.4f per request\n", q, n, (n > 0 ? q / n : 0) }'
}

# The comparison line, once both builtin phases have run on this backend.
builtin_ratio() {
  [ -n "${PHASE_RPS[builtin]:-}" ] && [ -n "${PHASE_RPS[builtin-10k]:-}" ] || return 0
  local verdict
  verdict=$(awk -v m="${PHASE_RPS[builtin-10k]}" -v o="${PHASE_RPS[builtin]}" -v min="$BUILTIN_MIN_RATIO" \
    'BEGIN { print ((o > 0 && m / o >= min) ? "ok" : "BELOW") }')
  awk -v b="$BACKEND" -v k="$BUILTIN_TOKENS" -v m="${PHASE_RPS[builtin-10k]}" -v o="${PHASE_RPS[builtin]}" \
    -v qm="${PHASE_DBQ[builtin-10k]:-0}" -v nm="${PHASE_REQUESTS[builtin-10k]:-0}" \
    -v qo="${PHASE_DBQ[builtin]:-0}" -v no="${PHASE_REQUESTS[builtin]:-0}" -v min="$BUILTIN_MIN_RATIO" -v v="$verdict" \
    'BEGIN { printf "%s builtin-10k/builtin = %.2f (%.0f req/s with %d tokens vs %.0f with one; at least %.2f: %s); database queries per request %.4f vs %.4f\n",
             b, (o > 0 ? m / o : 0), m, k, o, min, v, (nm > 0 ? qm / nm : 0), (no > 0 ? qo / no : 0) }'
  if [ "$verdict" != ok ]; then
    FAILED_PHASES=$((FAILED_PHASES + 1))
    echo "    errors: the rate with $BUILTIN_TOKENS tokens is below $BUILTIN_MIN_RATIO of the single-token rate"
  fi
}

# tools/list on the built-in server with one access token (as the mcp phase gets it).
phase_builtin() {
  mcp_token
  mcp_check "$BASE/mcp" "$MCP_TOKEN" whoami
  BENCH_TOKEN=$MCP_TOKEN BENCH_TOOL=whoami WRK_SCRIPT=mcp.lua run_wrk builtin 200 POST /mcp "$MCP_TOOLS_LIST"
  db_line builtin
  builtin_ratio
}

# tools/list on the built-in server, each request with the next of BUILTIN_TOKENS distinct access
# tokens (lua/mcp-tokens.lua): every token's first use in a cache lifetime is a revocation look-up.
phase_builtin-10k() {
  local first
  builtin_tokens
  first=$(head -n 1 "$BUILTIN_TOKENS_FILE")
  mcp_check "$BASE/mcp" "$first" whoami
  BENCH_TOKENS_FILE=$BUILTIN_TOKENS_FILE BENCH_THREADS=${WRK_THREADS:-$THREADS} BENCH_TOOL=whoami \
    WRK_SCRIPT=mcp-tokens.lua run_wrk builtin-10k 200 POST /mcp "$MCP_TOOLS_LIST"
  db_line builtin-10k
  builtin_ratio
}

for p in $PHASES; do
  declare -F "phase_$p" >/dev/null || die "unknown phase '$p' in PHASES (known: $(declare -F | awk '$3 ~ /^phase_/ { sub("phase_", "", $3); printf "%s ", $3 }'))"
done

# -------------------------------------------------------------------------------------- main
run_backend() {
  BACKEND=$1
  local db_url phase port memory
  PHASE_RPS=() PHASE_P50=() PHASE_DBQ=() PHASE_REQUESTS=() MCP_TOKEN="" TOKEN_OF=() TOKEN_UNTIL=()
  case $BACKEND in
    sqlite) db_url="sqlite://$WORK/bench.db" ;;
    postgres) pg_create; db_url=$PG_BENCH_URL ;;
  esac
  # authgate's port comes first: the IdP must know authgate's callback before authgate starts.
  port=$(free_port)
  TOKENS="$WORK/$BACKEND-tokens.tsv"
  if [ "$NEEDS_IDP" = 1 ]; then
    start_idp "http://127.0.0.1:$port/oauth/callback"
    [ "${IDP_ISSUER##*:}" != "$port" ] || die "the IdP took port $port, chosen for authgate: run again"
  fi
  if [ "$NEEDS_MCP" = 1 ]; then
    start_mcp
    [[ $MCP_URL != *":$port/mcp" ]] || die "the MCP server took port $port, chosen for authgate: run again"
    mcp_warmup
  fi
  start_server "$db_url" "$port"
  for phase in $PHASES; do "phase_$phase"; done
  kill -0 "$SERVER_PID" 2>/dev/null || die "authgate ($BACKEND) died during the run"
  memory="$BACKEND memory: peak RSS $(mib "$(status_kib "$SERVER_PID" VmHWM)") MiB (VmHWM), $(mib "$START_RSS") MiB after start-up"
  if [ -n "$IDP_PID" ]; then
    kill -0 "$IDP_PID" 2>/dev/null || die "the upstream IdP ($BACKEND) died during the run"
    memory+="; upstream IdP peak $(mib "$(status_kib "$IDP_PID" VmHWM)") MiB, $(mib "$IDP_START_RSS") MiB after start-up"
  fi
  if [ -n "$MCP_PID" ]; then
    kill -0 "$MCP_PID" 2>/dev/null || die "the MCP server ($BACKEND) died during the run"
    memory+="; MCP server peak $(mib "$(status_kib "$MCP_PID" VmHWM)") MiB, $(mib "$MCP_START_RSS") MiB after start-up"
  fi
  MEMORY_LINES+=("$memory")
  stop_server
  stop_idp
  stop_mcp
  [ "$BACKEND" = postgres ] && pg_drop
  return 0
}

case " $BACKENDS " in
  *" postgres "*)
    pg_prepare_url
    pg_admin -c 'SELECT 1' >/dev/null 2>&1 \
      || die "PostgreSQL does not answer at BENCH_PG_URL (set it, or BACKENDS=sqlite to skip PostgreSQL)"
    ;;
esac

flow_settings() {
  [ "$NEEDS_IDP" = 1 ] || return 0
  case " $PHASES " in
    *" flows "* | *" refresh "*)
      printf '; flows c%s for %ss or %s, refresh %s chains' "$FLOW_CONCURRENCY" "$FLOW_SECONDS" "$FLOW_MAX" "$REFRESH_CHAINS" ;;
  esac
  printf '; IdP oidc-provider %s on Node %s, consent page %s' \
    "$(node -p 'require(process.argv[1]).version' "$IDP_DIR/node_modules/oidc-provider/package.json" 2>/dev/null || echo '?')" \
    "$(node --version)" "$([ "$IDP_SKIP_CONSENT" = 1 ] && echo skipped || echo shown)"
}

mcp_settings() {
  [ "$NEEDS_MCP" = 1 ] || return 0
  printf '; MCP server tests/e2e/clients/mcp-server.mjs (@modelcontextprotocol/sdk %s, stateless, JSON answers) on Node %s, %ss warm-up' \
    "$(node -p 'require(process.argv[1]).version' "$MCP_DIR/node_modules/@modelcontextprotocol/sdk/package.json" 2>/dev/null || echo '?')" \
    "$(node --version)" "$MCP_WARMUP"
}

debug_banner
echo "# authgate bench $(date -u +%Y-%m-%dT%H:%M:%SZ): $BIN ($BUILD build$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null | sed 's/^/, commit /')); $($WRK -v 2>&1 | head -1 | awk '{ print $1, $2 }'); t$THREADS c$CONNECTIONS ${DURATION}s per phase$([ "$WARMUP" -gt 0 ] && echo " after ${WARMUP}s warm-up")$(flow_settings)$(mcp_settings); $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
for b in $BACKENDS; do run_backend "$b"; done
for line in "${MEMORY_LINES[@]}"; do echo "$line"; done
debug_banner
if [ "$FAILED_PHASES" -gt 0 ]; then
  say "$FAILED_PHASES phase(s) had errors: see the 'errors:' lines above"
  exit 1
fi
