// `trellis up` (src/cli/up.c) at the edges: a child that does not stop on
// SIGTERM (here: stopped with SIGSTOP) gets SIGKILL once --stop-timeout has
// passed, and the supervisor still exits 0 leaving no process behind; a
// second signal during the stop changes nothing; a port held by a server
// that accepts and never answers does not keep the supervisor from stopping
// (its readiness probe gives up); and every bad option is exit 2 with the
// reason on stderr, before anything is started.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import { test } from 'node:test';

import { T, TRELLIS_BIN, freePortBase, runCli, startUp, tempDir, waitExit } from './lib/harness.mjs';

const opts = { timeout: T(40000) };

const alive = (pid) => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

test('--stop-timeout 1: a child that ignores SIGTERM is SIGKILLed after 1 s; up exits 0', opts, async () => {
  const up = await startUp({ only: 'auth', args: ['--stop-timeout', '1'] });
  const row = up.table().rows.find((r) => r.service === 'auth');
  assert.ok(row, up.output());
  try {
    process.kill(row.pid, 'SIGSTOP'); // a stopped process cannot act on SIGTERM
    const t0 = Date.now();
    const mark = up.mark();
    up.proc.kill('SIGINT');
    await up.waitLine(/SIGINT received, stopping services/, T(5000), mark);
    up.proc.kill('SIGTERM'); // ignored: already stopping
    const r = await waitExit(up.proc, T(15000));
    const elapsed = Date.now() - t0;
    assert.equal(r.code, 0, up.output());
    assert.ok(elapsed >= 900, `SIGKILL came only after the timeout (${elapsed} ms)`);
    await up.waitLine(/auth did not stop in time; sending SIGKILL/, T(1000), mark);
    await up.waitLine(/auth stopped \(signal 9\)/, T(1000), mark);
    await up.waitLine(/^trellis up: stopped$/, T(1000), mark);
    assert.ok(!up.stdoutLines.slice(mark.stdout).some((l) => /SIGTERM received/.test(l)), 'the second signal is not acted on');
    assert.ok(!alive(row.pid), 'the child is gone');
  } finally {
    if (alive(row.pid)) process.kill(row.pid, 'SIGKILL');
    await up.stop({ check: false });
  }
});

test('a child that stops in time is not killed: exit code 0 reported, no SIGKILL', opts, async () => {
  const up = await startUp({ only: 'auth', args: ['--stop-timeout=5'] });
  const mark = up.mark();
  const r = await up.stop();
  assert.equal(r.code, 0);
  await up.waitLine(/auth stopped \(exit code 0\)/, T(1000), mark);
  assert.ok(!up.output().includes('sending SIGKILL'), up.output());
});

test('a port held by a listener that never answers: the child fails, SIGTERM still stops up', opts, async () => {
  const base = await freePortBase();
  const silent = new Set();
  const holder = net.createServer((sock) => silent.add(sock)); // accepts, never answers
  await new Promise((resolve, reject) => {
    holder.once('error', reject);
    holder.listen({ port: base + 1, host: '127.0.0.1' }, resolve);
  });
  const up = spawn(TRELLIS_BIN, ['up', '--only', 'auth', '--port-base', String(base), '--data', tempDir('trellis-upheld-')], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  up.stdout.setEncoding('utf8').on('data', (c) => (out += c));
  up.stderr.setEncoding('utf8').on('data', (c) => (out += c));
  try {
    // The child says why it failed, and the supervisor's probe has reached
    // the silent listener.
    const deadline = Date.now() + T(15000);
    while (!(/cannot listen on 127\.0\.0\.1:\d+: Address already in use/.test(out) && silent.size > 0)) {
      assert.ok(Date.now() < deadline, `no bind failure and probe seen:\n${out}`);
      await new Promise((r) => setTimeout(r, 50));
    }
    assert.doesNotMatch(out, /trellis up: ready/, 'not ready: nothing of ours listens');
    const t0 = Date.now();
    up.kill('SIGTERM');
    const r = await waitExit(up, T(10000));
    assert.equal(r.code, 0, out);
    assert.ok(Date.now() - t0 < T(5000), `stopped within the probe timeout (${Date.now() - t0} ms)`);
    assert.match(out, /trellis up: stopped/);
  } finally {
    if (up.exitCode === null && up.signalCode === null) up.kill('SIGKILL');
    for (const s of silent) s.destroy();
    await new Promise((resolve) => holder.close(resolve));
  }
});

test('bad options: exit 2 with the reason, nothing started', opts, async () => {
  const dir = tempDir('trellis-upargs-');
  const file = `${dir}/a-file`;
  fs.writeFileSync(file, '');
  const cases = [
    [['--port-base', '0'], /invalid --port-base '0'/],
    [['--port-base', 'abc'], /invalid --port-base 'abc'/],
    [['--port-base', '65500'], /invalid --port-base '65500'/],
    [['--port-base'], /invalid --port-base ''/],
    [['--stop-timeout', '0'], /invalid --stop-timeout '0'/],
    [['--stop-timeout', '5s'], /invalid --stop-timeout '5s'/],
    [['--stop-timeout', '3601'], /invalid --stop-timeout '3601'/],
    [['--only', 'auth,nosuch'], /unknown service 'nosuch' in --only/],
    [['--frobnicate'], /unknown option '--frobnicate'/],
    [['--data', ''], /empty --data or --host/],
    [['--host', ''], /empty --data or --host/],
    [['--blueprint', ''], /invalid --blueprint ''/],
    [['--blueprint', `${dir}/missing.json`], /no blueprint/],
    [['--data', `${file}/sub`], /cannot create/],
  ];
  for (const [args, why] of cases) {
    const argv = ['up', ...(args.includes('--data') ? [] : ['--data', `${dir}/data`]), ...args];
    const r = await runCli(argv, { timeoutMs: T(5000) });
    assert.equal(r.code, 2, `${args.join(' ')}: ${r.code}\n${r.stdout}${r.stderr}`);
    assert.match(r.stderr, why, args.join(' '));
    assert.doesNotMatch(r.stdout, /starting/, `${args.join(' ')}: nothing started`);
  }
  const help = await runCli(['up', '--help']);
  assert.equal(help.code, 0);
  assert.match(help.stdout, /usage: trellis up .*--port-base N/);
  assert.match(help.stdout, /--stop-timeout SECONDS/);
});
