// `trellis admin` (src/cli/admin.c) on a live auth service's data dir:
// create-user with the password from stdin ("--password -"), then a login
// with it over HTTP; its usage errors (exit 2) and refusals (exit 1); and
// `admin outbox`, which prints the undelivered messages (the password-reset
// mails of POST /api/auth/password/forgot) one JSON object per line, newest
// first, filtered by --recipient.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { test } from 'node:test';

import {
  FAST_ARGON2_ENV,
  PASSWORD,
  T,
  TRELLIS_BIN,
  api,
  assertUser,
  engineArgs,
  loginUser,
  registerUser,
  runCli,
  tempDir,
  uniqueEmail,
  useService,
} from './lib/harness.mjs';

const opts = { timeout: T(30000) };
const auth = useService('auth');

/** Runs `trellis admin ...args` with input on its stdin (closed after it). */
function admin(args, input = '') {
  return new Promise((resolve, reject) => {
    const env = { ...process.env, ...FAST_ARGON2_ENV };
    for (const k of Object.keys(env)) if (k.startsWith('TRELLIS_') && !(k in FAST_ARGON2_ENV)) delete env[k];
    const p = spawn(TRELLIS_BIN, ['admin', ...args], { env, stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    p.stdout.setEncoding('utf8').on('data', (c) => (stdout += c));
    p.stderr.setEncoding('utf8').on('data', (c) => (stderr += c));
    const timer = setTimeout(() => {
      p.kill('SIGKILL');
      reject(new Error(`trellis admin ${args.join(' ')} did not finish\n${stdout}${stderr}`));
    }, T(20000));
    p.on('error', reject);
    p.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
    p.stdin.on('error', () => {});
    p.stdin.end(input);
  });
}

// auth's database: its SQLite file in the data dir, or (TRELLIS_E2E_DB=postgres)
// the PostgreSQL database the harness gave the running auth.
const data = () => ['--data', auth.svc.dataDir, ...engineArgs('auth', auth.svc.dataDir)];

test('create-user --password - reads the password from stdin; the account logs in with it', opts, async () => {
  const email = uniqueEmail('stdin');
  const secret = 'a password only stdin knows 123';
  const r = await admin(['create-user', '--email', email, '--password', '-', '--role', 'moderator', '--name', 'Mod', ...data()], `${secret}\r\n`);
  assert.equal(r.code, 0, r.stderr);
  const user = JSON.parse(r.stdout.trim());
  assertUser(assert, user.user ?? user, { email, role: 'moderator', name: 'Mod' });
  assert.ok(!r.stdout.includes(secret), 'the password is not echoed');
  const login = await loginUser(auth.url, email, secret);
  assert.equal(login.user.role, 'moderator');
  // The line ending was not part of the password.
  const wrong = await api(auth.url, 'POST', '/api/auth/login', { body: { email, password: `${secret}\r` } });
  assert.equal(wrong.status, 401);
});

test('create-user --password - with nothing on stdin is a usage error (2)', opts, async () => {
  const r = await admin(['create-user', '--email', uniqueEmail('empty'), '--password', '-', ...data()], '');
  assert.equal(r.code, 2);
  assert.match(r.stderr, /no password on stdin/);
});

test('create-user: the --flag=value form works too', opts, async () => {
  const email = uniqueEmail('eq');
  const r = await admin(['create-user', `--email=${email}`, `--password=${PASSWORD}`, '--role=verified_user', `--data=${auth.svc.dataDir}`, ...engineArgs('auth', auth.svc.dataDir).map((a, i, l) => (i % 2 ? null : `${a}=${l[i + 1]}`)).filter(Boolean)]);
  assert.equal(r.code, 0, r.stderr);
  assert.equal((await loginUser(auth.url, email)).user.role, 'verified_user');
});

test('create-user refuses an unknown role, a weak password and a taken e-mail (exit 1)', opts, async () => {
  const taken = await registerUser(auth.url);
  const cases = [
    [['--email', uniqueEmail('role'), '--password', PASSWORD, '--role', 'superuser'], /role/i],
    [['--email', uniqueEmail('weak'), '--password', 'short'], /password/i],
    [['--email', 'not-an-email', '--password', PASSWORD], /e-?mail/i],
    [['--email', taken.email, '--password', PASSWORD], /exists|taken|already/i],
  ];
  for (const [args, why] of cases) {
    const r = await admin(['create-user', ...args, ...data()]);
    assert.equal(r.code, 1, `${args.join(' ')}: ${r.code} ${r.stderr}`);
    assert.match(r.stderr, why, args.join(' '));
    assert.equal(r.stdout, '', 'nothing on stdout');
  }
});

test('usage errors exit 2 with the reason on stderr', opts, async () => {
  const cases = [
    [[], /usage: trellis admin/],
    [['frobnicate'], /unknown command 'frobnicate'/],
    [['create-user', '--email', uniqueEmail('x')], /--email and --password are required/],
    [['create-user', '--email'], /--email needs a value/],
    [['create-user', 'stray'], /unexpected argument 'stray'/],
    [['create-user', '--colour', 'red'], /unknown option '--colour'/],
    [['outbox', '--email', 'a@b.test'], /unknown option '--email'/],
  ];
  for (const [args, why] of cases) {
    const r = await runCli(['admin', ...args]);
    assert.equal(r.code, 2, `${args.join(' ')}: ${r.code} ${r.stderr}`);
    assert.match(r.stderr, why, args.join(' '));
  }
  const help = await runCli(['admin', '--help']);
  assert.equal(help.code, 0);
  assert.match(help.stdout, /create-user --email E --password P\|-/);
  assert.match(help.stdout, /outbox \[--recipient EMAIL\]/);
});

test('a database that cannot be opened is exit 1, not a crash', opts, async () => {
  const dir = tempDir('trellis-admin-');
  for (const args of [
    ['outbox', '--db', 'sqlite:///nonexistent-dir/deeper/auth.db'],
    ['outbox', '--db', 'nosuchengine://x'],
    ['create-user', '--email', uniqueEmail('db'), '--password', PASSWORD, '--db', `sqlite://${dir}/no/such/dir/auth.db`],
  ]) {
    const r = await admin(args);
    assert.equal(r.code, 1, `${args.join(' ')}: ${r.code} ${r.stderr}`);
    assert.match(r.stderr, /cannot open|failed/, args.join(' '));
  }
});

test('outbox prints the undelivered reset mails, newest first, one JSON per line; --recipient filters', opts, async () => {
  const a = await registerUser(auth.url);
  const b = await registerUser(auth.url);
  for (const u of [a, b, a]) {
    const r = await api(auth.url, 'POST', '/api/auth/password/forgot', { body: { email: u.email } });
    assert.equal(r.status, 202, r.text);
  }
  // /password/forgot answers before it writes (its work follows 10-30 ms
  // later, in no fixed order): wait for the three messages.
  let all;
  let mine = [];
  for (const t0 = Date.now(); mine.length < 3 && Date.now() - t0 < T(5000); ) {
    all = await admin(['outbox', ...data()]);
    assert.equal(all.code, 0, all.stderr);
    const lines = all.stdout.trim() ? all.stdout.trim().split('\n').map((l) => JSON.parse(l)) : [];
    mine = lines.filter((m) => m.recipient === a.email || m.recipient === b.email);
  }
  assert.equal(mine.length, 3, all.stdout);
  assert.deepEqual(mine.map((m) => m.recipient).sort(), [a.email, a.email, b.email].sort());
  const ids = mine.map((m) => m.id);
  assert.deepEqual(ids, [...ids].sort().reverse(), 'newest first (ids are UUIDv7)');
  for (const m of mine) {
    assert.equal(typeof m.id, 'string');
    assert.equal(typeof m.kind, 'string');
    assert.ok(m.payload && typeof m.payload === 'object', `payload is the message JSON: ${JSON.stringify(m)}`);
    assert.match(m.created_at, /^\d{4}-\d{2}-\d{2}T/);
  }
  // Stored lowercased and trimmed; the filter is applied the same way.
  const only = await admin(['outbox', '--recipient', `  ${a.email.toUpperCase()} `, ...data()]);
  assert.equal(only.code, 0, only.stderr);
  const onlyLines = only.stdout.trim().split('\n').map((l) => JSON.parse(l));
  assert.equal(onlyLines.length, 2);
  assert.ok(onlyLines.every((m) => m.recipient === a.email));
  const none = await admin(['outbox', '--recipient', uniqueEmail('nobody'), ...data()]);
  assert.equal(none.code, 0);
  assert.equal(none.stdout, '', 'no message, no output');
});
