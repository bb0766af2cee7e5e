#!/usr/bin/env node
// authgate's pages in real headless Chromium (Debian's `chromium`, driven by playwright-core).
//
//   node pages.mjs <authgate base> <approve authorize URL> <deny authorize URL> <error URL> <artifacts dir>
//
// (a) approve: the consent page shows the client's name and the redirect host (in the heading /
//     on the first phone screen); screenshots at 1280x800 and 390x844; click "Allow" -> authgate's
//     development login (screenshots) -> fill the email, submit -> the browser navigates to the
//     client's redirect URI with code, state and iss.
// (b) deny: the consent page, click "Deny" -> the redirect URI with error=access_denied, state, iss.
// (c) error: an authorization request authgate cannot trust (e.g. an unknown client_id) -> an error
//     page (4xx), no redirect, screenshots at both widths.
// On every page: no script element, the inline stylesheet applies under the page's CSP, no CSP
// violation is reported by Chromium, and nothing scrolls sideways at 390 px.
//
// The redirect URI (the `redirect_uri` of the approve/deny URLs) should be served by someone (the
// Rust test serves it); the script records the navigation request to it either way.
//
// Environment: CHROMIUM (default /usr/bin/chromium), CLIENT_NAME (the registered client_name,
// default "Test Client"), LOGIN_EMAIL (default ann@example.test).
// Output: one line `RESULT {json}` ({"ok": true|false, "checks": {...}, "failures": [...],
// "screenshots": {...}, ...}); exit status 1 on any failure.

import { existsSync, mkdirSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { chromium } from 'playwright-core';

const [base, approveUrl, denyUrl, errorUrl, artifactsArg] = process.argv.slice(2);
if (!artifactsArg) {
  console.error('usage: node pages.mjs <authgate base> <approve url> <deny url> <error url> <artifacts dir>');
  process.exit(2);
}
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const CLIENT_NAME = process.env.CLIENT_NAME || 'Test Client';
const EMAIL = process.env.LOGIN_EMAIL || 'ann@example.test';
const DESKTOP = { width: 1280, height: 800 };
const PHONE = { width: 390, height: 844 };
const STEP_TIMEOUT = 15_000;
const artifacts = resolve(artifactsArg);
mkdirSync(artifacts, { recursive: true });

const checks = {};
const failures = [];
const screenshots = {};
const cspViolations = [];
const consoleErrors = [];
const formPosts = [];
const result = { ok: false, checks, failures, screenshots, cspViolations, consoleErrors, formPosts };

function check(name, ok, detail) {
  checks[name] = Boolean(ok);
  if (!ok) failures.push(detail ? `${name}: ${detail}` : name);
  return Boolean(ok);
}

function finish(code) {
  result.ok = code === 0 && failures.length === 0;
  console.log('RESULT ' + JSON.stringify(result));
  process.exit(result.ok ? 0 : 1);
}
for (const event of ['uncaughtException', 'unhandledRejection']) {
  process.on(event, (e) => {
    failures.push(`${event}: ${e?.stack ?? e}`);
    finish(1);
  });
}

if (!existsSync(CHROMIUM)) {
  failures.push(`Chromium is not installed at ${CHROMIUM} (apt-get install chromium; scripts/test does it)`);
  finish(1);
}

const redirectUri = new URL(approveUrl).searchParams.get('redirect_uri');
const errorRedirectUri = new URL(errorUrl).searchParams.get('redirect_uri');
const redirectHost = new URL(redirectUri).hostname;

// The issuer every redirect to the client must carry as `iss`.
let issuer;
try {
  const resp = await fetch(new URL('/.well-known/oauth-authorization-server', base));
  issuer = (await resp.json()).issuer;
} catch (e) {
  failures.push(`authgate does not answer at ${base}: ${e.cause?.message ?? e.message}`);
  finish(1);
}

// playwright-core starts Chromium with --headless and a fresh temporary --user-data-dir (deleted
// at close); each scenario gets its own context (its own cookies).
const browser = await chromium.launch({
  executablePath: CHROMIUM,
  headless: true,
  args: [
    '--no-sandbox',
    '--disable-gpu',
    '--disable-quic',
    '--no-first-run',
    '--disable-background-networking',
    '--disable-component-update',
    '--disable-sync',
  ],
  timeout: 30_000,
}).catch((e) => {
  failures.push(`Chromium did not start (${CHROMIUM}): ${e.message}`);
  finish(1);
});
result.chromium = browser.version();

async function newPage() {
  const context = await browser.newContext({ viewport: DESKTOP, deviceScaleFactor: 1, locale: 'en-US' });
  context.setDefaultTimeout(STEP_TIMEOUT);
  const page = await context.newPage();
  page.on('console', (msg) => {
    const text = msg.text();
    if (/Content[- ]Security[- ]Policy/i.test(text)) cspViolations.push(text);
    else if (msg.type() === 'error') consoleErrors.push(text);
  });
  page.on('request', async (req) => {
    if (req.method() !== 'POST' || !req.isNavigationRequest()) return;
    const h = await req.allHeaders().catch(() => ({}));
    // `Origin: null` here means the page's referrer policy hides the origin: authgate refuses it.
    formPosts.push({ url: req.url(), origin: h.origin ?? null, secFetchSite: h['sec-fetch-site'] ?? null });
  });
  page.on('requestfailed', (req) => {
    const why = req.failure()?.errorText ?? '';
    if (/CSP|BLOCKED_BY/i.test(why)) cspViolations.push(`${req.url()}: ${why}`);
  });
  return { context, page };
}

/** Resolves with the next main-frame navigation request whose URL starts with `prefix`. */
function navigationTo(page, prefix, timeout = STEP_TIMEOUT) {
  return new Promise((resolveReq, reject) => {
    const timer = setTimeout(() => {
      page.off('request', onRequest);
      reject(new Error(`the browser did not navigate to ${prefix} within ${timeout} ms (now at ${page.url()})`));
    }, timeout);
    function onRequest(req) {
      if (req.isNavigationRequest() && req.frame() === page.mainFrame() && req.url().startsWith(prefix)) {
        clearTimeout(timer);
        page.off('request', onRequest);
        resolveReq(req);
      }
    }
    page.on('request', onRequest);
  });
}

/** The URLs and statuses of a navigation's redirect chain, first hop first. */
async function chainOf(req) {
  const hops = [];
  for (let r = req; r; r = r.redirectedFrom()) {
    const resp = await r.response().catch(() => null);
    hops.unshift({ method: r.method(), url: r.url(), status: resp ? resp.status() : null });
  }
  return hops;
}

/** Checks every page gets: styled under its CSP, no script, no sideways scrolling on a phone. */
async function pageChecks(page, label) {
  const info = await page.evaluate(() => ({
    scripts: document.querySelectorAll('script').length,
    radius: getComputedStyle(document.querySelector('.card') ?? document.body).borderTopLeftRadius,
    bodyMargin: getComputedStyle(document.body).marginTop,
    title: document.title,
    h1: document.querySelector('h1')?.innerText ?? '',
  }));
  check(`${label}_no_script`, info.scripts === 0, `${info.scripts} script elements`);
  // The inline <style> applies (CSP style-src 'unsafe-inline'): body margin 0, rounded card.
  check(`${label}_styled`, info.bodyMargin === '0px' && info.radius !== '0px', JSON.stringify(info));
  check(`${label}_has_heading`, info.h1.trim().length > 0, 'no <h1>');
  await page.setViewportSize(PHONE);
  const scrollWidth = await page.evaluate(() => document.documentElement.scrollWidth);
  result[`${label}PhoneScrollWidth`] = scrollWidth;
  check(`${label}_phone_no_horizontal_scroll`, scrollWidth <= PHONE.width, `scrollWidth ${scrollWidth} > ${PHONE.width}`);
  await page.setViewportSize(DESKTOP);
  return info;
}

async function shoot(page, name) {
  for (const [size, viewport] of [['desktop', DESKTOP], ['phone', PHONE]]) {
    await page.setViewportSize(viewport);
    const path = join(artifacts, `${name}-${size}.png`);
    await page.screenshot({ path, fullPage: true });
    screenshots[`${name}_${size}`] = path;
  }
  await page.setViewportSize(DESKTOP);
}

/** Opens an authorize URL and checks the consent page. */
async function openConsent(page, url, label) {
  const resp = await page.goto(url, { waitUntil: 'load' });
  check(`${label}_consent_status_200`, resp && resp.status() === 200, `status ${resp?.status()} at ${page.url()}`);
  const csp = (await resp.allHeaders())['content-security-policy'] ?? '';
  result.consentCsp = csp;
  check(`${label}_consent_csp_frame_ancestors_none`, /frame-ancestors 'none'/.test(csp), csp);
  check(`${label}_consent_csp_no_form_action`, !/form-action/.test(csp), csp);
  await pageChecks(page, `${label}_consent`);

  const h1 = page.locator('h1');
  check(`${label}_client_name_in_heading`, (await h1.innerText()).includes(CLIENT_NAME), `h1: ${await h1.innerText()}`);
  const name = page.getByText(CLIENT_NAME, { exact: true }).first();
  check(`${label}_client_name_visible`, await name.isVisible(), CLIENT_NAME);
  const host = page.getByText(redirectHost, { exact: true }).first();
  check(`${label}_redirect_host_visible`, await host.isVisible().catch(() => false), redirectHost);
  // Prominent: on a phone, the name and the redirect host are on the first screen, and the name
  // is larger than the body text.
  await page.setViewportSize(PHONE);
  const firstScreen = async (loc) => {
    const box = await loc.boundingBox().catch(() => null);
    return box !== null && box.y >= 0 && box.y + box.height <= PHONE.height;
  };
  check(`${label}_client_name_on_first_phone_screen`, await firstScreen(name));
  check(`${label}_redirect_host_on_first_phone_screen`, await firstScreen(host));
  const sizes = await name.evaluate((el) => ({
    name: parseFloat(getComputedStyle(el).fontSize),
    body: parseFloat(getComputedStyle(document.body).fontSize),
  }));
  check(`${label}_client_name_larger_than_text`, sizes.name >= sizes.body * 1.2, JSON.stringify(sizes));
  await page.setViewportSize(DESKTOP);

  const allow = page.getByRole('button', { name: 'Allow', exact: true });
  const deny = page.getByRole('button', { name: 'Deny', exact: true });
  check(`${label}_allow_and_deny_buttons`, (await allow.count()) === 1 && (await deny.count()) === 1);
  return { allow, deny };
}

function redirectParams(url) {
  const u = new URL(url);
  return Object.fromEntries(u.searchParams.entries());
}

/** Runs one scenario in its own browser context; an exception fails it without hiding the others. */
async function scenario(name, fn) {
  const { context, page } = await newPage();
  try {
    await fn(page);
  } catch (e) {
    check(`${name}_completed`, false, e?.stack ?? String(e));
    const path = join(artifacts, `failure-${name}.png`);
    if (await page.screenshot({ path, fullPage: true }).then(() => true, () => false)) screenshots[`failure_${name}`] = path;
  } finally {
    await context.close().catch(() => {});
  }
}

try {
  // (a) approve -> development login -> back to the client with a code.
  await scenario('approve', async (page) => {
    const { allow } = await openConsent(page, approveUrl, 'approve');
    await shoot(page, 'consent');

    // Click "Allow" on the phone-sized page: the buttons must be reachable there.
    await page.setViewportSize(PHONE);
    const toLogin = navigationTo(page, new URL('/dev/login', base).href);
    await allow.click();
    const loginReq = await toLogin;
    await page.waitForLoadState('load');
    result.approveToLogin = await chainOf(loginReq);
    check('approve_reaches_dev_login', page.url().startsWith(new URL('/dev/login', base).href), page.url());
    check('dev_login_status_200', (await (await loginReq.response())?.status()) === 200);
    await page.setViewportSize(DESKTOP);
    await pageChecks(page, 'dev_login');
    await shoot(page, 'dev-login');

    await page.setViewportSize(PHONE);
    const toClient = navigationTo(page, redirectUri);
    await page.getByLabel(/email/i).fill(EMAIL);
    await page.getByRole('button', { name: /sign in/i }).click();
    const back = await toClient;
    const resp = await back.response().catch(() => null);
    result.approveChain = await chainOf(back);
    result.approveFinalUrl = back.url();
    result.callbackStatus = resp ? resp.status() : null;
    const p = redirectParams(back.url());
    result.approve = p;
    const expectedState = new URL(approveUrl).searchParams.get('state');
    check('approve_redirect_has_code', typeof p.code === 'string' && p.code.length > 0, back.url());
    check('approve_redirect_state', p.state === expectedState, `${p.state} != ${expectedState}`);
    check('approve_redirect_iss', p.iss === issuer, `${p.iss} != ${issuer}`);
    check('approve_redirect_no_error', p.error === undefined, p.error);
    // The last hop is the dev login's 303 to the client: Chromium followed it (no form-action block).
    check('approve_redirect_after_form_post', result.approveChain.length >= 2 && result.approveChain.at(-2).method === 'POST' && result.approveChain.at(-2).status === 303, JSON.stringify(result.approveChain));
    check('approve_callback_loaded', resp !== null, 'the redirect URI did not answer (or the navigation was blocked)');
    await page.waitForLoadState('load').catch(() => {});
    result.approveLandedUrl = page.url();
    check('approve_browser_landed_on_redirect_uri', page.url().startsWith(redirectUri), page.url());
  });

  // (b) deny, in a fresh context: no authgate session, no earlier approval.
  await scenario('deny', async (page) => {
    const { deny } = await openConsent(page, denyUrl, 'deny');
    const toClient = navigationTo(page, redirectUri);
    await deny.click();
    const back = await toClient;
    const resp = await back.response().catch(() => null);
    result.denyChain = await chainOf(back);
    result.denyFinalUrl = back.url();
    const p = redirectParams(back.url());
    result.deny = p;
    const expectedState = new URL(denyUrl).searchParams.get('state');
    check('deny_redirect_access_denied', p.error === 'access_denied', back.url());
    check('deny_redirect_state', p.state === expectedState, `${p.state} != ${expectedState}`);
    check('deny_redirect_iss', p.iss === issuer, `${p.iss} != ${issuer}`);
    check('deny_redirect_no_code', p.code === undefined, back.url());
    check('deny_redirect_after_form_post', result.denyChain.length === 2 && result.denyChain[0].method === 'POST' && result.denyChain[0].status === 303, JSON.stringify(result.denyChain));
    check('deny_callback_loaded', resp !== null, 'the redirect URI did not answer (or the navigation was blocked)');
  });

  // (c) an error page: no redirect anywhere.
  await scenario('error', async (page) => {
    const wentToClient = [];
    if (errorRedirectUri) {
      page.on('request', (req) => {
        if (req.url().startsWith(errorRedirectUri)) wentToClient.push(req.url());
      });
    }
    const resp = await page.goto(errorUrl, { waitUntil: 'load' });
    const status = resp?.status();
    result.errorStatus = status;
    check('error_status_4xx', status >= 400 && status < 500, `status ${status}`);
    check('error_no_redirect', resp?.request().redirectedFrom() === null && page.url() === new URL(errorUrl).href, page.url());
    const info = await pageChecks(page, 'error');
    result.errorHeading = info.h1;
    result.errorText = await page.locator('body').innerText();
    check('error_page_has_no_form', (await page.locator('form').count()) === 0);
    await shoot(page, 'error');
    await page.waitForTimeout(300);
    check('error_never_contacts_redirect_uri', wentToClient.length === 0, wentToClient.join(' '));
  });

  check('no_csp_violations', cspViolations.length === 0, cspViolations.join(' | '));
  // authgate refuses form posts whose Origin is not its own: a referrer policy of no-referrer
  // (header or <meta>) makes browsers send `Origin: null`.
  const origin = new URL(base).origin;
  check('form_posts_send_own_origin', formPosts.length >= 3 && formPosts.every((f) => f.origin === origin), JSON.stringify(formPosts));
} finally {
  await browser.close().catch(() => {});
}
finish(0);
