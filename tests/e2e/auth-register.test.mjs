// Registration and login of the auth service (issue 2 §4): success shapes,
// e-mail normalisation, field validation, media type, the uniform failure
// answer and the login rate limit of one client (auth-lockout.test.mjs has
// the rest: other clients, the account-wide backoff).
import assert from 'node:assert/strict';
import { test } from 'node:test';

import {
  PASSWORD,
  T,
  api,
  assertAuthBody,
  assertError,
  assertFieldError,
  decodeJwt,
  registerUser,
  request,
  uniqueEmail,
  useService,
} from './lib/harness.mjs';

const opts = { timeout: T(30000) };
const auth = useService('auth');

const register = (body, headers) => api(auth.url, 'POST', '/api/auth/register', { body, headers });
const login = (body, headers) => api(auth.url, 'POST', '/api/auth/login', { body, headers });

test('register answers 201 with the user and a token pair', opts, async () => {
  const email = uniqueEmail('reg');
  const r = await register({ email, password: PASSWORD, name: 'Ada Lovelace' });
  assert.equal(r.status, 201, r.text);
  assert.match(String(r.headers['content-type']), /^application\/json/);
  assertAuthBody(assert, r.json, { email, name: 'Ada Lovelace' });
  assert.notEqual(r.json.user.role, 'admin', 'self-registered users are not admins');
  assert.ok(!r.text.includes(PASSWORD), 'the password is not echoed');
});

test('register without a name succeeds', opts, async () => {
  const email = uniqueEmail('noname');
  const r = await register({ email, password: PASSWORD });
  assert.equal(r.status, 201, r.text);
  assertAuthBody(assert, r.json, { email });
  assert.ok(r.json.user.name === null || typeof r.json.user.name === 'string');
});

test('access token carries iss, aud, sub, role, sid, jti, iat, nbf, exp', opts, async () => {
  const reg = await registerUser(auth.url);
  const { header, payload } = decodeJwt(reg.access_token);
  assert.equal(header.alg, 'HS256');
  assert.equal(payload.iss, 'trellis');
  const aud = Array.isArray(payload.aud) ? payload.aud : [payload.aud];
  assert.ok(aud.includes('trellis'), `aud ${JSON.stringify(payload.aud)}`);
  assert.equal(payload.sub, reg.user.id);
  assert.equal(payload.role, reg.user.role);
  assert.equal(typeof payload.sid, 'string');
  assert.ok(payload.sid.length > 0);
  assert.equal(typeof payload.jti, 'string');
  assert.ok(payload.jti.length > 0);
  for (const k of ['iat', 'nbf', 'exp']) assert.ok(Number.isInteger(payload[k]), `${k} is an integer`);
  const now = Math.floor(Date.now() / 1000);
  assert.ok(Math.abs(payload.iat - now) < 60, 'iat is now');
  assert.ok(payload.nbf <= now + 1, 'nbf is not in the future');
  assert.ok(Math.abs(payload.exp - payload.iat - reg.expires_in) <= 2, 'exp - iat equals expires_in');

  const again = (await login({ email: reg.email, password: PASSWORD })).json;
  const p2 = decodeJwt(again.access_token).payload;
  assert.notEqual(p2.jti, payload.jti, 'every token has its own jti');
  assert.notEqual(p2.sid, payload.sid, 'every login opens its own session');
});

test('e-mail is trimmed and lower-cased', opts, async () => {
  const email = uniqueEmail('norm');
  const r = await register({ email: `  ${email.toUpperCase()}  `, password: PASSWORD });
  assert.equal(r.status, 201, r.text);
  assert.equal(r.json.user.email, email);
});

test('e-mail is unique case-insensitively: 409 already_exists', opts, async () => {
  const email = uniqueEmail('dup');
  assert.equal((await register({ email, password: PASSWORD })).status, 201);
  assertError(assert, await register({ email, password: PASSWORD }), 409, 'already_exists');
  const upper = email.replace(/^[a-z]+/, (s) => s.toUpperCase());
  assertError(assert, await register({ email: ` ${upper}`, password: 'another password' }), 409, 'already_exists');
});

test('invalid e-mail: 400 with details for field email', opts, async () => {
  for (const email of ['not-an-email', '', '@example.test', 'a@', 42]) {
    assertFieldError(assert, await register({ email, password: PASSWORD }), 'email');
  }
});

test('missing fields: 400 with details naming each', opts, async () => {
  assertFieldError(assert, await register({ password: PASSWORD }), 'email');
  assertFieldError(assert, await register({ email: uniqueEmail('nopw') }), 'password');
  const both = assertFieldError(assert, await register({}), 'email');
  assert.ok(both.details.some((d) => d.field === 'password'), 'password also reported');
});

test('password shorter than 8 bytes: 400 details password', opts, async () => {
  assertFieldError(assert, await register({ email: uniqueEmail('short'), password: '1234567' }), 'password');
  // Three two-byte characters are 6 bytes.
  assertFieldError(assert, await register({ email: uniqueEmail('short'), password: 'ééé' }), 'password');
  assertFieldError(assert, await register({ email: uniqueEmail('short'), password: 12345678 }), 'password');
});

test('password length is counted in bytes: 8 and 1024 bytes accepted', opts, async () => {
  // Four two-byte characters are exactly 8 bytes.
  const r8 = await register({ email: uniqueEmail('pw8'), password: 'éééé' });
  assert.equal(r8.status, 201, r8.text);
  const email = uniqueEmail('pw1024');
  const long = 'p'.repeat(1024);
  const r = await register({ email, password: long });
  assert.equal(r.status, 201, r.text);
  assert.equal((await login({ email, password: long })).status, 200);
});

test('password over 1024 bytes: 400 details password', opts, async () => {
  assertFieldError(assert, await register({ email: uniqueEmail('pwlong'), password: 'p'.repeat(1025) }), 'password');
  // 513 two-byte characters are 1026 bytes.
  assertFieldError(assert, await register({ email: uniqueEmail('pwlong'), password: 'é'.repeat(513) }), 'password');
});

test('non-JSON content type: 415 unsupported_media_type', opts, async () => {
  const body = JSON.stringify({ email: uniqueEmail('ct'), password: PASSWORD });
  for (const ct of ['text/plain', 'application/x-www-form-urlencoded']) {
    const r = await request(`${auth.url}/api/auth/register`, { method: 'POST', body, headers: { 'Content-Type': ct } });
    assertError(assert, r, 415, 'unsupported_media_type');
  }
  const lr = await request(`${auth.url}/api/auth/login`, { method: 'POST', body, headers: { 'Content-Type': 'text/plain' } });
  assertError(assert, lr, 415, 'unsupported_media_type');
});

test('JSON content type with a charset parameter is accepted', opts, async () => {
  const body = JSON.stringify({ email: uniqueEmail('charset'), password: PASSWORD });
  const r = await request(`${auth.url}/api/auth/register`, {
    method: 'POST',
    body,
    headers: { 'Content-Type': 'application/json; charset=utf-8' },
  });
  assert.equal(r.status, 201, r.text);
});

test('malformed JSON: 400 invalid_argument', opts, async () => {
  for (const body of ['{"email":', '{email: "x"}', 'null', '[]', '"str"', '']) {
    const r = await request(`${auth.url}/api/auth/register`, {
      method: 'POST',
      body,
      headers: { 'Content-Type': 'application/json' },
    });
    assertError(assert, r, 400, 'invalid_argument');
  }
  const lr = await request(`${auth.url}/api/auth/login`, {
    method: 'POST',
    body: '{"email":',
    headers: { 'Content-Type': 'application/json' },
  });
  assertError(assert, lr, 400, 'invalid_argument');
});

test('login answers 200 with the same shape as register', opts, async () => {
  const reg = await registerUser(auth.url, { name: 'Grace' });
  const r = await login({ email: reg.email, password: PASSWORD });
  assert.equal(r.status, 200, r.text);
  assertAuthBody(assert, r.json, { email: reg.email, id: reg.user.id, name: 'Grace' });
  assert.notEqual(r.json.access_token, reg.access_token);
  assert.notEqual(r.json.refresh_token, reg.refresh_token);
});

test('login normalises the e-mail too', opts, async () => {
  const reg = await registerUser(auth.url);
  const r = await login({ email: `\t${reg.email.toUpperCase()} `, password: PASSWORD });
  assert.equal(r.status, 200, r.text);
  assert.equal(r.json.user.id, reg.user.id);
});

test('login with missing fields: 400 invalid_argument', opts, async () => {
  assertError(assert, await login({}), 400, 'invalid_argument');
  assertError(assert, await login({ email: uniqueEmail('x') }), 400, 'invalid_argument');
  assertError(assert, await login({ password: PASSWORD }), 400, 'invalid_argument');
});

test('wrong password and unknown e-mail give the same 401 body', opts, async () => {
  const reg = await registerUser(auth.url);
  const wrong = await login({ email: reg.email, password: 'not the password' });
  const unknown = await login({ email: uniqueEmail('ghost'), password: 'not the password' });
  const e1 = assertError(assert, wrong, 401, 'unauthenticated');
  const e2 = assertError(assert, unknown, 401, 'unauthenticated');
  const strip = ({ request_id: _ignored, ...rest }) => rest;
  assert.deepEqual(strip(e1), strip(e2));
  assert.notEqual(e1.request_id, e2.request_id, 'each answer has its own request id');
});

test('five failed logins for one e-mail from one client: 429 rate_limited with Retry-After', opts, async () => {
  const reg = await registerUser(auth.url);
  const other = await registerUser(auth.url);
  for (let i = 1; i <= 4; i++) {
    assertError(assert, await login({ email: reg.email, password: `wrong password ${i}` }), 401, 'unauthenticated');
  }
  // The fifth failure may itself answer 429 or be the last 401.
  const fifth = await login({ email: reg.email, password: 'wrong password 5' });
  assertError(assert, fifth, [401, 429], ['unauthenticated', 'rate_limited']);

  // Even the right password is refused now, so guessing cannot go on.
  const limited = await login({ email: reg.email, password: PASSWORD });
  assertError(assert, limited, 429, 'rate_limited');
  const ra = limited.headers['retry-after'];
  assert.match(String(ra), /^\d+$/, `Retry-After is whole seconds (${ra})`);
  assert.ok(Number(ra) >= 1 && Number(ra) <= 900, `Retry-After within the 15-minute window (${ra})`);

  // The limit is per e-mail (and client), also when the address is spelled differently.
  assertError(assert, await login({ email: reg.email.toUpperCase(), password: PASSWORD }), 429, 'rate_limited');
  const ok = await login({ email: other.email, password: PASSWORD });
  assert.equal(ok.status, 200, 'another e-mail is not limited');
});
