#!/usr/bin/env node
// Many distinct valid access tokens for bench/run.sh (the builtin-10k phase), by real refresh-token
// rotation: each grant of CHAINS_FILE ("client_id<TAB>client_secret<TAB>refresh_token" lines, from
// flows.mjs) is refreshed in sequence, every answer giving a new access token and the next refresh
// token; the grants run in parallel until COUNT access tokens exist.
//
//   node bench/mint.mjs BASE CHAINS_FILE COUNT OUTPUT_FILE
//
// OUTPUT_FILE gets one access token per line. stdout gets one line for run.sh:
//   AUTHGATE_MINT tokens=N errors=N us=N min_expires_in=N
// and, on an error, "AUTHGATE_MINT_SAMPLE <its error>". A chain stops at its first error (its refresh
// token is then spent or unknown). Node 20 built-ins only; only a loopback BASE is fetched; each
// request times out after 10 s and the process gives up after MINT_SECONDS (120) seconds.
import fs from 'node:fs';
import http from 'node:http';

const REQUEST_TIMEOUT_MS = 10_000;
const LIMIT_S = Number(process.env.MINT_SECONDS || 120);

function usage(msg) {
  process.stderr.write(`mint.mjs: ${msg}\nusage: node mint.mjs BASE CHAINS_FILE COUNT OUTPUT_FILE\n`);
  process.exit(2);
}
const [baseArg, chainsFile, countArg, outFile] = process.argv.slice(2);
if (!baseArg || !chainsFile || !countArg || !outFile) usage('missing arguments');
const base = baseArg.replace(/\/+$/, '');
const count = Number(countArg);
if (!Number.isInteger(count) || count <= 0 || count > 1_000_000) usage('COUNT must be an integer from 1 to 1000000');
if (!Number.isInteger(LIMIT_S) || LIMIT_S <= 0) usage('MINT_SECONDS must be a positive integer');
const host = new URL(base).hostname.replace(/^\[|\]$/g, '');
if (!(host === 'localhost' || host === '::1' || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(host))) {
  usage(`refusing a non-loopback URL: ${base}`);
}
const chains = fs.readFileSync(chainsFile, 'utf8').split('\n').filter(Boolean).map((line) => {
  const [id, secret, token] = line.split('\t');
  return { id, secret, token };
}).filter((c) => c.id && c.secret && c.token);
if (chains.length === 0) usage(`no chains in ${chainsFile}`);

setTimeout(() => {
  process.stderr.write(`mint.mjs: still running ${LIMIT_S} s after the start; giving up\n`);
  process.exit(3);
}, LIMIT_S * 1000).unref();

const agent = new http.Agent({ keepAlive: true, maxSockets: chains.length });

function refresh(chain) {
  const body = Buffer.from(new URLSearchParams({
    grant_type: 'refresh_token', client_id: chain.id, client_secret: chain.secret, refresh_token: chain.token,
  }).toString());
  return new Promise((resolve, reject) => {
    const req = http.request(`${base}/token`, {
      method: 'POST',
      agent,
      headers: { 'content-type': 'application/x-www-form-urlencoded', accept: 'application/json', 'content-length': body.length },
    }, (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        let j = {};
        try { j = JSON.parse(text); } catch { /* reported below */ }
        if (res.statusCode !== 200 || !j.access_token || !j.refresh_token) {
          reject(new Error(`POST /token: ${res.statusCode} ${text.replace(/\s+/g, ' ').slice(0, 200)}`));
        } else {
          resolve(j);
        }
      });
      res.on('error', reject);
    });
    req.setTimeout(REQUEST_TIMEOUT_MS, () => req.destroy(new Error(`POST /token: no answer within ${REQUEST_TIMEOUT_MS} ms`)));
    req.on('error', reject);
    req.end(body);
  });
}

const t0 = performance.now();
const tokens = [];
const errors = [];
let minExpiresIn = Infinity;

async function run(chain) {
  while (tokens.length < count) {
    let answer;
    try {
      answer = await refresh(chain);
    } catch (e) {
      errors.push(e.message);
      return;
    }
    chain.token = answer.refresh_token;
    if (tokens.length < count) tokens.push(answer.access_token);
    if (Number.isInteger(answer.expires_in)) minExpiresIn = Math.min(minExpiresIn, answer.expires_in);
  }
}

await Promise.all(chains.map(run));
agent.destroy();
fs.writeFileSync(outFile, tokens.map((t) => `${t}\n`).join(''), { mode: 0o600 });
process.stdout.write(`AUTHGATE_MINT tokens=${tokens.length} errors=${errors.length} `
  + `us=${Math.round((performance.now() - t0) * 1000)} min_expires_in=${Number.isFinite(minExpiresIn) ? minExpiresIn : 0}\n`);
if (errors.length) process.stdout.write(`AUTHGATE_MINT_SAMPLE ${errors[0]}\n`);
