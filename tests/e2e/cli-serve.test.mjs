// `trellis serve` refusing to start (src/kit/service.c, src/gateway/gateway.c
// option checks): a bad option value is exit 2 with the option named, a
// start failure of the environment (data dir, database, port taken) is
// exit 1, both before "listening"; --help lists the options and exits 0.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { test } from 'node:test';

import { T, runCli, tempDir } from './lib/harness.mjs';

const opts = { timeout: T(60000) };

async function serve(svc, dir, args) {
  return runCli(['serve', svc, '--port', '0', '--data', path.join(dir, 'data'), ...args], { timeoutMs: T(10000) });
}

function assertRefused(r, code, why, what) {
  const out = `${r.stdout}${r.stderr}`;
  assert.equal(r.code, code, `${what}: exit ${r.code}\n${out}`);
  assert.match(out, why, what);
  assert.doesNotMatch(out, /"msg":"listening"/, `${what}: never listened`);
}

test('auth: bad option values are exit 2 naming the option', opts, async () => {
  const dir = tempDir('trellis-serveargs-');
  const cases = [
    [['--log-level', 'loud'], /invalid --log-level/],
    [['--tls-cert', '/etc/hostname'], /--tls-cert and --tls-key go together/],
    [['--tls-key', '/etc/hostname'], /--tls-cert and --tls-key go together/],
    [['--tls-cert', `${dir}/no.pem`, '--tls-key', `${dir}/no.key`], /cannot read the --tls-cert or --tls-key file/],
  ];
  for (const [args, why] of cases) assertRefused(await serve('auth', dir, args), 2, why, args.join(' '));
});

test('server options out of range: exit 2 naming the option (and the bound)', opts, async () => {
  const dir = tempDir('trellis-srvargs-');
  const cases = [
    [['--port', '70000'], /invalid value for --port \(at most 65535\)/],
    [['--workers', '257'], /invalid value for --workers \(at most 256\)/],
    [['--workers', '0'], /invalid value for --workers/],
    [['--max-connections', '0'], /invalid value for --max-connections/],
    [['--max-header-bytes', '100'], /invalid value for --max-header-bytes/],
    [['--max-body-bytes', '-1'], /invalid value for --max-body-bytes/],
    [['--header-timeout', '0'], /invalid value for --header-timeout/],
    [['--idle-timeout', '0ms'], /invalid value for --idle-timeout/],
    [['--drain-timeout', 'soon'], /invalid value for --drain-timeout/],
    [['--tls-cert', '/etc/hostname', '--tls-key', `${dir}/no.key`], /cannot read the --tls-cert or --tls-key file/],
  ];
  for (const [args, why] of cases) assertRefused(await serve('auth', dir, args), 2, why, args.join(' '));
  // Without --port, port-base + the service's offset must be a port.
  const r = await runCli(['serve', 'auth', '--port-base', '65535', '--data', path.join(dir, 'data')], { timeoutMs: T(10000) });
  assertRefused(r, 2, /invalid value for --port-base \(at most 65534\)/, '--port-base 65535');
});

test('a database that cannot be opened or is not a database: exit 1 with the reason', opts, async () => {
  const dir = tempDir('trellis-servedb-');
  const garbage = path.join(dir, 'garbage');
  fs.mkdirSync(garbage);
  fs.writeFileSync(path.join(garbage, 'auth.db'), Buffer.alloc(8192, 0x5a));
  const cases = [
    [['--db', 'nosuch://x'], /cannot open database: unsupported database URL scheme/],
    [['--db', `sqlite://${dir}/no/such/dir/x.db`], /cannot open database: cannot open/],
  ];
  for (const [args, why] of cases) assertRefused(await serve('auth', dir, args), 1, why, args.join(' '));
  const r = await runCli(['serve', 'auth', '--port', '0', '--data', garbage], { timeoutMs: T(10000) });
  assertRefused(r, 1, /cannot open database: .*not a database/, 'a file that is not SQLite');
});

test('gateway: bad option values and routes files are exit 2 naming the problem', opts, async () => {
  const dir = tempDir('trellis-gwargs-');
  const bad = path.join(dir, 'bad.json');
  fs.writeFileSync(bad, '{bad');
  const cases = [
    [['--trust-forwarded', 'maybe'], /invalid --trust-forwarded/],
    [['--cors-credentials', 'perhaps'], /invalid --cors-credentials/],
    [['--cors-max-age', '2d'], /invalid --cors-max-age/],
    [['--api-key-cache-ttl', '2h'], /invalid --api-key-cache-ttl/],
    [['--jwt-leeway', '10m'], /invalid --jwt-leeway/],
    [['--auth-url', 'ftp://x'], /invalid --auth-url/],
    [['--port-base', '0'], /invalid --port-base/],
    [['--upstream-host='], /invalid --upstream-host/],
    [['--routes', path.join(dir, 'missing.json')], /invalid routes: .*missing\.json/],
    [['--routes', bad], /invalid routes: .*line 1/],
    [['--cors-origins', 'notaurl'], /--cors-origins: .*notaurl.* is not an origin/],
    [['--redis-url', 'http://x'], /invalid rate-limit options/],
  ];
  for (const [args, why] of cases) assertRefused(await serve('gateway', dir, args), 2, why, args.join(' '));
});

test('a data dir that cannot be created, and a port already taken: exit 1', opts, async () => {
  const dir = tempDir('trellis-servefail-');
  const file = path.join(dir, 'a-file');
  fs.writeFileSync(file, '');
  const r = await runCli(['serve', 'auth', '--port', '0', '--data', path.join(file, 'sub')], { timeoutMs: T(10000) });
  assertRefused(r, 1, /cannot create data directory .*Not a directory/, 'data under a file');

  const holder = net.createServer();
  await new Promise((resolve) => holder.listen({ port: 0, host: '127.0.0.1' }, resolve));
  try {
    const { port } = holder.address();
    for (const svc of ['auth', 'gateway']) {
      const t = await runCli(['serve', svc, '--port', String(port), '--data', path.join(dir, 'data')], { timeoutMs: T(10000) });
      assertRefused(t, 1, new RegExp(`cannot listen on 127\\.0\\.0\\.1:${port}: Address already in use`), `${svc} on a taken port`);
    }
  } finally {
    await new Promise((resolve) => holder.close(resolve));
  }
});

test('serve <service> --help (or -h) lists the options and exits 0', opts, async () => {
  for (const [svc, flag] of [['auth', '--help'], ['gateway', '-h']]) {
    const r = await runCli(['serve', svc, flag]);
    assert.equal(r.code, 0, r.stderr);
    const text = r.stdout + r.stderr;
    assert.match(text, /--port\b/);
    assert.match(text, /--data\b/);
    assert.match(text, svc === 'auth' ? /--refresh-ttl\b/ : /--routes\b/);
  }
});
