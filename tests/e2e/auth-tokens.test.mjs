// Access and refresh tokens of the auth service (issue 2 §4): /me, /validate,
// refresh rotation with reuse detection, logout, and the JWKS document.
import assert from 'node:assert/strict';
import { test } from 'node:test';

import {
  PASSWORD,
  T,
  api,
  assertError,
  assertTokenPair,
  assertUser,
  decodeJwt,
  loginUser,
  registerUser,
  request,
  useService,
  userOf,
} from './lib/harness.mjs';

const opts = { timeout: T(30000) };
const auth = useService('auth');

const me = (token) => api(auth.url, 'GET', '/api/auth/me', { token });
const refresh = (refresh_token) => api(auth.url, 'POST', '/api/auth/refresh', { body: { refresh_token } });

test('GET /api/auth/me answers the user for a valid Bearer token', opts, async () => {
  const reg = await registerUser(auth.url, { name: 'Me Myself' });
  const r = await me(reg.access_token);
  assert.equal(r.status, 200, r.text);
  assertUser(assert, userOf(r.json), { id: reg.user.id, email: reg.email, name: 'Me Myself' });
});

test('POST /api/auth/me answers the user too', opts, async () => {
  const reg = await registerUser(auth.url);
  const r = await api(auth.url, 'POST', '/api/auth/me', { token: reg.access_token, body: {} });
  assert.equal(r.status, 200, r.text);
  assertUser(assert, userOf(r.json), { id: reg.user.id });
});

test('/me without credentials: 401 unauthenticated', opts, async () => {
  assertError(assert, await me(undefined), 401, 'unauthenticated');
});

test('/me with a malformed or foreign Authorization header: 401', opts, async () => {
  const reg = await registerUser(auth.url);
  for (const value of [
    'Bearer',
    'Bearer ',
    'Bearer not-a-jwt',
    'Bearer a.b.c',
    `Basic ${Buffer.from('a:b').toString('base64')}`,
    `Bearer ${reg.refresh_token}`,
    `Bearer ${reg.access_token}x`,
  ]) {
    const r = await request(`${auth.url}/api/auth/me`, { headers: { Authorization: value } });
    assertError(assert, r, 401, 'unauthenticated');
  }
});

test('GET /api/auth/validate answers user_id, role, session_id, exp', opts, async () => {
  const reg = await registerUser(auth.url);
  const claims = decodeJwt(reg.access_token).payload;
  const r = await api(auth.url, 'GET', '/api/auth/validate', { token: reg.access_token });
  assert.equal(r.status, 200, r.text);
  assert.equal(r.json.user_id, reg.user.id);
  assert.equal(r.json.role, reg.user.role);
  assert.equal(r.json.session_id, claims.sid);
  assert.equal(r.json.exp, claims.exp);
});

test('validate without or with a bad token: 401', opts, async () => {
  assertError(assert, await api(auth.url, 'GET', '/api/auth/validate'), 401, 'unauthenticated');
  assertError(assert, await api(auth.url, 'GET', '/api/auth/validate', { token: 'x.y.z' }), 401, 'unauthenticated');
});

test('refresh rotates: a new pair for the same session that works', opts, async () => {
  const reg = await registerUser(auth.url);
  const r = await refresh(reg.refresh_token);
  assert.equal(r.status, 200, r.text);
  assertTokenPair(assert, r.json);
  assert.notEqual(r.json.refresh_token, reg.refresh_token, 'refresh token rotated');
  assert.notEqual(r.json.access_token, reg.access_token, 'new access token');
  const claims = decodeJwt(r.json.access_token).payload;
  assert.equal(claims.sub, reg.user.id);
  assert.equal(claims.sid, decodeJwt(reg.access_token).payload.sid, 'same session');
  assert.equal((await me(r.json.access_token)).status, 200);
  // The chain goes on.
  const r2 = await refresh(r.json.refresh_token);
  assert.equal(r2.status, 200, r2.text);
  assertTokenPair(assert, r2.json);
});

test('reusing a refresh token: 401 and the whole session is revoked', opts, async () => {
  const reg = await registerUser(auth.url);
  const other = await loginUser(auth.url, reg.email); // a second, innocent session
  const r1 = await refresh(reg.refresh_token);
  assert.equal(r1.status, 200, r1.text);
  const r2 = await refresh(r1.json.refresh_token);
  assert.equal(r2.status, 200, r2.text);

  // An attacker replays the first (already used) token.
  assertError(assert, await refresh(reg.refresh_token), 401, 'unauthenticated');

  // Everything of that session is dead now ...
  assertError(assert, await refresh(r2.json.refresh_token), 401, 'unauthenticated');
  assertError(assert, await me(r2.json.access_token), 401, 'unauthenticated');
  assertError(assert, await me(reg.access_token), 401, 'unauthenticated');
  // ... but the user's other session is not touched.
  assert.equal((await me(other.access_token)).status, 200);
  assert.equal((await refresh(other.refresh_token)).status, 200);
});

test('refresh with a missing or non-string token: 400 invalid_argument', opts, async () => {
  assertError(assert, await api(auth.url, 'POST', '/api/auth/refresh', { body: {} }), 400, 'invalid_argument');
  assertError(assert, await api(auth.url, 'POST', '/api/auth/refresh', { body: { refresh_token: 12 } }), 400, 'invalid_argument');
});

test('refresh with an unknown token or an access token: 401', opts, async () => {
  const reg = await registerUser(auth.url);
  assertError(assert, await refresh('definitely-not-a-refresh-token-0123456789'), 401, 'unauthenticated');
  assertError(assert, await refresh(reg.access_token), 401, 'unauthenticated');
  // A token that differs in its last character.
  const last = reg.refresh_token.at(-1) === 'A' ? 'B' : 'A';
  assertError(assert, await refresh(reg.refresh_token.slice(0, -1) + last), 401, 'unauthenticated');
});

test('logout: 204, then that session\'s access and refresh tokens are rejected', opts, async () => {
  const reg = await registerUser(auth.url);
  const other = await loginUser(auth.url, reg.email, PASSWORD);
  const r = await api(auth.url, 'POST', '/api/auth/logout', { token: reg.access_token });
  assert.equal(r.status, 204, r.text);
  assert.equal(r.text, '', '204 has no body');
  assertError(assert, await me(reg.access_token), 401, 'unauthenticated');
  assertError(assert, await refresh(reg.refresh_token), 401, 'unauthenticated');
  assertError(assert, await api(auth.url, 'POST', '/api/auth/logout', { token: reg.access_token }), 401, 'unauthenticated');
  // The other session lives on.
  assert.equal((await me(other.access_token)).status, 200);
});

test('logout without a token: 401', opts, async () => {
  assertError(assert, await api(auth.url, 'POST', '/api/auth/logout'), 401, 'unauthenticated');
});

test('GET /api/auth/jwks.json answers {"keys": []} for HS256', opts, async () => {
  const r = await api(auth.url, 'GET', '/api/auth/jwks.json');
  assert.equal(r.status, 200, r.text);
  assert.match(String(r.headers['content-type']), /^application\/(jwk-set\+)?json/);
  assert.deepEqual(r.json, { keys: [] });
});
