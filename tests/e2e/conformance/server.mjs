// The official MCP conformance suite's server scenarios that apply to a proxy, against authgate's
// protected /mcp:
//
//   an access token from the official TS SDK client (../clients/ts-client.mjs, PRINT_TOKEN=1: the
//   whole OAuth flow through authgate and the upstream IdP)
//   -> a token-injecting loopback proxy in this process (the suite's MCP client has no auth option)
//   -> `conformance server --url http://127.0.0.1:<proxy>/<path> --scenario S` under Node 22, per scenario.
//
// The proxy adds `Authorization: Bearer <token>` and streams both ways. It keeps the Host and Origin
// the suite sends, except that the proxy's own address in them (what the suite believes is the
// server's address) becomes authgate's, exactly as if the suite had connected to authgate directly:
// a foreign Host/Origin (dns-rebinding-protection's `evil.example.com`) reaches authgate untouched,
// with a valid token, so only authgate's own Host/Origin check can refuse it.
//
// Usage: node tests/e2e/conformance/server.mjs <MCP_URL> [scenario ...]
//        (default scenarios: server-initialize ping tools-list server-session-lifecycle
//         http-header-validation dns-rebinding-protection)
// Env:   ACCESS_TOKEN (skip the login), NO_TOKEN=1 (no login, no Authorization header: a baseline
//        run against an unprotected MCP server, e.g. ../clients/mcp-server.mjs), TOKEN_TOOL / TOKEN_TOOL_ARGS (the tool ts-client.mjs calls
//        while getting the token; default whoami, {}: the built-in server's), LOGIN_USER,
//        TIMEOUT_MS (whole run, 300000), VERBOSE=1 (the suite's output, every proxied request),
//        NODE22 / CONFORMANCE_BIN.
// Output: one line per scenario, then `RESULT {json}`; a failed scenario's checks and the HTTP
//         exchanges it made (request and response heads, bodies cut at 2 KB) are in the RESULT.
// Exit:   0 when every scenario passed, 1 otherwise, 2 on bad usage or missing installation.

import { spawn } from 'node:child_process';
import http from 'node:http';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CLIENTS, SUITE_VERSION, savedChecks, scenarioLine, suite, verdict } from './lib.mjs';

const DEFAULT_SCENARIOS = ['server-initialize', 'ping', 'tools-list', 'server-session-lifecycle', 'http-header-validation', 'dns-rebinding-protection'];
const BODY_LIMIT = 2048;

const [mcpArg, ...scenarioArgs] = process.argv.slice(2);
if (!mcpArg) {
  console.error('usage: node server.mjs <MCP_URL> [scenario ...]');
  process.exit(2);
}
const mcpUrl = new URL(mcpArg);
const scenarios = scenarioArgs.length ? scenarioArgs : DEFAULT_SCENARIOS;
const env = process.env;
const verbose = env.VERBOSE === '1';
const t0 = Date.now();
const result = { ok: false, suite: `@modelcontextprotocol/conformance@${SUITE_VERSION}`, command: 'server', mcpUrl: mcpUrl.href, scenarios: {} };
const outDir = mkdtempSync(join(tmpdir(), 'authgate-conformance-server-'));
const children = new Set();
let proxy = null;

function finish(error) {
  for (const c of children) if (c.exitCode === null) c.kill('SIGKILL');
  proxy?.closeAllConnections?.();
  proxy?.close();
  if (error) result.error = error instanceof Error ? error.message : String(error);
  result.ms = Date.now() - t0;
  result.ok = !result.error && scenarios.every((s) => result.scenarios[s]?.ok);
  rmSync(outDir, { recursive: true, force: true });
  console.log(`RESULT ${JSON.stringify(result)}`);
  process.exit(result.ok ? 0 : 1);
}
process.on('unhandledRejection', (e) => finish(e));
for (const sig of ['SIGINT', 'SIGTERM']) process.on(sig, () => finish(new Error(`stopped by ${sig}`)));

let tools;
try {
  tools = suite();
} catch (e) {
  console.error(e.message);
  console.log(`RESULT ${JSON.stringify({ ...result, error: e.message })}`);
  process.exit(2);
}
setTimeout(() => finish(new Error(`timeout after ${env.TIMEOUT_MS || 300000} ms`)), Number(env.TIMEOUT_MS || 300000)).unref();

/** Runs a program to its end; resolves {code, stdout, stderr}. */
function run(cmd, args, opts = {}) {
  return new Promise((resolve) => {
    const c = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], ...opts });
    children.add(c);
    let stdout = '';
    let stderr = '';
    c.stdout.on('data', (d) => { stdout += d; if (verbose) process.stdout.write(String(d).replace(/^(?=.)/gm, '    ')); });
    c.stderr.on('data', (d) => { stderr += d; if (verbose) process.stdout.write(String(d).replace(/^(?=.)/gm, '    ')); });
    c.on('exit', (code, signal) => { children.delete(c); resolve({ code: code ?? signal, stdout, stderr }); });
  });
}

// 1. A token, the way a real client gets one.
const noToken = env.NO_TOKEN === '1';
let token = env.ACCESS_TOKEN;
if (!token && !noToken) {
  const tool = env.TOKEN_TOOL || 'whoami';
  const toolArgs = env.TOKEN_TOOL_ARGS || '{}';
  const t = Date.now();
  const r = await run(process.execPath, [join(CLIENTS, 'ts-client.mjs'), mcpUrl.href, tool, toolArgs], {
    env: { ...env, PRINT_TOKEN: '1', REFRESH_MODE: 'none', VERBOSE: '' },
  });
  token = r.stdout.match(/^ACCESS_TOKEN (\S+)$/m)?.[1];
  if (!token) finish(new Error(`ts-client.mjs gave no access token (exit ${r.code}):\n${r.stdout}\n${r.stderr}`));
  console.log(`[driver] access token from ts-client.mjs (${Date.now() - t} ms)`);
}

// 2. The token-injecting proxy. Every exchange is recorded for the report of a failed scenario.
let exchanges = [];
const cut = (buf) => {
  const s = buf.toString('utf8');
  return s.length > BODY_LIMIT ? `${s.slice(0, BODY_LIMIT)}…(${s.length} chars)` : s;
};
proxy = http.createServer((req, res) => {
  const self = `127.0.0.1:${proxy.address().port}`;
  const selves = new Set([self, `localhost:${proxy.address().port}`, `[::1]:${proxy.address().port}`]);
  const headers = { ...req.headers };
  if (!noToken) headers.authorization = `Bearer ${token}`;
  if (!headers.host || selves.has(headers.host)) headers.host = mcpUrl.host;
  if (headers.origin && [...selves].some((s) => headers.origin === `http://${s}`)) headers.origin = mcpUrl.origin;
  const ex = {
    request: { method: req.method, path: req.url, headers: { ...req.headers, authorization: undefined }, forwarded: { host: headers.host, origin: headers.origin ?? null }, body: '' },
    response: null,
  };
  exchanges.push(ex);
  const reqBody = [];
  req.on('data', (d) => reqBody.push(d));
  req.on('end', () => { ex.request.body = cut(Buffer.concat(reqBody)); });
  const up = http.request({ host: mcpUrl.hostname, port: mcpUrl.port || 80, method: req.method, path: req.url, headers }, (ur) => {
    ex.response = { status: ur.statusCode, headers: ur.headers, body: '' };
    if (verbose) console.log(`[proxy] ${req.method} ${req.url} Host=${headers.host} Origin=${headers.origin ?? '-'} -> ${ur.statusCode}`);
    res.writeHead(ur.statusCode, ur.headers);
    const chunks = [];
    let size = 0;
    ur.on('data', (d) => { if (size < BODY_LIMIT * 2) { chunks.push(d); size += d.length; } });
    ur.on('end', () => { ex.response.body = cut(Buffer.concat(chunks)); });
    ur.on('close', () => { ex.response.body ||= cut(Buffer.concat(chunks)); });
    ur.pipe(res);
  });
  up.on('error', (e) => {
    ex.response = { status: 502, error: String(e) };
    if (!res.headersSent) res.writeHead(502, { 'content-type': 'text/plain' });
    res.end(String(e));
  });
  res.on('close', () => up.destroy());
  req.pipe(up);
});
await new Promise((resolve) => proxy.listen(0, '127.0.0.1', resolve));
const proxyUrl = `http://127.0.0.1:${proxy.address().port}${mcpUrl.pathname}`;
result.proxy = proxyUrl;
console.log(`[driver] proxy ${proxyUrl} -> ${mcpUrl.href}`);

// 3. One suite run per scenario, with its own results folder.
for (const name of scenarios) {
  exchanges = [];
  const dir = join(outDir, name);
  const t = Date.now();
  const r = await run(tools.node, [tools.cli, 'server', '--url', proxyUrl, '--scenario', name, '-o', dir]);
  const ms = Date.now() - t;
  const saved = savedChecks(dir).pop();
  let v;
  if (saved) v = verdict(saved.checks);
  else if (/SKIPPED: scenario .* not applicable/.test(r.stdout)) v = { ok: false, success: 0, failure: 1, warning: 0, checks: [{ id: name, name, status: 'FAILURE', error: `the suite did not run it: ${r.stdout.trim()}` }] };
  else v = { ok: false, success: 0, failure: 1, warning: 0, checks: [{ id: name, name, status: 'FAILURE', error: `the suite saved no result (exit ${r.code})` }] };
  if (v.ok && r.code !== 0) {
    v.ok = false;
    v.checks.push({ id: name, name, status: 'FAILURE', error: `the suite exited ${r.code}` });
  }
  v.ms = ms;
  if (!v.ok) {
    v.exchanges = exchanges;
    v.output = `${r.stdout}${r.stderr}`.slice(-4000);
  }
  result.scenarios[name] = v;
  console.log(scenarioLine(name, v, ms));
  if (!v.ok) {
    for (const e of exchanges) {
      const q = e.request;
      console.log(`       > ${q.method} ${q.path} Host: ${q.headers.host} (forwarded ${q.forwarded.host}) Origin: ${q.headers.origin ?? '-'} (forwarded ${q.forwarded.origin ?? '-'}) ${q.body}`);
      console.log(`       < ${e.response ? `${e.response.status} ${e.response.body ?? e.response.error ?? ''}` : '(no response)'}`.replace(/\n/g, '\\n'));
    }
  }
}
finish();
