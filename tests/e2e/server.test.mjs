// The service kit's HTTP server as seen through the auth service: protocol
// features (keep-alive, pipelining, chunked bodies, HEAD, 100-continue),
// limits (431, 413, 408, 400), RFC 9112 framing (414, 501, Host, obs-fold,
// chunk framing, the request deadline), routing errors, request ids, health and
// metrics endpoints, and the access log (fields present, secrets absent).
import assert from 'node:assert/strict';
import { test } from 'node:test';

import {
  PASSWORD,
  RawConn,
  T,
  api,
  assertError,
  rawRequest,
  registerUser,
  request,
  sleep,
  uniqueEmail,
  useService,
} from './lib/harness.mjs';

const opts = { timeout: T(30000) };
let user; // a registered user for login-based requests
const conns = new Set();
const server = useService('auth', { args: ['--header-timeout', '1s', '--request-timeout', '3s'] }, {
  async started({ url }) {
    user = await registerUser(url);
  },
  stopping() {
    for (const c of conns) c.destroy();
  },
});

async function open() {
  const c = await RawConn.open(server.svc.port);
  conns.add(c);
  return c;
}

/** Parses an error envelope out of a raw response for assertError. */
const asRes = (r) => ({ status: r.status, headers: r.headers, text: r.text, json: r.json });

const loginBody = () => JSON.stringify({ email: user.email, password: PASSWORD });

test('keep-alive: two requests on one connection', opts, async () => {
  const c = await open();
  await c.write(rawRequest('GET', '/healthz', { 'X-Request-Id': 'ka-1' }));
  const r1 = await c.readResponse();
  assert.equal(r1.status, 200);
  assert.equal(r1.headers['x-request-id'], 'ka-1');
  assert.doesNotMatch(String(r1.headers.connection || ''), /close/i);
  await sleep(50);
  assert.equal(c.ended || c.closed, false, 'connection still open after the first answer');
  await c.write(rawRequest('GET', '/readyz', { 'X-Request-Id': 'ka-2' }));
  const r2 = await c.readResponse();
  assert.equal(r2.status, 200);
  assert.equal(r2.headers['x-request-id'], 'ka-2');
  c.destroy();
});

test('Connection: close is honoured', opts, async () => {
  const c = await open();
  await c.write(rawRequest('GET', '/healthz', { Connection: 'close' }));
  const r = await c.readResponse();
  assert.equal(r.status, 200);
  assert.ok(await c.waitClose(T(3000)), 'server closed the connection');
});

test('pipelining: three requests written at once are answered in order', opts, async () => {
  const c = await open();
  // The first is a login, whose password hash runs off the loop, so a server
  // that answered in completion order would answer it last.
  await c.write(
    Buffer.concat([
      rawRequest('POST', '/api/auth/login', { 'Content-Type': 'application/json', 'X-Request-Id': 'pipe-1' }, loginBody()),
      rawRequest('GET', '/healthz', { 'X-Request-Id': 'pipe-2' }),
      rawRequest('GET', '/api/auth/jwks.json', { 'X-Request-Id': 'pipe-3' }),
    ]),
  );
  const r1 = await c.readResponse();
  const r2 = await c.readResponse();
  const r3 = await c.readResponse();
  assert.deepEqual(
    [r1.headers['x-request-id'], r2.headers['x-request-id'], r3.headers['x-request-id']],
    ['pipe-1', 'pipe-2', 'pipe-3'],
  );
  assert.equal(r1.status, 200, r1.text);
  assert.equal(typeof r1.json.access_token, 'string');
  assert.equal(r2.status, 200);
  assert.deepEqual(r3.json, { keys: [] });
  c.destroy();
});

test('chunked request body to /api/auth/login is accepted', opts, async () => {
  const c = await open();
  const body = Buffer.from(loginBody());
  const parts = [body.subarray(0, 5), body.subarray(5, 20), body.subarray(20)];
  await c.write(
    rawRequest('POST', '/api/auth/login', { 'Content-Type': 'application/json', 'Transfer-Encoding': 'chunked' }),
  );
  for (const p of parts) {
    await c.write(`${p.length.toString(16)}\r\n`);
    await c.write(p);
    await c.write('\r\n');
    await sleep(20);
  }
  await c.write('0\r\n\r\n');
  const r = await c.readResponse();
  assert.equal(r.status, 200, r.text);
  assert.equal(r.json.user.id, user.user.id);
  c.destroy();
});

test('HEAD /healthz: headers with Content-Length, no body', opts, async () => {
  const c = await open();
  // A GET follows on the same connection: if HEAD leaked a body, the second
  // answer would not start where it should.
  await c.write(Buffer.concat([rawRequest('HEAD', '/healthz'), rawRequest('GET', '/healthz', { 'X-Request-Id': 'after-head' })]));
  const h = await c.readResponse({ head: true });
  assert.equal(h.status, 200);
  assert.ok(h.headers['content-length'] !== undefined, 'Content-Length present');
  const g = await c.readResponse();
  assert.equal(g.status, 200);
  assert.equal(g.headers['x-request-id'], 'after-head', 'the next response follows the HEAD head directly');
  assert.equal(Number(h.headers['content-length']), g.body.length, 'HEAD announces the GET body length');
  c.destroy();
});

test('Expect: 100-continue gets "HTTP/1.1 100 Continue" before the body is sent', opts, async () => {
  const c = await open();
  const body = loginBody();
  await c.write(
    rawRequest('POST', '/api/auth/login', {
      'Content-Type': 'application/json',
      'Content-Length': Buffer.byteLength(body),
      Expect: '100-continue',
    }),
  );
  const interim = await c.readResponse({ timeoutMs: T(3000) });
  assert.equal(interim.status, 100);
  assert.equal(interim.version, '1.1');
  await c.write(body);
  const r = await c.readResponse();
  assert.equal(r.status, 200, r.text);
  assert.equal(r.json.user.id, user.user.id);
  c.destroy();
});

test('Expect: 100-continue with an oversized body gets 413 at once, no 100', opts, async () => {
  const c = await open();
  await c.write(
    rawRequest('POST', '/api/auth/login', {
      'Content-Type': 'application/json',
      'Content-Length': 2 * 1024 * 1024,
      Expect: '100-continue',
    }),
  );
  const r = await c.readResponse({ timeoutMs: T(3000) });
  assertError(assert, asRes(r), 413, 'payload_too_large');
  c.destroy();
});

test('headers over 16 KiB: 431 headers_too_large and close', opts, async () => {
  const c = await open();
  await c.write(rawRequest('GET', '/healthz', { 'X-Big': 'a'.repeat(17 * 1024) }));
  const r = await c.readResponse();
  assertError(assert, asRes(r), 431, 'headers_too_large');
  assert.ok(await c.waitClose(T(3000)), 'connection closed');
});

test('headers just under 16 KiB are fine', opts, async () => {
  const r = await request(`${server.url}/healthz`, { headers: { 'X-Big': 'a'.repeat(15 * 1024) } });
  assert.equal(r.status, 200);
});

test('body over 1 MiB announced by Content-Length: 413 payload_too_large and close', opts, async () => {
  const c = await open();
  await c.write(
    rawRequest('POST', '/api/auth/login', { 'Content-Type': 'application/json', 'Content-Length': 1024 * 1024 + 1 }),
  );
  const r = await c.readResponse();
  assertError(assert, asRes(r), 413, 'payload_too_large');
  assert.ok(await c.waitClose(T(3000)), 'connection closed');
});

test('default body limit is 1 MiB: exactly 1 MiB is read, one byte more is 413', opts, async () => {
  // /healthz has no route-specific limit, so the server default applies.
  const c = await open();
  await c.write(rawRequest('GET', '/healthz', { 'Content-Length': 1024 * 1024, 'X-Request-Id': 'mib' }));
  await c.write(Buffer.alloc(1024 * 1024, 0x61));
  const ok = await c.readResponse();
  assert.equal(ok.status, 200, ok.text);
  assert.equal(ok.headers['x-request-id'], 'mib');
  c.destroy();
  const c2 = await open();
  await c2.write(rawRequest('GET', '/healthz', { 'Content-Length': 1024 * 1024 + 1 }));
  const r = await c2.readResponse();
  assertError(assert, asRes(r), 413, 'payload_too_large');
  assert.ok(await c2.waitClose(T(3000)), 'connection closed');
});

test('chunked body growing over 1 MiB: 413 payload_too_large', opts, async () => {
  const c = await open();
  await c.write(
    rawRequest('POST', '/api/auth/login', { 'Content-Type': 'application/json', 'Transfer-Encoding': 'chunked' }),
  );
  const chunk = Buffer.concat([Buffer.from('10000\r\n'), Buffer.alloc(0x10000, 0x20), Buffer.from('\r\n')]);
  // Send 64 KiB chunks until the server answers (at most 2 MiB).
  for (let i = 0; i < 32 && c.pending === 0 && !c.closed && !c.ended; i++) {
    try {
      await c.write(chunk);
    } catch {
      break; // the server may close while we write
    }
    await sleep(5);
  }
  const r = await c.readResponse();
  assertError(assert, asRes(r), 413, 'payload_too_large');
});

test('slow client sending half the headers: 408 request_timeout and close', opts, async () => {
  const c = await open();
  const t0 = Date.now();
  await c.write('GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Half: ');
  const r = await c.readResponse({ timeoutMs: T(10000) });
  const elapsed = Date.now() - t0;
  assertError(assert, asRes(r), 408, 'request_timeout');
  assert.ok(elapsed >= 800, `not before the 1 s header timeout (${elapsed} ms)`);
  assert.ok(elapsed < T(5000), `soon after the 1 s header timeout (${elapsed} ms)`);
  assert.ok(await c.waitClose(T(3000)), 'connection closed');
});

test('malformed request line: 400 and close', opts, async () => {
  for (const bad of ['HELLO\r\n\r\n', 'GET /healthz HTTP/9.1\r\n\r\n', 'GET  HTTP/1.1\r\nHost: x\r\n\r\n', '\x01\x02\x03 / HTTP/1.1\r\n\r\n']) {
    const c = await open();
    await c.write(Buffer.from(bad, 'latin1'));
    const r = await c.readResponse();
    assertError(assert, asRes(r), 400, 'invalid_argument');
    assert.ok(await c.waitClose(T(3000)), `connection closed after ${JSON.stringify(bad)}`);
  }
});

test('unknown path: 404 not_found envelope', opts, async () => {
  for (const p of ['/nope', '/api/auth/nope', '/api/auth/users/x/y/z']) {
    assertError(assert, await request(server.url + p), 404, 'not_found');
  }
});

test('wrong method: 405 method_not_allowed with Allow', opts, async () => {
  const r = await request(`${server.url}/api/auth/login`);
  assertError(assert, r, 405, 'method_not_allowed');
  assert.match(String(r.headers.allow), /\bPOST\b/);
  const d = await request(`${server.url}/api/auth/register`, { method: 'DELETE' });
  assertError(assert, d, 405, 'method_not_allowed');
  assert.match(String(d.headers.allow), /\bPOST\b/);
  const h = await request(`${server.url}/healthz`, { method: 'POST', body: '{}', headers: { 'Content-Type': 'application/json' } });
  assertError(assert, h, 405, 'method_not_allowed');
  assert.match(String(h.headers.allow), /\bGET\b/);
  const me = await request(`${server.url}/api/auth/me`, { method: 'PUT', body: '{}', headers: { 'Content-Type': 'application/json' } });
  assertError(assert, me, 405, 'method_not_allowed');
  assert.match(String(me.headers.allow), /\bGET\b/);
  assert.match(String(me.headers.allow), /\bPOST\b/);
});

test('X-Request-Id: echoed when sane', opts, async () => {
  for (const id of ['abc-123_XYZ', '0f3c7d2e-5a1b-4c7e-9d3f-1234567890ab', 'x'.repeat(64)]) {
    const r = await request(`${server.url}/healthz`, { headers: { 'X-Request-Id': id } });
    assert.equal(r.headers['x-request-id'], id);
  }
  const e = await request(`${server.url}/nope`, { headers: { 'X-Request-Id': 'err-id-1' } });
  assert.equal(e.headers['x-request-id'], 'err-id-1');
  assert.equal(e.json.error.request_id, 'err-id-1', 'the envelope carries it too');
});

test('X-Request-Id: generated when absent, replaced when not sane', opts, async () => {
  const sane = /^[A-Za-z0-9._:-]{8,128}$/;
  const none = await request(`${server.url}/healthz`);
  assert.match(String(none.headers['x-request-id']), sane);
  const other = await request(`${server.url}/healthz`);
  assert.notEqual(other.headers['x-request-id'], none.headers['x-request-id'], 'each request gets its own id');
  for (const bad of ['y'.repeat(200), 'has spaces in it', 'quote"d', '<script>']) {
    const r = await request(`${server.url}/healthz`, { headers: { 'X-Request-Id': bad } });
    const got = r.headers['x-request-id'];
    assert.notEqual(got, bad, `${JSON.stringify(bad)} replaced`);
    assert.match(String(got), sane);
  }
});

test('/healthz and /readyz answer 200', opts, async () => {
  const h = await request(`${server.url}/healthz`);
  assert.equal(h.status, 200, h.text);
  const r = await request(`${server.url}/readyz`);
  assert.equal(r.status, 200, r.text);
});

test('/metrics is Prometheus text with the RED, process and auth metrics', opts, async () => {
  await api(server.url, 'POST', '/api/auth/login', { body: { email: user.email, password: PASSWORD } });
  const r = await request(`${server.adminUrl}/metrics`);
  assert.equal(r.status, 200);
  assert.match(String(r.headers['content-type']), /^text\/plain/);
  const lines = r.text.split('\n');
  const has = (re) => lines.some((l) => re.test(l));
  assert.ok(has(/^# TYPE http_requests_total counter$/), 'http_requests_total TYPE');
  assert.ok(has(/^http_requests_total\{.*\} \d+(\.\d+)?(e[+-]?\d+)?$/), 'http_requests_total sample');
  assert.ok(has(/^# TYPE http_request_duration_seconds histogram$/), 'histogram TYPE');
  assert.ok(has(/^http_request_duration_seconds_bucket\{.*le="\+Inf".*\} \d+/), '+Inf bucket');
  const rss = lines.find((l) => /^process_resident_memory_bytes /.test(l));
  assert.ok(rss, 'process_resident_memory_bytes sample');
  assert.ok(Number(rss.split(' ')[1]) > 1e6, `RSS is plausible (${rss})`);
  const logins = lines.filter((l) => /^auth_logins_total(\{.*\})? /.test(l));
  assert.ok(logins.length > 0, 'auth_logins_total sample');
  assert.ok(logins.some((l) => Number(l.split(' ').at(-1)) >= 1), `a login was counted: ${logins.join(' | ')}`);
});

test('admin listener: /metrics only there (404 on the public port), probes on both, loopback', opts, async () => {
  assert.ok(server.svc.adminPort > 0, `"listening" names admin_port: ${JSON.stringify(server.svc.listening)}`);
  assert.notEqual(server.svc.adminPort, server.svc.port);
  const pub = await request(`${server.url}/metrics`);
  assert.equal(pub.status, 404, 'operator metrics are not on the public port');
  assert.equal(pub.json?.error?.code, 'not_found');
  for (const p of ['/healthz', '/readyz']) {
    const r = await request(server.adminUrl + p);
    assert.equal(r.status, 200, `${p} on the admin port: ${r.text}`);
  }
  assert.equal((await request(`${server.adminUrl}/api/auth/login`, { method: 'POST', body: {} })).status, 404,
    'service routes are not on the admin port');
  assert.equal(server.svc.listening.host, '127.0.0.1');
  // Admin requests are not counted as service traffic.
  const m = await request(`${server.adminUrl}/metrics`);
  assert.doesNotMatch(m.text, /route="\/metrics"/);
});

test('admin listener: --admin-port off runs none; a port in use fails the start', opts, async () => {
  const { startService } = await import('./lib/harness.mjs');
  const s = await startService('auth', { args: ['--admin-port', 'off'] });
  try {
    assert.equal(s.listening.admin_port, undefined);
    assert.equal(s.adminPort, 0);
    assert.equal((await request(`${s.url}/metrics`)).status, 404);
  } finally {
    await s.stop();
  }
  let err = null;
  try {
    const t = await startService('auth', { args: ['--admin-port', String(server.svc.adminPort)], timeoutMs: T(10000) });
    await t.stop();
  } catch (e) {
    err = e;
  }
  assert.ok(err, 'the start fails when the admin port is taken');
  assert.match(err.message, /cannot listen on [^\n]*\(admin\)/);
});

test('access log: one JSON line per request with the request fields', opts, async () => {
  const id = `log-${Date.now()}`;
  const r = await api(server.url, 'POST', '/api/auth/login', {
    body: { email: user.email, password: PASSWORD },
    headers: { 'X-Request-Id': id },
  });
  assert.equal(r.status, 200);
  const line = await server.svc.waitLog((e) => e.request_id === id && 'status' in e);
  assert.equal(line.service, 'auth');
  assert.match(String(line.ts), /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/);
  assert.equal(typeof line.level, 'string');
  assert.equal(line.method, 'POST');
  assert.equal(line.route, '/api/auth/login');
  assert.equal(line.status, 200);
  assert.equal(typeof line.duration_ms, 'number');
  assert.ok(line.duration_ms >= 0);
  const raws = server.svc.logs.filter((e) => 'raw' in e && e.raw.trim() !== '');
  assert.deepEqual(raws, [], 'every stderr line is JSON');
});

test('logs never contain a password or token the test sent', opts, async () => {
  const secretPw = `pw-${Date.now()}-never-log-me`;
  const newPw = `new-${Date.now()}-never-log-me`;
  const email = uniqueEmail('logcheck');
  const secrets = [secretPw, newPw];
  const reg = await api(server.url, 'POST', '/api/auth/register', { body: { email, password: secretPw } });
  assert.equal(reg.status, 201);
  secrets.push(reg.json.access_token, reg.json.refresh_token);
  const li = await api(server.url, 'POST', '/api/auth/login', { body: { email, password: secretPw } });
  secrets.push(li.json.access_token, li.json.refresh_token);
  await api(server.url, 'POST', '/api/auth/login', { body: { email, password: `${secretPw}-wrong` } });
  secrets.push(`${secretPw}-wrong`);
  const rf = await api(server.url, 'POST', '/api/auth/refresh', { body: { refresh_token: li.json.refresh_token } });
  secrets.push(rf.json.access_token, rf.json.refresh_token);
  await api(server.url, 'POST', '/api/auth/refresh', { body: { refresh_token: li.json.refresh_token } }); // reuse
  await api(server.url, 'GET', '/api/auth/me', { token: reg.json.access_token });
  const key = await api(server.url, 'POST', '/api/auth/api-keys', { token: reg.json.access_token, body: { name: 'log' } });
  const apiKey = key.json?.key ?? key.json?.api_key?.key;
  assert.equal(typeof apiKey, 'string', key.text);
  secrets.push(apiKey);
  await request(`${server.url}/api/auth/me`, { headers: { 'X-API-Key': apiKey } });
  await api(server.url, 'POST', '/api/auth/password/change', {
    token: reg.json.access_token,
    body: { current_password: secretPw, new_password: newPw },
  });
  const marker = `final-${Date.now()}`;
  await request(`${server.url}/api/auth/jwks.json`, { headers: { 'X-Request-Id': marker } });
  await server.svc.waitLog((e) => e.request_id === marker);

  const text = server.svc.output();
  for (const s of secrets) {
    assert.ok(!text.includes(s), `log output contains a secret: ${s.slice(0, 12)}...`);
  }
  // Nor a recognisable piece of a token (its signature part).
  for (const s of secrets.filter((x) => x.split('.').length === 3)) {
    assert.ok(!text.includes(s.split('.')[2]), 'log output contains a JWT signature');
  }
});

// ---------------------------------------------------------------- RFC 9112 framing

test('framing the server refuses: the status, the envelope, and a closed connection', opts, async () => {
  const TE = 'POST /api/auth/login HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n';
  const cases = [
    ['chunk data not followed by CRLF', `${TE}Transfer-Encoding: chunked\r\n\r\n5\r\nhelloXX0\r\n\r\n`, 400, 'invalid_argument'],
    ['gzip, chunked', `${TE}Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n`, 501, 'not_implemented'],
    ['xchunked', `${TE}Transfer-Encoding: xchunked\r\n\r\n`, 501, 'not_implemented'],
    ['chunked, gzip', `${TE}Transfer-Encoding: chunked, gzip\r\n\r\n`, 501, 'not_implemented'],
    ['Transfer-Encoding with Content-Length', `${TE}Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n`, 400, 'invalid_argument'],
    ['HTTP/1.1 without Host', 'GET /healthz HTTP/1.1\r\n\r\n', 400, 'invalid_argument'],
    ['two Host fields', 'GET /healthz HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n', 400, 'invalid_argument'],
    ['a malformed Host', 'GET /healthz HTTP/1.1\r\nHost: a b/c\r\n\r\n', 400, 'invalid_argument'],
    ['obsolete line folding', 'GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-A: a\r\n  b\r\n\r\n', 400, 'invalid_argument'],
    ['a request-target over 16 KiB', `GET /healthz?q=${'a'.repeat(17 * 1024)} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n`, 414, 'uri_too_long'],
    [
      '101 header fields',
      `GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n${Array.from({ length: 100 }, (_, i) => `X-${i}: v\r\n`).join('')}\r\n`,
      431,
      'headers_too_large',
    ],
  ];
  for (const [what, msg, status, code] of cases) {
    const c = await open();
    try {
      await c.write(Buffer.from(msg, 'latin1'));
    } catch {
      /* the server may close while a long request is still being written */
    }
    const r = await c.readResponse();
    assertError(assert, asRes(r), status, code);
    assert.match(String(r.headers.connection || ''), /close/i, `${what}: Connection: close`);
    assert.ok(await c.waitClose(T(3000)), `${what}: connection closed`);
  }
});

test('valid chunk extensions are ignored; HTTP/1.0 needs no Host', opts, async () => {
  const c = await open();
  const body = Buffer.from(loginBody());
  await c.write(
    rawRequest('POST', '/api/auth/login', { 'Content-Type': 'application/json', 'Transfer-Encoding': 'chunked' }),
  );
  const parts = [body.subarray(0, 5), body.subarray(5, 20), body.subarray(20)];
  const exts = [';a=1;b=2', ' ;foo=bar', ';a="q s"'];
  for (let i = 0; i < parts.length; i++) {
    await c.write(Buffer.concat([Buffer.from(`${parts[i].length.toString(16)}${exts[i]}\r\n`), parts[i], Buffer.from('\r\n')]));
  }
  await c.write('0;end\r\nX-Trailer: t\r\n\r\n');
  const r = await c.readResponse();
  assert.equal(r.status, 200, r.text);
  assert.equal(r.json.user.id, user.user.id);
  c.destroy();

  const c2 = await open();
  await c2.write('GET /healthz HTTP/1.0\r\n\r\n');
  const r2 = await c2.readResponse();
  assert.equal(r2.status, 200, r2.text);
  c2.destroy();
});

test('a body dripped one byte at a time ends at the request deadline: 408 and close', opts, async () => {
  // 1 byte every 100 ms never trips the 60 s idle timer; --request-timeout 3s does.
  const c = await open();
  const t0 = Date.now();
  await c.write(rawRequest('POST', '/api/auth/login', { 'Content-Type': 'application/json', 'Content-Length': 1000 }));
  let sent = 0;
  while (c.pending === 0 && !c.ended && !c.closed && sent < 1000) {
    try {
      await c.write('x');
    } catch {
      break;
    }
    sent++;
    await sleep(100); // the drip's pace, not a wait for the server
  }
  const r = await c.readResponse({ timeoutMs: T(10000) });
  const elapsed = Date.now() - t0;
  assertError(assert, asRes(r), 408, 'request_timeout');
  assert.ok(elapsed >= 2800, `not before the 3 s deadline (${elapsed} ms)`);
  assert.ok(elapsed < T(8000), `soon after the 3 s deadline (${elapsed} ms)`);
  assert.ok(sent < 1000, 'the deadline, not the end of the body, ended it');
  assert.ok(await c.waitClose(T(3000)), 'connection closed');
});
