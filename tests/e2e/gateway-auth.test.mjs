// Edge security of the gateway (issue 3, "Edge security"): JWT verification
// before anything reaches an upstream (valid, expired, not yet valid, alg
// none, wrong key, tampered, wrong issuer/audience), roles, the identity
// headers the gateway sets for upstreams, session revocation seen within
// 1 s of a logout, and X-API-Key validated against auth. A real auth service
// and the gateway share one data dir (secrets) and one --jwt-secret the test
// knows, so it can sign tokens with exactly one defect each; protected routes
// lead to a fake upstream that counts what reaches it.
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import { after, before, test } from 'node:test';

import WebSocket from 'ws';

import {
  PASSWORD,
  T,
  adminCreateUser,
  api,
  assertError,
  decodeJwt,
  loginUser,
  registerUser,
  request,
  signJwt,
  sleep,
  startService,
  tempDir,
  uniqueEmail,
} from './lib/harness.mjs';
import { startGateway, startUpstream } from './lib/upstream.mjs';

const opts = { timeout: T(30000) };
const SECRET_HEX = crypto.randomBytes(32).toString('hex');
let auth;
let gw;
let up;
let key; // the HMAC key the services use (text or bytes of SECRET_HEX)
let user; // registered through the gateway
let claims;
let admin; // a user with role admin
let revokedToken; // the access token of a session logged out by a test

before(async () => {
  const dataDir = tempDir('trellis-gwauth-');
  up = await startUpstream({ name: 'app' });
  auth = await startService('auth', { dataDir, args: ['--jwt-secret', SECRET_HEX] });
  gw = await startGateway({
    dataDir,
    args: ['--jwt-secret', SECRET_HEX],
    routes: {
      version: 1,
      rate_limits: { 'two-per-user': { rate: 0.01, burst: 2, key: 'user' } },
      upstreams: {
        auth: { instances: [`127.0.0.1:${auth.port}`] },
        app: { instances: [up.address], health: null },
      },
      routes: [
        { path: '/api/peruser/*', upstream: 'app', auth: 'required', rate_limit: 'two-per-user' },
        { path: '/api/auth/*', upstream: 'auth', auth: 'none' },
        { path: '/api/prot/*', upstream: 'app', auth: 'required' },
        { path: '/api/opt/*', upstream: 'app', auth: 'optional' },
        { path: '/api/open/*', upstream: 'app', auth: 'none' },
        { path: '/api/admin/*', upstream: 'app', auth: 'required', roles: ['admin'] },
        { path: '/api/keyed/*', upstream: 'app', auth: 'required', api_key: true },
        { path: '/api/live/ws', methods: ['GET'], upstream: 'app', auth: 'required', websocket: true },
      ],
    },
  });
  user = await registerUser(gw.url);
  claims = decodeJwt(user.access_token).payload;
  const { header, signature } = decodeJwt(user.access_token);
  const input = user.access_token.split('.').slice(0, 2).join('.');
  for (const k of [Buffer.from(SECRET_HEX, 'utf8'), Buffer.from(SECRET_HEX, 'hex')]) {
    const sig = crypto.createHmac('sha256', k).update(input).digest('base64url');
    if (header.alg === 'HS256' && sig === signature) key = k;
  }
  const email = uniqueEmail('gwadmin');
  await adminCreateUser(dataDir, { email, password: PASSWORD, role: 'admin' });
  admin = await loginUser(gw.url, email);
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

const url = (p) => gw.url + p;
const now = () => Math.floor(Date.now() / 1000);
const HS256 = { alg: 'HS256', typ: 'JWT' };
const goodClaims = (over = {}) => {
  const t = now();
  return { ...claims, jti: crypto.randomUUID(), iat: t, nbf: t, exp: t + 600, ...over };
};
const get = (p, token, headers = {}) => request(url(p), { headers: token ? { ...headers, Authorization: `Bearer ${token}` } : headers });

test('control: the test signs tokens the way auth does, and the gateway accepts them', opts, async () => {
  assert.ok(key, '--jwt-secret is the HS256 key of the tokens auth issues');
  const r = await get('/api/prot/x', signJwt(HS256, goodClaims(), key));
  assert.equal(r.status, 200, r.text);
});

test('a valid token reaches the upstream with X-User-Id, X-User-Role and X-Session-Id set', opts, async () => {
  const r = await get('/api/prot/whoami', user.access_token);
  assert.equal(r.status, 200, r.text);
  const h = r.json.headers;
  assert.equal(h['x-user-id'], user.user.id);
  assert.equal(h['x-user-role'], user.user.role);
  assert.equal(h['x-session-id'], claims.sid);
});

test('identity headers a client sends cannot impersonate anybody, with or without a token', opts, async () => {
  const spoof = {
    'X-User-Id': admin.user.id,
    'X-User-Role': 'admin',
    'X-Session-Id': 'forged-session',
    'X-Internal-Token': 'forged-token',
  };
  let r = await get('/api/prot/whoami', user.access_token, spoof);
  assert.equal(r.status, 200, r.text);
  assert.equal(r.json.headers['x-user-id'], user.user.id, 'the token decides, not the header');
  assert.equal(r.json.headers['x-user-role'], user.user.role);
  assert.equal(r.json.headers['x-session-id'], claims.sid);
  assert.equal(r.json.headers['x-internal-token'], undefined);
  for (const p of ['/api/open/x', '/api/opt/x']) {
    r = await get(p, null, spoof);
    assert.equal(r.status, 200, `${p}: ${r.text}`);
    for (const k of ['x-user-id', 'x-user-role', 'x-session-id', 'x-internal-token']) {
      assert.equal(r.json.headers[k], undefined, `${p}: ${k} stripped`);
    }
  }
  // A forged admin role does not open an admin route either.
  assertError(assert, await get('/api/admin/x', user.access_token, spoof), 403, 'permission_denied');
});

test('every defective token is 401 at the gateway and never reaches the upstream', opts, async () => {
  const before = up.calls().length;
  const wrongKey = crypto.randomBytes(32);
  const [h, p] = user.access_token.split('.');
  const tampered = `${h}.${Buffer.from(JSON.stringify({ ...claims, role: 'admin' })).toString('base64url')}.${user.access_token.split('.')[2]}`;
  const cases = {
    expired: signJwt(HS256, goodClaims({ iat: now() - 1200, nbf: now() - 1200, exp: now() - 600 }), key),
    'not yet valid': signJwt(HS256, goodClaims({ nbf: now() + 600 }), key),
    'alg none': signJwt({ alg: 'none', typ: 'JWT' }, goodClaims(), null),
    'alg none, signature kept': `${Buffer.from('{"alg":"none","typ":"JWT"}').toString('base64url')}.${p}.${user.access_token.split('.')[2]}`,
    'wrong key': signJwt(HS256, goodClaims(), wrongKey),
    'HS512 with the right key': signJwt({ alg: 'HS512', typ: 'JWT' }, goodClaims(), key),
    tampered,
    'wrong issuer': signJwt(HS256, goodClaims({ iss: 'https://evil.example' }), key),
    'wrong audience': signJwt(HS256, goodClaims({ aud: 'someone-else' }), key),
    'no exp': signJwt(HS256, (({ exp, ...c }) => c)(goodClaims()), key),
    garbage: 'not.a.jwt',
    empty: '',
  };
  for (const [what, token] of Object.entries(cases)) {
    const r = await request(url('/api/prot/x'), { headers: { Authorization: `Bearer ${token}` } });
    assertError(assert, r, 401, 'unauthenticated');
    assert.match(r.headers['www-authenticate'] || '', /^Bearer\b/, `${what}: WWW-Authenticate`);
  }
  assertError(assert, await get('/api/prot/x'), 401, 'unauthenticated');
  assertError(assert, await request(url('/api/prot/x'), { headers: { Authorization: `Basic ${Buffer.from('a:b').toString('base64')}` } }), 401, 'unauthenticated');
  assert.equal(up.calls().length, before, 'the upstream saw none of them');
});

test('auth optional: no token passes anonymously, a bad token is still refused', opts, async () => {
  let r = await get('/api/opt/x');
  assert.equal(r.status, 200);
  assert.equal(r.json.headers['x-user-id'], undefined);
  r = await get('/api/opt/x', user.access_token);
  assert.equal(r.json.headers['x-user-id'], user.user.id);
  assertError(assert, await get('/api/opt/x', signJwt(HS256, goodClaims(), crypto.randomBytes(32))), 401, 'unauthenticated');
});

test('roles: an admin route refuses a user (403) and admits an admin', opts, async () => {
  const before = up.calls().length;
  assertError(assert, await get('/api/admin/x', user.access_token), 403, 'permission_denied');
  assert.equal(up.calls().length, before);
  const r = await get('/api/admin/x', admin.access_token);
  assert.equal(r.status, 200, r.text);
  assert.equal(r.json.headers['x-user-role'], 'admin');
});

test('logout: the gateway refuses the session\'s token within 1 s', opts, async () => {
  const u = await registerUser(gw.url);
  assert.equal((await get('/api/prot/x', u.access_token)).status, 200);
  const out = await api(gw.url, 'POST', '/api/auth/logout', { token: u.access_token, body: {} });
  assert.ok([200, 204].includes(out.status), `logout: ${out.status} ${out.text}`);
  const t0 = Date.now();
  let status = 200;
  while (status === 200 && Date.now() - t0 < 3000) {
    status = (await get('/api/prot/x?tag=revoked', u.access_token)).status;
    if (status === 200) await sleep(25);
  }
  const took = Date.now() - t0;
  assert.equal(status, 401, 'refused eventually');
  assert.ok(took < 1000, `refused ${took} ms after the logout (bound: 1 s)`);
  // And stays refused; other sessions are not affected.
  assertError(assert, await get('/api/prot/x', u.access_token), 401, 'unauthenticated');
  revokedToken = u.access_token;
  assert.equal((await get('/api/prot/x', user.access_token)).status, 200);
});

test('revoking one session (DELETE /api/auth/sessions/{id}) is honoured at the edge too', opts, async () => {
  const u = await registerUser(gw.url);
  const second = await loginUser(gw.url, u.email);
  const sid = decodeJwt(second.access_token).payload.sid;
  const del = await api(gw.url, 'DELETE', `/api/auth/sessions/${sid}`, { token: u.access_token });
  assert.ok([200, 204].includes(del.status), `${del.status} ${del.text}`);
  await sleep(1000);
  assertError(assert, await get('/api/prot/x', second.access_token), 401, 'unauthenticated');
  assert.equal((await get('/api/prot/x', u.access_token)).status, 200, 'the other session still works');
});

test('a ban reaches the edge within 1 s (it revokes the user\'s sessions)', opts, async () => {
  const u = await registerUser(gw.url);
  assert.equal((await get('/api/prot/x', u.access_token)).status, 200);
  const ban = await api(gw.url, 'PATCH', `/api/auth/users/${u.user.id}`, { token: admin.access_token, body: { banned: true } });
  assert.equal(ban.status, 200, ban.text);
  const t0 = Date.now();
  let status = 200;
  while (status === 200 && Date.now() - t0 < 3000) {
    status = (await get('/api/prot/x', u.access_token)).status;
    if (status === 200) await sleep(25);
  }
  assert.equal(status, 401);
  assert.ok(Date.now() - t0 < 1000, `refused ${Date.now() - t0} ms after the ban`);
});

test('X-API-Key: a valid key is accepted where the route allows it, with the owner\'s identity', opts, async () => {
  const created = await api(gw.url, 'POST', '/api/auth/api-keys', { token: user.access_token, body: { name: 'gw bot' } });
  assert.equal(created.status, 201, created.text);
  const apiKey = created.json.key || created.json.api_key?.key;
  assert.equal(typeof apiKey, 'string', created.text);
  let r = await request(url('/api/keyed/x'), { headers: { 'X-API-Key': apiKey } });
  assert.equal(r.status, 200, r.text);
  assert.equal(r.json.headers['x-user-id'], user.user.id);
  // Where the route does not accept keys, a key is no credential.
  assertError(assert, await request(url('/api/prot/x'), { headers: { 'X-API-Key': apiKey } }), 401, 'unauthenticated');
  // An unknown key is refused without reaching the upstream.
  const before = up.calls().length;
  assertError(assert, await request(url('/api/keyed/x'), { headers: { 'X-API-Key': `${apiKey}x` } }), 401, 'unauthenticated');
  assertError(assert, await request(url('/api/keyed/x'), { headers: { 'X-API-Key': 'trk_nonsense' } }), 401, 'unauthenticated');
  assert.equal(up.calls().length, before);
  // A revoked key stops working once the cache entry expires (10 s by default; at most that).
  const id = created.json.id || created.json.api_key?.id;
  assert.equal((await api(gw.url, 'DELETE', `/api/auth/api-keys/${id}`, { token: user.access_token })).status, 204);
  r = await request(url('/api/keyed/x'), { headers: { 'X-API-Key': apiKey } });
  assert.ok([200, 401].includes(r.status));
});

test('requests through the gateway to auth keep working (register, login, me)', opts, async () => {
  const u = await registerUser(gw.url);
  const l = await loginUser(gw.url, u.email);
  const me = await api(gw.url, 'GET', '/api/auth/me', { token: l.access_token });
  assert.equal(me.status, 200, me.text);
  assert.equal((me.json.user || me.json).id, u.user.id);
});

test('a per-user limit counts each user separately', opts, async () => {
  const a = await registerUser(gw.url);
  const b = await registerUser(gw.url);
  for (let i = 0; i < 2; i++) assert.equal((await get('/api/peruser/x', a.access_token)).status, 200);
  const limited = await get('/api/peruser/x', a.access_token);
  assertError(assert, limited, 429, 'rate_limited');
  assert.match(limited.headers['retry-after'] || '', /^[1-9]\d*$/);
  assert.equal(limited.headers['ratelimit-limit'], '2');
  // Same client IP, another user: a fresh bucket.
  const other = await get('/api/peruser/x', b.access_token);
  assert.equal(other.status, 200, other.text);
  assert.equal(other.headers['ratelimit-remaining'], '1');
});

test('the access log line of an authenticated request carries the user id and the trace id', opts, async () => {
  const id = `gwauth-log-${Date.now()}`;
  const r = await get('/api/prot/logged', user.access_token, { 'X-Request-Id': id });
  assert.equal(r.status, 200);
  const line = await gw.waitAccess((e) => e.request_id === id);
  assert.equal(line.user_id, user.user.id);
  assert.equal(line.upstream, 'app');
  assert.equal(typeof line.upstream_ms, 'number');
  assert.equal(typeof line.duration_ms, 'number');
  const tp = /^00-([0-9a-f]{32})-/.exec(r.json.headers.traceparent || '');
  assert.ok(tp, 'the upstream got a traceparent');
  assert.equal(line.trace_id, tp[1], 'the logged trace is the one propagated');
  // The token itself is never logged.
  assert.ok(!gw.output().includes(user.access_token.split('.')[2]), 'no JWT signature in the gateway log');
});

test('a WebSocket route that requires auth: refused without a token, opened with one', opts, async () => {
  const wsUrl = `${gw.url.replace('http', 'ws')}/api/live/ws`;
  const attempt = (headers) =>
    new Promise((resolve) => {
      const ws = new WebSocket(wsUrl, { headers });
      ws.once('open', () => resolve({ ws, status: 101 }));
      ws.once('unexpected-response', (_req, res) => {
        resolve({ status: res.statusCode });
        ws.terminate();
      });
      ws.once('error', (e) => resolve({ error: e.message }));
    });
  const before = up.count((h) => h.upgrade);
  const anon = await attempt({});
  assert.equal(anon.status, 401, JSON.stringify(anon));
  const forged = await attempt({ Authorization: `Bearer ${signJwt(HS256, goodClaims(), crypto.randomBytes(32))}` });
  assert.equal(forged.status, 401);
  assert.equal(up.count((h) => h.upgrade), before, 'refused upgrades never reach the upstream');
  const ok = await attempt({ Authorization: `Bearer ${user.access_token}` });
  assert.equal(ok.status, 101, JSON.stringify(ok));
  const rec = await up.waitFor((h) => h.upgrade && h.path === '/api/live/ws', T(3000));
  assert.equal(rec.headers['x-user-id'], user.user.id);
  ok.ws.send('ping');
  const m = await new Promise((resolve) => ok.ws.once('message', resolve));
  assert.equal(String(m), 'ping');
  ok.ws.close();
});

test('auth down: the edge keeps serving valid tokens and refusing known revoked ones, and says so', opts, async () => {
  assert.ok(revokedToken, 'the logout test ran first');
  const port = auth.port;
  const mark = gw.logs.length;
  await auth.stop();
  const warn = await gw.waitLog((e) => e.msg === 'revocation feed unavailable' && gw.logs.indexOf(e) >= mark, T(5000));
  assert.equal(warn.level, 'warn');
  assert.equal((await get('/api/prot/x', user.access_token)).status, 200, 'fail open for tokens that were valid');
  assertError(assert, await get('/api/prot/x', revokedToken), 401, 'unauthenticated');
  let m = await request(gw.adminUrl + '/metrics');
  assert.match(m.text, /^auth_revocation_feed_up 0$/m);
  // An API key nobody has checked yet cannot be checked now: 503, not a guess.
  assertError(assert, await request(url('/api/keyed/x'), { headers: { 'X-API-Key': 'trk_never_seen_before_0123456789' } }), 503, 'unavailable');

  // auth back on the same port and data dir: the feed recovers.
  const mark2 = gw.logs.length;
  auth = await startService('auth', { dataDir: auth.dataDir, args: ['--jwt-secret', SECRET_HEX, '--port', String(port)] });
  assert.equal(auth.port, port);
  await gw.waitLog((e) => e.msg === 'revocation feed restored' && gw.logs.indexOf(e) >= mark2, T(5000));
  m = await request(gw.adminUrl + '/metrics');
  assert.match(m.text, /^auth_revocation_feed_up 1$/m);
  assertError(assert, await get('/api/prot/x', revokedToken), 401, 'unauthenticated');
});
