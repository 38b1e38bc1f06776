// upstream.mjs - a scriptable fake upstream for the gateway tests: an HTTP
// server on 127.0.0.1 whose every answer a test chooses.
//
// Design notes:
// - Behaviour is chosen per request by query parameters, so a test drives it
//   straight through the gateway (which forwards the query untouched), with
//   server-wide defaults (set()) underneath for the cases where every request
//   must misbehave (a failing instance behind a balancer, a slow upstream
//   probed by health checks). Parameters:
//     delay=MS        wait before answering (the request body is read first)
//     status=S        answer with status S (body: the echo JSON)
//     fail_first=N    with key=K: the first N requests carrying K get 503,
//                     later ones the normal answer (retry tests)
//     slow_first=N    with key=K: only the first N requests carrying K wait
//                     `delay` (per-try timeout tests)
//     close=immediate destroy the socket as soon as the request body is read
//     close=body      send the head and half of the body, then destroy
//     hang=1          never answer; the request stays open until the peer
//                     closes it (the record then says aborted)
//     size=N          answer with N bytes generated on the fly (never held
//                     whole in memory; see patternSha256); chunked=1 sends
//                     it chunked instead of with Content-Length; rate=B
//                     paces it at about B bytes/s
//     read_rate=B     read the request body at about B bytes/s (backpressure
//                     towards the sender)
//     chunked=1       also makes the echo answer chunked
//     h=Name:Value    adds a response header (repeatable), e.g. hop-by-hop
//                     headers the gateway must not relay
//     stray_length=N  a 204/304 answer carries "Content-Length: N" (which
//                     RFC 9110 forbids; a proxy must still not wait for N bytes)
//   Anything else gets the echo: method, path, query, headers (lower-case
//   names, as received), raw header pairs, body byte count and SHA-256.
// - GET /readyz answers 200 or 503 as `ready` says (active health checks);
//   any path ending in /ws is a WebSocket echo (the `ws` package) that
//   records its upgrade.
// - Every request is recorded in `hits` when it arrives and updated when it
//   ends: bodyBytes/bodySha256 once the body is read, `aborted` when the peer
//   closed before the answer was complete, `sent` = response bytes flushed.
//   waitFor() watches these records, so a test can wait for "the upstream
//   saw the close" without polling.
// - kill() destroys every socket and stops listening at once: to the gateway
//   it looks like the process died (connections cut, then refused). For an
//   upstream in a real separate process, spawnUpstream() runs this file as a
//   child (`node upstream.mjs`) that prints {"port":N} and can be SIGKILLed.
// - The answer to a failed request is still JSON so assertions read it the
//   same way; the `instance` name in it tells two instances apart.
// - startGateway() (at the end) starts the gateway under test with a routes
//   file the test writes, and can rewrite it and send SIGHUP.

import crypto from 'node:crypto';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import process from 'node:process';
import { fileURLToPath } from 'node:url';

import { WebSocketServer } from 'ws';

// ---------------------------------------------------------------- generated bodies

const BLOCK = (() => {
  // A fixed pseudo-random 64 KiB block: compressible by nobody, reproducible
  // by everybody (the test computes the expected hash without the server).
  const b = Buffer.alloc(64 * 1024);
  let x = 0x9e3779b9;
  for (let i = 0; i < b.length; i += 4) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    b.writeUInt32LE(x >>> 0, i);
  }
  return b;
})();

/** The bytes [offset, offset + len) of the endless generated stream. */
function patternSlice(offset, len) {
  const out = Buffer.allocUnsafe(len);
  let o = 0;
  while (o < len) {
    const at = (offset + o) % BLOCK.length;
    const n = Math.min(BLOCK.length - at, len - o);
    BLOCK.copy(out, o, at, at + n);
    o += n;
  }
  return out;
}

/** SHA-256 (hex) of the first n bytes of the generated stream. */
export function patternSha256(n) {
  const h = crypto.createHash('sha256');
  let left = n;
  while (left >= BLOCK.length) {
    h.update(BLOCK);
    left -= BLOCK.length;
  }
  if (left > 0) h.update(BLOCK.subarray(0, left));
  return h.digest('hex');
}

/**
 * The first n bytes of the generated stream, chunkSize at a time, for
 * uploads (Readable.from(patternChunks(n))): pulled by whoever pipes it, so
 * it honours backpressure and never holds more than a chunk.
 */
export function* patternChunks(n, chunkSize = 64 * 1024) {
  for (let off = 0; off < n; off += chunkSize) yield patternSlice(off, Math.min(chunkSize, n - off));
}

// ---------------------------------------------------------------- the server

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function intParam(q, name, dflt) {
  const v = q.get(name);
  if (v === null || v === '') return dflt;
  const n = Number(v);
  return Number.isFinite(n) ? n : dflt;
}

/**
 * Starts a fake upstream on 127.0.0.1:0. opts.name: the `instance` field of
 * its answers (default "up"); opts.defaults: behaviour parameters applied to
 * every request unless its query overrides them (same names as the query).
 * Resolves with the controller:
 *   port, url, address ("127.0.0.1:port")
 *   hits                 every request record, oldest first
 *   count(pred)          records matching pred (all when omitted)
 *   waitFor(pred, ms)    the first record matching pred, now or later
 *   set(defaults)        replaces the default behaviour
 *   ready                what /readyz answers (true: 200)
 *   reset()              forgets hits and fail_first counters
 *   kill()               cuts every connection and stops listening, at once
 *   close()              the same, resolving once the listener is closed
 */
export async function startUpstream(opts = {}) {
  const name = opts.name ?? 'up';
  const state = {
    defaults: { ...(opts.defaults || {}) },
    ready: true,
    failCounts: new Map(),
  };
  const hits = [];
  const watchers = new Set();
  const sockets = new Set();
  let seq = 0;

  const touch = (rec) => {
    for (const w of [...watchers]) w(rec);
  };

  const server = http.createServer();
  // Longer than any pool idle timeout the gateway uses, so an idle pooled
  // connection is never closed by us while the gateway reuses it.
  server.keepAliveTimeout = 120000;
  server.headersTimeout = 130000;
  server.requestTimeout = 0;
  server.on('connection', (s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });

  const wss = new WebSocketServer({ noServer: true, perMessageDeflate: false });
  server.on('upgrade', (req, socket, head) => {
    const u = new URL(req.url, 'http://x');
    const rec = record(req, u);
    rec.upgrade = true;
    if (u.pathname !== '/ws' && !u.pathname.endsWith('/ws')) {
      socket.end('HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n');
      rec.status = 404;
      rec.done = true;
      touch(rec);
      return;
    }
    wss.handleUpgrade(req, socket, head, (ws) => {
      rec.status = 101;
      touch(rec);
      ws.on('message', (data, isBinary) => ws.send(data, { binary: isBinary }));
      ws.on('close', () => {
        rec.done = true;
        touch(rec);
      });
      ws.on('error', () => {});
    });
  });

  function record(req, u) {
    const rec = {
      seq: ++seq,
      at: Date.now(),
      method: req.method,
      url: req.url,
      path: u.pathname,
      query: u.search.startsWith('?') ? u.search.slice(1) : u.search,
      headers: { ...req.headers },
      rawHeaders: pairs(req.rawHeaders),
      httpVersion: req.httpVersion,
      remotePort: req.socket.remotePort,
      bodyBytes: 0,
      bodySha256: null,
      bodyDone: false,
      status: null,
      sent: 0,
      done: false,
      aborted: false,
    };
    hits.push(rec);
    touch(rec);
    return rec;
  }

  server.on('request', (req, res) => {
    const u = new URL(req.url, 'http://x');
    const rec = record(req, u);
    const q = new URLSearchParams(state.defaults);
    for (const k of new Set(u.searchParams.keys())) {
      q.delete(k);
      for (const v of u.searchParams.getAll(k)) q.append(k, v);
    }

    res.on('close', () => {
      if (!res.writableFinished) rec.aborted = true;
      rec.done = true;
      touch(rec);
    });
    req.on('error', () => {});
    res.on('error', () => {});

    handle(req, res, u, q, rec).catch((e) => {
      rec.error = String(e && e.message);
      if (!res.headersSent) {
        res.writeHead(500, { 'Content-Type': 'application/json' });
        res.end(JSON.stringify({ error: rec.error }));
      } else {
        res.destroy();
      }
    });
  });

  async function readBody(req, rec, readRate) {
    const h = crypto.createHash('sha256');
    await new Promise((resolve) => {
      let ended = false;
      const finish = () => {
        if (ended) return;
        ended = true;
        resolve();
      };
      req.on('data', (c) => {
        h.update(c);
        rec.bodyBytes += c.length;
        touch(rec); // waitFor(h => h.bodyBytes > N) sees the body arrive
        if (readRate > 0) {
          // Hold the next read back for as long as this chunk "took".
          req.pause();
          setTimeout(() => req.resume(), Math.max(1, Math.round((c.length / readRate) * 1000)));
        }
      });
      req.on('end', finish);
      req.on('close', finish);
    });
    rec.bodySha256 = h.digest('hex');
    rec.bodyDone = req.complete;
    touch(rec);
  }

  async function handle(req, res, u, q, rec) {
    if (u.pathname === '/readyz' && req.method === 'GET') {
      await readBody(req, rec, 0);
      const status = state.ready ? 200 : 503;
      rec.status = status;
      return sendJson(res, rec, status, { status: state.ready ? 'ok' : 'unavailable', instance: name });
    }
    await readBody(req, rec, intParam(q, 'read_rate', 0));
    if (rec.aborted || req.socket.destroyed) return;

    let delay = intParam(q, 'delay', 0);
    const slowFirst = intParam(q, 'slow_first', 0);
    if (slowFirst > 0) {
      const key = `slow:${q.get('key') || u.pathname}`;
      const n = (state.failCounts.get(key) || 0) + 1;
      state.failCounts.set(key, n);
      if (n > slowFirst) delay = 0;
    }
    if (delay > 0) await sleep(delay);
    if (req.socket.destroyed) return;

    if (q.get('hang') === '1') return; // the peer's close ends it

    const close = q.get('close');
    if (close === 'immediate') {
      rec.status = 0;
      req.socket.destroy();
      return;
    }

    let status = intParam(q, 'status', 200);
    const failFirst = intParam(q, 'fail_first', 0);
    if (failFirst > 0) {
      const key = q.get('key') || u.pathname;
      const n = (state.failCounts.get(key) || 0) + 1;
      state.failCounts.set(key, n);
      if (n <= failFirst) status = 503;
    }
    rec.status = status;

    const size = intParam(q, 'size', -1);
    if (size >= 0) return streamBody(res, rec, status, size, q, close === 'body');

    const echo = {
      instance: name,
      method: req.method,
      path: u.pathname,
      query: rec.query,
      url: req.url,
      headers: rec.headers,
      raw_headers: rec.rawHeaders,
      http_version: req.httpVersion,
      body_bytes: rec.bodyBytes,
      body_sha256: rec.bodySha256,
    };
    if (close === 'body') {
      // Promise a long body, send a little, cut the connection.
      const text = Buffer.from(JSON.stringify(echo));
      res.writeHead(status, { 'Content-Type': 'application/json', 'Content-Length': text.length * 4 });
      res.write(text);
      await sleep(50);
      rec.cut = true;
      req.socket.destroy();
      return;
    }
    const chunked = q.get('chunked') === '1';
    return sendJson(res, rec, status, echo, chunked, q);
  }

  /** Response headers: the defaults plus every h=Name:Value of the query. */
  function responseHeaders(q, base) {
    const out = Object.entries(base);
    for (const h of q ? q.getAll('h') : []) {
      const i = h.indexOf(':');
      if (i > 0) out.push([h.slice(0, i).trim(), h.slice(i + 1).trim()]);
    }
    return out;
  }

  function sendJson(res, rec, status, obj, chunked = false, q = null) {
    const text = Buffer.from(JSON.stringify(obj));
    const headers = { 'Content-Type': 'application/json', 'X-Upstream-Instance': name };
    if (chunked) {
      res.writeHead(status, responseHeaders(q, headers).flat());
      const half = Math.floor(text.length / 2);
      res.write(text.subarray(0, half));
      res.end(text.subarray(half), () => (rec.sent = text.length));
    } else if (status === 204 || status === 304 || (status >= 100 && status < 200)) {
      // No body, and so no Content-Length (RFC 9110 8.6), unless the test asks for a stray one.
      delete headers['Content-Type'];
      const stray = q?.get('stray_length');
      if (stray) headers['Content-Length'] = stray;
      res.writeHead(status, responseHeaders(q, headers).flat());
      res.end();
    } else {
      headers['Content-Length'] = text.length;
      res.writeHead(status, responseHeaders(q, headers).flat());
      res.end(text, () => (rec.sent = text.length));
    }
  }

  async function streamBody(res, rec, status, size, q, cut) {
    const chunked = q.get('chunked') === '1';
    const rate = intParam(q, 'rate', 0);
    const chunk = rate > 0 ? Math.max(1024, Math.min(64 * 1024, Math.floor(rate / 20))) : 64 * 1024;
    const headers = { 'Content-Type': 'application/octet-stream', 'X-Upstream-Instance': name };
    if (!chunked) headers['Content-Length'] = size;
    res.writeHead(status, responseHeaders(q, headers).flat());
    const limit = cut ? Math.floor(size / 2) : size;
    const started = Date.now();
    let off = 0;
    while (off < limit) {
      if (res.destroyed) return;
      const n = Math.min(chunk, limit - off);
      const buf = patternSlice(off, n);
      off += n;
      const ok = res.write(buf, () => {
        rec.sent += n;
      });
      if (!ok) {
        await new Promise((resolve) => {
          const go = () => {
            res.off('drain', go);
            res.off('close', go);
            resolve();
          };
          res.on('drain', go);
          res.on('close', go);
        });
      }
      if (rate > 0) {
        const due = started + (off / rate) * 1000;
        const wait = due - Date.now();
        if (wait > 0) await sleep(wait);
      }
    }
    if (cut) {
      rec.cut = true;
      await sleep(50);
      res.socket?.destroy();
      return;
    }
    res.end();
  }

  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen({ port: opts.port ?? 0, host: '127.0.0.1' }, resolve);
  });
  const port = server.address().port;

  let closing = null;
  const up = {
    name,
    port,
    url: `http://127.0.0.1:${port}`,
    address: `127.0.0.1:${port}`,
    hits,
    get ready() {
      return state.ready;
    },
    set ready(v) {
      state.ready = !!v;
    },
    set(defaults = {}) {
      state.defaults = { ...defaults };
    },
    count(pred = () => true) {
      return hits.filter(pred).length;
    },
    /** The records of requests other than health checks (GET /readyz). */
    calls(pred = () => true) {
      return hits.filter((h) => h.path !== '/readyz' && pred(h));
    },
    reset() {
      hits.length = 0;
      state.failCounts.clear();
    },
    /** Resolves with the first record matching pred, past or future. */
    waitFor(pred, ms = 10000) {
      const hit = hits.find(pred);
      if (hit) return Promise.resolve(hit);
      return new Promise((resolve, reject) => {
        const w = (rec) => {
          if (!pred(rec)) return;
          watchers.delete(w);
          clearTimeout(timer);
          resolve(rec);
        };
        const timer = setTimeout(() => {
          watchers.delete(w);
          reject(new Error(`upstream ${name}: no matching request within ${ms} ms; saw ${summary()}`));
        }, ms);
        watchers.add(w);
      });
    },
    /** How many connections the upstream has open right now. */
    get openConnections() {
      return sockets.size;
    },
    kill() {
      if (!closing) {
        closing = new Promise((resolve) => server.close(() => resolve()));
        for (const c of wss.clients) c.terminate();
      }
      for (const s of sockets) s.destroy();
      return closing;
    },
    close() {
      return up.kill();
    },
  };

  function summary() {
    return JSON.stringify(
      hits.slice(-10).map((h) => ({ m: h.method, u: h.url, s: h.status, a: h.aborted, b: h.bodyBytes })),
    );
  }

  return up;
}

/** [[name, value], ...] from node's flat rawHeaders. */
function pairs(raw) {
  const out = [];
  for (let i = 0; i + 1 < raw.length; i += 2) out.push([raw[i], raw[i + 1]]);
  return out;
}

// ---------------------------------------------------------------- child-process mode

/**
 * Runs a fake upstream in its own node process (this file as a script), for
 * tests that must kill a real process. Resolves with {proc, pid, port, url,
 * address, kill(signal)}. The child's hits are not visible here.
 * opts.name / opts.defaults as for startUpstream.
 */
export function spawnUpstream(opts = {}) {
  const proc = spawn(
    process.execPath,
    [fileURLToPath(import.meta.url), JSON.stringify({ name: opts.name ?? 'child', defaults: opts.defaults || {} })],
    { stdio: ['ignore', 'pipe', 'inherit'] },
  );
  return new Promise((resolve, reject) => {
    let out = '';
    const timer = setTimeout(() => {
      proc.kill('SIGKILL');
      reject(new Error('fake upstream child did not start within 10 s'));
    }, 10000);
    proc.on('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    proc.on('exit', (code, signal) => {
      clearTimeout(timer);
      reject(new Error(`fake upstream child exited (${code}, ${signal}) before listening`));
    });
    proc.stdout.setEncoding('utf8').on('data', (c) => {
      out += c;
      const i = out.indexOf('\n');
      if (i < 0) return;
      clearTimeout(timer);
      proc.removeAllListeners('exit');
      const { port } = JSON.parse(out.slice(0, i));
      resolve({
        proc,
        pid: proc.pid,
        port,
        url: `http://127.0.0.1:${port}`,
        address: `127.0.0.1:${port}`,
        kill(signal = 'SIGKILL') {
          if (proc.exitCode === null && proc.signalCode === null) proc.kill(signal);
          return new Promise((r) => (proc.exitCode !== null || proc.signalCode !== null ? r() : proc.once('exit', () => r())));
        },
      });
    });
  });
}

/**
 * A loopback port where connecting hangs, as with a host that drops SYNs:
 * a child process listens with a backlog of 1 and then blocks its only
 * thread (Atomics.wait, no CPU), so it never accepts; once the kernel's
 * accept queue is full (filled here) further connection attempts get no
 * answer at all. The child ends itself after two minutes, so it cannot be
 * left behind by a test that crashed. Resolves with {port, address, kill()}.
 */
export async function spawnBlackhole() {
  const net = await import('node:net');
  const code =
    "const s=require('net').createServer();" +
    "s.listen({port:0,host:'127.0.0.1',backlog:1},()=>{" +
    'console.log(s.address().port);Atomics.wait(new Int32Array(new SharedArrayBuffer(4)),0,0,120000);' +
    'process.exit(0)})';
  const proc = spawn(process.execPath, ['-e', code], { stdio: ['ignore', 'pipe', 'inherit'] });
  const port = await new Promise((resolve, reject) => {
    proc.stdout.once('data', (d) => resolve(Number(String(d).trim())));
    proc.once('exit', (c) => reject(new Error(`blackhole child exited (${c})`)));
  });
  // Fill the accept queue: connect until an attempt gets no answer.
  const held = [];
  for (let i = 0; i < 16; i++) {
    const s = net.connect(port, '127.0.0.1');
    s.on('error', () => {});
    held.push(s);
    const ok = await new Promise((resolve) => {
      s.once('connect', () => resolve(true));
      setTimeout(() => resolve(false), 200);
    });
    if (!ok) break;
  }
  return {
    port,
    address: `127.0.0.1:${port}`,
    kill() {
      for (const s of held) s.destroy();
      proc.kill('SIGKILL');
    },
  };
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const cfg = process.argv[2] ? JSON.parse(process.argv[2]) : {};
  const up = await startUpstream(cfg);
  process.stdout.write(`${JSON.stringify({ port: up.port })}\n`);
  // The parent going away ends us too (no orphans after a crashed test).
  process.on('disconnect', () => process.exit(0));
  setInterval(() => {
    if (process.ppid === 1) process.exit(0);
  }, 1000).unref();
}

// ---------------------------------------------------------------- the gateway under test

/**
 * Starts `trellis serve gateway` (harness startService) with a routes file
 * written from `routes` (an object, or a string written as is; omitted: no
 * --routes, the built-in table). opts.workers defaults to 1 so per-worker
 * state (keep-alive pools, balancer cursors) is deterministic; opts.args,
 * opts.env and opts.dataDir go to startService. The returned service also has
 *   routesFile          the file's path
 *   writeRoutes(r)      rewrites it
 *   reload(r)           rewrites it (when r is given) and sends SIGHUP
 *   accessLog(pred)     the access-log entries so far (msg "request")
 *   waitAccess(pred)    resolves with the first access-log entry matching pred
 */
export async function startGateway(opts = {}) {
  const { routes, args = [], workers = 1, ...rest } = opts;
  const { startService, tempDir } = await import('./harness.mjs');
  const dir = tempDir('trellis-gw-');
  const routesFile = path.join(dir, 'routes.json');
  const write = (r) => fs.writeFileSync(routesFile, typeof r === 'string' ? r : JSON.stringify(r, null, 2));
  if (routes !== undefined) write(routes);
  const argv = [...(routes !== undefined ? ['--routes', routesFile] : []), '--workers', String(workers), ...args];
  const svc = await startService('gateway', { ...rest, args: argv });
  svc.routesFile = routesFile;
  svc.writeRoutes = write;
  svc.reload = (r) => {
    if (r !== undefined) write(r);
    svc.proc.kill('SIGHUP');
  };
  svc.accessLog = (pred = () => true) => svc.logs.filter((e) => isAccess(e) && pred(e));
  svc.waitAccess = (pred = () => true, ms) => svc.waitLog((e) => isAccess(e) && pred(e), ms);
  return svc;
}

/** An access-log entry: the kit's per-request line. */
export function isAccess(e) {
  return e && e.msg === 'request' && typeof e.status === 'number';
}
