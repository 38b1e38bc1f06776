// The gateway's resilience (issue 3, "Resilience"), against fake upstreams
// that are slow, failing, unreachable or killed: route and per-try timeouts
// (504), the connect timeout against a port that never accepts, retries for
// idempotent requests only (counted at the upstream), the retry budget, the
// circuit breaker (open after 5 failures, fast 503, half-open probe after the
// cool-down), round-robin and least-request balancing, outlier ejection and
// active health checks with two instances, an upstream that dies
// mid-request (502 or a cut response, never a hang), and a client that goes
// away cancelling the upstream request. Timeouts and cool-downs are short
// (routes file) so the file runs in seconds.
import assert from 'node:assert/strict';
import http from 'node:http';
import { after, before, test } from 'node:test';

import { RawConn, T, assertError, rawRequest, request, sleep } from './lib/harness.mjs';
import { spawnBlackhole, spawnUpstream, startGateway, startUpstream } from './lib/upstream.mjs';

const opts = { timeout: T(30000) };
let up; // the main fake upstream (slow / failing on request)
let good; // two instances behind one upstream name
let bad;
let hcA; // two instances with health checks
let hcB;
let child; // a fake upstream in its own process, killed by a test
let slowInst; // answers everything after 300 ms
let hole; // a port where connecting hangs
let gw;

const NO_OUTLIER = { failures: 0 };
const QUIET = { health: null, outlier: NO_OUTLIER, breaker: { failures: 1000, cooldown: '1s' } };

before(async () => {
  up = await startUpstream({ name: 'main' });
  good = await startUpstream({ name: 'good' });
  bad = await startUpstream({ name: 'bad', defaults: { status: '500' } });
  hcA = await startUpstream({ name: 'hc-a' });
  hcB = await startUpstream({ name: 'hc-b' });
  child = await spawnUpstream({ name: 'child' });
  slowInst = await startUpstream({ name: 'slow', defaults: { delay: '300' } });
  hole = await spawnBlackhole();
  gw = await startGateway({
    routes: {
      version: 1,
      upstreams: {
        slow: { instances: [up.address], ...QUIET },
        retrying: { instances: [up.address], ...QUIET },
        budget: { instances: [up.address], ...QUIET },
        brk: { instances: [up.address], health: null, outlier: NO_OUTLIER, breaker: { failures: 5, cooldown: '600ms' } },
        pair: {
          instances: [good.address, bad.address],
          lb: 'round_robin',
          health: null,
          outlier: { failures: 5, base_ejection: '1500ms', max_percent: 50 },
          breaker: { failures: 1000, cooldown: '1s' },
        },
        checked: {
          instances: [hcA.address, hcB.address],
          lb: 'round_robin',
          health: { path: '/readyz', interval: '100ms', timeout: '500ms', unhealthy_threshold: 1, healthy_threshold: 1 },
          outlier: NO_OUTLIER,
        },
        child: { instances: [child.address], ...QUIET },
        tries: { instances: [up.address], ...QUIET },
        hole: { instances: [hole.address], connect_timeout: '300ms', ...QUIET },
        lr: { instances: [good.address, slowInst.address], lb: 'least_request', ...QUIET },
        rr: { instances: [good.address, slowInst.address], lb: 'round_robin', ...QUIET },
        hang: { instances: [up.address], ...QUIET },
      },
      routes: [
        { path: '/api/slow/*', upstream: 'slow', timeout: '300ms', retry: false },
        { path: '/api/retry/*', upstream: 'retrying', timeout: '5s', retry: { max: 2, on: ['5xx', 'reset', 'connect_failure'], base: '10ms', cap: '40ms' } },
        { path: '/api/budget/*', upstream: 'budget', timeout: '10s', retry: { max: 2, on: ['5xx'], base: '1ms', cap: '5ms' } },
        { path: '/api/brk/*', upstream: 'brk', retry: false },
        { path: '/api/pair/*', upstream: 'pair', retry: false },
        { path: '/api/checked/*', upstream: 'checked', retry: false },
        { path: '/api/child/*', upstream: 'child', retry: false, timeout: '10s' },
        { path: '/api/tries/*', upstream: 'tries', timeout: '3s', try_timeout: '200ms', retry: { max: 1, on: ['timeout'], base: '10ms', cap: '20ms' } },
        { path: '/api/lr/*', upstream: 'lr', retry: false },
        { path: '/api/hole/*', upstream: 'hole', retry: false, timeout: '10s' },
        { path: '/api/rr/*', upstream: 'rr', retry: false },
        { path: '/api/hang/*', upstream: 'hang', retry: false, timeout: '20s' },
      ],
    },
  });
});

after(async () => {
  try {
    await gw?.stop();
  } finally {
    await child?.kill();
    hole?.kill();
    for (const u of [up, good, bad, hcA, hcB, slowInst]) await u?.close();
  }
});

const url = (p) => gw.url + p;
const tagged = (tag) => (h) => h.url.includes(`tag=${tag}`);

test('a slow upstream gets 504 deadline_exceeded at the route timeout, and the upstream request is dropped', opts, async () => {
  const t0 = Date.now();
  const r = await request(url('/api/slow/x?delay=3000&tag=slow1'));
  const took = Date.now() - t0;
  assertError(assert, r, 504, 'deadline_exceeded');
  assert.ok(took >= 250, `not before the timeout (${took} ms)`);
  assert.ok(took < T(1500), `at the 300 ms timeout, not the upstream's 3 s (${took} ms)`);
  const rec = await up.waitFor((h) => tagged('slow1')(h) && h.aborted, T(2000));
  assert.ok(rec.aborted, 'the gateway closed the upstream request');
  // A fast answer on the same route is fine.
  assert.equal((await request(url('/api/slow/x?delay=10'))).status, 200);
});

test('GET is retried on 5xx (1 + 2 tries at the upstream); POST is not', opts, async () => {
  let r = await request(url('/api/retry/x?status=503&tag=get1'));
  assert.equal(r.status, 503);
  assert.equal(r.json?.instance, 'main', 'the last try\'s answer is relayed');
  assert.equal(up.count(tagged('get1')), 3, 'GET: first try and two retries');

  r = await request(url('/api/retry/x?status=500&tag=post1'), { method: 'POST', body: '{}' });
  assert.equal(r.status, 500);
  assert.equal(up.count(tagged('post1')), 1, 'POST without Idempotency-Key: one try');

  r = await request(url('/api/retry/x?status=500&tag=post2'), {
    method: 'POST',
    body: '{"a":1}',
    headers: { 'Idempotency-Key': 'k-123' },
  });
  assert.equal(r.status, 500);
  assert.equal(up.count(tagged('post2')), 3, 'POST with Idempotency-Key is retried');
  for (const h of up.calls(tagged('post2'))) assert.equal(h.bodyBytes, 7, 'the body is sent again on each try');
});

test('a GET that fails twice then succeeds is answered 200', opts, async () => {
  const r = await request(url('/api/retry/x?fail_first=2&key=ff1&tag=ff1'));
  assert.equal(r.status, 200, r.text);
  assert.equal(up.count(tagged('ff1')), 3);
});

test('a retried answer reports the upstream\'s final status, not a gateway error, when no retry is left', opts, async () => {
  const r = await request(url('/api/retry/x?status=502&tag=last'));
  assert.equal(r.status, 502);
  assert.equal(r.json?.instance, 'main', 'the upstream\'s own 502 body is relayed');
  assert.equal(up.count(tagged('last')), 3);
});

test('per-try timeout: a try that hangs is abandoned and retried, the retry answers', opts, async () => {
  const t0 = Date.now();
  const r = await request(url('/api/tries/x?delay=2000&slow_first=1&key=try1&tag=try1'));
  const took = Date.now() - t0;
  assert.equal(r.status, 200, r.text);
  assert.equal(up.count(tagged('try1')), 2, 'two tries');
  assert.ok(took >= 190 && took < T(1500), `the first try was cut at ~200 ms (${took} ms in all)`);
  await up.waitFor((h) => tagged('try1')(h) && h.aborted, T(2000));
});

/** Fires n GETs at path, one every gapMs, and resolves with the answers. */
async function stagger(path, n, gapMs) {
  const ps = [];
  for (let i = 0; i < n; i++) {
    ps.push(request(url(`${path}&i=${i}`)));
    await sleep(gapMs);
  }
  return Promise.all(ps);
}

test('load balancing: least_request steers around a slow instance, round_robin does not', opts, async () => {
  const rs = await stagger('/api/lr/x?tag=lr', 30, 25);
  assert.ok(rs.every((r) => r.status === 200));
  const slowShare = slowInst.count(tagged('lr')) / 30;
  const rr = await stagger('/api/rr/x?tag=rr', 30, 25);
  assert.ok(rr.every((r) => r.status === 200));
  const rrShare = slowInst.count(tagged('rr')) / 30;
  assert.ok(Math.abs(rrShare - 0.5) < 0.1, `round robin: half to each (slow got ${rrShare})`);
  assert.ok(slowShare < 0.3, `least request: the slow instance got ${slowShare} of the requests`);
});

test('the retry budget caps retries when everything fails at once', opts, async () => {
  const n = 20;
  await Promise.all(
    Array.from({ length: n }, (_, i) => request(url(`/api/budget/x?status=503&delay=300&tag=bud&i=${i}`))),
  );
  const hits = up.count(tagged('bud'));
  assert.ok(hits >= n, `every request tried (${hits})`);
  // Unbounded retries would make 3n; the 20 % budget (at least 3 at a time) allows far fewer.
  assert.ok(hits <= n + 15, `retries bounded by the budget: ${hits} upstream hits for ${n} requests`);
});

test('circuit breaker: opens after 5 failures (fast 503, upstream untouched), half-opens after the cool-down', opts, async () => {
  for (let i = 0; i < 5; i++) {
    const r = await request(url(`/api/brk/x?status=500&tag=brk-fail`));
    assert.equal(r.status, 500, `failure ${i + 1} is relayed`);
  }
  assert.equal(up.count(tagged('brk-fail')), 5);
  const t0 = Date.now();
  for (let i = 0; i < 3; i++) assertError(assert, await request(url('/api/brk/x?tag=brk-open')), 503, 'unavailable');
  assert.ok(Date.now() - t0 < T(500), 'fast');
  assert.equal(up.count(tagged('brk-open')), 0, 'nothing reached the upstream while open');
  const m = await request(gw.adminUrl + '/metrics');
  assert.match(m.text, /upstream_breaker_state\{upstream="brk"\} 1\b/, 'breaker state 1 (open) in /metrics');

  await sleep(800);
  const probe = await request(url('/api/brk/x?tag=brk-probe'));
  assert.equal(probe.status, 200, 'the half-open probe went through');
  assert.equal(up.count(tagged('brk-probe')), 1);
  for (let i = 0; i < 3; i++) assert.equal((await request(url('/api/brk/x?tag=brk-closed'))).status, 200);
  assert.equal(up.count(tagged('brk-closed')), 3, 'closed again');
});

test('circuit breaker: a failed half-open probe opens it again', opts, async () => {
  for (let i = 0; i < 5; i++) await request(url('/api/brk/x?status=503&tag=brk2'));
  assertError(assert, await request(url('/api/brk/x?tag=brk2-open')), 503, 'unavailable');
  await sleep(800);
  assert.equal((await request(url('/api/brk/x?status=500&tag=brk2-probe'))).status, 500);
  assertError(assert, await request(url('/api/brk/x?tag=brk2-reopened')), 503, 'unavailable');
  assert.equal(up.count(tagged('brk2-reopened')), 0);
  await sleep(800);
  assert.equal((await request(url('/api/brk/x?tag=brk2-ok'))).status, 200);
});

test('outlier ejection: the failing instance of two is ejected after 5 failures, then readmitted', opts, async () => {
  const statuses = [];
  for (let i = 0; i < 24; i++) statuses.push((await request(url(`/api/pair/x?tag=pair&i=${i}`))).status);
  const badHits = bad.count(tagged('pair'));
  const goodHits = good.count(tagged('pair'));
  assert.equal(badHits, 5, `the bad instance got exactly 5 before ejection (statuses ${statuses.join(',')})`);
  assert.equal(goodHits, 19);
  assert.deepEqual(statuses.slice(12), Array(12).fill(200), 'after ejection every answer is good');
  const m = await request(gw.adminUrl + '/metrics');
  assert.match(m.text, new RegExp(`upstream_instance_ejected\\{upstream="pair",instance="${bad.address}"\\} 1\\b`));
  assert.match(m.text, /upstream_ejections_total\{upstream="pair"\} [1-9]/);

  // The 1.5 s ejection lapses and the instance gets traffic again.
  await sleep(1700);
  for (let i = 0; i < 4; i++) await request(url(`/api/pair/x?tag=pair-back&i=${i}`));
  assert.ok(bad.count(tagged('pair-back')) >= 1, 'readmitted after the ejection time');
});

test('active health checks: an instance whose /readyz says 503 gets no traffic until it recovers', opts, async () => {
  hcB.ready = false;
  await hcB.waitFor((h) => h.path === '/readyz' && h.status === 503, T(3000));
  await sleep(300);
  for (let i = 0; i < 8; i++) assert.equal((await request(url(`/api/checked/x?tag=hc1&i=${i}`))).status, 200);
  assert.equal(hcB.count(tagged('hc1')), 0, 'the unready instance got nothing');
  assert.equal(hcA.count(tagged('hc1')), 8);
  hcB.ready = true;
  const since = hcB.hits.length;
  await hcB.waitFor((h) => h.seq > since && h.path === '/readyz' && h.status === 200, T(3000));
  await sleep(300);
  for (let i = 0; i < 8; i++) await request(url(`/api/checked/x?tag=hc2&i=${i}`));
  assert.ok(hcB.count(tagged('hc2')) >= 3, 'back in rotation');
});

test('an upstream that does not accept connections: 503 at the connect timeout, not the route timeout', opts, async () => {
  const t0 = Date.now();
  const r = await request(url('/api/hole/x'));
  const took = Date.now() - t0;
  assertError(assert, r, [502, 503], ['bad_gateway', 'unavailable']);
  assert.ok(took >= 250 && took < T(2000), `answered at the 300 ms connect timeout (${took} ms)`);
  const m = await request(gw.adminUrl + '/metrics');
  assert.match(m.text, /^upstream_connect_errors_total\{upstream="hole"\} [1-9]/m);
});

test('an upstream process killed before answering: 502 bad_gateway, not a hang', opts, async () => {
  const p = request(url('/api/child/x?delay=5000'), { method: 'POST', body: '{}' });
  await sleep(300);
  const t0 = Date.now();
  await child.kill('SIGKILL');
  const r = await p;
  assertError(assert, r, 502, 'bad_gateway');
  assert.ok(Date.now() - t0 < T(2000), 'at once');
  // Nothing listens there now: refused connections are 503, quickly.
  const r2 = await request(url('/api/child/x'), { method: 'POST', body: '{}' });
  assertError(assert, r2, [502, 503], ['bad_gateway', 'unavailable']);
});

test('an upstream that dies mid-body: the client sees a cut response, never a complete one', opts, async () => {
  // close=body: head and half the announced body, then the socket is destroyed.
  const r = await new Promise((resolve) => {
    const req = http.get(url('/api/hang/x?size=2000000&close=body'), { agent: false }, (res) => {
      let n = 0;
      res.on('data', (c) => (n += c.length));
      res.on('end', () => resolve({ status: res.statusCode, n, complete: res.complete }));
      res.on('error', () => resolve({ status: res.statusCode, n, complete: false }));
      res.on('aborted', () => resolve({ status: res.statusCode, n, complete: false }));
    });
    req.on('error', (e) => resolve({ error: e.code }));
  });
  if (r.error) return; // refused before the head: also not a complete answer
  assert.equal(r.status, 200);
  assert.ok(!r.complete || r.n < 2000000, `the cut is visible to the client (${JSON.stringify(r)})`);
  assert.ok(r.n < 2000000);
});

test('a client that disconnects cancels the upstream request', opts, async () => {
  const c = await RawConn.open(gw.port);
  await c.write(rawRequest('GET', '/api/hang/x?hang=1&tag=cancel1', { 'X-Request-Id': 'cancel-1' }));
  await up.waitFor(tagged('cancel1'), T(3000));
  c.destroy();
  const rec = await up.waitFor((h) => tagged('cancel1')(h) && h.aborted, T(2000));
  assert.ok(rec.aborted, 'the upstream saw its request closed');
  const line = await gw.waitAccess((e) => e.request_id === 'cancel-1', T(3000));
  assert.equal(line.status, 499, 'logged as 499 (client closed request)');
});

test('a client that disconnects while still sending its body cancels the upstream request', opts, async () => {
  const c2 = await RawConn.open(gw.port);
  await c2.write(rawRequest('POST', '/api/hang/x?tag=cancel2', { 'Content-Length': '1000000' }));
  await c2.write(Buffer.alloc(100000, 'x'));
  await up.waitFor((h) => tagged('cancel2')(h) && h.bodyBytes > 0, T(3000));
  c2.destroy();
  await up.waitFor((h) => tagged('cancel2')(h) && h.done, T(2000));
});

// ---------------------------------------------------- a real service killed and restarted

// A real `trellis serve auth` behind its own gateway: SIGKILLed until the
// breaker is open, then restarted on the same port and data directory. The
// gateway's active health check (every 200 ms) must close the breaker as
// soon as auth is ready, instead of answering 503 for the rest of the 5 s
// cool-down. While it is down, credentials are still judged first: an
// anonymous or badly authenticated request to an `auth: required` route is
// 401, not 503, so the service's state is not revealed to such callers.
test('a killed and restarted service is served again within ~1 s of its readiness; 401 comes before 503', opts, async () => {
  const crypto = await import('node:crypto');
  const { signJwt, startService, tempDir } = await import('./lib/harness.mjs');
  const secret = crypto.randomBytes(32).toString('hex');
  const dataDir = tempDir('trellis-restart-');
  let svc = await startService('auth', { dataDir, args: ['--jwt-secret', secret] });
  const port = svc.port;
  let g = null;
  try {
    g = await startGateway({
      args: ['--jwt-secret', secret],
      routes: {
        version: 1,
        upstreams: {
          auth: {
            instances: [`127.0.0.1:${port}`],
            health: { path: '/readyz', interval: '200ms', timeout: '500ms', unhealthy_threshold: 100, healthy_threshold: 1 },
            outlier: NO_OUTLIER,
            breaker: { failures: 3, cooldown: '5s' },
          },
        },
        routes: [
          { path: '/api/auth/*', upstream: 'auth', auth: 'none', retry: false },
          { path: '/api/locked/*', upstream: 'auth', auth: 'required', api_key: true, retry: false },
        ],
      },
    });
    const at = (p, headers = {}) => request(g.url + p, { headers });
    assert.equal((await at('/api/auth/jwks.json')).status < 500, true, 'served before the kill');

    await svc.proc.kill('SIGKILL');
    await svc.stop({ check: false });
    // Refused connects open the breaker (3 failures), then it fails fast.
    for (let i = 0; i < 3; i++) assertError(assert, await at('/api/auth/jwks.json'), 503, 'unavailable');
    const fast = await at('/api/auth/jwks.json');
    assertError(assert, fast, 503, 'unavailable');
    assert.match(fast.json.error.message, /breaker|circuit/i, fast.text);

    // Credentials before topology, with the service down and its breaker open.
    const t = Math.floor(Date.now() / 1000);
    const good = signJwt({ alg: 'HS256', typ: 'JWT' }, { sub: crypto.randomUUID(), sid: crypto.randomUUID(), iss: 'trellis', aud: 'trellis', iat: t, exp: t + 600 }, Buffer.from(secret, 'utf8'));
    const expired = signJwt({ alg: 'HS256', typ: 'JWT' }, { sub: crypto.randomUUID(), sid: crypto.randomUUID(), iss: 'trellis', aud: 'trellis', iat: t - 900, exp: t - 600 }, Buffer.from(secret, 'utf8'));
    for (const [why, headers] of [
      ['anonymous', {}],
      ['not a bearer token', { Authorization: 'Basic dXNlcjpwYXNz' }],
      ['a forged token', { Authorization: `Bearer ${good.slice(0, -4)}AAAA` }],
      ['an expired token', { Authorization: `Bearer ${expired}` }],
      ['a malformed API key', { 'X-API-Key': 'bad key' }],
    ]) {
      const r = await at('/api/locked/x', headers);
      assertError(assert, r, 401, 'unauthenticated');
      assert.ok(r.headers['www-authenticate'] || headers['X-API-Key'], `${why}: WWW-Authenticate`);
    }
    // A good token is let through to the (absent) service: only now 503.
    assertError(assert, await at('/api/locked/x', { Authorization: `Bearer ${good}` }), 503, 'unavailable');

    // Restart on the same port; readiness is auth's own /readyz answering 200.
    svc = await startService('auth', { dataDir, args: ['--jwt-secret', secret, '--port', String(port)] });
    assert.equal(svc.port, port);
    let ready = 0;
    while (!ready) {
      if ((await request(`${svc.url}/readyz`)).status === 200) ready = Date.now();
      else await sleep(20);
    }
    let served = 0;
    let last;
    while (!served && Date.now() - ready < T(6000)) {
      last = await at('/api/auth/jwks.json');
      if (last.status < 500) served = Date.now();
      else await sleep(25);
    }
    assert.ok(served, `never served again: ${last?.status} ${last?.text}`);
    const lag = served - ready;
    assert.ok(lag <= T(1500), `served ${lag} ms after auth was ready (the cool-down is 5 s)`);
    await g.waitLog((e) => e.msg === 'upstream breaker closed by a passing health check', T(2000));
  } finally {
    await g?.stop();
    await svc.stop({ check: false });
  }
});
