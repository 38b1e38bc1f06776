// API-key callers on role-restricted routes, at the gateway's edge and at
// auth itself: a key acts with its owner's role, so a user's key on an admin
// route is 403 permission_denied and an admin's key passes (the upstream
// sees the admin's identity); a route that does not accept keys refuses even
// an admin's key (401); a revoked admin key is 401; a role change of the
// owner reaches the key.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';

import {
  PASSWORD,
  T,
  adminCreateUser,
  api,
  assertError,
  loginUser,
  registerUser,
  request,
  sleep,
  startService,
  tempDir,
  uniqueEmail,
} from './lib/harness.mjs';
import { startGateway, startUpstream } from './lib/upstream.mjs';

const opts = { timeout: T(30000) };
let auth;
let gw;
let up;
let user; // role user
let admin; // role admin
let userKey;
let adminKey;

async function newKey(base, token, name) {
  const r = await api(base, 'POST', '/api/auth/api-keys', { token, body: { name } });
  assert.equal(r.status, 201, r.text);
  return { id: r.json.id ?? r.json.api_key?.id, key: r.json.key ?? r.json.api_key?.key };
}

before(async () => {
  const dataDir = tempDir('trellis-keyroles-');
  up = await startUpstream({ name: 'app' });
  auth = await startService('auth', { dataDir });
  gw = await startGateway({
    dataDir,
    routes: {
      version: 1,
      upstreams: {
        auth: { instances: [`127.0.0.1:${auth.port}`] },
        app: { instances: [up.address], health: null },
      },
      routes: [
        { path: '/api/auth/*', upstream: 'auth', auth: 'none' },
        { path: '/api/admin/*', upstream: 'app', auth: 'required', roles: ['admin'], api_key: true },
        { path: '/api/staff/*', upstream: 'app', auth: 'required', roles: ['admin', 'moderator'], api_key: true },
        { path: '/api/tokenonly/*', upstream: 'app', auth: 'required', roles: ['admin'] },
      ],
    },
  });
  user = await registerUser(gw.url);
  const email = uniqueEmail('keyadmin');
  await adminCreateUser(dataDir, { email, password: PASSWORD, role: 'admin' });
  admin = await loginUser(gw.url, email);
  userKey = await newKey(gw.url, user.access_token, 'user bot');
  adminKey = await newKey(gw.url, admin.access_token, 'admin bot');
});

after(async () => {
  try {
    await gw?.stop();
  } finally {
    try {
      await auth?.stop();
    } finally {
      await up?.close();
    }
  }
});

const viaKey = (base, p, key) => request(base + p, { headers: { 'X-API-Key': key } });

test('gateway: a user\'s key on an admin route is 403 and never reaches the upstream', opts, async () => {
  const before = up.hits.length;
  const r = await viaKey(gw.url, '/api/admin/report', userKey.key);
  assertError(assert, r, 403, 'permission_denied');
  const after = up.hits.length;
  assert.equal(after, before, 'the upstream saw nothing');
});

test('gateway: an admin\'s key on the admin route is 200 with the admin\'s identity', opts, async () => {
  const r = await viaKey(gw.url, '/api/admin/report', adminKey.key);
  assert.equal(r.status, 200, r.text);
  assert.equal(r.json.headers['x-user-id'], admin.user.id);
  assert.equal(r.json.headers['x-user-role'], 'admin');
  assert.equal(r.json.headers['x-api-key'], adminKey.key, 'the key is passed on (docs/gateway.md)');
});

test('gateway: a route without api_key refuses even an admin\'s key (401)', opts, async () => {
  assertError(assert, await viaKey(gw.url, '/api/tokenonly/x', adminKey.key), 401, 'unauthenticated');
  const r = await request(`${gw.url}/api/tokenonly/x`, { headers: { Authorization: `Bearer ${admin.access_token}` } });
  assert.equal(r.status, 200, 'the admin\'s token passes there');
});

test('gateway: a role list admits each role it names and no other', opts, async () => {
  assert.equal((await viaKey(gw.url, '/api/staff/x', adminKey.key)).status, 200);
  assertError(assert, await viaKey(gw.url, '/api/staff/x', userKey.key), 403, 'permission_denied');
});

test('auth: the admin-only user list answers 403 to a user\'s key and 200 to an admin\'s', opts, async () => {
  assertError(assert, await viaKey(auth.url, '/api/auth/users', userKey.key), 403, 'permission_denied');
  const r = await viaKey(auth.url, '/api/auth/users', adminKey.key);
  assert.equal(r.status, 200, r.text);
  assert.ok(Array.isArray(r.json.data));
  assert.ok(r.json.data.some((u) => u.id === user.user.id), 'the list holds the registered user');
});

test('a promoted owner\'s key gains the role; a revoked admin key is 401', opts, async () => {
  const promoted = await registerUser(gw.url);
  const k = await newKey(gw.url, promoted.access_token, 'soon admin');
  assertError(assert, await viaKey(auth.url, '/api/auth/users', k.key), 403, 'permission_denied');
  const p = await api(auth.url, 'PATCH', `/api/auth/users/${promoted.user.id}`, { token: admin.access_token, body: { role: 'admin' } });
  assert.equal(p.status, 200, p.text);
  assert.equal((await viaKey(auth.url, '/api/auth/users', k.key)).status, 200, 'the key acts with the new role');

  const revoked = await newKey(gw.url, admin.access_token, 'short lived');
  assert.equal((await viaKey(gw.url, '/api/admin/x', revoked.key)).status, 200);
  const del = await api(gw.url, 'DELETE', `/api/auth/api-keys/${revoked.id}`, { token: admin.access_token });
  assert.equal(del.status, 204, del.text);
  assertError(assert, await viaKey(auth.url, '/api/auth/users', revoked.key), 401, 'unauthenticated');
  // The gateway may cache a key's verdict briefly; it must come to 401.
  const deadline = Date.now() + T(10000);
  let r = await viaKey(gw.url, '/api/admin/x', revoked.key);
  while (r.status === 200 && Date.now() < deadline) {
    await sleep(50);
    r = await viaKey(gw.url, '/api/admin/x', revoked.key);
  }
  assertError(assert, r, 401, 'unauthenticated');
});
