// Live-tail connections (GET /api/live, held open) are bounded, in all and per client address: each holds a socket
// and up to 256 KiB of unsent events, and before, anyone who reached the page (or had its token) could open them
// without end. Past the per-address bound the answer is 429 LIVE_TAIL_CLIENT_FULL, past the total 503
// LIVE_TAIL_FULL, both with Retry-After; refusals are counted in /api/status (live.refused) and logged as one
// line per interval. A connection that closes gives its place back.
import http from 'node:http';
import pino from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { createLiveTail, DEFAULT_MAX_LIVE_CLIENTS, DEFAULT_MAX_LIVE_PER_CLIENT } from '../../src/host/activity-live.ts';
import { startActivityServer } from '../../src/host/activity-server.ts';
import { activityFixture } from './activity-fixture.ts';

const cleanup: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const f of cleanup.splice(0).reverse()) await f();
});

interface Opened {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: string;
  res: http.IncomingMessage;
}

/** GET /api/live from a chosen loopback source address: the answer's head, and the whole body when it is a refusal. */
function openLive(port: number, from: string): Promise<Opened> {
  return new Promise((resolve, reject) => {
    const req = http.get({ host: '127.0.0.1', port, path: '/api/live', localAddress: from, agent: false }, (res) => {
      if (res.statusCode === 200) return resolve({ status: 200, headers: res.headers, body: '', res });
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (body += c));
      res.on('end', () => resolve({ status: res.statusCode!, headers: res.headers, body, res }));
    });
    req.on('error', reject);
  });
}

describe('activity page: live-tail connections', () => {
  it('are bounded per client address (429) and in all (503), counted and logged; a closed one gives its place back', async () => {
    const { store, reader, lines, out } = await activityFixture('ea-activity-live-bounds-', cleanup);
    const live = createLiveTail({ maxClients: 3, maxPerClient: 2 });
    const srv = await startActivityServer({
      host: '127.0.0.1', port: 0, store, reader, live, logger: pino({ level: 'info' }, out),
      enclave: () => ({ name: null, mode: null, pcrs: null, pcrsSource: null, startedAt: null, restarts: null }),
    });
    cleanup.push(() => srv.close());
    const held: http.IncomingMessage[] = [];
    cleanup.push(() => held.forEach((r) => r.destroy()));
    const open = async (from: string): Promise<Opened> => {
      const o = await openLive(srv.port, from);
      if (o.status === 200) held.push(o.res);
      return o;
    };
    const status = async (): Promise<{ clients: number; refused: number }> => ((await (await fetch(`${srv.url}api/status`)).json()) as { live: { clients: number; refused: number } }).live;

    expect((await open('127.0.0.1')).status).toBe(200);
    expect((await open('127.0.0.1')).status).toBe(200);
    const perClient = await open('127.0.0.1');
    expect(perClient.status).toBe(429);
    expect(perClient.headers['retry-after']).toBe('10');
    expect(perClient.headers['x-content-type-options']).toBe('nosniff');
    expect((JSON.parse(perClient.body) as { error: { code: string } }).error.code).toBe('LIVE_TAIL_CLIENT_FULL');
    expect((await open('127.0.0.2')).status).toBe(200);
    const full = await open('127.0.0.3');
    expect(full.status).toBe(503);
    expect((JSON.parse(full.body) as { error: { code: string } }).error.code).toBe('LIVE_TAIL_FULL');
    expect(await status()).toMatchObject({ clients: 3, refused: 2 });

    // One of 127.0.0.1's closes: that address, and the total, have a place again.
    held.shift()!.destroy();
    await expect.poll(async () => (await status()).clients).toBe(2);
    expect((await open('127.0.0.1')).status).toBe(200);
    expect((await open('127.0.0.4')).status).toBe(503);
    expect(await status()).toMatchObject({ clients: 3, refused: 3 });

    await srv.close();
    expect(lines.filter((l) => l.msg === 'activity page: live-tail connections refused')).toEqual([
      expect.objectContaining({ level: 40, total: 3, counts: { 'max-per-client': 1, 'max-clients': 2 } }),
    ]);
  });

  it('defaults to 64 in all and 16 per address', () => {
    expect([DEFAULT_MAX_LIVE_CLIENTS, DEFAULT_MAX_LIVE_PER_CLIENT]).toEqual([64, 16]);
  });
});
