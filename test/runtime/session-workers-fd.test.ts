// [limits] workers: a connection handed to a session worker that is terminated before it takes it (the stop
// bound expired while the worker was stalled) is closed by the main thread — its client sees the close and the
// process's descriptors return to where they were. And the main thread never closes a descriptor a worker
// took: the ledger's sweep leaves alone a number that was closed and reused meanwhile. A connection waiting for
// the first thread to start when the workers drain is closed, its session slot freed and its count on that thread
// taken back, and no thread starts after.
import { closeSync, fstatSync, mkdtempSync, openSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { createNsmSimulator } from '../../src/attestation/simulator.ts';
import { configFromObject } from '../../src/config.ts';
import { DecryptPool } from '../../src/crypto/decrypt-pool.ts';
import { Keyring } from '../../src/crypto/keyring.ts';
import { AgentMetrics } from '../../src/ops/metrics.ts';
import { resolveLimits } from '../../src/responder/limits.ts';
import { SharedAdmission } from '../../src/responder/shared-admission.ts';
import { SharedLock } from '../../src/responder/shared-lock.ts';
import { limitsFrom } from '../../src/runtime/forwarder-setup.ts';
import { startSessionWorkers, type SessionWorkers } from '../../src/runtime/session-workers.ts';
import { HandoffLedger, type HandedConnection } from '../../src/transport/handoff.ts';
import { nativeAvailable } from '../../src/transport/native.ts';
import { encodeProxyV2 } from '../../src/transport/proxy-v2.ts';
import { memoryLog } from '../faults/stack.ts';
import { closed } from '../native/helpers.ts';
import { until } from './worker-services/helpers.ts';

/** The clients-table lock's Int32 word in SharedAdmission's buffer (shared-admission.ts, W.clientsLock). */
const CLIENTS_LOCK_WORD = 5;
/** Connections handed after the first worker stalled (half of them reach it). */
const QUEUED = 8;

const openFds = (): number => readdirSync('/proc/self/fd').length;
/** This process's OS threads (worker threads are among them). */
const osThreads = (): number => Number(/^Threads:\s+(\d+)/m.exec(readFileSync('/proc/self/status', 'utf8'))?.[1]);

const cleanups: (() => unknown)[] = [];
afterAll(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

/** An NSM simulator, a keyring, shared admission and a decrypt pool for two session workers; `start` starts them. */
async function twoWorkers(app: string, extra: Record<string, unknown>, level: 'warn' | 'info') {
  const stateDir = mkdtempSync(join(tmpdir(), `${app}-`));
  cleanups.push(() => rmSync(stateDir, { recursive: true, force: true }));
  const sim = await createNsmSimulator({ stateDir, identity: { agentVersion: 'test', app, config: '' } });
  const keyring = Keyring.generate();
  const config = configFromObject({ mode: 'http', app: { port: 9, startup_grace_ms: 0 }, ...extra });
  const log = memoryLog(level);
  const admission = SharedAdmission.create({ limits: resolveLimits(limitsFrom(config)), workers: 2, maxConcurrentDecrypts: config.limits.max_concurrent_decrypts });
  const decryptPool = new DecryptPool(keyring);
  cleanups.push(() => decryptPool.close());
  const start = (): Promise<SessionWorkers> =>
    startSessionWorkers({
      count: 2,
      config,
      keyring,
      nsm: sim,
      logger: log.logger,
      metrics: new AgentMetrics({ mode: 'http', version: 'test', processMetrics: false }),
      admission,
      decryptPool,
      attestationKey: keyring.attestationPublicKey(),
    });
  return { log, admission, start };
}

function hand(h: Partial<HandedConnection> & { fd: number }): HandedConnection {
  return { kind: 'socket', info: { remote: 'test', transport: 'tcp' }, ...h } as HandedConnection;
}

describe('HandoffLedger', () => {
  it('closes only the unconfirmed fds still open on the file handed, once', () => {
    const dir = mkdtempSync(join(tmpdir(), 'ledger-'));
    cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
    const file = (n: string): number => openSync(join(dir, n), 'w');
    const ledger = new HandoffLedger();
    const untaken = hand({ fd: file('untaken') });
    const confirmed = hand({ fd: file('confirmed') });
    const reused = hand({ fd: file('reused') });
    for (const h of [untaken, confirmed, reused]) ledger.record(h);
    expect(new Set([untaken.handoff, confirmed.handoff, reused.handoff]).size).toBe(3);
    ledger.confirm([confirmed.handoff, 'junk', -1]);
    // The receiver took `reused` and closed it without its receipt arriving; the number went to another file.
    closeSync(reused.fd);
    const other = file('other');
    expect(other).toBe(reused.fd);
    expect(ledger.outstanding).toBe(2);

    expect(ledger.sweep()).toBe(1);
    expect(() => fstatSync(untaken.fd)).toThrow(); // closed by the sweep
    expect(fstatSync(confirmed.fd).isFile()).toBe(true); // the receiver's: left alone
    expect(fstatSync(other).isFile()).toBe(true); // someone else's file under a reused number: left alone
    expect(ledger.sweep()).toBe(0);
    // After the sweep the receiver is gone: a late hand-off is closed at once.
    const late = hand({ fd: file('late') });
    ledger.record(late);
    expect(() => fstatSync(late.fd)).toThrow();
    closeSync(confirmed.fd);
    closeSync(other);
  });
});

describe.runIf(nativeAvailable())('session workers stopped before taking their connections', () => {
  it('closes every handed connection a terminated worker never adopted: clients see the close, fds return to the baseline', async () => {
    const { log, admission, start } = await twoWorkers('workers-fd', { accept_proxy_protocol: true }, 'warn');
    const lock = new SharedLock(new Int32Array(admission.init.buffer), CLIENTS_LOCK_WORD, false);
    let locked = false;
    cleanups.push(() => locked && lock.unlock());

    const baseline = openFds();
    const workers: SessionWorkers = await start();
    let stopped = false;
    cleanups.push(() => (stopped ? undefined : workers.close()));
    const server = net.createServer({ pauseOnConnect: true }, (sock) => workers.handle(sock, { remote: `${sock.remoteAddress}:${sock.remotePort}`, transport: 'tcp' }));
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    cleanups.push(() => new Promise((resolve) => server.close(resolve)));
    const port = (server.address() as net.AddressInfo).port;
    const clients: net.Socket[] = [];
    cleanups.push(() => clients.forEach((c) => c.destroy()));
    const connect = async (first?: Uint8Array): Promise<net.Socket> => {
      const c = net.connect(port, '127.0.0.1');
      c.on('error', () => {});
      clients.push(c);
      await new Promise((resolve) => c.once('connect', resolve));
      if (first !== undefined) c.write(first);
      return c;
    };

    // The threads start on demand: the first with a connection, the second with one while the first holds one
    // (both connections stay on worker 1, idle, waiting for a PROXY header).
    await connect();
    await until(() => workers.started === 1);
    await connect();
    await until(() => workers.started === 2);
    // Worker 2 (the one with no connection) takes the next and, reading its PROXY header, blocks on the clients
    // lock held here: from then on it reads no message. Every other connection alternates between the two workers.
    lock.lock();
    locked = true;
    await connect(encodeProxyV2({ source: { address: '192.0.2.7', port: 4000 }, destination: { address: '10.0.0.1', port: 443 } }));
    await until(() => Atomics.load(new Int32Array(admission.init.buffer), CLIENTS_LOCK_WORD) === 2); // a worker sleeps on it
    for (let i = 0; i < QUEUED; i++) await connect();
    await until(() => workers.sessionCount === QUEUED + 3);

    // Worker 1 stops at once; worker 2 does not answer within the close bound and is terminated.
    await workers.close();
    stopped = true;
    lock.unlock();
    locked = false;
    const swept = log.records().filter((r) => r.msg === 'closed connections handed to a session worker that stopped before taking them');
    expect(swept.map((r) => r.connections)).toEqual([QUEUED / 2]);
    // Every client sees its connection closed: the queued ones, the adopted ones and the stalled one.
    await Promise.all(clients.map((c) => closed(c)));
    await new Promise((resolve) => server.close(resolve));
    expect(openFds()).toBe(baseline);
  }, 60_000);

  it('drain while the first thread starts: the connection waiting for it is closed, its slot freed, no fd left, no thread started after', async () => {
    const { log, admission, start } = await twoWorkers('workers-start', {}, 'info');
    const baseline = openFds();
    const threadsBefore = osThreads();
    const workers = await start();
    let stopped = false;
    cleanups.push(() => (stopped ? undefined : workers.close()));
    expect(workers.started).toBe(0);
    let drained: Promise<void> | undefined;
    const server = net.createServer({ pauseOnConnect: true }, (sock) => {
      workers.handle(sock, { remote: `${sock.remoteAddress}:${sock.remotePort}`, transport: 'tcp' });
      // In the same turn: thread 1 is starting (it cannot have answered), the connection waits for it.
      drained ??= workers.drain(5_000);
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    cleanups.push(() => new Promise((resolve) => server.close(resolve)));
    const port = (server.address() as net.AddressInfo).port;
    const connect = async (): Promise<net.Socket> => {
      const c = net.connect(port, '127.0.0.1');
      c.on('error', () => {});
      cleanups.push(() => c.destroy());
      await new Promise((resolve) => c.once('connect', resolve));
      return c;
    };

    const waiting = await connect();
    await closed(waiting);
    expect(admission.sessions.count).toBe(0);
    expect(workers.refusedCount).toBe(1);
    expect(log.records().filter((r) => r.msg === 'closed connections that waited for a session thread to start').map((r) => r.connections)).toEqual([1]);
    // Nor does the thread count it any more (it was counted while it waited: the load that picks a thread).
    expect(workers.connectionsByThread).toEqual([0]);
    // Draining: refused at once, and no other thread starts.
    await closed(await connect());
    expect(workers.refusedCount).toBe(2);
    await drained;
    await workers.close();
    stopped = true;
    expect(log.records().filter((r) => r.msg === 'session thread started').map((r) => r.worker)).not.toContain(2);
    expect(workers.started).toBeLessThanOrEqual(1);
    // The thread that was starting was waited for and stopped: none is left.
    await until(() => osThreads() <= threadsBefore);
    await new Promise((resolve) => server.close(resolve));
    expect(openFds()).toBe(baseline);
  }, 60_000);
});
