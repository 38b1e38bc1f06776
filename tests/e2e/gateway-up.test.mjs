// The gateway in the single-machine deployment: `trellis up --only
// gateway,auth` with the built-in routes (the gateway on port-base, auth on
// port-base + 1), a logout seen at the edge within 1 s, the aggregated
// /healthz, a service of the default table that is not running (503, fast),
// and `--blueprint NAME` serving a reference system's exact auth paths
// (deploy/blueprints/<name>.json, issue 3 "Blueprints").
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';

import {
  REPO_ROOT,
  PASSWORD,
  T,
  api,
  assertError,
  freePortBase,
  registerUser,
  request,
  runCli,
  sleep,
  startService,
  startUp,
  tempDir,
  uniqueEmail,
} from './lib/harness.mjs';

const opts = { timeout: T(40000) };

describe('trellis up --only gateway,auth (built-in routes)', () => {
  let up;
  let gw; // the gateway's base URL
  before(async () => {
    up = await startUp({ only: 'gateway,auth' });
    gw = `http://127.0.0.1:${up.portBase}`;
  });
  after(async () => {
    await up?.stop();
  });

  test('the table lists the gateway at port-base and auth at port-base + 1', opts, async () => {
    const rows = up.table().rows;
    const g = rows.find((r) => r.service === 'gateway');
    const a = rows.find((r) => r.service === 'auth');
    assert.equal(g?.port, up.portBase, JSON.stringify(rows));
    assert.equal(a?.port, up.portBase + 1);
  });

  test('the table lists each admin listener at admin-port-base + offset; /metrics only there', opts, async () => {
    const rows = up.table().rows;
    const g = rows.find((r) => r.service === 'gateway');
    const a = rows.find((r) => r.service === 'auth');
    assert.equal(g?.adminPort, up.adminPortBase, JSON.stringify(rows));
    assert.equal(a?.adminPort, up.adminPortBase + 1);
    for (const r of [g, a]) {
      const m = await request(`http://127.0.0.1:${r.adminPort}/metrics`);
      assert.equal(m.status, 200, `${r.service} admin /metrics`);
      assert.match(m.text, /^# TYPE http_requests_total counter$/m);
      assertError(assert, await request(`http://127.0.0.1:${r.port}/metrics`), 404, 'not_found');
    }
    const m = await request(`http://127.0.0.1:${g.adminPort}/metrics`);
    assert.match(m.text, /^upstream_breaker_state\{upstream="auth"\} 0$/m, 'the gateway\'s upstream series are on its admin port');
  });

  test('register, login and me through the gateway', opts, async () => {
    const u = await registerUser(gw);
    const me = await api(gw, 'GET', '/api/auth/me', { token: u.access_token });
    assert.equal(me.status, 200, me.text);
    assert.equal((me.json.user || me.json).id, u.user.id);
  });

  test('a default route to a service that is not running: 503 unavailable, fast', opts, async () => {
    const t0 = Date.now();
    const r = await request(`${gw}/api/posts/feed`);
    assertError(assert, r, 503, 'unavailable');
    assert.ok(Date.now() - t0 < T(2500), `${Date.now() - t0} ms`);
  });

  test('/healthz: auth is up (required) once checked, services not started never up, status 200', opts, async () => {
    // Until the gateway's checks (every 5 s, the first at start) reach a
    // verdict, a service is "unknown", never an optimistic "up".
    let h;
    const t0 = Date.now();
    for (;;) {
      h = await request(`${gw}/healthz`);
      assert.equal(h.status, 200, h.text);
      assert.ok(['ok', 'degraded'].includes(h.json.status));
      assert.ok(['unknown', 'up'].includes(h.json.services.auth), h.text);
      assert.ok(['unknown', 'down'].includes(h.json.services.users), `not running, so not up: ${h.text}`);
      if (h.json.services.auth === 'up' || Date.now() - t0 > T(8000)) break;
      await sleep(100);
    }
    assert.equal(h.json.services.auth, 'up', h.text);
  });

  test('logout through the gateway: the token is refused at the edge within 1 s', opts, async () => {
    const u = await registerUser(gw);
    // /api/users/* requires nothing of a token but checks one when sent
    // (auth "optional"): before the logout it is let through to users (503,
    // not running), after it the edge refuses it (401).
    const probe = () => api(gw, 'GET', '/api/users/me', { token: u.access_token });
    assert.equal((await probe()).status, 503);
    const out = await api(gw, 'POST', '/api/auth/logout', { token: u.access_token, body: {} });
    assert.ok([200, 204].includes(out.status), out.text);
    const t0 = Date.now();
    let r = await probe();
    while (r.status !== 401 && Date.now() - t0 < 3000) {
      await sleep(25);
      r = await probe();
    }
    const took = Date.now() - t0;
    assertError(assert, r, 401, 'unauthenticated');
    assert.ok(took < 1000, `refused ${took} ms after the logout`);
  });
});

/** The blueprint files that ship, by name. */
function blueprints() {
  const dir = path.join(REPO_ROOT, 'deploy', 'blueprints');
  if (!fs.existsSync(dir)) return [];
  return fs
    .readdirSync(dir)
    .filter((f) => f.endsWith('.json'))
    .map((f) => f.replace(/\.json$/, ''));
}

const blueprintFile = (n) => path.join(REPO_ROOT, 'deploy', 'blueprints', `${n}.json`);

test('blueprints ship for Grover, GymIT and MetaRGB and the gateway loads each one', opts, async () => {
  const names = blueprints();
  for (const want of [/grover/, /gymit/, /meta/i]) {
    assert.ok(names.some((n) => want.test(n)), `a blueprint matching ${want} in deploy/blueprints (${names.join(', ')})`);
  }
  const base = await freePortBase();
  for (const n of names) {
    const doc = JSON.parse(fs.readFileSync(blueprintFile(n), 'utf8'));
    assert.ok(Array.isArray(doc.routes), `${n} has a routes array`);
    // The gateway's own parser is the judge (strict: unknown fields are errors).
    const g = await startService('gateway', { args: ['--routes', blueprintFile(n), '--port-base', String(base), '--workers', '1'] });
    const loaded = await g.waitLog((e) => e.msg === 'routes loaded');
    assert.equal(loaded.routes, doc.routes.length, `${n}: every route loaded`);
    await g.stop();
  }
});

test('--blueprint NAME is looked up as deploy/blueprints/NAME.json', opts, async () => {
  const dir = tempDir('trellis-bp-');
  const r = await runCli(['up', '--blueprint', 'no-such-system', '--data', dir, '--port-base', String(await freePortBase())], { cwd: REPO_ROOT });
  assert.notEqual(r.code, 0);
  assert.match(r.stderr, /deploy\/blueprints\/no-such-system\.json/);
});

const named = (re) => blueprints().find((n) => re.test(n));
/** --blueprint as an absolute path: `trellis up` runs with the data dir as its cwd here. */
const blueprintArg = (re, dflt) => blueprintFile(named(re) ?? dflt);

describe('trellis up --blueprint grover', () => {
  let up;
  let gw;
  before(async () => {
    up = await startUp({ only: 'gateway,auth', args: ['--blueprint', blueprintArg(/grover/, 'grover')] });
    gw = `http://127.0.0.1:${up.portBase}`;
  });
  after(async () => {
    await up?.stop();
  });

  // Grover's public API has no register path: accounts are made at auth directly.
  const authUrl = () => `http://127.0.0.1:${up.portBase + 1}`;

  test('POST /api/auth/session, GET /api/auth/me, POST /api/auth/logout', opts, async () => {
    const u = await registerUser(authUrl());
    const s = await api(gw, 'POST', '/api/auth/session', { body: { email: u.email, password: PASSWORD } });
    assert.equal(s.status, 200, `session: ${s.text}`);
    assert.equal(typeof s.json.access_token, 'string', s.text);
    const me = await api(gw, 'GET', '/api/auth/me', { token: s.json.access_token });
    assert.equal(me.status, 200, me.text);
    assert.equal((me.json.user || me.json).email, u.email);
    const out = await api(gw, 'POST', '/api/auth/logout', { token: s.json.access_token, body: {} });
    assert.ok([200, 204].includes(out.status), out.text);
    await sleep(1000);
    assertError(assert, await api(gw, 'GET', '/api/auth/me', { token: s.json.access_token }), 401, 'unauthenticated');
  });

  test('a wrong password at /api/auth/session is 401', opts, async () => {
    const u = await registerUser(authUrl());
    assertError(assert, await api(gw, 'POST', '/api/auth/session', { body: { email: u.email, password: 'not it at all' } }), 401, 'unauthenticated');
  });
});

describe('trellis up --blueprint gymit and metargb', () => {
  let gym;
  let meta;
  before(async () => {
    gym = await startUp({ only: 'gateway,auth', args: ['--blueprint', blueprintArg(/gymit/, 'gymit')] });
    meta = await startUp({ only: 'gateway,auth', args: ['--blueprint', blueprintArg(/meta/i, 'metargb')] });
  });
  after(async () => {
    try {
      await gym?.stop();
    } finally {
      await meta?.stop();
    }
  });

  test('GymIT: POST /api/auth/register and POST /api/auth/login', opts, async () => {
    const gw = `http://127.0.0.1:${gym.portBase}`;
    const email = uniqueEmail('gymit');
    const reg = await api(gw, 'POST', '/api/auth/register', { body: { email, password: PASSWORD } });
    assert.equal(reg.status, 201, reg.text);
    const login = await api(gw, 'POST', '/api/auth/login', { body: { email, password: PASSWORD } });
    assert.equal(login.status, 200, login.text);
    assert.equal(typeof login.json.access_token, 'string');
  });

  test('MetaRGB: POST /api/auth/me with a token', opts, async () => {
    const gw = `http://127.0.0.1:${meta.portBase}`;
    const u = await registerUser(`http://127.0.0.1:${meta.portBase + 1}`);
    const me = await api(gw, 'POST', '/api/auth/me', { token: u.access_token, body: {} });
    assert.equal(me.status, 200, me.text);
    assert.equal((me.json.user || me.json).id, u.user.id);
    assertError(assert, await api(gw, 'POST', '/api/auth/me', { body: {} }), 401, 'unauthenticated');
  });
});

test('deploy/prometheus/prometheus.yml is valid and scrapes the default admin ports of trellis up', opts, async () => {
  const file = path.join(REPO_ROOT, 'deploy/prometheus/prometheus.yml');
  const check = spawnSync('promtool', ['check', 'config', file], { encoding: 'utf8' });
  assert.ok(!check.error, `promtool runs (scripts/deps.sh installs it): ${check.error?.message}`);
  assert.equal(check.status, 0, `promtool check config:\n${check.stdout}${check.stderr}`);
  const text = fs.readFileSync(file, 'utf8');
  // The default port-base is 8000 and admin ports are port + 1000; the
  // offsets are the ones `trellis up` prints for gateway and auth.
  const targets = [...text.matchAll(/targets: \['127\.0\.0\.1:(\d+)'\]\s*\n\s*labels: \{service: (\w+)\}/g)].map((m) => [m[2], Number(m[1])]);
  assert.deepEqual(Object.fromEntries(targets), { gateway: 9000, auth: 9001 });
});
