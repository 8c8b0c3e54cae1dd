// Limits on the forwarder's http.Server path (the Noise streams, and the keep-alive connections the fast path
// hands over): pipelined requests reach the app one at a time, in request order (as on the keep-alive fast
// path), and reading ahead stops while one waits its turn; a request body that stops arriving
// gets 408 (the headers timeout, as a gap between body bytes), while one that keeps flowing is not cut; a
// parse error behind pipelined requests is answered after their answers, never ahead of them; a client that
// stops reading its answer is cut after the upstream timeout, which frees its app connection.
import type net from 'node:net';
import type { Duplex } from 'node:stream';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { createHttpForwarder, type HttpForwarder, type HttpModeOptions } from '../../src/http/forwarder.ts';
import { createMemoryLogSink } from '../../src/http/log-sink.ts';
import type { ForwardContext } from '../../src/responder/forwarder.ts';
import { attachFront, fakeContext, ResponseReader, silentLogger, startApp, tcpTo, type TestApp } from './helpers.ts';

/** An answer larger than every buffer between the app and a client that does not read. */
const BIG = Buffer.alloc(24 * 1024 * 1024, 0x61);
/** Requests the app is working on now, the most at once, and the order they arrived in. */
let busy = 0;
let maxBusy = 0;
let arrived: string[] = [];
/** What the last POST /set stored (read by GET /get). */
let stored = '';
let app: TestApp;

beforeAll(async () => {
  // Every answer takes a while, so that pipelined requests dispatched together would overlap at the app.
  app = await startApp((req, res) => {
    if (req.url === '/big') {
      req.resume();
      req.on('end', () => res.end(BIG));
      return;
    }
    busy++;
    maxBusy = Math.max(maxBusy, busy);
    arrived.push(req.url ?? '');
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () =>
      setTimeout(() => {
        busy--;
        const body = Buffer.concat(chunks).toString('latin1');
        // The write lands at the end of its work: a /get running alongside would not see it.
        if (req.url === '/set') stored = body;
        res.end(`${req.url ?? ''}:${req.url === '/get' ? stored : body}`);
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
  arrived = [];
  stored = '';
});

function forwarder(opts: Partial<HttpModeOptions> = {}): HttpForwarder {
  const fwd = createHttpForwarder({ appPort: app.port, logger: silentLogger, logSink: createMemoryLogSink(), appStartupGraceMs: 0, ...opts });
  cleanups.push(() => fwd.close());
  return fwd;
}

const front = (fwd: HttpForwarder): Promise<number> => attachFront(fwd, cleanups);
const tcp = (port: number): Promise<net.Socket> => tcpTo(port, cleanups);

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

/** `n` pipelined GETs with a POST /set and a GET /get of `value` in the middle. */
function orderedBatch(n: number, value: string): { raw: string; urls: string[] } {
  const urls = Array.from({ length: n }, (_, i) => `/p${i}`);
  const half = n >> 1;
  urls.splice(half, 0, '/set', '/get');
  const raw = urls
    .map((u) => (u === '/set' ? `POST /set HTTP/1.1\r\nHost: a\r\nContent-Length: ${value.length}\r\n\r\n${value}` : `GET ${u} HTTP/1.1\r\nHost: a\r\n\r\n`))
    .join('');
  return { raw, urls };
}

/** Reads one answer per url: in order, the /get seeing what the /set before it stored. */
async function expectAnsweredInOrder(reader: ResponseReader, urls: string[], value: string): Promise<void> {
  for (const u of urls) {
    const r = await within(reader.next(), 10_000, `answer to ${u}`);
    expect(r.status).toBe(200);
    expect(r.body.toString()).toBe(u === '/get' || u === '/set' ? `${u}:${value}` : `${u}:`);
  }
}

describe('pipelined requests on the http.Server path', () => {
  it('a Noise stream: they reach the app one at a time, in request order (a GET sees the POST before it)', async () => {
    const fwd = forwarder();
    const d = await noiseStream(fwd);
    const reader = new ResponseReader(d);
    // One write: the server parses all of them from one chunk.
    const { raw, urls } = orderedBatch(40, 'v1');
    d.write(raw);
    await expectAnsweredInOrder(reader, urls, 'v1');
    expect(arrived).toEqual(urls);
    expect(maxBusy).toBe(1);
  });

  it('a keep-alive connection handed to the http.Server: one at a time, in request order', async () => {
    const fwd = forwarder();
    const s = await tcp(await front(fwd));
    const reader = new ResponseReader(s);
    // The chunked request hands the connection over; everything after it is the server's.
    const { raw, urls } = orderedBatch(40, 'v2');
    s.write(CHUNKED + raw);
    const first = await reader.next();
    expect(first.body.toString()).toBe('/first:abc');
    await expectAnsweredInOrder(reader, urls, 'v2');
    expect(arrived).toEqual(['/first', ...urls]);
    expect(maxBusy).toBe(1);
  });

  it('a Data request the fast path declined: its pipelined requests run one at a time, in order', async () => {
    const fwd = forwarder();
    const d = await fwd.connect(fakeContext({ kind: 'data' }));
    cleanups.push(() => void d.destroy());
    const reader = new ResponseReader(d);
    // Chunked: not the Data fast path's.
    const { raw, urls } = orderedBatch(6, 'v3');
    d.end(CHUNKED + raw);
    expect((await reader.next()).body.toString()).toBe('/first:abc');
    await expectAnsweredInOrder(reader, urls, 'v3');
    expect(arrived).toEqual(['/first', ...urls]);
    expect(maxBusy).toBe(1);
  });

  it('an Upgrade behind pipelined requests reaches the app only after their answers, which come before the 101', async () => {
    const events: string[] = [];
    const upApp = await startApp((req, res) => {
      events.push(`start ${req.url ?? ''}`);
      req.resume();
      req.on('end', () =>
        setTimeout(() => {
          events.push(`end ${req.url ?? ''}`);
          res.end(`ok ${req.url ?? ''}`);
        }, 100),
      );
    });
    cleanups.push(() => upApp.close());
    const appSide: net.Socket[] = [];
    cleanups.push(() => appSide.forEach((x) => x.destroy()));
    upApp.server.on('upgrade', (_req, sock: net.Socket) => {
      appSide.push(sock);
      events.push('upgrade');
      sock.on('error', () => {});
      sock.write('HTTP/1.1 101 Switching Protocols\r\nUpgrade: test\r\nConnection: Upgrade\r\n\r\n');
    });
    const fwd = createHttpForwarder({ appPort: upApp.port, logger: silentLogger, logSink: createMemoryLogSink(), appStartupGraceMs: 0 });
    cleanups.push(() => fwd.close());
    const d = await noiseStream(fwd);
    const reader = new ResponseReader(d);
    d.write(pipelined(2) + 'GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: test\r\n\r\n');
    expect((await within(reader.next(), 10_000, 'answer /p0')).body.toString()).toBe('ok /p0');
    expect((await within(reader.next(), 10_000, 'answer /p1')).body.toString()).toBe('ok /p1');
    expect((await within(reader.next(), 10_000, 'the 101')).status).toBe(101);
    expect(events).toEqual(['start /p0', 'end /p0', 'start /p1', 'end /p1', 'upgrade']);
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
   * A keep-alive connection on the server path (a chunked request first) to an app that answers /p* in 1.5 s,
   * with 2 pipelined requests and then `tail` written in one chunk: /p1 waits its turn behind /p0, which holds
   * the connection, and `tail` waits behind the hold past the 600 ms headers timeout.
   */
  async function behindPipelined(tail: string): Promise<{ c: net.Socket; reader: ResponseReader; seen: string[] }> {
    const seen: string[] = [];
    const slowApp = await startApp((req, res) => {
      seen.push(req.url ?? '');
      req.resume();
      req.on('end', () => setTimeout(() => res.end(`ok ${req.url}`), req.url?.startsWith('/p') === true ? 1500 : 0));
    });
    cleanups.push(() => slowApp.close());
    const fwd = createHttpForwarder({ appPort: slowApp.port, logger: silentLogger, logSink: createMemoryLogSink(), appStartupGraceMs: 0, headersTimeoutMs: 600 });
    cleanups.push(() => fwd.close());
    const c = await tcp(await front(fwd));
    const reader = new ResponseReader(c);
    c.write(CHUNKED);
    expect((await reader.next()).status).toBe(200);
    c.write(pipelined(2) + tail);
    return { c, reader, seen };
  }

  it('a head held back behind a request waiting its turn is not timed out for it (no 408); it is answered in its turn', async () => {
    // The third head arrives in two writes: its second half waits behind the hold, longer than the headers timeout.
    const { c, reader, seen } = await behindPipelined('GET /last HTTP/1.1\r\nHo');
    await sleep(50);
    c.write('st: a\r\n\r\n');
    for (let i = 0; i < 2; i++) expect((await within(reader.next(), 10_000, `answer ${i}`)).body.toString()).toBe(`ok /p${i}`);
    const last = await within(reader.next(), 10_000, 'answer to /last');
    expect(last.status).toBe(200);
    expect(last.body.toString()).toBe('ok /last');
    expect(seen).toEqual(['/first', '/p0', '/p1', '/last']);
  });

  it('…but a held-back head that never completes still ends the connection, after its answers', async () => {
    const { reader } = await behindPipelined('GET /never HTTP/1.1\r\nHo');
    for (let i = 0; i < 2; i++) expect((await within(reader.next(), 10_000, `answer ${i}`)).body.toString()).toBe(`ok /p${i}`);
    await within(reader.waitEnd(), 10_000, 'the close of a connection whose last head never came');
  });

  it('an Upgrade behind pipelined requests: bytes sent before the 101 reach the tunnel', async () => {
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
    // The Upgrade waits behind two requests (one at a time, 400 ms each), and the client writes meanwhile.
    c.write(pipelined(2) + 'GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: test\r\n\r\n');
    await sleep(200);
    c.write('TUNNEL-BYTES');
    for (let i = 0; i < 2; i++) expect((await within(reader.next(), 10_000, `answer ${i}`)).status).toBe(200);
    expect((await within(reader.next(), 10_000, 'the 101')).status).toBe(101);
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
    // One at a time, in request order; /5, after the close, never reaches it.
    expect(app.seen.slice(seenBefore).map((r) => r.url)).toEqual(['/1', '/2', '/3', '/4']);
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
