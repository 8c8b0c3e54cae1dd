// The host dialer refuses the parent instance's own addresses, global ones included: a compromised enclave
// asking for the parent's own global IPv6 (or public IPv4 on an interface) would reach whatever the parent binds
// to :: or 0.0.0.0, past its security groups. Run in a network namespace the test creates (root only): a dummy
// interface (a veth end) holds a global IPv6 and IPv4 address, a server listens on both, and the dialer — in that namespace,
// reached over a UNIX socket — is asked for each; another global address, not the namespace's, is still dialled.
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { EgressError } from '../../src/egress/errors.ts';
import { openFlow } from '../../src/egress/flow-client.ts';

const run = promisify(execFile);
const isRoot = process.getuid?.() === 0;
const OWN6 = '2a05:d018::77';
const OWN4 = '52.95.110.77';
const OTHER4 = '52.95.110.78';
const PORT = 8443;

describe.skipIf(!isRoot)('host dialer and the parent\'s own addresses', () => {
  const ns = `egown-${randomBytes(3).toString('hex')}`;
  let dir: string;
  let sock: string;
  let child: ChildProcess | undefined;

  beforeAll(async () => {
    dir = mkdtempSync(path.join(os.tmpdir(), 'egress-own-'));
    sock = path.join(dir, 'dialer.sock');
    for (const step of [
      ['netns', 'add', ns],
      ['-n', ns, 'link', 'set', 'lo', 'up'],
      ['-n', ns, 'link', 'add', 'own0', 'type', 'veth', 'peer', 'name', 'own1'],
      ['-n', ns, 'addr', 'add', `${OWN4}/32`, 'dev', 'own0'],
      ['-n', ns, '-6', 'addr', 'add', `${OWN6}/128`, 'dev', 'own0', 'nodad'],
      ['-n', ns, 'link', 'set', 'own0', 'up'],
      ['-n', ns, 'link', 'set', 'own1', 'up'],
      // OTHER4 is routed out of own0, to a peer end with no address: a global address that is not the parent's.
      ['-n', ns, 'route', 'add', `${OTHER4}/32`, 'dev', 'own0'],
    ]) await run('ip', step);
    const dialer = pathToFileURL(path.resolve('src/host/egress-dialer.ts')).href;
    const script = `
      const net = require('node:net');
      const serve = (host) => new Promise((r) => net.createServer((s) => { s.on('error', () => {}); s.end('parent service\\n'); }).listen(${PORT}, host, r));
      Promise.all([serve('${OWN4}'), serve('${OWN6}')])
        .then(() => import(${JSON.stringify(dialer)}))
        .then((m) => m.startEgressDialer({ listen: { kind: 'unix', path: ${JSON.stringify(sock)} }, resolvers: [] }))
        .then(() => console.log('ready'), (e) => { console.error(e); process.exit(1); });`;
    child = spawn('ip', ['netns', 'exec', ns, process.execPath, '--import', 'tsx', '-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
    await new Promise<void>((resolve, reject) => {
      let out = '';
      child!.stdout!.on('data', (c: Buffer) => {
        out += c.toString();
        if (out.includes('ready')) resolve();
      });
      child!.once('exit', (code) => reject(new Error(`the dialer in ${ns} exited (${code})`)));
    });
  }, 60_000);

  afterAll(async () => {
    child?.kill('SIGKILL');
    await run('ip', ['netns', 'del', ns]).catch(() => {});
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  const ask = (ip: string): Promise<unknown> =>
    openFlow(() => new Promise((resolve, reject) => {
      const s = net.connect(sock, () => resolve(s)).once('error', reject);
    }), { ip, port: PORT, timeoutMs: 2_000, name: '' }).then(
      (stream) => {
        stream.destroy();
        return 'connected';
      },
      (e: unknown) => e,
    );

  it('refuses its global IPv6 and IPv4 interface addresses, and still dials another global address', async () => {
    for (const ip of [OWN6, OWN4, `::ffff:${OWN4}`]) {
      const err = await ask(ip);
      expect(err).toBeInstanceOf(EgressError);
      expect((err as EgressError).code).toBe('EGRESS_DENIED');
      expect((err as EgressError).message).toContain('an address of the parent instance');
    }
    // Not the parent's: dialled (and, routed to a veth end with no address, it does not connect).
    const other = await ask(OTHER4);
    expect(other).toBeInstanceOf(EgressError);
    expect((other as EgressError).code).not.toBe('EGRESS_DENIED');
  }, 30_000);
});
