// mcp-remote (the stdio bridge Claude Desktop and other stdio-only clients use) against an
// authgate-protected MCP endpoint, headless. It is spawned exactly as a desktop client would spawn
// it; mcp-remote does discovery, DCR, PKCE, runs its own loopback callback listener, and "opens a
// browser" through the `open` package, whose bundled xdg-open runs $BROWSER when there is no
// display: BROWSER is browser.mjs, which walks the login and delivers the redirect to the listener.
// This script then speaks JSON-RPC on mcp-remote's stdin/stdout: initialize, tools/list,
// tools/call <tool> [, PROGRESS_TOOL with a progress token].
//
// Usage: node tests/e2e/clients/remote-client.mjs <MCP_URL> [tool [jsonArgs]]   (tool default: whoami)
// Env:   LOGIN_USER, LOGIN_PASSWORD (read by browser.mjs), MCP_REMOTE_ARGS (extra arguments, space
//        separated, e.g. "--resource https://x/mcp"), MCP_REMOTE_CONFIG_DIR (token cache; default: a
//        fresh temporary directory, so every run logs in), PROGRESS_TOOL (+ PROGRESS_ARGS),
//        TIMEOUT_MS (120000), VERBOSE=1 (mirror mcp-remote's stderr).
// Output: `RESULT {json}` as the last line; exit 0 when every step succeeded.
// `refreshed` is true when mcp-remote reported refreshing its access token (it refreshes shortly
// before expiry: run authgate with a short AUTHGATE_ACCESS_TOKEN_TTL to see it); it is not
// required for ok.

import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, existsSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const [mcpUrl, toolArg, argsArg] = process.argv.slice(2);
if (!mcpUrl) {
  console.error('usage: node remote-client.mjs <MCP_URL> [tool [jsonArgs]]');
  process.exit(2);
}
const env = process.env;
const toolName = toolArg || 'whoami';
const toolArgs = argsArg ? JSON.parse(argsArg) : {};
const verbose = env.VERBOSE === '1';
const t0 = Date.now();
const result = { ok: false, client: 'mcp-remote', sdk: 'mcp-remote@0.15.1', tools: [], call: null, refreshed: false };

const ownConfigDir = !env.MCP_REMOTE_CONFIG_DIR;
const configDir = env.MCP_REMOTE_CONFIG_DIR || mkdtempSync(path.join(os.tmpdir(), 'authgate-mcp-remote-'));
const browserLog = path.join(configDir, 'browser.log');
const stderrLines = [];
let child;

function finish(error) {
  if (error) result.error = error instanceof Error ? `${error.name}: ${error.message}` : String(error);
  else result.ok = true;
  result.browserHops = existsSync(browserLog) ? readFileSync(browserLog, 'utf8').trim().split('\n').filter(Boolean).map((l) => l.replace(/\?[^ ]*/g, '?…')) : [];
  result.loggedIn = result.browserHops.some((l) => l.includes('(delivered)'));
  result.refreshed = stderrLines.some((l) => /refreshed the access token/i.test(l));
  result.ms = Date.now() - t0;
  if (!verbose && error) console.log(`[mcp-remote stderr, last lines]\n  ${stderrLines.slice(-15).join('\n  ')}`);
  child?.kill('SIGTERM');
  if (ownConfigDir) rmSync(configDir, { recursive: true, force: true });
  console.log(`RESULT ${JSON.stringify(result)}`);
  process.exit(result.ok ? 0 : 1);
}
setTimeout(() => finish(new Error(`timeout after ${env.TIMEOUT_MS || 120000} ms`)), Number(env.TIMEOUT_MS || 120000)).unref();

async function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.on('error', reject);
    s.listen(0, '127.0.0.1', () => { const { port } = s.address(); s.close(() => resolve(port)); });
  });
}

const callbackPort = await freePort();
const bin = path.join(here, 'node_modules', 'mcp-remote', 'dist', 'proxy.js');
const args = [bin, mcpUrl, String(callbackPort), '--host', '127.0.0.1', ...(env.MCP_REMOTE_ARGS ? env.MCP_REMOTE_ARGS.split(/\s+/).filter(Boolean) : [])];
console.log(`[spawn] node ${args.join(' ')}`);
child = spawn(process.execPath, args, {
  env: {
    ...env,
    BROWSER: path.join(here, 'browser.mjs'),
    BROWSER_LOG: browserLog,
    MCP_REMOTE_CONFIG_DIR: configDir,
    DISPLAY: '',
    WAYLAND_DISPLAY: '',
  },
  stdio: ['pipe', 'pipe', 'pipe'],
});
child.on('exit', (code, signal) => { if (!result.ok) finish(new Error(`mcp-remote exited (${code ?? signal})`)); });

let errBuf = '';
child.stderr.on('data', (d) => {
  errBuf += d;
  let i;
  while ((i = errBuf.indexOf('\n')) >= 0) {
    const line = errBuf.slice(0, i);
    errBuf = errBuf.slice(i + 1);
    stderrLines.push(line);
    if (verbose) console.log(`[mcp-remote] ${line}`);
  }
});

const waiting = new Map();
const progressHandlers = new Map();
let outBuf = '';
child.stdout.on('data', (d) => {
  outBuf += d;
  let i;
  while ((i = outBuf.indexOf('\n')) >= 0) {
    const line = outBuf.slice(0, i).trim();
    outBuf = outBuf.slice(i + 1);
    if (!line) continue;
    let msg;
    try { msg = JSON.parse(line); } catch { console.log(`[stdout, not JSON] ${line}`); continue; }
    if (msg.id !== undefined && waiting.has(msg.id)) { waiting.get(msg.id)(msg); waiting.delete(msg.id); }
    else if (msg.method === 'notifications/progress') progressHandlers.get(msg.params?.progressToken)?.(msg.params);
  }
});

let nextId = 1;
function request(method, params) {
  const id = nextId++;
  return new Promise((resolve, reject) => {
    waiting.set(id, (m) => (m.error ? reject(new Error(`${method}: ${JSON.stringify(m.error)}`)) : resolve(m.result)));
    child.stdin.write(`${JSON.stringify({ jsonrpc: '2.0', id, method, params })}\n`);
  });
}
const notify = (method, params) => child.stdin.write(`${JSON.stringify({ jsonrpc: '2.0', method, ...(params ? { params } : {}) })}\n`);
const text = (r) => (r.content ?? []).filter((c) => c.type === 'text').map((c) => c.text).join('\n');

try {
  const init = await request('initialize', {
    protocolVersion: '2025-06-18',
    capabilities: {},
    clientInfo: { name: 'authgate-e2e-remote-client', version: '1.0.0' },
  });
  result.protocolVersion = init.protocolVersion;
  console.log(`[mcp] initialized: protocol ${init.protocolVersion}, server ${JSON.stringify(init.serverInfo)}`);
  notify('notifications/initialized');
  const { tools } = await request('tools/list', {});
  result.tools = tools.map((t) => t.name);
  console.log(`[mcp] tools/list -> ${result.tools.join(', ')}`);
  const called = await request('tools/call', { name: toolName, arguments: toolArgs });
  result.call = text(called);
  console.log(`[mcp] tools/call ${toolName} -> ${result.call}`);
  if (called.isError) throw new Error(`tool ${toolName} returned isError: ${result.call}`);
  if (env.PROGRESS_TOOL) {
    const started = Date.now();
    const progress = [];
    progressHandlers.set('remote-progress-1', (p) => { progress.push(Date.now() - started); console.log(`[progress] +${Date.now() - started} ms ${JSON.stringify(p)}`); });
    const r = await request('tools/call', {
      name: env.PROGRESS_TOOL,
      arguments: env.PROGRESS_ARGS ? JSON.parse(env.PROGRESS_ARGS) : {},
      _meta: { progressToken: 'remote-progress-1' },
    });
    result.progress = progress;
    result.progressCall = text(r);
    result.progressTotalMs = Date.now() - started;
    console.log(`[mcp] tools/call ${env.PROGRESS_TOOL} -> ${result.progressCall} after ${result.progressTotalMs} ms`);
  }
  if (existsSync(browserLog)) {
    for (const l of readFileSync(browserLog, 'utf8').trim().split('\n')) console.log(`[browser] ${l.replace(/\?[^ ]*/g, '?…')}`);
  }
  finish();
} catch (e) {
  finish(e);
}
