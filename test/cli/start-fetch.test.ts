// The user's first hour, as real processes: `enclave-agent start --json` (ports 0 everywhere), then
// `enclave-agent fetch` / `attest` / `pcrs` against it, then Ctrl-C.
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runBin, startBin, type Running } from './spawn.ts';

interface StartLine {
  bridgeUrl: string;
  agentAddress: string;
  rootPem: string;
  pcrs: { PCR0: string; PCR1: string; PCR2: string; PCR8: string };
  appPort: number;
  apiUrl: string;
  app: string;
}

const HEX48 = /^[0-9a-f]{96}$/;
let dir: string;
let start: Running;
let info: StartLine;
let pcrsFile: string;
let configFile: string;

function canListen(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.createServer();
    s.once('error', () => resolve(false));
    s.listen({ host: '127.0.0.1', port }, () => s.close(() => resolve(true)));
  });
}

function portOf(address: string): number {
  return Number(address.slice(address.lastIndexOf(':') + 1));
}

beforeAll(async () => {
  dir = mkdtempSync(path.join(os.tmpdir(), 'enclave-agent-cli-'));
  // A config of its own: the test does not depend on the repo's enclave.toml (nor on port 8008 being free).
  configFile = path.join(dir, 'enclave.toml');
  writeFileSync(configFile, 'name = "cli-test"\naccept_proxy_protocol = true\n\n[app]\nport = 8008\n');
  start = startBin(['start', '--json', '--config', configFile, '--state-dir', path.join(dir, 'state'), '--bridge-port', '0', '--agent-port', '0', '--app-port', '0', '--api-port', '0']);
  info = JSON.parse(await start.firstLine(60_000)) as StartLine;
  pcrsFile = path.join(dir, 'pins.json');
  writeFileSync(pcrsFile, JSON.stringify(info.pcrs));
}, 90_000);

afterAll(async () => {
  await start?.kill();
  rmSync(dir, { recursive: true, force: true });
});

describe('enclave-agent start --json', () => {
  it('prints exactly one JSON line with the bridge URL, agent address, root, PCRs, app and API', () => {
    expect(info.bridgeUrl).toMatch(/^ws:\/\/127\.0\.0\.1:\d+\/$/);
    expect(info.agentAddress).toMatch(/^127\.0\.0\.1:\d+$/);
    expect(info.rootPem).toBe(path.join(dir, 'state', 'nsm-simulator', 'nsm-ca', 'root.pem'));
    for (const k of ['PCR0', 'PCR1', 'PCR2', 'PCR8'] as const) expect(info.pcrs[k]).toMatch(HEX48);
    expect(info.pcrs.PCR8).toBe('0'.repeat(96));
    expect(info.appPort).toBeGreaterThan(0);
    expect(info.app).toBe('demo');
    expect(info.apiUrl).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
    expect(start.stdout().trim().split('\n')).toHaveLength(1);
  });
});

describe('enclave-agent fetch against start', () => {
  it('GET / through the attested channel prints the demo greeting and exits 0', async () => {
    const r = await runBin(['fetch', info.bridgeUrl, '/', '--pcrs', pcrsFile, '--root', info.rootPem]);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(JSON.parse(r.stdout)).toMatchObject({ message: expect.stringContaining('Hello from cli-test') });
  });

  it('POST /echo shows exactly what the app received: method, path, the header, the body, and what the agent added', async () => {
    const r = await runBin(['fetch', info.bridgeUrl, '/echo', '-X', 'POST', '-d', '{"a":1}', '-H', 'x-test: 1', '--pcrs', pcrsFile, '--root', info.rootPem]);
    expect(r.code).toBe(0);
    const echo = JSON.parse(r.stdout) as { method: string; path: string; headers: Record<string, string>; body: string };
    expect(echo.method).toBe('POST');
    expect(echo.path).toBe('/echo');
    expect(echo.body).toBe('{"a":1}');
    expect(echo.headers['x-test']).toBe('1');
    expect(echo.headers['content-length']).toBe('7');
    // The agent's pipeline: a request id, and the client address from the bridge's PROXY v2 header.
    expect(echo.headers['x-request-id']).toMatch(/^[0-9a-f-]{36}$/);
    expect(echo.headers['x-forwarded-for']).toBe('127.0.0.1');
  });

  it('a wrong PCR0 fails before anything is sent: exit 1, one line naming ATTESTATION_PCR_MISMATCH', async () => {
    const wrong = `${info.pcrs.PCR0.startsWith('0') ? '1' : '0'}${info.pcrs.PCR0.slice(1)}`;
    const r = await runBin(['fetch', info.bridgeUrl, '/echo', '-d', 'secret', '--pcr0', wrong, '--pcr1', info.pcrs.PCR1, '--pcr2', info.pcrs.PCR2, '--root', info.rootPem]);
    expect(r.code).toBe(1);
    expect(r.stdout).toBe('');
    const lines = r.stderr.trim().split('\n');
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(/^enclave-agent fetch: attestation failed: ATTESTATION_PCR_MISMATCH: .*PCR0/);
  });

  it('without --root the simulator is not trusted: exit 1 naming ATTESTATION_UNTRUSTED_ROOT, and a hint to pass --root', async () => {
    for (const argv of [['fetch', info.bridgeUrl, '/', '--pcrs', pcrsFile], ['attest', info.bridgeUrl, '--pcrs', pcrsFile]]) {
      const r = await runBin(argv);
      expect(r.code).toBe(1);
      const lines = r.stderr.trim().split('\n');
      expect(lines).toHaveLength(2);
      expect(lines[0]).toMatch(new RegExp(`^enclave-agent ${argv[0]}: attestation failed: ATTESTATION_UNTRUSTED_ROOT: `));
      expect(lines[1]).toMatch(/^hint: .* pass --root <state dir>\/nsm-simulator\/nsm-ca\/root\.pem/);
    }
  });

  it("the README's wrong-pin example prints exactly what the README shows", async () => {
    // The lines after "$ " in the README block that has the stale-pcrs example, and the output line after them.
    const readme = readFileSync(path.resolve('README.md'), 'utf8');
    const block = /```\n(\$ sed [^\n]*stale-pcrs\.json\n\$ npx enclave-agent fetch [^\n]*\n)([^\n]*)\n```/.exec(readme);
    expect(block, 'the example block in README.md').not.toBeNull();
    const [sedLine, fetchLine] = block![1]!.trim().split('\n').map((l) => l.slice(2));
    // Run where `start` keeps its state as .state, against this test's bridge.
    const cwd = path.join(dir, 'readme');
    mkdirSync(cwd);
    symlinkSync(path.join(dir, 'state'), path.join(cwd, '.state'));
    const sed = spawnSync('/bin/sh', ['-c', sedLine!], { cwd, encoding: 'utf8' });
    expect(sed.status).toBe(0);
    const args = fetchLine!.split(' ').slice(2).map((w) => (w === 'ws://127.0.0.1:8443/' ? info.bridgeUrl : w));
    const r = await runBin(args, { cwd });
    expect(r.code).toBe(1);
    expect(r.stdout).toBe('');
    expect(r.stderr).toBe(`${block![2]!}\n`);
  });
});

describe('enclave-agent attest and pcrs against start', () => {
  it('attest prints the live PCRs and MATCH against a config whose [attestation] holds them', async () => {
    const cfg = path.join(dir, 'pinned.toml');
    writeFileSync(cfg, `[attestation]\nPCR0 = "${info.pcrs.PCR0}"\nPCR1 = "${info.pcrs.PCR1}"\nPCR2 = "${info.pcrs.PCR2}"\n`);
    const r = await runBin(['attest', info.bridgeUrl, '--config', cfg, '--root', info.rootPem]);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain(`PCR0    ${info.pcrs.PCR0}  matches`);
    expect(r.stdout).toMatch(/^MATCH: /m);
  });

  it('attest reports MISMATCH (exit 1) naming the PCR that differs', async () => {
    const cfg = path.join(dir, 'other.toml');
    writeFileSync(cfg, `[attestation]\nPCR0 = "${info.pcrs.PCR0}"\nPCR1 = "${info.pcrs.PCR1}"\nPCR2 = "${'ab'.repeat(48)}"\n`);
    const r = await runBin(['attest', info.bridgeUrl, '--config', cfg, '--root', info.rootPem, '--json']);
    expect(r.code).toBe(1);
    const out = JSON.parse(r.stdout) as { verified: boolean; match: boolean; mismatches: string[]; pcrs: Record<string, string> };
    expect(out).toMatchObject({ verified: true, match: false, mismatches: ['PCR2'] });
    expect(out.pcrs.PCR2).toBe(info.pcrs.PCR2);
  });

  it('pcrs prints exactly the PCRs start reports for the same config and app', async () => {
    const r = await runBin(['pcrs', '--config', configFile, '--app-port', '0', '--json']);
    expect(r.code).toBe(0);
    expect(JSON.parse(r.stdout)).toEqual(info.pcrs);
  });
});

describe("start with the user's own app", () => {
  it('suggests a route that app has (its [healthcheck] path), not the demo\'s /echo', async () => {
    const app = http.createServer((req, res) => res.end(req.url === '/health' ? 'ok' : 'mine'));
    await new Promise<void>((r) => app.listen(0, '127.0.0.1', r));
    const appPort = (app.address() as { port: number }).port;
    const cfg = path.join(dir, 'own-app.toml');
    writeFileSync(cfg, `name = "own-app"\nhealthcheck = "/health"\n\n[app]\nport = ${appPort}\n`);
    const own = startBin(['start', '--config', cfg, '--state-dir', path.join(dir, 'own-state'), '--bridge-port', '0', '--agent-port', '0', '--api-port', '0']);
    try {
      await new Promise<void>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`no banner; stderr: ${own.stderr()}`)), 60_000);
        const poll = setInterval(() => {
          if (!own.stdout().includes('Ctrl-C stops everything.')) return;
          clearInterval(poll);
          clearTimeout(timer);
          resolve();
        }, 100);
      });
      const banner = own.stdout();
      expect(banner).toContain(`your app on 127.0.0.1:${appPort}`);
      expect(banner).not.toContain('/echo');
      const tryLine = banner.split('\n').find((l) => l.includes('enclave-agent fetch'))!;
      expect(tryLine).toMatch(/ fetch ws:\/\/127\.0\.0\.1:\d+\/ \/health --pcrs .*\(your app's \[healthcheck\] path\)$/);
      // And that line works: it reaches the user's app.
      const words = tryLine.trim().split(/\s+/);
      const r = await runBin(words.slice(2, words.indexOf('(your')), { cwd: process.cwd() });
      expect(r.stdout).toBe('ok'); // the body as the app sent it (fetch adds no newline, like curl)
    } finally {
      own.child.kill('SIGKILL');
      await own.exited;
      await new Promise((r) => app.close(r));
    }
  });
});

describe('stopping start', () => {
  it('SIGINT stops everything within a few seconds, exits 0 and releases every port', async () => {
    const ports = [portOf(info.bridgeUrl.replace(/\/$/, '')), portOf(info.agentAddress), info.appPort, portOf(info.apiUrl)];
    start.child.kill('SIGINT');
    // A stop that hung (on the drain, a listener, a child) fails at this test's own timeout (20 s).
    expect(await start.exited).toEqual({ code: 0, signal: null });
    for (const p of ports) expect(await canListen(p)).toBe(true);
  }, 20_000);
});
