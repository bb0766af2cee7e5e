// The official MCP conformance suite's authorization-server scenarios against authgate, headless:
//
//   RFC 8414 metadata -> RFC 7591 /register (a public client, redirect http://127.0.0.1:<cb port>/callback)
//   -> `conformance authorization --url <issuer> --client-id <id> --port <cb port>` under Node 22
//   -> the suite prints an authorization URL and waits for a browser at its callback listener
//   -> ../clients/browser.mjs walks it (authgate's consent, the upstream IdP's login and consent)
//   -> the redirect is delivered to the suite's listener -> the suite redeems the code and grades.
//
// Scenarios: authorization-server-metadata-endpoint, authorization-code-grant.
//
// Usage: node tests/e2e/conformance/authorization.mjs <ISSUER> [--resource <uri>]
// Env:   CB_PORT (default: a free port), CLIENT_ID (skip the registration; its redirect URI must be
//        http://127.0.0.1:$CB_PORT/callback), LOGIN_USER (ann@example.test), LOGIN_PASSWORD (secret),
//        TIMEOUT_MS (120000), VERBOSE=1 (the suite's output and the browser hops),
//        NODE22 / CONFORMANCE_BIN (override the bundled Node 22 and suite).
// Output: one line per scenario, then `RESULT {json}` with per-scenario pass/fail and checks.
// Exit:   0 when every scenario passed, 1 otherwise, 2 on bad usage or missing installation.

import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { walk, describeHop } from '../clients/browser.mjs';
import { SUITE_VERSION, freePort, savedChecks, scenarioLine, suite, verdict } from './lib.mjs';

const SCENARIOS = ['authorization-server-metadata-endpoint', 'authorization-code-grant'];

const argv = process.argv.slice(2);
const issuer = argv[0];
if (!issuer || issuer.startsWith('-')) {
  console.error('usage: node authorization.mjs <ISSUER> [--resource <uri>]');
  process.exit(2);
}
const ri = argv.indexOf('--resource');
const resource = ri > 0 ? argv[ri + 1] : undefined;
const env = process.env;
const verbose = env.VERBOSE === '1';
const t0 = Date.now();
const result = { ok: false, suite: `@modelcontextprotocol/conformance@${SUITE_VERSION}`, command: 'authorization', issuer, scenarios: {} };
const outDir = mkdtempSync(join(tmpdir(), 'authgate-conformance-as-'));
let child = null;

function finish(error) {
  if (child && child.exitCode === null) child.kill('SIGKILL');
  if (error) result.error = error instanceof Error ? error.message : String(error);
  result.ms = Date.now() - t0;
  result.ok = !result.error && SCENARIOS.every((s) => result.scenarios[s]?.ok);
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

setTimeout(() => finish(new Error(`timeout after ${env.TIMEOUT_MS || 120000} ms`)), Number(env.TIMEOUT_MS || 120000)).unref();

const port = Number(env.CB_PORT || (await freePort()));
const callback = `http://127.0.0.1:${port}/callback`;

// 1. A client for the suite: registered by RFC 7591 at the registration_endpoint of the metadata.
let clientId = env.CLIENT_ID;
if (!clientId) {
  const u = new URL(issuer);
  const mdUrl = `${u.origin}/.well-known/oauth-authorization-server${u.pathname.replace(/\/$/, '')}`;
  const md = await (await fetch(mdUrl)).json();
  if (!md.registration_endpoint) finish(new Error(`${mdUrl} has no registration_endpoint; set CLIENT_ID`));
  const r = await fetch(md.registration_endpoint, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({
      client_name: 'MCP conformance suite',
      redirect_uris: [callback],
      grant_types: ['authorization_code', 'refresh_token'],
      response_types: ['code'],
      token_endpoint_auth_method: 'none',
    }),
  });
  const reg = await r.json().catch(() => ({}));
  if (r.status !== 201 || !reg.client_id) finish(new Error(`registration at ${md.registration_endpoint} answered ${r.status} ${JSON.stringify(reg)}`));
  clientId = reg.client_id;
  console.log(`[driver] registered public client ${clientId} (redirect ${callback})`);
}
result.clientId = clientId;
result.callback = callback;

// 2. The suite, under Node 22; its stdout is watched for the authorization URL and its listener.
const args = [tools.cli, 'authorization', '--url', issuer, '--client-id', clientId, '--port', String(port), '-o', outDir];
if (resource) args.push('--resource', resource);
console.log(`[driver] ${tools.node} ${args.slice(1).join(' ')}`);
child = spawn(tools.node, args, { stdio: ['ignore', 'pipe', 'pipe'] });
let out = '';
let authorizeUrl = null;
let listening = null;
const listenerUp = new Promise((resolve) => { listening = resolve; });
let browserStarted = false;

function onOutput(chunk, stream) {
  const s = chunk.toString();
  out += s;
  if (verbose) process.stdout.write(s.replace(/^(?=.)/gm, `[suite${stream}] `));
  if (out.includes(`Callback server started: http://127.0.0.1:${port}`)) listening();
  const m = out.match(/complete the authentication process\.\s*\n(\S+)\s*\n/);
  if (m && !browserStarted) {
    browserStarted = true;
    authorizeUrl = m[1];
    playBrowser(authorizeUrl).catch((e) => {
      result.browser = { ...(result.browser || {}), error: e.message };
      console.log(`[driver] browser failed: ${e.message}`);
      // The suite would wait 5 minutes for a callback that will never come.
      if (child.exitCode === null) child.kill('SIGTERM');
    });
  }
}
child.stdout.on('data', (d) => onOutput(d, ''));
child.stderr.on('data', (d) => onOutput(d, ':err'));

// 3. The browser: authgate's consent, the upstream login; then the redirect goes to the suite.
async function playBrowser(url) {
  const hops = [];
  console.log(`[driver] authorization URL: ${url}`);
  const u = new URL(url);
  result.authorize = { scope: u.searchParams.get('scope'), resource: u.searchParams.get('resource'), redirect_uri: u.searchParams.get('redirect_uri') };
  const final = await walk(url, {
    stopPrefix: callback,
    onHop: (h) => { hops.push(describeHop(h)); if (verbose) console.log(`[browser] ${describeHop(h)}`); },
  });
  result.browser = { hops: hops.length, final: final.replace(/code=[^&]+/, 'code=…') };
  console.log(`[driver] browser reached ${result.browser.final} after ${hops.length} hops`);
  await Promise.race([listenerUp, new Promise((r) => setTimeout(r, 10000))]);
  let res;
  for (let i = 0; ; i++) {
    try {
      res = await fetch(final, { redirect: 'manual' });
      break;
    } catch (e) {
      if (i >= 40) throw new Error(`the suite's callback listener at ${callback} did not answer: ${e.message}`);
      await new Promise((r) => setTimeout(r, 250));
    }
  }
  await res.arrayBuffer().catch(() => {});
  result.browser.delivered = res.status;
  console.log(`[driver] callback delivered to the suite: ${res.status}`);
}

// 4. The suite's own verdicts (checks.json per scenario).
const exitCode = await new Promise((resolve) => child.on('exit', (code, signal) => resolve(code ?? signal)));
result.suiteExit = exitCode;
const saved = savedChecks(outDir);
for (const name of SCENARIOS) {
  const run = saved.filter((s) => s.folder.startsWith(`authorization-server-${name}-`)).pop();
  const v = run ? verdict(run.checks) : { ok: false, success: 0, failure: 1, warning: 0, checks: [{ id: name, name, status: 'FAILURE', error: 'the suite saved no result for this scenario' }] };
  result.scenarios[name] = v;
  console.log(scenarioLine(name, v));
}
if (exitCode !== 0 && SCENARIOS.every((s) => result.scenarios[s].ok)) result.error = `the suite exited ${exitCode}`;
if (!SCENARIOS.every((s) => result.scenarios[s].ok) && !verbose) {
  console.log('[driver] the suite said:');
  console.log(out.replace(/^(?=.)/gm, '    '));
}
finish();
