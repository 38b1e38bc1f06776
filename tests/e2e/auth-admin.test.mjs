// Administration and API keys of the auth service (issue 2 §4): the admin
// CLI, the paginated user list, role/ban/approval changes and the API-key
// lifecycle.
import assert from 'node:assert/strict';
import { test } from 'node:test';

import {
  FAST_ARGON2_ENV,
  PASSWORD,
  T,
  adminCreateUser,
  api,
  assertError,
  assertFieldError,
  assertUser,
  decodeJwt,
  listAllPages,
  loginUser,
  newAdmin,
  registerUser,
  request,
  runCli,
  uniqueEmail,
  useService,
  userOf,
} from './lib/harness.mjs';

const opts = { timeout: T(30000) };
let admin;
let adminUser;
const auth = useService('auth', {}, {
  async started({ svc }) {
    admin = await newAdmin(svc, 'root');
    adminUser = admin.created;
  },
});

const me = (token) => api(auth.url, 'GET', '/api/auth/me', { token });
const refresh = (refresh_token) => api(auth.url, 'POST', '/api/auth/refresh', { body: { refresh_token } });
const login = (email, password = PASSWORD) => api(auth.url, 'POST', '/api/auth/login', { body: { email, password } });
const patch = (id, body, token = admin.access_token) => api(auth.url, 'PATCH', `/api/auth/users/${id}`, { token, body });

test('admin create-user prints the new admin as JSON', opts, async () => {
  assertUser(assert, adminUser, { role: 'admin' });
  assert.equal(admin.user.id, adminUser.id, 'the CLI user can log in');
  assert.equal(decodeJwt(admin.access_token).payload.role, 'admin');
});

test('admin create-user normalises the e-mail and refuses a duplicate', opts, async () => {
  const email = uniqueEmail('cli');
  const u = await adminCreateUser(auth.svc.dataDir, { email: ` ${email.toUpperCase()} `, password: PASSWORD, role: 'user' });
  assertUser(assert, u, { email, role: 'user' });
  assert.equal((await loginUser(auth.url, email)).user.id, u.id);
  const dup = await runCli(
    ['admin', 'create-user', '--email', email, '--password', PASSWORD, '--role', 'user', '--data', auth.svc.dataDir],
    { env: FAST_ARGON2_ENV },
  );
  assert.notEqual(dup.code, 0, 'a duplicate e-mail fails');
  assert.ok(dup.stderr.trim().length > 0, 'with a message on stderr');
});

test('GET /api/auth/users pages with limit (default 20) and cursor', opts, async () => {
  const made = [];
  for (let i = 0; i < 23; i++) made.push((await registerUser(auth.url, { email: uniqueEmail('page') })).user.id);

  const first = await api(auth.url, 'GET', '/api/auth/users', { token: admin.access_token });
  assert.equal(first.status, 200, first.text);
  assert.ok(Array.isArray(first.json.data));
  assert.equal(first.json.data.length, 20, 'default limit is 20');
  assert.equal(typeof first.json.next_cursor, 'string', 'more pages announced');
  for (const u of first.json.data) assertUser(assert, u);
  assert.doesNotMatch(first.text, /\$argon2|password/i, 'no password material in the list');

  const seen = new Set();
  let cursor = null;
  let pages = 0;
  do {
    const q = `/api/auth/users?limit=7${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ''}`;
    const r = await api(auth.url, 'GET', q, { token: admin.access_token });
    assert.equal(r.status, 200, r.text);
    assert.ok(r.json.data.length <= 7, 'limit honoured');
    for (const u of r.json.data) {
      assert.ok(!seen.has(u.id), `user ${u.id} appears on one page only`);
      seen.add(u.id);
    }
    cursor = r.json.next_cursor;
    assert.ok(cursor === null || typeof cursor === 'string', 'next_cursor is a string or null');
    pages++;
    assert.ok(pages < 100, 'pagination ends');
  } while (cursor);
  for (const id of [...made, adminUser.id]) assert.ok(seen.has(id), `user ${id} listed`);
});

test('list cursors are opaque, and a cursor the list did not make is 400 naming "cursor"', opts, async () => {
  for (let i = 0; i < 3; i++) await registerUser(auth.url, { email: uniqueEmail('opaque') });
  const first = await api(auth.url, 'GET', '/api/auth/users?limit=2', { token: admin.access_token });
  assert.equal(first.status, 200, first.text);
  const cursor = first.json.next_cursor;
  assert.equal(typeof cursor, 'string');
  assert.match(cursor, /^[A-Za-z0-9_-]+$/, 'URL-safe, no padding');
  assert.ok(!first.json.data.some((u) => u.id === cursor), 'not a row id in clear');
  // It continues right after the last row of the first page.
  const second = await api(auth.url, 'GET', `/api/auth/users?limit=2&cursor=${cursor}`, { token: admin.access_token });
  assert.equal(second.status, 200, second.text);
  assert.ok(second.json.data[0].id > first.json.data[1].id, 'the next page starts after the first');

  const lastId = first.json.data[1].id;
  const forged = [
    lastId, // the old clear-text cursor
    'not a cursor!',
    Buffer.from('not-a-uuid').toString('base64url'),
    Buffer.from('\u0000').toString('base64url'),
    `${cursor}==`,
  ];
  for (const c of forged) {
    for (const p of ['/api/auth/users', '/api/auth/sessions', '/api/auth/api-keys', '/api/auth/admin/outbox']) {
      const r = await api(auth.url, 'GET', `${p}?cursor=${encodeURIComponent(c)}`, { token: admin.access_token });
      assertFieldError(assert, r, 'cursor');
    }
  }
  // limit problems name "limit"; both are reported at once.
  const both = await api(auth.url, 'GET', '/api/auth/users?limit=ten&cursor=%25', { token: admin.access_token });
  const e = assertFieldError(assert, both, 'limit');
  assert.ok(e.details.some((d) => d.field === 'cursor'), JSON.stringify(e.details));
});

test('users list limit above 100 is refused or capped', opts, async () => {
  const r = await api(auth.url, 'GET', '/api/auth/users?limit=101', { token: admin.access_token });
  if (r.status === 400) assertError(assert, r, 400, 'invalid_argument');
  else {
    assert.equal(r.status, 200, r.text);
    assert.ok(r.json.data.length <= 100);
  }
  const r100 = await api(auth.url, 'GET', '/api/auth/users?limit=100', { token: admin.access_token });
  assert.equal(r100.status, 200, r100.text);
});

test('users list: 401 anonymous, 403 for a non-admin', opts, async () => {
  const reg = await registerUser(auth.url);
  assertError(assert, await api(auth.url, 'GET', '/api/auth/users'), 401, 'unauthenticated');
  assertError(assert, await api(auth.url, 'GET', '/api/auth/users', { token: reg.access_token }), 403, 'permission_denied');
});

test('PATCH role: the user\'s next token carries the new role', opts, async () => {
  const reg = await registerUser(auth.url);
  const r = await patch(reg.user.id, { role: 'moderator' });
  assert.equal(r.status, 200, r.text);
  assert.equal(userOf(r.json).role, 'moderator');
  const again = await loginUser(auth.url, reg.email);
  assert.equal(again.user.role, 'moderator');
  assert.equal(decodeJwt(again.access_token).payload.role, 'moderator');
});

test('a user promoted to admin can use admin routes', opts, async () => {
  const reg = await registerUser(auth.url);
  assert.equal((await patch(reg.user.id, { role: 'admin' })).status, 200);
  const again = await loginUser(auth.url, reg.email);
  const r = await api(auth.url, 'GET', '/api/auth/users', { token: again.access_token });
  assert.equal(r.status, 200, r.text);
});

test('PATCH with an unknown role: 400', opts, async () => {
  const reg = await registerUser(auth.url);
  assertError(assert, await patch(reg.user.id, { role: 'emperor' }), 400, 'invalid_argument');
  assertError(assert, await patch(reg.user.id, { banned: 'yes' }), 400, 'invalid_argument');
});

test('PATCH an unknown user: 404', opts, async () => {
  assertError(assert, await patch('01890000-0000-7000-8000-000000000000', { role: 'user' }), 404, 'not_found');
});

test('PATCH by a non-admin: 403; anonymous: 401', opts, async () => {
  const reg = await registerUser(auth.url);
  assertError(assert, await patch(reg.user.id, { role: 'admin' }, reg.access_token), 403, 'permission_denied');
  assertError(assert, await api(auth.url, 'PATCH', `/api/auth/users/${reg.user.id}`, { body: { role: 'admin' } }), 401, 'unauthenticated');
  assert.equal((await loginUser(auth.url, reg.email)).user.role, reg.user.role, 'role unchanged');
});

test('banned user: sessions revoked, login 403, refresh 401; unban restores login', opts, async () => {
  const reg = await registerUser(auth.url);
  const second = await loginUser(auth.url, reg.email);
  const r = await patch(reg.user.id, { banned: true });
  assert.equal(r.status, 200, r.text);
  const u = userOf(r.json);
  if ('banned' in u) assert.equal(u.banned, true);

  for (const s of [reg, second]) {
    assertError(assert, await me(s.access_token), 401, 'unauthenticated');
    assertError(assert, await refresh(s.refresh_token), 401, 'unauthenticated');
  }
  assertError(assert, await login(reg.email), 403, 'permission_denied');

  assert.equal((await patch(reg.user.id, { banned: false })).status, 200);
  assert.equal((await login(reg.email)).status, 200);
});

test('PATCH approved is accepted and reflected', opts, async () => {
  const reg = await registerUser(auth.url);
  for (const approved of [false, true]) {
    const r = await patch(reg.user.id, { approved });
    assert.equal(r.status, 200, r.text);
    const u = userOf(r.json);
    if ('approved' in u) assert.equal(u.approved, approved);
  }
});

test('API key: created with the key once, listed without it, authenticates, revoked -> 401', opts, async () => {
  const reg = await registerUser(auth.url);
  const created = await api(auth.url, 'POST', '/api/auth/api-keys', { token: reg.access_token, body: { name: 'ci bot' } });
  assert.equal(created.status, 201, created.text);
  const k = created.json.api_key && typeof created.json.api_key === 'object' ? { ...created.json.api_key, ...created.json } : created.json;
  assert.equal(typeof k.key, 'string');
  assert.ok(k.key.length >= 24, 'key is long');
  assert.equal(typeof k.id, 'string');
  assert.equal(k.name, 'ci bot');

  const list = await api(auth.url, 'GET', '/api/auth/api-keys', { token: reg.access_token });
  assert.equal(list.status, 200, list.text);
  assert.ok(Array.isArray(list.json.data));
  const entry = list.json.data.find((e) => e.id === k.id);
  assert.ok(entry, 'the key is listed');
  assert.equal(entry.name, 'ci bot');
  assert.ok(!list.text.includes(k.key), 'the key itself is never listed');

  const who = await request(`${auth.url}/api/auth/me`, { headers: { 'X-API-Key': k.key } });
  assert.equal(who.status, 200, who.text);
  assert.equal(userOf(who.json).id, reg.user.id, 'the key authenticates as its owner');

  const del = await api(auth.url, 'DELETE', `/api/auth/api-keys/${k.id}`, { token: reg.access_token });
  assert.equal(del.status, 204, del.text);
  const after = await request(`${auth.url}/api/auth/me`, { headers: { 'X-API-Key': k.key } });
  assertError(assert, after, 401, 'unauthenticated');
  const list2 = await api(auth.url, 'GET', '/api/auth/api-keys', { token: reg.access_token });
  const still = list2.json.data.find((e) => e.id === k.id);
  assert.ok(!still || still.revoked === true || still.revoked_at, 'a revoked key is gone or marked revoked');
  assertError(assert, await api(auth.url, 'DELETE', `/api/auth/api-keys/${k.id}`, { token: reg.access_token }), 404, 'not_found');
});

test('API keys: the list pages newest first; a user holds at most 100 live keys', opts, async () => {
  const { access_token: token } = await registerUser(auth.url);
  const create = (name) => api(auth.url, 'POST', '/api/auth/api-keys', { token, body: { name } });
  const ids = [];
  for (let i = 0; i < 100; i++) {
    const r = await create(`key ${i}`);
    assert.equal(r.status, 201, r.text);
    ids.push(r.json.id);
  }
  assertError(assert, await create('one too many'), 409, 'conflict');
  const { items, pages } = await listAllPages(assert, auth.url, '/api/auth/api-keys', { token, limit: 30 });
  // Newest first is id order: UUIDv7 ids made in one millisecond by two
  // workers need not follow the order of creation.
  const listed = items.map((k) => k.id);
  assert.deepEqual([...listed].sort().reverse(), listed, 'ids in descending order');
  assert.deepEqual([...listed].sort(), [...ids].sort(), 'every key once');
  assert.equal(pages, 4);
  assert.equal((await api(auth.url, 'DELETE', `/api/auth/api-keys/${ids[0]}`, { token })).status, 204);
  assert.equal((await create('room again')).status, 201, 'a revoked key frees its place');
});

test('an unknown API key: 401', opts, async () => {
  const r = await request(`${auth.url}/api/auth/me`, { headers: { 'X-API-Key': 'trk_this_key_does_not_exist_0123456789' } });
  assertError(assert, r, 401, 'unauthenticated');
});

test('deleting another user\'s API key: 404 and it keeps working', opts, async () => {
  const a = await registerUser(auth.url);
  const b = await registerUser(auth.url);
  const created = await api(auth.url, 'POST', '/api/auth/api-keys', { token: b.access_token, body: { name: 'b key' } });
  assert.equal(created.status, 201, created.text);
  const k = { ...(created.json.api_key || {}), ...created.json };
  const del = await api(auth.url, 'DELETE', `/api/auth/api-keys/${k.id}`, { token: a.access_token });
  assertError(assert, del, 404, 'not_found');
  const who = await request(`${auth.url}/api/auth/me`, { headers: { 'X-API-Key': k.key } });
  assert.equal(who.status, 200, who.text);
  const listA = await api(auth.url, 'GET', '/api/auth/api-keys', { token: a.access_token });
  assert.ok(!listA.json.data.some((e) => e.id === k.id), 'keys are listed to their owner only');
});

test('API key creation without a name: 400 details name; anonymous: 401', opts, async () => {
  const reg = await registerUser(auth.url);
  assertFieldError(assert, await api(auth.url, 'POST', '/api/auth/api-keys', { token: reg.access_token, body: {} }), 'name');
  assertError(assert, await api(auth.url, 'POST', '/api/auth/api-keys', { body: { name: 'x' } }), 401, 'unauthenticated');
  assertError(assert, await api(auth.url, 'GET', '/api/auth/api-keys'), 401, 'unauthenticated');
});
