#!/usr/bin/env bash
# Load and fault: a private PostgreSQL cluster, one authgate on it (development login), sustained
# mixed load for FAULT_SECONDS (bench/fault.mjs), and a PostgreSQL restart in the middle. Prints what
# was served, the errors and whether they all fell inside the outage, the recovery time, and a
# durability check of everything committed during the run; then stops everything it started.
#
#   bench/fault.sh [BINARY]          default target/release/authgate (see bench/README.md)
#
# Figure lines go to stdout, the last one JSON; progress and warnings go to stderr. Exit status 1
# when anything committed was lost, an error happened outside the outage window, authgate never
# recovered or died; 0 otherwise.
set -euo pipefail
export LC_ALL=C

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)

# ------------------------------------------------------------------------------------ settings
FAULT_SECONDS=${FAULT_SECONDS:-40}
FAULT_AT=${FAULT_AT:-15}
FAULT_DOWN=${FAULT_DOWN:-5}
FAULT_STOP_MODE=${FAULT_STOP_MODE:-fast}
FAULT_PACE_MS=${FAULT_PACE_MS:-20}
FAULT_WORKERS=${FAULT_WORKERS:-}
STARTUP_TIMEOUT=${STARTUP_TIMEOUT:-60}
KEEP=${KEEP:-0}

say() { printf '[fault] %s\n' "$*" >&2; }
die() { printf '[fault] FAILED: %s\n' "$*" >&2; exit 1; }
is_uint() { [[ $1 =~ ^[0-9]+$ ]] && [ "$1" -gt 0 ]; }
is_uint "$FAULT_SECONDS" || die "FAULT_SECONDS must be a positive number of seconds"
is_uint "$FAULT_AT" || die "FAULT_AT must be a positive number of seconds"
is_uint "$FAULT_DOWN" || die "FAULT_DOWN must be a positive number of seconds"
is_uint "$STARTUP_TIMEOUT" || die "STARTUP_TIMEOUT must be a positive number of seconds"
[[ $FAULT_PACE_MS =~ ^[0-9]+$ ]] || die "FAULT_PACE_MS must be a number of milliseconds"
case $FAULT_STOP_MODE in fast | immediate | smart) ;; *) die "FAULT_STOP_MODE must be fast, immediate or smart" ;; esac
# The restart must end early enough for the recovery to be seen under load.
[ $((FAULT_AT + FAULT_DOWN + 10)) -le "$FAULT_SECONDS" ] \
  || die "FAULT_SECONDS ($FAULT_SECONDS) must be at least FAULT_AT + FAULT_DOWN + 10 ($((FAULT_AT + FAULT_DOWN + 10)))"

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
  echo "# !!! DEBUG BUILD ($BIN): latencies are not representative; measure target/release/authgate."
}
if [ -d "$ROOT/src" ] && [ -n "$(find "$ROOT/src" "$ROOT/migrations" "$ROOT/Cargo.toml" "$ROOT/Cargo.lock" \
  -newer "$BIN" -print -quit 2>/dev/null)" ]; then
  say "WARNING: $BIN is older than the sources; rebuild it to test the current code"
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
command -v curl >/dev/null || apt_install curl
command -v node >/dev/null || die "the load driver needs Node 20 or later (node is missing)"
node -e 'process.exit(Number(process.versions.node.split(".")[0]) >= 20 ? 0 : 1)' \
  || die "the load driver needs Node 20 or later, not $(node --version)"
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || apt_install postgresql
# shellcheck disable=SC2012 # Debian's version directories: plain names
PGBIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
# PostgreSQL refuses to run as root: as root, the cluster belongs to the postgres system user.
if [ "$(id -u)" = 0 ]; then
  id postgres >/dev/null 2>&1 || die "the postgres system user is missing"
  as_pg() { runuser -u postgres -- "$@"; }
else
  as_pg() { "$@"; }
fi

# ------------------------------------------------------------------------ state and clean-up
WORK=$(mktemp -d /tmp/authgate-fault.XXXXXX)
chmod 755 "$WORK"
mkdir "$WORK/pg"
[ "$(id -u)" = 0 ] && chown postgres "$WORK/pg"
SERVER_PID=""
NODE_PID=""
SLEEP_PID=""
PG_STARTED=0

# stop_pid NAME PID: SIGTERM, up to 10 s, then SIGKILL.
stop_pid() {
  local name=$1 pid=$2
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$pid" 2>/dev/null; then
      say "$name ($pid) did not stop within 10 s of SIGTERM; killing it"
      kill -KILL "$pid" 2>/dev/null || true
    fi
  fi
  wait "$pid" 2>/dev/null || true
}
pg_ctl_() { as_pg "$PGBIN/pg_ctl" -D "$WORK/pg/data" "$@"; }
pg_stop_all() {
  [ "$PG_STARTED" = 1 ] || return 0
  PG_STARTED=0
  pg_ctl_ -m fast -w -t 30 stop >/dev/null 2>&1 || pg_ctl_ -m immediate -w stop >/dev/null 2>&1 || true
}

cleanup() {
  local rc=$?
  set +e
  [ -z "$SLEEP_PID" ] || kill "$SLEEP_PID" 2>/dev/null
  if [ -n "$NODE_PID" ]; then
    kill -TERM "$NODE_PID" 2>/dev/null
    wait "$NODE_PID" 2>/dev/null
  fi
  if [ -n "$SERVER_PID" ]; then
    stop_pid authgate "$SERVER_PID"
    SERVER_PID=""
  fi
  pg_stop_all
  if [ "$KEEP" = 1 ]; then
    say "kept $WORK (requests.tsv, server.log, pg/log)"
  else
    rm -rf "$WORK"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---------------------------------------------------------------------------------- helpers
now_ms() { date +%s%3N; }
# pause SECONDS: a sleep that an INT or TERM interrupts at once.
pause() {
  sleep "$1" &
  SLEEP_PID=$!
  wait "$SLEEP_PID" || true
  SLEEP_PID=""
}

# A TCP port no socket on this machine uses (IPv4 or IPv6), as in run.sh.
free_port() {
  local used port
  used=$(awk 'NR > 1 { split($2, a, ":"); print a[2] }' /proc/net/tcp /proc/net/tcp6 2>/dev/null | sort -u)
  for _ in $(seq 1 200); do
    port=$((20000 + RANDOM % 30000))
    grep -qx "$(printf '%04X' "$port")" <<<"$used" || { echo "$port"; return 0; }
  done
  die "no free port found"
}

status_kib() { awk -v k="$2:" '$1 == k { print $2 }' "/proc/$1/status" 2>/dev/null; }
mib() { awk -v k="${1:-0}" 'BEGIN { printf "%.1f", k / 1024 }'; }

# CPU accounting over the load, as in run.sh: authgate's ticks, all postgres processes', this
# shell's reaped children's (the Node driver) and everything else busy on the machine.
CLK_TCK=$(getconf CLK_TCK 2>/dev/null || echo 100)
pid_ticks() {
  local s
  s=$(cat "/proc/$1/stat" 2>/dev/null) || { echo 0; return; }
  s=${s##*) }
  # shellcheck disable=SC2086
  set -- $s
  echo $(( ${12} + ${13} ))
}
postgres_ticks() { { cat /proc/[0-9]*/stat 2>/dev/null || true; } | awk '$2 == "(postgres)" { t += $14 + $15 } END { print t + 0 }'; }
machine_ticks() { awk '$1 == "cpu" { print $2 + $3 + $4 + $7 + $8; exit }' /proc/stat; }
children_secs() { awk 'NR == 2 { t = 0; for (i = 1; i <= 2; i++) { split($i, a, "m"); sub("s", "", a[2]); t += a[1] * 60 + a[2] } print t }' "$1"; }

# ------------------------------------------------------------------------------- PostgreSQL
PG_PORT=$(free_port)
say "initdb in $WORK/pg/data ($PGBIN)"
as_pg "$PGBIN/initdb" -D "$WORK/pg/data" -A trust -U postgres >"$WORK/initdb.log" 2>&1 \
  || { cat "$WORK/initdb.log" >&2; die "initdb failed"; }
# fsync stays on: this is a durability test.
PG_OPTS="-p $PG_PORT -k $WORK/pg -c listen_addresses=127.0.0.1"
pg_start() { pg_ctl_ -l "$WORK/pg/log" -w -t "$STARTUP_TIMEOUT" -o "$PG_OPTS" start >/dev/null; }
pg_start || { cat "$WORK/pg/log" >&2; die "PostgreSQL did not start"; }
PG_STARTED=1
PG_URL="postgres://postgres@127.0.0.1:$PG_PORT/postgres?sslmode=disable"
PG_VERSION=$("$PGBIN/postgres" --version | awk '{ print $3 }')
say "PostgreSQL $PG_VERSION on 127.0.0.1:$PG_PORT"

# --------------------------------------------------------------------------------- authgate
# Only the settings below (other AUTHGATE_* variables of the caller are dropped): no public URL and
# no upstream, so loopback development mode with the development login.
PORT=$(free_port)
[ "$PORT" != "$PG_PORT" ] || PORT=$(free_port)
BASE="http://127.0.0.1:$PORT"
unset_args=()
for v in $(compgen -e | grep '^AUTHGATE_' || true); do unset_args+=(-u "$v"); done
env "${unset_args[@]}" \
  AUTHGATE_LISTEN="127.0.0.1:$PORT" \
  DATABASE_URL="$PG_URL" \
  AUTHGATE_REGISTER_RATE_LIMIT=1000000/sec \
  AUTHGATE_LOG=warn \
  "$BIN" serve >"$WORK/server.log" 2>&1 &
SERVER_PID=$!
t0=$(now_ms)
until curl -fsS -o /dev/null --max-time 2 "$BASE/.well-known/oauth-authorization-server" 2>/dev/null; do
  if ! kill -0 "$SERVER_PID" 2>/dev/null; then
    cat "$WORK/server.log" >&2
    SERVER_PID=""
    die "authgate exited during start-up"
  fi
  [ $(( $(now_ms) - t0 )) -lt $((STARTUP_TIMEOUT * 1000)) ] || { cat "$WORK/server.log" >&2; die "authgate did not answer within $STARTUP_TIMEOUT s"; }
  sleep 0.1
done
START_RSS=$(status_kib "$SERVER_PID" VmRSS)
say "authgate pid $SERVER_PID on $BASE, ready after $(( $(now_ms) - t0 )) ms"

# ------------------------------------------------------------------------------ load + fault
debug_banner
echo "# authgate fault $(date -u +%Y-%m-%dT%H:%M:%SZ): $BIN ($BUILD build$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null | sed 's/^/, commit /')); PostgreSQL $PG_VERSION private cluster (fsync on) on 127.0.0.1:$PG_PORT; ${FAULT_SECONDS}s of mixed load (pace ${FAULT_PACE_MS} ms${FAULT_WORKERS:+, workers $FAULT_WORKERS}), PostgreSQL stopped (-m $FAULT_STOP_MODE) at ${FAULT_AT}s for ${FAULT_DOWN}s; Node $(node --version); $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"

EVENTS=$WORK/events
: >"$EVENTS"
CPU0_SERVER=$(pid_ticks "$SERVER_PID")
CPU0_PG=$(postgres_ticks)
CPU0_MACHINE=$(machine_ticks)
times >"$WORK/times0"
LOAD_T0=$(now_ms)
FAULT_SECONDS=$FAULT_SECONDS FAULT_PACE_MS=$FAULT_PACE_MS FAULT_WORKERS=$FAULT_WORKERS FAULT_RECORDS="$WORK/requests.tsv" \
  timeout -k 5 $((FAULT_SECONDS + 200)) node "$HERE/fault.mjs" "$BASE" "$EVENTS" >"$WORK/fault.out" 2>"$WORK/fault.err" &
NODE_PID=$!

# The fault, on the same clock as the driver's (epoch milliseconds).
pause "$(awk -v at="$FAULT_AT" -v t0="$LOAD_T0" -v now="$(now_ms)" 'BEGIN { s = at - (now - t0) / 1000; printf "%.3f", (s > 0 ? s : 0) }')"
kill -0 "$NODE_PID" 2>/dev/null || { cat "$WORK/fault.err" >&2; die "the load driver exited before the fault"; }
say "stopping PostgreSQL (-m $FAULT_STOP_MODE) at $(( ($(now_ms) - LOAD_T0) / 1000 )) s"
echo "stop_issued $(now_ms)" >>"$EVENTS"
pg_ctl_ -m "$FAULT_STOP_MODE" -w -t 60 stop >/dev/null || { echo "failed $(now_ms)" >>"$EVENTS"; die "pg_ctl stop failed"; }
T_STOPPED=$(now_ms)
echo "stopped $T_STOPPED" >>"$EVENTS"
pause "$FAULT_DOWN"
say "starting PostgreSQL again after $(( ($(now_ms) - T_STOPPED) / 1000 )) s down"
echo "start_issued $(now_ms)" >>"$EVENTS"
pg_start || { echo "failed $(now_ms)" >>"$EVENTS"; cat "$WORK/pg/log" >&2; die "PostgreSQL did not start again"; }
echo "started $(now_ms)" >>"$EVENTS"
say "PostgreSQL accepting connections again; load goes on until ${FAULT_SECONDS}s, then the durability check"

NODE_RC=0
wait "$NODE_PID" || NODE_RC=$?
NODE_PID=""
times >"$WORK/times1"
read -r CPU_WALL CPU_SERVER CPU_NODE CPU_PG CPU_OTHER < <(awk -v wall="$(( $(now_ms) - LOAD_T0 ))" -v hz="$CLK_TCK" \
  -v srv="$(( $(pid_ticks "$SERVER_PID") - CPU0_SERVER ))" \
  -v pg="$(( $(postgres_ticks) - CPU0_PG ))" \
  -v all="$(( $(machine_ticks) - CPU0_MACHINE ))" \
  -v gen0="$(children_secs "$WORK/times0")" -v gen1="$(children_secs "$WORK/times1")" '
  BEGIN {
    s = wall / 1000; srv /= hz; pg /= hz; all /= hz; gen = gen1 - gen0
    if (srv < 0) srv = 0; if (pg < 0) pg = 0
    other = all - srv - gen - pg; if (other < 0) other = 0
    printf "%.3f %.3f %.3f %.3f %.3f\n", s, srv / s, gen / s, pg / s, other / s
  }')
if ! grep -q '^{' "$WORK/fault.out"; then
  cat "$WORK/fault.out" "$WORK/fault.err" >&2
  die "the load driver failed (exit $NODE_RC)"
fi
[ ! -s "$WORK/fault.err" ] || sed 's/^/[fault.mjs] /' "$WORK/fault.err" >&2

# ------------------------------------------------------------------------------------ report
ALIVE=1
kill -0 "$SERVER_PID" 2>/dev/null || ALIVE=0
PEAK_RSS=$(status_kib "$SERVER_PID" VmHWM)
# authgate's own view: its warnings and errors (logging is at warn), then how it stops on SIGTERM.
LOG_LINES=$(grep -c -E 'WARN|ERROR|"level":"(WARN|ERROR)"' "$WORK/server.log" || true)
FIRST_LOG=$(grep -E 'ERROR|WARN' "$WORK/server.log" | grep -v -E 'development mode|DEVELOPMENT LOGIN' | head -1 | sed 's/\x1b\[[0-9;]*m//g' | cut -c1-240 || true)
SIGTERM_MS=""
EXIT_CODE=""
if [ "$ALIVE" = 1 ]; then
  t0=$(now_ms)
  kill -TERM "$SERVER_PID"
  EXIT_CODE=0
  wait "$SERVER_PID" || EXIT_CODE=$?
  SIGTERM_MS=$(( $(now_ms) - t0 ))
  SERVER_PID=""
fi

grep -v '^{' "$WORK/fault.out"
awk -v s="$CPU_WALL" -v a="$CPU_SERVER" -v n="$CPU_NODE" -v p="$CPU_PG" -v o="$CPU_OTHER" \
  'BEGIN { printf "cores used over %.1f s: authgate %.2f, node %.2f, postgres %.2f, other %.2f (other: the rest of the machine; above ~0.3 it was not quiet)\n", s, a, n, p, o }'
if [ "$ALIVE" = 1 ]; then
  echo "authgate: alive after the run; peak RSS $(mib "$PEAK_RSS") MiB (VmHWM), $(mib "$START_RSS") MiB after start-up; exited $EXIT_CODE ${SIGTERM_MS} ms after SIGTERM; $LOG_LINES warning/error log lines"
else
  echo "authgate: DIED during the run"
fi
[ -z "$FIRST_LOG" ] || echo "  first warning/error logged: $FIRST_LOG"
debug_banner
node -e '
  const [line, alive, build, bin, pg, wall, srv, gen, pgc, other, rss, term, exit, logs] = process.argv.slice(1);
  const j = JSON.parse(line);
  j.ok = j.ok && alive === "1";
  Object.assign(j, {
    binary: bin, build, postgres: pg,
    authgate: { alive: alive === "1", peak_rss_mib: Number((Number(rss || 0) / 1024).toFixed(1)), sigterm_ms: term ? Number(term) : null, exit_code: exit === "" ? null : Number(exit), log_warnings: Number(logs) },
    cores: { seconds: Number(wall), authgate: Number(srv), node: Number(gen), postgres: Number(pgc), other: Number(other) },
  });
  process.stdout.write(JSON.stringify(j) + "\n");
  ' "$(grep '^{' "$WORK/fault.out" | tail -1)" "$ALIVE" "$BUILD" "$BIN" "$PG_VERSION" "$CPU_WALL" "$CPU_SERVER" "$CPU_NODE" "$CPU_PG" "$CPU_OTHER" \
  "$PEAK_RSS" "$SIGTERM_MS" "$EXIT_CODE" "$LOG_LINES"

[ "$ALIVE" = 1 ] || die "authgate died during the run"
if [ "$NODE_RC" != 0 ]; then
  say "the run failed: see 'lost:', 'outside' and 'recovery:' above"
  exit 1
fi
