import { spawn } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import pino from 'pino';
import { describe, expect, it } from 'vitest';
import { parseBridgeArgs, serveBridge } from '../../src/cli/bridge.ts';
import { CliUsageError } from '../../src/cli/types.ts';
import { HS2, startFakeAgent } from './fake-agent.ts';
import { selfSignedCert } from './self-signed.ts';
import { TestClient } from './ws-client.ts';

describe('enclave-agent bridge flags', () => {
  it('defaults to 127.0.0.1:8443 and parses each agent target form', () => {
    expect(parseBridgeArgs(['--agent', 'tcp:127.0.0.1:5000'])).toMatchObject({
      listen: { host: '127.0.0.1', port: 8443 },
      target: { kind: 'tcp', host: '127.0.0.1', port: 5000 },
      proxyProtocol: false,
    });
    expect(parseBridgeArgs(['--agent', 'unix:/run/a.sock']).target).toEqual({ kind: 'unix', path: '/run/a.sock' });
    expect(parseBridgeArgs(['--agent', 'vsock:16:5007']).target).toEqual({ kind: 'vsock', cid: 16, port: 5007 });
    expect(parseBridgeArgs(['--enclave-cid', '16']).target).toEqual({ kind: 'vsock', cid: 16, port: 5000 });
    // VMADDR_CID_ANY names no enclave: a usage error, not a start-up failure of the vsock services.
    expect(() => parseBridgeArgs(['--enclave-cid', '4294967295'])).toThrow(CliUsageError);
    expect(() => parseBridgeArgs(['--agent', 'vsock:4294967295:5000'])).toThrow(CliUsageError);
  });

  it('parses --listen (IPv4 and bracketed IPv6), --port/--host and the numeric options', () => {
    expect(parseBridgeArgs(['--listen', '0.0.0.0:9000', '--enclave-cid', '3']).listen).toEqual({ host: '0.0.0.0', port: 9000 });
    expect(parseBridgeArgs(['--listen', '[::]:9000', '--enclave-cid', '3']).listen).toEqual({ host: '::', port: 9000 });
    const o = parseBridgeArgs(['--port', '0', '--host', '::1', '--enclave-cid', '3', '--proxy-protocol', '--max-connections', '7', '--max-pending-upgrades', '9', '--max-pending-upgrades-per-client', '4', '--handshake-timeout', '500', '--idle-timeout', '0']);
    expect(o).toMatchObject({ listen: { host: '::1', port: 0 }, proxyProtocol: true, maxConnections: 7, maxPendingUpgrades: 9, maxPendingUpgradesPerClient: 4, handshakeTimeoutMs: 500, idleTimeoutMs: 0 });
  });

  it('rejects missing, conflicting and malformed flags as usage errors', () => {
    const bad = [
      [],
      ['--agent', 'tcp:127.0.0.1:5000', '--enclave-cid', '3'],
      ['--agent', 'http://x'],
      ['--enclave-cid', 'abc'],
      ['--enclave-cid', '3', '--listen', '0.0.0.0'],
      ['--enclave-cid', '3', '--listen', '0.0.0.0:1', '--port', '2'],
      ['--enclave-cid', '3', '--port', '70000'],
      ['--enclave-cid', '3', '--cert', 'x.pem'],
      ['--enclave-cid', '3', '--max-connections', '0'],
      ['--enclave-cid', '3', '--max-pending-upgrades', '0'],
      ['--enclave-cid', '3', '--max-pending-upgrades-per-client', '0'],
      ['--enclave-cid', '3', '--log-level', 'loud'],
      ['--enclave-cid', '3', '--bogus'],
      ['--enclave-cid', '3', 'extra'],
    ];
    for (const args of bad) expect(() => parseBridgeArgs(args), args.join(' ')).toThrow(CliUsageError);
  });

  it('serves until stopped, printing the URL, with TLS from --cert/--key files', async () => {
    const agent = await startFakeAgent();
    const dir = await mkdtemp(path.join(os.tmpdir(), 'ea-bridge-cli-'));
    try {
      const tls = await selfSignedCert();
      await writeFile(path.join(dir, 'cert.pem'), tls.cert);
      await writeFile(path.join(dir, 'key.pem'), tls.key);
      const out: string[] = [];
      let stop!: () => void;
      const stopped = new Promise<void>((r) => (stop = r));
      const io = { out: (l: string) => out.push(l), err: () => {}, stdin: () => Promise.resolve(new Uint8Array()) };
      const args = ['--port', '0', '--agent', `tcp:127.0.0.1:${agent.port}`, '--cert', path.join(dir, 'cert.pem'), '--key', path.join(dir, 'key.pem')];
      const done = serveBridge(args, io, () => stopped, pino({ level: 'silent' }));
      while (out.length === 0) await new Promise((r) => setTimeout(r, 10));
      expect(out[0]).toMatch(/^wss:\/\/127\.0\.0\.1:\d+\/$/);
      const c = await TestClient.open(out[0]!, { ca: tls.cert });
      c.ws.send(Buffer.alloc(32));
      expect((await c.message(0)).equals(HS2)).toBe(true);
      stop();
      expect(await done).toBe(0);
      expect((await c.closed).code).toBe(1001);
    } finally {
      await agent.close();
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('runs as `enclave-agent bridge` and exits 0 on SIGTERM', async () => {
    const agent = await startFakeAgent();
    let child: ReturnType<typeof spawn> | undefined;
    try {
      child = spawn(process.execPath, ['--import', 'tsx', 'src/cli.ts', 'bridge', '--port', '0', '--agent', `tcp:127.0.0.1:${agent.port}`, '--log-level', 'silent'], {
        cwd: process.cwd(),
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      const url = await new Promise<string>((resolve, reject) => {
        let buf = '';
        child!.stdout!.on('data', (d: Buffer) => {
          buf += d.toString();
          const line = buf.split('\n')[0];
          if (buf.includes('\n') && line) resolve(line);
        });
        child!.once('exit', (code) => reject(new Error(`exited early with ${code}`)));
      });
      expect(url).toMatch(/^ws:\/\/127\.0\.0\.1:\d+\/$/);
      const c = await TestClient.open(url);
      c.ws.send(Buffer.alloc(32));
      expect((await c.message(0)).equals(HS2)).toBe(true);
      const exited = new Promise<number | null>((r) => child!.once('exit', (code) => r(code)));
      child.kill('SIGTERM');
      expect(await exited).toBe(0);
      expect((await c.closed).code).toBe(1001);
    } finally {
      if (child && child.exitCode === null) child.kill('SIGKILL');
      await agent.close();
    }
  });
});
