// authgate end-to-end tests: the upstream OpenID provider (Auth0's stand-in), on loopback.
//
// A real, certified OP (oidc-provider 9.13.3) with ONE static confidential client and its own
// minimal HTML interaction pages (login form, consent form; no JavaScript). See README.md for the
// environment variables and the exact request sequence a scripted browser must follow.
//
// stdout carries exactly one line, `IDP READY <issuer>`, once the server listens; every other
// message (oidc-provider notices/warnings, IDP_DEBUG request log, errors) goes to stderr.
import crypto from 'node:crypto';
import http from 'node:http';

import Provider, { errors } from 'oidc-provider';

// Keep stdout clean for the READY line: oidc-provider prints its NOTICEs with console.info.
console.log = console.error;
console.info = console.error;

function fail(message) {
  process.stderr.write(`idp: ${message}\n`);
  process.exit(2);
}

// ---------------------------------------------------------------------------------------------
// Configuration (environment only)
// ---------------------------------------------------------------------------------------------
const env = process.env;

let issuer = env.IDP_ISSUER || '';
let port;
if (env.IDP_PORT !== undefined && env.IDP_PORT !== '') {
  port = Number(env.IDP_PORT);
  if (!Number.isInteger(port) || port < 0 || port > 65535) fail(`IDP_PORT is not a port number: ${env.IDP_PORT}`);
} else if (issuer) {
  const u = new URL(issuer);
  port = Number(u.port || (u.protocol === 'https:' ? 443 : 80));
} else {
  port = 4444;
}
if (issuer) {
  let u;
  try { u = new URL(issuer); } catch { fail(`IDP_ISSUER is not a URL: ${issuer}`); }
  if (u.pathname !== '/' || u.search || u.hash) fail(`IDP_ISSUER must be an origin without path, query or fragment: ${issuer}`);
  if (port === 0) fail('IDP_PORT=0 (ephemeral port) cannot be combined with an explicit IDP_ISSUER');
}

const clientId = env.IDP_CLIENT_ID || 'authgate';
const clientSecret = env.IDP_CLIENT_SECRET || 'authgate-secret';
const redirectUris = (env.IDP_REDIRECT_URIS || '').split(',').map((s) => s.trim()).filter(Boolean);
if (redirectUris.length === 0) fail('IDP_REDIRECT_URIS is required (comma-separated redirect URIs of the static client)');
const authMethod = env.IDP_CLIENT_AUTH_METHOD || 'client_secret_post';
if (!['client_secret_post', 'client_secret_basic'].includes(authMethod)) {
  fail(`IDP_CLIENT_AUTH_METHOD must be client_secret_post or client_secret_basic, not ${authMethod}`);
}
const skipConsent = env.IDP_SKIP_CONSENT === '1';
// Refresh tokens for the static client (with offline_access, which oidc-provider grants only
// with prompt=consent, as Google does with access_type=offline&prompt=consent), rotated on every use.
const refreshTokens = env.IDP_REFRESH_TOKENS === '1';
let accessTokenTtl = 3600;
if (env.IDP_ACCESS_TOKEN_TTL) {
  accessTokenTtl = Number(env.IDP_ACCESS_TOKEN_TTL);
  if (!Number.isInteger(accessTokenTtl) || accessTokenTtl < 1) fail(`IDP_ACCESS_TOKEN_TTL is not a number of seconds: ${env.IDP_ACCESS_TOKEN_TTL}`);
}
const requirePkce = env.IDP_REQUIRE_PKCE === '1';
const debug = env.IDP_DEBUG === '1';

// ---------------------------------------------------------------------------------------------
// Users: any login, any password. sub = login.
// ---------------------------------------------------------------------------------------------
function claimsFor(login) {
  return {
    sub: login,
    email: login.includes('@') ? login : `${login}@example.test`,
    email_verified: !login.startsWith('unverified'),
    name: login,
  };
}

// ---------------------------------------------------------------------------------------------
// Signing key: a fresh RSA key per process (RS256, Auth0's default id_token alg), kid = RFC 7638
// thumbprint. Public part served at the jwks_uri by oidc-provider.
// ---------------------------------------------------------------------------------------------
function freshSigningJwk() {
  const { privateKey } = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
  const jwk = privateKey.export({ format: 'jwk' });
  const canonical = JSON.stringify({ e: jwk.e, kty: jwk.kty, n: jwk.n });
  const kid = crypto.createHash('sha256').update(canonical).digest('base64url');
  return { ...jwk, kid, alg: 'RS256', use: 'sig' };
}

// ---------------------------------------------------------------------------------------------
// Small helpers for the interaction pages
// ---------------------------------------------------------------------------------------------
const escapeHtml = (s) => String(s).replace(/[&<>"']/g, (c) => ({
  '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;',
}[c]));

function page(title, body) {
  return `<!DOCTYPE html>
<html lang="en">
<head><meta charset="utf-8"><title>${escapeHtml(title)}</title></head>
<body>
<h1>${escapeHtml(title)}</h1>
${body}
</body>
</html>
`;
}

async function readForm(req, limit = 64 * 1024) {
  const chunks = [];
  let size = 0;
  for await (const chunk of req) {
    size += chunk.length;
    if (size > limit) throw Object.assign(new Error('request body too large'), { status: 413 });
    chunks.push(chunk);
  }
  return new URLSearchParams(Buffer.concat(chunks).toString('utf8'));
}

// ---------------------------------------------------------------------------------------------
// oidc-provider configuration
// ---------------------------------------------------------------------------------------------
function buildConfiguration() {
  const configuration = {
    clients: [{
      client_id: clientId,
      client_secret: clientSecret,
      redirect_uris: redirectUris,
      grant_types: refreshTokens ? ['authorization_code', 'refresh_token'] : ['authorization_code'],
      response_types: ['code'],
      // Enforced: a client registered for one method is rejected (401 invalid_client) with the other.
      token_endpoint_auth_method: authMethod,
    }],
    clientAuthMethods: ['client_secret_basic', 'client_secret_post'],
    responseTypes: ['code'],
    claims: {
      openid: ['sub'],
      email: ['email', 'email_verified'],
      profile: ['name'],
    },
    // Like Auth0: the scope-requested claims (email, email_verified, name) go into the id_token itself.
    conformIdTokenClaims: false,
    // Accepted on /auth without error (and ignored). Any other unknown parameter is silently dropped too.
    extraParams: ['connection', 'audience'],
    // PKCE: S256 is the only method oidc-provider 9 supports; optional for this confidential client
    // unless IDP_REQUIRE_PKCE=1. A code issued with a code_challenge always needs the verifier.
    pkce: { required: (_ctx, client) => requirePkce || client.clientAuthMethod === 'none' },
    async findAccount(_ctx, accountId) {
      return { accountId, claims: async () => claimsFor(accountId) };
    },
    jwks: { keys: [freshSigningJwk()] },
    cookies: {
      // Browsers (and reqwest's cookie store) do not separate cookies by port: on 127.0.0.1 these share a
      // jar with authgate's own cookies, hence names that authgate will not use. Each has a `.sig` twin.
      names: { session: 'idp_session', interaction: 'idp_interaction', resume: 'idp_interaction_resume' },
      keys: ['authgate-e2e-idp-loopback-only'],
    },
    features: {
      devInteractions: { enabled: false },
      resourceIndicators: {
        enabled: true,
        // No resource server is known: an RFC 8707 `resource` on /auth yields error=invalid_target.
        getResourceServerInfo: async () => { throw new errors.InvalidTarget(); },
      },
    },
    interactions: {
      url: (_ctx, interaction) => `/interaction/${interaction.uid}`,
    },
    ttl: { AuthorizationCode: 60, AccessToken: accessTokenTtl, IdToken: 3600, Interaction: 3600, Session: 3600, Grant: 3600 },
  };
  if (env.IDP_ACCESS_TOKEN_TTL) {
    // oidc-provider accepts tokens up to 15 s past their expiry by default: a test that waits
    // for expiry wants it exact.
    configuration.clockTolerance = 0;
  }
  if (refreshTokens) {
    // Every use returns a new refresh token and retires the old one; reusing a retired one is
    // refused (invalid_grant) and revokes the grant, as strict providers do.
    configuration.rotateRefreshToken = true;
  }

  if (skipConsent) {
    // Auth0 first-party-app behaviour: the requested OIDC scopes/claims are granted without asking.
    configuration.loadExistingGrant = async (ctx) => {
      const { oidc } = ctx;
      const grantId = oidc.result?.consent?.grantId || oidc.session.grantIdFor(oidc.client.clientId);
      let grant = grantId ? await oidc.provider.Grant.find(grantId) : undefined;
      if (!grant) {
        grant = new oidc.provider.Grant({ clientId: oidc.client.clientId, accountId: oidc.account.accountId });
      }
      const scopes = [...oidc.requestParamOIDCScopes];
      if (scopes.length) grant.addOIDCScope(scopes.join(' '));
      const claims = [...oidc.requestParamClaims];
      if (claims.length) grant.addOIDCClaims(claims);
      await grant.save();
      return grant;
    };
  }
  return configuration;
}

// ---------------------------------------------------------------------------------------------
// Middleware: test endpoints, request recording, interaction pages
// ---------------------------------------------------------------------------------------------
let lastAuthorize = null;
// Test controls for refresh tokens: refresh requests counted, a delay on every token request,
// and the grants of each account (to revoke them as a user would at the provider).
const counters = { refresh: 0, refresh_ok: 0 };
let tokenDelayMs = 0;
const grantsByAccount = new Map();

function install(provider) {
  provider.on('grant.saved', (grant) => {
    const ids = grantsByAccount.get(grant.accountId) ?? new Set();
    ids.add(grant.jti);
    grantsByAccount.set(grant.accountId, ids);
  });

  provider.use(async (ctx, next) => {
    if (ctx.path === '/test/counters' && ctx.method === 'GET') {
      ctx.set('cache-control', 'no-store');
      ctx.body = counters;
      return;
    }
    if (ctx.path === '/test/token-delay' && ctx.method === 'POST') {
      const ms = Number(ctx.query.ms ?? 0);
      tokenDelayMs = Number.isInteger(ms) && ms >= 0 ? Math.min(ms, 30000) : 0;
      ctx.status = 204;
      return;
    }
    if (ctx.path === '/test/revoke-grants' && ctx.method === 'POST') {
      const ids = grantsByAccount.get(String(ctx.query.account ?? '')) ?? new Set();
      let revoked = 0;
      for (const id of ids) {
        const grant = await provider.Grant.find(id);
        if (grant) {
          await grant.destroy();
          revoked += 1;
        }
      }
      ids.clear();
      ctx.body = { revoked };
      return;
    }
    if (ctx.method === 'POST' && ctx.path === '/token' && tokenDelayMs > 0) {
      await new Promise((r) => setTimeout(r, tokenDelayMs));
    }
    await next();
    if (ctx.method === 'POST' && ctx.path === '/token' && ctx.oidc?.params?.grant_type === 'refresh_token') {
      counters.refresh += 1;
      if (ctx.status === 200) counters.refresh_ok += 1;
    }
  });

  if (debug) {
    provider.use(async (ctx, next) => {
      await next();
      process.stderr.write(`[idp] ${ctx.method} ${ctx.url} -> ${ctx.status}${ctx.status >= 300 && ctx.status < 400 ? ` ${ctx.response.get('location')}` : ''}\n`);
    });
  }

  // Record every authorization request (GET /auth; not the /auth/<uid> resume hops).
  provider.use(async (ctx, next) => {
    if (ctx.method === 'GET' && ctx.path === '/auth') {
      lastAuthorize = { ...ctx.query };
    }
    if (ctx.path === '/test/last-authorize') {
      ctx.set('cache-control', 'no-store');
      if (ctx.method === 'GET') {
        if (lastAuthorize) {
          ctx.body = lastAuthorize;
        } else {
          ctx.status = 404;
          ctx.body = { error: 'no authorization request received yet' };
        }
        return;
      }
      if (ctx.method === 'DELETE') {
        lastAuthorize = null;
        ctx.status = 204;
        return;
      }
      ctx.status = 405;
      return;
    }
    await next();
  });

  // Enforce the client's ONE registered auth method, like Auth0. oidc-provider 9 itself accepts
  // client_secret_basic and client_secret_post interchangeably for a client registered with either.
  // Both at once is already refused by oidc-provider (400 invalid_request), so headers suffice:
  //   registered client_secret_post  -> an Authorization header is refused
  //   registered client_secret_basic -> a request without `Authorization: Basic ...` is refused
  const clientAuthPaths = new Set(['/token', '/token/introspection', '/token/revocation', '/request']);
  provider.use(async (ctx, next) => {
    if (ctx.method === 'POST' && clientAuthPaths.has(ctx.path)) {
      const authz = ctx.get('authorization');
      const basic = /^basic\s/i.test(authz);
      const wrong = authMethod === 'client_secret_post' ? authz !== '' : !basic;
      if (wrong) {
        ctx.status = 401;
        ctx.set('cache-control', 'no-store');
        if (authMethod === 'client_secret_basic') ctx.set('www-authenticate', `Basic realm="${issuer}"`);
        ctx.body = {
          error: 'invalid_client',
          error_description: `client authentication failed: this client must use ${authMethod}`,
        };
        return;
      }
    }
    await next();
  });

  // Interaction pages:
  //   GET  /interaction/<uid>          login form or consent form (whichever prompt is pending)
  //   POST /interaction/<uid>/login    fields: login, password
  //   POST /interaction/<uid>/confirm  no fields
  //   GET  /interaction/<uid>/abort    end the interaction with error=access_denied
  provider.use(async (ctx, next) => {
    const m = /^\/interaction\/([A-Za-z0-9_-]+)(?:\/(login|confirm|abort))?$/.exec(ctx.path);
    if (!m) return next();
    const [, uid, action = 'show'] = m;
    const allowed = { show: 'GET', login: 'POST', confirm: 'POST', abort: 'GET' }[action];
    if (ctx.method !== allowed) {
      ctx.status = 405;
      ctx.set('allow', allowed);
      return undefined;
    }
    ctx.set('cache-control', 'no-store');

    let details;
    try {
      details = await provider.interactionDetails(ctx.req, ctx.res);
    } catch (err) {
      ctx.status = 400;
      ctx.type = 'html';
      ctx.body = page('Error', `<p>${escapeHtml(err.error_description || err.message)}</p>`);
      return undefined;
    }
    if (details.uid !== uid) {
      ctx.status = 400;
      ctx.type = 'html';
      ctx.body = page('Error', '<p>interaction cookie does not belong to this interaction</p>');
      return undefined;
    }
    const prompt = details.prompt.name;
    if (debug) process.stderr.write(`[idp] interaction ${uid} prompt=${prompt} reasons=${details.prompt.reasons.join(',')} details=${JSON.stringify(details.prompt.details)}\n`);

    const finish = async (result, mergeWithLastSubmission) => {
      const location = await provider.interactionResult(ctx.req, ctx.res, result, { mergeWithLastSubmission });
      ctx.status = 303;
      ctx.redirect(location);
    };

    if (action === 'show') {
      ctx.type = 'html';
      if (prompt === 'login') {
        const hint = details.params.login_hint ? ` value="${escapeHtml(details.params.login_hint)}"` : '';
        ctx.body = page('Sign in', `<form method="post" action="/interaction/${uid}/login">
<label>Login <input type="text" name="login"${hint} required autofocus></label>
<label>Password <input type="password" name="password"></label>
<button type="submit">Sign in</button>
</form>
<p><a href="/interaction/${uid}/abort">Cancel</a></p>`);
      } else if (prompt === 'consent') {
        const client = await provider.Client.find(details.params.client_id);
        ctx.body = page('Authorize', `<p>${escapeHtml(client?.clientName || details.params.client_id)} asks for: ${escapeHtml(details.params.scope || '')}</p>
<form method="post" action="/interaction/${uid}/confirm">
<button type="submit">Allow</button>
</form>
<p><a href="/interaction/${uid}/abort">Deny</a></p>`);
      } else {
        ctx.status = 501;
        ctx.body = page('Error', `<p>unsupported prompt ${escapeHtml(prompt)}</p>`);
      }
      return undefined;
    }

    if (action === 'abort') {
      await finish({ error: 'access_denied', error_description: 'End-User aborted interaction' }, false);
      return undefined;
    }

    const form = await readForm(ctx.req);
    if (action === 'login') {
      const login = (form.get('login') || '').trim();
      if (prompt !== 'login' || !login) {
        ctx.status = 400;
        ctx.type = 'html';
        ctx.body = page('Error', prompt !== 'login' ? '<p>no login pending</p>' : '<p>login is required</p>');
        return undefined;
      }
      await finish({ login: { accountId: login } }, false);
      return undefined;
    }

    // action === 'confirm'
    if (prompt !== 'consent') {
      ctx.status = 400;
      ctx.type = 'html';
      ctx.body = page('Error', '<p>no consent pending</p>');
      return undefined;
    }
    const d = details.prompt.details;
    const grant = details.grantId
      ? await provider.Grant.find(details.grantId)
      : new provider.Grant({ accountId: details.session.accountId, clientId: details.params.client_id });
    if (d.missingOIDCScope) grant.addOIDCScope(d.missingOIDCScope.join(' '));
    if (d.missingOIDCClaims) grant.addOIDCClaims(d.missingOIDCClaims);
    if (d.missingResourceScopes) {
      for (const [indicator, scopes] of Object.entries(d.missingResourceScopes)) {
        grant.addResourceScope(indicator, scopes.join(' '));
      }
    }
    const grantId = await grant.save();
    await finish({ consent: { grantId } }, true);
    return undefined;
  });

  provider.on('server_error', (_ctx, err) => process.stderr.write(`[idp] server_error ${err?.stack || err}\n`));
}

// ---------------------------------------------------------------------------------------------
// Start: bind first (so IDP_PORT=0 can pick a free port), then build the provider for the issuer.
// ---------------------------------------------------------------------------------------------
const server = http.createServer();
server.on('error', (err) => fail(`cannot listen on 127.0.0.1:${port}: ${err.message}`));
server.listen(port, '127.0.0.1', () => {
  const bound = server.address().port;
  if (!issuer) issuer = `http://127.0.0.1:${bound}`;
  const provider = new Provider(issuer, buildConfiguration());
  provider.proxy = false;
  install(provider);
  server.on('request', provider.callback());
  process.stdout.write(`IDP READY ${issuer}\n`);
  if (debug) {
    process.stderr.write(`[idp] client_id=${clientId} auth=${authMethod} redirect_uris=${redirectUris.join(',')} skip_consent=${skipConsent} require_pkce=${requirePkce}\n`);
  }
});

let stopping = false;
function stop(signal) {
  if (stopping) return;
  stopping = true;
  if (debug) process.stderr.write(`[idp] ${signal}, shutting down\n`);
  server.close(() => process.exit(0));
  server.closeAllConnections();
  setTimeout(() => process.exit(0), 2000).unref();
}
process.on('SIGTERM', () => stop('SIGTERM'));
process.on('SIGINT', () => stop('SIGINT'));
