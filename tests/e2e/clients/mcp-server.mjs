// A plain MCP server (no authentication) for authgate's end-to-end tests: authgate forwards
// authorized /mcp requests here (AUTHGATE_MCP_UPSTREAM=http://127.0.0.1:<port>/mcp).
// Official TypeScript SDK, streamable HTTP transport, stateful (Mcp-Session-Id), on node:http.
//
//   PORT=0 node tests/e2e/clients/mcp-server.mjs
//   stdout: MCP SERVER READY http://127.0.0.1:<port>/mcp      (the only stdout line)
//   stderr: one line per HTTP request (method, path, session, authorization present?, x-authgate-sub)
//
// Tools:
//   echo    {text}        -> text
//   headers {}            -> JSON text: the HTTP request headers of this tools/call as received
//                            (an Authorization value is replaced by "<present>"), plus a summary
//                            {authorization: bool, authgate: {sub, email, client_id, scope}, host}
//   slow    {steps, ms}   -> "done" after steps × ms (default 5 × 1000 ms), one progress
//                            notification per step when the request carries a progress token
//   upstream_whoami {}    -> only with UPSTREAM_API_URL: GETs that URL as the user, with
//                            `Authorization: Bearer <X-Authgate-Upstream-Token of this call>`
//                            (the user's token at the upstream provider, which authgate sends),
//                            and returns JSON text {status, body}; {status: 0} without the header
//   delete_record {id}    -> "deleted <id>"      (authgate's tool-policy tests make it need a scope)
//   payroll {}            -> "payroll report"    (and this one only for some users)
//
// Env: PORT (default 0 = free port), MCP_STATELESS=1 (no sessions: a new server per request),
//      MCP_JSON_RESPONSE=1 (answer POSTs with JSON instead of SSE; progress is then not streamed),
//      UPSTREAM_API_URL (an API of the upstream provider, for upstream_whoami).
// Any Host header is accepted (authgate forwards with the upstream URL's host). SIGTERM/SIGINT: exit 0.

import http from 'node:http';
import { randomUUID } from 'node:crypto';
import { Server } from '@modelcontextprotocol/sdk/server/index.js';
import { StreamableHTTPServerTransport } from '@modelcontextprotocol/sdk/server/streamableHttp.js';
import { CallToolRequestSchema, ListToolsRequestSchema, McpError, ErrorCode } from '@modelcontextprotocol/sdk/types.js';

const PORT = Number(process.env.PORT ?? 0);
const STATELESS = process.env.MCP_STATELESS === '1';
const JSON_RESPONSE = process.env.MCP_JSON_RESPONSE === '1';
const UPSTREAM_API_URL = process.env.UPSTREAM_API_URL ?? '';

const TOOLS = [
  {
    name: 'echo',
    description: 'Returns its text argument.',
    inputSchema: { type: 'object', properties: { text: { type: 'string' } }, required: ['text'] },
  },
  {
    name: 'headers',
    description: 'Returns the HTTP request headers this server received for the call, as JSON text.',
    inputSchema: { type: 'object', properties: {} },
  },
  {
    name: 'delete_record',
    description: 'Pretends to delete a record; returns "deleted <id>".',
    inputSchema: { type: 'object', properties: { id: { type: 'string' } } },
  },
  {
    name: 'payroll',
    description: 'Returns "payroll report".',
    inputSchema: { type: 'object', properties: {} },
  },
  {
    name: 'slow',
    description: 'Waits steps × ms milliseconds, sending a progress notification per step, then returns "done".',
    inputSchema: {
      type: 'object',
      properties: { steps: { type: 'integer', minimum: 1, maximum: 100 }, ms: { type: 'integer', minimum: 0, maximum: 60000 } },
    },
  },
];
if (UPSTREAM_API_URL) {
  TOOLS.push({
    name: 'upstream_whoami',
    description: "Calls the upstream provider's API as the user (with the X-Authgate-Upstream-Token of this call) and returns its status and answer.",
    inputSchema: { type: 'object', properties: {} },
  });
}

const text = (t) => ({ content: [{ type: 'text', text: t }] });
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function headersReport(raw) {
  const headers = {};
  for (const [k, v] of Object.entries(raw ?? {})) {
    headers[k.toLowerCase()] = k.toLowerCase() === 'authorization' ? '<present>' : v;
  }
  return {
    authorization: 'authorization' in headers,
    authgate: {
      sub: headers['x-authgate-sub'] ?? null,
      email: headers['x-authgate-email'] ?? null,
      client_id: headers['x-authgate-client-id'] ?? null,
      scope: headers['x-authgate-scope'] ?? null,
    },
    host: headers.host ?? null,
    headers,
  };
}

function newMcpServer() {
  const server = new Server({ name: 'authgate-e2e-mcp-server', version: '1.0.0' }, { capabilities: { tools: {} } });
  server.setRequestHandler(ListToolsRequestSchema, async () => ({ tools: TOOLS }));
  server.setRequestHandler(CallToolRequestSchema, async (req, extra) => {
    const args = req.params.arguments ?? {};
    switch (req.params.name) {
      case 'echo':
        return text(String(args.text ?? ''));
      case 'headers':
        return text(JSON.stringify(headersReport(extra.requestInfo?.headers)));
      case 'delete_record':
        return text(`deleted ${String(args.id ?? '')}`);
      case 'payroll':
        return text('payroll report');
      case 'slow': {
        const steps = Number.isInteger(args.steps) && args.steps > 0 ? Math.min(args.steps, 100) : 5;
        const ms = Number.isInteger(args.ms) && args.ms >= 0 ? Math.min(args.ms, 60000) : 1000;
        const progressToken = req.params._meta?.progressToken;
        for (let i = 1; i <= steps; i++) {
          await sleep(ms);
          if (extra.signal.aborted) throw new McpError(ErrorCode.InvalidRequest, 'cancelled');
          if (progressToken !== undefined) {
            await extra.sendNotification({
              method: 'notifications/progress',
              params: { progressToken, progress: i, total: steps, message: `step ${i}/${steps}` },
            });
          }
        }
        return text('done');
      }
      case 'upstream_whoami': {
        if (!UPSTREAM_API_URL) throw new McpError(ErrorCode.InvalidParams, `unknown tool: ${req.params.name}`);
        const token = extra.requestInfo?.headers?.['x-authgate-upstream-token'];
        if (!token) return text(JSON.stringify({ status: 0, body: 'no upstream token' }));
        const resp = await fetch(UPSTREAM_API_URL, { headers: { authorization: `Bearer ${token}` } });
        return text(JSON.stringify({ status: resp.status, body: await resp.text() }));
      }
      default:
        throw new McpError(ErrorCode.InvalidParams, `unknown tool: ${req.params.name}`);
    }
  });
  return server;
}

/** Stateful: one transport + server per session id. */
const sessions = new Map();

function isInitialize(body) {
  const msgs = Array.isArray(body) ? body : [body];
  return msgs.some((m) => m && m.method === 'initialize');
}

async function readJson(req) {
  const chunks = [];
  for await (const c of req) chunks.push(c);
  const raw = Buffer.concat(chunks).toString('utf8');
  if (!raw) return undefined;
  try { return JSON.parse(raw); } catch { return Symbol.for('bad-json'); }
}

function jsonRpcError(res, status, message) {
  res.writeHead(status, { 'content-type': 'application/json' });
  res.end(JSON.stringify({ jsonrpc: '2.0', error: { code: -32000, message }, id: null }));
}

async function handle(req, res) {
  const url = new URL(req.url, 'http://placeholder');
  const sid = req.headers['mcp-session-id'];
  console.error(`[mcp-server] ${req.method} ${url.pathname} session=${sid ?? '-'} authorization=${'authorization' in req.headers} x-authgate-sub=${req.headers['x-authgate-sub'] ?? '-'} host=${req.headers.host}`);
  if (url.pathname !== '/mcp') { res.writeHead(404).end(); return; }

  let body;
  if (req.method === 'POST') {
    body = await readJson(req);
    if (body === Symbol.for('bad-json')) return jsonRpcError(res, 400, 'Parse error');
  }

  if (STATELESS) {
    // No sessions: nothing to stream to outside a request, nothing to delete.
    if (req.method !== 'POST') { res.writeHead(405, { allow: 'POST' }).end(); return; }
    const transport = new StreamableHTTPServerTransport({ sessionIdGenerator: undefined, enableJsonResponse: JSON_RESPONSE });
    const server = newMcpServer();
    res.on('close', () => { transport.close(); server.close(); });
    await server.connect(transport);
    await transport.handleRequest(req, res, body);
    return;
  }

  if (sid) {
    const transport = sessions.get(sid);
    if (!transport) return jsonRpcError(res, 404, 'Session not found');
    await transport.handleRequest(req, res, body);
    return;
  }
  if (req.method === 'POST' && isInitialize(body)) {
    const transport = new StreamableHTTPServerTransport({
      sessionIdGenerator: () => randomUUID(),
      enableJsonResponse: JSON_RESPONSE,
      onsessioninitialized: (id) => { sessions.set(id, transport); },
    });
    transport.onclose = () => { if (transport.sessionId) sessions.delete(transport.sessionId); };
    await newMcpServer().connect(transport);
    await transport.handleRequest(req, res, body);
    return;
  }
  jsonRpcError(res, 400, 'Bad Request: no valid session id');
}

const httpServer = http.createServer((req, res) => {
  handle(req, res).catch((e) => {
    console.error(`[mcp-server] error: ${e?.stack ?? e}`);
    if (!res.headersSent) jsonRpcError(res, 500, 'Internal error');
    else res.end();
  });
});

httpServer.on('error', (e) => { console.error(`[mcp-server] ${e.message}`); process.exit(2); });
httpServer.listen(PORT, '127.0.0.1', () => {
  console.log(`MCP SERVER READY http://127.0.0.1:${httpServer.address().port}/mcp`);
});

const shutdown = async () => {
  for (const t of sessions.values()) await t.close().catch(() => {});
  httpServer.closeAllConnections?.();
  httpServer.close(() => process.exit(0));
  setTimeout(() => process.exit(0), 500).unref();
};
process.on('SIGTERM', shutdown);
process.on('SIGINT', shutdown);
