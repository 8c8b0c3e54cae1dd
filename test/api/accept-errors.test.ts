// After they listen, an error accepting one connection (ENOBUFS, a network error pending on it) is that
// connection's, not the server's. Node emits it on the listening server: the activity page's and the local API's
// fronts (cappedFront, listened by listenFront) count and log it and serve on. Before: 907c5a1's page front had only
// its listen-time 'error' handler, left registered (the first accept error closed the http.Server's timeout checks,
// the second had no listener and ended the process); the local API's had none after listening (the first ended it).
// Here the fronts are caught at creation (node:net wrapped) and the errors emitted on them as Node would.
import type * as NodeNet from 'node:net';
import type net from 'node:net';
import pino from 'pino';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { API_ACCEPT_ERRORS_MESSAGE, startApiServer } from '../../src/api/server.ts';
import type { Nsm } from '../../src/attestation/nsm.ts';
import { Keyring } from '../../src/crypto/keyring.ts';
import { createLiveTail } from '../../src/host/activity-live.ts';
import { startActivityServer } from '../../src/host/activity-server.ts';
import { memoryLog } from '../faults/stack.ts';
import { activityFixture } from '../host/activity-fixture.ts';

const created = vi.hoisted(() => [] as net.Server[]);
vi.mock('node:net', async (importOriginal) => {
  const real = await importOriginal<typeof NodeNet>();
  const createServer = ((...args: Parameters<typeof real.createServer>) => {
    const s = real.createServer(...args);
    created.push(s);
    return s;
  }) as typeof real.createServer;
  return { ...real, createServer, default: { ...real, createServer } };
});

const cleanup: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const f of cleanup.splice(0).reverse()) await f();
});

const acceptError = (code: string): NodeJS.ErrnoException => Object.assign(new Error(`accept ${code}`), { code, errno: -105, syscall: 'accept' });

describe('activity page: an error accepting a connection', () => {
  it('is logged and the page serves on, however many come', async () => {
    const { store, reader, lines, out } = await activityFixture('ea-activity-accept-', cleanup);
    created.length = 0;
    const srv = await startActivityServer({
      host: '127.0.0.1', port: 0, store, reader, live: createLiveTail(), logger: pino({ level: 'info' }, out),
      enclave: () => ({ name: null, mode: null, pcrs: null, pcrsSource: null, startedAt: null, restarts: null }),
    });
    cleanup.push(() => srv.close());
    const front = created.find((s) => (s.address() as net.AddressInfo | null)?.port === srv.port);
    expect(front).toBeDefined();
    // Before: the second emit threw (no 'error' listener), which in the server is an uncaught exception.
    for (let i = 0; i < 3; i++) expect(() => front!.emit('error', acceptError('ENOBUFS'))).not.toThrow();
    expect((await fetch(`${srv.url}api/status`)).status).toBe(200);
    await srv.close();
    expect(lines.filter((l) => l.msg === 'activity page: connections not accepted')).toEqual([expect.objectContaining({ level: 40, counts: { ENOBUFS: 3 } })]);
  });
});

describe('local API: an error accepting a connection', () => {
  it('is logged and the API serves on, however many come', async () => {
    const nsm: Nsm = { attest: () => Promise.reject(new Error('unused')), random: (n) => Promise.resolve(new Uint8Array(n)) };
    const log = memoryLog('info');
    created.length = 0;
    const api = await startApiServer({ keyring: Keyring.generate(), nsm, port: 0, logger: log.logger, refusalLogIntervalMs: 600_000 });
    cleanup.push(() => api.close().catch(() => {}));
    const front = created.find((s) => (s.address() as net.AddressInfo | null)?.port === api.port);
    expect(front).toBeDefined();
    // Before: the first emit threw (no 'error' listener once listening).
    for (let i = 0; i < 3; i++) expect(() => front!.emit('error', acceptError('ENOBUFS'))).not.toThrow();
    expect((await fetch(`http://127.0.0.1:${api.port}/health`)).status).toBe(200);
    await api.close();
    expect(log.records().filter((r) => r.msg === API_ACCEPT_ERRORS_MESSAGE)).toEqual([expect.objectContaining({ level: 40, counts: { ENOBUFS: 3 } })]);
  });
});
