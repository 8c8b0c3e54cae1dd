// `enclave-agent run` with [egress] enabled (explicit mode): the app it starts gets HTTP_PROXY, HTTPS_PROXY and
// NO_PROXY in both cases, and real curl in the app reaches an allowed server through the proxy and the host
// dialer (here on TCP, standing in for vsock), and is refused (403) elsewhere.
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startEgressDialer, type EgressDialer } from '../../src/host/egress-dialer.ts';
import { startBin, type Running } from '../cli/spawn.ts';
import { startHttpServer } from './helpers.ts';

let dir: string;
let dialer: EgressDialer;
let web: { port: number; close(): Promise<void> };
let agent: Running;

async function freePort(): Promise<number> {
  const s = net.createServer();
  await new Promise<void>((r) => s.listen({ host: '127.0.0.1', port: 0 }, () => r()));
  const port = (s.address() as net.AddressInfo).port;
  await new Promise((r) => s.close(r));
  return port;
}

/** Shell lines: `file` gets whether the app could make a vsock socket (made only, never connected). */
const vsockProbe = (file: string): string =>
  `/usr/bin/python3 -c 'import socket\ntry: socket.socket(socket.AF_VSOCK, socket.SOCK_STREAM); print("made")\nexcept OSError as e: print(e.strerror)' > ${file}`;
/** …and whether it could open the agent's memory ($PPID: the agent). */
const memProbe = (file: string): string =>
  `/usr/bin/python3 -c 'import sys\ntry: open("/proc/%s/mem" % sys.argv[1], "rb"); print("opened")\nexcept OSError as e: print(e.strerror)' $PPID > ${file}`;

/** `enclave-agent run` of `app` (sh -c) with [egress] enabled and `extra` lines in the table, from `cwd`. */
function runWithEgress(cwd: string, proxyPort: number, extra: string, app: string[]): Running {
  const cfg = path.join(cwd, 'enclave.toml');
  writeFileSync(cfg, `[api]\nenabled = false\n\n[egress]\nenabled = true\nproxy_port = ${proxyPort}\ndestinations = ["127.0.0.2:${web.port}"]\n${extra}`);
  return startBin(['run', '--config', cfg, '--listen', `unix:${cwd}`, '--nsm', 'simulator', '--state-dir', path.join(cwd, 'state'), '--loopback', 'off', '--egress-target', `tcp:127.0.0.1:${dialer.port}`, '--', 'sh', '-c', app.join('; ')], { cwd });
}

const fileThere = (file: string) => () => {
  try {
    readFileSync(file);
    return true;
  } catch {
    return false;
  }
};

beforeAll(async () => {
  dir = mkdtempSync(path.join(os.tmpdir(), 'enclave-agent-egress-run-'));
  web = await startHttpServer('127.0.0.2');
  dialer = await startEgressDialer({ listen: { kind: 'tcp', port: 0 }, allowNonGlobal: ['127.0.0.2/32'], resolvers: [] });
  agent = runWithEgress(dir, await freePort(), '', [
    'env | grep -i _proxy= | sort > env.txt',
    `curl -sS --max-time 10 http://127.0.0.2:${web.port}/from-app > allowed.txt`,
    `curl -sS --max-time 10 -o /dev/null -w '%{http_code}' http://127.0.0.2:${web.port + 1}/ > denied.txt`,
    // Its own way to the host dialer, around the proxy, or into the agent's memory: both refused (the sandbox).
    vsockProbe('vsock.txt'),
    memProbe('mem.txt'),
    'touch done',
    'sleep 60',
  ]);
}, 60_000);

afterAll(async () => {
  if (agent && agent.child.exitCode === null && agent.child.signalCode === null) {
    agent.child.kill('SIGTERM');
    await agent.exited;
  }
  await dialer?.close();
  await web?.close();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe('run: explicit egress for the app', () => {
  it('exports the proxy to the app, and the app reaches the allowed server and is refused elsewhere', async () => {
    await expect.poll(fileThere(path.join(dir, 'done')), { timeout: 40_000, interval: 100 }).toBe(true);
    const env = readFileSync(path.join(dir, 'env.txt'), 'utf8').trim().split('\n');
    const url = env.find((l) => l.startsWith('HTTP_PROXY='))!.split('=')[1]!;
    expect(url).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
    expect(env).toEqual([`HTTPS_PROXY=${url}`, `HTTP_PROXY=${url}`, 'NO_PROXY=localhost,127.0.0.1', `http_proxy=${url}`, `https_proxy=${url}`, 'no_proxy=localhost,127.0.0.1']);
    expect(JSON.parse(readFileSync(path.join(dir, 'allowed.txt'), 'utf8'))).toMatchObject({ url: '/from-app', host: `127.0.0.2:${web.port}` });
    expect(readFileSync(path.join(dir, 'denied.txt'), 'utf8')).toBe('403');
    expect(readFileSync(path.join(dir, 'vsock.txt'), 'utf8').trim()).toBe('Permission denied');
    expect(readFileSync(path.join(dir, 'mem.txt'), 'utf8').trim()).toBe('Permission denied');
    expect(agent.stdout()).toMatch(/"type":"egress","allowed":true,"via":"explicit"/);
  });

  // Failed before: app_vsock = true started the app with no sandbox at all (the agent's memory "opened").
  it('[egress] app_vsock = true: the app may make vsock sockets, and the rest of its sandbox holds', async () => {
    const own = mkdtempSync(path.join(dir, 'app-vsock-'));
    const opted = runWithEgress(own, await freePort(), 'app_vsock = true\n', [vsockProbe('vsock.txt'), memProbe('mem.txt'), 'touch done', 'sleep 60']);
    try {
      await expect.poll(fileThere(path.join(own, 'done')), { timeout: 40_000, interval: 100 }).toBe(true);
      // Not refused by us (a kernel without vsock would say so itself).
      expect(readFileSync(path.join(own, 'vsock.txt'), 'utf8').trim()).toMatch(/^(made|Address family not supported by protocol)$/);
      expect(readFileSync(path.join(own, 'mem.txt'), 'utf8').trim()).toBe('Permission denied');
    } finally {
      opted.child.kill('SIGTERM');
      await opted.exited;
    }
  });
});
