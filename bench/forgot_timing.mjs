#!/usr/bin/env node
// bench/forgot_timing.mjs - does POST /api/auth/password/forgot tell, by
// its timing, whether an account exists?
//
//   node bench/forgot_timing.mjs [path/to/trellis] [pairs]
//
// Starts the auth service (SQLite, a temp data dir, fast argon2), registers
// accounts, then sends `pairs` interleaved pairs of forgot requests -- one
// for an existing account, one for an unknown e-mail, in alternating order
// -- over one keep-alive connection, and prints for each kind the median
// and 90th percentile latency of the answer, and in how many pairs the
// existing account was the slower one (about half when nothing leaks).
//
// It also times the request that FOLLOWS each forgot on the same
// connection (GET /healthz), since work done after the answer could
// still delay the next request on that connection.
//
// Each account gets at most 2 requests, below the 5 unused reset tokens a
// user may hold, so every "existing" request really writes a token.
import http from 'node:http';
import path from 'node:path';

import { registerUser, startService, uniqueEmail } from '../tests/e2e/lib/harness.mjs';

const bin = process.argv[2] || path.resolve('build/trellis');
const pairs = Number(process.argv[3] || 300);
process.env.TRELLIS_BIN = path.resolve(bin);

const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });

function timed(base, method, p, body) {
  const payload = body ? Buffer.from(JSON.stringify(body)) : null;
  const u = new URL(base);
  return new Promise((resolve, reject) => {
    const headers = payload ? { 'Content-Type': 'application/json', 'Content-Length': payload.length } : {};
    const t0 = process.hrtime.bigint();
    const req = http.request({ host: u.hostname, port: u.port, path: p, method, agent, headers }, (res) => {
      res.resume();
      res.on('end', () => resolve({ status: res.statusCode, ms: Number(process.hrtime.bigint() - t0) / 1e6 }));
    });
    req.on('error', reject);
    req.end(payload || undefined);
  });
}

const quantile = (xs, q) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(q * s.length))];
};

const svc = await startService('auth', { args: ['--workers', '1'] });
try {
  const accounts = [];
  for (let i = 0; i < Math.ceil(pairs / 2) + 10; i++) accounts.push((await registerUser(svc.url)).user.email);

  const forgot = async (email) => {
    const r = await timed(svc.url, 'POST', '/api/auth/password/forgot', { email });
    if (r.status !== 202) throw new Error(`forgot answered ${r.status}`);
    const next = await timed(svc.url, 'GET', '/healthz');
    return { ms: r.ms, next: next.ms };
  };
  // Warm-up: statement caches, the connection, the JIT.
  for (let i = 0; i < 20; i++) {
    await forgot(accounts[accounts.length - 1 - (i % 10)]);
    await forgot(uniqueEmail('warm'));
  }

  const existing = [];
  const unknown = [];
  let existingSlower = 0;
  let existingNextSlower = 0;
  for (let i = 0; i < pairs; i++) {
    const known = accounts[i % (accounts.length - 10)];
    let a;
    let b;
    if (i % 2 === 0) {
      a = await forgot(known);
      b = await forgot(uniqueEmail('nobody'));
    } else {
      b = await forgot(uniqueEmail('nobody'));
      a = await forgot(known);
    }
    existing.push(a);
    unknown.push(b);
    if (a.ms > b.ms) existingSlower++;
    if (a.next > b.next) existingNextSlower++;
  }
  const fmt = (x) => x.toFixed(3).padStart(7);
  const row = (name, xs, key) =>
    console.log(`${name.padEnd(28)} median ${fmt(quantile(xs.map((x) => x[key]), 0.5))} ms   p90 ${fmt(quantile(xs.map((x) => x[key]), 0.9))} ms`);
  console.log(`forgot timing: ${pairs} interleaved pairs, one keep-alive connection, SQLite, 1 worker`);
  row('forgot, existing account', existing, 'ms');
  row('forgot, unknown email', unknown, 'ms');
  console.log(`existing slower in ${existingSlower} of ${pairs} pairs`);
  row('next request, after existing', existing, 'next');
  row('next request, after unknown', unknown, 'next');
  console.log(`next request slower after existing in ${existingNextSlower} of ${pairs} pairs`);
} finally {
  agent.destroy();
  await svc.stop({ check: false });
}
