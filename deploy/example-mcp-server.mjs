#!/usr/bin/env node
// A minimal MCP server to put behind authgate (docker-compose.yml runs it in a plain node image):
// streamable HTTP, stateless, JSON answers, Node built-ins only. Its one tool, `whoami`, answers with
// the identity authgate forwards in X-Authgate-Sub, X-Authgate-Email, X-Authgate-Client-Id and
// X-Authgate-Scope.
//
// It believes those headers, so it must be reachable ONLY through authgate (in docker-compose.yml
// its port is not published). A real MCP server would use an MCP SDK; this one shows the contract.
//
//   HOST=127.0.0.1 PORT=3000 node deploy/example-mcp-server.mjs      -> http://HOST:PORT/mcp
import http from 'node:http';

const host = process.env.HOST || '0.0.0.0';
const port = Number(process.env.PORT || 3000);
const VERSIONS = ['2025-06-18', '2025-03-26', '2024-11-05'];

function identity(req) {
  return {
    sub: req.headers['x-authgate-sub'] || null,
    email: req.headers['x-authgate-email'] || null,
    client_id: req.headers['x-authgate-client-id'] || null,
    scope: req.headers['x-authgate-scope'] || null,
  };
}

function answer(req, msg) {
  switch (msg.method) {
    case 'initialize':
      return {
        protocolVersion: VERSIONS.includes(msg.params?.protocolVersion) ? msg.params.protocolVersion : VERSIONS[0],
        capabilities: { tools: {} },
        serverInfo: { name: 'authgate-example', version: '1.0.0' },
      };
    case 'ping':
      return {};
    case 'tools/list':
      return {
        tools: [{
          name: 'whoami',
          description: 'Who is calling, as authgate authenticated them.',
          inputSchema: { type: 'object', properties: {} },
        }],
      };
    case 'tools/call':
      if (msg.params?.name !== 'whoami') return { error: { code: -32602, message: `unknown tool ${msg.params?.name}` } };
      return { content: [{ type: 'text', text: JSON.stringify(identity(req)) }] };
    default:
      return { error: { code: -32601, message: `method not found: ${msg.method}` } };
  }
}

function send(res, status, body) {
  const text = body === undefined ? '' : JSON.stringify(body);
  res.writeHead(status, body === undefined ? {} : { 'content-type': 'application/json' });
  res.end(text);
}

http.createServer((req, res) => {
  const path = new URL(req.url, 'http://x').pathname;
  if (path === '/healthz') return send(res, 200, { status: 'ok' });
  if (path !== '/mcp') return send(res, 404, { error: 'not found' });
  // No server-initiated stream (GET) and no sessions (DELETE): both are optional in the protocol.
  if (req.method !== 'POST') {
    res.setHeader('allow', 'POST');
    return send(res, 405, { error: 'method not allowed' });
  }
  const chunks = [];
  let size = 0;
  req.on('data', (c) => {
    size += c.length;
    if (size > 1 << 20) req.destroy();
    else chunks.push(c);
  });
  req.on('end', () => {
    let msg;
    try { msg = JSON.parse(Buffer.concat(chunks).toString('utf8')); } catch {
      return send(res, 400, { jsonrpc: '2.0', id: null, error: { code: -32700, message: 'parse error' } });
    }
    if (!msg || typeof msg !== 'object' || Array.isArray(msg) || msg.jsonrpc !== '2.0') {
      return send(res, 400, { jsonrpc: '2.0', id: null, error: { code: -32600, message: 'invalid request' } });
    }
    // Notifications and responses get no answer.
    if (msg.id === undefined || msg.method === undefined) return send(res, 202);
    const result = answer(req, msg);
    if (result.error) return send(res, 200, { jsonrpc: '2.0', id: msg.id, error: result.error });
    return send(res, 200, { jsonrpc: '2.0', id: msg.id, result });
  });
}).listen(port, host, () => {
  process.stdout.write(`example MCP server on http://${host}:${port}/mcp\n`);
});

for (const sig of ['SIGTERM', 'SIGINT']) process.on(sig, () => process.exit(0));
