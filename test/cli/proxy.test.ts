// `enclave-agent proxy` as a real process in front of the local stack (agent + bridge + simulated NSM + a test app,
// test/client/stack.ts): Debian's curl and Python's http.client reach the app through it over the Noise channel,
// WebSocket upgrades pass, a wrong pin answers 502 with the attestation code while the app sees nothing, and the
// proxy reconnects (and verifies again) after the agent and the bridge restart.
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { WebSocket } from 'ws';
import { startBridge, type Bridge } from '../../src/host/bridge.ts';
import { startStack, type Stack } from '../client/stack.ts';
import { startBin, type Running } from './spawn.ts';

interface ProxyLine {
  url: string;
  upstream: string;
  attestation: string;
}

let dir: string;
let stack: Stack;
let rootFile: string;
let bridge: Bridge;
const procs: Running[] = [];

function run(cmd: string, args: string[], input?: string): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = execFile(cmd, args, { timeout: 30_000 }, (err, stdout, stderr) => {
      const code = err === null ? 0 : typeof (err as { code?: unknown }).code === 'number' ? (err as { code: number }).code : 1;
      resolve({ code, stdout, stderr });
    });
    if (input !== undefined) child.stdin!.end(input);
  });
}

async function proxy(pins: { PCR0: string; PCR1: string; PCR2: string }, url = bridge.url): Promise<ProxyLine> {
  const p = startBin(['proxy', url, '--json', '--pcr0', pins.PCR0, '--pcr1', pins.PCR1, '--pcr2', pins.PCR2, '--root', rootFile, '--log-level', 'warn']);
  procs.push(p);
  return JSON.parse(await p.firstLine(60_000)) as ProxyLine;
}

/** Response head + body of `curl -si`. */
async function curl(...args: string[]): Promise<{ status: number; headers: string; body: string }> {
  const r = await run('curl', ['-sS', '-i', '--max-time', '20', ...args]);
  expect(r.code, r.stderr).toBe(0);
  const i = r.stdout.indexOf('\r\n\r\n');
  const headers = r.stdout.slice(0, i);
  return { status: Number(/^HTTP\/1\.1 (\d{3})/.exec(headers)![1]), headers, body: r.stdout.slice(i + 4) };
}

beforeAll(async () => {
  dir = mkdtempSync(path.join(os.tmpdir(), 'proxy-cli-'));
  stack = await startStack();
  bridge = stack.bridge;
  rootFile = path.join(dir, 'root.pem');
  writeFileSync(rootFile, stack.sim.rootPem);
}, 60_000);

afterAll(async () => {
  for (const p of procs) await p.kill();
  if (bridge !== stack.bridge) await bridge.close();
  await stack.close();
  rmSync(dir, { recursive: true, force: true });
});

describe('enclave-agent proxy (Noise upstream through the bridge)', () => {
  let line: ProxyLine;
  beforeAll(async () => {
    line = await proxy(stack.pins as unknown as ProxyLine & { PCR0: string; PCR1: string; PCR2: string });
  }, 60_000);

  it('verifies at start and reports it', () => {
    expect(line.attestation).toBe('verified');
    expect(line.url).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
    expect(line.upstream).toBe(bridge.url);
  });

  it('curl reaches the app: GET, POST with a body, headers pass and hop-by-hop ones do not', async () => {
    const get = await curl(`${line.url}/hello`);
    expect(get.status).toBe(200);
    expect(get.body).toBe('hello');
    const post = await curl('-H', 'content-type: text/plain', '--data-binary', 'ping body', `${line.url}/echo`);
    expect(post.status).toBe(200);
    expect(post.body).toBe('ping body');
    const seen = await curl('-H', 'X-Custom: 42', '-H', 'Connection: keep-alive, X-Drop', '-H', 'X-Drop: no', `${line.url}/headers`);
    const raw = JSON.parse(seen.body) as string[];
    const names = raw.filter((_, i) => i % 2 === 0).map((n) => n.toLowerCase());
    expect(raw[names.indexOf('x-custom') * 2 + 1]).toBe('42');
    expect(names).not.toContain('x-drop');
    expect((await curl(`${line.url}/missing`)).status).toBe(404);
  });

  it("Python's http.client reaches the app (keep-alive, GET and POST on one connection)", async () => {
    const port = new URL(line.url).port;
    const script = [
      'import http.client, json, sys',
      `c = http.client.HTTPConnection("127.0.0.1", ${port}, timeout=20)`,
      'c.request("GET", "/hello"); r = c.getresponse(); a = (r.status, r.read().decode())',
      'c.request("POST", "/json", body=json.dumps({"n": 7}), headers={"Content-Type": "application/json"}); r = c.getresponse(); b = (r.status, json.loads(r.read()))',
      'print(json.dumps([a, b]))',
    ].join('\n');
    const r = await run('/usr/bin/python3', ['-c', script]);
    expect(r.code, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout)).toEqual([
      [200, 'hello'],
      [200, { got: { n: 7 }, contentType: 'application/json' }],
    ]);
  });

  it('forwards a WebSocket upgrade', async () => {
    const ws = new WebSocket(`${line.url.replace('http', 'ws')}/ws`);
    const echoed = await new Promise<string>((resolve, reject) => {
      ws.once('open', () => ws.send('over the proxy'));
      ws.once('message', (d) => resolve(String(d)));
      ws.once('error', reject);
    });
    ws.close();
    expect(echoed).toBe('over the proxy');
  });

  it('reconnects and verifies again after the agent restarts and after the bridge restarts', async () => {
    const sessions = stack.sessions.length;
    await stack.restartAgent();
    // The session the proxy held is gone; the next request gets a new handshake + attestation.
    let res = await curl(`${line.url}/hello`);
    for (let i = 0; i < 20 && res.status !== 200; i++) res = await curl(`${line.url}/hello`);
    expect(res.body).toBe('hello');
    expect(stack.sessions.length).toBeGreaterThan(sessions); // the old session closed

    const port = Number(new URL(bridge.url).port);
    await bridge.close();
    const down = await curl(`${line.url}/hello`);
    expect(down.status).toBe(502);
    expect(down.headers.toLowerCase()).toContain('x-enclave-agent-error: client_connect_failed');
    bridge = await startBridge({ listen: { host: '127.0.0.1', port }, target: { kind: 'tcp', host: '127.0.0.1', port: stack.agent.public.listener.port! }, logger: pino({ level: 'silent' }) });
    res = await curl(`${line.url}/hello`);
    for (let i = 0; i < 40 && res.status !== 200; i++) {
      await new Promise((r) => setTimeout(r, 250));
      res = await curl(`${line.url}/hello`);
    }
    expect(res.status).toBe(200);
    expect(res.body).toBe('hello');
  });

  it('a large upload with Expect: 100-continue (curl sends it past 1 MiB) reaches the app whole', async () => {
    const file = path.join(dir, 'big.bin');
    writeFileSync(file, Buffer.alloc(3 * 1024 * 1024, 7));
    const r = await run('curl', ['-sS', '--max-time', '30', '-o', '/dev/null', '-w', '%{http_code} %{size_download}', '--data-binary', `@${file}`, `${line.url}/echo`]);
    expect(r.stdout).toBe(`200 ${3 * 1024 * 1024}`);
  });

  it('stops forwarding when the enclave comes back as another build: 502 with the PCR error, nothing at the app', async () => {
    await stack.restartAgent({ identity: { agentVersion: 'client-test', app: 'a different app', config: 'mode = "test"' } });
    const before = stack.app.requests;
    const res = await curl('--data-binary', 'must not arrive', `${line.url}/echo`);
    expect(res.status).toBe(502);
    expect(res.headers.toLowerCase()).toContain('x-enclave-agent-error: attestation_pcr_mismatch');
    expect(stack.app.requests).toBe(before);
  });
});

describe('enclave-agent proxy with a wrong pin', () => {
  it('answers 502 with the attestation error code in x-enclave-agent-error; the app sees nothing', async () => {
    const wrong = { ...(stack.pins as { PCR0: string; PCR1: string; PCR2: string }), PCR0: 'ab'.repeat(48) };
    const line = await proxy(wrong);
    expect(line.attestation).toBe('ATTESTATION_PCR_MISMATCH');
    const before = stack.app.requests;
    const res = await curl('--data-binary', 'must not arrive', `${line.url}/echo`);
    expect(res.status).toBe(502);
    expect(res.headers.toLowerCase()).toContain('x-enclave-agent-error: attestation_pcr_mismatch');
    expect(res.body).toContain('ATTESTATION_PCR_MISMATCH');
    const ws = await curl('-H', 'Connection: Upgrade', '-H', 'Upgrade: websocket', '-H', 'Sec-WebSocket-Version: 13', '-H', 'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==', `${line.url}/ws`);
    expect(ws.status).toBe(502);
    expect(ws.headers.toLowerCase()).toContain('x-enclave-agent-error: attestation_pcr_mismatch');
    expect(stack.app.requests).toBe(before);
  });
});
