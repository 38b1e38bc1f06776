// Auth's internal endpoints that the gateway depends on (docs/gateway.md,
// "Auth's internal endpoints"), checked on auth's own port: the revocation
// feed (GET /internal/revocations?since=) and API-key verification
// (POST /internal/api-keys/verify). Both need X-Internal-Token equal to
// <data>/secrets/internal_token; the gateway never routes /internal/*.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';

import { T, api, assertError, decodeJwt, newAdmin, registerUser, request, useService } from './lib/harness.mjs';

const opts = { timeout: T(30000) };
let token; // the internal token from the data dir
let admin;
const auth = useService('auth', {}, {
  async started({ svc }) {
    token = fs.readFileSync(path.join(svc.dataDir, 'secrets', 'internal_token'), 'utf8').trim();
    admin = await newAdmin(svc);
  },
});

const feed = (since, headers = { 'X-Internal-Token': token }) =>
  request(`${auth.url}/internal/revocations${since === undefined ? '' : `?since=${since}`}`, { headers });
const verify = (body, headers = { 'X-Internal-Token': token }) =>
  request(`${auth.url}/internal/api-keys/verify`, { method: 'POST', body, headers });

/** A token of the same length as the real one, differing in its last character. */
const wrongToken = () => token.slice(0, -1) + (token.at(-1) === 'a' ? 'b' : 'a');

test('without the internal token, or with a wrong one of the same length: 401', opts, async () => {
  assert.ok(token.length >= 16, 'a secret was generated');
  for (const headers of [{}, { 'X-Internal-Token': wrongToken() }, { 'X-Internal-Token': '' }, { 'X-Internal-Token': `${token}x` }]) {
    assertError(assert, await feed(0, headers), 401, 'unauthenticated');
    assertError(assert, await verify({ key: 'trk_x' }, headers), 401, 'unauthenticated');
  }
  // A user's bearer token is not an internal token either.
  assertError(assert, await api(auth.url, 'GET', '/internal/revocations?since=0', { token: admin.access_token }), 401, 'unauthenticated');
});

test('the revocation feed: shape, and a logged-out session appears in it', opts, async () => {
  const u = await registerUser(auth.url);
  const sid = decodeJwt(u.access_token).payload.sid;
  const before = Date.now() - 1000;
  assert.equal((await api(auth.url, 'POST', '/api/auth/logout', { token: u.access_token })).status, 204);
  const r = await feed(before);
  assert.equal(r.status, 200, r.text);
  const j = r.json;
  assert.ok(Number.isInteger(j.now) && Math.abs(j.now - Date.now()) < 60000, `now is unix ms (${j.now})`);
  assert.ok(Number.isInteger(j.since));
  assert.ok(Number.isInteger(j.access_ttl_s) && j.access_ttl_s > 0);
  assert.equal(typeof j.more, 'boolean');
  assert.ok(Array.isArray(j.revocations));
  const mine = j.revocations.find((e) => e.session_id === sid);
  assert.ok(mine, `the logged-out session is in the feed: ${r.text}`);
  assert.ok(mine.revoked_at >= before && mine.revoked_at <= j.now, 'revoked_at is unix ms');
  const at = j.revocations.map((e) => e.revoked_at);
  assert.deepEqual([...at].sort((a, b) => a - b), at, 'oldest first');
  // Asking from after it leaves it out.
  const later = await feed(mine.revoked_at + 1);
  assert.ok(!later.json.revocations.some((e) => e.session_id === sid));
});

test('since is clamped to the access-token lifetime: older revocations cannot matter', opts, async () => {
  const r = await feed(0);
  assert.equal(r.status, 200);
  assert.ok(r.json.since >= r.json.now - r.json.access_ttl_s * 1000 - 1000, `since ${r.json.since} clamped`);
});

test('since missing or malformed: 400', opts, async () => {
  for (const s of [undefined, 'abc', '-1', '1.5', '']) {
    assertError(assert, await feed(s), 400, 'invalid_argument');
  }
});

test('API-key verification: valid key, unknown key, revoked key', opts, async () => {
  const u = await registerUser(auth.url);
  const created = await api(auth.url, 'POST', '/api/auth/api-keys', { token: u.access_token, body: { name: 'edge' } });
  assert.equal(created.status, 201, created.text);
  const key = created.json.key ?? created.json.api_key?.key;
  const id = created.json.id ?? created.json.api_key?.id;
  let r = await verify({ key });
  assert.equal(r.status, 200, r.text);
  assert.equal(r.json.valid, true);
  assert.equal(r.json.user_id, u.user.id);
  assert.equal(r.json.role, u.user.role);
  assert.equal(r.json.key_id, id);
  r = await verify({ key: `${key}x` });
  assert.equal(r.status, 200);
  assert.equal(r.json.valid, false);
  assert.equal(typeof r.json.reason, 'string');
  assert.equal(r.json.user_id, undefined, 'nothing about anybody for an invalid key');
  assert.equal((await api(auth.url, 'DELETE', `/api/auth/api-keys/${id}`, { token: u.access_token })).status, 204);
  r = await verify({ key });
  assert.equal(r.json.valid, false, 'a revoked key is invalid');
});

test('API-key verification: the key of a banned user is invalid', opts, async () => {
  const u = await registerUser(auth.url);
  const created = await api(auth.url, 'POST', '/api/auth/api-keys', { token: u.access_token, body: { name: 'ban' } });
  const key = created.json.key ?? created.json.api_key?.key;
  assert.equal((await verify({ key })).json.valid, true);
  const ban = await api(auth.url, 'PATCH', `/api/auth/users/${u.user.id}`, { token: admin.access_token, body: { banned: true } });
  assert.equal(ban.status, 200, ban.text);
  const r = await verify({ key });
  assert.equal(r.json.valid, false);
  assert.match(r.json.reason, /banned/);
});

test('API-key verification: a malformed body is 400', opts, async () => {
  for (const body of ['not json', '{}', '{"key": 5}', '[]']) {
    const r = await request(`${auth.url}/internal/api-keys/verify`, {
      method: 'POST',
      body,
      headers: { 'X-Internal-Token': token, 'Content-Type': 'application/json' },
    });
    assertError(assert, r, 400, 'invalid_argument');
  }
});
