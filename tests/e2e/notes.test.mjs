// The notes service (the example of docs/new-service.md): CRUD with the
// kit's authentication, ownership (404 for other people's notes), paging,
// validation, and revocations honoured by a service that is not auth.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { after, before, describe, test } from 'node:test';

import {
  T,
  api,
  assertError,
  assertFieldError,
  listAllPages,
  newAdmin,
  registerUser,
  startService,
  startUp,
  useService,
  UUID_V7,
  RFC3339_MS,
} from './lib/harness.mjs';

const opts = { timeout: T(30000) };
let notes; // the notes service, started against auth's data dir and address
const auth = useService('auth', {}, {
  async started({ svc }) {
    notes = await startService('notes', {
      args: ['--auth-url', svc.url],
      env: {
        TRELLIS_JWT_SECRET: fs.readFileSync(`${svc.dataDir}/secrets/jwt_secret`, 'utf8').trim(),
        TRELLIS_INTERNAL_TOKEN: fs.readFileSync(`${svc.dataDir}/secrets/internal_token`, 'utf8').trim(),
      },
    });
  },
  async stopping() {
    await notes?.stop();
  },
});

const call = (method, p, token, body, headers) => api(notes.url, method, p, { token, body, headers });

test('create, read, list, update and delete a note', opts, async () => {
  const u = await registerUser(auth.url);
  const c = await call('POST', '/api/notes', u.access_token, { title: 'groceries', body: 'milk' });
  assert.equal(c.status, 201, c.text);
  assert.match(c.json.id, UUID_V7);
  assert.equal(c.json.owner_id, u.user.id);
  assert.equal(c.json.title, 'groceries');
  assert.match(c.json.created_at, RFC3339_MS);

  const g = await call('GET', `/api/notes/${c.json.id}`, u.access_token);
  assert.equal(g.status, 200, g.text);
  assert.deepEqual(g.json, c.json);

  const p = await call('PATCH', `/api/notes/${c.json.id}`, u.access_token, { body: 'milk, eggs' });
  assert.equal(p.status, 200, p.text);
  assert.equal(p.json.title, 'groceries', 'an absent field is unchanged');
  assert.equal(p.json.body, 'milk, eggs');

  const d = await call('DELETE', `/api/notes/${c.json.id}`, u.access_token);
  assert.equal(d.status, 204, d.text);
  assertError(assert, await call('GET', `/api/notes/${c.json.id}`, u.access_token), 404, 'not_found');
  assertError(assert, await call('DELETE', `/api/notes/${c.json.id}`, u.access_token), 404, 'not_found');
});

test('other people\'s notes are 404, an admin reads and deletes them', opts, async () => {
  const owner = await registerUser(auth.url);
  const other = await registerUser(auth.url);
  const admin = await newAdmin(auth.svc, 'notes-admin');
  const c = await call('POST', '/api/notes', owner.access_token, { title: 'private' });
  assert.equal(c.status, 201, c.text);
  const path = `/api/notes/${c.json.id}`;
  assertError(assert, await call('GET', path, other.access_token), 404, 'not_found');
  assertError(assert, await call('PATCH', path, other.access_token, { title: 'mine' }), 404, 'not_found');
  assertError(assert, await call('DELETE', path, other.access_token), 404, 'not_found');
  assertError(assert, await call('PATCH', path, admin.access_token, { title: 'x' }), 404, 'not_found');
  const list = await call('GET', '/api/notes', other.access_token);
  assert.deepEqual(list.json.data, [], 'nobody lists another user\'s notes');
  assert.equal((await call('GET', path, admin.access_token)).status, 200);
  assert.equal((await call('DELETE', path, admin.access_token)).status, 204);
  assertError(assert, await call('GET', path, owner.access_token), 404, 'not_found');
});

test('listing pages with opaque cursors', opts, async () => {
  const u = await registerUser(auth.url);
  const made = [];
  for (let i = 0; i < 7; i++) {
    const c = await call('POST', '/api/notes', u.access_token, { title: `n${i}` });
    assert.equal(c.status, 201, c.text);
    made.push(c.json.id);
  }
  const all = await listAllPages(assert, notes.url, '/api/notes', { token: u.access_token, limit: 3 });
  assert.deepEqual(all.items.map((n) => n.id), made, 'every note once, oldest first');
  assert.equal(all.pages, 3);
  const first = await call('GET', '/api/notes?limit=3', u.access_token);
  assert.equal(first.json.data.length, 3);
  assert.ok(first.json.next_cursor && !UUID_V7.test(first.json.next_cursor), 'the cursor is opaque');
  assertFieldError(assert, await call('GET', '/api/notes?limit=0', u.access_token), 'limit');
  assertFieldError(assert, await call('GET', '/api/notes?cursor=%%%', u.access_token), 'cursor');
});

test('bad input gets the envelope: fields, ids, media type, no credentials', opts, async () => {
  const u = await registerUser(auth.url);
  assertFieldError(assert, await call('POST', '/api/notes', u.access_token, {}), 'title');
  assertFieldError(assert, await call('POST', '/api/notes', u.access_token, { title: 'x'.repeat(201) }), 'title');
  assertFieldError(assert, await call('POST', '/api/notes', u.access_token, { title: 5 }), 'title');
  const c = await call('POST', '/api/notes', u.access_token, { title: 'a' });
  assertFieldError(assert, await call('PATCH', `/api/notes/${c.json.id}`, u.access_token, {}), 'title');
  assertError(assert, await call('GET', '/api/notes/not-a-uuid', u.access_token), 404, 'not_found');
  const text = await api(notes.url, 'POST', '/api/notes', {
    token: u.access_token,
    headers: { 'Content-Type': 'text/plain' },
    body: 'title=a',
  });
  assert.equal(text.status, 415, text.text);
  assertError(assert, await call('GET', '/api/notes'), 401, 'unauthenticated');
  assertError(assert, await call('GET', '/api/notes', 'not.a.jwt'), 401, 'unauthenticated');
});

test('forged identity headers do not reach the notes of their victim', opts, async () => {
  const victim = await registerUser(auth.url);
  const attacker = await registerUser(auth.url);
  const c = await call('POST', '/api/notes', victim.access_token, { title: 'secret' });
  const forged = { 'X-User-Id': victim.user.id, 'X-User-Role': 'admin', 'X-Session-Id': victim.user.id };
  assertError(assert, await call('GET', `/api/notes/${c.json.id}`, undefined, undefined, forged), 401, 'unauthenticated');
  assertError(assert, await call('GET', `/api/notes/${c.json.id}`, attacker.access_token, undefined, forged), 404, 'not_found');
});

test('a logout reaches the notes service within one second; API keys work', opts, async () => {
  const u = await registerUser(auth.url);
  assert.equal((await call('GET', '/api/notes', u.access_token)).status, 200);
  const key = await api(auth.url, 'POST', '/api/auth/api-keys', { token: u.access_token, body: { name: 'notes bot' } });
  assert.equal(key.status, 201, key.text);
  const viaKey = await call('POST', '/api/notes', undefined, { title: 'from a bot' }, { 'X-API-Key': key.json.key });
  assert.equal(viaKey.status, 201, viaKey.text);
  assert.equal(viaKey.json.owner_id, u.user.id);
  assertError(assert, await call('GET', '/api/notes', undefined, undefined, { 'X-API-Key': 'trk_nope' }), 401, 'unauthenticated');

  assert.equal((await api(auth.url, 'POST', '/api/auth/logout', { token: u.access_token })).status, 204);
  const t0 = Date.now();
  let status = 200;
  while (status !== 401 && Date.now() - t0 < 3000) {
    status = (await call('GET', '/api/notes', u.access_token)).status;
    if (status !== 401) await new Promise((r) => setTimeout(r, 20));
  }
  assert.equal(status, 401);
  assert.ok(Date.now() - t0 <= 1000, `revoked at the notes service within ${Date.now() - t0} ms`);
});

test('without auth, credentialed requests get 503 and /readyz says why', opts, async () => {
  const lonely = await startService('notes', { args: ['--auth-url', 'http://127.0.0.1:1'] });
  try {
    const r = await api(lonely.url, 'GET', '/api/notes', { token: 'a.b.c' });
    assert.ok(r.status === 401 || r.status === 503, r.text);
    const ready = await api(lonely.url, 'GET', '/readyz');
    assert.equal(ready.status, 503, ready.text);
    assert.match(ready.json.error.message, /revoked sessions/);
    assert.equal((await api(lonely.url, 'GET', '/healthz')).status, 200, 'alive all the same');
  } finally {
    await lonely.stop();
  }
});

describe('trellis up --only gateway,auth,notes: the example through port-base', () => {
  let up;
  let gw;
  before(async () => {
    up = await startUp({ only: 'gateway,auth,notes' });
    gw = `http://127.0.0.1:${up.portBase}`;
  });
  after(async () => {
    await up?.stop();
  });

  /** ms until fn() is true (polled every 20 ms), Infinity past limitMs. */
  async function msUntil(fn, limitMs) {
    const t0 = Date.now();
    for (;;) {
      if (await fn()) return Date.now() - t0;
      if (Date.now() - t0 > limitMs) return Infinity;
      await new Promise((r) => setTimeout(r, 20));
    }
  }

  test('notes through the gateway; a logout right after auth restarts holds at the edge within 1 s', opts, async () => {
    const row = up.table().rows.find((r) => r.service === 'notes');
    assert.equal(row?.port, up.portBase + 30, 'notes listens at its registry offset');
    const u = await registerUser(gw);
    const c = await api(gw, 'POST', '/api/notes', { token: u.access_token, body: { title: 'via the edge' } });
    assert.equal(c.status, 201, c.text);
    assert.equal((await api(gw, 'GET', `/api/notes/${c.json.id}`, { token: u.access_token })).status, 200);
    assertError(assert, await api(gw, 'GET', '/api/notes'), 401, 'unauthenticated');

    // auth is killed; the supervisor restarts it.
    const auth = up.table().rows.find((r) => r.service === 'auth');
    process.kill(auth.pid, 'SIGKILL');
    const back = await msUntil(async () => (await api(gw, 'GET', '/api/auth/me', { token: u.access_token }).catch(() => ({ status: 0 }))).status === 200, T(20000));
    assert.ok(back < Infinity, 'auth serves again through the gateway');
    assert.equal((await api(gw, 'POST', '/api/auth/logout', { token: u.access_token })).status, 204);
    const t0 = Date.now();
    const refused = (base) => async () => (await api(base, 'GET', '/api/notes', { token: u.access_token })).status === 401;
    const [edge, direct] = await Promise.all([msUntil(refused(gw), 3000), msUntil(refused(`http://127.0.0.1:${row.port}`), 3000)]);
    assert.ok(edge <= 1000, `the gateway refuses the token within ${edge} ms of the logout`);
    assert.ok(direct <= 1000, `notes itself refuses it within ${direct} ms (${Date.now() - t0} ms in all)`);
  });
});
