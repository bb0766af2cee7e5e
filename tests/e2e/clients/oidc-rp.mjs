#!/usr/bin/env node
// A real OpenID Connect relying party against authgate: panva's `openid-client` 6 (on
// oauth4webapi), unmodified, does everything a library user would let it do:
//
//   1. discovery from `<issuer>/.well-known/openid-configuration` and dynamic registration (a
//      public client, `none`);
//   2. an authorization-code login with PKCE, a nonce and `scope=openid email` (the browser part
//      is walked by browser.mjs: authgate's consent, the upstream login);
//   3. the code exchange, with the library's ID token validation (issuer, audience, expiry,
//      nonce, and the signature against authgate's JWKS: `enableNonRepudiationChecks`);
//   4. UserInfo with the access token (the library checks `sub` against the ID token's);
//   5. re-authorization the way ChatGPT does it: `prompt=none` with `id_token_hint`;
//   6. a token response whose ID token signature was tampered with on the way must be refused by
//      the library (so step 3 is known to check it).
//
// Usage: node oidc-rp.mjs <issuer> [scope]      (scope defaults to "openid email")
// Env:   LOGIN_USER (default ann@example.test), VERBOSE=1
// Last line: RESULT {"ok":true,"claims":{...},"userinfo":{...},...}

import { createHash } from 'node:crypto';
import * as client from 'openid-client';
import { CookieJar, describeHop, walk } from './browser.mjs';

const [issuerArg, scopeArg] = process.argv.slice(2);
const verbose = process.env.VERBOSE === '1';
const result = { ok: false, client: 'openid-client', version: '6.8.9', http: [] };

function finish(err) {
  if (err) {
    result.ok = false;
    result.error = String(err?.stack || err);
    if (err?.cause) result.cause = String(err.cause?.message ?? err.cause);
    if (err?.code) result.code = err.code;
  }
  console.log(`RESULT ${JSON.stringify(result)}`);
  process.exit(result.ok ? 0 : 1);
}
setTimeout(() => finish(new Error('timeout after 90 s')), 90_000).unref();

// Every request the library makes, for the log; `tamper` rewrites a token response once.
let tamper = false;
async function tracingFetch(url, init) {
  const res = await fetch(url, init);
  const u = new URL(url);
  result.http.push(`${init?.method ?? 'GET'} ${u.pathname} ${res.status}`);
  if (verbose) console.error(`[http] ${init?.method ?? 'GET'} ${u} ${res.status}`);
  if (tamper && u.pathname.endsWith('/token') && res.status === 200) {
    tamper = false;
    const body = await res.json();
    const [h, p, s] = body.id_token.split('.');
    // Another valid-looking signature: the first byte flipped.
    const sig = Buffer.from(s, 'base64url');
    sig[0] ^= 0xff;
    body.id_token = `${h}.${p}.${sig.toString('base64url')}`;
    return new Response(JSON.stringify(body), { status: 200, headers: res.headers });
  }
  return res;
}

const expectEq = (what, actual, expected) => {
  if (actual !== expected) throw new Error(`${what}: expected ${JSON.stringify(expected)}, got ${JSON.stringify(actual)}`);
};

async function login(config, jar, params, checks) {
  const url = client.buildAuthorizationUrl(config, params);
  const back = await walk(url, {
    stopPrefix: params.redirect_uri,
    jar,
    onHop: (h) => verbose && console.error(`[browser] ${describeHop(h)}`),
  });
  return client.authorizationCodeGrant(config, new URL(back), checks);
}

try {
  if (!issuerArg) throw new Error('usage: node oidc-rp.mjs <issuer> [scope]');
  const issuer = new URL(issuerArg);
  const scope = scopeArg || 'openid email';
  const redirect_uri = 'http://127.0.0.1:43117/callback';
  const options = {
    execute: [client.allowInsecureRequests, client.enableNonRepudiationChecks],
    [client.customFetch]: tracingFetch,
  };

  // 1. Discovery (the library's default: OpenID Connect Discovery) and registration.
  const config = await client.dynamicClientRegistration(
    issuer,
    {
      redirect_uris: [redirect_uri],
      token_endpoint_auth_method: 'none',
      grant_types: ['authorization_code', 'refresh_token'],
      response_types: ['code'],
      client_name: 'openid-client RP',
    },
    client.None(),
    options,
  );
  const server = config.serverMetadata();
  result.discovery = {
    issuer: server.issuer,
    userinfo_endpoint: server.userinfo_endpoint,
    id_token_signing_alg_values_supported: server.id_token_signing_alg_values_supported,
    scopes_supported: server.scopes_supported,
  };
  const clientId = config.clientMetadata().client_id;

  // 2 and 3. The login and the code exchange, validated by the library.
  const jar = new CookieJar();
  const verifier = client.randomPKCECodeVerifier();
  const nonce = client.randomNonce();
  const state = client.randomState();
  const tokens = await login(
    config,
    jar,
    {
      redirect_uri,
      scope,
      code_challenge: await client.calculatePKCECodeChallenge(verifier),
      code_challenge_method: 'S256',
      nonce,
      state,
    },
    { pkceCodeVerifier: verifier, expectedNonce: nonce, expectedState: state, idTokenExpected: true },
  );
  const claims = tokens.claims();
  if (!claims) throw new Error('no ID token');
  expectEq('aud', claims.aud, clientId);
  expectEq('nonce', claims.nonce, nonce);
  // at_hash: the library leaves it to the application for the code flow.
  const half = createHash('sha256').update(tokens.access_token).digest().subarray(0, 16);
  expectEq('at_hash', claims.at_hash, half.toString('base64url'));
  result.claims = claims;
  result.scope = tokens.scope;
  result.idTokenHeader = JSON.parse(Buffer.from(tokens.id_token.split('.')[0], 'base64url').toString());

  // 4. UserInfo: the library insists the subject is the ID token's.
  result.userinfo = await client.fetchUserInfo(config, tokens.access_token, claims.sub);

  // 5. ChatGPT's re-authorization: no interaction, the ID token as the hint.
  const verifier2 = client.randomPKCECodeVerifier();
  const nonce2 = client.randomNonce();
  const again = await login(
    config,
    jar,
    {
      redirect_uri,
      scope,
      code_challenge: await client.calculatePKCECodeChallenge(verifier2),
      code_challenge_method: 'S256',
      nonce: nonce2,
      prompt: 'none',
      id_token_hint: tokens.id_token,
    },
    { pkceCodeVerifier: verifier2, expectedNonce: nonce2, idTokenExpected: true },
  );
  expectEq('sub after re-authorization', again.claims()?.sub, claims.sub);
  result.reauthorized = true;

  // 6. The same login once more, its ID token's signature broken in transit.
  const verifier3 = client.randomPKCECodeVerifier();
  const nonce3 = client.randomNonce();
  tamper = true;
  try {
    await login(
      config,
      jar,
      {
        redirect_uri,
        scope,
        code_challenge: await client.calculatePKCECodeChallenge(verifier3),
        code_challenge_method: 'S256',
        nonce: nonce3,
      },
      { pkceCodeVerifier: verifier3, expectedNonce: nonce3, idTokenExpected: true },
    );
    throw new Error('the library accepted an ID token with a broken signature');
  } catch (e) {
    if (!String(e?.cause?.message ?? e?.message).includes('signature verification failed')) throw e;
    result.tamperedRejected = true;
  }

  result.ok = true;
  finish();
} catch (err) {
  finish(err);
}
