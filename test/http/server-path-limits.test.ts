// Limits on the forwarder's http.Server path (the Noise streams, and the keep-alive connections the fast path
// hands over): pipelined requests in flight per connection are bounded; a request body that stops arriving
// gets 408 (the headers timeout, as a gap between body bytes), while one that keeps flowing is not cut; a
// parse error behind pipelined requests is answered after their answers, never ahead of them; a client that
// stops reading its answer is cut after the upstream timeout, which frees its app connection.
import net from 'node:net';
import type { AddressInfo } from 'node:net';
import type { Duplex } from 'node:stream';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { createHttpForwarder, type HttpForwarder, type HttpModeOptions } from '../../src/http/forwarder.ts';
import { createMemoryLogSink } from '../../src/http/log-sink.ts';
import type { ForwardContext } from '../../src/responder/forwarder.ts';
import { fakeContext, ResponseReader, silentLogger, startApp, type TestApp } from './helpers.ts';

/** An answer larger than every buffer between the app and a client that does not read. */
const BIG = Buffer.alloc(24 * 1024 * 1024, 0x61);
/** Requests the app is working on now, and the most at once. */
let busy = 0;
let maxBusy = 0;
let app: TestApp;

beforeAll(async () => {
  // Every answer takes a while, so that pipelined requests dispatched together overlap at the app.
  app = await startApp((req, res) => {
    if (req.url === '/big') {
      req.resume();
      req.on('end', () => res.end(BIG));
      return;
    }
    busy++;
    maxBusy = Math.max(maxBusy, busy);
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () =>
      setTimeout(() => {
        busy--;
        res.end(`${req.url ?? ''}:${Buffer.concat(chunks).toString('latin1')}`);
      }, 20),
    );
  });
});
afterAll(async () => {
  await app.close();
});

const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
  busy = 0;
  maxBusy = 0;
});

function forwarder(opts: Partial<HttpModeOptions> = {}): HttpForwarder {
  const fwd = createHttpForwarder({ appPort: app.port, logger: silentLogger, logSink: createMemoryLogSink(), appStartupGraceMs: 0, ...opts });
  cleanups.push(() => fwd.close());
  return fwd;
}

/** A TCP front port whose connections the forwarder serves as TLS ingress does (attach: keep-alive fast path). */
async function front(fwd: HttpForwarder): Promise<number> {
  const sockets = new Set<net.Socket>();
  const srv = net.createServer((s) => {
    sockets.add(s);
    s.once('close', () => sockets.delete(s));
    fwd.attach(s, fakeContext({ kind: 'stream' }));
  });
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  cleanups.push(() => {
    for (const s of sockets) s.destroy();
    return new Promise<void>((r) => srv.close(() => r()));
  });
  return (srv.address() as AddressInfo).port;
}

async function tcp(port: number): Promise<net.Socket> {
  const s = net.connect(port, '127.0.0.1');
  s.on('error', () => {});
  cleanups.push(() => void s.destroy());
  await new Promise<void>((r) => s.once('connect', r));
  return s;
}

/** A Noise stream on `fwd` (as a session would open one), closed after the test. */
async function noiseStream(fwd: HttpForwarder, over: Partial<ForwardContext> = {}): Promise<Duplex> {
  const d = await fwd.connect(fakeContext({ kind: 'stream', ...over }));
  cleanups.push(() => void d.destroy());
  return d;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** `p`, or a rejection naming `what` when it has not settled after `ms` (a bound, not a timing check). */
function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const bound = new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`no ${what} within ${ms} ms`)), ms)));
  return Promise.race([p, bound]).finally(() => clearTimeout(timer));
}

const pipelined = (n: number): string => Array.from({ length: n }, (_, i) => `GET /p${i} HTTP/1.1\r\nHost: a\r\n\r\n`).join('');
const CHUNKED = 'POST /first HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n';

describe('pipelined requests on the http.Server path', () => {
  it('a Noise stream: at most 32 reach the app at once, all answered in order', async () => {
    const fwd = forwarder();
    const d = await noiseStream(fwd);
    const reader = new ResponseReader(d);
    // One write: the server parses all 200 from one chunk.
    d.write(pipelined(200));
    for (let i = 0; i < 200; i++) {
      const r = await reader.next();
      expect(r.status).toBe(200);
      expect(r.body.toString()).toBe(`/p${i}:`);
    }
    expect(maxBusy).toBeGreaterThan(1);
    expect(maxBusy).toBeLessThanOrEqual(32);
  });

  it('a keep-alive connection handed to the http.Server: at most 32 at once, all answered in order', async () => {
    const fwd = forwarder();
    const s = await tcp(await front(fwd));
    const reader = new ResponseReader(s);
    // The chunked request hands the connection over; everything after it is the server's.
    s.write(CHUNKED + pipelined(200));
    const first = await reader.next();
    expect(first.body.toString()).toBe('/first:abc');
    for (let i = 0; i < 200; i++) {
      const r = await reader.next();
      expect(r.status).toBe(200);
      expect(r.body.toString()).toBe(`/p${i}:`);
    }
    expect(maxBusy).toBeLessThanOrEqual(32);
  });
});

describe('request bodies on the http.Server path', () => {
  it('a keep-alive connection: a Content-Length body that stops arriving gets 408, then the connection closes', async () => {
    const fwd = forwarder({ headersTimeoutMs: 300, upstreamTimeoutMs: 30_000 });
    const s = await tcp(await front(fwd));
    const reader = new ResponseReader(s);
    // Over the fast path's 64 KiB: streamed by the http.Server.
    s.write('POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 100000\r\n\r\n' + 'x'.repeat(1000));
    const r = await within(reader.next(), 10_000, 'answer to a stalled body');
    expect(r.status).toBe(408);
    expect(JSON.parse(r.body.toString()).error).toBe('HTTP_REQUEST_TIMEOUT');
    expect(r.headers.connection).toBe('close');
    await within(reader.waitEnd(), 10_000, 'close after the 408');
  });

  it('a Noise stream: a chunked body that stops arriving gets 408', async () => {
    const fwd = forwarder({ headersTimeoutMs: 300, upstreamTimeoutMs: 30_000 });
    const d = await noiseStream(fwd);
    const reader = new ResponseReader(d);
    d.write('POST /upload HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n');
    const r = await within(reader.next(), 10_000, 'answer to a stalled body');
    expect(r.status).toBe(408);
    await within(reader.waitEnd(), 10_000, 'close after the 408');
  });

  it("a Noise stream: no 408 for a gap while the session itself stopped reading the client (another stream's budget)", async () => {
    const fwd = forwarder({ headersTimeoutMs: 300, upstreamTimeoutMs: 30_000 });
    let sessionPaused = true;
    const d = await noiseStream(fwd, { inputBlocked: () => sessionPaused });
    const reader = new ResponseReader(d);
    d.write('POST /upload HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n');
    await sleep(900); // three times the gap limit, with the session not reading
    sessionPaused = false;
    d.write('0\r\n\r\n');
    const r = await within(reader.next(), 10_000, 'answer to the upload');
    expect(r.status).toBe(200);
  });

  /**
   * A keep-alive connection on the server path (a chunked request first) to an app that answers in 1.5 s, with
   * 32 pipelined requests and then `tail` written: what follows the 32 waits behind the limit past the 600 ms
   * headers timeout.
   */
  async function behind32(tail: string): Promise<{ c: net.Socket; reader: ResponseReader; seen: string[] }> {
    const seen: string[] = [];
    const slowApp = await startApp((req, res) => {
      seen.push(req.url ?? '');
      req.resume();
      req.on('end', () => setTimeout(() => res.end(`ok ${req.url}`), req.url === '/first' ? 0 : 1500));
    });
    cleanups.push(() => slowApp.close());
    const fwd = createHttpForwarder({ appPort: slowApp.port, logger: silentLogger, logSink: createMemoryLogSink(), appStartupGraceMs: 0, headersTimeoutMs: 600 });
    cleanups.push(() => fwd.close());
    const c = await tcp(await front(fwd));
    const reader = new ResponseReader(c);
    c.write(CHUNKED);
    expect((await reader.next()).status).toBe(200);
    c.write(pipelined(32) + tail);
    return { c, reader, seen };
  }

  it('a head held back behind 32 running requests is not timed out for it (no 408); it is answered in its turn', async () => {
    // The 33rd head arrives in two writes: its second half waits behind the limit, longer than the headers timeout.
    const { c, reader, seen } = await behind32('GET /last HTTP/1.1\r\nHo');
    await sleep(50);
    c.write('st: a\r\n\r\n');
    for (let i = 0; i < 32; i++) expect((await within(reader.next(), 10_000, `answer ${i}`)).status).toBe(200);
    const last = await within(reader.next(), 10_000, 'answer to /last');
    expect(last.status).toBe(200);
    expect(last.body.toString()).toBe('ok /last');
    expect(seen).toContain('/last');
  });

  it('…but a held-back head that never completes still ends the connection, after its answers', async () => {
    const { reader } = await behind32('GET /never HTTP/1.1\r\nHo');
    for (let i = 0; i < 32; i++) expect((await within(reader.next(), 10_000, `answer ${i}`)).status).toBe(200);
    await within(reader.waitEnd(), 10_000, 'the close of a connection whose last head never came');
  });

  it('an Upgrade behind 32 pipelined requests: bytes sent before the 101 reach the tunnel', async () => {
    let tunnel = '';
    const upApp = await startApp((req, res) => {
      req.resume();
      req.on('end', () => setTimeout(() => res.end('ok'), req.url === '/first' ? 0 : 400));
    });
    cleanups.push(() => upApp.close());
    const appSide: net.Socket[] = [];
    cleanups.push(() => appSide.forEach((x) => x.destroy())); // an upgraded socket is not the server's to close
    upApp.server.on('upgrade', (_req, sock: net.Socket, head: Buffer) => {
      appSide.push(sock);
      tunnel += head.toString();
      sock.on('data', (c: Buffer) => (tunnel += c.toString()));
      sock.on('error', () => {});
      setTimeout(() => sock.write('HTTP/1.1 101 Switching Protocols\r\nUpgrade: test\r\nConnection: Upgrade\r\n\r\n'), 600);
    });
    const fwd = createHttpForwarder({ appPort: upApp.port, logger: silentLogger, logSink: createMemoryLogSink(), appStartupGraceMs: 0 });
    cleanups.push(() => fwd.close());
    const c = await tcp(await front(fwd));
    const reader = new ResponseReader(c);
    c.write(CHUNKED);
    expect((await reader.next()).status).toBe(200);
    c.write(pipelined(32) + 'GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: test\r\n\r\n');
    await sleep(200);
    c.write('TUNNEL-BYTES');
    await within(
      (async () => {
        while (!tunnel.includes('TUNNEL-BYTES')) await sleep(50);
      })(),
      10_000,
      'tunnel bytes at the app',
    );
  });

  it('a slow upload that keeps flowing is not cut, however long it takes in all', async () => {
    const fwd = forwarder({ headersTimeoutMs: 400, upstreamTimeoutMs: 30_000 });
    const s = await tcp(await front(fwd));
    const reader = new ResponseReader(s);
    s.write('POST /slow HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n');
    // Gaps well under the limit, for several times the limit in all.
    for (let i = 0; i < 16; i++) {
      s.write('1\r\n' + String.fromCharCode(97 + i) + '\r\n');
      await sleep(80);
    }
    s.write('0\r\n\r\n');
    const r = await reader.next();
    expect(r.status).toBe(200);
    expect(r.body.toString()).toBe('/slow:abcdefghijklmnop');
  });
});

describe('parse errors behind pipelined requests on the http.Server path', () => {
  it('bytes after a Connection: close request are not read; every earlier answer goes out, then the close', async () => {
    const fwd = forwarder();
    const s = await tcp(await front(fwd));
    const reader = new ResponseReader(s);
    const seenBefore = app.seen.length;
    s.write(
      'GET /1 HTTP/1.1\r\nHost: a\r\n\r\n' +
        CHUNKED.replace('/first', '/2') +
        'POST /3 HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nxyz' +
        'GET /4 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n' +
        'GET /5 HTTP/1.1\r\nHost: a\r\n\r\n',
    );
    const bodies: string[] = [];
    for (let i = 0; i < 4; i++) {
      const r = await reader.next();
      expect(r.status).toBe(200);
      bodies.push(r.body.toString());
    }
    expect(bodies).toEqual(['/1:', '/2:abc', '/3:xyz', '/4:']);
    expect((await within(reader.readToEnd(), 10_000, 'close')).length).toBe(0);
    // Run concurrently (their order at the app is not fixed); /5, after the close, never reaches it.
    expect(app.seen.slice(seenBefore).map((r) => r.url).sort()).toEqual(['/1', '/2', '/3', '/4']);
  });

  it('a malformed request behind a valid one: the valid one is answered, then 400, then the close', async () => {
    const fwd = forwarder();
    const d = await noiseStream(fwd);
    const reader = new ResponseReader(d);
    d.write(CHUNKED.replace('/first', '/transfer') + 'GET /x HTTP/1.1\r\nHost: a\r\nX: \x01\r\n\r\n');
    const first = await reader.next();
    expect(first.status).toBe(200);
    expect(first.body.toString()).toBe('/transfer:abc');
    const second = await reader.next();
    expect(second.status).toBe(400);
    expect(JSON.parse(second.body.toString()).error).toBe('HTTP_BAD_REQUEST');
    expect((await within(reader.readToEnd(), 10_000, 'close')).length).toBe(0);
  });

  it('a malformed chunked body behind a valid request: the valid one is answered, the broken one gets 400', async () => {
    const fwd = forwarder();
    const d = await noiseStream(fwd);
    const reader = new ResponseReader(d);
    d.write('GET /ok HTTP/1.1\r\nHost: a\r\n\r\nPOST /bad HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\nzz\r\n');
    const first = await reader.next();
    expect(first.status).toBe(200);
    expect(first.body.toString()).toBe('/ok:');
    const second = await reader.next();
    expect(second.status).toBe(400);
    expect((await within(reader.readToEnd(), 10_000, 'close')).length).toBe(0);
  });
});

describe('a client that stops reading on the http.Server path', () => {
  it('a Noise stream is closed after the upstream timeout, and its app connection serves the next client', async () => {
    const fwd = forwarder({ upstreamTimeoutMs: 300, maxAppConnections: 1 });
    const d = await noiseStream(fwd);
    d.on('error', () => {});
    const closed = new Promise<void>((r) => d.once('close', () => r()));
    // Never read: the answer backs up into the agent.
    d.write('GET /big HTTP/1.1\r\nHost: a\r\n\r\n');
    await within(closed, 10_000, 'close of the stream that does not read');
    const other = await noiseStream(fwd);
    const reader = new ResponseReader(other);
    other.write('GET /small HTTP/1.1\r\nHost: a\r\n\r\n');
    const r = await within(reader.next(), 10_000, 'answer to the next client');
    expect(r.status).toBe(200);
    expect(r.body.toString()).toBe('/small:');
  });

  it('a keep-alive connection handed to the http.Server is closed, and its app connection serves the next client', async () => {
    const fwd = forwarder({ upstreamTimeoutMs: 300, maxAppConnections: 1 });
    const port = await front(fwd);
    const slow = await tcp(port);
    slow.pause();
    // Chunked: the http.Server's; the client never reads the answer.
    slow.write('POST /big HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n');
    const deadline = Date.now() + 10_000;
    while (fwd.connectionCount > 0 && Date.now() < deadline) await sleep(50);
    expect(fwd.connectionCount).toBe(0);
    const other = await tcp(port);
    const reader = new ResponseReader(other);
    other.write('POST /small HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n');
    const r = await within(reader.next(), 10_000, 'answer to the next client');
    expect(r.status).toBe(200);
    expect(r.body.toString()).toBe('/small:');
  });
});
