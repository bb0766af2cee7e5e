// The official MCP TypeScript SDK client (@modelcontextprotocol/sdk, StreamableHTTPClientTransport)
// logging in to an authgate-protected MCP endpoint with no person and no real browser:
//
//   POST /mcp -> 401 + WWW-Authenticate -> RFC 9728 resource metadata -> RFC 8414 AS metadata
//   -> RFC 7591 /register -> /authorize walked by browser.mjs (consent, dev login or IdP login)
//   -> code at the redirect URI (nothing listens there) -> finishAuth (/token, PKCE)
//   -> tools/list -> tools/call <tool> [-> PROGRESS_TOOL with a progress token]
//   -> refresh (REFRESH_MODE) -> tools/list with the refreshed token -> DELETE the session.
//
// Usage: node tests/e2e/clients/ts-client.mjs <MCP_URL> [tool [jsonArgs]]     (tool default: whoami, args {})
// Env:   LOGIN_USER (ann@example.test), LOGIN_PASSWORD (secret), AUTH_METHOD (none | client_secret_post |
//        client_secret_basic: the DCR token_endpoint_auth_method), REDIRECT_URI (default
//        http://127.0.0.1:<free port>/callback), REFRESH_MODE (expire | auth | wait | none),
//        PROGRESS_TOOL (+ PROGRESS_ARGS json), EXPECT_AUTH (1; 0 = a plain server without OAuth is fine),
//        TIMEOUT_MS (120000), VERBOSE=1 (browser hops and MCP request headers), PRINT_TOKEN=1,
//        FORBIDDEN_TOOL (a call that must fail with a JSON-RPC error), STEP_UP_TOOL (+ STEP_UP_ARGS: a
//        call answered 403 insufficient_scope, then made again after authorizing the challenged scope).
// Output: one line per HTTP request the SDK made, then a last line `RESULT {json}`.
// Exit:   0 when every step succeeded, 1 otherwise (RESULT then has ok:false and error).

import net from 'node:net';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { UnauthorizedError, auth } from '@modelcontextprotocol/sdk/client/auth.js';
import { McpError } from '@modelcontextprotocol/sdk/types.js';
import { walk, describeHop, CookieJar } from './browser.mjs';

const [mcpArg, toolArg, argsArg] = process.argv.slice(2);
if (!mcpArg) {
  console.error('usage: node ts-client.mjs <MCP_URL> [tool [jsonArgs]]');
  process.exit(2);
}
const mcpUrl = new URL(mcpArg);
const toolName = toolArg || 'whoami';
const toolArgs = argsArg ? JSON.parse(argsArg) : {};
const env = process.env;
const verbose = env.VERBOSE === '1';
const refreshMode = env.REFRESH_MODE || 'expire';
const expectAuth = env.EXPECT_AUTH !== '0';

const result = { ok: false, client: 'ts-sdk', sdk: '@modelcontextprotocol/sdk@1.32.2', tools: [], call: null, refreshed: false };
const http = []; // "METHOD /path STATUS"
const t0 = Date.now();

function finish(error) {
  if (error) {
    result.ok = false;
    result.error = error instanceof Error ? `${error.name}: ${error.message}${error.cause ? ` (cause: ${error.cause.message ?? error.cause})` : ''}` : String(error);
    if (verbose && error?.stack) console.error(error.stack);
  }
  result.http = http;
  result.ms = Date.now() - t0;
  console.log(`RESULT ${JSON.stringify(result)}`);
  process.exit(result.ok ? 0 : 1);
}
setTimeout(() => finish(new Error(`timeout after ${env.TIMEOUT_MS || 120000} ms`)), Number(env.TIMEOUT_MS || 120000)).unref();
process.on('unhandledRejection', (e) => finish(e));

async function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.on('error', reject);
    s.listen(0, '127.0.0.1', () => { const { port } = s.address(); s.close(() => resolve(port)); });
  });
}

// Every request the SDK makes goes through here: method, path and status are printed, and the
// /token requests are classified (grant type, resource sent, client authentication used).
const tokenRequests = [];
async function tracingFetch(input, init = {}) {
  const url = new URL(typeof input === 'string' || input instanceof URL ? input : input.url);
  const method = (init.method || 'GET').toUpperCase();
  const headers = new Headers(init.headers);
  let note = '';
  if (url.pathname.endsWith('/token') && init.body instanceof URLSearchParams) {
    const b = init.body;
    const info = {
      grant_type: b.get('grant_type'),
      resource: b.get('resource'),
      client_auth: headers.get('authorization')?.startsWith('Basic ') ? 'basic' : b.has('client_secret') ? 'post' : 'none',
    };
    tokenRequests.push(info);
    note = ` (${info.grant_type}, resource=${info.resource ?? '-'}, auth=${info.client_auth})`;
  }
  if (verbose && url.pathname === mcpUrl.pathname) {
    const shown = {};
    for (const [k, v] of headers) shown[k] = k === 'authorization' ? `${v.slice(0, 16)}…` : v;
    console.log(`[http] > ${method} ${url.pathname} ${JSON.stringify(shown)}`);
  }
  const res = await fetch(input, init);
  const line = `${method} ${url.pathname} ${res.status}`;
  http.push(line);
  console.log(`[http] ${line}${note}`);
  if (res.status === 401 && res.headers.get('www-authenticate')) {
    console.log(`[http]   WWW-Authenticate: ${res.headers.get('www-authenticate')}`);
  }
  return res;
}

class WalkingProvider {
  constructor(redirectUri) {
    this.redirectUri = redirectUri;
    this.jar = new CookieJar();
    this.walks = 0;
    this.pending = undefined;
  }
  get redirectUrl() { return this.redirectUri; }
  get clientMetadata() {
    return {
      client_name: 'authgate e2e ts-sdk client',
      redirect_uris: [this.redirectUri],
      grant_types: ['authorization_code', 'refresh_token'],
      response_types: ['code'],
      token_endpoint_auth_method: env.AUTH_METHOD || 'none',
    };
  }
  state() { this._state = crypto.randomUUID(); return this._state; }
  clientInformation() { return this._client; }
  saveClientInformation(info) {
    this._client = info;
    console.log(`[dcr] client_id=${info.client_id} token_endpoint_auth_method=${info.token_endpoint_auth_method ?? '(absent)'} secret=${info.client_secret ? 'yes' : 'no'}`);
  }
  tokens() { return this._tokens; }
  saveTokens(tokens) {
    this._tokens = tokens;
    console.log(`[token] token_type=${tokens.token_type} expires_in=${tokens.expires_in} scope=${tokens.scope ?? '-'} refresh_token=${tokens.refresh_token ? 'yes' : 'no'}`);
  }
  saveCodeVerifier(v) { this._verifier = v; }
  codeVerifier() { return this._verifier; }
  saveDiscoveryState(s) { this._discovery = s; }
  discoveryState() { return this._discovery; }
  redirectToAuthorization(url) {
    this.walks += 1;
    const q = url.searchParams;
    console.log(`[authorize] ${url.origin}${url.pathname} scope=${q.get('scope')} resource=${q.get('resource')} code_challenge_method=${q.get('code_challenge_method')}`);
    result.authorize = { scope: q.get('scope'), resource: q.get('resource') };
    const state = this._state;
    this.pending = walk(url, {
      stopPrefix: this.redirectUri,
      jar: this.jar,
      login: env.LOGIN_USER || 'ann@example.test',
      password: env.LOGIN_PASSWORD || 'secret',
      onHop: (h) => console.log(`[browser] ${verbose ? describeHop(h) : describeHop({ ...h, url: short(h.url), location: h.location && short(h.location) })}`),
    }).then((final) => {
      const f = new URL(final).searchParams;
      if (f.get('error')) throw new Error(`authorization error: ${f.get('error')} ${f.get('error_description') ?? ''}`);
      if (f.get('state') !== state) throw new Error(`state mismatch: got ${f.get('state')}, sent ${state}`);
      const issuer = this._discovery?.authorizationServerMetadata?.issuer;
      if (f.has('iss') && issuer && f.get('iss') !== issuer) throw new Error(`iss mismatch: got ${f.get('iss')}, metadata issuer ${issuer}`);
      result.iss = f.get('iss');
      return f.get('code');
    });
    // The SDK throws UnauthorizedError after this returns; the walk result is awaited below.
    this.pending.catch(() => {});
  }
}

function short(u) {
  const x = new URL(u);
  return `${x.origin}${x.pathname}${x.search ? '?…' : ''}`;
}

const text = (r) => (r.content ?? []).filter((c) => c.type === 'text').map((c) => c.text).join('\n');

const redirectUri = env.REDIRECT_URI || `http://127.0.0.1:${await freePort()}/callback`;
const provider = new WalkingProvider(redirectUri);
const newTransport = () => new StreamableHTTPClientTransport(mcpUrl, { authProvider: provider, fetch: tracingFetch });
const newClient = () => new Client({ name: 'authgate-e2e-ts-client', version: '1.0.0' });

try {
  // 1. Connect: a protected server answers 401; the SDK discovers, registers and opens the
  //    authorization URL (our walker) and throws UnauthorizedError.
  let client = newClient();
  let transport = newTransport();
  try {
    await client.connect(transport);
    console.log('[connect] connected without authorization');
    result.auth = false;
    if (expectAuth) throw new Error('the server did not ask for authorization (set EXPECT_AUTH=0 for a plain server)');
  } catch (e) {
    if (!(e instanceof UnauthorizedError) || !provider.pending) throw e;
    const code = await provider.pending;
    console.log(`[callback] code received (${code.length} chars), iss=${result.iss ?? '-'}`);
    await transport.finishAuth(code);
    result.auth = true;
    client = newClient();
    transport = newTransport();
    await client.connect(transport);
  }
  result.protocolVersion = transport.protocolVersion;
  result.sessionId = Boolean(transport.sessionId);
  console.log(`[mcp] connected: protocol ${transport.protocolVersion}, session id ${transport.sessionId ? 'yes' : 'no'}, server ${JSON.stringify(client.getServerVersion())}`);

  // 2. tools/list and tools/call.
  const { tools } = await client.listTools();
  result.tools = tools.map((t) => t.name);
  console.log(`[mcp] tools/list -> ${result.tools.join(', ')}`);
  const called = await client.callTool({ name: toolName, arguments: toolArgs });
  result.call = text(called);
  result.callIsError = Boolean(called.isError);
  console.log(`[mcp] tools/call ${toolName} -> ${result.call}`);
  if (called.isError) throw new Error(`tool ${toolName} returned isError: ${result.call}`);

  // 3. Optional: a tool call with a progress token; record when each notification arrived.
  if (env.PROGRESS_TOOL) {
    const started = Date.now();
    const progress = [];
    const r = await client.callTool(
      { name: env.PROGRESS_TOOL, arguments: env.PROGRESS_ARGS ? JSON.parse(env.PROGRESS_ARGS) : {} },
      undefined,
      { onprogress: (p) => { progress.push(Date.now() - started); console.log(`[progress] +${Date.now() - started} ms ${JSON.stringify(p)}`); }, resetTimeoutOnProgress: true, timeout: 60000 },
    );
    result.progress = progress;
    result.progressCall = text(r);
    result.progressTotalMs = Date.now() - started;
    console.log(`[mcp] tools/call ${env.PROGRESS_TOOL} -> ${result.progressCall} after ${result.progressTotalMs} ms, ${progress.length} progress notifications`);
    if (r.isError) throw new Error(`tool ${env.PROGRESS_TOOL} returned isError: ${result.progressCall}`);
  }

  // 3b. Optional: a tool the policy never lets this user call: a JSON-RPC error for that call alone.
  if (env.FORBIDDEN_TOOL) {
    try {
      const r = await client.callTool({ name: env.FORBIDDEN_TOOL, arguments: {} });
      throw new Error(`tool ${env.FORBIDDEN_TOOL} was not refused: ${text(r)}`);
    } catch (e) {
      if (!(e instanceof McpError)) throw e;
      result.forbidden = { code: e.code, message: e.message };
      console.log(`[mcp] tools/call ${env.FORBIDDEN_TOOL} -> JSON-RPC error ${e.code}: ${e.message}`);
    }
  }

  // 3c. Optional: step-up. SDK 1.32.2 answers 403 insufficient_scope by refreshing (a refresh
  //     cannot widen the scope), gets the same 403 and gives up; a host then has to authorize
  //     again, which the SDK does with the challenged scope once it holds no refresh token.
  if (env.STEP_UP_TOOL) {
    const stepArgs = env.STEP_UP_ARGS ? JSON.parse(env.STEP_UP_ARGS) : {};
    const scopeBefore = provider.tokens()?.scope;
    let sdkAlone;
    try {
      await client.callTool({ name: env.STEP_UP_TOOL, arguments: stepArgs });
      throw new Error(`tool ${env.STEP_UP_TOOL} was called without stepping up`);
    } catch (e) {
      if (!String(e?.message).includes('403')) throw e;
      sdkAlone = e.message;
      console.log(`[step-up] the SDK alone: ${e.message}`);
    }
    await client.listTools(); // a success clears the SDK's record of the last 403
    const walksBefore = provider.walks;
    provider._tokens = { ...provider.tokens(), refresh_token: undefined };
    let stepped;
    try {
      stepped = await client.callTool({ name: env.STEP_UP_TOOL, arguments: stepArgs });
    } catch (e) {
      if (!(e instanceof UnauthorizedError) || !provider.pending || provider.walks === walksBefore) throw e;
      const code = await provider.pending;
      await transport.finishAuth(code);
      stepped = await client.callTool({ name: env.STEP_UP_TOOL, arguments: stepArgs });
    }
    result.stepUp = {
      call: text(stepped), isError: Boolean(stepped.isError), sdkAlone,
      newLogins: provider.walks - walksBefore, scopeBefore, scopeAfter: provider.tokens()?.scope,
      authorizeScope: result.authorize?.scope,
    };
    console.log(`[mcp] tools/call ${env.STEP_UP_TOOL} -> ${result.stepUp.call} (step-up: ${JSON.stringify(result.stepUp)})`);
    if (stepped.isError) throw new Error(`tool ${env.STEP_UP_TOOL} returned isError: ${result.stepUp.call}`);
  }

  // 4. Refresh, then prove the refreshed access token works.
  if (result.auth && refreshMode !== 'none') {
    const before = provider.tokens();
    if (!before?.refresh_token) throw new Error('no refresh_token was issued');
    const walksBefore = provider.walks;
    const tokenCalls = tokenRequests.length;
    let checkClient = client;
    let checkTransport;
    if (refreshMode === 'auth') {
      // The SDK's own refresh path: auth() with a stored refresh token runs grant_type=refresh_token.
      const r = await auth(provider, { serverUrl: mcpUrl, fetchFn: tracingFetch });
      if (r !== 'AUTHORIZED') throw new Error(`auth() returned ${r}`);
      checkClient = newClient();
      checkTransport = newTransport();
      await checkClient.connect(checkTransport);
    } else if (refreshMode === 'wait') {
      // Let the access token really expire (start authgate with a short AUTHGATE_ACCESS_TOKEN_TTL).
      const ms = Math.min((before.expires_in ?? 0) * 1000 + 1500, 120000);
      console.log(`[refresh] waiting ${ms} ms for the access token to expire`);
      await new Promise((r) => setTimeout(r, ms));
    } else {
      // expire: the stored access token becomes one the server rejects, as an expired one is; the
      // next request gets 401, and the transport refreshes and retries by itself.
      provider._tokens = { ...before, access_token: `${before.access_token.slice(0, -8)}AAAAAAAA` };
    }
    const { tools: again } = await checkClient.listTools();
    if (checkClient !== client) {
      await checkTransport.terminateSession();
      await checkClient.close();
    }
    const after = provider.tokens();
    const refreshes = tokenRequests.slice(tokenCalls).filter((t) => t.grant_type === 'refresh_token');
    result.refreshed = refreshes.length > 0 && provider.walks === walksBefore && after.access_token !== before.access_token
      && after.refresh_token !== undefined && again.length === tools.length;
    result.refreshRotated = after.refresh_token !== before.refresh_token;
    console.log(`[refresh] mode=${refreshMode} refresh grants=${refreshes.length} new login=${provider.walks !== walksBefore} new access token=${after.access_token !== before.access_token} rotated refresh token=${result.refreshRotated} tools/list -> ${again.length} tools`);
    if (!result.refreshed) throw new Error('refresh did not produce a working access token without a new login');
  }

  // 5. End the MCP session (DELETE /mcp with Mcp-Session-Id, when the server gave one).
  if (transport.sessionId) {
    await transport.terminateSession();
    result.sessionTerminated = true;
  }
  await client.close();

  result.tokenRequests = tokenRequests;
  result.ok = true;
  if (env.PRINT_TOKEN === '1' && provider.tokens()) console.log(`ACCESS_TOKEN ${provider.tokens().access_token}`);
  finish();
} catch (e) {
  result.tokenRequests = tokenRequests;
  finish(e);
}
