// The activity page's server bounds its connections in all, not only its live tails: past `maxConnections` at
// once a new connection is answered 503 ACTIVITY_TOO_MANY_CONNECTIONS (the cap in the body, the page's security
// headers, Retry-After) and closed; refusals are counted in /api/status and logged as one line per interval, and a
// closed connection gives its place back. Before, the server took connections without end (each a socket and
// parser state): whoever could reach the page could hold as many as it liked.
import net from 'node:net';
import pino from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { createLiveTail } from '../../src/host/activity-live.ts';
import { DEFAULT_MAX_PAGE_CONNECTIONS, startActivityServer } from '../../src/host/activity-server.ts';
import { startActivityService } from '../../src/host/activity-service.ts';
import { activityFixture } from './activity-fixture.ts';

const cleanup: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const f of cleanup.splice(0).reverse()) await f();
});

const ENCLAVE = () => ({ name: null, mode: null, pcrs: null, pcrsSource: null, startedAt: null, restarts: null });

interface Answer {
  status: number;
  head: string;
  body: string;
}

/** A raw keep-alive connection to the page: `get` sends one GET on it and reads its whole answer. */
function connection(port: number): { socket: net.Socket; get(path: string): Promise<Answer> } {
  const socket = net.connect(port, '127.0.0.1');
  socket.setEncoding('utf8');
  socket.on('error', () => {});
  cleanup.push(() => void socket.destroy());
  let text = '';
  let waiting: (() => void) | null = null;
  socket.on('data', (c: string) => {
    text += c;
    waiting?.();
  });
  socket.on('close', () => waiting?.());
  return {
    socket,
    get: (path) =>
      new Promise<Answer>((resolve, reject) => {
        text = '';
        waiting = () => {
          const end = text.indexOf('\r\n\r\n');
          const length = end < 0 ? NaN : Number(/content-length: (\d+)/i.exec(text.slice(0, end))?.[1]);
          if (end >= 0 && Buffer.byteLength(text.slice(end + 4)) >= length) {
            waiting = null;
            resolve({ status: Number(text.slice(9, 12)), head: text.slice(0, end), body: text.slice(end + 4, end + 4 + length) });
          } else if (socket.destroyed) reject(new Error(`closed with ${JSON.stringify(text.slice(0, 40))}`));
        };
        socket.write(`GET ${path} HTTP/1.1\r\nhost: 127.0.0.1:${port}\r\nconnection: keep-alive\r\n\r\n`);
      }),
  };
}

const counts = (a: Answer): { max: number; refused: number } => (JSON.parse(a.body) as { connections: { max: number; refused: number } }).connections;

describe('activity page: connections in all', () => {
  it('are bounded: past the cap 503 ACTIVITY_TOO_MANY_CONNECTIONS naming it, counted and logged; a closed one gives its place back', async () => {
    const { store, reader, lines, out } = await activityFixture('ea-activity-conn-cap-', cleanup);
    const srv = await startActivityServer({ host: '127.0.0.1', port: 0, store, reader, live: createLiveTail(), enclave: ENCLAVE, maxConnections: 2, logger: pino({ level: 'info' }, out) });
    cleanup.push(() => srv.close());
    const a = connection(srv.port);
    const b = connection(srv.port);
    expect((await a.get('/api/status')).status).toBe(200);
    expect((await b.get('/api/status')).status).toBe(200);

    // Both held open (keep-alive): a third is refused, and says why, with the cap.
    const refused = await connection(srv.port).get('/api/status');
    expect(refused.status).toBe(503);
    expect(refused.head).toMatch(/\r\nretry-after: 1\r\n/i);
    expect(refused.head).toMatch(/\r\nconnection: close$/i);
    expect(refused.head).toMatch(/\r\nx-content-type-options: nosniff\r\n/i);
    expect(refused.head).toMatch(/\r\ncontent-security-policy: default-src 'self'/i);
    const { error } = JSON.parse(refused.body) as { error: { code: string; message: string; max: number } };
    expect(error).toMatchObject({ code: 'ACTIVITY_TOO_MANY_CONNECTIONS', max: 2 });
    expect(error.message).toContain('at most 2 connections');
    expect(counts(await b.get('/api/status'))).toEqual({ max: 2, refused: 1 });

    // One closes: a new connection is served (once the server has seen the close).
    a.socket.destroy();
    let c = connection(srv.port);
    await expect
      .poll(async () => {
        const r = await c.get('/api/status').catch(() => null);
        if (r?.status !== 200) c = connection(srv.port);
        return r?.status;
      })
      .toBe(200);
    expect(counts(await c.get('/api/status')).refused).toBeGreaterThanOrEqual(1);

    await srv.close();
    const logged = lines.filter((l) => l.msg === 'activity page: connections refused');
    expect(logged).toEqual([expect.objectContaining({ level: 40, counts: { 'max-connections': expect.any(Number) as number } })]);
  });

  it('defaults to 256; bounds that are not positive integers are typed errors, the server\'s and the live tail\'s', async () => {
    expect(DEFAULT_MAX_PAGE_CONNECTIONS).toBe(256);
    const { store, reader } = await activityFixture('ea-activity-conn-cap-', cleanup);
    for (const maxConnections of [0, -1, 1.5, Number.NaN]) {
      await expect(startActivityServer({ host: '127.0.0.1', port: 0, store, reader, live: createLiveTail(), enclave: ENCLAVE, maxConnections })).rejects.toMatchObject({ code: 'ACTIVITY_SERVER_BAD_OPTIONS' });
    }
    // Checked before the database is opened: this file is never created.
    for (const bad of [{ maxLive: 0 }, { maxLivePerAddress: 2.5 }]) {
      await expect(startActivityService({ file: '/nonexistent-dir/never-opened.db', ui: { host: '127.0.0.1', port: 0, ...bad } })).rejects.toMatchObject({ code: 'ACTIVITY_SERVER_BAD_OPTIONS' });
    }
  });
});
