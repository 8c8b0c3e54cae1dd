// Streams to the host dialer opened ahead of need (src/egress/dialer-pool.ts), against the real host dialer:
// a flow takes a stream the host has already accepted; unused streams are closed quietly after their idle time;
// a stream the host closed is never handed out; close() leaves nothing open.
import net from 'node:net';
import type { Duplex } from 'node:stream';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { dialerPool } from '../../src/egress/dialer-pool.ts';
import { openFlow } from '../../src/egress/flow-client.ts';
import { startEgressDialer, type EgressDialer } from '../../src/host/egress-dialer.ts';
import { exchange, startExchangeServer, type ExchangeServer } from './helpers.ts';

let echo: ExchangeServer;
let dialer: EgressDialer;
let accepted = 0;
let opened = 0; // connects started through `connect`
let front: net.Server; // counts the connections to the dialer, then passes them through
const warnings: string[] = [];

const connect = (): Promise<Duplex> =>
  new Promise((resolve, reject) => {
    opened++;
    const s = net.connect({ host: '127.0.0.1', port: (front.address() as net.AddressInfo).port }, () => resolve(s));
    s.once('error', reject);
  });

async function waitUntil(cond: () => boolean): Promise<void> {
  for (let i = 0; i < 500 && !cond(); i++) await new Promise((r) => setTimeout(r, 10));
  expect(cond()).toBe(true);
}

beforeAll(async () => {
  echo = await startExchangeServer('127.0.0.2', (b) => Buffer.concat([b, b]));
  const logger = pino({ level: 'debug' }, { write: (line: string) => void (JSON.parse(line).level >= 40 && warnings.push(line)) });
  dialer = await startEgressDialer({ listen: { kind: 'tcp', port: 0 }, allowNonGlobal: ['127.0.0.2/32'], resolvers: [], logger });
  front = net.createServer({ allowHalfOpen: true }, (s) => {
    accepted++;
    const up = net.connect({ host: '127.0.0.1', port: dialer.port!, allowHalfOpen: true });
    s.on('error', () => up.destroy());
    up.on('error', () => s.destroy());
    s.pipe(up);
    up.pipe(s);
    s.on('close', () => up.destroy());
    up.on('close', () => s.destroy());
  });
  await new Promise<void>((r) => front.listen({ host: '127.0.0.1', port: 0 }, () => r()));
});
afterAll(async () => {
  front?.close();
  await dialer?.close();
  await echo?.close();
});

const req = () => ({ ip: '127.0.0.2', port: echo.port, timeoutMs: 2_000, name: 'ok.test' });

describe('dialer pool', () => {
  it('hands a flow a stream opened ahead of need, and replaces it once that flow has closed', async () => {
    const pool = dialerPool(connect, { size: 2, maxIdleMs: 60_000 });
    try {
      const first = await openFlow(pool.connect, req()); // nothing pre-opened yet: connects itself
      expect(pool.idle).toBe(0);
      first.destroy();
      await waitUntil(() => pool.idle === 2 && accepted === opened);
      const before = accepted;
      const second = await openFlow(pool.connect, req());
      expect((await exchange(second as net.Socket, Buffer.from('abc'))).toString()).toBe('abcabc');
      expect(pool.idle).toBe(1); // taken from the pool; not replaced while its flow is open
      expect(accepted).toBe(before);
      second.destroy();
      await waitUntil(() => pool.idle === 2 && accepted === opened);
      expect(accepted).toBe(before + 1);
    } finally {
      pool.close();
    }
    await waitUntil(() => dialer.activeFlows === 0);
  });

  it('closes idle streams after maxIdleMs without a byte: the host logs no warning and serves the next flow fresh', async () => {
    warnings.length = 0;
    const pool = dialerPool(connect, { size: 2, maxIdleMs: 50 });
    try {
      (await openFlow(pool.connect, req())).destroy();
      await waitUntil(() => pool.idle === 2);
      await waitUntil(() => pool.idle === 0);
      await new Promise((r) => setTimeout(r, 50)); // let the host see the closes
      expect(warnings).toEqual([]);
      const again = await openFlow(pool.connect, req());
      expect((await exchange(again as net.Socket, Buffer.from('x'))).toString()).toBe('xx');
    } finally {
      pool.close();
    }
  });

  it('never hands out a stream the host closed while it was idle', async () => {
    const sockets: net.Socket[] = [];
    const closer = net.createServer((s) => {
      sockets.push(s);
      s.on('error', () => {});
    });
    await new Promise<void>((r) => closer.listen({ host: '127.0.0.1', port: 0 }, () => r()));
    const open = (): Promise<Duplex> =>
      new Promise((resolve, reject) => {
        const s = net.connect({ host: '127.0.0.1', port: (closer.address() as net.AddressInfo).port }, () => resolve(s));
        s.once('error', reject);
      });
    const pool = dialerPool(open, { size: 1, maxIdleMs: 60_000 });
    try {
      const first = await pool.connect();
      first.destroy(); // its flow is over: the pool opens a replacement
      await waitUntil(() => pool.idle === 1 && sockets.length === 2);
      sockets[1]!.destroy(); // the host side of the idle stream goes away
      await waitUntil(() => pool.idle === 0);
      const next = await pool.connect();
      expect(next.destroyed).toBe(false);
      expect(sockets.length).toBe(3);
      next.destroy();
    } finally {
      pool.close();
      for (const s of sockets) s.destroy();
      closer.close();
    }
  });

  it('close() ends the idle streams and opens no more', async () => {
    const pool = dialerPool(connect, { size: 2, maxIdleMs: 60_000 });
    (await openFlow(pool.connect, req())).destroy();
    await waitUntil(() => pool.idle === 2 && accepted === opened);
    pool.close();
    expect(pool.idle).toBe(0);
    const before = accepted;
    const s = await pool.connect(); // still works, without refilling
    s.destroy();
    await new Promise((r) => setTimeout(r, 50));
    await waitUntil(() => accepted === opened);
    expect(accepted).toBe(before + 1);
    expect(pool.idle).toBe(0);
  });
  it('a retired stream reset before the host closes it is not an uncaught error', async () => {
    const { PassThrough } = await import('node:stream');
    const streams: InstanceType<typeof PassThrough>[] = [];
    const pool = dialerPool(() => {
      const s = new PassThrough();
      streams.push(s);
      return Promise.resolve(s);
    }, { size: 1, maxIdleMs: 20 });
    await pool.connect().then((s) => s.destroy()); // starts the refill
    await waitUntil(() => streams.length === 2 && streams[1]!.writableEnded); // the idle one was retired (ended)
    // An ECONNRESET arriving now, after the pool let go of it: with no listener Node would throw it.
    streams[1]!.destroy(Object.assign(new Error('read ECONNRESET'), { code: 'ECONNRESET' }));
    await new Promise((r) => setTimeout(r, 20));
    expect(streams[1]!.destroyed).toBe(true);
    pool.close();
  });
});
