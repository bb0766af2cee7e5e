#!/usr/bin/env node
// Full OAuth flows through authgate and its upstream OpenID provider, for bench/run.sh.
//
//   node bench/flows.mjs flows  BASE ISSUER TOKENS_FILE          measured: FLOW_* below
//   node bench/flows.mjs tokens BASE ISSUER TOKENS_FILE COUNT    COUNT flows, unmeasured (set-up)
//
// BASE is authgate (http://127.0.0.1:PORT), ISSUER the upstream IdP (tests/e2e/idp). Each flow is one
// simulated browser with its own cookie jar, acting as Claude.ai and its user:
//   POST /register (Claude.ai's DCR body) -> GET /authorize (PKCE S256, state, resource) -> 200
//   consent page -> POST /authorize/consent (approve, Origin) -> 303 to the IdP -> IdP login (and
//   consent, unless IDP_SKIP_CONSENT=1) -> 303 to /oauth/callback -> GET it -> 303 to the client's
//   redirect URI with a code (never fetched) -> POST /token (authorization_code) -> 200.
// Every finished flow appends "client_id<TAB>client_secret<TAB>refresh_token" to TOKENS_FILE.
//
// Env: FLOW_CONCURRENCY (4) flows in parallel; FLOW_SECONDS (20) no new flow starts after this;
// FLOW_MAX (200) flows at most; FLOW_RESOURCE_PATH (/mcp) the resource the tokens are for. stdout gets one line for run.sh:
//   AUTHGATE_FLOWS flows=N errors=N us=N p50_us=N p99_us=N max_us=N requests=N flow_us=N idp_us=N
// (us: the measured wall time; over the finished flows: requests sent, the sum of their durations,
// and the time spent waiting for the IdP's answers) and, if a flow failed, "AUTHGATE_FLOWS_SAMPLE <its error>".
// Node 20 built-ins only (node:http with keep-alive). Only loopback URLs are ever fetched; each
// request times out after 10 s and the process gives up FLOW_SECONDS + 60 s after it started.
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
const MAX_HOPS = 12; // redirects and pages between the consent POST and authgate's callback

function usage(msg) {
  process.stderr.write(`flows.mjs: ${msg}\nusage: node flows.mjs flows|tokens BASE ISSUER TOKENS_FILE [COUNT]\n`);
  process.exit(2);
}
function positive(name, fallback) {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return fallback;
  const n = Number(raw);
  if (!Number.isInteger(n) || n <= 0) usage(`${name} must be a positive integer, not '${raw}'`);
  return n;
}

const [mode, baseArg, issuerArg, tokensFile, countArg] = process.argv.slice(2);
if (mode !== 'flows' && mode !== 'tokens') usage('the first argument is flows or tokens');
if (!baseArg || !issuerArg || !tokensFile) usage('missing arguments');
const base = baseArg.replace(/\/+$/, '');
const issuerOrigin = new URL(issuerArg).origin;
const resourcePath = process.env.FLOW_RESOURCE_PATH || '/mcp';
if (!/^\/[A-Za-z0-9._~\/-]*$/.test(resourcePath)) usage(`FLOW_RESOURCE_PATH must be a path such as /mcp, not '${resourcePath}'`);
const concurrency = positive('FLOW_CONCURRENCY', 4);
const seconds = mode === 'flows' ? positive('FLOW_SECONDS', 20) : 60;
const maxFlows = mode === 'flows' ? positive('FLOW_MAX', 200) : Number(countArg);
if (!Number.isInteger(maxFlows) || maxFlows <= 0) usage('tokens needs a positive COUNT');

function isLoopback(url) {
  const host = new URL(url).hostname.replace(/^\[|\]$/g, '');
  return host === 'localhost' || host === '::1' || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(host);
}
for (const u of [base, issuerOrigin]) if (!isLoopback(u)) usage(`refusing a non-loopback URL: ${u}`);

// Whatever happens, stop: no flow may keep the process alive past its budget.
setTimeout(() => {
  process.stderr.write(`flows.mjs: still running ${seconds + 60} s after the start; giving up\n`);
  process.exit(3);
}, (seconds + 60) * 1000).unref();

// ------------------------------------------------------------------------------------ HTTP
const agent = new http.Agent({ keepAlive: true, maxSockets: 4 * concurrency });

class FlowError extends Error {}

// One request, no redirects followed. Resolves {status, headers, body}; only loopback URLs.
function send(url, { method = 'GET', headers = {}, body } = {}) {
  if (!isLoopback(url)) return Promise.reject(new FlowError(`refusing to fetch a non-loopback URL: ${url}`));
  return new Promise((resolve, reject) => {
    const payload = body === undefined ? undefined : Buffer.from(body);
    const req = http.request(url, {
      method,
      agent,
      headers: payload ? { ...headers, 'content-length': payload.length } : headers,
    }, (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode, headers: res.headers, body: Buffer.concat(chunks).toString('utf8') }));
      res.on('error', reject);
    });
    req.setTimeout(REQUEST_TIMEOUT_MS, () => req.destroy(new FlowError(`${method} ${url}: no answer within ${REQUEST_TIMEOUT_MS} ms`)));
    req.on('error', reject);
    req.end(payload);
  });
}

// A browser's cookie store, as far as these two servers need: host-only cookies (a browser does not
// separate ports, so authgate's and the IdP's cookies share 127.0.0.1), honouring Path, and
// deleted by Max-Age <= 0, an Expires in the past, or an empty value.
class Jar {
  constructor() { this.list = []; }

  take(url, setCookie) {
    if (!setCookie) return;
    const host = new URL(url).hostname;
    for (const line of Array.isArray(setCookie) ? setCookie : [setCookie]) {
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
        else if (k === 'expires' && Date.parse(v) <= Date.now()) gone = true;
      }
      this.list = this.list.filter((c) => !(c.host === host && c.path === path && c.name === name));
      if (!gone) this.list.push({ host, path, name, value });
    }
  }

  header(url) {
    const u = new URL(url);
    const p = u.pathname;
    const matches = (cp) => p === cp || (p.startsWith(cp) && (cp.endsWith('/') || p[cp.length] === '/'));
    return this.list.filter((c) => c.host === u.hostname && matches(c.path)).map((c) => `${c.name}=${c.value}`).join('; ');
  }
}

// A simulated browser: every request carries the jar's cookies and stores what comes back.
class Browser {
  constructor() {
    this.jar = new Jar();
    this.requests = 0;
    this.idpMs = 0;
  }

  async go(url, opts = {}) {
    const headers = { 'user-agent': 'authgate-bench', accept: 'text/html,application/json', ...(opts.headers || {}) };
    const cookie = this.jar.header(url);
    if (cookie) headers.cookie = cookie;
    const t0 = performance.now();
    const res = await send(url, { ...opts, headers });
    if (new URL(url).origin === issuerOrigin) this.idpMs += performance.now() - t0;
    this.requests += 1;
    this.jar.take(url, res.headers['set-cookie']);
    return res;
  }
}

// ----------------------------------------------------------------------------------- helpers
const b64url = (buf) => buf.toString('base64url');
const form = (fields) => new URLSearchParams(fields).toString();
const FORM = 'application/x-www-form-urlencoded';

function expect(res, status, what) {
  if (res.status !== status) {
    const where = res.headers.location ? ` -> ${res.headers.location}` : '';
    const body = res.body.replace(/\s+/g, ' ').slice(0, 200);
    throw new FlowError(`${what}: expected ${status}, got ${res.status}${where} ${body}`);
  }
  return res;
}
function location(res, from, what) {
  const loc = res.headers.location;
  if (!loc) throw new FlowError(`${what}: ${res.status} without Location`);
  return new URL(loc, from).toString();
}
function json(res, what) {
  try { return JSON.parse(res.body); } catch { throw new FlowError(`${what}: the body is not JSON: ${res.body.slice(0, 200)}`); }
}
function decode(s) {
  return s.replace(/&quot;/g, '"').replace(/&#39;|&#x27;/g, "'").replace(/&lt;/g, '<').replace(/&gt;/g, '>')
    .replace(/&#x2F;/gi, '/').replace(/&amp;/g, '&');
}
function attr(tag, name) {
  const m = tag.match(new RegExp(`\\s${name}\\s*=\\s*(?:"([^"]*)"|'([^']*)'|([^\\s>]+))`, 'i'));
  return m ? decode(m[1] ?? m[2] ?? m[3]) : undefined;
}
// The first <form> of a page: its action (absolute) and input tags.
function firstForm(html, pageUrl, what) {
  const m = html.match(/<form\b[^>]*>[\s\S]*?<\/form>/i);
  if (!m) throw new FlowError(`${what}: no <form> in the page: ${html.replace(/\s+/g, ' ').slice(0, 200)}`);
  const open = m[0].slice(0, m[0].indexOf('>') + 1);
  const method = (attr(open, 'method') || 'get').toLowerCase();
  if (method !== 'post') throw new FlowError(`${what}: the form's method is ${method}, not post`);
  return { action: new URL(attr(open, 'action') || pageUrl, pageUrl).toString(), inputs: m[0].match(/<input\b[^>]*>/gi) || [] };
}

// ------------------------------------------------------------------------------------- flow
async function flow(n) {
  const b = new Browser();

  // 1. Claude.ai registers itself.
  const reg = json(expect(await b.go(`${base}/register`, {
    method: 'POST', headers: { 'content-type': 'application/json', accept: 'application/json' }, body: DCR_BODY,
  }), 201, 'POST /register'), 'POST /register');
  if (!reg.client_id || !reg.client_secret) throw new FlowError('POST /register: no client_id or client_secret');

  // 2. The user's browser goes to /authorize and gets authgate's consent page.
  const verifier = b64url(crypto.randomBytes(32));
  const challenge = b64url(crypto.createHash('sha256').update(verifier).digest());
  const state = b64url(crypto.randomBytes(16));
  const authorize = `${base}/authorize?${form({
    response_type: 'code', client_id: reg.client_id, redirect_uri: REDIRECT_URI, code_challenge: challenge,
    code_challenge_method: 'S256', state, resource: `${base}${resourcePath}`,
  })}`;
  const page = expect(await b.go(authorize), 200, 'GET /authorize');
  const consent = firstForm(page.body, authorize, 'consent page');
  const requestInput = consent.inputs.find((t) => attr(t, 'name') === 'request');
  const requestId = requestInput && attr(requestInput, 'value');
  if (!requestId) throw new FlowError('consent page: no hidden input "request"');
  if (!consent.action.startsWith(`${base}/`)) throw new FlowError(`consent page: the form posts to ${consent.action}`);

  // 3. Approve; authgate sends the browser to the IdP.
  let res = expect(await b.go(consent.action, {
    method: 'POST', headers: { 'content-type': FORM, origin: base }, body: form({ request: requestId, decision: 'approve' }),
  }), 303, 'POST consent');
  let url = location(res, consent.action, 'POST consent');
  if (new URL(url).origin !== issuerOrigin) throw new FlowError(`POST consent: redirected to ${url}, not to the IdP`);

  // 4. The IdP's login (and consent) pages, until it sends the browser back to authgate's callback.
  const callbackPrefix = `${base}/oauth/callback?`;
  let loggedIn = false;
  for (let hop = 0; !url.startsWith(callbackPrefix); hop++) {
    if (hop >= MAX_HOPS) throw new FlowError(`IdP: no redirect to ${base}/oauth/callback after ${MAX_HOPS} steps (at ${url})`);
    if (new URL(url).origin !== issuerOrigin) throw new FlowError(`IdP: redirected to ${url}`);
    res = await b.go(url);
    if (res.status === 303 || res.status === 302) {
      url = location(res, url, `GET ${new URL(url).pathname}`);
      continue;
    }
    expect(res, 200, `GET ${new URL(url).pathname}`);
    const f = firstForm(res.body, url, `IdP page ${new URL(url).pathname}`);
    const isLogin = f.inputs.some((t) => attr(t, 'name') === 'login');
    if (isLogin && loggedIn) throw new FlowError('IdP: the login page came back after logging in');
    const body = isLogin ? form({ login: `user${n}@example.test`, password: 'bench' }) : '';
    loggedIn ||= isLogin;
    res = expect(await b.go(f.action, { method: 'POST', headers: { 'content-type': FORM, origin: issuerOrigin }, body }), 303, `POST ${new URL(f.action).pathname}`);
    url = location(res, f.action, `POST ${new URL(f.action).pathname}`);
  }
  if (!loggedIn) throw new FlowError('IdP: reached the callback without a login page');

  // 5. authgate's callback: code exchange upstream, then back to the client with a code.
  res = expect(await b.go(url), 303, 'GET /oauth/callback');
  const back = new URL(location(res, url, 'GET /oauth/callback'));
  if (`${back.origin}${back.pathname}` !== REDIRECT_URI) throw new FlowError(`GET /oauth/callback: redirected to ${back}`);
  const code = back.searchParams.get('code');
  if (!code) throw new FlowError(`GET /oauth/callback: no code in ${back}`);
  if (back.searchParams.get('state') !== state) throw new FlowError('GET /oauth/callback: the state does not match');
  if (back.searchParams.get('iss') !== base) throw new FlowError(`GET /oauth/callback: iss is ${back.searchParams.get('iss')}`);

  // 6. Claude.ai redeems the code (client_secret_post).
  const tok = json(expect(await b.go(`${base}/token`, {
    method: 'POST',
    headers: { 'content-type': FORM, accept: 'application/json' },
    body: form({
      grant_type: 'authorization_code', code, code_verifier: verifier, redirect_uri: REDIRECT_URI,
      client_id: reg.client_id, client_secret: reg.client_secret, resource: `${base}${resourcePath}`,
    }),
  }), 200, 'POST /token'), 'POST /token');
  if (!tok.access_token || !tok.refresh_token) throw new FlowError('POST /token: no access_token or refresh_token');
  return { clientId: reg.client_id, clientSecret: reg.client_secret, refreshToken: tok.refresh_token, requests: b.requests, idpMs: b.idpMs };
}

// -------------------------------------------------------------------------------------- main
const t0 = performance.now();
const deadline = t0 + seconds * 1000;
const durations = [];
const lines = [];
const errors = [];
let started = 0;
let requests = 0;
let idpMs = 0;

async function worker() {
  while (started < maxFlows && performance.now() < deadline) {
    started += 1;
    const n = started;
    const f0 = performance.now();
    try {
      const r = await flow(n);
      durations.push(performance.now() - f0);
      lines.push(`${r.clientId}\t${r.clientSecret}\t${r.refreshToken}\n`);
      requests += r.requests;
      idpMs += r.idpMs;
    } catch (e) {
      errors.push(e instanceof FlowError ? e.message : `${e.code || e.name}: ${e.message}`);
    }
  }
}

await Promise.all(Array.from({ length: Math.min(concurrency, maxFlows) }, worker));
const wallUs = Math.round((performance.now() - t0) * 1000);
agent.destroy();
if (lines.length) fs.appendFileSync(tokensFile, lines.join(''), { mode: 0o600 });

durations.sort((a, b) => a - b);
const pct = (q) => (durations.length ? durations[Math.max(0, Math.ceil((q / 100) * durations.length) - 1)] : 0);
const us = (ms) => Math.round(ms * 1000);
process.stdout.write(`AUTHGATE_FLOWS flows=${durations.length} errors=${errors.length} us=${wallUs} `
  + `p50_us=${us(pct(50))} p99_us=${us(pct(99))} max_us=${us(pct(100))} requests=${requests} `
  + `flow_us=${us(durations.reduce((a, d) => a + d, 0))} idp_us=${us(idpMs)}\n`);
if (errors.length) process.stdout.write(`AUTHGATE_FLOWS_SAMPLE ${errors[0].replace(/\s+/g, ' ').slice(0, 300)}\n`);
