// Smoke check of a RUNNING idp.mjs, as its static client, with a scripted browser (no dependencies).
//
//   node smoke.mjs [ISSUER] [REDIRECT_URI]
//
// ISSUER       default $IDP_ISSUER, else http://127.0.0.1:${IDP_PORT:-4444}
// REDIRECT_URI default $IDP_REDIRECT_URI, else the first of $IDP_REDIRECT_URIS
// Also read: IDP_CLIENT_ID, IDP_CLIENT_SECRET, IDP_CLIENT_AUTH_METHOD (same defaults as idp.mjs),
// SMOKE_VERBOSE=1 (print every hop).
//
// What it does: authorization code flow with PKCE S256 + state + nonce + connection=google-oauth2,
// following redirects by hand with a path-aware cookie jar, submitting the login form (and the consent
// form when one is shown), up to the redirect URI (never fetched); then the code exchange with the
// configured client auth method, id_token iss/aud/nonce/email checks, GET /test/last-authorize.
// Then: the other auth method is refused; a second authorization with the same cookies is silent;
// an `unverified...` login gets email_verified=false; `resource=` gets error=invalid_target.
// Prints `IDP SMOKE OK` and exits 0, or the failure and exits 1.
import crypto from 'node:crypto';

const env = process.env;
const issuer = (process.argv[2] || env.IDP_ISSUER || `http://127.0.0.1:${env.IDP_PORT || 4444}`);
const redirectUri = process.argv[3] || env.IDP_REDIRECT_URI || (env.IDP_REDIRECT_URIS || '').split(',')[0].trim();
const clientId = env.IDP_CLIENT_ID || 'authgate';
const clientSecret = env.IDP_CLIENT_SECRET || 'authgate-secret';
const authMethod = env.IDP_CLIENT_AUTH_METHOD || 'client_secret_post';
const skipConsent = env.IDP_SKIP_CONSENT === '1'; // what the running IdP was started with
const verbose = env.SMOKE_VERBOSE === '1';

const say = (s) => process.stdout.write(`${s}\n`);
const hop = (s) => { if (verbose) say(`  ${s}`); };
function check(cond, what) {
  if (!cond) throw new Error(`check failed: ${what}`);
}
const b64url = (buf) => Buffer.from(buf).toString('base64url');
const random = () => b64url(crypto.randomBytes(24));

// --- a tiny cookie jar: host-only cookies, Path matching as in RFC 6265 5.1.4 ----------------------
class Jar {
  constructor() { this.list = []; }

  take(url, setCookies) {
    const { hostname, pathname } = new URL(url);
    for (const line of setCookies) {
      const [pair, ...attrs] = line.split(';');
      const eq = pair.indexOf('=');
      const name = pair.slice(0, eq).trim();
      const value = pair.slice(eq + 1).trim();
      // default-path: the request path up to its last '/'
      let path = pathname.lastIndexOf('/') > 0 ? pathname.slice(0, pathname.lastIndexOf('/')) : '/';
      let gone = false;
      for (const a of attrs) {
        const i = a.indexOf('=');
        const k = (i < 0 ? a : a.slice(0, i)).trim().toLowerCase();
        const v = i < 0 ? '' : a.slice(i + 1).trim();
        if (k === 'path' && v.startsWith('/')) path = v;
        if (k === 'max-age' && Number(v) <= 0) gone = true;
        if (k === 'expires' && Date.parse(v) <= Date.now()) gone = true;
      }
      this.list = this.list.filter((c) => !(c.host === hostname && c.name === name && c.path === path));
      if (!gone) this.list.push({ host: hostname, name, value, path });
      hop(`    set-cookie ${name} path=${path}${gone ? ' (deleted)' : ''}`);
    }
  }

  header(url) {
    const { hostname, pathname } = new URL(url);
    const match = (p) => pathname === p || (pathname.startsWith(p) && (p.endsWith('/') || pathname[p.length] === '/'));
    return this.list.filter((c) => c.host === hostname && match(c.path)).map((c) => `${c.name}=${c.value}`).join('; ');
  }
}

// --- the scripted browser --------------------------------------------------------------------------
function parseFirstForm(html, pageUrl) {
  const m = /<form\b([^>]*)>([\s\S]*?)<\/form>/i.exec(html);
  if (!m) return null;
  const attr = (tag, name) => {
    const a = new RegExp(`\\b${name}\\s*=\\s*"([^"]*)"`, 'i').exec(tag);
    return a ? a[1].replace(/&amp;/g, '&').replace(/&quot;/g, '"').replace(/&#39;/g, "'").replace(/&lt;/g, '<').replace(/&gt;/g, '>') : undefined;
  };
  const fields = [];
  for (const input of m[2].matchAll(/<input\b[^>]*>/gi)) {
    const name = attr(input[0], 'name');
    if (name) fields.push({ name, type: (attr(input[0], 'type') || 'text').toLowerCase(), value: attr(input[0], 'value') || '' });
  }
  return {
    action: new URL(attr(m[1], 'action') || pageUrl, pageUrl).toString(),
    method: (attr(m[1], 'method') || 'get').toUpperCase(),
    fields,
  };
}

// Walks from `url` until a redirect points at the redirect URI; returns that URL and what was seen.
async function walk(url, jar, login, password = 'whatever') {
  const seen = { login: 0, consent: 0 };
  let req = { method: 'GET', url };
  for (let i = 0; i < 15; i += 1) {
    if (req.url.startsWith(redirectUri)) return { final: new URL(req.url), seen };
    const headers = {};
    const cookie = jar.header(req.url);
    if (cookie) headers.cookie = cookie;
    if (req.body !== undefined) headers['content-type'] = 'application/x-www-form-urlencoded';
    const res = await fetch(req.url, { method: req.method, headers, body: req.body, redirect: 'manual' });
    hop(`${req.method} ${req.url}${req.body !== undefined ? ` [${req.body}]` : ''}${cookie ? ` (cookie: ${cookie.split('; ').map((c) => c.split('=')[0]).join(', ')})` : ''} -> ${res.status}${res.headers.get('location') ? ` ${res.headers.get('location')}` : ''}`);
    jar.take(req.url, res.headers.getSetCookie());
    if (res.status >= 300 && res.status < 400) {
      await res.arrayBuffer();
      req = { method: 'GET', url: new URL(res.headers.get('location'), req.url).toString() };
      continue;
    }
    const html = await res.text();
    if (res.status !== 200) throw new Error(`HTTP ${res.status} at ${req.url}: ${html.slice(0, 300)}`);
    const form = parseFirstForm(html, req.url);
    if (!form || form.method !== 'POST') throw new Error(`no POST form at ${req.url}: ${html.slice(0, 300)}`);
    const body = new URLSearchParams();
    const names = form.fields.map((f) => f.name);
    if (names.includes('login')) {
      seen.login += 1;
      check(names.includes('password'), 'login form has a password field');
      for (const f of form.fields) body.set(f.name, f.name === 'login' ? login : f.name === 'password' ? password : f.value);
    } else {
      seen.consent += 1;
      for (const f of form.fields) body.set(f.name, f.value);
    }
    req = { method: 'POST', url: form.action, body: body.toString() };
  }
  throw new Error('too many hops');
}

function authorizeUrl(disco, extra = {}) {
  const verifier = b64url(crypto.randomBytes(32)); // 43 chars: the minimum RFC 7636 allows
  const p = {
    response_type: 'code',
    client_id: clientId,
    redirect_uri: redirectUri,
    scope: 'openid email profile',
    state: random(),
    nonce: random(),
    code_challenge: crypto.createHash('sha256').update(verifier).digest('base64url'),
    code_challenge_method: 'S256',
    connection: 'google-oauth2',
    ...extra,
  };
  const u = new URL(disco.authorization_endpoint);
  for (const [k, v] of Object.entries(p)) u.searchParams.set(k, v);
  return { url: u.toString(), verifier, state: p.state, nonce: p.nonce };
}

function tokenRequest(disco, code, verifier, method, secret = clientSecret) {
  const body = new URLSearchParams({ grant_type: 'authorization_code', code, redirect_uri: redirectUri, code_verifier: verifier });
  const headers = { 'content-type': 'application/x-www-form-urlencoded', accept: 'application/json' };
  if (method === 'client_secret_basic') {
    const enc = (s) => encodeURIComponent(s); // RFC 6749 2.3.1: form-urlencode, then base64
    headers.authorization = `Basic ${Buffer.from(`${enc(clientId)}:${enc(secret)}`).toString('base64')}`;
  } else {
    body.set('client_id', clientId);
    body.set('client_secret', secret);
  }
  return fetch(disco.token_endpoint, { method: 'POST', headers, body });
}

const decode = (jwt) => jwt.split('.').slice(0, 2).map((s) => JSON.parse(Buffer.from(s, 'base64url').toString('utf8')));

// One full login; returns the id_token claims.
// expectForms: the {login, consent} form counts expected; replay: also check the code is single-use
async function login(disco, jar, user, { expectForms, replay = false }) {
  const a = authorizeUrl(disco);
  const { final, seen } = await walk(a.url, jar, user);
  check(!final.searchParams.get('error'), `no error at the redirect URI (${final.search})`);
  check(final.searchParams.get('state') === a.state, 'state echoed');
  check(final.searchParams.get('iss') === disco.issuer, 'iss in the authorization response (RFC 9207)');
  const code = final.searchParams.get('code');
  check(code, 'code present');
  check(seen.login === expectForms.login, `login forms seen: ${seen.login}, expected ${expectForms.login}`);
  check(seen.consent === expectForms.consent, `consent forms seen: ${seen.consent}, expected ${expectForms.consent}`);

  const last = await (await fetch(new URL('/test/last-authorize', issuer))).json();
  check(last.connection === 'google-oauth2', '/test/last-authorize shows connection=google-oauth2');
  check(last.state === a.state, '/test/last-authorize is this request');
  check(!('resource' in last), '/test/last-authorize has no resource');

  if (user === 'alice') {
    const other = authMethod === 'client_secret_post' ? 'client_secret_basic' : 'client_secret_post';
    const bad = await tokenRequest(disco, code, a.verifier, other);
    const badBody = await bad.json();
    check(bad.status === 401 && badBody.error === 'invalid_client', `${other} refused (${bad.status} ${JSON.stringify(badBody)})`);
    const wrong = await tokenRequest(disco, code, a.verifier, authMethod, 'wrong-secret');
    check(wrong.status === 401, `wrong secret refused (${wrong.status})`);
    const noVerifier = await tokenRequest(disco, code, 'x'.repeat(43), authMethod);
    check(noVerifier.status === 400 && (await noVerifier.json()).error === 'invalid_grant', 'wrong code_verifier refused');
  }

  const res = await tokenRequest(disco, code, a.verifier, authMethod);
  const tok = await res.json();
  check(res.status === 200, `token endpoint 200 (${res.status} ${JSON.stringify(tok)})`);
  check(tok.id_token && tok.access_token && tok.token_type === 'Bearer', 'id_token, access_token, token_type Bearer');
  const [header, claims] = decode(tok.id_token);
  check(claims.iss === disco.issuer, `id_token iss ${claims.iss}`);
  check(claims.aud === clientId, `id_token aud ${claims.aud}`);
  check(claims.nonce === a.nonce, 'id_token nonce');
  check(claims.sub === user, `id_token sub ${claims.sub}`);
  check(claims.email === (user.includes('@') ? user : `${user}@example.test`), `id_token email ${claims.email}`);
  check(claims.email_verified === !user.startsWith('unverified'), `id_token email_verified ${claims.email_verified}`);
  check(claims.name === user, `id_token name ${claims.name}`);
  const jwks = await (await fetch(disco.jwks_uri)).json();
  check(jwks.keys.some((k) => k.kid === header.kid && !k.d), 'id_token kid is in jwks (public key only)');
  say(`  login ${user}: forms login=${seen.login} consent=${seen.consent}; id_token header ${JSON.stringify(header)} claims ${JSON.stringify(claims)}; token keys ${Object.keys(tok).join(',')}`);

  if (replay) {
    // NB: a replayed code also revokes its grant, so the next login of that browser shows consent again
    const again = await tokenRequest(disco, code, a.verifier, authMethod);
    check(again.status === 400 && (await again.json()).error === 'invalid_grant', `code is single-use (${again.status})`);
  }
  return claims;
}

async function main() {
  check(redirectUri, 'a redirect URI is given (argv[3], IDP_REDIRECT_URI or IDP_REDIRECT_URIS)');
  const disco = await (await fetch(new URL('/.well-known/openid-configuration', issuer))).json();
  check(disco.issuer === issuer, `discovery issuer ${disco.issuer} equals ${issuer}`);
  check(disco.code_challenge_methods_supported?.includes('S256'), 'S256 advertised');
  say(`issuer ${disco.issuer}, client ${clientId}, ${authMethod}, redirect ${redirectUri}`);

  // 1. fresh browser: login form, then consent form unless the IdP skips consent
  const jar = new Jar();
  await login(disco, jar, 'alice', { expectForms: { login: 1, consent: skipConsent ? 0 : 1 } });
  // 2. same browser again: session + grant exist, so no form at all
  await login(disco, jar, 'alice', { expectForms: { login: 0, consent: 0 } });
  // 3. a fresh browser, unverified user with an '@' login
  await login(disco, new Jar(), 'unverified-bob@corp.test', { expectForms: { login: 1, consent: skipConsent ? 0 : 1 }, replay: true });

  // 4. an RFC 8707 resource parameter is refused upstream
  const r = authorizeUrl(disco, { resource: 'http://127.0.0.1:1/mcp' });
  const res = await fetch(r.url, { redirect: 'manual' });
  const loc = new URL(res.headers.get('location') || 'about:blank', issuer);
  check(res.status === 303 && loc.toString().startsWith(redirectUri) && loc.searchParams.get('error') === 'invalid_target',
    `resource= gives error=invalid_target at the redirect URI (${res.status} ${loc})`);
  say('  resource= -> error=invalid_target');

  say('IDP SMOKE OK');
}

main().then(() => process.exit(0), (err) => {
  say(`IDP SMOKE FAILED: ${err.message}`);
  process.exit(1);
});
