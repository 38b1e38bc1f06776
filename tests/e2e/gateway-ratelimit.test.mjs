// Rate limiting at the gateway (issue 3, "Rate limiting"): 429 rate_limited
// with Retry-After and the RateLimit-* headers, per client IP (the test
// speaks from 127.0.0.1 and 127.0.0.2, both loopback), a client's
// X-Forwarded-For not escaping its limit, the shipped per-IP limit on login,
// and one limit shared by TWO gateway processes through a real redis-server
// (started here on a random loopback port) with the fallback to local limits
// when Redis is killed: traffic continues, still limited, and the outage is
// in the log and the metrics.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';

import { T, assertError, freePortBase, request, sleep, startRedis } from './lib/harness.mjs';
import { startGateway, startUpstream } from './lib/upstream.mjs';

const opts = { timeout: T(30000) };

/** One request from a chosen loopback source address. */
const requestFrom = (localAddress, u, opts = {}) => request(u, { ...opts, localAddress });

function assertRateHeaders(r, limit) {
  assert.equal(r.headers['ratelimit-limit'], String(limit), `RateLimit-Limit (${r.status})`);
  assert.match(r.headers['ratelimit-remaining'] || '', /^\d+$/, 'RateLimit-Remaining');
  assert.match(r.headers['ratelimit-reset'] || '', /^\d+$/, 'RateLimit-Reset');
}

function assertLimited(r, limit) {
  assertError(assert, r, 429, 'rate_limited');
  assert.match(r.headers['retry-after'] || '', /^[1-9]\d*$/, `Retry-After: ${r.headers['retry-after']}`);
  assertRateHeaders(r, limit);
  assert.equal(r.headers['ratelimit-remaining'], '0');
}

describe('local limits', () => {
  let up;
  let gw;
  before(async () => {
    up = await startUpstream({ name: 'rl' });
    gw = await startGateway({
      routes: {
        version: 1,
        rate_limits: {
          tiny: { rate: 0.5, burst: 3, key: 'ip' },
          roomy: { rate: 1000, burst: 1000, key: 'ip' },
        },
        upstreams: { app: { instances: [up.address], health: null } },
        routes: [
          { path: '/api/tiny/*', upstream: 'app', rate_limit: 'tiny' },
          { path: '/api/roomy/*', upstream: 'app', rate_limit: 'roomy' },
          { path: '/api/free/*', upstream: 'app', rate_limit: null },
        ],
      },
    });
  });
  after(async () => {
    try {
      await gw?.stop();
    } finally {
      await up?.close();
    }
  });

  test('burst passes with RateLimit-* headers counting down, then 429 with Retry-After', opts, async () => {
    const remaining = [];
    for (let i = 0; i < 3; i++) {
      const r = await requestFrom('127.0.0.1', `${gw.url}/api/tiny/x?tag=t1`);
      assert.equal(r.status, 200, r.text);
      assertRateHeaders(r, 3);
      remaining.push(Number(r.headers['ratelimit-remaining']));
    }
    assert.deepEqual(remaining, [2, 1, 0]);
    const r = await requestFrom('127.0.0.1', `${gw.url}/api/tiny/x?tag=t1-limited`);
    assertLimited(r, 3);
    assert.ok(Number(r.headers['retry-after']) <= 3, `Retry-After ~ 1/rate (${r.headers['retry-after']})`);
    assert.equal(up.count((h) => h.url.includes('t1-limited')), 0, 'a limited request never reaches the upstream');
  });

  test('the limit is per client IP; X-Forwarded-For from the client does not escape it', opts, async () => {
    // 127.0.0.1 used its burst in the previous test.
    assertLimited(await requestFrom('127.0.0.1', `${gw.url}/api/tiny/x`, { headers: { 'X-Forwarded-For': '198.51.100.7' } }), 3);
    const other = await requestFrom('127.0.0.2', `${gw.url}/api/tiny/x`);
    assert.equal(other.status, 200, 'another address has its own bucket');
    assert.equal(other.headers['ratelimit-remaining'], '2');
  });

  test('the bucket refills at the policy rate', opts, async () => {
    for (let i = 0; i < 3; i++) await requestFrom('127.0.0.3', `${gw.url}/api/tiny/x`);
    assertLimited(await requestFrom('127.0.0.3', `${gw.url}/api/tiny/x`), 3);
    await sleep(2200); // 0.5/s: one token after 2 s
    assert.equal((await requestFrom('127.0.0.3', `${gw.url}/api/tiny/x`)).status, 200);
    assert.equal((await requestFrom('127.0.0.3', `${gw.url}/api/tiny/x`)).status, 429);
  });

  test('routes without a policy and generous policies are not limited', opts, async () => {
    const rs = await Promise.all(Array.from({ length: 30 }, () => request(`${gw.url}/api/roomy/x`)));
    assert.deepEqual([...new Set(rs.map((r) => r.status))], [200]);
    const free = await Promise.all(Array.from({ length: 30 }, () => request(`${gw.url}/api/free/x`)));
    assert.deepEqual([...new Set(free.map((r) => r.status))], [200]);
    assert.equal(free[0].headers['ratelimit-limit'], undefined, 'no RateLimit headers without a policy');
  });

  test('429s are counted in /metrics', opts, async () => {
    const m = await request(`${gw.adminUrl}/metrics`);
    assert.match(m.text, /ratelimit_decisions_total\{[^}]*policy="tiny"[^}]*result="limited"[^}]*\} [1-9]/);
    assert.match(m.text, /gateway_rate_limited_total\{[^}]*\} [1-9]/);
  });
});

describe('the shipped login limit (built-in routes)', () => {
  let gw;
  before(async () => {
    // No --routes: the built-in table. Nothing runs at port-base + 1 (auth),
    // so admitted logins are 503; the limiter decides before the upstream.
    const base = await freePortBase();
    gw = await startGateway({ args: ['--port-base', String(base)] });
  });
  after(async () => {
    await gw?.stop();
  });

  test('POST /api/auth/login is limited per client IP (burst 20)', opts, async () => {
    const body = JSON.stringify({ email: 'x@example.test', password: 'wrong password here' });
    const headers = { 'Content-Type': 'application/json' };
    const t0 = Date.now();
    const rs = await Promise.all(
      Array.from({ length: 40 }, () => requestFrom('127.0.0.4', `${gw.url}/api/auth/login`, { method: 'POST', headers, body })),
    );
    const refilled = Math.ceil(((Date.now() - t0) / 1000) * 10); // 10/s while they were sent
    const limited = rs.filter((r) => r.status === 429);
    const passed = rs.filter((r) => r.status !== 429);
    assert.ok(passed.length >= 20 && passed.length <= 21 + refilled, `the burst (+${refilled} refilled) passed: ${passed.length}`);
    assert.ok(limited.length >= 1, `the rest limited (${limited.length})`);
    assertLimited(limited[0], 20);
    // Another client address is not affected.
    const other = await requestFrom('127.0.0.5', `${gw.url}/api/auth/login`, { method: 'POST', headers, body });
    assert.notEqual(other.status, 429);
  });
});

describe('Redis-backed limits shared by two gateways', () => {
  let redis;
  let up;
  let gwA;
  let gwB;
  before(async () => {
    redis = await startRedis();
    up = await startUpstream({ name: 'shared' });
    const routes = {
      version: 1,
      rate_limits: { shared: { rate: 0.001, burst: 10, key: 'ip' } },
      upstreams: { app: { instances: [up.address], health: null } },
      routes: [{ path: '/api/shared/*', upstream: 'app', rate_limit: 'shared' }],
    };
    const args = ['--redis-url', redis.url, '--ratelimit-redis-timeout', '100ms'];
    gwA = await startGateway({ routes, args });
    gwB = await startGateway({ routes, args });
  });
  after(async () => {
    try {
      await gwA?.stop();
    } finally {
      try {
        await gwB?.stop();
      } finally {
        await up?.close();
        await redis?.stop();
      }
    }
  });

  test('one burst of 10 across both gateways', opts, async () => {
    const statuses = [];
    for (let i = 0; i < 7; i++) statuses.push((await requestFrom('127.0.0.6', `${gwA.url}/api/shared/a`)).status);
    for (let i = 0; i < 7; i++) statuses.push((await requestFrom('127.0.0.6', `${gwB.url}/api/shared/b`)).status);
    assert.equal(statuses.filter((s) => s === 200).length, 10, `statuses: ${statuses.join(',')}`);
    assert.deepEqual(statuses.slice(0, 7), Array(7).fill(200));
    assert.deepEqual(statuses.slice(7), [200, 200, 200, 429, 429, 429, 429], 'B knows what A admitted');
    const m = await request(`${gwB.adminUrl}/metrics`);
    assert.match(m.text, /ratelimit_redis_up 1\b/);
  });

  test('Redis killed: traffic continues under local limits, with a log line and metrics', opts, async () => {
    await redis.kill();
    const t0 = Date.now();
    const statuses = [];
    for (let i = 0; i < 14; i++) statuses.push((await requestFrom('127.0.0.7', `${gwA.url}/api/shared/after`)).status);
    const took = Date.now() - t0;
    assert.ok(statuses.every((s) => s === 200 || s === 429), `no failures, only decisions: ${statuses.join(',')}`);
    assert.deepEqual(statuses.slice(0, 10), Array(10).fill(200), 'not refusing all traffic');
    assert.ok(statuses.slice(10).every((s) => s === 429), `still limited (locally): ${statuses.join(',')}`);
    assert.ok(took < T(5000), `decisions stay quick without Redis (${took} ms for 14)`);
    const warn = await gwA.waitLog((e) => /^ratelimit: .*local limits/.test(e.msg || ''), T(5000));
    assert.equal(warn.level, 'warn');
    const m = await request(`${gwA.adminUrl}/metrics`);
    assert.match(m.text, /ratelimit_redis_fallbacks_total(\{[^}]*\})? [1-9]/);
    assert.match(m.text, /ratelimit_redis_up 0\b/);
  });
});
