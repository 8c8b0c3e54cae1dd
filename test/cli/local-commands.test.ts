// In-process checks of start/fetch/attest/pcrs: --help, usage errors as one line, the simulated identity
// (what changes which PCR), and startLocalStack forwarding to an app that already listens.
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import type net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import pino from 'pino';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { connect } from '../../src/client/node.ts';
import { runCli } from '../../src/cli/run.ts';
import { chooseLocalApp, localIdentity, pcrHex, withoutAttestationTable } from '../../src/cli/pcrs.ts';
import { startLocalStack, type LocalStack } from '../../src/cli/start.ts';
import type { CliIo } from '../../src/cli/types.ts';
import { startDemoApp } from '../../src/runtime/demo-app.ts';

function capture(): CliIo & { stdout: string[]; stderr: string[] } {
  const stdout: string[] = [];
  const stderr: string[] = [];
  return { stdout, stderr, out: (l) => stdout.push(l), err: (l) => stderr.push(l), stdin: () => Promise.resolve(new Uint8Array()) };
}

async function cli(...argv: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  const io = capture();
  const code = await runCli(argv, io);
  return { code, stdout: io.stdout.join('\n'), stderr: io.stderr.join('\n') };
}

let dir: string;
beforeAll(() => {
  dir = mkdtempSync(path.join(os.tmpdir(), 'enclave-agent-cli-local-'));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('--help and usage errors', () => {
  it.each(['start', 'fetch', 'attest', 'pcrs'])('%s --help prints its usage and exits 0', async (name) => {
    const r = await cli(name, '--help');
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(new RegExp(`^Usage: enclave-agent ${name}`));
  });

  it('lists the four commands in the top-level usage', async () => {
    const r = await cli('--help');
    for (const name of ['start', 'fetch', 'attest', 'pcrs']) expect(r.stdout).toMatch(new RegExp(`^  ${name} `, 'm'));
  });

  it.each([
    [['fetch', 'ws://127.0.0.1:1/', '/'], /give the PCRs to pin/],
    [['fetch', 'http://127.0.0.1:1/', '/', '--pcrs', 'x'], /must be ws:\/\/ or wss:\/\//],
    [['fetch', 'ws://127.0.0.1:1/', 'nope', '--pcr0', '00'], /must start with "\/"/],
    [['fetch', 'ws://127.0.0.1:1/', '/', '--pcr0', 'aa'], /--pcr0, --pcr1 and --pcr2 go together/],
    [['fetch', 'ws://127.0.0.1:1/', '/', '--pcrs', '/nonexistent.json'], /--pcrs: .* neither/],
    [['fetch', 'ws://127.0.0.1:1/', '/', '--bogus'], /unknown option "--bogus"/],
    [['start', '--bridge-port', '70000'], /--bridge-port expects 0\.\.65535/],
    [['start', '--config', '/nonexistent/enclave.toml'], /--config: \/nonexistent\/enclave.toml does not exist/],
    [['attest'], /expected one <url>/],
    [['pcrs', '--app-port', 'x'], /--app-port expects an integer/],
  ])('%j is one usage line, exit 2', async (argv, message) => {
    const r = await cli(...argv);
    expect(r.code).toBe(2);
    expect(r.stdout).toBe('');
    expect(r.stderr.split('\n')).toHaveLength(1);
    expect(r.stderr).toMatch(message);
    expect(r.stderr).not.toMatch(/\n\s+at /);
  });

  it('a bad <path> or --header is described, never quoted (either may hold a token)', async () => {
    const secret = 'sk_live_4eC39HqLyjWDarjtT1zdp7dc';
    const path = await cli('fetch', 'ws://127.0.0.1:1/', `api?token=${secret}`, '--pcr0', '00');
    expect(path.code).toBe(2);
    expect(path.stderr).toBe(`enclave-agent fetch: <path> must start with "/", found ${10 + secret.length} characters, starting with a letter (see --help)`);
    const header = await cli('fetch', 'ws://127.0.0.1:1/', '/', '-H', `Authorization Bearer ${secret}`, '--pcr0', 'aa'.repeat(48), '--pcr1', 'aa'.repeat(48), '--pcr2', 'aa'.repeat(48));
    expect(header.code).toBe(2);
    expect(header.stderr).toMatch(/^enclave-agent fetch: --header: expected "Name: value", found no ":" in \d+ characters, starting with a letter/);
    for (const r of [path, header]) expect(r.stderr).not.toContain(secret.slice(0, 8));
  });

  it('a bridge nobody listens on is one line naming CLIENT_CONNECT_FAILED, exit 1', async () => {
    const srv = http.createServer();
    await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
    const port = (srv.address() as net.AddressInfo).port;
    await new Promise<void>((r) => srv.close(() => r()));
    const r = await cli('fetch', `ws://127.0.0.1:${port}/`, '/', '--pcr0', 'aa'.repeat(48), '--pcr1', 'aa'.repeat(48), '--pcr2', 'aa'.repeat(48), '--timeout', '5000');
    expect(r.code).toBe(1);
    expect(r.stderr.split('\n')).toHaveLength(1);
    expect(r.stderr).toMatch(/^enclave-agent fetch: CLIENT_CONNECT_FAILED: /);
  });
});

describe('the simulated identity (pcrs)', () => {
  const base = 'name = "x"\n\n[app]\nport = 8008\n';
  const demo = { kind: 'demo' } as const;

  it('pasting an [attestation] table into the config leaves every PCR unchanged', () => {
    const pinned = `${base}\n[attestation]\nPCR0 = "${'a'.repeat(96)}"\n# comment\nPCR1 = "${'b'.repeat(96)}"\n`;
    expect(withoutAttestationTable(pinned)).toBe(withoutAttestationTable(base + '\n'));
    expect(pcrHex(localIdentity(pinned, demo), false)).toEqual(pcrHex(localIdentity(base + '\n', demo), false));
  });

  it('keeps the tables after [attestation] and drops top-level attestation.* keys', () => {
    const text = `attestation.PCR0 = "00"\nname = "x"\n[attestation]\nPCR0 = "11"\n[api]\nport = 1\n`;
    expect(withoutAttestationTable(text)).toBe('name = "x"\n[api]\nport = 1\n');
  });

  it('reads table headers with blanks, comments and array-of-tables forms, in linear time on a long unclosed one', { timeout: 3000 }, () => {
    const text = `a = 1\n  [ attestation ]  # pins\nPCR0 = "11"\n[[ api.x ]]\nport = 1\n[attestation.more]\nk = 2\n[apix]\nz = 3\n`;
    expect(withoutAttestationTable(text)).toBe('a = 1\n[[ api.x ]]\nport = 1\n[apix]\nz = 3\n');
    // Overlapping whitespace runs around a lazy name used to backtrack on this: not a header, kept as is.
    const long = `[${' '.repeat(20_000)}x`;
    expect(withoutAttestationTable(`${long}\n`)).toBe(`${long}\n`);
  });

  it('another config changes PCR0 only; another app changes PCR0 and PCR2; debug zeroes them all', () => {
    const a = pcrHex(localIdentity(base, demo), false);
    const otherConfig = pcrHex(localIdentity(base + 'trx_logging = false\n', demo), false);
    expect(otherConfig.PCR0).not.toBe(a.PCR0);
    expect([otherConfig.PCR1, otherConfig.PCR2, otherConfig.PCR8]).toEqual([a.PCR1, a.PCR2, a.PCR8]);
    const otherApp = pcrHex(localIdentity(base, { kind: 'port', port: 8008 }), false);
    expect(otherApp.PCR0).not.toBe(a.PCR0);
    expect(otherApp.PCR2).not.toBe(a.PCR2);
    expect(otherApp.PCR1).toBe(a.PCR1);
    expect(Object.values(pcrHex(localIdentity(base, demo), true))).toEqual(Array(4).fill('0'.repeat(96)));
  });

  it('the demo app counts as "demo" on whatever port it runs; another app on the port is that app', async () => {
    const d = await startDemoApp({ port: 0 });
    const other = http.createServer((_q, s) => s.end('hi'));
    await new Promise<void>((r) => other.listen(0, '127.0.0.1', r));
    const otherPort = (other.address() as net.AddressInfo).port;
    try {
      expect(await chooseLocalApp(0)).toEqual({ kind: 'demo' });
      expect(await chooseLocalApp(d.port)).toEqual({ kind: 'demo', running: true });
      expect(await chooseLocalApp(otherPort)).toEqual({ kind: 'port', port: otherPort });
    } finally {
      await d.close();
      await new Promise<void>((r) => other.close(() => r()));
    }
    expect(await chooseLocalApp(otherPort)).toEqual({ kind: 'demo' });
  });

  it('pcrs --json and --toml print the same values', async () => {
    const cfg = path.join(dir, 'pcrs.toml');
    writeFileSync(cfg, base);
    const json = JSON.parse((await cli('pcrs', '--config', cfg, '--app-port', '0', '--json')).stdout) as Record<string, string>;
    expect(json).toEqual(pcrHex(localIdentity(base, demo), false));
    const toml = (await cli('pcrs', '--config', cfg, '--app-port', '0', '--toml')).stdout;
    expect(toml).toBe(['[attestation]', ...Object.entries(json).map(([k, v]) => `${k} = "${v}"`)].join('\n'));
  });
});

describe('startLocalStack with an app already listening', () => {
  let app: http.Server;
  let appPort: number;
  let stack: LocalStack | undefined;

  beforeAll(async () => {
    app = http.createServer((req, res) => {
      res.setHeader('content-type', 'text/plain');
      res.end(`user app saw ${req.method} ${req.url}`);
    });
    await new Promise<void>((r) => app.listen(0, '127.0.0.1', r));
    appPort = (app.address() as net.AddressInfo).port;
    writeFileSync(path.join(dir, 'user.toml'), 'name = "user"\n');
  });
  afterEach(async () => {
    await stack?.bridge.close();
    await stack?.runtime.close();
    await stack?.demo?.close();
    stack = undefined;
  });
  afterAll(() => new Promise<void>((r) => app.close(() => r())));

  it('start with a taken bridge port is one line with a hint, exit 1, and leaves nothing listening', async () => {
    const taken = http.createServer();
    await new Promise<void>((r) => taken.listen(0, '127.0.0.1', r));
    const port = (taken.address() as net.AddressInfo).port;
    try {
      const r = await cli('start', '--config', path.join(dir, 'user.toml'), '--state-dir', path.join(dir, 'state-taken'), '--bridge-port', String(port), '--agent-port', '0', '--app-port', String(appPort), '--api-port', '0');
      expect(r.code).toBe(1);
      expect(r.stdout).toBe('');
      expect(r.stderr.split('\n')).toHaveLength(1);
      expect(r.stderr).toMatch(/^enclave-agent start: BRIDGE_LISTEN_FAILED: .*EADDRINUSE \(another enclave-agent start running\? .*0 picks a free one\)$/);
    } finally {
      await new Promise<void>((r) => taken.close(() => r()));
    }
  });

  it('--debug: all-zero PCRs; a debug-mode client needs no root', async () => {
    stack = await startLocalStack({
      configPath: path.join(dir, 'user.toml'),
      stateDir: path.join(dir, 'state-debug'),
      bridgePort: 0,
      agentPort: 0,
      controlPort: undefined,
      appPort,
      apiPort: 0,
      debug: true,
      logger: pino({ enabled: false }),
    });
    expect(Object.values(stack.pcrs)).toEqual(Array(4).fill('0'.repeat(96)));
    const root = readFileSync(stack.rootPem, 'utf8');
    const client = await connect(stack.bridgeUrl, { pcrs: stack.pcrs, debug: true });
    try {
      expect(await (await client.fetch('/')).text()).toBe('user app saw GET /');
    } finally {
      await client.close();
    }
    // Without --debug the chain is checked: the simulator root is not trusted by default.
    await expect(connect(stack.bridgeUrl, { pcrs: stack.pcrs })).rejects.toMatchObject({ code: 'CLIENT_ATTESTATION_FAILED', attestationCode: 'ATTESTATION_UNTRUSTED_ROOT' });
    // Pinned to the live (zero) PCRs with the simulator root, a production client still refuses a debug enclave...
    await expect(connect(stack.bridgeUrl, { pcrs: stack.pcrs, roots: [root] })).rejects.toMatchObject({ code: 'CLIENT_ATTESTATION_FAILED', attestationCode: 'ATTESTATION_DEBUG_ENCLAVE' });
    // ...unless it opts in, and then the chain is still checked: debug documents are signed documents.
    const strict = await connect(stack.bridgeUrl, { pcrs: stack.pcrs, roots: [root], allowDebugEnclave: true });
    await strict.close();
  });

  it('forwards to that app (no demo), pins PCRs naming it, and serves it through the attested channel', async () => {
    const cfg = path.join(dir, 'user.toml');
    stack = await startLocalStack({
      configPath: cfg,
      stateDir: path.join(dir, 'state-user'),
      bridgePort: 0,
      agentPort: 0,
      controlPort: undefined,
      appPort,
      apiPort: 0,
      debug: false,
      logger: pino({ enabled: false }),
    });
    expect(stack.demo).toBeNull();
    expect(stack.app).toEqual({ kind: 'port', port: appPort });
    expect(stack.pcrs).toEqual(pcrHex(localIdentity('name = "user"\n', { kind: 'port', port: appPort }), false));
    const client = await connect(stack.bridgeUrl, { pcrs: stack.pcrs, roots: [readFileSync(stack.rootPem, 'utf8')] });
    try {
      const res = await client.fetch('/hello?x=1');
      expect(await res.text()).toBe('user app saw GET /hello?x=1');
    } finally {
      await client.close();
    }
  });
});
