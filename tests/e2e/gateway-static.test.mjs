// Large files from the gateway's web root (src/gateway/static.c streams
// anything over 1 MiB in 64 KiB pieces read on the thread pool): the whole
// body arrives byte for byte with its announced length, HEAD gives that
// length without a body, ETag/If-None-Match gives 304, a Range header is
// ignored (no partial answers: the full 200), a file that shrinks while it
// streams cuts the answer short rather than padding it, and a client that
// goes away mid-download leaves the gateway serving.
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { after, before, test } from 'node:test';

import { RawConn, T, rawRequest, request, tempDir } from './lib/harness.mjs';
import { startGateway } from './lib/upstream.mjs';

const opts = { timeout: T(30000) };
// Over the 1 MiB in-memory limit, and not a multiple of the 64 KiB piece.
const BIG = 3 * 1024 * 1024 + 12345;
let gw;
let webRoot;
let big; // the file's bytes

const sha = (b) => crypto.createHash('sha256').update(b).digest('hex');

before(async () => {
  webRoot = path.join(tempDir('trellis-gwstatic-'), 'web');
  fs.mkdirSync(path.join(webRoot, 'dl'), { recursive: true });
  big = crypto.randomBytes(BIG);
  fs.writeFileSync(path.join(webRoot, 'dl', 'big.bin'), big);
  fs.writeFileSync(path.join(webRoot, 'index.html'), '<!doctype html><p>hi</p>\n');
  gw = await startGateway({ routes: { version: 1, upstreams: {}, routes: [] }, args: ['--web-root', webRoot] });
});

after(async () => {
  await gw?.stop();
});

test('a 3 MiB file arrives whole, with its Content-Length, ETag and type', opts, async () => {
  const r = await request(`${gw.url}/dl/big.bin`);
  assert.equal(r.status, 200);
  assert.equal(r.headers['content-length'], String(BIG));
  assert.equal(r.headers['content-type'], 'application/octet-stream');
  assert.equal(r.headers['cache-control'], 'no-cache');
  assert.match(String(r.headers.etag), /^"[0-9a-f]+-[0-9a-f]+"$/);
  assert.equal(r.body.length, BIG);
  assert.equal(sha(r.body), sha(big), 'the bytes are the file');
});

test('two large downloads on one keep-alive connection, then a small file', opts, async () => {
  const c = await RawConn.open(gw.port);
  try {
    for (let i = 0; i < 2; i++) {
      await c.write(rawRequest('GET', '/dl/big.bin'));
      const r = await c.readResponse({ timeoutMs: T(15000) });
      assert.equal(r.status, 200);
      assert.equal(r.body.length, BIG);
      assert.equal(sha(r.body), sha(big));
    }
    await c.write(rawRequest('GET', '/index.html'));
    const small = await c.readResponse();
    assert.equal(small.status, 200);
    assert.match(small.text, /<p>hi<\/p>/);
  } finally {
    c.destroy();
  }
});

test('HEAD announces the full length and sends no body', opts, async () => {
  const get = await request(`${gw.url}/dl/big.bin`, { method: 'HEAD' });
  assert.equal(get.status, 200);
  assert.equal(get.headers['content-length'], String(BIG));
  assert.equal(get.body.length, 0);
  // On a raw connection: nothing follows the head, so the next answer parses.
  const c = await RawConn.open(gw.port);
  try {
    await c.write(rawRequest('HEAD', '/dl/big.bin') + rawRequest('GET', '/index.html'));
    const h = await c.readResponse({ head: true });
    assert.equal(h.status, 200);
    assert.equal(h.headers['content-length'], String(BIG));
    const next = await c.readResponse();
    assert.equal(next.status, 200, 'the pipelined GET after HEAD is answered');
    assert.match(next.text, /<p>hi<\/p>/);
  } finally {
    c.destroy();
  }
});

test('If-None-Match with the ETag gives 304 without a body; another ETag gives the file', opts, async () => {
  const first = await request(`${gw.url}/dl/big.bin`, { method: 'HEAD' });
  const etag = first.headers.etag;
  const same = await request(`${gw.url}/dl/big.bin`, { headers: { 'If-None-Match': etag } });
  assert.equal(same.status, 304);
  assert.equal(same.body.length, 0);
  assert.equal(same.headers.etag, etag);
  const list = await request(`${gw.url}/dl/big.bin`, { headers: { 'If-None-Match': `"nope", ${etag}` } });
  assert.equal(list.status, 304, 'a list naming the ETag matches');
  const star = await request(`${gw.url}/dl/big.bin`, { headers: { 'If-None-Match': '*' } });
  assert.equal(star.status, 304, '* matches any current file');
  const other = await request(`${gw.url}/dl/big.bin`, { headers: { 'If-None-Match': '"0-0"' } });
  assert.equal(other.status, 200);
  assert.equal(other.body.length, BIG);
});

test('Range is not supported: the answer is the full 200, never a 206', opts, async () => {
  const r = await request(`${gw.url}/dl/big.bin`, { headers: { Range: 'bytes=0-99' } });
  assert.equal(r.status, 200);
  assert.equal(r.headers['content-range'], undefined);
  assert.equal(r.headers['content-length'], String(BIG));
  assert.equal(sha(r.body), sha(big));
});

test('a changed file gets a new ETag, and the old one no longer matches', opts, async () => {
  const file = path.join(webRoot, 'dl', 'changing.bin');
  fs.writeFileSync(file, crypto.randomBytes(2 * 1024 * 1024));
  const a = await request(`${gw.url}/dl/changing.bin`, { method: 'HEAD' });
  const next = crypto.randomBytes(2 * 1024 * 1024 + 1);
  fs.writeFileSync(file, next);
  const b = await request(`${gw.url}/dl/changing.bin`, { headers: { 'If-None-Match': a.headers.etag } });
  assert.equal(b.status, 200);
  assert.notEqual(b.headers.etag, a.headers.etag);
  assert.equal(sha(b.body), sha(next));
});

test('a client that disconnects mid-download leaves the gateway serving', opts, async () => {
  for (let i = 0; i < 3; i++) {
    const c = await RawConn.open(gw.port);
    await c.write(rawRequest('GET', '/dl/big.bin'));
    await c.peekHead();
    c.destroy();
  }
  const r = await request(`${gw.url}/dl/big.bin`);
  assert.equal(r.status, 200);
  assert.equal(sha(r.body), sha(big));
  const h = await request(`${gw.url}/healthz`);
  assert.equal(h.status, 200);
});

test('a file truncated while it streams ends the answer short, never padded', opts, async () => {
  const file = path.join(webRoot, 'dl', 'shrinks.bin');
  // Far more than loopback's socket buffers can hold: when the head arrives
  // most of the file is still to be read.
  const size = 64 * 1024 * 1024;
  fs.writeFileSync(file, Buffer.alloc(size, 7));
  const sock = net.connect({ port: gw.port, host: '127.0.0.1' });
  let head = '';
  let headDone = false;
  let bodyBytes = 0;
  const closed = new Promise((resolve, reject) => {
    sock.on('data', (d) => {
      if (headDone) {
        bodyBytes += d.length;
        return;
      }
      head += d.toString('latin1');
      const i = head.indexOf('\r\n\r\n');
      if (i < 0) return;
      headDone = true;
      bodyBytes = Buffer.byteLength(head, 'latin1') - (i + 4);
      head = head.slice(0, i);
      fs.truncateSync(file, 1024);
    });
    sock.on('close', resolve);
    sock.on('error', () => {});
    setTimeout(() => reject(new Error(`not closed; ${bodyBytes} body bytes, head ${JSON.stringify(head)}`)), T(20000)).unref();
  });
  sock.write(rawRequest('GET', '/dl/shrinks.bin'));
  await closed;
  assert.match(head, /^HTTP\/1\.1 200/);
  assert.match(head, new RegExp(`content-length: ${size}\r?$`, 'im'));
  assert.ok(bodyBytes < size, `fewer bytes than announced (${bodyBytes} of ${size})`);
  const r = await request(`${gw.url}/index.html`);
  assert.equal(r.status, 200, 'the gateway still serves');
});
