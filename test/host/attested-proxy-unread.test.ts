// `enclave-agent proxy` and local clients that do not read their answers. The enclave sends whether anyone reads
// or not (no per-stream flow control: the SDK queues up to 64 MiB per stream, 64 streams to a session), so what a
// slow client leaves unread is held in the proxy; it is bounded per local connection (that connection closed) and
// across all of them (the connection holding the most closed), until the local client has read it. The enclave is a stand-in Client whose bodies push bytes the way the SDK's do, whatever the
// reader's pace, and record whether they were released (cancelled).
import http from 'node:http';
import net from 'node:net';
import type { Logger } from 'pino';
import { afterEach, describe, expect, it, vi } from 'vitest';
import type { Client, UpgradedStream } from '../../src/client/index.ts';
import { startAttestedProxy, type AttestedProxy } from '../../src/host/attested-proxy.ts';

const MiB = 1024 * 1024;
let proxy: AttestedProxy | null = null;
const sockets: net.Socket[] = [];

afterEach(async () => {
  for (const s of sockets.splice(0)) s.destroy();
  await proxy?.close();
  proxy = null;
});

/** A body that pushes `total` bytes in `piece`-sized chunks, one per event-loop turn, read or not. */
function pushBody(total: number, piece: number): { body: ReadableStream<Uint8Array>; cancelled: () => boolean; pushed: () => number } {
  let cancelled = false;
  let pushed = 0;
  const body = new ReadableStream<Uint8Array>({
    start(c) {
      const push = (): void => {
        if (cancelled) return;
        if (pushed >= total) return c.close();
        c.enqueue(new Uint8Array(piece).fill(0x61));
        pushed += piece;
        setImmediate(push);
      };
      push();
    },
    cancel() {
      cancelled = true;
    },
  });
  return { body, cancelled: () => cancelled, pushed: () => pushed };
}

/** A connection that sends `bytes` and then reads nothing, ever. */
function neverReads(bytes: string): Promise<net.Socket> {
  return new Promise((resolve) => {
    const s = net.connect(proxy!.port, '127.0.0.1', () => s.write(bytes, () => resolve(s)));
    s.pause();
    s.on('error', () => {});
    sockets.push(s);
  });
}

/** A stand-in Client whose fetch answers each path with its body. */
function answering(bodies: Record<string, ReadableStream<Uint8Array>>): Client {
  return {
    attestation: { moduleId: 'i-test-enc' },
    fetch: (url: string) => Promise.resolve(new Response(bodies[url] ?? null)),
    upgrade: () => Promise.reject(new Error('no upgrade here')),
    close: () => Promise.resolve(),
  } as unknown as Client;
}

/** GETs `path` through the proxy, reading as it arrives; resolves to the body's length. */
function readAll(path: string): Promise<number> {
  return new Promise<number>((resolve, reject) => {
    http.get({ host: '127.0.0.1', port: proxy!.port, path, agent: false }, (res) => {
      let n = 0;
      res.on('data', (c: Buffer) => (n += c.length));
      res.on('end', () => resolve(n));
      res.on('error', reject);
    }).on('error', reject);
  });
}

function warnings(): { logger: Logger; codes: string[] } {
  const codes: string[] = [];
  const logger = { info: () => {}, warn: (o: { code?: string }) => codes.push(o.code ?? '') } as unknown as Logger;
  return { logger, codes };
}

describe('attested proxy: answers a local client does not read', () => {
  it('closes the connection holding the most once all unread answers pass the budget; a client that reads keeps its own', async () => {
    const slow = pushBody(48 * MiB, 64 * 1024); // the SDK would hold all of it: under its 64 MiB per stream
    const fast = pushBody(1 * MiB, 1024); // never more than 1 MiB unread: always less than the slow one
    const client = {
      attestation: { moduleId: 'i-test-enc' },
      fetch: (url: string) => Promise.resolve(new Response(url === '/slow' ? slow.body : fast.body)),
      upgrade: () => Promise.reject(new Error('no upgrade here')),
      close: () => Promise.resolve(),
    } as unknown as Client;
    const log = warnings();
    proxy = await startAttestedProxy({ maxUnreadBytes: 2 * MiB, logger: log.logger, connect: () => Promise.resolve(client) });

    await neverReads('GET /slow HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n');
    const read = new Promise<number>((resolve, reject) => {
      http.get({ host: '127.0.0.1', port: proxy!.port, path: '/fast', agent: false }, (res) => {
        let n = 0;
        res.on('data', (c: Buffer) => (n += c.length));
        res.on('end', () => resolve(n));
        res.on('error', reject);
      }).on('error', reject);
    });
    // Before the fix the proxy held all 48 MiB for a client that never reads.
    await vi.waitFor(() => expect(slow.cancelled()).toBe(true), { timeout: 20_000 });
    expect(slow.pushed()).toBeLessThan(48 * MiB);
    expect(log.codes).toContain('PROXY_UNREAD_LIMIT');
    expect(await read).toBe(1 * MiB);
    expect(fast.cancelled()).toBe(false);
    expect(proxy.unreadBytes).toBeLessThanOrEqual(2 * MiB);
  });

  it('closes a connection past its own bound while the total is far from full; another client keeps its answer', async () => {
    const slow = pushBody(48 * MiB, 64 * 1024);
    const fast = pushBody(1 * MiB, 1024);
    const log = warnings();
    proxy = await startAttestedProxy({ maxUnreadBytesPerConnection: 2 * MiB, logger: log.logger, connect: () => Promise.resolve(answering({ '/slow': slow.body, '/fast': fast.body })) });

    await neverReads('GET /slow HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n');
    const read = readAll('/fast');
    // Before the fix only the total (64 MiB by default) bounded it: all 48 MiB were held for a client that never
    // reads, and the other clients had that much less room.
    await vi.waitFor(() => expect(slow.cancelled()).toBe(true), { timeout: 10_000 });
    expect(slow.pushed()).toBeLessThan(48 * MiB);
    expect(log.codes).toContain('PROXY_UNREAD_LIMIT');
    expect(await read).toBe(1 * MiB);
    expect(fast.cancelled()).toBe(false);
  });

  it('counts an answer the enclave finished sending until its local client has read it', async () => {
    const bodies = [0, 1, 2].map(() => pushBody(14 * MiB, 64 * 1024));
    const log = warnings();
    proxy = await startAttestedProxy({
      maxUnreadBytes: 16 * MiB,
      maxUnreadBytesPerConnection: 64 * MiB,
      logger: log.logger,
      connect: () => Promise.resolve(answering({ '/0': bodies[0]!.body, '/1': bodies[1]!.body, '/2': bodies[2]!.body })),
    });
    // Each answer alone stays under the total; together they pass it. Before the fix an answer left the count as
    // soon as its last byte came from the enclave, however much of it waited unread: three clients that never read
    // held 42 MiB (less what the kernel took) past a 16 MiB bound, and nothing was closed.
    // One after the other: the next asked for once the enclave has sent all of the one before.
    for (const i of [0, 1, 2]) {
      await neverReads(`GET /${i} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n`);
      await vi.waitFor(() => expect(bodies[i]!.pushed() === 14 * MiB || log.codes.length > 0).toBe(true), { timeout: 10_000 });
    }
    await vi.waitFor(() => expect(log.codes).toContain('PROXY_UNREAD_LIMIT'), { timeout: 10_000 });
    expect(proxy.unreadBytes).toBeLessThanOrEqual(16 * MiB);
  });

  it('closes an upgraded stream whose local client reads nothing, and releases the enclave side', async () => {
    const fromApp = pushBody(48 * MiB, 64 * 1024);
    let closed = false;
    const stream = {
      id: 1,
      status: 101,
      statusText: 'Switching Protocols',
      headers: new Headers({ upgrade: 'websocket', connection: 'Upgrade' }),
      head: { status: 101, statusText: 'Switching Protocols', version: 'HTTP/1.1', headers: [], headLength: 0 },
      readable: fromApp.body,
      writable: new WritableStream<Uint8Array>(),
      closeWrite: () => {},
      close: () => void (closed = true),
    } as UpgradedStream;
    const client = {
      attestation: { moduleId: 'i-test-enc' },
      fetch: () => Promise.reject(new Error('no fetch here')),
      upgrade: () => Promise.resolve(stream),
      close: () => Promise.resolve(),
    } as unknown as Client;
    proxy = await startAttestedProxy({ maxUnreadBytes: 2 * MiB, connect: () => Promise.resolve(client) });

    await neverReads('GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n');
    await vi.waitFor(() => expect(fromApp.cancelled()).toBe(true), { timeout: 20_000 });
    expect(fromApp.pushed()).toBeLessThan(48 * MiB);
    await vi.waitFor(() => expect(closed).toBe(true));
  });
});
