// The local API's bound on concurrent connections (connection-cap.ts): only the app reaches it, but a runaway app
// must not take the agent's file descriptors. Past maxConnections at once a new connection is answered 503
// API_TOO_MANY_CONNECTIONS (JSON, Connection: close) and closed; once one closes, a new one is served again.
// Refusals are counted in one log line per interval (written at close). Before: every connection was served.
import http from 'node:http';
import net, { type AddressInfo } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { cappedFront, REFUSING_AT_ONCE } from '../../src/api/connection-cap.ts';
import { API_CONNECTIONS_REFUSED_MESSAGE, startApiServer, type ApiServer } from '../../src/api/server.ts';
import type { Nsm } from '../../src/attestation/nsm.ts';
import { Keyring } from '../../src/crypto/keyring.ts';
import { memoryLog } from '../faults/stack.ts';

const nsm: Nsm = { attest: () => Promise.reject(new Error('unused')), random: (n) => Promise.resolve(new Uint8Array(n)) };
const sockets: net.Socket[] = [];
let api: ApiServer | undefined;

afterEach(async () => {
  for (const s of sockets.splice(0)) s.destroy();
  await api?.close().catch(() => {});
  api = undefined;
});

function connect(port: number, opts: { allowHalfOpen?: boolean } = {}): Promise<net.Socket> {
  const s = net.connect({ port, host: '127.0.0.1', ...opts });
  sockets.push(s);
  s.on('error', () => {});
  return new Promise((resolve) => s.once('connect', () => resolve(s)));
}

/** Writes a GET /health on `s` (kept alive unless `close`) and resolves with the bytes read until the answer's end or the connection's. */
function health(s: net.Socket, port: number, close = false): Promise<string> {
  return new Promise((resolve) => {
    let buf = '';
    const done = (): void => {
      s.off('data', onData);
      resolve(buf);
    };
    const onData = (d: Buffer): void => {
      buf += d.toString('latin1');
      const end = buf.indexOf('\r\n\r\n');
      const length = /content-length: (\d+)/i.exec(buf);
      if (end >= 0 && length !== null && buf.length >= end + 4 + Number(length[1])) done();
    };
    s.on('data', onData);
    s.once('close', done);
    s.write(`GET /health HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\n${close ? 'Connection: close\r\n' : ''}\r\n`);
  });
}

describe('local API: concurrent connections', () => {
  it('refuses a connection past the bound with a typed 503, and serves again once one closes', { timeout: 20_000 }, async () => {
    const log = memoryLog('info');
    api = await startApiServer({ keyring: Keyring.generate(), nsm, port: 0, maxConnections: 2, logger: log.logger, refusalLogIntervalMs: 600_000 });
    const port = api.port;
    const [a, b] = [await connect(port), await connect(port)];
    // Both served (and kept open): the server has taken them in.
    for (const s of [a, b]) expect(await health(s, port)).toMatch(/^HTTP\/1\.1 200 /);
    for (let i = 0; i < 3; i++) {
      const over = await connect(port);
      const answer = await health(over, port);
      expect(answer).toMatch(/^HTTP\/1\.1 503 /);
      expect(answer).toMatch(/\r\nconnection: close\r\n/i);
      expect(JSON.parse(answer.slice(answer.indexOf('\r\n\r\n') + 4))).toMatchObject({ error: 'API_TOO_MANY_CONNECTIONS' });
      await new Promise((r) => (over.destroyed ? r(null) : over.once('close', r))); // the agent closes it
    }
    a.destroy();
    await expect
      .poll(async () => {
        const again = await connect(port);
        return (await health(again, port, true)).slice(0, 12);
      })
      .toBe('HTTP/1.1 200');
    await api.close();
    api = undefined;
    const lines = log.records().filter((r) => r.msg === API_CONNECTIONS_REFUSED_MESSAGE);
    expect(lines).toHaveLength(1);
    expect((lines[0]!.counts as Record<string, number>)['max-connections']).toBeGreaterThanOrEqual(3);
  });

  it('closes a refused connection whose client keeps sending, at the linger bound (as every lingering close)', { timeout: 20_000 }, async () => {
    // Before (the refusal's own idle timer), a client trickling a byte every 50 ms held its refusal slot for good.
    const server = http.createServer();
    const front = cappedFront(server, 1, () => {}, 300, 600);
    await new Promise<void>((r) => front.listen(0, '127.0.0.1', r));
    const port = (front.address() as AddressInfo).port;
    const held = await connect(port);
    const over = await connect(port, { allowHalfOpen: true });
    const trickle = setInterval(() => over.writable && over.write('x'), 50);
    try {
      const closed = await new Promise<boolean>((resolve) => {
        const bound = setTimeout(() => resolve(false), 10_000);
        over.once('close', () => {
          clearTimeout(bound);
          resolve(true);
        });
      });
      expect(closed).toBe(true);
    } finally {
      clearInterval(trickle);
      held.destroy();
      await new Promise((r) => front.close(r));
      server.close();
    }
  });

  it(`closes a connection at accept once ${REFUSING_AT_ONCE} more than the bound are open`, { timeout: 20_000 }, async () => {
    // The front alone, refused connections kept (no linger limit in the test's time): their clients hold them open.
    const served: net.Socket[] = [];
    const server = http.createServer();
    server.on('connection', (s: net.Socket) => served.push(s));
    const refusals: string[] = [];
    const front = cappedFront(server, 1, (why) => refusals.push(why), 600_000);
    await new Promise<void>((r) => front.listen(0, '127.0.0.1', r));
    try {
      const port = (front.address() as AddressInfo).port;
      const half = (): Promise<net.Socket> => connect(port, { allowHalfOpen: true });
      await half();
      await expect.poll(() => served.length).toBe(1);
      const refused = await Promise.all(Array.from({ length: REFUSING_AT_ONCE }, half));
      await Promise.all(refused.map((s) => new Promise((r) => s.once('data', r)))); // each answered 503
      const extra = await half();
      const got = await new Promise<string>((resolve) => {
        let buf = '';
        extra.on('data', (d: Buffer) => (buf += d.toString('latin1')));
        extra.once('end', () => resolve(buf));
        extra.once('close', () => resolve(buf));
      });
      expect(got).toBe(''); // closed at accept, unanswered
      expect(refusals.filter((r) => r === 'max-connections')).toHaveLength(REFUSING_AT_ONCE);
      expect(refusals.filter((r) => r === 'closed-at-accept')).toHaveLength(1);
      expect(served).toHaveLength(1);
    } finally {
      for (const s of served) s.destroy();
      for (const s of sockets.splice(0)) s.destroy();
      await new Promise((r) => front.close(r));
      server.close();
    }
  });
});
