// harness.mjs - what every black-box test needs to drive the real `trellis`
// binary over real loopback sockets.
//
// Design notes:
// - Every process and temp dir the harness creates is tracked in module-level
//   sets. Tests stop what they start in after() hooks; a process 'exit'
//   handler SIGKILLs and removes whatever is left, so a failing or timed-out
//   test never leaks a server or a directory.
// - request() uses node:http with agent:false (one connection per request,
//   closed after the answer) rather than fetch, so a test controls every
//   header and sees the exact status and headers the server sent.
// - RawConn speaks HTTP/1.1 by hand over node:net for the cases a client
//   library hides: pipelining, HEAD framing, 100-continue, malformed input,
//   slow clients. Its response reader understands Content-Length, chunked
//   and read-until-close bodies.
// - Under the ASan build (TRELLIS_E2E_SANITIZED=1) everything is several
//   times slower; every timeout goes through T().

import { spawn, spawnSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { after, before } from 'node:test';
import { fileURLToPath } from 'node:url';

export const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');
export const TRELLIS_BIN = process.env.TRELLIS_BIN
  ? path.resolve(process.env.TRELLIS_BIN)
  : path.join(REPO_ROOT, 'build', 'trellis');
export const SANITIZED = process.env.TRELLIS_E2E_SANITIZED === '1';

/** Scales a timeout for the sanitizer build. */
export function T(ms) {
  return SANITIZED ? ms * 5 : ms;
}

// Argon2 at its minimums keeps registration and login in the tens of
// milliseconds, so the suite stays fast.
export const FAST_ARGON2_ARGS = ['--argon2-memory', '19m', '--argon2-iterations', '2'];
export const FAST_ARGON2_ENV = { TRELLIS_ARGON2_MEMORY: '19m', TRELLIS_ARGON2_ITERATIONS: '2' };

const liveProcs = new Set();
const liveDirs = new Set();

process.on('exit', () => {
  for (const p of liveProcs) {
    try {
      p.kill('SIGKILL');
    } catch {
      /* already gone */
    }
  }
  for (const d of liveDirs) {
    try {
      fs.rmSync(d, { recursive: true, force: true });
    } catch {
      /* best effort at exit */
    }
  }
});

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** A fresh private temp dir, removed at exit unless removed earlier. */
export function tempDir(prefix = 'trellis-e2e-') {
  const d = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  liveDirs.add(d);
  return d;
}

export function removeDir(d) {
  fs.rmSync(d, { recursive: true, force: true });
  liveDirs.delete(d);
}

/** Environment for a child: ours minus TRELLIS_* settings that would leak
 * into the service's configuration, plus extra. */
function childEnv(extra = {}) {
  const env = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (k.startsWith('TRELLIS_')) continue;
    env[k] = v;
  }
  return { ...env, ...extra };
}

/** Splits a stream into lines, calling onLine for each complete one. */
function lineReader(stream, onLine) {
  let pending = '';
  stream.setEncoding('utf8');
  stream.on('data', (chunk) => {
    pending += chunk;
    let i;
    while ((i = pending.indexOf('\n')) >= 0) {
      const line = pending.slice(0, i).replace(/\r$/, '');
      pending = pending.slice(i + 1);
      onLine(line);
    }
  });
  stream.on('end', () => {
    if (pending) onLine(pending);
    pending = '';
  });
}

function parseLogLine(line) {
  try {
    const v = JSON.parse(line);
    if (v && typeof v === 'object') return v;
  } catch {
    /* not JSON */
  }
  return { raw: line };
}

/** Resolves with {code, signal} when proc has exited (at once if it has). */
export function waitExit(proc, timeoutMs = Infinity) {
  return new Promise((resolve, reject) => {
    if (proc.exitCode !== null || proc.signalCode !== null) {
      resolve({ code: proc.exitCode, signal: proc.signalCode });
      return;
    }
    let timer = null;
    const onExit = (code, signal) => {
      if (timer) clearTimeout(timer);
      resolve({ code, signal });
    };
    proc.once('exit', onExit);
    if (Number.isFinite(timeoutMs)) {
      timer = setTimeout(() => {
        proc.off('exit', onExit);
        reject(new Error(`process ${proc.pid} did not exit within ${timeoutMs} ms`));
      }, timeoutMs);
    }
  });
}

/** SIGTERM, then SIGKILL after killAfterMs. Resolves with {code, signal, killed}. */
export async function terminate(proc, killAfterMs = 10000) {
  if (proc.exitCode !== null || proc.signalCode !== null) {
    liveProcs.delete(proc);
    return { code: proc.exitCode, signal: proc.signalCode, killed: false };
  }
  proc.kill('SIGTERM');
  try {
    const r = await waitExit(proc, killAfterMs);
    return { ...r, killed: false };
  } catch {
    proc.kill('SIGKILL');
    const r = await waitExit(proc);
    return { ...r, killed: true };
  } finally {
    liveProcs.delete(proc);
  }
}

// What the sanitizers print when they find something (ASan, LSan, UBSan).
const SANITIZER_REPORT = /ERROR: (AddressSanitizer|LeakSanitizer)|runtime error: |SUMMARY: UndefinedBehaviorSanitizer/;

/**
 * Throws when a stopped process did not shut down cleanly: killed, a non-zero
 * exit after SIGTERM, or a sanitizer report in its output. Called by stop()
 * so every after() hook that stops a service also checks it.
 */
function checkCleanExit(what, r, output) {
  const problems = [];
  if (r.killed) problems.push('did not exit within the grace period and was SIGKILLed');
  else if (r.code !== 0) problems.push(`exited with code ${r.code} signal ${r.signal} after SIGTERM`);
  const m = SANITIZER_REPORT.exec(output);
  if (m) problems.push(`sanitizer report: ${m[0]}`);
  if (problems.length) {
    const tail = output.split('\n').slice(-60).join('\n');
    const err = new Error(`${what}: ${problems.join('; ')}\n--- last output\n${tail}`);
    err.exit = r;
    throw err;
  }
}

/**
 * The database engine services run on in this test run: TRELLIS_E2E_DB=
 * postgres puts every started service on the test cluster
 * (TRELLIS_TEST_PG_URL, from scripts/pg-cluster.sh); anything else keeps
 * the default SQLite file in the service's data dir.
 */
export const E2E_DB = process.env.TRELLIS_E2E_DB === 'postgres' ? 'postgres' : 'sqlite';
export const TEST_PG_URL = process.env.TRELLIS_TEST_PG_URL || '';

/** A URL for database `name` on the test cluster ('' when there is none). */
export function pgDatabaseUrl(name) {
  if (!TEST_PG_URL) return '';
  return TEST_PG_URL.replace(/\/?$/, '/') + encodeURIComponent(name);
}

/**
 * The `--db` flags a started service gets for the run's engine: none on
 * SQLite; on PostgreSQL a database of its own, named after the service and
 * its data dir, so a restart on the same data dir finds the same database
 * (the engine creates it on first use). Explicit --db in args wins.
 */
export function engineArgs(name, dataDir, args = []) {
  if (E2E_DB !== 'postgres' || args.includes('--db')) return [];
  if (!TEST_PG_URL) throw new Error('TRELLIS_E2E_DB=postgres needs TRELLIS_TEST_PG_URL');
  const tag = crypto.createHash('sha1').update(path.resolve(dataDir)).digest('hex').slice(0, 12);
  return ['--db', pgDatabaseUrl(`e2e_${name}_${tag}`)];
}

/**
 * Starts `trellis serve <name> --port 0 --data <dir> ...` and waits for its
 * "listening" log line. The service's admin listener (/metrics) is then at
 * svc.adminUrl (port svc.adminPort, from that line's admin_port). Under
 * TRELLIS_E2E_DB=postgres the service gets a PostgreSQL database of its own
 * (engineArgs).
 *
 * opts.args: extra flags; opts.env: extra environment; opts.dataDir: use this
 * dir (kept on stop) instead of a fresh one (removed on stop); opts.fastArgon2
 * (default true for auth): pass the argon2 minimums.
 */
export async function startService(name, opts = {}) {
  const { args = [], env = {}, timeoutMs = T(20000) } = opts;
  const ownDir = !opts.dataDir;
  const dataDir = opts.dataDir || tempDir(`trellis-${name}-`);
  const fast = opts.fastArgon2 ?? name === 'auth';
  // --admin-port 0 even when a test pins --port (a restart on the same
  // port): the default, port + 1000, is not known to be free.
  const dbArgs = engineArgs(name, dataDir, args);
  const argv = ['serve', name, '--port', '0', '--admin-port', '0', '--data', dataDir, ...(fast ? FAST_ARGON2_ARGS : []), ...dbArgs, ...args];
  const proc = spawn(TRELLIS_BIN, argv, {
    cwd: dataDir,
    env: childEnv(env),
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  liveProcs.add(proc);

  const logs = [];
  const out = { stdout: '', stderr: '' };
  const watchers = new Set();
  lineReader(proc.stderr, (line) => {
    out.stderr += line + '\n';
    const entry = parseLogLine(line);
    logs.push(entry);
    for (const w of watchers) w(entry);
  });
  lineReader(proc.stdout, (line) => {
    out.stdout += line + '\n';
  });

  const svc = {
    name,
    proc,
    pid: proc.pid,
    dataDir,
    dbUrl: dbArgs[1] || '',
    logs,
    port: 0,
    url: '',
    /** Everything the process wrote so far, stdout and stderr. */
    output: () => out.stdout + out.stderr,
    /** Resolves with the first log entry (past or future) matching pred. */
    waitLog(pred, ms = T(10000)) {
      const hit = logs.find(pred);
      if (hit) return Promise.resolve(hit);
      return new Promise((resolve, reject) => {
        const w = (e) => {
          if (!pred(e)) return;
          watchers.delete(w);
          clearTimeout(timer);
          resolve(e);
        };
        const timer = setTimeout(() => {
          watchers.delete(w);
          reject(new Error(`log line not seen within ${ms} ms; output:\n${svc.output()}`));
        }, ms);
        watchers.add(w);
      });
    },
    stopped: null,
    /** SIGTERM and wait; removes an own data dir. Resolves with
     * {code, signal, killed}; rejects when the exit was not clean (see
     * checkCleanExit) unless opts.check is false. */
    async stop({ check = true } = {}) {
      if (!svc.stopped) {
        svc.stopped = (async () => {
          const r = await terminate(proc, T(10000));
          if (ownDir) removeDir(dataDir);
          return r;
        })();
      }
      const r = await svc.stopped;
      if (check) checkCleanExit(`trellis serve ${name} (pid ${proc.pid})`, r, svc.output());
      return r;
    },
  };

  const listening = await new Promise((resolve, reject) => {
    const fail = (why) => {
      cleanup();
      reject(new Error(`trellis serve ${name}: ${why}\nargv: ${argv.join(' ')}\noutput:\n${svc.output()}`));
    };
    const w = (e) => {
      if (e.msg === 'listening' && Number.isInteger(e.port) && e.port > 0) {
        cleanup();
        resolve(e);
      }
    };
    const onExit = (code, signal) => {
      // Let the pipes drain so the error shows the process's last words.
      setTimeout(() => fail(`exited before listening (code ${code}, signal ${signal})`), 100);
    };
    const onError = (err) => fail(`spawn failed: ${err.message}`);
    const timer = setTimeout(() => fail(`no "listening" line within ${timeoutMs} ms`), timeoutMs);
    function cleanup() {
      clearTimeout(timer);
      watchers.delete(w);
      proc.off('exit', onExit);
      proc.off('error', onError);
    }
    watchers.add(w);
    proc.on('exit', onExit);
    proc.on('error', onError);
  }).catch(async (err) => {
    await svc.stop({ check: false });
    throw err;
  });

  svc.port = listening.port;
  svc.url = `http://127.0.0.1:${listening.port}`;
  // The admin listener (/metrics; loopback): its port is in the same line.
  svc.adminPort = Number.isInteger(listening.admin_port) ? listening.admin_port : 0;
  svc.adminUrl = svc.adminPort ? `http://127.0.0.1:${svc.adminPort}` : '';
  svc.listening = listening;
  return svc;
}

/**
 * One service for all the tests of the calling file: started (startService
 * with opts) in a before() hook, stopped in an after() hook that fails on an
 * unclean exit. Returns a holder whose fields are set once that before() has
 * run, so read them inside tests: `svc` (what startService returned), `url`
 * (its base URL) and `adminUrl` (its admin listener's).
 *
 * Set-up that needs the service goes in hooks.started(holder), tear-down
 * that must come before the stop in hooks.stopping(holder): a file's own
 * top-level before() would not wait for the start (node:test runs a root
 * hook as soon as it is registered once the file is loading).
 */
export function useService(name, opts = {}, hooks = {}) {
  const holder = { svc: null, url: '', adminUrl: '' };
  before(async () => {
    holder.svc = await startService(name, opts);
    holder.url = holder.svc.url;
    holder.adminUrl = holder.svc.adminUrl;
    await hooks.started?.(holder);
  });
  after(async () => {
    try {
      await hooks.stopping?.(holder);
    } finally {
      await holder.svc?.stop();
    }
  });
  return holder;
}

/** Parses the table `trellis up` prints: header SERVICE PORT ADMIN PID URL. */
export function parseUpTable(stdoutLines) {
  const rows = [];
  const h = stdoutLines.findIndex((l) => /^\s*SERVICE\s+PORT\s+ADMIN\s+PID\s+URL\s*$/.test(l));
  if (h < 0) return { header: false, rows };
  for (let i = h + 1; i < stdoutLines.length; i++) {
    const m = /^\s*([a-z][a-z0-9_-]*)\s+(\d+)\s+(\d+)\s+(\d+)\s+(\S+)\s*$/.exec(stdoutLines[i]);
    if (!m) break;
    rows.push({ service: m[1], port: Number(m[2]), adminPort: Number(m[3]), pid: Number(m[4]), url: m[5] });
  }
  return { header: true, rows };
}

// Lines by which `trellis up` (or a service) tells that a port was taken.
const ADDR_IN_USE = /Address already in use|EADDRINUSE/i;

/**
 * Starts `trellis up --port-base N --data DIR [--only ...]` and waits for the
 * stdout line "trellis up: ready". Argon2 minimums reach the children
 * through the environment (TRELLIS_ARGON2_*), which they inherit.
 *
 * Without opts.portBase the base comes from freePortBase() (below the
 * kernel's ephemeral range), and when a child still could not listen
 * ("Address already in use": something took one of the ports between the
 * check and the bind) the supervisor is stopped and started again on another
 * base, up to 5 times. An explicit opts.portBase is tried once.
 */
export async function startUp(opts = {}) {
  const attempts = opts.portBase === undefined ? 5 : 1;
  for (let attempt = 1; ; attempt++) {
    const portBase = opts.portBase ?? (await freePortBase());
    try {
      return await startUpOn(portBase, opts);
    } catch (err) {
      if (!(err.addrInUse && attempt < attempts)) throw err;
    }
  }
}

async function startUpOn(portBase, opts) {
  const { only, args = [], env = {}, timeoutMs = T(30000) } = opts;
  // The admin listeners get a free range of their own (default: base + 1000).
  const adminPortBase = opts.adminPortBase ?? (await freePortBase());
  const ownDir = !opts.dataDir;
  const dataDir = opts.dataDir || tempDir('trellis-up-');
  const argv = ['up', '--port-base', String(portBase), '--admin-port-base', String(adminPortBase), '--data', dataDir];
  if (only) argv.push('--only', Array.isArray(only) ? only.join(',') : only);
  argv.push(...args);
  const proc = spawn(TRELLIS_BIN, argv, {
    cwd: dataDir,
    env: childEnv({ ...FAST_ARGON2_ENV, ...env }),
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  liveProcs.add(proc);

  const stdoutLines = [];
  const stderrLines = [];
  const watchers = new Set();
  const emit = (stream, line) => {
    for (const w of watchers) w(stream, line);
  };
  lineReader(proc.stdout, (line) => {
    stdoutLines.push(line);
    emit('stdout', line);
  });
  lineReader(proc.stderr, (line) => {
    stderrLines.push(line);
    emit('stderr', line);
  });

  const up = {
    proc,
    pid: proc.pid,
    portBase,
    adminPortBase,
    dataDir,
    stdoutLines,
    stderrLines,
    output: () => `--- stdout\n${stdoutLines.join('\n')}\n--- stderr\n${stderrLines.join('\n')}\n`,
    table: () => parseUpTable(stdoutLines),
    /** Resolves with the first line (either stream, past or future) matching re,
     * considering only lines after index `from` ({stdout, stderr}). */
    waitLine(re, ms = T(15000), from = { stdout: 0, stderr: 0 }) {
      const past =
        stdoutLines.slice(from.stdout).find((l) => re.test(l)) ??
        stderrLines.slice(from.stderr).find((l) => re.test(l));
      if (past !== undefined) return Promise.resolve(past);
      return new Promise((resolve, reject) => {
        const w = (_s, line) => {
          if (!re.test(line)) return;
          watchers.delete(w);
          clearTimeout(timer);
          resolve(line);
        };
        const timer = setTimeout(() => {
          watchers.delete(w);
          reject(new Error(`no line matching ${re} within ${ms} ms\n${up.output()}`));
        }, ms);
        watchers.add(w);
      });
    },
    mark: () => ({ stdout: stdoutLines.length, stderr: stderrLines.length }),
    stopped: null,
    /** Like the service's stop(): rejects on an unclean exit unless
     * opts.check is false. */
    async stop({ check = true } = {}) {
      if (!up.stopped) {
        up.stopped = (async () => {
          const r = await terminate(proc, T(15000));
          if (ownDir) removeDir(dataDir);
          return r;
        })();
      }
      const r = await up.stopped;
      if (check) checkCleanExit(`trellis up (pid ${proc.pid})`, r, up.output());
      return r;
    },
  };

  const exited = waitExit(proc).then((r) => {
    throw new Error(`trellis up exited before ready (code ${r.code}, signal ${r.signal})`);
  });
  // A child that cannot bind its port is restarted with backoff for ever:
  // its log line is the failure, not the 30 s timeout.
  let onTaken;
  const taken = new Promise((_resolve, reject) => {
    onTaken = (_s, line) => {
      if (!/cannot listen on/.test(line) || !ADDR_IN_USE.test(line)) return;
      const e = new Error(`a port from base ${portBase} was taken: ${line}`);
      e.addrInUse = true;
      reject(e);
    };
    watchers.add(onTaken);
  });
  taken.catch(() => {});
  try {
    await Promise.race([up.waitLine(/^trellis up: ready\s*$/, timeoutMs), exited, taken]);
    // "ready" only means every port answered /readyz: a port taken by
    // another server (possibly another test's Trellis) answers too.
    if (ADDR_IN_USE.test(up.output())) {
      const e = new Error(`a port from base ${portBase} was taken`);
      e.addrInUse = true;
      throw e;
    }
  } catch (err) {
    await sleep(100);
    // The supervisor's children die with it (PR_SET_PDEATHSIG): no need to
    // wait for a readiness probe stuck on the foreign listener to give up.
    if (err.addrInUse) {
      proc.kill('SIGKILL');
      await waitExit(proc);
      liveProcs.delete(proc);
      if (ownDir) removeDir(dataDir);
    } else {
      await up.stop({ check: false });
    }
    const e = new Error(`${err.message}\nargv: ${argv.join(' ')}\n${up.output()}`);
    e.addrInUse = err.addrInUse === true;
    throw e;
  } finally {
    watchers.delete(onTaken);
  }
  exited.catch(() => {});
  return up;
}

/** Runs the CLI to completion. Resolves with {code, signal, stdout, stderr}. */
export function runCli(args, opts = {}) {
  const { env = {}, timeoutMs = T(20000), cwd } = opts;
  // `trellis admin ... --data DIR` works on auth's database: on PostgreSQL
  // that is the database a started auth on DIR uses (engineArgs).
  const data = args.indexOf('--data');
  if (args[0] === 'admin' && data > 0 && args[data + 1]) args = [...args, ...engineArgs('auth', args[data + 1], args)];
  return new Promise((resolve, reject) => {
    const proc = spawn(TRELLIS_BIN, args, {
      cwd: cwd || os.tmpdir(),
      env: childEnv(env),
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    liveProcs.add(proc);
    let stdout = '';
    let stderr = '';
    proc.stdout.setEncoding('utf8').on('data', (c) => (stdout += c));
    proc.stderr.setEncoding('utf8').on('data', (c) => (stderr += c));
    const timer = setTimeout(() => {
      proc.kill('SIGKILL');
      reject(new Error(`trellis ${args.join(' ')} did not finish within ${timeoutMs} ms\n${stdout}${stderr}`));
    }, timeoutMs);
    proc.on('error', (e) => {
      clearTimeout(timer);
      liveProcs.delete(proc);
      reject(e);
    });
    proc.on('close', (code, signal) => {
      clearTimeout(timer);
      liveProcs.delete(proc);
      resolve({ code, signal, stdout, stderr });
    });
  });
}

/** `trellis admin create-user`; returns the user object it prints. */
export async function adminCreateUser(dataDir, { email, password, role = 'admin' }) {
  const r = await runCli(
    ['admin', 'create-user', '--email', email, '--password', password, '--role', role, '--data', dataDir],
    { env: FAST_ARGON2_ENV },
  );
  if (r.code !== 0) {
    throw new Error(`admin create-user exited ${r.code}\nstdout: ${r.stdout}\nstderr: ${r.stderr}`);
  }
  let user;
  try {
    user = JSON.parse(r.stdout.trim());
  } catch {
    throw new Error(`admin create-user did not print JSON: ${r.stdout}`);
  }
  return user.user && typeof user.user === 'object' ? user.user : user;
}

/** Creates an admin with `trellis admin create-user` in svc's data dir and
 * logs it in. Resolves with the login answer plus `created`, the user the
 * CLI printed. */
export async function newAdmin(svc, tag = 'admin') {
  const email = uniqueEmail(tag);
  const created = await adminCreateUser(svc.dataDir, { email, password: PASSWORD, role: 'admin' });
  return { created, ...(await loginUser(svc.url, email)) };
}

/**
 * One HTTP request on its own connection. body: a string/Buffer is sent as
 * is; anything else is JSON-encoded with Content-Type application/json (unless
 * the caller set Content-Type). Resolves with {status, headers, text, json}.
 */
export function request(url, opts = {}) {
  // localAddress: the loopback source address to send from (127.0.0.x), so a
  // test can act as several clients.
  const { method = 'GET', headers = {}, body, timeoutMs = T(15000), agent = false, localAddress } = opts;
  const u = new URL(url);
  let payload;
  const hdrs = { ...headers };
  const has = (n) => Object.keys(hdrs).some((k) => k.toLowerCase() === n);
  if (body !== undefined && body !== null) {
    if (typeof body === 'string' || Buffer.isBuffer(body)) {
      payload = Buffer.from(body);
    } else {
      payload = Buffer.from(JSON.stringify(body));
      if (!has('content-type')) hdrs['Content-Type'] = 'application/json';
    }
    if (!has('content-length') && !has('transfer-encoding')) hdrs['Content-Length'] = payload.length;
  }
  return new Promise((resolve, reject) => {
    const req = http.request(
      { host: u.hostname, port: u.port, path: u.pathname + u.search, method, headers: hdrs, agent, localAddress },
      (res) => {
        const chunks = [];
        res.on('data', (c) => chunks.push(c));
        res.on('end', () => {
          clearTimeout(timer);
          const buf = Buffer.concat(chunks);
          const text = buf.toString('utf8');
          let json;
          try {
            json = text ? JSON.parse(text) : undefined;
          } catch {
            json = undefined;
          }
          resolve({ status: res.statusCode, headers: res.headers, text, json, body: buf });
        });
        res.on('error', reject);
      },
    );
    const timer = setTimeout(() => {
      req.destroy(new Error(`${method} ${url} timed out after ${timeoutMs} ms`));
    }, timeoutMs);
    req.on('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    if (payload) req.write(payload);
    req.end();
  });
}

/** Shorthand: JSON request with an optional Bearer token. */
export function api(base, method, p, { body, token, headers = {}, ...rest } = {}) {
  const h = { ...headers };
  if (token) h.Authorization = `Bearer ${token}`;
  return request(base + p, { method, body, headers: h, ...rest });
}

/** GETs every page of a list endpoint (?limit=, then ?cursor=next_cursor),
 * asserting each page is 200 with at most limit items in data. Resolves
 * with {items: every item in order, pages: how many pages it took}. */
export async function listAllPages(assert, base, p, { token, limit }) {
  const items = [];
  let cursor = null;
  let pages = 0;
  do {
    const q = `${p}?limit=${limit}${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ''}`;
    const r = await api(base, 'GET', q, { token });
    assert.equal(r.status, 200, `${q}: ${r.text}`);
    assert.ok(Array.isArray(r.json.data) && r.json.data.length <= limit, `${q}: ${r.text}`);
    items.push(...r.json.data);
    cursor = r.json.next_cursor;
    assert.ok(++pages <= 1000, `${p}: the cursor never runs out`);
  } while (cursor);
  return { items, pages };
}

/**
 * The kernel's ephemeral port range, {low, high}, from
 * /proc/sys/net/ipv4/ip_local_port_range (Linux's default 32768-60999 when
 * it cannot be read). Ports the kernel hands out for `listen(0)` and for
 * outgoing connections come from there, so a port picked in it can be taken
 * by anyone at any moment.
 */
export function ephemeralRange() {
  try {
    const [low, high] = fs
      .readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8')
      .trim()
      .split(/\s+/)
      .map(Number);
    if (Number.isInteger(low) && Number.isInteger(high) && low <= high) return { low, high };
  } catch {
    /* not Linux, or no /proc */
  }
  return { low: 32768, high: 60999 };
}

/** Whether 127.0.0.1:port can be bound right now (bound and let go). */
function canBind(port) {
  return new Promise((resolve) => {
    const s = net.createServer();
    s.once('error', () => resolve(false));
    s.listen({ port, host: '127.0.0.1', exclusive: true }, () => s.close(() => resolve(true)));
  });
}

/**
 * [first, last] of the window the fixed-port helpers pick from: 10000 up to
 * the ephemeral range (at most 32000), or above the ephemeral range when it
 * starts too low to leave room below.
 */
function fixedPortWindow(span) {
  const { low, high } = ephemeralRange();
  const top = Math.min(low - 1, 32000) - span;
  if (top - 10000 >= 1000) return [10000, top];
  if (65535 - span - (high + 1) >= 1000) return [high + 1, 65535 - span];
  throw new Error(`no room for fixed test ports outside the ephemeral range ${low}-${high}`);
}

// Fixed ports are handed out in aligned blocks of PORT_BLOCK, each claimed
// with a lock file (holding the claimer's pid) for the life of this process,
// so test processes running side by side never pick overlapping ranges. A
// collision would not always show as "Address already in use": services
// with several workers listen with SO_REUSEPORT, and two processes of one
// user may then share a port, each getting some of the connections.
const PORT_BLOCK = 32;
const PORT_LOCK_DIR = path.join(os.tmpdir(), 'trellis-e2e-ports');
const heldBlocks = new Set();

process.on('exit', () => {
  for (const f of heldBlocks) {
    try {
      fs.unlinkSync(f);
    } catch {
      /* already gone */
    }
  }
});

function pidAlive(pid) {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return e.code === 'EPERM';
  }
}

/** Claims block k for this process; false when another live process has it. */
function claimBlock(k) {
  fs.mkdirSync(PORT_LOCK_DIR, { recursive: true });
  const file = path.join(PORT_LOCK_DIR, `block-${k}`);
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      fs.writeFileSync(file, String(process.pid), { flag: 'wx' });
      heldBlocks.add(file);
      return true;
    } catch (e) {
      if (e.code !== 'EEXIST') throw e;
    }
    const owner = Number(fs.readFileSync(file, 'utf8'));
    if (Number.isInteger(owner) && owner > 0 && pidAlive(owner)) return false;
    fs.rmSync(file, { force: true }); // left by a process that is gone
  }
  return false;
}

/**
 * Finds a base port B with B..B+span all free on 127.0.0.1, outside the
 * kernel's ephemeral range (see fixedPortWindow), for `--port-base`. The
 * block is this process's until it exits (see claimBlock). Free when checked
 * is no promise against programs outside the test suite: startUp() retries
 * on "Address already in use".
 */
export async function freePortBase(span = 20) {
  if (span >= PORT_BLOCK) throw new Error(`freePortBase: span ${span} is over ${PORT_BLOCK - 1}`);
  const [first, last] = fixedPortWindow(PORT_BLOCK);
  const firstBlock = Math.ceil(first / PORT_BLOCK);
  const blocks = Math.floor(last / PORT_BLOCK) - firstBlock + 1;
  for (let attempt = 0; attempt < 200; attempt++) {
    const k = firstBlock + crypto.randomInt(0, blocks);
    const base = k * PORT_BLOCK;
    let ok = true;
    for (let p = base; p <= base + span && ok; p++) ok = await canBind(p);
    if (ok && claimBlock(k)) return base;
  }
  throw new Error('no free port range found');
}

/**
 * A loopback port nothing listens on, for tests of refused connections: free
 * when checked and outside the ephemeral range, so no `--port 0` server and
 * no outgoing connection can be given it afterwards.
 */
export async function closedPort() {
  return freePortBase(0);
}

// ---------------------------------------------------------------- raw TCP

/** Parses "HTTP/1.1 200 OK\r\nA: b\r\n..." up to the blank line. */
function parseHead(text) {
  const lines = text.split('\r\n');
  const m = /^HTTP\/(\d\.\d) (\d{3})(?: (.*))?$/.exec(lines[0]);
  if (!m) throw new Error(`bad status line: ${JSON.stringify(lines[0])}`);
  const headers = {};
  const rawHeaders = [];
  for (const l of lines.slice(1)) {
    const i = l.indexOf(':');
    if (i <= 0) throw new Error(`bad header line: ${JSON.stringify(l)}`);
    const name = l.slice(0, i).trim();
    const value = l.slice(i + 1).trim();
    rawHeaders.push([name, value]);
    const k = name.toLowerCase();
    headers[k] = headers[k] === undefined ? value : `${headers[k]}, ${value}`;
  }
  return { version: m[1], status: Number(m[2]), reason: m[3] ?? '', headers, rawHeaders };
}

/**
 * A hand-driven HTTP/1.1 connection. write() sends bytes; readResponse()
 * consumes exactly one response from what has arrived (waiting as needed);
 * waitClose() tells whether the server closed the connection.
 */
export class RawConn {
  static open(port, host = '127.0.0.1') {
    return new Promise((resolve, reject) => {
      const sock = net.connect({ port, host });
      const c = new RawConn(sock);
      sock.once('connect', () => resolve(c));
      sock.once('error', reject);
    });
  }

  constructor(sock) {
    this.sock = sock;
    this.buf = Buffer.alloc(0);
    this.ended = false; // peer sent FIN
    this.closed = false;
    this.error = null;
    this.waiters = new Set();
    sock.on('data', (d) => {
      this.buf = Buffer.concat([this.buf, d]);
      this.#wake();
    });
    sock.on('end', () => {
      this.ended = true;
      this.#wake();
    });
    sock.on('close', () => {
      this.closed = true;
      this.#wake();
    });
    sock.on('error', (e) => {
      this.error = e;
      this.#wake();
    });
  }

  #wake() {
    for (const w of [...this.waiters]) w();
  }

  /** Resolves once pred() is true (checked on every socket event). */
  #until(pred, ms, what) {
    return new Promise((resolve, reject) => {
      const check = () => {
        let v;
        try {
          v = pred();
        } catch (e) {
          done();
          reject(e);
          return;
        }
        if (v !== undefined && v !== false) {
          done();
          resolve(v);
        } else if (this.ended || this.closed) {
          done();
          reject(
            new Error(
              `connection closed while waiting for ${what}` +
                (this.error ? ` (${this.error.code || this.error.message})` : '') +
                `; received: ${JSON.stringify(this.buf.toString('latin1').slice(0, 500))}`,
            ),
          );
        }
      };
      const timer = setTimeout(() => {
        done();
        reject(
          new Error(`timed out after ${ms} ms waiting for ${what}; received: ${JSON.stringify(this.buf.toString('latin1').slice(0, 500))}`),
        );
      }, ms);
      const done = () => {
        clearTimeout(timer);
        this.waiters.delete(check);
      };
      this.waiters.add(check);
      check();
    });
  }

  write(data) {
    return new Promise((resolve, reject) => {
      this.sock.write(data, (err) => (err ? reject(err) : resolve()));
    });
  }

  /** Resolves with the raw head text once a full head ("\r\n\r\n") is buffered. */
  async peekHead(ms = T(5000)) {
    return this.#until(
      () => {
        const i = this.buf.indexOf('\r\n\r\n');
        return i >= 0 ? this.buf.subarray(0, i).toString('latin1') : false;
      },
      ms,
      'a response head',
    );
  }

  /**
   * Reads one response. opts.head: the request was HEAD (no body follows).
   * Returns {status, reason, headers, rawHeaders, body, text, json}.
   */
  async readResponse(opts = {}) {
    const { head = false, timeoutMs = T(10000) } = opts;
    const headEnd = await this.#until(
      () => {
        const i = this.buf.indexOf('\r\n\r\n');
        return i >= 0 ? i : false;
      },
      timeoutMs,
      'a response head',
    );
    const parsed = parseHead(this.buf.subarray(0, headEnd).toString('latin1'));
    let rest = headEnd + 4;
    const noBody = head || (parsed.status >= 100 && parsed.status < 200) || parsed.status === 204 || parsed.status === 304;
    let body = Buffer.alloc(0);
    if (noBody) {
      this.buf = this.buf.subarray(rest);
    } else if (/\bchunked\b/i.test(parsed.headers['transfer-encoding'] || '')) {
      const end = await this.#until(
        () => {
          const parts = [];
          let p = rest;
          for (;;) {
            const eol = this.buf.indexOf('\r\n', p);
            if (eol < 0) return false;
            const size = parseInt(this.buf.subarray(p, eol).toString('latin1').split(';')[0], 16);
            if (Number.isNaN(size)) throw new Error('bad chunk size');
            if (size === 0) {
              // No trailers expected from Trellis: "0\r\n\r\n".
              const fin = this.buf.indexOf('\r\n\r\n', eol);
              if (fin !== eol) return false;
              body = Buffer.concat(parts);
              return eol + 4;
            }
            if (this.buf.length < eol + 2 + size + 2) return false;
            parts.push(this.buf.subarray(eol + 2, eol + 2 + size));
            p = eol + 2 + size + 2;
          }
        },
        timeoutMs,
        'a chunked body',
      );
      this.buf = this.buf.subarray(end);
    } else if (parsed.headers['content-length'] !== undefined) {
      const len = Number(parsed.headers['content-length']);
      await this.#until(() => this.buf.length >= rest + len, timeoutMs, `a ${len}-byte body`);
      body = Buffer.from(this.buf.subarray(rest, rest + len));
      this.buf = this.buf.subarray(rest + len);
    } else {
      await this.waitClose(timeoutMs);
      body = Buffer.from(this.buf.subarray(rest));
      this.buf = Buffer.alloc(0);
    }
    const text = body.toString('utf8');
    let json;
    try {
      json = text ? JSON.parse(text) : undefined;
    } catch {
      json = undefined;
    }
    return { ...parsed, body, text, json };
  }

  /** Resolves true when the peer closed (FIN or reset) within ms, else false. */
  async waitClose(ms = T(5000)) {
    try {
      await new Promise((resolve, reject) => {
        const check = () => {
          if (this.ended || this.closed) {
            clearTimeout(timer);
            this.waiters.delete(check);
            resolve();
          }
        };
        const timer = setTimeout(() => {
          this.waiters.delete(check);
          reject(new Error('timeout'));
        }, ms);
        this.waiters.add(check);
        check();
      });
      return true;
    } catch {
      return false;
    }
  }

  /** Bytes received but not yet consumed by readResponse. */
  get pending() {
    return this.buf.length;
  }

  destroy() {
    this.sock.destroy();
  }
}

/** Builds a request message. body is a string or Buffer (sent as is). */
export function rawRequest(method, target, headers = {}, body) {
  const lines = [`${method} ${target} HTTP/1.1`];
  const h = { Host: '127.0.0.1', ...headers };
  if (body !== undefined && !Object.keys(h).some((k) => /^(content-length|transfer-encoding)$/i.test(k))) {
    h['Content-Length'] = Buffer.byteLength(body);
  }
  for (const [k, v] of Object.entries(h)) lines.push(`${k}: ${v}`);
  const head = Buffer.from(lines.join('\r\n') + '\r\n\r\n', 'latin1');
  return body === undefined ? head : Buffer.concat([head, Buffer.from(body)]);
}

// ---------------------------------------------------------------- auth helpers

let emailSeq = 0;
/** A unique, valid e-mail address for this test run. */
export function uniqueEmail(tag = 'u') {
  emailSeq += 1;
  return `${tag}.${process.pid}.${Date.now().toString(36)}.${emailSeq}@example.test`;
}

export const PASSWORD = 'correct horse battery staple';

/** Registers a user; throws unless 201. Returns the parsed body plus email/password. */
export async function registerUser(base, { email = uniqueEmail(), password = PASSWORD, name } = {}) {
  const body = { email, password };
  if (name !== undefined) body.name = name;
  const r = await api(base, 'POST', '/api/auth/register', { body });
  if (r.status !== 201) throw new Error(`register ${email}: ${r.status} ${r.text}`);
  return { ...r.json, email, password };
}

/** Logs in; throws unless 200. */
export async function loginUser(base, email, password = PASSWORD) {
  const r = await api(base, 'POST', '/api/auth/login', { body: { email, password } });
  if (r.status !== 200) throw new Error(`login ${email}: ${r.status} ${r.text}`);
  return r.json;
}

// ---------------------------------------------------------------- JWT

export const b64url = (buf) => Buffer.from(buf).toString('base64url');

/** Decodes a JWT without verifying it: {header, payload, signature}. */
export function decodeJwt(token) {
  const [h, p, s] = token.split('.');
  return {
    header: JSON.parse(Buffer.from(h, 'base64url').toString('utf8')),
    payload: JSON.parse(Buffer.from(p, 'base64url').toString('utf8')),
    signature: s,
  };
}

/** Signs header.payload with HMAC (alg from the header unless hmacAlg given). */
export function signJwt(header, payload, key, hmacAlg) {
  const input = `${b64url(JSON.stringify(header))}.${b64url(JSON.stringify(payload))}`;
  if (key === null) return `${input}.`;
  const alg = hmacAlg || { HS256: 'sha256', HS384: 'sha384', HS512: 'sha512' }[header.alg] || 'sha256';
  const sig = crypto.createHmac(alg, key).update(input).digest();
  return `${input}.${b64url(sig)}`;
}

// ---------------------------------------------------------------- assertions

const ERROR_STATUS = {
  invalid_argument: 400,
  unauthenticated: 401,
  permission_denied: 403,
  not_found: 404,
  method_not_allowed: 405,
  request_timeout: 408,
  already_exists: 409,
  conflict: 409,
  payload_too_large: 413,
  unsupported_media_type: 415,
  idempotency_key_reused: 422,
  rate_limited: 429,
  headers_too_large: 431,
  uri_too_long: 414,
  internal: 500,
  not_implemented: 501,
  unavailable: 503,
};

/**
 * Asserts that res is the error envelope
 * {"error":{"code","message","request_id","details"?}} with the given status.
 * code may be a string or an array of acceptable codes (each must match its
 * status). Returns the error object.
 */
export function assertError(assert, res, status, code) {
  const statuses = Array.isArray(status) ? status : [status];
  const where = `${res.status} ${res.text}`;
  assert.ok(statuses.includes(res.status), `expected status ${statuses.join('/')}, got ${where}`);
  assert.match(String(res.headers['content-type'] || ''), /^application\/json\b/i, `error content-type (${where})`);
  assert.ok(res.json && typeof res.json === 'object', `error body is JSON (${where})`);
  const e = res.json.error;
  assert.ok(e && typeof e === 'object', `body has "error" object (${where})`);
  const codes = Array.isArray(code) ? code : [code];
  assert.ok(codes.includes(e.code), `error.code ${e.code} not in ${codes.join('/')} (${where})`);
  assert.equal(ERROR_STATUS[e.code], res.status, `status matches code ${e.code}`);
  assert.equal(typeof e.message, 'string', 'error.message is a string');
  assert.ok(e.message.length > 0, 'error.message is not empty');
  assert.equal(typeof e.request_id, 'string', 'error.request_id is a string');
  assert.ok(e.request_id.length > 0, 'error.request_id is not empty');
  if (res.headers['x-request-id'] !== undefined) {
    assert.equal(e.request_id, res.headers['x-request-id'], 'error.request_id equals X-Request-Id');
  }
  if (e.details !== undefined) {
    assert.ok(Array.isArray(e.details), 'error.details is an array');
    for (const d of e.details) {
      assert.equal(typeof d.field, 'string', 'detail.field is a string');
      assert.equal(typeof d.issue, 'string', 'detail.issue is a string');
    }
  }
  return e;
}

/** Asserts a 400 whose details name the given field. */
export function assertFieldError(assert, res, field) {
  const e = assertError(assert, res, 400, 'invalid_argument');
  assert.ok(Array.isArray(e.details) && e.details.length > 0, `details present (${res.text})`);
  assert.ok(
    e.details.some((d) => d.field === field),
    `details name field "${field}" (${JSON.stringify(e.details)})`,
  );
  return e;
}

export const UUID_V7 = /^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;
export const RFC3339_MS = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/;

/** The user object of an answer that is either {user:{...}} or the user itself. */
export function userOf(body) {
  return body && typeof body.user === 'object' && body.user !== null ? body.user : body;
}

/** Asserts the public user shape and that no secret leaked into it. */
export function assertUser(assert, u, expect = {}) {
  assert.ok(u && typeof u === 'object', 'user is an object');
  assert.match(String(u.id), UUID_V7, 'user.id is a UUIDv7');
  assert.equal(typeof u.email, 'string');
  assert.equal(typeof u.role, 'string');
  assert.ok(u.role.length > 0, 'user.role is set');
  assert.match(String(u.created_at), RFC3339_MS, 'user.created_at is RFC 3339 UTC with ms');
  assert.ok('name' in u, 'user has a name field');
  for (const k of Object.keys(u)) {
    assert.doesNotMatch(k, /password|hash|secret/i, `user carries no secret field (${k})`);
  }
  if (expect.email !== undefined) assert.equal(u.email, expect.email);
  if (expect.id !== undefined) assert.equal(u.id, expect.id);
  if (expect.role !== undefined) assert.equal(u.role, expect.role);
  if (expect.name !== undefined) assert.equal(u.name, expect.name);
}

/** Asserts {user, access_token, refresh_token, token_type, expires_in}. */
export function assertAuthBody(assert, body, expect = {}) {
  assert.ok(body && typeof body === 'object', 'body is JSON');
  assertUser(assert, body.user, expect);
  assertTokenPair(assert, body);
}

export function assertTokenPair(assert, body) {
  assert.equal(typeof body.access_token, 'string');
  assert.equal(body.access_token.split('.').length, 3, 'access_token is a JWT');
  assert.equal(typeof body.refresh_token, 'string');
  assert.ok(body.refresh_token.length >= 16, 'refresh_token is long enough');
  assert.notEqual(body.refresh_token, body.access_token);
  assert.equal(body.token_type, 'Bearer');
  assert.ok(Number.isInteger(body.expires_in) && body.expires_in > 0, `expires_in > 0 (${body.expires_in})`);
}

// ---------------------------------------------------------------- processes and ports (gateway tests)

/** A loopback TCP port that was free a moment ago (bound to 0, then let go). */
export function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen({ port: 0, host: '127.0.0.1' }, () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

/** /proc/<pid>/status as {VmRSS: kB, VmHWM: kB, ...} (numbers for the kB fields). */
export function procStatus(pid) {
  const out = {};
  for (const line of fs.readFileSync(`/proc/${pid}/status`, 'utf8').split('\n')) {
    const m = /^(\w+):\s+(.*)$/.exec(line);
    if (!m) continue;
    const kb = /^(\d+) kB$/.exec(m[2]);
    out[m[1]] = kb ? Number(kb[1]) : m[2];
  }
  return out;
}

/**
 * Starts a real redis-server on a free loopback port with its own temp dir
 * (no persistence) and waits until it accepts connections. Throws when
 * redis-server is not installed (scripts/deps.sh installs it). Resolves with
 * {proc, pid, port, url ("redis://127.0.0.1:port"), stop(), kill()}; the
 * process is SIGKILLed at exit if still running.
 */
export async function startRedis() {
  const dir = tempDir('trellis-redis-');
  for (let attempt = 0; ; attempt++) {
    const port = await freePort();
    const proc = spawn(
      'redis-server',
      ['--port', String(port), '--bind', '127.0.0.1', '--dir', dir, '--save', '', '--appendonly', 'no',
        '--protected-mode', 'no', '--daemonize', 'no', '--loglevel', 'notice'],
      { cwd: dir, stdio: ['ignore', 'pipe', 'pipe'] },
    );
    liveProcs.add(proc);
    let output = '';
    const ready = await new Promise((resolve, reject) => {
      const timer = setTimeout(() => resolve(false), T(10000));
      const onData = (c) => {
        output += c;
        if (/Ready to accept connections/.test(output)) {
          clearTimeout(timer);
          resolve(true);
        }
      };
      proc.stdout.setEncoding('utf8').on('data', onData);
      proc.stderr.setEncoding('utf8').on('data', onData);
      proc.once('error', (e) => {
        clearTimeout(timer);
        reject(new Error(`redis-server could not be started (${e.code || e.message}); run scripts/deps.sh`));
      });
      proc.once('exit', () => {
        clearTimeout(timer);
        resolve(false);
      });
    });
    if (!ready) {
      await terminate(proc, 2000);
      if (attempt < 3 && /Address already in use/i.test(output)) continue;
      throw new Error(`redis-server did not start on port ${port}:\n${output}`);
    }
    const r = {
      proc,
      pid: proc.pid,
      port,
      url: `redis://127.0.0.1:${port}`,
      output: () => output,
      /** SIGTERM (then SIGKILL) and remove its dir. */
      async stop() {
        await terminate(proc, 5000);
        removeDir(dir);
      },
      /** SIGKILL now: to its clients, Redis just went away. */
      async kill() {
        if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGKILL');
        await waitExit(proc);
        liveProcs.delete(proc);
      },
    };
    return r;
  }
}

// The codes only a proxy gives (ARCHITECTURE.md §5), for assertError.
ERROR_STATUS.bad_gateway = 502;
ERROR_STATUS.deadline_exceeded = 504;
