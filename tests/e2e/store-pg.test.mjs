// Services on PostgreSQL, black-box: a service started on a postgres:// --db
// creates its database, applies its migrations there, answers /readyz
// through the store pool, survives its pool's backends being terminated,
// keeps its schema across a restart; `trellis up --database-url` gives each
// service a database of its own (trellis_<name>) and refuses bad URLs; and
// the harness's TRELLIS_E2E_DB=postgres wiring puts services on the
// cluster. Needs TRELLIS_TEST_PG_URL (`make test` starts a throwaway
// cluster with scripts/pg-cluster.sh); skipped without it.
//
// Auth's handlers still use the worker's connection, which a service on
// PostgreSQL does not have (the pool owns them): until auth runs its work
// through tr_store_run, these tests use only what does not need them.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import { describe, test } from 'node:test';

import {
  E2E_DB,
  REPO_ROOT,
  T,
  TEST_PG_URL,
  pgDatabaseUrl,
  request,
  runCli,
  startService,
  startUp,
  tempDir,
  removeDir,
} from './lib/harness.mjs';

const skip = TEST_PG_URL ? false : 'TRELLIS_TEST_PG_URL is not set (scripts/pg-cluster.sh run ...)';
const opts = { timeout: T(60000), skip };

/** Runs SQL on the test cluster with psql; returns the rows as text lines. */
function psql(url, sql) {
  const r = spawnSync('psql', [url, '-XAtq', '-v', 'ON_ERROR_STOP=1', '-c', sql], {
    encoding: 'utf8',
  });
  if (r.status !== 0) throw new Error(`psql failed (${r.status}): ${r.stderr}`);
  return r.stdout.split('\n').filter((l) => l !== '');
}

const authMigrations = fs
  .readdirSync(path.join(REPO_ROOT, 'src/services/auth/migrations'))
  .map((f) => Number(f.slice(0, 4)))
  .filter((v, i, a) => v > 0 && a.indexOf(v) === i)
  .sort((a, b) => a - b);

let counter = 0;
function uniqueDb(tag) {
  return `e2e_${tag}_${process.pid}_${++counter}`;
}

function databaseExists(name) {
  return psql(pgDatabaseUrl('postgres'), `SELECT count(*) FROM pg_database WHERE datname = '${name}'`)[0] === '1';
}

async function waitFor(pred, ms, what) {
  const deadline = Date.now() + ms;
  for (;;) {
    if (await pred()) return;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

describe('a service on PostgreSQL', opts, () => {
  test('creates its database, migrates, answers /readyz through the pool', opts, async () => {
    const name = uniqueDb('auth');
    assert.equal(databaseExists(name), false);
    // No admin listener: it holds a connection of its own for its /readyz.
    const svc = await startService('auth', { args: ['--db', pgDatabaseUrl(name), '--db-pool', '2', '--admin-port', 'off'] });
    try {
      assert.equal(databaseExists(name), true);
      const versions = psql(pgDatabaseUrl(name), 'SELECT version FROM schema_migrations ORDER BY version');
      assert.deepEqual(versions.map(Number), authMigrations);
      const tables = psql(
        pgDatabaseUrl(name),
        "SELECT count(*) FROM information_schema.tables WHERE table_name IN ('users', 'sessions')",
      );
      assert.equal(tables[0], '2');
      for (let i = 0; i < 20; i++) {
        const r = await request(`${svc.url}/readyz`);
        assert.equal(r.status, 200, r.text);
      }
      // The pool holds exactly --db-pool connections (the migration one is closed).
      await waitFor(
        () =>
          psql(pgDatabaseUrl('postgres'), `SELECT count(*) FROM pg_stat_activity WHERE datname = '${name}'`)[0] === '2',
        T(10000),
        'two pool connections',
      );
      // Backends killed under it: the pool reconnects on next use (the
      // revocation feed's long poll keeps using it, so new backends may
      // appear at once: wait for the old ones to be gone).
      const pids = () => psql(pgDatabaseUrl('postgres'), `SELECT pid FROM pg_stat_activity WHERE datname = '${name}'`);
      const old = pids();
      psql(pgDatabaseUrl('postgres'), `SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '${name}'`);
      await waitFor(() => !pids().some((p) => old.includes(p)), T(10000), 'the terminated backends to go');
      for (let i = 0; i < 4; i++) {
        const r = await request(`${svc.url}/readyz`);
        assert.equal(r.status, 200, r.text);
      }
      // The URL (which may hold a password) is never logged.
      assert.ok(!svc.output().includes(pgDatabaseUrl(name)), 'database URL in the logs');
    } finally {
      await svc.stop();
    }
  });

  test('keeps its schema across a restart (migrations not applied twice)', opts, async () => {
    const name = uniqueDb('restart');
    const dataDir = tempDir('trellis-pg-restart-');
    try {
      const args = ['--db', pgDatabaseUrl(name)];
      let svc = await startService('auth', { args, dataDir });
      await svc.stop();
      assert.equal(svc.logs.filter((e) => e.msg === 'migration applied').length, authMigrations.length);
      svc = await startService('auth', { args, dataDir });
      try {
        assert.equal(svc.logs.filter((e) => e.msg === 'migration applied').length, 0);
        assert.equal((await request(`${svc.url}/readyz`)).status, 200);
        assert.equal(psql(pgDatabaseUrl(name), 'SELECT count(*) FROM schema_migrations')[0], String(authMigrations.length));
      } finally {
        await svc.stop();
      }
    } finally {
      removeDir(dataDir);
    }
  });

  test('services starting at once on one new database migrate it once', opts, async () => {
    const name = uniqueDb('race');
    const args = ['--db', pgDatabaseUrl(name)];
    const svcs = await Promise.all([1, 2, 3].map(() => startService('auth', { args })));
    try {
      const applied = svcs.flatMap((s) => s.logs.filter((e) => e.msg === 'migration applied'));
      assert.equal(applied.length, authMigrations.length);
      for (const s of svcs) assert.equal((await request(`${s.url}/readyz`)).status, 200);
    } finally {
      await Promise.all(svcs.map((s) => s.stop()));
    }
  });

  test('an unreachable server fails the start with a reason and no URL', opts, async () => {
    const url = 'postgres://trellis:sekrit@127.0.0.1:1/nothing';
    const dataDir = tempDir('trellis-pg-bad-');
    try {
      const r = await runCli(['serve', 'auth', '--port', '0', '--data', dataDir, '--db', url]);
      assert.equal(r.code, 1, r.stderr);
      assert.match(r.stderr, /cannot open database: cannot connect to PostgreSQL/);
      assert.ok(!(r.stdout + r.stderr).includes('sekrit'));
    } finally {
      removeDir(dataDir);
    }
  });

  test('trellis admin works on a PostgreSQL database and never prints its URL', opts, async () => {
    const name = uniqueDb('admin');
    const url = pgDatabaseUrl(name);
    const r = await runCli(['admin', 'create-user', '--db', url, '--email', 'Root@Example.test', '--password', 'correct horse battery staple', '--role', 'admin']);
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(psql(url, 'SELECT email, role, banned, approved FROM users'), ['root@example.test|admin|0|1']);
    const bad = await runCli(['admin', 'outbox', '--db', 'postgres://trellis:sekrit@127.0.0.1:1/x']);
    assert.notEqual(bad.code, 0);
    assert.match(bad.stderr, /cannot open the database/);
    assert.ok(!(bad.stdout + bad.stderr).includes('sekrit'));
  });

  test('--db-pool must be a positive count', opts, async () => {
    const dataDir = tempDir('trellis-pg-pool-');
    try {
      const r = await runCli(['serve', 'auth', '--port', '0', '--data', dataDir, '--db', pgDatabaseUrl(uniqueDb('pool')), '--db-pool', '0']);
      assert.equal(r.code, 2, r.stderr);
      assert.match(r.stderr, /--db-pool/);
    } finally {
      removeDir(dataDir);
    }
  });

  test('harness: TRELLIS_E2E_DB=postgres puts started services on the cluster', {
    ...opts,
    skip: skip || (E2E_DB !== 'postgres' && 'TRELLIS_E2E_DB is not postgres'),
  }, async () => {
    const svc = await startService('auth');
    try {
      assert.match(svc.dbUrl, /^postgres(ql)?:\/\//);
      const name = decodeURIComponent(new URL(svc.dbUrl).pathname.slice(1));
      assert.equal(databaseExists(name), true);
      assert.equal(psql(svc.dbUrl, 'SELECT count(*) FROM schema_migrations')[0], String(authMigrations.length));
    } finally {
      await svc.stop();
    }
  });
});

describe('trellis up --database-url', opts, () => {
  test('gives each service with a database its own trellis_<name> database', opts, async () => {
    // One cluster per test run: this test owns the trellis_* names in it.
    psql(pgDatabaseUrl('postgres'), 'DROP DATABASE IF EXISTS trellis_auth WITH (FORCE)');
    const up = await startUp({ only: 'auth', args: ['--database-url', TEST_PG_URL] });
    try {
      assert.equal(databaseExists('trellis_auth'), true);
      assert.equal(
        psql(pgDatabaseUrl('trellis_auth'), 'SELECT count(*) FROM schema_migrations')[0],
        String(authMigrations.length),
      );
      const auth = up.table().rows.find((r) => r.service === 'auth');
      assert.ok(auth, up.output());
      assert.equal((await request(`${auth.url}/readyz`)).status, 200);
      assert.equal(fs.existsSync(path.join(up.dataDir, 'auth.db')), false); // not on SQLite
    } finally {
      await up.stop();
      psql(pgDatabaseUrl('postgres'), 'DROP DATABASE IF EXISTS trellis_auth WITH (FORCE)');
    }
  });

  test('refuses a URL that is not postgres:// or that names a database', opts, async () => {
    for (const bad of ['sqlite:///tmp/x.db', 'postgres://u@127.0.0.1:1/mydb', 'mysql://h/']) {
      const r = await runCli(['up', '--database-url', bad, '--only', 'auth']);
      assert.equal(r.code, 2, `${bad}: ${r.stderr}`);
      assert.match(r.stderr, /--database-url/);
    }
  });
});
