// Sessions and passwords of the auth service (issue 2 §4): listing and
// revoking sessions, changing a password, and the forgot/reset flow read
// through the admin outbox.
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import { test } from 'node:test';

import {
  PASSWORD,
  T,
  api,
  assertError,
  assertFieldError,
  decodeJwt,
  listAllPages,
  loginUser,
  newAdmin,
  registerUser,
  request,
  sleep,
  uniqueEmail,
  useService,
} from './lib/harness.mjs';

const opts = { timeout: T(30000) };
const NEW_PASSWORD = 'a brand new passphrase';
let admin; // {access_token, ...}
const auth = useService('auth', {}, {
  async started({ svc }) {
    admin = await newAdmin(svc);
  },
});

const me = (token) => api(auth.url, 'GET', '/api/auth/me', { token });
const refresh = (refresh_token) => api(auth.url, 'POST', '/api/auth/refresh', { body: { refresh_token } });
const login = (email, password) => api(auth.url, 'POST', '/api/auth/login', { body: { email, password } });
const sid = (token) => decodeJwt(token).payload.sid;

/** A random, well-formed UUIDv7 that names nothing. */
function randomUuidV7() {
  const b = crypto.randomBytes(16);
  b.writeUIntBE(Date.now(), 0, 6);
  b[6] = 0x70 | (b[6] & 0x0f);
  b[8] = 0x80 | (b[8] & 0x3f);
  const h = b.toString('hex');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

/** How many /password/forgot requests the service has finished processing
 * (it answers 202 first and does the work shortly after; see
 * auth_account.c), from its auth_password_forgot_total counter. */
async function forgotProcessed() {
  const r = await request(`${auth.adminUrl}/metrics`);
  assert.equal(r.status, 200, r.text);
  let n = 0;
  for (const line of r.text.split('\n')) {
    const m = /^auth_password_forgot_total\{[^}]*\} (\d+)/.exec(line);
    if (m) n += Number(m[1]);
  }
  return n;
}

/** POSTs /password/forgot for each email, asserts the 202s, and waits
 * (polling the counter) until the service has done the work of all of them. */
async function forgot(...emails) {
  const before = await forgotProcessed();
  const answers = [];
  for (const email of emails) {
    const r = await api(auth.url, 'POST', '/api/auth/password/forgot', { body: { email } });
    assert.equal(r.status, 202, r.text);
    answers.push(r);
  }
  const deadline = Date.now() + T(10000);
  while ((await forgotProcessed()) < before + emails.length) {
    assert.ok(Date.now() < deadline, 'forgot work did not finish');
    await sleep(20);
  }
  return answers;
}

/** The newest password-reset token in the outbox for email. */
async function outboxToken(email) {
  const r = await api(auth.url, 'GET', `/api/auth/admin/outbox?recipient=${encodeURIComponent(email)}`, {
    token: admin.access_token,
  });
  assert.equal(r.status, 200, `outbox: ${r.text}`);
  const items = outboxItems(r.json);
  assert.ok(items.length > 0, `a message for ${email} is in the outbox: ${r.text}`);
  for (const it of items) {
    if (typeof it.recipient === 'string') assert.equal(it.recipient, email, 'outbox is filtered by recipient');
  }
  const newest = [...items].sort((a, b) => String(b.created_at ?? '').localeCompare(String(a.created_at ?? '')))[0];
  const token = findToken(newest);
  assert.ok(token, `a reset token in the message: ${JSON.stringify(newest)}`);
  return token;
}

function outboxItems(json) {
  if (Array.isArray(json)) return json;
  for (const k of ['data', 'messages', 'items']) if (Array.isArray(json?.[k])) return json[k];
  return [];
}

/** A field named like a token, else "token=..." inside any text of the message. */
function findToken(msg) {
  for (const k of ['token', 'reset_token']) if (typeof msg[k] === 'string' && msg[k]) return msg[k];
  const texts = [];
  const walk = (v) => {
    if (typeof v === 'string') texts.push(v);
    else if (v && typeof v === 'object') Object.values(v).forEach(walk);
  };
  walk(msg);
  for (const t of texts) {
    const m = /token[=:"\s]+([A-Za-z0-9_\-.~]{16,})/i.exec(t);
    if (m) return m[1];
  }
  return null;
}

test('GET /api/auth/sessions lists the caller\'s sessions as {data:[...]}', opts, async () => {
  const reg = await registerUser(auth.url);
  const second = await loginUser(auth.url, reg.email);
  const stranger = await registerUser(auth.url);
  const r = await api(auth.url, 'GET', '/api/auth/sessions', { token: reg.access_token });
  assert.equal(r.status, 200, r.text);
  assert.ok(Array.isArray(r.json.data), r.text);
  const ids = r.json.data.map((s) => s.id);
  assert.ok(ids.includes(sid(reg.access_token)), 'first session listed');
  assert.ok(ids.includes(sid(second.access_token)), 'second session listed');
  assert.ok(!ids.includes(sid(stranger.access_token)), 'another user\'s session not listed');
  assert.equal(r.json.data.length, 2);
  for (const t of [reg.refresh_token, second.refresh_token, reg.access_token]) {
    assert.ok(!r.text.includes(t), 'no token in the session list');
  }
});

test('sessions list pages newest first with limit and cursor, marking the current one', opts, async () => {
  const reg = await registerUser(auth.url);
  const logins = [];
  for (let i = 0; i < 4; i++) logins.push(await loginUser(auth.url, reg.email));
  const token = reg.access_token;
  const { items, pages } = await listAllPages(assert, auth.url, '/api/auth/sessions', { token, limit: 2 });
  // Newest first is id order (see the API keys test in auth-admin).
  const listed = items.map((s) => s.id);
  const expected = [reg, ...logins].map((s) => sid(s.access_token));
  assert.deepEqual([...listed].sort().reverse(), listed, 'ids in descending order');
  assert.deepEqual([...listed].sort(), expected.sort(), 'every session once');
  assert.equal(pages, 3);
  assert.deepEqual(items.filter((s) => s.current).map((s) => s.id), [sid(token)]);
});

test('sessions list without a token: 401', opts, async () => {
  assertError(assert, await api(auth.url, 'GET', '/api/auth/sessions'), 401, 'unauthenticated');
});

test('DELETE /api/auth/sessions/{id}: 204 and that session is dead', opts, async () => {
  const reg = await registerUser(auth.url);
  const victim = await loginUser(auth.url, reg.email);
  const r = await api(auth.url, 'DELETE', `/api/auth/sessions/${sid(victim.access_token)}`, { token: reg.access_token });
  assert.equal(r.status, 204, r.text);
  assertError(assert, await me(victim.access_token), 401, 'unauthenticated');
  assertError(assert, await refresh(victim.refresh_token), 401, 'unauthenticated');
  assert.equal((await me(reg.access_token)).status, 200, 'the caller\'s session lives on');
  const list = await api(auth.url, 'GET', '/api/auth/sessions', { token: reg.access_token });
  assert.ok(!list.json.data.some((s) => s.id === sid(victim.access_token)), 'revoked session not listed');
});

test('DELETE another user\'s session: 404 and it keeps working', opts, async () => {
  const a = await registerUser(auth.url);
  const b = await registerUser(auth.url);
  const r = await api(auth.url, 'DELETE', `/api/auth/sessions/${sid(b.access_token)}`, { token: a.access_token });
  assertError(assert, r, 404, 'not_found');
  assert.equal((await me(b.access_token)).status, 200);
});

test('DELETE an unknown session: 404', opts, async () => {
  const a = await registerUser(auth.url);
  const r = await api(auth.url, 'DELETE', `/api/auth/sessions/${randomUuidV7()}`, { token: a.access_token });
  assertError(assert, r, 404, 'not_found');
});

test('password change: 204, other sessions revoked, this one keeps working', opts, async () => {
  const reg = await registerUser(auth.url);
  const other = await loginUser(auth.url, reg.email);
  const r = await api(auth.url, 'POST', '/api/auth/password/change', {
    token: reg.access_token,
    body: { current_password: PASSWORD, new_password: NEW_PASSWORD },
  });
  assert.equal(r.status, 204, r.text);
  assert.equal((await me(reg.access_token)).status, 200, 'current access token still works');
  assert.equal((await refresh(reg.refresh_token)).status, 200, 'current refresh token still works');
  assertError(assert, await me(other.access_token), 401, 'unauthenticated');
  assertError(assert, await refresh(other.refresh_token), 401, 'unauthenticated');
  assertError(assert, await login(reg.email, PASSWORD), 401, 'unauthenticated');
  assert.equal((await login(reg.email, NEW_PASSWORD)).status, 200);
});

test('password change with the wrong current password is refused', opts, async () => {
  const reg = await registerUser(auth.url);
  const r = await api(auth.url, 'POST', '/api/auth/password/change', {
    token: reg.access_token,
    body: { current_password: 'not my password', new_password: NEW_PASSWORD },
  });
  assertError(assert, r, [400, 401, 403], ['invalid_argument', 'unauthenticated', 'permission_denied']);
  assert.equal((await login(reg.email, PASSWORD)).status, 200, 'password unchanged');
});

test('password change with a short new password: 400 details new_password', opts, async () => {
  const reg = await registerUser(auth.url);
  const r = await api(auth.url, 'POST', '/api/auth/password/change', {
    token: reg.access_token,
    body: { current_password: PASSWORD, new_password: 'short' },
  });
  assertFieldError(assert, r, 'new_password');
});

test('password change without a token: 401', opts, async () => {
  const r = await api(auth.url, 'POST', '/api/auth/password/change', {
    body: { current_password: PASSWORD, new_password: NEW_PASSWORD },
  });
  assertError(assert, r, 401, 'unauthenticated');
});

test('forgot answers 202 for known and unknown e-mails alike', opts, async () => {
  const reg = await registerUser(auth.url);
  const ghost = uniqueEmail('ghost');
  const [known, unknown] = await forgot(reg.email, ghost);
  assert.equal(known.status, 202, known.text);
  assert.equal(unknown.status, 202, unknown.text);
  const shape = (r) => (r.json && typeof r.json === 'object' ? { ...r.json, request_id: undefined } : r.text);
  assert.deepEqual(shape(known), shape(unknown), 'the answers do not tell the two apart');
  const box = await api(auth.url, 'GET', `/api/auth/admin/outbox?recipient=${encodeURIComponent(ghost)}`, {
    token: admin.access_token,
  });
  assert.equal(box.status, 200, box.text);
  assert.equal(outboxItems(box.json).length, 0, 'nothing is sent to an unknown address');
});

test('forgot keeps at most 5 unused reset tokens per user', opts, async () => {
  const reg = await registerUser(auth.url);
  await forgot(...Array(7).fill(reg.email));
  const box = await api(auth.url, 'GET', `/api/auth/admin/outbox?recipient=${encodeURIComponent(reg.email)}`, {
    token: admin.access_token,
  });
  assert.equal(box.status, 200, box.text);
  assert.equal(outboxItems(box.json).length, 5, box.text);
});

test('password reset: 204, all sessions revoked, token single use', opts, async () => {
  const reg = await registerUser(auth.url);
  const other = await loginUser(auth.url, reg.email);
  await forgot(reg.email);
  const token = await outboxToken(reg.email);

  const r = await api(auth.url, 'POST', '/api/auth/password/reset', { body: { token, new_password: NEW_PASSWORD } });
  assert.equal(r.status, 204, r.text);
  for (const s of [reg, other]) {
    assertError(assert, await me(s.access_token), 401, 'unauthenticated');
    assertError(assert, await refresh(s.refresh_token), 401, 'unauthenticated');
  }
  assertError(assert, await login(reg.email, PASSWORD), 401, 'unauthenticated');
  assert.equal((await login(reg.email, NEW_PASSWORD)).status, 200);

  const again = await api(auth.url, 'POST', '/api/auth/password/reset', {
    body: { token, new_password: 'yet another passphrase' },
  });
  assertError(assert, again, [400, 401], ['invalid_argument', 'unauthenticated']);
  assert.equal((await login(reg.email, NEW_PASSWORD)).status, 200, 'the reused token changed nothing');
});

test('password reset with a bad token: 400 or 401 envelope', opts, async () => {
  for (const token of ['', 'nonsense', 'A'.repeat(64)]) {
    const r = await api(auth.url, 'POST', '/api/auth/password/reset', { body: { token, new_password: NEW_PASSWORD } });
    assertError(assert, r, [400, 401], ['invalid_argument', 'unauthenticated']);
  }
});

test('password reset with a short new password: 400 details new_password', opts, async () => {
  const reg = await registerUser(auth.url);
  await forgot(reg.email);
  const token = await outboxToken(reg.email);
  const r = await api(auth.url, 'POST', '/api/auth/password/reset', { body: { token, new_password: 'short' } });
  assertFieldError(assert, r, 'new_password');
  assert.equal((await login(reg.email, PASSWORD)).status, 200, 'password unchanged');
});

test('outbox is admin only: 401 anonymous, 403 for a user', opts, async () => {
  const reg = await registerUser(auth.url);
  const p = `/api/auth/admin/outbox?recipient=${encodeURIComponent(reg.email)}`;
  assertError(assert, await api(auth.url, 'GET', p), 401, 'unauthenticated');
  assertError(assert, await api(auth.url, 'GET', p, { token: reg.access_token }), 403, 'permission_denied');
});
