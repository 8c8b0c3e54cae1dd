// The activity page's listening socket after it listens: an error accepting one connection (ENOBUFS, a network
// error pending on it) is that connection's, not the page's. Node emits it on the listening server; 907c5a1 put a
// net.Server in front of the page (cappedFront) with only its listen-time 'error' handler, left registered: the
// first accept error closed the http.Server's timeout checks, the second had no listener and ended the process.
// Here the front server is caught at creation (node:net wrapped) and the errors emitted on it as Node would.
import type * as NodeNet from 'node:net';
import type net from 'node:net';
import pino from 'pino';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { createLiveTail } from '../../src/host/activity-live.ts';
import { startActivityServer } from '../../src/host/activity-server.ts';
import { activityFixture } from './activity-fixture.ts';

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
