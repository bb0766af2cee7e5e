#!/usr/bin/env bash
# Load figures for authgate: starts a fresh server per storage backend on a free loopback port,
# drives each phase with wrk, prints one line per figure, then stops everything it started.
#
#   bench/run.sh [BINARY]          default target/release/authgate (see bench/README.md)
#
# Figure lines go to stdout; progress and warnings go to stderr (`bench/run.sh 2>/dev/null` keeps
# only the figures). Adding a phase: write `phase_<name>` below (it may prepare state with curl, then
# calls run_wrk) and add <name> to PHASES.
set -euo pipefail
export LC_ALL=C

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)

# ------------------------------------------------------------------------------------ settings
DURATION=${DURATION:-10}
THREADS=${THREADS:-2}
CONNECTIONS=${CONNECTIONS:-16}
PHASES=${PHASES:-metadata register}
BACKENDS=${BACKENDS:-sqlite postgres}
PG_URL=${BENCH_PG_URL:-postgres://postgres@127.0.0.1:5432/postgres}
PG_DB=authgate_bench
STARTUP_TIMEOUT=${STARTUP_TIMEOUT:-60}
WARMUP=${WARMUP:-0}
VERBOSE=${VERBOSE:-0}
# Claude.ai's Dynamic Client Registration body.
DCR_BODY='{"redirect_uris":["https://claude.ai/api/mcp/auth_callback"],"token_endpoint_auth_method":"client_secret_post","grant_types":["authorization_code","refresh_token"],"response_types":["code"],"client_name":"Claude"}'

say() { printf '[bench] %s\n' "$*" >&2; }
die() { printf '[bench] FAILED: %s\n' "$*" >&2; exit 1; }
is_uint() { [[ $1 =~ ^[0-9]+$ ]] && [ "$1" -gt 0 ]; }
is_uint "$DURATION" || die "DURATION must be a positive number of seconds, not '$DURATION'"
is_uint "$THREADS" || die "THREADS must be a positive integer"
is_uint "$CONNECTIONS" || die "CONNECTIONS must be a positive integer"
is_uint "$STARTUP_TIMEOUT" || die "STARTUP_TIMEOUT must be a positive number of seconds"
[[ $WARMUP =~ ^[0-9]+$ ]] || die "WARMUP must be a number of seconds (0: none)"
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

# ------------------------------------------------------------------------ state and clean-up
WORK=$(mktemp -d /tmp/authgate-bench.XXXXXX)
SERVER_PID=""
WRK_PID=""
PG_CREATED=0
PG_BENCH_URL=""
MEMORY_LINES=()
FAILED_PHASES=0

stop_server() {
  [ -n "$SERVER_PID" ] || return 0
  local pid=$SERVER_PID i
  SERVER_PID=""
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    for i in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$pid" 2>/dev/null; then
      say "authgate ($pid) did not stop within 10 s of SIGTERM; killing it"
      kill -KILL "$pid" 2>/dev/null || true
    fi
  fi
  wait "$pid" 2>/dev/null || true
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
  stop_server
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

# Start authgate with only the settings below (other AUTHGATE_* variables of the caller are dropped).
start_server() {
  local db_url=$1 port unset_args=() v t0 waited=0
  port=$(free_port)
  BASE="http://127.0.0.1:$port"
  for v in $(compgen -e | grep '^AUTHGATE_' || true); do unset_args+=(-u "$v"); done
  env "${unset_args[@]}" \
    AUTHGATE_LISTEN="127.0.0.1:$port" \
    DATABASE_URL="$db_url" \
    AUTHGATE_REGISTER_RATE_LIMIT=1000000/sec \
    AUTHGATE_LOG=warn \
    "$BIN" serve >"$WORK/$BACKEND-server.log" 2>&1 &
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

# CPU accounting around a wrk run: authgate's ticks, PostgreSQL's (all postgres processes), wrk's
# (this shell's reaped children, via `times`) and everything else busy on the machine.
CLK_TCK=$(getconf CLK_TCK 2>/dev/null || echo 100)
pid_ticks() {
  local s
  s=$(cat "/proc/$1/stat" 2>/dev/null) || { echo 0; return; }
  s=${s##*) }
  # shellcheck disable=SC2086
  set -- $s
  echo $(( ${12} + ${13} ))
}
postgres_ticks() { cat /proc/[0-9]*/stat 2>/dev/null | awk '$2 == "(postgres)" { t += $14 + $15 } END { print t + 0 }'; }
machine_ticks() { awk '$1 == "cpu" { print $2 + $3 + $4 + $7 + $8; exit }' /proc/stat; }
children_secs() { awk 'NR == 2 { t = 0; for (i = 1; i <= 2; i++) { split($i, a, "m"); sub("s", "", a[2]); t += a[1] * 60 + a[2] } print t }' "$1"; }

cpu_begin() {
  CPU0_WALL=$(date +%s%N)
  CPU0_SERVER=$(pid_ticks "$SERVER_PID")
  CPU0_PG=$(postgres_ticks)
  CPU0_MACHINE=$(machine_ticks)
  times >"$WORK/times0"
}
cpu_end() {
  times >"$WORK/times1"
  local wall=$(( $(date +%s%N) - CPU0_WALL ))
  read -r CPU_WALL CPU_SERVER CPU_WRK CPU_PG CPU_OTHER < <(awk -v wall="$wall" -v hz="$CLK_TCK" \
    -v srv="$(( $(pid_ticks "$SERVER_PID") - CPU0_SERVER ))" \
    -v pg="$(( $(postgres_ticks) - CPU0_PG ))" \
    -v all="$(( $(machine_ticks) - CPU0_MACHINE ))" \
    -v gen0="$(children_secs "$WORK/times0")" -v gen1="$(children_secs "$WORK/times1")" '
    BEGIN {
      s = wall / 1e9; srv /= hz; pg /= hz; all /= hz; gen = gen1 - gen0
      if (srv < 0) srv = 0; if (pg < 0) pg = 0
      other = all - srv - gen - pg; if (other < 0) other = 0
      printf "%.3f %.3f %.3f %.3f %.3f\n", s, srv, gen, pg, other
    }')
}

# wrk_for SECONDS SCRIPT METHOD BODY EXPECT URL OUTPUT: wrk in the background and `wait` for it, so
# that an INT or TERM runs the clean-up at once instead of after the phase.
wrk_for() {
  local rc=0
  BENCH_METHOD=$3 BENCH_BODY=$4 BENCH_EXPECT=$5 LUA_PATH="$HERE/lua/?.lua;;" \
    timeout -k 5 $(($1 + 30)) "$WRK" -t"$THREADS" -c"$CONNECTIONS" -d"$1s" -s "$HERE/lua/$2" "$6" >"$7" 2>&1 &
  WRK_PID=$!
  wait "$WRK_PID" || rc=$?
  WRK_PID=""
  return "$rc"
}

# run_wrk PHASE EXPECTED_STATUS METHOD PATH [JSON_BODY]
# Runs wrk with bench/lua/$WRK_SCRIPT (default fixed.lua) against $BASE$PATH and prints the figure.
# A phase with its own request logic writes bench/lua/<its>.lua (require "tally") and sets WRK_SCRIPT.
run_wrk() {
  local phase=$1 expect=$2 method=$3 path=$4 body=${5:-} script=${WRK_SCRIPT:-fixed.lua}
  local out="$WORK/$BACKEND-$phase.wrk" rc=0
  if [ "$WARMUP" -gt 0 ]; then
    say "$BACKEND $phase: ${WARMUP}s warm-up (not counted)"
    wrk_for "$WARMUP" "$script" "$method" "$body" "$expect" "$BASE$path" "$out" \
      || { cat "$out" >&2; die "wrk failed in the warm-up of $phase"; }
  fi
  say "$BACKEND $phase: wrk -t$THREADS -c$CONNECTIONS -d${DURATION}s $method $path"
  cpu_begin
  wrk_for "$DURATION" "$script" "$method" "$body" "$expect" "$BASE$path" "$out" || rc=$?
  cpu_end
  if [ "$rc" != 0 ] || ! grep -q '^AUTHGATE_BENCH ' "$out"; then
    cat "$out" >&2
    die "wrk failed in phase $phase (exit $rc)"
  fi
  [ "$VERBOSE" = 1 ] && sed 's/^/    /' "$out" >&2
  report "$phase" "$out"
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
  awk -v s="$CPU_WALL" -v srv="$CPU_SERVER" -v gen="$CPU_WRK" -v pg="$CPU_PG" -v other="$CPU_OTHER" \
    -v n="$requests" -v max="$max" -v show_pg="$([ "$BACKEND" = postgres ] && echo 1 || echo 0)" '
    BEGIN {
      line = sprintf("    cores used over %.1f s: authgate %.2f, wrk %.2f", s, srv / s, gen / s)
      if (show_pg) line = line sprintf(", postgres %.2f", pg / s)
      else other += pg
      line = line sprintf(", other %.2f; authgate CPU %.3f ms/request; max latency %.1f ms",
                          other / s, (n > 0 ? srv * 1000 / n : 0), max / 1000)
      print line
    }'
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

for p in $PHASES; do
  declare -F "phase_$p" >/dev/null || die "unknown phase '$p' in PHASES (known: $(declare -F | awk '$3 ~ /^phase_/ { sub("phase_", "", $3); printf "%s ", $3 }'))"
done

# -------------------------------------------------------------------------------------- main
run_backend() {
  BACKEND=$1
  local db_url phase
  case $BACKEND in
    sqlite) db_url="sqlite://$WORK/bench.db" ;;
    postgres) pg_create; db_url=$PG_BENCH_URL ;;
  esac
  start_server "$db_url"
  for phase in $PHASES; do "phase_$phase"; done
  kill -0 "$SERVER_PID" 2>/dev/null || die "authgate ($BACKEND) died during the run"
  MEMORY_LINES+=("$BACKEND memory: peak RSS $(mib "$(status_kib "$SERVER_PID" VmHWM)") MiB (VmHWM), $(mib "$START_RSS") MiB after start-up")
  stop_server
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

debug_banner
echo "# authgate bench $(date -u +%Y-%m-%dT%H:%M:%SZ): $BIN ($BUILD build$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null | sed 's/^/, commit /')); $($WRK -v 2>&1 | head -1 | awk '{ print $1, $2 }'); t$THREADS c$CONNECTIONS ${DURATION}s per phase$([ "$WARMUP" -gt 0 ] && echo " after ${WARMUP}s warm-up"); $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
for b in $BACKENDS; do run_backend "$b"; done
for line in "${MEMORY_LINES[@]}"; do echo "$line"; done
debug_banner
if [ "$FAILED_PHASES" -gt 0 ]; then
  say "$FAILED_PHASES phase(s) had errors: see the 'errors:' lines above"
  exit 1
fi
