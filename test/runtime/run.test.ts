// `enclave-agent run -- node app.js` as a real child process: TCP stands in for vsock (--listen tcp:0,0) and
// the NSM simulator for /dev/nsm. The app (fixtures/app.mjs) logs what it sees to an events file.
import { existsSync, mkdtempSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { PassThrough } from 'node:stream';
import { startLogSinkServer } from '../../src/host/log-sink-server.ts';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { utf8 } from '../../src/util/bytes.ts';
import { connectTcp, handshake, tcpPipe, type TestClient } from '../responder/helpers.ts';
import { alive, settledLeftovers, startRun, until, zombieChildren, type RunningAgent } from './harness.ts';

const running: RunningAgent[] = [];
const clients: TestClient[] = [];

afterEach(async () => {
  for (const c of clients.splice(0)) c.close();
  for (const a of running.splice(0)) await a.dispose();
});
// Every agent, app and app child this file started has ended (they used to outlive the suite).
afterAll(async () => expect(await settledLeftovers()).toEqual([]));

async function run(opts: Parameters<typeof startRun>[0] = {}): Promise<RunningAgent> {
  const a = await startRun(opts);
  running.push(a);
  return a;
}

async function client(port: number): Promise<TestClient> {
  const c = await handshake(tcpPipe(await connectTcp(port)));
  clients.push(c);
  return c;
}

function httpGet(path: string): Uint8Array {
  return utf8.encode(`GET ${path} HTTP/1.1\r\nHost: app\r\nConnection: close\r\n\r\n`);
}

async function dataReply(c: TestClient, id: number, timeoutMs = 20_000): Promise<string> {
  const [r] = (await c.until((m) => (m.type === 'Data' || m.type === 'Error') && m.id === id, timeoutMs)).slice(-1);
  if (r!.message.type === 'Error') throw new Error(`Error reply: ${r!.message.message}`);
  return utf8.decode((r!.message as { payload: Uint8Array }).payload);
}

function refused(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect({ host: '127.0.0.1', port });
    s.once('connect', () => {
      s.destroy();
      resolve(false);
    });
    s.once('error', () => resolve(true));
  });
}

const eventTime = (events: string[], prefix: string): number => Number(events.find((e) => e.startsWith(prefix))?.split(' ')[1]);

describe('enclave-agent run (TCP for vsock, NSM simulator)', () => {
  it('reports healthy only after the app port answers, then serves requests through the agent', async () => {
    const a = await run({ env: { APP_START_DELAY_MS: '1500' } });
    const started = await a.waitForLog('runtime started');
    const healthy = await a.waitForLog('agent healthy');
    const listening = eventTime(a.events(), 'listening');
    expect(listening).toBeGreaterThan(started.time!);
    expect(healthy.time!).toBeGreaterThanOrEqual(listening);
    expect(a.lines.findIndex((l) => l.msg === 'agent healthy')).toBeGreaterThan(a.lines.findIndex((l) => l.msg === 'app started'));

    const c = await client(healthy.publicPort as number);
    c.send({ type: 'RequestAttestation' });
    const att = await c.next();
    expect(att.message.type).toBe('Attestation');
    c.send({ type: 'Data', id: 1, payload: httpGet('/') });
    const pid = Number(a.events()[0]!.split(' ')[1]);
    expect(await dataReply(c, 1)).toMatch(new RegExp(`^HTTP/1\\.1 200 [\\s\\S]*hello from ${pid}$`));
  }, 60_000);

  it('drains on SIGTERM: stops accepting, finishes the in-flight request, then stops the app and exits 0', async () => {
    const a = await run();
    const healthy = await a.waitForLog('agent healthy');
    const port = healthy.publicPort as number;
    const c = await client(port);
    c.send({ type: 'Data', id: 7, payload: httpGet('/slow?ms=2000') });
    await a.waitForEvent((e) => e === 'begin /slow');

    a.kill('SIGTERM');
    await a.waitForLog('draining: no new connections, finishing in-flight requests');
    expect(await until(async () => ((await refused(port)) ? true : undefined), 5_000, 'listener closed')).toBe(true);
    const reply = await dataReply(c, 7);
    expect(reply).toMatch(/^HTTP\/1\.1 200 [\s\S]*slow done$/);

    expect(await a.exited).toEqual({ code: 0, signal: null });
    const events = a.events();
    // The app saw SIGTERM only after its in-flight request was answered.
    expect(events.indexOf('end /slow')).toBeGreaterThanOrEqual(0);
    expect(events.indexOf('signal SIGTERM')).toBeGreaterThan(events.indexOf('end /slow'));
    expect(a.lines.at(-1)).toMatchObject({ msg: 'agent stopped', exitCode: 0, appKilled: false });
  }, 60_000);

  it('forwards SIGHUP to the app and keeps running; SIGINT drains and stops the app with SIGINT', async () => {
    const a = await run();
    await a.waitForLog('agent healthy');
    a.kill('SIGHUP');
    await a.waitForEvent((e) => e === 'signal SIGHUP');
    await new Promise((r) => setTimeout(r, 200));
    expect(alive(a.pid)).toBe(true);
    expect(a.events().filter((e) => e.startsWith('start'))).toHaveLength(1);

    a.kill('SIGINT');
    expect(await a.exited).toEqual({ code: 0, signal: null });
    expect(a.events()).toContain('signal SIGINT');
    expect(a.events()).not.toContain('signal SIGTERM');
  }, 60_000);

  it('restarts a crashed app with restart = "on-failure", reaps it and kills what it left in its group', async () => {
    const a = await run({ toml: 'restart = "on-failure"', env: { APP_EXIT_AFTER_MS: '600', APP_EXIT_CODE: '3', APP_CRASH_ONCE: '1', APP_CHILD: '1' } });
    await a.waitForLog('agent healthy');
    await a.waitForLog('restarting app');
    await a.waitForLog('agent healthy', 30_000, 2);
    const events = a.events();
    expect(events.filter((e) => e.startsWith('start'))).toHaveLength(2);
    expect(events).toContain('exit 3');
    // The crashed run's `sleep` child went down with its group; nothing is left unreaped.
    const firstChild = Number(events.find((e) => e.startsWith('child'))!.split(' ')[1]);
    await until(() => (alive(firstChild) ? undefined : true), 5_000, 'the crashed app\'s child to be gone');
    expect(zombieChildren(a.pid)).toEqual([]);

    a.kill('SIGTERM');
    expect((await a.exited).code).toBe(0);
  }, 60_000);

  it('gives up after max_restarts within the window and exits with the app\'s code', async () => {
    const a = await run({ toml: 'restart = "always"\nmax_restarts = 2', env: { APP_EXIT_AFTER_MS: '200', APP_EXIT_CODE: '4' } });
    expect(await a.exited).toEqual({ code: 4, signal: null });
    expect(a.events().filter((e) => e.startsWith('start'))).toHaveLength(3);
    expect(a.lines.some((l) => l.msg === 'app restarted too often; giving up')).toBe(true);
  }, 60_000);

  it('with restart = "never" exits with the app\'s exit code and does not restart it', async () => {
    const a = await run({ toml: 'restart = "never"', env: { APP_EXIT_AFTER_MS: '300', APP_EXIT_CODE: '7' } });
    expect(await a.exited).toEqual({ code: 7, signal: null });
    expect(a.events().filter((e) => e.startsWith('start'))).toHaveLength(1);
    expect(a.lines.at(-1)).toMatchObject({ msg: 'agent stopped', reason: 'app exited', exitCode: 7 });
  }, 60_000);

  it('forces on a second SIGTERM: SIGKILLs the app and exits 143 without waiting for the drain', async () => {
    const a = await run({ toml: '[listen]\ndrain_timeout_ms = 60000' });
    const healthy = await a.waitForLog('agent healthy');
    const c = await client(healthy.publicPort as number);
    c.send({ type: 'Data', id: 1, payload: httpGet('/slow?ms=30000') });
    await a.waitForEvent((e) => e === 'begin /slow');
    const appPid = Number(a.events()[0]!.split(' ')[1]);
    a.kill('SIGTERM');
    await a.waitForLog('draining: no new connections, finishing in-flight requests');
    a.kill('SIGTERM');
    expect(await a.exited).toEqual({ code: 143, signal: null });
    await until(() => (alive(appPid) ? undefined : true), 5_000, 'the app to be killed');
    expect(a.events()).not.toContain('signal SIGTERM');
  }, 60_000);

  it('sends its logs and transaction records to the host log sink with log.sink = "vsock" (over a Unix socket here)', async () => {
    const sock = path.join(mkdtempSync(path.join(os.tmpdir(), 'ea-run-logs-')), 'logs.sock');
    const out = new PassThrough();
    let text = '';
    out.setEncoding('utf8');
    out.on('data', (c: string) => (text += c));
    const host = await startLogSinkServer({ listen: { kind: 'unix', path: sock }, output: out });
    try {
      // The agent runs in its temp dir (cwd): relative paths; the log target stands in for vsock CID 2.
      const b = await run({
        toml: '[log]\nsink = "vsock"',
        args: ['--config', 'enclave.toml', '--listen', 'tcp:0,0', '--nsm', 'simulator', '--state-dir', 'state', '--log-target', `unix:${sock}`],
      });
      const records = (): Record<string, unknown>[] => text.split('\n').filter((l) => l !== '').map((l) => JSON.parse(l) as Record<string, unknown>);
      const healthy = await until(() => records().find((r) => r.msg === 'agent healthy'), 30_000, 'agent healthy on the host');
      expect(b.lines).toEqual([]); // nothing on stdout
      const c = await client(healthy.publicPort as number);
      c.send({ type: 'Data', id: 1, payload: httpGet('/') });
      await dataReply(c, 1);
      const trx = await until(() => records().find((r) => typeof r.txid === 'string'), 10_000, 'a transaction record');
      expect(trx).toMatchObject({ level: 'info', method: 'GET', status: 200 });
      b.kill('SIGTERM');
      expect((await b.exited).code).toBe(0);
      await until(() => records().find((r) => r.msg === 'agent stopped'), 5_000, 'agent stopped on the host');
      expect(host.stats.invalid).toBe(0);
    } finally {
      await host.close();
    }
  }, 90_000);

  it('explains in one line that vsock is unavailable when the native addon is missing', async () => {
    const a = await run({ args: [], env: { ENCLAVE_AGENT_NATIVE_ADDON: '/nonexistent/enclave_native.node' } });
    expect(await a.exited).toEqual({ code: 1, signal: null });
    const err = a.stderr().trim().split('\n');
    expect(err).toHaveLength(1);
    expect(err[0]).toMatch(/^enclave-agent run: vsock is unavailable: the native addon was not built \(\/nonexistent\/enclave_native\.node does not exist; .*\)$/);
    expect(existsSync(`${a.dir}/events`)).toBe(false);
  }, 60_000);

  it.skipIf(existsSync('/dev/nsm'))('explains in one line that /dev/nsm is missing with --nsm device', async () => {
    const a = await run({ args: ['--listen', 'tcp:0,0', '--nsm', 'device'] });
    expect(await a.exited).toEqual({ code: 1, signal: null });
    expect(a.stderr().trim()).toMatch(/^enclave-agent run: \/dev\/nsm (not found: this is not a Nitro Enclave \(use --nsm simulator outside one\)|is unavailable: the native addon was not built .*)$/);
    expect(existsSync(`${a.dir}/events`)).toBe(false);
  }, 60_000);

  it('refuses to start without an app command, naming both ways to give one', async () => {
    const a = await run({ command: [] });
    expect(await a.exited).toEqual({ code: 2, signal: null });
    expect(a.stderr()).toContain('no app command: give it after "--" or set [app] command in enclave.toml');
  }, 60_000);
});
