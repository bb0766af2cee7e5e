#!/usr/bin/env bash
# Runs the example reverse-proxy configurations (deploy/nginx.conf, deploy/Caddyfile) on loopback
# ports in front of local authgate instances, and checks with curl what a client sees through them.
#
#   deploy/check.sh [BINARY]        default target/release/authgate, else target/debug/authgate
#   PROXIES=nginx deploy/check.sh   only one proxy (default: "nginx caddy")
#
# Each proxy runs a test copy of its file in which only these change: the listen ports (loopback),
# the certificate (self-signed for nginx; Caddy's own local CA), the authgate address, the static
# site's root, and 127.0.0.1 added as a name of the path-prefix site; authgate lists the test port's
# names in AUTHGATE_ALLOWED_HOSTS (Caddy passes Host with the port, which is 443 and left out in
# production). Then, through the proxy:
#   A  authgate at the root, AUTHGATE_PUBLIC_URL=https://mcp.example.com: discovery, /register,
#      the 401 on /mcp and its resource_metadata, http -> https.
#   B  authgate under /gate, AUTHGATE_PUBLIC_URL=https://example.com/gate: the root well-known
#      paths with /gate inserted, /gate/register, /gate/mcp's 401 and resource_metadata, nothing
#      else of the root proxied, and X-Forwarded-For overwritten (a client's own value does not
#      escape the per-address registration limit, while authgate does read the header from the
#      trusted proxy).
#   D  authgate under /gate on https://127.0.0.1:PORT/gate with the development login and an MCP
#      upstream that streams two SSE events 2 s apart: a whole authorization through the proxy
#      (cookies, Origin, redirects under the prefix, the token), then a /gate/mcp call whose first
#      event must arrive before the second is sent (no buffering), carrying the caller's email.
# Prints one line per check and "N passed, N failed"; exit status 1 if any failed. Installs nginx
# (nginx-light) and caddy with apt-get if they are missing. Stops everything it started.
set -euo pipefail
export LC_ALL=C

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
PROXIES=${PROXIES:-nginx caddy}

say() { printf '[check] %s\n' "$*" >&2; }
die() { printf '[check] FAILED: %s\n' "$*" >&2; exit 1; }

if [ $# -ge 1 ]; then
  BIN=$(cd "$(dirname "$1")" && pwd)/$(basename "$1")
else
  BIN=$ROOT/target/release/authgate
  [ -x "$BIN" ] || BIN=$ROOT/target/debug/authgate
fi
[ -x "$BIN" ] || die "no authgate binary: run 'cargo build --release' (or pass BINARY)"

SUDO=""
[ "$(id -u)" = 0 ] || SUDO=$(command -v sudo || true)
APT_UPDATED=0
apt_install() {
  command -v apt-get >/dev/null || die "apt-get is not available to install: $*"
  if [ "$APT_UPDATED" = 0 ]; then
    $SUDO apt-get update -qq >/dev/null
    APT_UPDATED=1
  fi
  say "installing $*"
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "$@" >/dev/null
}
for p in $PROXIES; do
  case $p in
    nginx) command -v nginx >/dev/null || apt_install nginx-light ;;
    caddy) command -v caddy >/dev/null || apt_install caddy ;;
    *) die "unknown proxy '$p' in PROXIES (nginx, caddy)" ;;
  esac
done
command -v curl >/dev/null || apt_install curl
command -v openssl >/dev/null || apt_install openssl
command -v node >/dev/null || die "the streaming MCP upstream needs Node (node is missing)"

W=$(mktemp -d /tmp/authgate-deploy-check.XXXXXX)
chmod 755 "$W"
AG_PID=""
PROXY_PID=""
SSE_PID=""
cleanup() {
  local rc=$? pid
  set +e
  for pid in $AG_PID $PROXY_PID $SSE_PID; do
    kill -TERM "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
  done
  rm -rf "$W"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

free_port() {
  local used port
  used=$(awk 'NR > 1 { split($2, a, ":"); print a[2] }' /proc/net/tcp /proc/net/tcp6 2>/dev/null | sort -u)
  for _ in $(seq 1 200); do
    port=$((20000 + RANDOM % 30000))
    grep -qx "$(printf '%04X' "$port")" <<<"$used" || { echo "$port"; return 0; }
  done
  die "no free port found"
}
AG=$(free_port)
TLS=$(free_port)
HTTP=$(free_port)
SSE=$(free_port)
[ "$(printf '%s\n' "$AG" "$TLS" "$HTTP" "$SSE" | sort -u | wc -l)" = 4 ] || die "port clash: run again"

PASSED=0
FAILED=0
# check NAME EXPECTED ACTUAL: equal strings pass.
check() {
  if [ "$2" = "$3" ]; then
    PASSED=$((PASSED + 1))
    echo "ok   $PROXY $1"
  else
    FAILED=$((FAILED + 1))
    echo "FAIL $PROXY $1: expected '$2', got '$3'"
  fi
}
# json FIELD: a top-level field of the JSON on stdin (arrays joined with spaces).
json() { node -e 'let s="";process.stdin.on("data",c=>s+=c).on("end",()=>{try{const v=JSON.parse(s)[process.argv[1]];process.stdout.write(Array.isArray(v)?v.join(" "):String(v??""))}catch{process.stdout.write("(not JSON)")}})' "$1"; }

# ------------------------------------------------------------------------------ fixtures
# A throw-away CA and a server certificate it signs (authgate doctor trusts the CA via SSL_CERT_FILE).
{
  openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=authgate check CA" \
    -keyout "$W/ca-key.pem" -out "$W/ca.pem" &&
    openssl req -newkey rsa:2048 -nodes -subj "/CN=example.com" -keyout "$W/key.pem" -out "$W/cert.csr" &&
    printf 'subjectAltName=DNS:example.com,DNS:mcp.example.com,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n' >"$W/cert.ext" &&
    openssl x509 -req -in "$W/cert.csr" -CA "$W/ca.pem" -CAkey "$W/ca-key.pem" -CAcreateserial -days 2 \
      -extfile "$W/cert.ext" -out "$W/cert.pem"
} >/dev/null 2>&1 || die "openssl could not make the test certificates"
mkdir -p "$W/site"
echo "the rest of example.com" >"$W/site/index.html"

# An MCP upstream that answers every POST with two SSE events, 2 s apart; the second carries the
# X-Authgate-Email authgate set.
cat >"$W/sse.mjs" <<'EOF'
import http from 'node:http';
http.createServer((req, res) => {
  let body = '';
  req.on('data', (c) => { body += c; });
  req.on('end', () => {
    if (req.method !== 'POST') { res.writeHead(405).end(); return; }
    let id = null;
    try { id = JSON.parse(body).id; } catch { /* not JSON */ }
    res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' });
    res.write(`event: message\ndata: ${JSON.stringify({ jsonrpc: '2.0', method: 'notifications/progress', params: { progressToken: 1, progress: 1 } })}\n\n`);
    setTimeout(() => res.end(`event: message\ndata: ${JSON.stringify({ jsonrpc: '2.0', id, result: { email: req.headers['x-authgate-email'] || null } })}\n\n`), 2000);
  });
}).listen(Number(process.argv[2]), '127.0.0.1', () => console.log('SSE READY'));
EOF
node "$W/sse.mjs" "$SSE" >"$W/sse.log" 2>&1 &
SSE_PID=$!

# start_authgate NAME ENV...: authgate on 127.0.0.1:$AG with a fresh SQLite file, only these settings.
start_authgate() {
  local name=$1 unset_args=() v i
  shift
  stop_authgate
  for v in $(compgen -e | grep '^AUTHGATE_' || true); do unset_args+=(-u "$v"); done
  env "${unset_args[@]}" AUTHGATE_LISTEN="127.0.0.1:$AG" DATABASE_URL="sqlite://$W/$name-$PROXY.db" \
    AUTHGATE_TRUSTED_PROXIES=127.0.0.1 AUTHGATE_ALLOWED_HOSTS="mcp.example.com:$TLS,example.com:$TLS" \
    AUTHGATE_LOG=warn "$@" \
    "$BIN" serve >"$W/authgate-$name-$PROXY.log" 2>&1 &
  AG_PID=$!
  for i in $(seq 1 100); do
    curl -fsS -o /dev/null --max-time 1 "http://127.0.0.1:$AG/healthz" 2>/dev/null && return 0
    kill -0 "$AG_PID" 2>/dev/null || { cat "$W/authgate-$name-$PROXY.log" >&2; die "authgate ($name) exited"; }
    sleep 0.1
  done
  die "authgate ($name) did not answer"
}
stop_authgate() {
  [ -n "$AG_PID" ] || return 0
  kill -TERM "$AG_PID" 2>/dev/null || true
  wait "$AG_PID" 2>/dev/null || true
  AG_PID=""
}
# An upstream that is never contacted: discovery, registration and the guard do not need it.
NO_UPSTREAM=(AUTHGATE_UPSTREAM_ISSUER=http://127.0.0.1:9/ AUTHGATE_UPSTREAM_CLIENT_ID=unused
  AUTHGATE_UPSTREAM_CLIENT_SECRET=unused AUTHGATE_ALLOW_ANY_USER=true)

# ------------------------------------------------------------------------------ proxies
start_nginx() {
  sed -e "s#listen 443 ssl http2;#listen 127.0.0.1:$TLS ssl http2;#" \
    -e '/listen \[::\]/d' \
    -e "s#listen 80;#listen 127.0.0.1:$HTTP;#" \
    -e "s#server 127.0.0.1:8080;#server 127.0.0.1:$AG;#" \
    -e "s#/etc/letsencrypt/live/[^/]*/fullchain.pem#$W/cert.pem#" \
    -e "s#/etc/letsencrypt/live/[^/]*/privkey.pem#$W/key.pem#" \
    -e "s#server_name example.com;#server_name example.com 127.0.0.1;#" \
    -e "s#root /var/www/html;#root $W/site;#" \
    "$HERE/nginx.conf" >"$W/authgate-nginx.conf"
  mkdir -p "$W/nginx"
  cat >"$W/nginx-main.conf" <<EOF
worker_processes 1;
pid $W/nginx.pid;
error_log $W/nginx-error.log;
events { worker_connections 256; }
http {
    access_log $W/nginx-access.log;
    client_body_temp_path $W/nginx/body;
    proxy_temp_path $W/nginx/proxy;
    fastcgi_temp_path $W/nginx/fastcgi;
    uwsgi_temp_path $W/nginx/uwsgi;
    scgi_temp_path $W/nginx/scgi;
    include $W/authgate-nginx.conf;
}
EOF
  nginx -t -c "$W/nginx-main.conf" -g 'daemon off;' >"$W/nginx-t.log" 2>&1 || { cat "$W/nginx-t.log" >&2; die "nginx -t failed"; }
  check "nginx -t on the test copy" "0" "0"
  nginx -c "$W/nginx-main.conf" -g 'daemon off;' >>"$W/nginx-error.log" 2>&1 &
  PROXY_PID=$!
}
start_caddy() {
  mkdir -p "$W/caddy-home"
  {
    printf '{\n\tadmin off\n\tdefault_bind 127.0.0.1\n\thttp_port %s\n\thttps_port %s\n\tlocal_certs\n\tskip_install_trust\n\tstorage file_system %s\n}\n\n' \
      "$HTTP" "$TLS" "$W/caddy-home/data"
    sed -e "s#127.0.0.1:8080#127.0.0.1:$AG#" \
      -e "s#^example.com {#example.com, 127.0.0.1 {#" \
      -e "s#root \* /var/www/html#root * $W/site#" \
      "$HERE/Caddyfile"
  } >"$W/Caddyfile"
  HOME=$W/caddy-home XDG_DATA_HOME=$W/caddy-home XDG_CONFIG_HOME=$W/caddy-home \
    caddy validate --config "$W/Caddyfile" --adapter caddyfile >"$W/caddy-validate.log" 2>&1 \
    || { cat "$W/caddy-validate.log" >&2; die "caddy validate failed"; }
  check "caddy validate on the test copy" "0" "0"
  HOME=$W/caddy-home XDG_DATA_HOME=$W/caddy-home XDG_CONFIG_HOME=$W/caddy-home \
    caddy run --config "$W/Caddyfile" --adapter caddyfile >"$W/caddy.log" 2>&1 &
  PROXY_PID=$!
}
stop_proxy() {
  [ -n "$PROXY_PID" ] || return 0
  kill -TERM "$PROXY_PID" 2>/dev/null || true
  wait "$PROXY_PID" 2>/dev/null || true
  PROXY_PID=""
}

# ------------------------------------------------------------------------------ the checks
# c HOST PATH [curl args]: curl through the proxy to https://HOST:$TLS PATH (HOST resolves to loopback).
c() {
  local host=$1 path=$2
  shift 2
  curl -sk --max-time 10 --resolve "$host:$TLS:127.0.0.1" "$@" "https://$host:$TLS$path" || true
}
status() { c "$@" -o /dev/null -w '%{http_code}'; }
REG_BODY='{"redirect_uris":["https://claude.ai/api/mcp/auth_callback"],"token_endpoint_auth_method":"client_secret_post","client_name":"check"}'
register() { c "$@" -o /dev/null -w '%{http_code}' -X POST -H 'content-type: application/json' --data "$REG_BODY"; }

round_a() {
  start_authgate a AUTHGATE_PUBLIC_URL=https://mcp.example.com "${NO_UPSTREAM[@]}"
  local h=mcp.example.com
  check "A GET /.well-known/oauth-authorization-server: issuer" "https://mcp.example.com" \
    "$(c $h /.well-known/oauth-authorization-server | json issuer)"
  check "A GET /.well-known/oauth-protected-resource/mcp: resource" "https://mcp.example.com/mcp" \
    "$(c $h /.well-known/oauth-protected-resource/mcp | json resource)"
  check "A POST /register" 201 "$(register $h /register)"
  check "A POST /mcp without a token (the proxy passed Host on)" 401 "$(status $h /mcp -X POST)"
  check "A (control) POST /mcp with a Host authgate does not answer as" 421 \
    "$(curl -s --max-time 10 -o /dev/null -w '%{http_code}' -X POST -H 'Host: evil.example.com' "http://127.0.0.1:$AG/mcp")"
  check "A /mcp WWW-Authenticate resource_metadata" \
    'resource_metadata="https://mcp.example.com/.well-known/oauth-protected-resource/mcp"' \
    "$(c $h /mcp -X POST -D - -o /dev/null | tr -d '\r' | awk 'tolower($1) == "www-authenticate:"' | grep -o 'resource_metadata="[^"]*"')"
  check "A plain http redirects to https" "https://$h/token" \
    "$(curl -s --max-time 10 --resolve "$h:$HTTP:127.0.0.1" -o /dev/null -w '%{redirect_url}' "http://$h:$HTTP/token" | sed "s#:$TLS/#/#")"
}

round_b() {
  start_authgate b AUTHGATE_PUBLIC_URL=https://example.com/gate AUTHGATE_REGISTER_RATE_LIMIT=3/min "${NO_UPSTREAM[@]}"
  local h=example.com
  check "B GET /.well-known/oauth-authorization-server/gate: issuer" "https://example.com/gate" \
    "$(c $h /.well-known/oauth-authorization-server/gate | json issuer)"
  check "B ... its token_endpoint" "https://example.com/gate/token" \
    "$(c $h /.well-known/oauth-authorization-server/gate | json token_endpoint)"
  check "B GET /.well-known/oauth-protected-resource/gate/mcp: resource" "https://example.com/gate/mcp" \
    "$(c $h /.well-known/oauth-protected-resource/gate/mcp | json resource)"
  check "B ... its authorization_servers" "https://example.com/gate" \
    "$(c $h /.well-known/oauth-protected-resource/gate/mcp | json authorization_servers)"
  check "B POST /gate/register" 201 "$(register $h /gate/register)"
  check "B POST /gate/mcp without a token" 401 "$(status $h /gate/mcp -X POST)"
  local meta
  meta=$(c $h /gate/mcp -X POST -D - -o /dev/null | tr -d '\r' | awk 'tolower($1) == "www-authenticate:"' | grep -o 'resource_metadata="[^"]*"' || true)
  check "B /gate/mcp WWW-Authenticate resource_metadata" \
    'resource_metadata="https://example.com/.well-known/oauth-protected-resource/gate/mcp"' "$meta"
  meta=${meta#resource_metadata=\"https://example.com}
  check "B ... and that URL answers through the proxy" 200 "$(status $h "${meta%\"}")"
  check "B GET /.well-known/oauth-protected-resource (root fallback): resource" "https://example.com/gate/mcp" \
    "$(c $h /.well-known/oauth-protected-resource | json resource)"
  check "B POST /gate/token (an empty request reaches authgate)" 400 "$(status $h /gate/token -X POST)"
  check "B GET /register at the root is the site's, not authgate's" 404 "$(status $h /register)"
  check "B GET / is the site" "the rest of example.com" "$(c $h /)"
  # X-Forwarded-For: the limit is 3 per minute and per address; one registration is spent above.
  # Three more, each claiming another address: the proxy overwrites the header, so they all count
  # for the proxy's peer (127.0.0.1) and the third is refused.
  local got=""
  for i in 1 2 3; do got+="$(register $h /gate/register -H "X-Forwarded-For: 203.0.113.$i") "; done
  check "B a client's own X-Forwarded-For is overwritten (rate limit still applies)" "201 201 429 " "$got"
  check "B (control) authgate does read X-Forwarded-For from the trusted proxy's address" 201 \
    "$(curl -s --max-time 10 -o /dev/null -w '%{http_code}' -X POST -H 'content-type: application/json' \
      -H 'X-Forwarded-For: 198.51.100.7' --data "$REG_BODY" "http://127.0.0.1:$AG/register")"
}

round_d() {
  local pub="https://127.0.0.1:$TLS/gate" h=127.0.0.1 jar=$W/jar-$PROXY
  start_authgate d AUTHGATE_PUBLIC_URL="$pub" AUTHGATE_MCP_UPSTREAM="http://127.0.0.1:$SSE/mcp"
  rm -f "$jar"
  local redirect="http://127.0.0.1:9/callback" client verifier challenge state page request action loc login_state code token
  client=$(c $h /gate/register -X POST -H 'content-type: application/json' \
    --data "{\"redirect_uris\":[\"$redirect\"],\"token_endpoint_auth_method\":\"none\",\"grant_types\":[\"authorization_code\",\"refresh_token\"],\"client_name\":\"check\"}" | json client_id)
  check "D POST /gate/register (public client)" "agc_" "${client:0:4}"
  verifier=$(openssl rand -hex 32)
  challenge=$(printf %s "$verifier" | openssl dgst -sha256 -binary | openssl base64 -A | tr '+/' '-_' | tr -d '=')
  state=$(openssl rand -hex 8)
  page=$(c $h "/gate/authorize?response_type=code&client_id=$client&redirect_uri=$(printf %s "$redirect" | sed 's#:#%3A#g; s#/#%2F#g')&code_challenge=$challenge&code_challenge_method=S256&state=$state&scope=mcp" \
    -c "$jar" -b "$jar" -w '\n%{http_code}')
  check "D GET /gate/authorize: the consent page" 200 "$(tail -1 <<<"$page")"
  request=$(grep -o 'name="request" value="[^"]*"' <<<"$page" | head -1 | sed 's/.*value="//; s/"$//')
  action=$(grep -o '<form[^>]*action="[^"]*"' <<<"$page" | head -1 | sed 's/.*action="//; s/"$//; s/&#x2[fF];/\//g; s/&amp;/\&/g')
  # A browser resolves the form's action against the page: a root-relative /authorize/consent
  # would leave the prefix. The flow goes on with the prefixed path either way.
  check "D the consent form's action stays under the prefix" "$pub/authorize/consent" \
    "$(case $action in /*) echo "https://127.0.0.1:$TLS$action" ;; *) echo "$action" ;; esac)"
  loc=$(c $h /gate/authorize/consent -c "$jar" -b "$jar" -X POST -H "Origin: https://127.0.0.1:$TLS" \
    --data-urlencode "request=$request" --data "decision=approve" -o /dev/null -w '%{http_code} %{redirect_url}')
  check "D POST consent: 303 to the development login" "303 $pub/dev/login?state=" "$(cut -d= -f1 <<<"$loc")="
  loc=${loc#303 }
  page=$(c $h "${loc#"https://127.0.0.1:$TLS"}" -c "$jar" -b "$jar" -w '\n%{http_code}')
  check "D GET /gate/dev/login" 200 "$(tail -1 <<<"$page")"
  login_state=$(grep -o 'name="state" value="[^"]*"' <<<"$page" | head -1 | sed 's/.*value="//; s/"$//')
  action=$(grep -o '<form[^>]*action="[^"]*"' <<<"$page" | head -1 | sed 's/.*action="//; s/"$//; s/&#x2[fF];/\//g; s/&amp;/\&/g')
  check "D the login form's action stays under the prefix" "$pub/dev/login" \
    "$(case $action in /*) echo "https://127.0.0.1:$TLS$action" ;; *) echo "$action" ;; esac)"
  loc=$(c $h /gate/dev/login -c "$jar" -b "$jar" -X POST -H "Origin: https://127.0.0.1:$TLS" \
    --data-urlencode "state=$login_state" --data-urlencode "email=someone@example.test" -o /dev/null -w '%{http_code} %{redirect_url}')
  check "D POST /gate/dev/login: 303 to the client with a code" "303 $redirect?code=" "$(cut -d= -f1 <<<"$loc")="
  code=$(sed 's/.*[?&]code=\([^&]*\).*/\1/' <<<"$loc")
  check "D ... its iss is the public URL" "$(printf %s "$pub" | sed 's#:#%3A#g; s#/#%2F#g')" "$(sed 's/.*[?&]iss=\([^&]*\).*/\1/' <<<"$loc")"
  token=$(c $h /gate/token -X POST --data grant_type=authorization_code --data-urlencode "code=$code" \
    --data-urlencode "code_verifier=$verifier" --data-urlencode "redirect_uri=$redirect" --data "client_id=$client" | json access_token)
  check "D POST /gate/token: an access token" "ey" "${token:0:2}"
  # The streamed call: the time each SSE data line arrives, in ms after the request.
  local t0 lines
  t0=$(date +%s%3N)
  lines=$(c $h /gate/mcp -N -X POST -H "Authorization: Bearer $token" -H 'content-type: application/json' \
    -H 'accept: application/json, text/event-stream' --data '{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"slow","arguments":{}}}' \
    | while IFS= read -r line; do
      if [[ $line == data:* ]]; then echo "$(( $(date +%s%3N) - t0 )) ${line#data: }"; fi
    done)
  local first second
  first=$(sed -n 1p <<<"$lines" | cut -d' ' -f1)
  second=$(sed -n 2p <<<"$lines" | cut -d' ' -f1)
  check "D /gate/mcp: first SSE event before the upstream's second (no buffering)" yes \
    "$([ -n "$first" ] && [ -n "$second" ] && [ "$first" -lt 1000 ] && [ "$second" -ge 1900 ] && echo yes || echo "no: at ${first:-?} and ${second:-?} ms")"
  check "D /gate/mcp: the upstream saw the caller" '"email":"someone@example.test"' \
    "$(sed -n 2p <<<"$lines" | grep -o '"email":"[^"]*"')"
  say "$PROXY: SSE events arrived at ${first:-?} ms and ${second:-?} ms"
  # authgate's own outside check of the deployment, trusting the test certificate.
  if "$BIN" doctor --help >/dev/null 2>&1; then
    local ca=$W/ca.pem out rc=0
    [ "$PROXY" = caddy ] && ca=$(find "$W/caddy-home" -name root.crt -path '*local*' | head -1)
    out=$(SSL_CERT_FILE=$ca "$BIN" doctor "$pub" 2>&1) || rc=$?
    check "D authgate doctor $pub" 0 "$rc"
    [ "$rc" = 0 ] || sed 's/^/    /' <<<"$out"
  fi
}

for PROXY in $PROXIES; do
  say "$PROXY: test copy on 127.0.0.1:$TLS (https) and :$HTTP (http), authgate on :$AG"
  "start_$PROXY"
  for i in $(seq 1 100); do
    curl -sk -o /dev/null --max-time 1 --resolve "example.com:$TLS:127.0.0.1" "https://example.com:$TLS/" && break
    kill -0 "$PROXY_PID" 2>/dev/null || die "$PROXY exited: $(tail -5 "$W/$PROXY"*.log)"
    sleep 0.1
  done
  round_a
  round_b
  round_d
  stop_authgate
  stop_proxy
done
echo "$PASSED passed, $FAILED failed"
[ "$FAILED" = 0 ]
