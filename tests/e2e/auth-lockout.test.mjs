// Login lockout of the auth service (auth_policy.c, LOCKOUT): failures are
// counted per (account, client address) -- five lock that client out for
// the window -- and per account across clients, where past a higher
// ceiling every attempt waits an exponentially growing, capped delay. So an
// attacker elsewhere cannot lock the owner out; at most they delay them.
//
// Two clients are simulated by binding the client socket to 127.0.0.1 vs
// 127.0.0.2 (..5): the service counts the socket peer.
import assert from 'node:assert/strict';
import { test } from 'node:test';

import { PASSWORD, T, assertError, registerUser, request, sleep, uniqueEmail, useService } from './lib/harness.mjs';

const opts = { timeout: T(60000) };
// Defaults: 5 per (account, client), 20 per account, backoff 1s..1m.
const auth = useService('auth');
// A small ceiling so the backoff is reached quickly: 2 per pair, 3 per
// account, delays 1s, 2s, 4s, then capped at 4s.
const small = useService('auth', {
  args: [
    '--login-max-failures', '2',
    '--login-account-max-failures', '3',
    '--login-backoff-base', '1s',
    '--login-backoff-max', '4s',
  ],
});

/** POST /api/auth/login from the given local address. */
const loginFrom = (base, localAddress, email, password) =>
  request(`${base}/api/auth/login`, { method: 'POST', body: { email, password }, localAddress });

/** Repeats the attempt while it answers 429 (polling, bounded), and
 * resolves with the first other answer. A 429 records nothing, so polling
 * does not change what is counted. */
async function untilAdmitted(attempt, limitMs = T(15000)) {
  const deadline = Date.now() + limitMs;
  for (;;) {
    const r = await attempt();
    if (r.status !== 429) return r;
    assert.ok(Date.now() < deadline, `still 429 after ${limitMs} ms: ${r.text}`);
    await sleep(100);
  }
}

const retryAfter = (r) => {
  assertError(assert, r, 429, 'rate_limited');
  const ra = r.headers['retry-after'];
  assert.match(String(ra), /^\d+$/, `Retry-After is whole seconds (${ra})`);
  return Number(ra);
};

test('five failures from one client lock that client out, not the owner elsewhere', opts, async () => {
  const reg = await registerUser(auth.url);
  for (let i = 1; i <= 5; i++) {
    const r = await loginFrom(auth.url, '127.0.0.2', reg.email, `wrong password ${i}`);
    assertError(assert, r, 401, 'unauthenticated');
  }
  // The attacker's client is locked for the window, even with the right password.
  const locked = await loginFrom(auth.url, '127.0.0.2', reg.email, PASSWORD);
  const ra = retryAfter(locked);
  assert.ok(ra > 60 && ra <= 900, `locked for about the 15-minute window (${ra})`);
  // The owner, from their own client, is not.
  const owner = await loginFrom(auth.url, '127.0.0.1', reg.email, PASSWORD);
  assert.equal(owner.status, 200, owner.text);
  // Another client still gets honest answers (401, not 429).
  assertError(assert, await loginFrom(auth.url, '127.0.0.3', reg.email, 'wrong again'), 401, 'unauthenticated');
  // And the owner's success did not unlock the attacker.
  assertError(assert, await loginFrom(auth.url, '127.0.0.2', reg.email, PASSWORD), 429, 'rate_limited');
});

test('an unknown e-mail is counted and answered exactly like a known one', opts, async () => {
  const known = await registerUser(auth.url);
  const ghost = uniqueEmail('ghost');
  const answers = { known: [], ghost: [] };
  for (let i = 1; i <= 6; i++) {
    answers.known.push(await loginFrom(auth.url, '127.0.0.4', known.email, `wrong ${i}`));
    answers.ghost.push(await loginFrom(auth.url, '127.0.0.4', ghost, `wrong ${i}`));
  }
  const shape = (r) => [r.status, r.json?.error?.code, r.json?.error?.message, r.headers['retry-after'] !== undefined];
  assert.deepEqual(answers.known.map(shape), answers.ghost.map(shape));
  assert.deepEqual(
    answers.known.map((r) => r.status),
    [401, 401, 401, 401, 401, 429],
  );
});

test('past the account ceiling every client waits a growing, capped delay -- never the window', opts, async () => {
  const reg = await registerUser(small.url);
  const wrong = (ip) => () => loginFrom(small.url, ip, reg.email, 'not the password');

  // Two failures lock 127.0.0.2 (pair limit 2); one from .3 reaches the
  // account ceiling of 3.
  assertError(assert, await wrong('127.0.0.2')(), 401, 'unauthenticated');
  assertError(assert, await wrong('127.0.0.2')(), 401, 'unauthenticated');
  assertError(assert, await wrong('127.0.0.3')(), 401, 'unauthenticated');
  assert.ok(retryAfter(await wrong('127.0.0.2')()) > 60, '.2 is locked for its window');

  // The owner is only delayed by the base delay, then gets in.
  const delayed = await loginFrom(small.url, '127.0.0.1', reg.email, PASSWORD);
  assert.equal(retryAfter(delayed), 1, 'first delay past the ceiling: 1 s');
  const owner = await untilAdmitted(() => loginFrom(small.url, '127.0.0.1', reg.email, PASSWORD));
  assert.equal(owner.status, 200, owner.text);

  // Each further failure doubles the delay: 2 s, 4 s, then the 4 s cap.
  const seen = [];
  for (const ip of ['127.0.0.4', '127.0.0.5', '127.0.0.6']) {
    assertError(assert, await untilAdmitted(wrong(ip)), 401, 'unauthenticated');
    seen.push(retryAfter(await wrong(ip)()));
  }
  assert.deepEqual(seen, [2, 4, 4]);
});
