// Preloaded into the Inspector's process (`node --import trace.mjs …`) to record what it sends:
// one JSON line per HTTP request to $INSPECTOR_TRACE_FILE. The Inspector CLI's HTTP (MCP transport,
// discovery, registration, token) goes through globalThis.fetch when no proxy variable is set, so
// wrapping it sees every request; nothing is changed. Recorded: method, URL without query,
// status, whether an Authorization header was sent, the JSON-RPC method of a POST /mcp, the body
// of a registration request, and the grant_type, resource and client authentication of a /token
// request.

import { appendFileSync } from 'node:fs';

const file = process.env.INSPECTOR_TRACE_FILE;
const inner = globalThis.fetch;

function bodyText(body) {
  if (body == null) return undefined;
  if (typeof body === 'string') return body;
  if (body instanceof URLSearchParams) return body.toString();
  if (body instanceof Uint8Array) return new TextDecoder().decode(body);
  return undefined;
}

function headerOf(headers, name) {
  if (!headers) return undefined;
  if (headers instanceof Headers) return headers.get(name) ?? undefined;
  if (Array.isArray(headers)) return headers.find(([k]) => k.toLowerCase() === name)?.[1];
  const key = Object.keys(headers).find((k) => k.toLowerCase() === name);
  return key ? headers[key] : undefined;
}

if (file && inner) {
  globalThis.fetch = async function tracedFetch(input, init = {}) {
    const req = input instanceof Request ? input : undefined;
    const url = new URL(req ? req.url : String(input));
    const entry = {
      t: Date.now(),
      method: (init.method ?? req?.method ?? 'GET').toUpperCase(),
      url: url.origin + url.pathname,
      auth: Boolean(headerOf(init.headers, 'authorization') ?? req?.headers.get('authorization')),
    };
    const text = bodyText(init.body);
    if (text && url.pathname.endsWith('/token')) {
      const form = new URLSearchParams(text);
      entry.grant_type = form.get('grant_type');
      entry.resource = form.get('resource');
      entry.client_auth = headerOf(init.headers, 'authorization')?.startsWith('Basic ')
        ? 'basic'
        : form.get('client_secret') ? 'post' : 'none';
    } else if (text && entry.method === 'POST') {
      try {
        const msg = JSON.parse(text);
        if (url.pathname.endsWith('/register')) entry.register = msg;
        else entry.rpc = Array.isArray(msg) ? msg.map((m) => m.method).join(',') : msg.method;
      } catch { /* not JSON */ }
    }
    try {
      const res = await inner.call(this, input, init);
      entry.status = res.status;
      if (res.status === 401) entry.www_authenticate = res.headers.get('www-authenticate');
      return res;
    } catch (e) {
      entry.error = String(e?.message ?? e);
      throw e;
    } finally {
      appendFileSync(file, `${JSON.stringify(entry)}\n`);
    }
  };
}
