// Operating the gateway (issue 3: SIGHUP reload, observability, static
// files, CORS): routes reloaded without dropping open connections and an
// invalid file rejected with the old routes kept; the aggregated /healthz;
// /metrics with the gateway's series, valid for `promtool check metrics`;
// the access log line; the web root served with content types, ETag/304 and
// no way out of it; CORS preflight and allow-list at the edge.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, test } from 'node:test';

import { RawConn, T, assertError, closedPort, rawRequest, request, sleep, tempDir } from './lib/harness.mjs';
import { startGateway, startUpstream } from './lib/upstream.mjs';

const opts = { timeout: T(30000) };
const ORIGIN = 'https://app.example';
let up; // serves the routes
let req; // a required upstream with active health checks
let gw;
let deadPort;
let webRoot;
let routes;
const conns = new Set();

const INDEX = '<!doctype html><title>Trellis</title><p>dashboard</p>\n';
const SECRET = 'top secret outside the web root\n';

before(async () => {
  up = await startUpstream({ name: 'ops' });
  req = await startUpstream({ name: 'required' });
  deadPort = await closedPort();
  const dir = tempDir('trellis-gwweb-');
  webRoot = path.join(dir, 'web');
  fs.mkdirSync(path.join(webRoot, 'assets'), { recursive: true });
  fs.mkdirSync(path.join(webRoot, 'empty'));
  fs.writeFileSync(path.join(dir, 'secret.txt'), SECRET);
  fs.writeFileSync(path.join(webRoot, 'index.html'), INDEX);
  fs.writeFileSync(path.join(webRoot, 'assets', 'app.js'), 'console.log("hi");\n');
  fs.writeFileSync(path.join(webRoot, 'assets', 'site.css'), 'body { color: black; }\n');
  fs.writeFileSync(path.join(webRoot, 'assets', 'data.json'), '{"a":1}\n');
  fs.writeFileSync(path.join(webRoot, 'assets', 'logo.svg'), '<svg xmlns="http://www.w3.org/2000/svg"/>\n');
  fs.writeFileSync(path.join(webRoot, 'assets', 'pixel.png'), Buffer.from('89504e470d0a1a0a0000000d49484452', 'hex'));
  routes = {
    version: 1,
    upstreams: {
      ops: { instances: [up.address], health: null },
      must: {
        instances: [req.address],
        required: true,
        health: { path: '/readyz', interval: '100ms', timeout: '500ms', unhealthy_threshold: 1, healthy_threshold: 1 },
      },
      gone: { instances: [`127.0.0.1:${deadPort}`], health: null },
      maybe: {
        instances: [`127.0.0.1:${deadPort}`],
        required: false,
        health: { path: '/readyz', interval: '100ms', timeout: '300ms', unhealthy_threshold: 1, healthy_threshold: 1 },
      },
    },
    routes: [
      { name: 'first', path: '/api/first/*', upstream: 'ops' },
      { path: '/api/gone/*', upstream: 'gone', retry: false },
      { path: '/api/must/*', upstream: 'must' },
      { path: '/api/maybe/*', upstream: 'maybe', retry: false },
    ],
  };
  gw = await startGateway({
    routes,
    args: ['--web-root', webRoot, '--cors-origins', `${ORIGIN},https://other.example`, '--cors-max-age', '10m'],
  });
});

after(async () => {
  for (const c of conns) c.destroy();
  try {
    await gw?.stop();
  } finally {
    await up?.close();
    await req?.close();
  }
});

const url = (p) => gw.url + p;
async function open() {
  const c = await RawConn.open(gw.port);
  conns.add(c);
  return c;
}
const asRes = (r) => ({ status: r.status, headers: r.headers, text: r.text, json: r.json });

// ---------------------------------------------------------------- reload

test('SIGHUP: a new route works at once, an open keep-alive connection and a request in flight survive', opts, async () => {
  const c = await open();
  await c.write(rawRequest('GET', '/api/first/a'));
  assert.equal((await c.readResponse()).status, 200);
  await c.write(rawRequest('GET', '/api/second/a'));
  assertError(assert, asRes(await c.readResponse()), 404, 'not_found');

  const inFlight = request(url('/api/first/slow?delay=700'));
  await sleep(100);
  const mark = gw.logs.length;
  routes.routes.push({ name: 'second', path: '/api/second/*', upstream: 'ops' });
  gw.reload(routes);
  const line = await gw.waitLog((e) => e.msg === 'routes reloaded' && gw.logs.indexOf(e) >= mark, T(5000));
  assert.equal(line.routes, routes.routes.length);

  await c.write(rawRequest('GET', '/api/second/b'));
  const r = await c.readResponse();
  assert.equal(r.status, 200, 'the new route answers on the old connection');
  assert.equal(r.json.path, '/api/second/b');
  await c.write(rawRequest('GET', '/api/first/b'));
  assert.equal((await c.readResponse()).status, 200, 'old routes kept');
  assert.equal(c.ended || c.closed, false, 'the connection was not dropped');
  assert.equal((await inFlight).status, 200, 'the request in flight finished');
});

test('SIGHUP with an invalid file: rejected with a clear log line, the old routes stay', opts, async () => {
  const c = await open();
  await c.write(rawRequest('GET', '/api/first/x'));
  assert.equal((await c.readResponse()).status, 200);
  for (const bad of [
    '{"version":1,"routes":[{"path":"/api/first/*","upstream":"ops",', // truncated JSON
    JSON.stringify({ ...routes, routes: [...routes.routes, { path: '/api/third/*', upstream: 'ops', timeout: 5 }] }),
    JSON.stringify({ ...routes, routes: [...routes.routes, { path: '/api/third/*', upstream: 'nowhere-declared' }] }),
    JSON.stringify({ ...routes, routes: [...routes.routes, { path: '/api/third/*', upstream: 'ops', tiemout: '1s' }] }),
  ]) {
    const mark = gw.logs.length;
    gw.reload(bad);
    const line = await gw.waitLog((e) => e.msg === 'routes reload rejected' && gw.logs.indexOf(e) >= mark, T(5000));
    assert.equal(line.level, 'warn');
    assert.match(String(line.error), /routes\.json/, `the error names the file: ${line.error}`);
    await c.write(rawRequest('GET', '/api/first/y'));
    assert.equal((await c.readResponse()).status, 200, 'old route still answers');
    assertError(assert, await request(url('/api/third/x')), 404, 'not_found');
  }
  // The field is named: the typo'd one above.
  assert.ok(gw.logs.some((e) => e.msg === 'routes reload rejected' && /tiemout/.test(String(e.error))));
  fs.rmSync(gw.routesFile);
  const mark = gw.logs.length;
  gw.reload();
  await gw.waitLog((e) => e.msg === 'routes reload rejected' && gw.logs.indexOf(e) >= mark, T(5000));
  assert.equal((await request(url('/api/second/z'))).status, 200, 'a missing file keeps the table too');
  gw.writeRoutes(routes);
  const m = await request(gw.adminUrl + '/metrics');
  assert.match(m.text, /gateway_routes_reloads_total\{result="(rejected|error|failed)"\} [1-9]/);
  assert.equal(c.ended || c.closed, false);
});

test('a route under /internal is refused at load, or at least never routed', opts, async () => {
  const u = await startUpstream({ name: 'internal' });
  let g = null;
  try {
    g = await startGateway({
      routes: { version: 1, upstreams: { inside: { instances: [u.address], health: null } }, routes: [{ path: '/internal/*', upstream: 'inside' }] },
      timeoutMs: T(10000),
    });
  } catch (e) {
    assert.match(e.message, /internal/i, 'the refusal names the problem');
  }
  try {
    if (g) {
      assertError(assert, await request(`${g.url}/internal/revocations`), 404, 'not_found');
      assert.equal(u.calls().length, 0);
    }
  } finally {
    await g?.stop();
    await u.close();
  }
});

test('an invalid routes file at start: the gateway refuses to start and says why', opts, async () => {
  let err = null;
  try {
    const g = await startGateway({ routes: '{"version":1,"routes":[{"path":"api/no-slash","upstream":"auth"}]}', timeoutMs: T(10000) });
    await g.stop();
  } catch (e) {
    err = e;
  }
  assert.ok(err, 'a path without a leading slash is refused');
  assert.match(err.message, /routes\[0\]\.path/);
});

// ---------------------------------------------------------------- health and metrics

test('/healthz aggregates upstream state; 503 while a required upstream is down', opts, async () => {
  // Give the 100 ms checks time to mark the dead optional one.
  await sleep(500);
  let h = await request(url('/healthz'));
  assert.equal(h.status, 200, h.text);
  assert.ok(['ok', 'degraded'].includes(h.json.status), h.text);
  assert.equal(h.json.services.must, 'up');
  assert.equal(h.json.services.maybe, 'down', 'an optional upstream that is down is reported');
  assert.equal(h.json.services.ops, 'up');

  req.ready = false;
  const t0 = Date.now();
  do {
    await sleep(100);
    h = await request(url('/healthz'));
  } while (h.status === 200 && Date.now() - t0 < T(3000));
  assert.equal(h.status, 503, h.text);
  assert.equal(h.json.services.must, 'down');
  assert.notEqual(h.json.status, 'ok');
  req.ready = true;
  do {
    await sleep(100);
    h = await request(url('/healthz'));
  } while (h.status === 503 && Date.now() - t0 < T(6000));
  assert.equal(h.status, 200, 'recovers with the upstream');
  assert.equal((await request(url('/readyz'))).status, 200);
});

test('/metrics (admin port) has the gateway series and passes promtool check metrics; 404 on the public port', opts, async () => {
  await request(url('/api/first/m?status=201'));
  await request(url('/api/gone/m'));
  await request(url('/nope'));
  const r = await request(gw.adminUrl + '/metrics');
  assert.equal(r.status, 200);
  assert.match(String(r.headers['content-type']), /^text\/plain/);
  const t = r.text;
  assert.match(t, /^gateway_requests_total\{[^}]*route="first"[^}]*\} [1-9]/m, 'requests by route');
  assert.match(t, /^gateway_requests_total\{[^}]*upstream="ops"[^}]*status="201"[^}]*\} [1-9]/m, 'by upstream and status');
  assert.match(t, /^http_request_duration_seconds_bucket\{[^}]*le="\+Inf"[^}]*\} [1-9]/m, 'latency histogram');
  assert.match(t, /^upstream_request_duration_seconds_bucket\{[^}]*upstream="ops"[^}]*\} /m, 'upstream latency');
  assert.match(t, /^upstream_requests_total\{[^}]*upstream="ops"[^}]*\} [1-9]/m);
  assert.match(t, /^upstream_breaker_state\{upstream="ops"\} 0$/m, 'breaker state');
  assert.match(t, /^upstream_connect_errors_total\{upstream="gone"\} [1-9]/m, 'connect errors');
  assert.match(t, /^# TYPE upstream_ejections_total counter$/m, 'ejections');
  assert.match(t, /^# TYPE upstream_retries_total counter$/m, 'retries');
  assert.match(t, /^# TYPE gateway_rate_limited_total counter$/m, 'rate-limited count');
  assert.match(t, /^http_requests_in_flight /m, 'active requests');
  // Operator data is not on the public port; the probes are on both.
  assertError(assert, await request(url('/metrics')), 404, 'not_found');
  const ah = await request(gw.adminUrl + '/healthz');
  assert.equal(ah.status, 200, ah.text);
  assert.equal(ah.json.services.ops, 'up', 'the aggregated /healthz on the admin port too');
  assert.equal((await request(gw.adminUrl + '/readyz')).status, 200);
  const check = spawnSync('promtool', ['check', 'metrics'], { input: t, encoding: 'utf8' });
  assert.ok(!check.error, `promtool runs (scripts/deps.sh installs it): ${check.error?.message}`);
  assert.equal(check.status, 0, `promtool check metrics:\n${check.stdout}${check.stderr}`);
  assert.match(t, /^# TYPE \w*connections\w* gauge$/m, 'a gauge of open client connections (issue 3: "active connections")');
});

test('access log: one line per request with ids, route, upstream and both latencies', opts, async () => {
  const id = `gwlog-${Date.now()}`;
  const traceId = 'ab'.repeat(16);
  const r = await request(url('/api/first/logged?delay=50'), {
    headers: { 'X-Request-Id': id, traceparent: `00-${traceId}-${'cd'.repeat(8)}-01` },
  });
  assert.equal(r.status, 200);
  const line = await gw.waitAccess((e) => e.request_id === id);
  assert.equal(line.service, 'gateway');
  assert.equal(line.trace_id, traceId);
  assert.equal(line.method, 'GET');
  assert.equal(line.route, 'first');
  assert.equal(line.status, 200);
  assert.equal(line.upstream, 'ops');
  assert.equal(line.instance, up.address);
  assert.equal(typeof line.upstream_ms, 'number');
  assert.equal(typeof line.duration_ms, 'number');
  assert.ok(line.upstream_ms >= 40, `upstream latency includes the 50 ms delay (${line.upstream_ms})`);
  assert.ok(line.duration_ms >= line.upstream_ms, 'total >= upstream');
  assert.equal(line.user_id, undefined, 'anonymous');
  // An answer the gateway gives itself has no upstream.
  const id2 = `gwlog2-${Date.now()}`;
  await request(url('/nope'), { headers: { 'X-Request-Id': id2 } });
  const l2 = await gw.waitAccess((e) => e.request_id === id2);
  assert.equal(l2.status, 404);
  assert.ok(!l2.upstream, 'no upstream for a 404');
  assert.match(String(l2.trace_id), /^[0-9a-f]{32}$/, 'a trace id even when none was sent');
  const raws = gw.logs.filter((e) => 'raw' in e && e.raw.trim() !== '');
  assert.deepEqual(raws, [], 'every stderr line is JSON');
});

// ---------------------------------------------------------------- static files

test('static files: index at /, content types, HEAD', opts, async () => {
  let r = await request(url('/'));
  assert.equal(r.status, 200);
  assert.equal(r.text, INDEX);
  assert.match(r.headers['content-type'], /^text\/html\b/);
  for (const [p, type] of [
    ['/index.html', /^text\/html\b/],
    ['/assets/app.js', /^(application|text)\/javascript\b/],
    ['/assets/site.css', /^text\/css\b/],
    ['/assets/data.json', /^application\/json\b/],
    ['/assets/logo.svg', /^image\/svg\+xml\b/],
    ['/assets/pixel.png', /^image\/png$/],
  ]) {
    r = await request(url(p));
    assert.equal(r.status, 200, p);
    assert.match(String(r.headers['content-type']), type, `${p}: ${r.headers['content-type']}`);
    assert.equal(r.headers['x-content-type-options'], 'nosniff');
  }
  r = await request(url('/assets/app.js'), { method: 'HEAD' });
  assert.equal(r.status, 200);
  assert.equal(r.body.length, 0);
  assert.equal(Number(r.headers['content-length']), fs.statSync(path.join(webRoot, 'assets', 'app.js')).size);
  assertError(assert, await request(url('/assets/missing.js')), 404, 'not_found');
  assertError(assert, await request(url('/empty/')), 404, 'not_found');
});

test('static files: ETag and If-None-Match -> 304; a changed file gets a new ETag', opts, async () => {
  const f = path.join(webRoot, 'assets', 'site.css');
  const r = await request(url('/assets/site.css'));
  const etag = r.headers.etag;
  assert.match(etag || '', /^(W\/)?".+"$/, `ETag: ${etag}`);
  const nm = await request(url('/assets/site.css'), { headers: { 'If-None-Match': etag } });
  assert.equal(nm.status, 304);
  assert.equal(nm.body.length, 0);
  assert.equal(nm.headers.etag, etag);
  assert.equal((await request(url('/assets/site.css'), { headers: { 'If-None-Match': '"other"' } })).status, 200);
  assert.equal((await request(url('/assets/site.css'), { headers: { 'If-None-Match': `"x", ${etag}` } })).status, 304);
  fs.writeFileSync(f, 'body { color: red; } /* changed */\n');
  const later = new Date(Date.now() + 5000);
  fs.utimesSync(f, later, later);
  const r2 = await request(url('/assets/site.css'), { headers: { 'If-None-Match': etag } });
  assert.equal(r2.status, 200);
  assert.notEqual(r2.headers.etag, etag);
  assert.match(r2.text, /changed/);
});

test('static files: Cache-Control no-cache, hidden names and links out of the root refused', opts, async () => {
  const r = await request(url('/assets/app.js'));
  assert.match(r.headers['cache-control'] || '', /no-cache/);
  fs.writeFileSync(path.join(webRoot, '.env'), 'SECRET=1\n');
  fs.mkdirSync(path.join(webRoot, '.git'), { recursive: true });
  fs.writeFileSync(path.join(webRoot, '.git', 'config'), '[core]\n');
  fs.symlinkSync(path.join(path.dirname(webRoot), 'secret.txt'), path.join(webRoot, 'assets', 'link.txt'));
  fs.symlinkSync(path.dirname(webRoot), path.join(webRoot, 'up'));
  fs.writeFileSync(path.join(webRoot, 'assets', 'index.html'), '<p>assets index</p>\n');
  for (const p of ['/.env', '/.git/config', '/assets/link.txt', '/up/secret.txt']) {
    const x = await request(url(p));
    assert.equal(x.status, 404, `${p}: ${x.status}`);
    assert.ok(!x.text.includes('SECRET') && !x.text.includes('top secret') && !x.text.includes('[core]'), `${p} leaked`);
  }
  const idx = await request(url('/assets/'));
  assert.equal(idx.status, 200, 'a path ending in / means its index.html');
  assert.match(idx.text, /assets index/);
});

test('static files: no path leads outside the web root', opts, async () => {
  const attempts = [
    '/../secret.txt',
    '/%2e%2e/secret.txt',
    '/%2E%2E/secret.txt',
    '/..%2fsecret.txt',
    '/..%2Fsecret.txt',
    '/%2e%2e%2fsecret.txt',
    '/assets/../../secret.txt',
    '/assets/%2e%2e/%2e%2e/secret.txt',
    '/assets/..%2f..%2fsecret.txt',
    '/..%5csecret.txt',
    '/..\\secret.txt',
    '/.%2e/secret.txt',
    '/%252e%252e/secret.txt',
    `/${'..%2f'.repeat(12)}etc/passwd`,
    '//etc/passwd',
    '/index.html%00.png',
    '/%00',
  ];
  for (const p of attempts) {
    const c = await open();
    await c.write(rawRequest('GET', p));
    const r = await c.readResponse();
    c.destroy();
    assert.ok([400, 403, 404].includes(r.status), `${p}: ${r.status}`);
    assert.ok(!r.text.includes('top secret') && !r.text.includes('root:'), `${p} leaked a file`);
  }
});

test('static files only for GET and HEAD; routes take precedence', opts, async () => {
  const r = await request(url('/index.html'), { method: 'POST', body: 'x' });
  assert.ok([404, 405].includes(r.status), `${r.status}`);
  assert.equal((await request(url('/api/first/x'))).json.path, '/api/first/x');
});

// ---------------------------------------------------------------- CORS

test('CORS preflight from an allowed origin is answered at the edge', opts, async () => {
  const before = up.calls().length;
  const r = await request(url('/api/first/x'), {
    method: 'OPTIONS',
    headers: { Origin: ORIGIN, 'Access-Control-Request-Method': 'PUT', 'Access-Control-Request-Headers': 'Content-Type, X-Custom' },
  });
  assert.ok([200, 204].includes(r.status), `${r.status} ${r.text}`);
  assert.equal(r.headers['access-control-allow-origin'], ORIGIN);
  assert.match(r.headers['access-control-allow-methods'] || '', /\bPUT\b/);
  assert.match(r.headers['access-control-allow-headers'] || '', /content-type/i);
  assert.match(r.headers['access-control-allow-headers'] || '', /x-custom/i);
  assert.equal(r.headers['access-control-max-age'], '600');
  assert.match(r.headers.vary || '', /origin/i);
  assert.equal(up.calls().length, before, 'the upstream never saw the preflight');
});

test('CORS preflight from another origin gets no allowance', opts, async () => {
  const before = up.calls().length;
  const r = await request(url('/api/first/x'), {
    method: 'OPTIONS',
    headers: { Origin: 'https://evil.example', 'Access-Control-Request-Method': 'DELETE' },
  });
  assert.equal(r.headers['access-control-allow-origin'], undefined);
  assert.equal(r.headers['access-control-allow-methods'], undefined);
  assert.equal(r.status, 403);
  assert.equal(up.calls().length, before);
  // Nor one that merely starts like an allowed one.
  const r2 = await request(url('/api/first/x'), {
    method: 'OPTIONS',
    headers: { Origin: `${ORIGIN}.evil.example`, 'Access-Control-Request-Method': 'GET' },
  });
  assert.equal(r2.headers['access-control-allow-origin'], undefined);
});

test('CORS on actual requests: allowed origins get the header (errors too), others do not', opts, async () => {
  let r = await request(url('/api/first/x'), { headers: { Origin: 'https://other.example' } });
  assert.equal(r.status, 200);
  assert.equal(r.headers['access-control-allow-origin'], 'https://other.example');
  assert.match(r.headers.vary || '', /origin/i);
  assert.match(r.headers['access-control-expose-headers'] || '', /x-request-id/i, 'scripts may read X-Request-Id');
  r = await request(url('/nope'), { headers: { Origin: ORIGIN } });
  assert.equal(r.status, 404);
  assert.equal(r.headers['access-control-allow-origin'], ORIGIN, 'a browser can read the error');
  r = await request(url('/api/first/x'), { headers: { Origin: 'https://evil.example' } });
  assert.equal(r.status, 200, 'CORS is the browser\'s to enforce; the request is served');
  assert.equal(r.headers['access-control-allow-origin'], undefined);
  // An upstream's own CORS headers do not override the edge's decision.
  r = await request(url(`/api/first/x?h=${encodeURIComponent('Access-Control-Allow-Origin: *')}`), {
    headers: { Origin: 'https://evil.example' },
  });
  assert.notEqual(r.headers['access-control-allow-origin'], '*');
});

test('/healthz says unknown, never up, until the health checks reach a verdict', opts, async () => {
  // Checks every 60 s (the first at start) and two failures to condemn: a
  // dead upstream has one failed check and no verdict for a minute, so it
  // must read "unknown"; a live one passes its first check and reads "up".
  const live = await startUpstream({ name: 'live' });
  const dead = await closedPort();
  const slowChecks = { path: '/readyz', interval: '60s', timeout: '500ms', unhealthy_threshold: 2, healthy_threshold: 1 };
  let g = null;
  try {
    g = await startGateway({
      routes: {
        version: 1,
        upstreams: {
          live: { instances: [live.address], health: slowChecks },
          dead: { instances: [`127.0.0.1:${dead}`], health: slowChecks, required: true },
          unchecked: { instances: [`127.0.0.1:${dead}`], health: null },
        },
        routes: [
          { path: '/api/live/*', upstream: 'live' },
          { path: '/api/dead/*', upstream: 'dead' },
          { path: '/api/unchecked/*', upstream: 'unchecked' },
        ],
      },
    });
    let h;
    const t0 = Date.now();
    do {
      h = await request(`${g.url}/healthz`);
      assert.equal(h.json.services.dead, 'unknown', `no verdict yet, so not "up": ${h.text}`);
      if (h.json.services.live === 'up') break;
      assert.equal(h.json.services.live, 'unknown', h.text);
      await sleep(20);
    } while (Date.now() - t0 < T(3000));
    assert.equal(h.json.services.live, 'up', h.text);
    assert.equal(h.json.services.unchecked, 'up', 'without health checks there is no verdict to wait for');
    assert.equal(h.status, 200, 'an unknown required upstream does not degrade the gateway');
    assert.equal(h.json.status, 'ok');
  } finally {
    await g?.stop();
    await live.close();
  }
});
