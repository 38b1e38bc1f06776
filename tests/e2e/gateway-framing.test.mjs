// Request framing at the gateway (RFC 9112): framing the gateway refuses is
// answered at the edge and no upstream request is started; a body whose
// chunk framing turns out bad midway is answered 400 by the gateway while
// the upstream, which already had the head and a first chunk, sees the
// request aborted and never complete; valid chunk extensions pass; a client
// dripping a body is cut at the request deadline (--request-timeout).
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';

import { RawConn, T, assertError, rawRequest, sleep } from './lib/harness.mjs';
import { startGateway, startUpstream } from './lib/upstream.mjs';

const opts = { timeout: T(30000) };
let up;
let gw;
const conns = new Set();

before(async () => {
  up = await startUpstream({ name: 'echo' });
  gw = await startGateway({
    args: ['--request-timeout', '2s'],
    routes: {
      version: 1,
      upstreams: { echo: { instances: [up.address], health: null } },
      routes: [{ path: '/api/echo/*', upstream: 'echo', retry: false }],
    },
  });
});

after(async () => {
  for (const c of conns) c.destroy();
  try {
    await gw?.stop();
  } finally {
    await up?.close();
  }
});

async function open() {
  const c = await RawConn.open(gw.port);
  conns.add(c);
  return c;
}

const asRes = (r) => ({ status: r.status, headers: r.headers, text: r.text, json: r.json });
const chunkedHead = (p) => rawRequest('POST', p, { 'Transfer-Encoding': 'chunked', 'Content-Type': 'application/octet-stream' });

test('framing refused at the head is answered by the gateway; no upstream request starts', opts, async () => {
  const before = up.calls().length;
  const TE = 'POST /api/echo/f HTTP/1.1\r\nHost: 127.0.0.1\r\n';
  const cases = [
    ['gzip, chunked', `${TE}Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n`, 501, 'not_implemented'],
    ['chunked, gzip', `${TE}Transfer-Encoding: chunked, gzip\r\n\r\n`, 501, 'not_implemented'],
    ['xchunked', `${TE}Transfer-Encoding: xchunked\r\n\r\n`, 501, 'not_implemented'],
    ['TE with Content-Length', `${TE}Transfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n0\r\n\r\n`, 400, 'invalid_argument'],
    ['no Host', 'GET /api/echo/f HTTP/1.1\r\n\r\n', 400, 'invalid_argument'],
    ['two Hosts', 'GET /api/echo/f HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n', 400, 'invalid_argument'],
    ['obs-fold', 'GET /api/echo/f HTTP/1.1\r\nHost: a\r\nX-A: 1\r\n\t2\r\n\r\n', 400, 'invalid_argument'],
    ['long target', `GET /api/echo/${'a'.repeat(17 * 1024)} HTTP/1.1\r\nHost: a\r\n\r\n`, 414, 'uri_too_long'],
  ];
  for (const [what, msg, status, code] of cases) {
    const c = await open();
    try {
      await c.write(Buffer.from(msg, 'latin1'));
    } catch {
      /* closed while writing: the answer may still be there */
    }
    const r = await c.readResponse();
    c.destroy();
    assert.equal(r.status, status, `${what}: ${r.status} ${r.text}`);
    assertError(assert, asRes(r), status, code);
  }
  assert.equal(up.calls().length, before, 'no request reached the upstream');
});

test('chunk framing that turns bad midway: 400 from the gateway, the upstream sees an abort', opts, async () => {
  const c = await open();
  await c.write(chunkedHead('/api/echo/midway'));
  await c.write('5\r\nhello');
  // The upstream has the head and the first chunk: the request is under way.
  const rec = await up.waitFor((h) => h.path === '/api/echo/midway' && h.bodyBytes >= 5, T(5000));
  await c.write('XX0\r\n\r\n'); // no CRLF after the chunk data
  const r = await c.readResponse();
  assertError(assert, asRes(r), 400, 'invalid_argument');
  assert.ok(await c.waitClose(T(3000)), 'client connection closed');
  await up.waitFor((h) => h === rec && h.done, T(5000));
  assert.equal(rec.bodyDone, false, 'the upstream never saw a complete body');
  assert.equal(rec.aborted, true, 'the upstream request was aborted');
  assert.equal(rec.bodyBytes, 5);
});

test('valid chunk extensions pass through; the upstream gets the de-chunked body', opts, async () => {
  const c = await open();
  await c.write(chunkedHead('/api/echo/ext'));
  await c.write('5;a=1;b=2\r\nhello\r\n2 ;foo=bar\r\n, \r\n5;a="q s"\r\nworld\r\n0\r\n\r\n');
  const r = await c.readResponse();
  c.destroy();
  assert.equal(r.status, 200, r.text);
  assert.equal(r.json.body_bytes, 12);
});

test('a body dripped through the gateway ends at the request deadline: 408, never a whole request upstream', opts, async () => {
  const c = await open();
  const t0 = Date.now();
  await c.write(rawRequest('POST', '/api/echo/drip', { 'Content-Length': 1000 }));
  let sent = 0;
  while (c.pending === 0 && !c.ended && !c.closed && sent < 1000) {
    try {
      await c.write('x');
    } catch {
      break;
    }
    sent++;
    await sleep(100); // the drip's pace, not a wait for the gateway
  }
  const r = await c.readResponse({ timeoutMs: T(10000) });
  const elapsed = Date.now() - t0;
  assertError(assert, asRes(r), 408, 'request_timeout');
  assert.ok(elapsed >= 1800 && elapsed < T(6000), `at the 2 s deadline (${elapsed} ms)`);
  assert.ok(sent < 1000);
  // A small body is buffered by the gateway before the upstream is asked,
  // so the upstream may not have seen the request at all; if it did, never whole.
  assert.equal(up.calls((h) => h.path === '/api/echo/drip' && h.bodyDone).length, 0);
});
