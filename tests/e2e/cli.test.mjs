// The `trellis` command line: version and help, usage errors, `trellis serve`
// shutdown and secrets, and the `trellis up` supervisor (table, merged logs,
// restart of a crashed child, clean shutdown, persistence across restarts).
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, describe, test } from 'node:test';

import {
  PASSWORD,
  T,
  api,
  loginUser,
  registerUser,
  removeDir,
  request,
  runCli,
  sleep,
  startService,
  startUp,
  tempDir,
} from './lib/harness.mjs';

const opts = { timeout: T(40000) };

/** True while a process with this pid exists and is not a zombie. */
function alive(pid) {
  try {
    process.kill(pid, 0);
  } catch (e) {
    if (e.code !== 'EPERM') return false;
  }
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2)[0] !== 'Z';
  } catch {
    return false;
  }
}

/** Pids whose parent is ppid (from /proc). */
function childrenOf(ppid) {
  const out = [];
  for (const d of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    try {
      const stat = fs.readFileSync(`/proc/${d}/stat`, 'utf8');
      // The command name may contain spaces; fields resume after the last ')'.
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      if (Number(fields[1]) === ppid && fields[0] !== 'Z') out.push(Number(d));
    } catch {
      /* the process ended while we looked */
    }
  }
  return out;
}

async function waitUntil(pred, ms, what) {
  const end = Date.now() + ms;
  for (;;) {
    if (await pred()) return;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(50);
  }
}

describe('trellis command line', () => {
  test('trellis version prints a version', opts, async () => {
    const r = await runCli(['version']);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^trellis \d+\.\d+\.\d+\S*\n$/);
  });

  test('trellis --help exits 0 and lists commands and services', opts, async () => {
    const r = await runCli(['--help']);
    assert.equal(r.code, 0, r.stderr);
    for (const w of ['serve', 'up', 'version', 'auth']) assert.match(r.stdout, new RegExp(`\\b${w}\\b`));
  });

  test('unknown command: exit 2 with a message on stderr', opts, async () => {
    const r = await runCli(['frobnicate']);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /frobnicate/);
  });

  test('no command at all: exit 2', opts, async () => {
    const r = await runCli([]);
    assert.equal(r.code, 2);
    assert.ok(r.stderr.trim().length > 0);
  });

  test('unknown service: exit 2 with a message on stderr', opts, async () => {
    const dir = tempDir();
    try {
      const r = await runCli(['serve', 'nosuchservice', '--data', dir]);
      assert.equal(r.code, 2);
      assert.match(r.stderr, /nosuchservice/);
      const u = await runCli(['up', '--only', 'nosuchservice', '--data', dir]);
      assert.equal(u.code, 2);
      assert.match(u.stderr, /nosuchservice/);
    } finally {
      removeDir(dir);
    }
  });

  test('bad flag: exit 2 with a message on stderr', opts, async () => {
    const dir = tempDir();
    try {
      const r = await runCli(['serve', 'auth', '--port', '0', '--data', dir, '--no-such-flag', 'x']);
      assert.equal(r.code, 2);
      assert.match(r.stderr, /no-such-flag/);
      const v = await runCli(['serve', 'auth', '--port', 'eighty', '--data', dir]);
      assert.equal(v.code, 2, 'a malformed value is a usage error too');
      assert.ok(v.stderr.trim().length > 0);
      const u = await runCli(['up', '--bogus', '--data', dir]);
      assert.equal(u.code, 2);
      assert.match(u.stderr, /bogus/);
    } finally {
      removeDir(dir);
    }
  });

  test('an option value the service refuses at start: exit 2; other start failures: exit 1', opts, async () => {
    const dir = tempDir();
    try {
      const refused = [
        [['--access-ttl', '10ms'], /access-ttl/],
        [['--jwt-secret', 'too short'], /32 bytes/],
        [['--jwt-alg', 'RS256'], /jwt-private-key/],
      ];
      for (const [args, why] of refused) {
        const r = await runCli(['serve', 'auth', '--port', '0', '--data', dir, ...args]);
        assert.equal(r.code, 2, `${args.join(' ')}:\n${r.stderr}`);
        assert.match(r.stderr, why);
      }
      // The JWT secret cannot be read: the data dir is broken, not the
      // configuration. (A refused start may already have generated it.)
      fs.rmSync(path.join(dir, 'secrets', 'jwt_secret'), { recursive: true, force: true });
      fs.mkdirSync(path.join(dir, 'secrets', 'jwt_secret'), { recursive: true });
      const broken = await runCli(['serve', 'auth', '--port', '0', '--data', dir]);
      assert.equal(broken.code, 1, broken.stderr);
      assert.match(broken.stderr, /JWT secret/);
    } finally {
      removeDir(dir);
    }
  });
});

describe('trellis serve', () => {
  test('logs "listening" and writes <data>/secrets/jwt_secret with mode 0600', opts, async (t) => {
    const svc = await startService('auth');
    t.after(() => svc.stop());
    const l = svc.listening;
    assert.equal(l.level, 'info');
    assert.equal(l.service, 'auth');
    assert.equal(l.host, '127.0.0.1');
    assert.ok(Number.isInteger(l.workers) && l.workers >= 1, 'workers in the listening line');
    const secret = path.join(svc.dataDir, 'secrets', 'jwt_secret');
    const st = fs.statSync(secret);
    assert.equal(st.mode & 0o777, 0o600, `jwt_secret mode ${(st.mode & 0o777).toString(8)}`);
    assert.equal(fs.statSync(path.dirname(secret)).mode & 0o077, 0, 'secrets dir is private');
    assert.ok(fs.readFileSync(secret, 'utf8').trim().length >= 32, 'secret is long');
  });

  test('SIGTERM at any time after "listening" drains and exits 0', opts, async () => {
    // A supervisor may stop a service the moment it reports ready, so the
    // signal handling must be in place before that line is written.
    for (let i = 0; i < 5; i++) {
      const svc = await startService('auth');
      const r = await svc.stop({ check: false });
      assert.equal(r.killed, false, 'stopped without SIGKILL');
      assert.deepEqual({ code: r.code, signal: r.signal }, { code: 0, signal: null }, `run ${i + 1}: exit after SIGTERM`);
    }
    const svc = await startService('auth');
    await request(`${svc.url}/healthz`);
    const r = await svc.stop({ check: false });
    assert.deepEqual({ code: r.code, signal: r.signal }, { code: 0, signal: null }, 'exit after serving');
    assert.ok(svc.logs.some((e) => e.msg === 'stopped' || /drain/.test(String(e.msg))), 'shutdown is logged');
  });

  test('a second signal during the drain does not kill the service', opts, async () => {
    // Ctrl-C under `trellis up` reaches a service twice: SIGINT from the
    // terminal's process group and SIGTERM from the supervisor.
    for (const name of ['auth', 'gateway']) {
      const svc = await startService(name);
      svc.proc.kill('SIGINT');
      svc.proc.kill('SIGTERM');
      const r = await svc.stop({ check: false });
      assert.deepEqual({ code: r.code, signal: r.signal }, { code: 0, signal: null }, `${name} exit after SIGINT + SIGTERM`);
    }
  });

  test('the secret persists: tokens survive a restart on the same data dir', opts, async (t) => {
    const dir = tempDir();
    t.after(() => removeDir(dir));
    const first = await startService('auth', { dataDir: dir });
    t.after(() => first.stop());
    const reg = await registerUser(first.url);
    const before = fs.readFileSync(path.join(dir, 'secrets', 'jwt_secret'), 'utf8');
    await first.stop();
    const second = await startService('auth', { dataDir: dir });
    t.after(() => second.stop());
    assert.equal(fs.readFileSync(path.join(dir, 'secrets', 'jwt_secret'), 'utf8'), before, 'secret unchanged');
    const me = await api(second.url, 'GET', '/api/auth/me', { token: reg.access_token });
    assert.equal(me.status, 200, me.text);
    await loginUser(second.url, reg.email);
  });
});

describe('trellis up', () => {
  let up;
  let dataDir;
  let authUrl;
  let authPid;
  let user;

  after(async () => {
    if (up) await up.stop();
    if (dataDir) removeDir(dataDir);
  });

  test('prints the table with auth and its port, then "trellis up: ready"', opts, async () => {
    dataDir = tempDir('trellis-up-');
    up = await startUp({ only: 'auth', dataDir });
    const { portBase } = up;
    const { header, rows } = up.table();
    assert.ok(header, `table header "SERVICE  PORT  PID  URL" printed:\n${up.output()}`);
    assert.equal(rows.length, 1, 'one row per service');
    const row = rows[0];
    assert.equal(row.service, 'auth');
    assert.equal(row.port, portBase + 1, 'auth listens on port-base + 1');
    assert.equal(row.url, `http://127.0.0.1:${row.port}`);
    assert.ok(alive(row.pid), 'the PID column names a live process');
    assert.ok(childrenOf(up.pid).includes(row.pid), 'that process is a child of trellis up');
    const readyAt = up.stdoutLines.findIndex((l) => /^trellis up: ready\s*$/.test(l));
    const tableAt = up.stdoutLines.findIndex((l) => /^\s*SERVICE\s+PORT\s+PID\s+URL/.test(l));
    assert.ok(tableAt < readyAt, 'the table comes before "ready"');
    authUrl = row.url;
    authPid = row.pid;
    const h = await request(`${authUrl}/healthz`);
    assert.equal(h.status, 200);
  });

  test('writes <data>/secrets/jwt_secret with mode 0600', opts, () => {
    assert.ok(up, 'trellis up is running');
    const st = fs.statSync(path.join(dataDir, 'secrets', 'jwt_secret'));
    assert.equal(st.mode & 0o777, 0o600);
  });

  test('echoes the child\'s log lines prefixed "auth | "', opts, async () => {
    assert.ok(up, 'trellis up is running');
    const id = `up-log-${Date.now()}`;
    user = await registerUser(authUrl);
    // Probes are logged at debug (quiet plumbing); an API route at info.
    await request(`${authUrl}/api/auth/jwks.json`, { headers: { 'X-Request-Id': id } });
    const line = await up.waitLine(new RegExp(`^auth \\| .*${id}`), T(5000));
    const json = JSON.parse(line.slice(line.indexOf('|') + 2));
    assert.equal(json.request_id, id);
    assert.equal(json.service, 'auth');
  });

  test('a child killed with SIGKILL is restarted and serves again', opts, async () => {
    assert.ok(up && authPid, 'trellis up is running');
    const mark = up.mark();
    process.kill(authPid, 'SIGKILL');
    await up.waitLine(/restarting/, T(10000), mark);
    await waitUntil(
      async () => {
        const kids = childrenOf(up.pid);
        return kids.length === 1 && kids[0] !== authPid;
      },
      T(15000),
      'a new auth child',
    );
    await waitUntil(
      async () => {
        try {
          return (await request(`${authUrl}/readyz`, { timeoutMs: 1000 })).status === 200;
        } catch {
          return false;
        }
      },
      T(15000),
      'the restarted auth to answer',
    );
    authPid = childrenOf(up.pid)[0];
    const li = await api(authUrl, 'POST', '/api/auth/login', { body: { email: user.email, password: PASSWORD } });
    assert.equal(li.status, 200, `the user survived the crash: ${li.text}`);
  });

  test('SIGTERM to trellis up: exit 0 and no child survives', opts, async () => {
    assert.ok(up && authPid, 'trellis up is running');
    const kids = childrenOf(up.pid);
    assert.ok(kids.includes(authPid));
    const r = await up.stop();
    assert.equal(r.killed, false, 'stopped without SIGKILL');
    assert.equal(r.code, 0, `exit code (signal ${r.signal})\n${up.output()}`);
    for (const pid of kids) {
      await waitUntil(() => !alive(pid), T(3000), `child ${pid} to be gone`);
    }
    up = null;
  });

  test('restart on the same data dir: registered users log in, old tokens still work', opts, async () => {
    assert.ok(dataDir && user, 'earlier trellis up run happened');
    up = await startUp({ only: 'auth', dataDir });
    const row = up.table().rows.find((x) => x.service === 'auth');
    assert.ok(row, up.output());
    const li = await api(row.url, 'POST', '/api/auth/login', { body: { email: user.email, password: PASSWORD } });
    assert.equal(li.status, 200, li.text);
    const me = await api(row.url, 'GET', '/api/auth/me', { token: user.access_token });
    assert.equal(me.status, 200, me.text);
    const pid = row.pid;
    const r = await up.stop();
    up = null;
    assert.equal(r.code, 0);
    await waitUntil(() => !alive(pid), T(3000), 'child to be gone');
  });
});
