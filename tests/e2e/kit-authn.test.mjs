// Authentication done by the kit for every service (issue 6 §1): forged
// identity headers are ignored, revocations act within a second through the
// long-polled feed, and an idle service writes nothing at info.
import assert from 'node:assert/strict';
import { test } from 'node:test';

import { T, api, registerUser, startService, useService } from './lib/harness.mjs';

const opts = { timeout: T(30000) };
const auth = useService('auth');

const FORGED = {
  'X-User-Id': '01890000-0000-7000-8000-000000000001',
  'X-User-Role': 'admin',
  'X-Session-Id': '01890000-0000-7000-8000-000000000002',
  'X-User-Email': 'root@example.com',
};

test('forged X-User-* headers sent straight to a service port are not an identity', opts, async () => {
  const anon = await api(auth.url, 'GET', '/api/auth/validate', { headers: FORGED });
  assert.equal(anon.status, 401, anon.text);
  assert.equal(anon.json.error.code, 'unauthenticated');
  const admin = await api(auth.url, 'GET', '/api/auth/users', { headers: FORGED });
  assert.equal(admin.status, 401, 'an admin route does not take a forged role');

  const reg = await registerUser(auth.url);
  const r = await api(auth.url, 'GET', '/api/auth/validate', { token: reg.access_token, headers: FORGED });
  assert.equal(r.status, 200, r.text);
  assert.equal(r.json.user_id, reg.user.id, 'the token, not the header, names the caller');
  assert.equal(r.json.role, 'user');
  const users = await api(auth.url, 'GET', '/api/auth/users', { token: reg.access_token, headers: FORGED });
  assert.equal(users.status, 403, 'the role comes from the token');
});

/** Calls fn every 20 ms until it returns true; resolves with the ms it took. */
async function msUntil(fn, limitMs) {
  const t0 = Date.now();
  for (;;) {
    if (await fn()) return Date.now() - t0;
    if (Date.now() - t0 > limitMs) return Infinity;
    await new Promise((r) => setTimeout(r, 20));
  }
}

test('a logout is honoured by the kit authenticator within one second', opts, async () => {
  const reg = await registerUser(auth.url);
  const ok = await api(auth.url, 'GET', '/api/auth/validate', { token: reg.access_token });
  assert.equal(ok.status, 200, 'the token works, and is now in the verified-token cache');
  const out = await api(auth.url, 'POST', '/api/auth/logout', { token: reg.access_token });
  assert.equal(out.status, 204, out.text);
  const ms = await msUntil(async () => {
    const r = await api(auth.url, 'GET', '/api/auth/validate', { token: reg.access_token });
    return r.status === 401 && r.json.error.message === 'session revoked';
  }, 3000);
  assert.ok(ms <= 1000, `revoked within ${ms} ms`);
});

test('the revocation feed is a long poll and checks its arguments', opts, async () => {
  const token = (await import('node:fs')).readFileSync(`${auth.svc.dataDir}/secrets/internal_token`, 'utf8').trim();
  const headers = { 'X-Internal-Token': token };
  const bad = await api(auth.url, 'GET', '/internal/revocations?since=-1', { headers });
  assert.equal(bad.status, 400, bad.text);
  const badWait = await api(auth.url, 'GET', `/internal/revocations?since=0&wait=600000`, { headers });
  assert.equal(badWait.status, 400, badWait.text);

  // Nothing new after "now": the answer is held for the wait, then empty.
  const first = await api(auth.url, 'GET', `/internal/revocations?since=${Date.now()}&wait=0`, { headers });
  assert.equal(first.status, 200, first.text);
  const t0 = Date.now();
  const held = api(auth.url, 'GET', `/internal/revocations?since=${first.json.now}&known=0&wait=5000`, { headers });
  // A revocation while it is held answers it at once.
  const reg = await registerUser(auth.url);
  await new Promise((r) => setTimeout(r, 300));
  assert.equal((await api(auth.url, 'POST', '/api/auth/logout', { token: reg.access_token })).status, 204);
  const r = await held;
  const took = Date.now() - t0;
  assert.equal(r.status, 200, r.text);
  assert.ok(took >= 300 && took < 4000, `held until the revocation (${took} ms)`);
  assert.ok(r.json.revocations.some((e) => typeof e.session_id === 'string'), r.text);

  // With everything known, a short wait ends empty-handed after the wait.
  const known = r.json.revocations.filter((e) => e.revoked_at >= r.json.since).length;
  const t1 = Date.now();
  const quiet = await api(auth.url, 'GET', `/internal/revocations?since=${r.json.since}&known=${known}&wait=600`, { headers });
  assert.equal(quiet.status, 200);
  assert.ok(Date.now() - t1 >= 550, 'held for the wait');
});

test('an idle service writes no info lines for its feed or probes', opts, async () => {
  const svc = await startService('auth');
  try {
    const before = svc.logs.length;
    for (let i = 0; i < 5; i++) {
      assert.equal((await api(svc.url, 'GET', '/healthz')).status, 200);
      assert.equal((await api(svc.url, 'GET', '/readyz')).status, 200);
    }
    // An observation window: the feed's long poll runs meanwhile.
    await new Promise((r) => setTimeout(r, 1500));
    const lines = svc.logs.slice(before).filter((e) => e.level !== 'debug');
    assert.deepEqual(lines, [], 'no log lines at info or above');
  } finally {
    await svc.stop();
  }
});

test('a revocation survives the next login and a restart: the feed still lists it', opts, async () => {
  const dataDir = (await import('./lib/harness.mjs')).tempDir('trellis-authn-restart-');
  let svc = await startService('auth', { dataDir });
  try {
    const reg = await registerUser(svc.url);
    assert.equal((await api(svc.url, 'POST', '/api/auth/logout', { token: reg.access_token })).status, 204);
    // A new login sweeps the user's ended sessions.
    const again = await api(svc.url, 'POST', '/api/auth/login', { body: { email: reg.email, password: 'correct horse battery staple' } });
    assert.equal(again.status, 200, again.text);
    await svc.stop();
    svc = await startService('auth', { dataDir });
    const r = await api(svc.url, 'GET', '/api/auth/validate', { token: reg.access_token });
    assert.equal(r.status, 401, `the logged-out token after a restart: ${r.text}`);
    assert.equal((await api(svc.url, 'GET', '/api/auth/validate', { token: again.json.access_token })).status, 200);
  } finally {
    await svc.stop();
    (await import('./lib/harness.mjs')).removeDir(dataDir);
  }
});
