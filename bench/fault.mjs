#!/usr/bin/env node
// Sustained mixed load on one authgate (development login) while its PostgreSQL is restarted, for
// bench/fault.sh, which starts PostgreSQL and authgate, stops and starts PostgreSQL in the middle of
// the run and writes the times to EVENTS_FILE.
//
//   node bench/fault.mjs BASE EVENTS_FILE
//
// Workers, each a closed loop that pauses FAULT_PACE_MS after every iteration:
//   discovery  GET the RFC 8414 and RFC 9728 documents and /jwks.json (no storage)
//   register   POST /register (Claude.ai's DCR body) -> 201
//   flow       a whole authorization with the development login, as Claude.ai and its user's browser:
//              POST /register -> GET /authorize (PKCE S256) -> 200 consent page -> POST
//              /authorize/consent (hidden request, approve, Origin) -> 303 /dev/login?state= ->
//              GET it -> 200 -> POST /dev/login (state, email, Origin) -> 303 to the client's redirect
//              URI with code, state and iss (never fetched) -> POST /token (authorization_code) -> 200.
//              Its refresh token starts a rotation chain.
//   refresh    POST /token (refresh_token) with a chain's newest token -> 200; the answer's tokens
//              replace the chain's (rotation). Each chain is used by one request at a time.
//   mcp        POST /mcp JSON-RPC initialize, tools/list, tools/call whoami with a chain's access
//              token (the built-in MCP server) -> 200 and the caller's email in whoami's answer.
//   probe      GET /healthz (counted, must stay 200) and GET /readyz (recorded apart) every 200 ms.
//
// Every request's start, end, kind, status and latency is kept. When the load ends (FAULT_SECONDS),
// every client that got a 201 and every chain's newest refresh token is re-checked (durability), and
// the figures are printed as plain lines and a final JSON line. Exit status 1 when anything
// committed was lost, an error happened outside the outage window (from PostgreSQL's stop to the
// first success after its restart), or authgate never recovered.
//
// Env: FAULT_SECONDS (40), FAULT_PACE_MS (20), FAULT_WORKERS ("discovery=1,register=1,flow=2,
// refresh=2,mcp=2"), FAULT_VERIFY_CONCURRENCY (8), FAULT_RECORDS (a file: every request as TSV).
// Node 20 built-ins only. Only loopback URLs are ever fetched; each request times out after 10 s;
// the process gives up FAULT_SECONDS + 180 s after it started.
import crypto from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';

const REDIRECT_URI = 'https://claude.ai/api/mcp/auth_callback';
const DCR_BODY = JSON.stringify({
  redirect_uris: [REDIRECT_URI],
  token_endpoint_auth_method: 'client_secret_post',
  grant_types: ['authorization_code', 'refresh_token'],
  response_types: ['code'],
  client_name: 'Claude',
});
const REQUEST_TIMEOUT_MS = 10_000;
const FORM = 'application/x-www-form-urlencoded';
// Kinds whose every request needs the database. /mcp needs it only when its revocation cache
// (10 s) misses; discovery and /healthz never do.
const DB_KINDS = new Set(['register', 'authorize', 'consent', 'login', 'token', 'refresh']);
const KINDS = ['discovery', 'register', 'authorize', 'consent', 'login', 'token', 'refresh', 'mcp', 'health'];

function usage(msg) {
  process.stderr.write(`fault.mjs: ${msg}\nusage: node fault.mjs BASE EVENTS_FILE\n`);
  process.exit(2);
}
function positive(name, fallback) {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return fallback;
  const n = Number(raw);
  if (!Number.isInteger(n) || n <= 0) usage(`${name} must be a positive integer, not '${raw}'`);
  return n;
}

const [baseArg, eventsFile] = process.argv.slice(2);
if (!baseArg || !eventsFile) usage('missing arguments');
const base = baseArg.replace(/\/+$/, '');
const seconds = positive('FAULT_SECONDS', 40);
const paceMs = Number(process.env.FAULT_PACE_MS ?? 20);
if (!Number.isFinite(paceMs) || paceMs < 0) usage('FAULT_PACE_MS must be a number of milliseconds');
const verifyConcurrency = positive('FAULT_VERIFY_CONCURRENCY', 8);
const workers = { discovery: 1, register: 1, flow: 2, refresh: 2, mcp: 2 };
for (const pair of (process.env.FAULT_WORKERS || '').split(',').map((s) => s.trim()).filter(Boolean)) {
  const [k, v] = pair.split('=');
  if (!(k in workers) || !/^\d+$/.test(v ?? '')) usage(`FAULT_WORKERS: bad entry '${pair}' (discovery, register, flow, refresh, mcp = N)`);
  workers[k] = Number(v);
}

function isLoopback(url) {
  const host = new URL(url).hostname.replace(/^\[|\]$/g, '');
  return host === 'localhost' || host === '::1' || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(host);
}
if (!isLoopback(base)) usage(`refusing a non-loopback URL: ${base}`);

setTimeout(() => {
  process.stderr.write(`fault.mjs: still running ${seconds + 180} s after the start; giving up\n`);
  process.exit(3);
}, (seconds + 180) * 1000).unref();

// ------------------------------------------------------------------------------------ HTTP
const agent = new http.Agent({ keepAlive: true, maxSockets: 64 });
const records = []; // the load: {kind, what, t0, t1, ms, status, ok, note}
const verifyRecords = []; // the durability check, apart
const readyz = []; // {t0, status}
let recordsTarget = records;

// One request, no redirects followed. Resolves {status, headers, body}; status 0 for a socket error
// or a timeout (body: the error).
function send(url, { method = 'GET', headers = {}, body } = {}) {
  if (!isLoopback(url)) throw new Error(`refusing to fetch a non-loopback URL: ${url}`);
  return new Promise((resolve) => {
    const payload = body === undefined ? undefined : Buffer.from(body);
    let done = false;
    const finish = (r) => { if (!done) { done = true; resolve(r); } };
    const req = http.request(url, {
      method,
      agent,
      headers: payload ? { ...headers, 'content-length': payload.length } : headers,
    }, (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => finish({ status: res.statusCode, headers: res.headers, body: Buffer.concat(chunks).toString('utf8') }));
      res.on('error', (e) => finish({ status: 0, headers: {}, body: `${e.code || e.name}: ${e.message}` }));
    });
    req.setTimeout(REQUEST_TIMEOUT_MS, () => req.destroy(Object.assign(new Error(`no answer within ${REQUEST_TIMEOUT_MS} ms`), { code: 'TIMEOUT' })));
    req.on('error', (e) => finish({ status: 0, headers: {}, body: `${e.code || e.name}: ${e.message}` }));
    req.end(payload);
  });
}

// call KIND WHAT URL OPTS EXPECT [CHECK]: one recorded request. ok when the status is EXPECT and
// CHECK(res) (if given) returns nothing; otherwise CHECK's string is the note.
async function call(kind, what, url, opts, expect, check) {
  const t0 = Date.now();
  const p0 = performance.now();
  const res = await send(url, opts);
  const ms = performance.now() - p0;
  let note = '';
  if (res.status === 0) note = res.body;
  else if (res.status !== expect) note = `${res.body.replace(/\s+/g, ' ').slice(0, 160)}`;
  else if (check) {
    try { note = check(res) || ''; } catch (e) { note = `bad answer: ${e.message}`; }
  }
  const ok = res.status === expect && !note;
  recordsTarget.push({ kind, what, t0, t1: t0 + ms, ms, status: res.status, expect, ok, note });
  res.ok = ok;
  res.note = note;
  return res;
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const b64url = (buf) => buf.toString('base64url');
const form = (fields) => new URLSearchParams(fields).toString();
function parseJson(body) { return JSON.parse(body); }
function decode(s) {
  return s.replace(/&quot;/g, '"').replace(/&#39;|&#x27;/g, "'").replace(/&lt;/g, '<').replace(/&gt;/g, '>')
    .replace(/&#x2F;/gi, '/').replace(/&amp;/g, '&');
}
function attr(tag, name) {
  const m = tag.match(new RegExp(`\\s${name}\\s*=\\s*(?:"([^"]*)"|'([^']*)'|([^\\s>]+))`, 'i'));
  return m ? decode(m[1] ?? m[2] ?? m[3]) : undefined;
}
// The first <form> of a page: its action (absolute) and the value of one hidden input.
function formOf(html, pageUrl, inputName) {
  const m = html.match(/<form\b[^>]*>[\s\S]*?<\/form>/i);
  if (!m) throw new Error('no <form> in the page');
  const open = m[0].slice(0, m[0].indexOf('>') + 1);
  const input = (m[0].match(/<input\b[^>]*>/gi) || []).find((t) => attr(t, 'name') === inputName);
  const value = input && attr(input, 'value');
  if (!value) throw new Error(`no input "${inputName}" in the form`);
  return { action: new URL(attr(open, 'action') || pageUrl, pageUrl).toString(), value };
}

// A browser's cookies for one host: host-only, honouring Path, deleted by Max-Age <= 0 or an empty value.
class Jar {
  constructor() { this.list = []; }

  take(setCookie) {
    for (const line of [].concat(setCookie || [])) {
      const [pair, ...attrs] = line.split(';');
      const eq = pair.indexOf('=');
      if (eq <= 0) continue;
      const name = pair.slice(0, eq).trim();
      const value = pair.slice(eq + 1).trim();
      let path = '/';
      let gone = value === '';
      for (const a of attrs) {
        const i = a.indexOf('=');
        const k = (i < 0 ? a : a.slice(0, i)).trim().toLowerCase();
        const v = i < 0 ? '' : a.slice(i + 1).trim();
        if (k === 'path' && v.startsWith('/')) path = v;
        else if (k === 'max-age' && Number(v) <= 0) gone = true;
      }
      this.list = this.list.filter((c) => !(c.path === path && c.name === name));
      if (!gone) this.list.push({ path, name, value });
    }
  }

  header(url) {
    const p = new URL(url).pathname;
    const matches = (cp) => p === cp || (p.startsWith(cp) && (cp.endsWith('/') || p[cp.length] === '/'));
    return this.list.filter((c) => matches(c.path)).map((c) => `${c.name}=${c.value}`).join('; ');
  }
}

// --------------------------------------------------------------------------------- the state
const t0Run = Date.now();
const deadline = t0Run + seconds * 1000;
const live = () => Date.now() < deadline;
const clients = []; // every 201: {clientId, secret, from}
const chains = []; // {clientId, secret, email, refresh, access, issued, busy, dead, lastOkAt}
const flowStats = { completed: 0, failed: 0, cutOff: 0, failures: {} };
let userNo = 0;

function register(kind = 'register') {
  return call(kind, 'POST /register', `${base}/register`, {
    method: 'POST', headers: { 'content-type': 'application/json', accept: 'application/json' }, body: DCR_BODY,
  }, 201, (res) => {
    const reg = parseJson(res.body);
    if (!reg.client_id || !reg.client_secret) return 'no client_id or client_secret';
    clients.push({ clientId: reg.client_id, secret: reg.client_secret });
    res.reg = reg;
    return '';
  });
}

// One authorization with the development login. Returns the chain, or the failed step's name, or
// 'cut' when the run ended between two steps.
async function flow() {
  const reg = await register();
  if (!reg.ok) return 'register';
  const { client_id: clientId, client_secret: secret } = reg.reg;
  const jar = new Jar();
  const browse = async (kind, what, url, opts, expect, check) => {
    if (!live()) return { cut: true };
    const headers = { 'user-agent': 'authgate-fault', accept: 'text/html', ...(opts.headers || {}) };
    const cookie = jar.header(url);
    if (cookie) headers.cookie = cookie;
    const res = await call(kind, what, url, { ...opts, headers }, expect, check);
    jar.take(res.headers['set-cookie']);
    return res;
  };
  const verifier = b64url(crypto.randomBytes(32));
  const challenge = b64url(crypto.createHash('sha256').update(verifier).digest());
  const state = b64url(crypto.randomBytes(16));
  userNo += 1;
  const email = `user${userNo}@example.test`;
  const authorize = `${base}/authorize?${form({
    response_type: 'code', client_id: clientId, redirect_uri: REDIRECT_URI, code_challenge: challenge,
    code_challenge_method: 'S256', state, scope: 'mcp', resource: `${base}/mcp`,
  })}`;
  let consent;
  let res = await browse('authorize', 'GET /authorize', authorize, {}, 200, (r) => {
    consent = formOf(r.body, authorize, 'request');
    return consent.action.startsWith(`${base}/`) ? '' : `the consent form posts to ${consent.action}`;
  });
  if (res.cut) return 'cut';
  if (!res.ok) return 'authorize';
  let loginUrl;
  res = await browse('consent', 'POST /authorize/consent', consent.action, {
    method: 'POST', headers: { 'content-type': FORM, origin: base }, body: form({ request: consent.value, decision: 'approve' }),
  }, 303, (r) => {
    loginUrl = new URL(r.headers.location || '', consent.action).toString();
    return loginUrl.startsWith(`${base}/dev/login?state=`) ? '' : `redirected to ${r.headers.location}`;
  });
  if (res.cut) return 'cut';
  if (!res.ok) return 'consent';
  let login;
  res = await browse('login', 'GET /dev/login', loginUrl, {}, 200, (r) => {
    login = formOf(r.body, loginUrl, 'state');
    return '';
  });
  if (res.cut) return 'cut';
  if (!res.ok) return 'login page';
  let code;
  res = await browse('login', 'POST /dev/login', login.action, {
    method: 'POST', headers: { 'content-type': FORM, origin: base }, body: form({ state: login.value, email }),
  }, 303, (r) => {
    const back = new URL(r.headers.location || '', login.action);
    if (`${back.origin}${back.pathname}` !== REDIRECT_URI) return `redirected to ${back}`;
    if (back.searchParams.get('state') !== state) return 'the state does not match';
    if (back.searchParams.get('iss') !== base) return `iss is ${back.searchParams.get('iss')}`;
    code = back.searchParams.get('code');
    return code ? '' : 'no code';
  });
  if (res.cut) return 'cut';
  if (!res.ok) return 'login';
  if (!live()) return 'cut';
  let tok;
  res = await call('token', 'POST /token authorization_code', `${base}/token`, {
    method: 'POST',
    headers: { 'content-type': FORM, accept: 'application/json' },
    body: form({
      grant_type: 'authorization_code', code, code_verifier: verifier, redirect_uri: REDIRECT_URI,
      client_id: clientId, client_secret: secret, resource: `${base}/mcp`,
    }),
  }, 200, (r) => {
    tok = parseJson(r.body);
    return tok.access_token && tok.refresh_token ? '' : 'no access_token or refresh_token';
  });
  if (!res.ok) return 'token';
  const chain = { clientId, secret, email, refresh: tok.refresh_token, access: tok.access_token, issued: 1, busy: false, dead: '', lastOkAt: res.t1 };
  chains.push(chain);
  return chain;
}

// One refresh of a chain: rotation. A 400 invalid_grant or a 401 kills the chain (its newest
// token or its client is gone); any other failure keeps the token, to be sent again.
async function refresh(chain, kind = 'refresh') {
  let tok;
  const res = await call(kind, 'POST /token refresh_token', `${base}/token`, {
    method: 'POST',
    headers: { 'content-type': FORM, accept: 'application/json' },
    body: form({ grant_type: 'refresh_token', refresh_token: chain.refresh, client_id: chain.clientId, client_secret: chain.secret }),
  }, 200, (r) => {
    tok = parseJson(r.body);
    return tok.access_token && tok.refresh_token ? '' : 'no access_token or refresh_token';
  });
  if (res.ok) {
    chain.refresh = tok.refresh_token;
    chain.access = tok.access_token;
    chain.issued += 1;
  } else if (res.status === 401 || (res.status === 400 && /invalid_grant/.test(res.body))) {
    chain.dead = `${kind} answered ${res.status} ${res.body.replace(/\s+/g, ' ').slice(0, 120)} at ${rel(Date.now())} s`;
  }
  return res;
}

// One JSON-RPC call to the built-in MCP server. The answer is JSON or one SSE event.
let rpcId = 0;
function rpcResult(res) {
  const ct = String(res.headers['content-type'] || '');
  let text = res.body;
  if (ct.startsWith('text/event-stream')) {
    const data = res.body.split(/\r?\n/).filter((l) => l.startsWith('data:')).map((l) => l.slice(5).trim()).filter(Boolean);
    text = data[data.length - 1] || '';
  }
  const msg = JSON.parse(text);
  if (msg.error) throw new Error(`JSON-RPC error ${JSON.stringify(msg.error).slice(0, 120)}`);
  return msg.result;
}
function mcpCall(kind, access, method, params, check) {
  rpcId += 1;
  return call(kind, `POST /mcp ${method}`, `${base}/mcp`, {
    method: 'POST',
    headers: {
      'content-type': 'application/json',
      accept: 'application/json, text/event-stream',
      authorization: `Bearer ${access}`,
      'mcp-protocol-version': '2025-06-18',
    },
    body: JSON.stringify({ jsonrpc: '2.0', id: rpcId, method, params }),
  }, 200, (r) => check(rpcResult(r)) || '');
}
const whoami = (kind, chain) => mcpCall(kind, chain.access, 'tools/call', { name: 'whoami', arguments: {} }, (result) => {
  const text = JSON.stringify(result);
  return text.includes(chain.email) ? '' : `whoami does not name ${chain.email}: ${text.slice(0, 120)}`;
});

// ---------------------------------------------------------------------------------- workers
async function loop(body) {
  while (live()) {
    await body();
    if (paceMs > 0) await sleep(paceMs);
  }
}

const DISCOVERY = ['/.well-known/oauth-authorization-server', '/.well-known/oauth-protected-resource/mcp', '/jwks.json'];
let discoveryNo = 0;
const discoveryWorker = () => loop(async () => {
  const path = DISCOVERY[discoveryNo++ % DISCOVERY.length];
  await call('discovery', `GET ${path}`, `${base}${path}`, { headers: { accept: 'application/json' } }, 200, (r) => (parseJson(r.body) ? '' : 'empty'));
});
const registerWorker = () => loop(async () => { await register(); });
const flowWorker = () => loop(async () => {
  const r = await flow();
  if (typeof r === 'object') flowStats.completed += 1;
  else if (r === 'cut') flowStats.cutOff += 1;
  else {
    flowStats.failed += 1;
    flowStats.failures[r] = (flowStats.failures[r] || 0) + 1;
  }
});
let refreshNo = 0;
const refreshWorker = () => loop(async () => {
  const alive = chains.filter((c) => !c.busy && !c.dead);
  if (!alive.length) return;
  const chain = alive[refreshNo++ % alive.length];
  chain.busy = true;
  try { await refresh(chain); } finally { chain.busy = false; }
});
const mcpWorker = () => loop(async () => {
  const alive = chains.filter((c) => !c.dead);
  if (!alive.length) return;
  const chain = alive[Math.floor(Math.random() * alive.length)];
  const access = chain.access;
  const init = await mcpCall('mcp', access, 'initialize', {
    protocolVersion: '2025-06-18', capabilities: {}, clientInfo: { name: 'authgate-fault', version: '1' },
  }, (result) => (result && result.serverInfo ? '' : 'no serverInfo'));
  if (!init.ok || !live()) return;
  const list = await mcpCall('mcp', access, 'tools/list', {}, (result) => (
    (result.tools || []).some((t) => t.name === 'whoami') ? '' : 'no whoami tool'));
  if (!list.ok || !live()) return;
  await whoami('mcp', { ...chain, access });
});
const probeWorker = async () => {
  while (live()) {
    await call('health', 'GET /healthz', `${base}/healthz`, {}, 200);
    const t = Date.now();
    const r = await send(`${base}/readyz`);
    readyz.push({ t0: t, status: r.status });
    await sleep(200);
  }
};

const all = [probeWorker()];
for (let i = 0; i < workers.discovery; i++) all.push(discoveryWorker());
for (let i = 0; i < workers.register; i++) all.push(registerWorker());
for (let i = 0; i < workers.flow; i++) all.push(flowWorker());
for (let i = 0; i < workers.refresh; i++) all.push(refreshWorker());
for (let i = 0; i < workers.mcp; i++) all.push(mcpWorker());
await Promise.all(all);
const loadEnd = Date.now();

// ------------------------------------------------------------------------- the fault's times
function readEvents() {
  const ev = {};
  let text = '';
  try { text = fs.readFileSync(eventsFile, 'utf8'); } catch { /* not written yet */ }
  for (const line of text.split('\n')) {
    const [k, v] = line.trim().split(/\s+/);
    if (k && /^\d+$/.test(v || '')) ev[k] = Number(v);
  }
  return ev;
}
let events = readEvents();
for (let i = 0; i < 300 && !(events.started || events.failed); i++) {
  await sleep(100);
  events = readEvents();
}

// ------------------------------------------------------------------------------- durability
// Every chain's newest refresh token must still refresh (and the new access token call whoami);
// every other client that got a 201 must still exist: a refresh with an unknown token must get
// 400 invalid_grant, never 401 invalid_client. Failures other than those answers are retried.
recordsTarget = verifyRecords;
const lost = [];
const unverified = [];
async function pool(items, fn) {
  let next = 0;
  await Promise.all(Array.from({ length: Math.min(verifyConcurrency, items.length) }, async () => {
    while (next < items.length) await fn(items[next++]);
  }));
}
async function retry(fn) {
  let res;
  for (let i = 0; i < 3; i++) {
    res = await fn();
    if (res.ok || res.final) return res;
    await sleep(500);
  }
  return res;
}
const chainClients = new Set(chains.map((c) => c.clientId));
let chainsOk = 0;
let whoamiOk = 0;
await pool(chains, async (chain) => {
  if (chain.dead) {
    lost.push(`refresh chain of ${chain.clientId} (${chain.issued} tokens issued): died during the run: ${chain.dead}`);
    return;
  }
  const res = await retry(async () => {
    const r = await refresh(chain, 'verify_refresh');
    r.final = !!chain.dead;
    return r;
  });
  if (!res.ok) {
    (chain.dead ? lost : unverified).push(`refresh chain of ${chain.clientId}: newest refresh token answered ${res.status} ${res.note.slice(0, 120)}`);
    return;
  }
  chainsOk += 1;
  const who = await retry(() => whoami('verify_mcp', chain));
  if (who.ok) whoamiOk += 1;
  else unverified.push(`refresh chain of ${chain.clientId}: /mcp whoami with the new access token answered ${who.status} ${who.note.slice(0, 120)}`);
});
const plainClients = clients.filter((c) => !chainClients.has(c.clientId));
let clientsOk = 0;
await pool(plainClients, async (c) => {
  const res = await retry(async () => {
    const r = await call('verify_client', 'POST /token unknown refresh token', `${base}/token`, {
      method: 'POST',
      headers: { 'content-type': FORM, accept: 'application/json' },
      body: form({ grant_type: 'refresh_token', refresh_token: `fault-check-${b64url(crypto.randomBytes(12))}`, client_id: c.clientId, client_secret: c.secret }),
    }, 400, (r2) => (parseJson(r2.body).error === 'invalid_grant' ? '' : `error ${parseJson(r2.body).error}`));
    r.final = r.status === 401;
    return r;
  });
  if (res.ok) clientsOk += 1;
  else if (res.status === 401) lost.push(`client ${c.clientId}: 401 ${res.body.replace(/\s+/g, ' ').slice(0, 120)}`);
  else unverified.push(`client ${c.clientId}: ${res.status} ${res.note.slice(0, 120)}`);
});
agent.destroy();

// --------------------------------------------------------------------------------- analysis
function rel(t) { return ((t - t0Run) / 1000).toFixed(2); }
function pct(sorted, q) { return sorted.length ? sorted[Math.max(0, Math.ceil((q / 100) * sorted.length) - 1)] : 0; }
const r1 = (x) => Math.round(x * 10) / 10;
const r2 = (x) => Math.round(x * 100) / 100;
function stats(list) {
  const ms = list.map((r) => r.ms).sort((a, b) => a - b);
  return { requests: list.length, errors: list.filter((r) => !r.ok).length, p50_ms: r2(pct(ms, 50)), p99_ms: r2(pct(ms, 99)), max_ms: r1(pct(ms, 100)) };
}
// A failure's label: its status, `socket(CODE)` without an answer, `STATUS(bad answer)` when the
// status was the expected one but the body was not.
const statusLabel = (r) => {
  if (r.status === 0) return `socket(${r.note.split(':')[0] || 'error'})`;
  return !r.ok && r.status === r.expect ? `${r.status}(bad answer)` : String(r.status);
};

const overall = stats(records);
const byKind = {};
for (const k of KINDS) {
  const list = records.filter((r) => r.kind === k);
  if (!list.length) continue;
  const s = stats(list);
  const statuses = {};
  for (const r of list.filter((x) => !x.ok)) statuses[statusLabel(r)] = (statuses[statusLabel(r)] || 0) + 1;
  byKind[k] = { ...s, statuses };
}
const errors = records.filter((r) => !r.ok);
const stopAt = events.stop_issued ?? null;
const startedAt = events.started ?? null;
const firstOkAfter = startedAt === null ? undefined
  : records.filter((r) => r.ok && DB_KINDS.has(r.kind) && r.t1 > startedAt).sort((a, b) => a.t1 - b.t1)[0];
const recoveredAt = firstOkAfter ? firstOkAfter.t1 : null;
const inside = (r) => stopAt !== null && r.t1 >= stopAt && r.t0 <= (recoveredAt ?? Infinity);
const errorsInside = errors.filter(inside);
const errorsOutside = errors.filter((r) => !inside(r));
const firstError = errors.length ? Math.min(...errors.map((r) => r.t0)) : null;
const lastError = errors.length ? Math.max(...errors.map((r) => r.t1)) : null;
// /readyz: from its first non-200 after the stop to its first 200 after that.
let readyDown = null;
let readyUp = null;
for (const p of readyz) {
  if (readyDown === null && stopAt !== null && p.t0 >= stopAt && p.status !== 200) readyDown = p.t0;
  else if (readyDown !== null && readyUp === null && p.status === 200) readyUp = p.t0;
}
const issued = chains.reduce((a, c) => a + c.issued, 0);
const recoveryMs = recoveredAt !== null ? Math.round(recoveredAt - startedAt) : null;
const ok = lost.length === 0 && unverified.length === 0 && errorsOutside.length === 0 && recoveredAt !== null && stopAt !== null;

const out = [];
const wall = (loadEnd - t0Run) / 1000;
out.push(`load: ${wall.toFixed(1)} s, ${overall.requests} requests (${Math.round(overall.requests / wall)} req/s), ${overall.errors} errors; p99 ${overall.p99_ms} ms (p50 ${overall.p50_ms} ms, max ${overall.max_ms} ms)`);
out.push(`served by kind (requests, errors, p50, p99, max):`);
for (const [k, s] of Object.entries(byKind)) {
  out.push(`  ${k.padEnd(9)} ${String(s.requests).padStart(6)} requests, ${String(s.errors).padStart(4)} errors, p50 ${s.p50_ms} ms, p99 ${s.p99_ms} ms, max ${s.max_ms} ms`);
}
const errLines = Object.entries(byKind).filter(([, s]) => s.errors).map(([k, s]) => `${k} ${Object.entries(s.statuses).map(([st, n]) => `${st} x${n}`).join(', ')}`);
out.push(`errors by kind and status: ${errLines.length ? errLines.join('; ') : 'none'}`);
if (errors.length) out.push(`  first error: ${errors.sort((a, b) => a.t0 - b.t0)[0].what} ${statusLabel(errors[0])} at ${rel(errors[0].t0)} s: ${errors[0].note.slice(0, 200)}`);
out.push(`flows: ${flowStats.completed} completed, ${flowStats.failed} failed at a step${flowStats.failed ? ` (${Object.entries(flowStats.failures).map(([k, n]) => `${k} ${n}`).join(', ')})` : ''}, ${flowStats.cutOff} cut off by the end of the load; ${chains.length} refresh chains, ${issued} refresh tokens issued`);
if (stopAt === null) out.push('fault: PostgreSQL was never stopped (no stop in the events file)');
else {
  out.push(`fault: PostgreSQL stop issued at ${rel(stopAt)} s, down at ${events.stopped ? rel(events.stopped) : '?'} s, start issued at ${events.start_issued ? rel(events.start_issued) : '?'} s, accepting connections at ${startedAt ? rel(startedAt) : '?'} s`);
}
out.push(`outage window (stop to first success after restart): ${stopAt !== null ? rel(stopAt) : '?'} s to ${recoveredAt !== null ? rel(recoveredAt) : 'never'} s; errors inside ${errorsInside.length}, outside ${errorsOutside.length}${errors.length ? `; first error at ${rel(firstError)} s, last at ${rel(lastError)} s` : ''}`);
for (const r of errorsOutside.slice(0, 5)) out.push(`  outside the window: ${r.kind} ${r.what} ${statusLabel(r)} at ${rel(r.t0)}-${rel(r.t1)} s: ${r.note.slice(0, 160)}`);
out.push(`recovery: ${recoveryMs !== null ? `${(recoveryMs / 1000).toFixed(2)} s after PostgreSQL accepted connections (first success: ${firstOkAfter.kind} ${firstOkAfter.what} at ${rel(recoveredAt)} s)` : 'NONE: no request that needs the database succeeded after the restart'}`);
out.push(`readyz: ${readyDown !== null ? `not ready from ${rel(readyDown)} s to ${readyUp !== null ? `${rel(readyUp)} s` : 'the end'}` : 'never not ready'}; healthz: ${byKind.health ? `${byKind.health.requests} probes, ${byKind.health.errors} errors` : 'no probes'}`);
out.push(`durability: ${chains.length} refresh chains re-checked (${chainsOk} newest tokens refreshed, ${whoamiOk} /mcp whoami ok), ${plainClients.length} other registered clients re-checked (${clientsOk} exist); ${clients.length} clients registered in all`);
out.push(`lost: ${lost.length}`);
for (const l of lost.slice(0, 20)) out.push(`  lost: ${l}`);
if (unverified.length) {
  out.push(`unverified: ${unverified.length}`);
  for (const l of unverified.slice(0, 20)) out.push(`  unverified: ${l}`);
}
const summary = {
  ok,
  seconds: r2(wall),
  requests: overall.requests,
  errors: overall.errors,
  p50_ms: overall.p50_ms,
  p99_ms: overall.p99_ms,
  max_ms: overall.max_ms,
  by_kind: byKind,
  flows: { completed: flowStats.completed, failed: flowStats.failed, cut_off: flowStats.cutOff },
  refresh_chains: chains.length,
  refresh_tokens_issued: issued,
  clients_registered: clients.length,
  fault: {
    stop_issued_s: stopAt !== null ? Number(rel(stopAt)) : null,
    stopped_s: events.stopped ? Number(rel(events.stopped)) : null,
    start_issued_s: events.start_issued ? Number(rel(events.start_issued)) : null,
    accepting_s: startedAt ? Number(rel(startedAt)) : null,
    recovered_s: recoveredAt !== null ? Number(rel(recoveredAt)) : null,
  },
  errors_inside_outage: errorsInside.length,
  errors_outside_outage: errorsOutside.length,
  errors_only_in_outage: errorsOutside.length === 0,
  recovery_ms: recoveryMs,
  readyz_not_ready_s: readyDown !== null ? [Number(rel(readyDown)), readyUp !== null ? Number(rel(readyUp)) : null] : null,
  durability: { chains_checked: chains.length, chains_ok: chainsOk, whoami_ok: whoamiOk, clients_checked: plainClients.length, clients_ok: clientsOk },
  lost: lost.length,
  lost_items: lost,
  unverified: unverified.length,
};
process.stdout.write(`${out.join('\n')}\n${JSON.stringify(summary)}\n`);

if (process.env.FAULT_RECORDS) {
  const lines = ['t0_s\tt1_s\tkind\twhat\tstatus\tok\tms\tnote'];
  for (const r of [...records, ...verifyRecords]) lines.push([rel(r.t0), rel(r.t1), r.kind, r.what, r.status, r.ok ? 1 : 0, r.ms.toFixed(2), r.note.replace(/\s+/g, ' ').slice(0, 200)].join('\t'));
  for (const p of readyz) lines.push([rel(p.t0), rel(p.t0), 'readyz', 'GET /readyz', p.status, p.status === 200 ? 1 : 0, '', ''].join('\t'));
  fs.writeFileSync(process.env.FAULT_RECORDS, `${lines.join('\n')}\n`);
}
process.exit(ok ? 0 : 1);
