#!/usr/bin/env node
// A scripted browser for OAuth authorization flows. Node 20 built-ins only (fetch, URL,
// Headers.getSetCookie).
//
// It does what a person's browser does between "the MCP client opens the authorization URL" and
// "the browser lands on the client's redirect URI":
//   * follows redirects by hand (3xx + Location, resolved against the URL that answered);
//   * keeps cookies like a browser: Domain (host-only or domain-match), Path (default path and
//     path-match), Max-Age/Expires, Secure; ports are ignored, as browsers do;
//   * on a 200 HTML page, submits its form: authgate's consent page (approve), authgate's dev
//     login (fills `email`), the test IdP's login (`login` + `password`) and consent (no fields);
//     a POST carries `Origin: <origin of the page>`, as browsers send it;
//   * stops at the first URL that starts with `stopPrefix` (the client's redirect URI) and
//     returns it WITHOUT fetching it: nothing needs to listen there.
//
// Library:  import { walk, CookieJar } from './browser.mjs'
//           const url = await walk(authorizeUrl, { stopPrefix, login: 'ann@example.test' })
// CLI:      node browser.mjs <authorizeUrl> <stopPrefix>   (hops on stderr, the final URL on stdout)
//           BROWSER=/abs/path/browser.mjs mcp-remote ...     (walks to the URL's redirect_uri and GETs it)

import { realpathSync } from 'node:fs';
import { pathToFileURL } from 'node:url';

const APPROVE = /\b(approve|allow|accept|authori[sz]e|confirm|consent|continue|yes|grant|sign ?in|log ?in|submit)\b/i;
const REFUSE = /\b(deny|reject|refuse|cancel|abort|decline|no)\b/i;
const USER_FIELDS = /^(login|username|user|email|user_?name|identifier)$/i;

/** A cookie store with RFC 6265 domain and path matching (no public-suffix list: loopback tests). */
export class CookieJar {
  constructor() {
    /** @type {{name:string,value:string,domain:string,hostOnly:boolean,path:string,secure:boolean,expires:number}[]} */
    this.cookies = [];
  }

  /** Store the Set-Cookie headers of a response to `url`. */
  store(url, setCookieHeaders) {
    const u = new URL(url);
    const host = u.hostname.toLowerCase();
    for (const line of setCookieHeaders || []) {
      const parts = line.split(';');
      const first = parts.shift();
      const eq = first.indexOf('=');
      if (eq <= 0) continue; // nameless cookies are ignored
      const name = first.slice(0, eq).trim();
      const value = first.slice(eq + 1).trim().replace(/^"(.*)"$/, '$1');
      let domain = host;
      let hostOnly = true;
      let path = defaultPath(u.pathname);
      let secure = false;
      let expires = Infinity;
      let maxAgeSeen = false;
      for (const p of parts) {
        const i = p.indexOf('=');
        const key = (i < 0 ? p : p.slice(0, i)).trim().toLowerCase();
        const val = i < 0 ? '' : p.slice(i + 1).trim();
        if (key === 'domain' && val) {
          const d = val.replace(/^\./, '').toLowerCase();
          if (!domainMatch(host, d)) { domain = null; break; } // a foreign Domain: reject the cookie
          domain = d;
          hostOnly = false;
        } else if (key === 'path') {
          path = val.startsWith('/') ? val : defaultPath(u.pathname);
        } else if (key === 'secure') {
          secure = true;
        } else if (key === 'max-age' && /^-?\d+$/.test(val)) {
          maxAgeSeen = true;
          expires = Number(val) <= 0 ? 0 : Date.now() + Number(val) * 1000;
        } else if (key === 'expires' && !maxAgeSeen) {
          const t = Date.parse(val);
          if (!Number.isNaN(t)) expires = t;
        }
      }
      if (domain === null) continue;
      if (secure && u.protocol !== 'https:') continue; // only secure origins may set Secure cookies
      this.cookies = this.cookies.filter((c) => !(c.name === name && c.domain === domain && c.path === path));
      if (expires > Date.now()) this.cookies.push({ name, value, domain, hostOnly, path, secure, expires });
    }
  }

  /** The Cookie header value for a request to `url` (longest paths first), or ''. */
  header(url) {
    const u = new URL(url);
    const host = u.hostname.toLowerCase();
    const now = Date.now();
    this.cookies = this.cookies.filter((c) => c.expires > now);
    return this.cookies
      .filter((c) => (c.hostOnly ? c.domain === host : domainMatch(host, c.domain)))
      .filter((c) => pathMatch(u.pathname || '/', c.path))
      .filter((c) => !c.secure || u.protocol === 'https:')
      .sort((a, b) => b.path.length - a.path.length)
      .map((c) => `${c.name}=${c.value}`)
      .join('; ');
  }

  /** Names of the cookies held, for logs. */
  names() {
    return this.cookies.map((c) => `${c.name}@${c.domain}${c.path}`);
  }
}

function defaultPath(p) {
  if (!p || !p.startsWith('/')) return '/';
  const i = p.lastIndexOf('/');
  return i <= 0 ? '/' : p.slice(0, i);
}

function domainMatch(host, domain) {
  if (host === domain) return true;
  // An IP address only matches itself.
  if (/^[\d.]+$/.test(host) || host.includes(':')) return false;
  return host.endsWith(`.${domain}`);
}

function pathMatch(reqPath, cookiePath) {
  if (reqPath === cookiePath) return true;
  if (!reqPath.startsWith(cookiePath)) return false;
  return cookiePath.endsWith('/') || reqPath[cookiePath.length] === '/';
}

export function decodeEntities(s) {
  const named = { amp: '&', lt: '<', gt: '>', quot: '"', apos: "'", nbsp: '\u00a0' };
  return s.replace(/&(#x[0-9a-f]+|#\d+|[a-z]+);/gi, (m, e) => {
    if (e[0] === '#') {
      const n = e[1] === 'x' || e[1] === 'X' ? parseInt(e.slice(2), 16) : parseInt(e.slice(1), 10);
      return Number.isFinite(n) ? String.fromCodePoint(n) : m;
    }
    return named[e.toLowerCase()] ?? m;
  });
}

function attrs(tag) {
  const out = {};
  const body = tag.replace(/^<\s*[a-z0-9]+/i, '').replace(/\/?>$/, '');
  for (const m of body.matchAll(/([^\s=\/>]+)(?:\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s>]+)))?/g)) {
    out[m[1].toLowerCase()] = decodeEntities(m[2] ?? m[3] ?? m[4] ?? '');
  }
  return out;
}

/**
 * Every <form> of a page: {action, method, inputs, buttons}. `inputs` are {name,type,value,checked};
 * `buttons` are the submit controls {name,value,label}.
 */
export function parseForms(html, pageUrl) {
  const forms = [];
  for (const fm of html.matchAll(/<form\b([^>]*)>([\s\S]*?)<\/form\s*>/gi)) {
    const a = attrs(`<form ${fm[1]}>`);
    const action = new URL(a.action ? a.action : pageUrl, pageUrl).toString();
    const method = (a.method || 'get').toUpperCase();
    const inputs = [];
    const buttons = [];
    const controls = /<button\b([^>]*)>([\s\S]*?)<\/button\s*>|<input\b([^>]*)>|<textarea\b([^>]*)>([\s\S]*?)<\/textarea\s*>|<select\b([^>]*)>([\s\S]*?)<\/select\s*>/gi;
    for (const m of fm[2].matchAll(controls)) {
      if (m[1] !== undefined) {
        const b = attrs(`<button ${m[1]}>`);
        const type = (b.type || 'submit').toLowerCase();
        if (type === 'submit') buttons.push({ name: b.name, value: b.value ?? '', label: decodeEntities(m[2].replace(/<[^>]*>/g, '')).trim() });
      } else if (m[3] !== undefined) {
        const i = attrs(`<input ${m[3]}>`);
        const type = (i.type || 'text').toLowerCase();
        if (type === 'submit' || type === 'image') buttons.push({ name: i.name, value: i.value ?? '', label: i.value ?? '' });
        else if (i.name && !['button', 'reset', 'file'].includes(type) && !('disabled' in i)) {
          inputs.push({ name: i.name, type, value: i.value ?? '', checked: 'checked' in i });
        }
      } else if (m[4] !== undefined) {
        const t = attrs(`<textarea ${m[4]}>`);
        if (t.name) inputs.push({ name: t.name, type: 'textarea', value: decodeEntities(m[5]), checked: false });
      } else {
        const s = attrs(`<select ${m[6]}>`);
        const opts = [...m[7].matchAll(/<option\b([^>]*)>([\s\S]*?)(?=<option\b|$)/gi)].map((o) => {
          const oa = attrs(`<option ${o[1]}>`);
          return { value: oa.value ?? decodeEntities(o[2].replace(/<[^>]*>/g, '')).trim(), selected: 'selected' in oa };
        });
        const chosen = opts.find((o) => o.selected) || opts[0];
        if (s.name && chosen) inputs.push({ name: s.name, type: 'select', value: chosen.value, checked: false });
      }
    }
    forms.push({ action, method, inputs, buttons });
  }
  return forms;
}

/** Fill a form as a consenting user would; returns {action, method, body: URLSearchParams}. */
export function fillForm(form, { login, password }) {
  const body = new URLSearchParams();
  for (const i of form.inputs) {
    if (i.type === 'checkbox' || i.type === 'radio') {
      if (i.checked) body.append(i.name, i.value || 'on');
    } else if (i.type === 'password') {
      body.append(i.name, password);
    } else if (i.type !== 'hidden' && USER_FIELDS.test(i.name)) {
      body.append(i.name, login);
    } else {
      body.append(i.name, i.value);
    }
  }
  // Like a browser, only the clicked submit button is sent: the approving one, never a refusal.
  const text = (b) => `${b.name ?? ''} ${b.value} ${b.label}`;
  const button = form.buttons.find((b) => APPROVE.test(text(b)) && !REFUSE.test(`${b.value} ${b.label}`))
    || form.buttons.find((b) => !REFUSE.test(text(b)));
  if (form.buttons.length && !button) throw new Error(`form ${form.action}: no approving submit button among ${JSON.stringify(form.buttons)}`);
  if (button?.name) body.append(button.name, button.value);
  return { action: form.action, method: form.method, body };
}

/** The form a person would submit on this page: a POST form with fields or buttons, else the first. */
function pickForm(forms) {
  return forms.find((f) => f.method === 'POST' && (f.inputs.length || f.buttons.length)) || forms[0];
}

/**
 * Walk an authorization URL to the client's redirect URI.
 * @param {string|URL} authorizeUrl
 * @param {object} opts
 * @param {string|((u:string)=>boolean)} opts.stopPrefix  the client's redirect URI (prefix) or a predicate
 * @param {string} [opts.login]     user for login forms (default env LOGIN_USER or ann@example.test)
 * @param {string} [opts.password]  default env LOGIN_PASSWORD or 'secret'
 * @param {CookieJar} [opts.jar]    reuse to keep sessions (a second login is then silent)
 * @param {number} [opts.maxSteps=30]
 * @param {(hop:{method:string,url:string,status:number,location?:string,form?:string})=>void} [opts.onHop]
 * @returns {Promise<string>} the redirect URL (with code/state/iss, or error), not fetched
 */
export async function walk(authorizeUrl, opts = {}) {
  const login = opts.login ?? process.env.LOGIN_USER ?? 'ann@example.test';
  const password = opts.password ?? process.env.LOGIN_PASSWORD ?? 'secret';
  const jar = opts.jar ?? new CookieJar();
  const maxSteps = opts.maxSteps ?? 30;
  const onHop = opts.onHop ?? (() => {});
  if (!opts.stopPrefix) throw new Error('walk: stopPrefix is required');
  const stop = typeof opts.stopPrefix === 'function' ? opts.stopPrefix : (u) => u.startsWith(String(opts.stopPrefix));

  let req = { method: 'GET', url: String(authorizeUrl), body: undefined, origin: undefined };
  for (let step = 0; step < maxSteps; step++) {
    if (stop(req.url)) return req.url;
    const headers = {
      accept: 'text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8',
      'user-agent': 'authgate-e2e-browser/1 (scripted)',
    };
    const cookie = jar.header(req.url);
    if (cookie) headers.cookie = cookie;
    if (req.body !== undefined) headers['content-type'] = 'application/x-www-form-urlencoded';
    if (req.origin) headers.origin = req.origin;
    const res = await fetch(req.url, { method: req.method, headers, body: req.body, redirect: 'manual' });
    jar.store(req.url, res.headers.getSetCookie());
    const location = res.headers.get('location');
    if (res.status >= 300 && res.status < 400 && location) {
      await res.arrayBuffer().catch(() => {});
      const next = new URL(location, req.url).toString();
      onHop({ method: req.method, url: req.url, status: res.status, location: next });
      // 307/308 repeat the request; the others become a GET without a body (fetch spec).
      req = res.status === 307 || res.status === 308
        ? { ...req, url: next }
        : { method: 'GET', url: next, body: undefined, origin: undefined };
      continue;
    }
    const text = await res.text();
    if (res.status !== 200) {
      onHop({ method: req.method, url: req.url, status: res.status });
      throw new Error(`${req.method} ${req.url} answered ${res.status}: ${snippet(text)}`);
    }
    const forms = parseForms(text, req.url);
    if (!forms.length) {
      onHop({ method: req.method, url: req.url, status: res.status });
      throw new Error(`${req.method} ${req.url}: a page without a form and without a redirect: ${snippet(text)}`);
    }
    const filled = fillForm(pickForm(forms), { login, password });
    onHop({ method: req.method, url: req.url, status: res.status, form: `${filled.method} ${filled.action} {${[...filled.body.keys()].join(',')}}` });
    const pageOrigin = new URL(req.url).origin;
    if (filled.method === 'POST') {
      req = { method: 'POST', url: filled.action, body: filled.body.toString(), origin: pageOrigin };
    } else {
      const u = new URL(filled.action);
      u.search = filled.body.toString();
      req = { method: 'GET', url: u.toString(), body: undefined, origin: undefined };
    }
  }
  throw new Error(`walk: no redirect to the client after ${maxSteps} steps`);
}

function snippet(html) {
  return html.replace(/<style[\s\S]*?<\/style>/gi, '').replace(/<[^>]*>/g, ' ').replace(/\s+/g, ' ').trim().slice(0, 400);
}

/** One line per hop, for logs. */
export function describeHop(h) {
  return `${h.method} ${h.url} -> ${h.status}${h.location ? ` -> ${h.location}` : ''}${h.form ? ` [form ${h.form}]` : ''}`;
}

const invokedDirectly = process.argv[1] && import.meta.url === pathToFileURL(realpathSync(process.argv[1])).href;
if (invokedDirectly) {
  // CLI. With a stopPrefix: print the redirect URL. Without one (the way tools that open a
  // browser call it, e.g. BROWSER=/abs/path/browser.mjs for mcp-remote): stop at the request's own
  // redirect_uri, then deliver the redirect to it with a GET, as a browser would.
  const [authorizeUrl, stopArg] = process.argv.slice(2);
  if (!authorizeUrl) {
    console.error('usage: node browser.mjs <authorizeUrl> [stopPrefix]');
    process.exit(2);
  }
  const log = process.env.BROWSER_LOG ? (await import('node:fs')).createWriteStream(process.env.BROWSER_LOG, { flags: 'a' }) : null;
  const say = (s) => { console.error(`[browser] ${s}`); log?.write(`${s}\n`); };
  try {
    const stopPrefix = stopArg || new URL(authorizeUrl).searchParams.get('redirect_uri');
    if (!stopPrefix) throw new Error('no stopPrefix given and no redirect_uri in the URL');
    const url = await walk(authorizeUrl, { stopPrefix, onHop: (h) => say(describeHop(h)) });
    if (stopArg) {
      console.log(url);
    } else {
      const res = await fetch(url, { redirect: 'manual' });
      say(`GET ${url} -> ${res.status} (delivered)`);
      await res.arrayBuffer().catch(() => {});
    }
  } catch (e) {
    say(`failed: ${e.message}`);
    process.exit(1);
  }
}
