// JWT verification of the auth service against forged tokens: the service
// runs with a secret the test knows, so the test can sign tokens that are
// correct except for one defect each, and every one must be refused.
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import { test } from 'node:test';

import {
  T,
  api,
  assertError,
  b64url,
  decodeJwt,
  registerUser,
  signJwt,
  useService,
} from './lib/harness.mjs';

const opts = { timeout: T(30000) };
const SECRET_HEX = crypto.randomBytes(32).toString('hex');
let reg; // a registered user with a live session
let claims; // the claims of its real access token
let key; // the HMAC key as the service uses it (decided by the control test)

const auth = useService('auth', { args: ['--jwt-secret', SECRET_HEX] }, {
  async started({ url }) {
    reg = await registerUser(url);
    claims = decodeJwt(reg.access_token).payload;
    // The secret may be used as its text or as the bytes it spells in hex;
    // whichever reproduces the real token's signature is the key.
    const { header, signature } = decodeJwt(reg.access_token);
    const input = reg.access_token.split('.').slice(0, 2).join('.');
    for (const k of [Buffer.from(SECRET_HEX, 'utf8'), Buffer.from(SECRET_HEX, 'hex')]) {
      const sig = crypto.createHmac('sha256', k).update(input).digest('base64url');
      if (header.alg === 'HS256' && sig === signature) key = k;
    }
  },
});

const me = (token) => api(auth.url, 'GET', '/api/auth/me', { token });
const now = () => Math.floor(Date.now() / 1000);
const HS256 = { alg: 'HS256', typ: 'JWT' };

/** Valid claims for the live session, with a fresh jti. */
function goodClaims(over = {}) {
  const t = now();
  return { ...claims, jti: crypto.randomUUID(), iat: t, nbf: t, exp: t + 600, ...over };
}

async function refused(token) {
  assertError(assert, await me(token), 401, 'unauthenticated');
  assertError(assert, await api(auth.url, 'GET', '/api/auth/validate', { token }), 401, 'unauthenticated');
}

test('control: the service signs with --jwt-secret and accepts a token the test signs', opts, async () => {
  assert.ok(key, '--jwt-secret is the HS256 key of the tokens the service issues');
  const r = await me(signJwt(HS256, goodClaims(), key));
  assert.equal(r.status, 200, r.text);
});

test('alg "none" (any spelling, with or without a signature): 401', opts, async () => {
  for (const alg of ['none', 'None', 'NONE', 'nOnE']) {
    const unsigned = signJwt({ alg, typ: 'JWT' }, goodClaims(), null);
    await refused(unsigned);
    // Some libraries ignore a signature they are told not to expect.
    const withSig = `${unsigned}${signJwt(HS256, goodClaims(), key).split('.')[2]}`;
    await refused(withSig);
  }
});

test('header without alg: 401', opts, async () => {
  await refused(signJwt({ typ: 'JWT' }, goodClaims(), key, 'sha256'));
});

test('HS256 signed with another secret: 401', opts, async () => {
  await refused(signJwt(HS256, goodClaims(), crypto.randomBytes(32)));
  await refused(signJwt(HS256, goodClaims(), Buffer.from(SECRET_HEX.replace(/^./, (c) => (c === 'a' ? 'b' : 'a')))));
});

test('another algorithm in the header: 401 (RS256, ES256, HS384, HS512)', opts, async () => {
  // Algorithm confusion: an HMAC made with the real secret under another name.
  await refused(signJwt({ alg: 'RS256', typ: 'JWT' }, goodClaims(), key, 'sha256'));
  await refused(signJwt({ alg: 'ES256', typ: 'JWT' }, goodClaims(), key, 'sha256'));
  await refused(signJwt({ alg: 'HS384', typ: 'JWT' }, goodClaims(), key));
  await refused(signJwt({ alg: 'HS512', typ: 'JWT' }, goodClaims(), key));
  // And a genuine RS256 token from a key pair the service never saw.
  const { privateKey } = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
  const input = `${b64url(JSON.stringify({ alg: 'RS256', typ: 'JWT' }))}.${b64url(JSON.stringify(goodClaims()))}`;
  const sig = crypto.sign('RSA-SHA256', Buffer.from(input), privateKey);
  await refused(`${input}.${b64url(sig)}`);
});

test('expired token signed with the real secret: 401', opts, async () => {
  const t = now();
  await refused(signJwt(HS256, goodClaims({ iat: t - 7200, nbf: t - 7200, exp: t - 3600 }), key));
});

test('token not yet valid (nbf in the future) signed with the real secret: 401', opts, async () => {
  const t = now();
  await refused(signJwt(HS256, goodClaims({ iat: t, nbf: t + 3600, exp: t + 7200 }), key));
});

test('wrong audience or issuer: 401', opts, async () => {
  await refused(signJwt(HS256, goodClaims({ aud: 'someone-else' }), key));
  await refused(signJwt(HS256, goodClaims({ aud: ['someone-else'] }), key));
  await refused(signJwt(HS256, goodClaims({ iss: 'https://evil.example' }), key));
});

test('token missing exp, aud or iss: 401', opts, async () => {
  for (const k of ['exp', 'aud', 'iss']) {
    const c = goodClaims();
    delete c[k];
    await refused(signJwt(HS256, c, key));
  }
});

test('tampered payload with the original signature: 401', opts, async () => {
  const [h, , s] = reg.access_token.split('.');
  const forged = `${h}.${b64url(JSON.stringify({ ...claims, role: 'admin' }))}.${s}`;
  await refused(forged);
});

// Tokens are checked without a database read (kit/authn.h): what is signed
// with the key is trusted up to the revocation set. A handler that needs
// the caller's account still finds none for a subject that does not exist.
test('validly signed token for a user that does not exist: 401 where the account is read', opts, async () => {
  const ghost = signJwt(HS256, goodClaims({ sub: '01890000-0000-7000-8000-0000000000aa', sid: '01890000-0000-7000-8000-000000000000' }), key);
  assertError(assert, await me(ghost), 401, 'unauthenticated');
});

test('validly signed token for a logged-out session: 401', opts, async () => {
  const other = await registerUser(auth.url);
  const c = decodeJwt(other.access_token).payload;
  assert.equal((await api(auth.url, 'POST', '/api/auth/logout', { token: other.access_token })).status, 204);
  const t = now();
  await refused(signJwt(HS256, { ...c, jti: crypto.randomUUID(), iat: t, nbf: t, exp: t + 600 }, key));
});
