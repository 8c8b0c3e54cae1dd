// The keep-alive fast path (src/http/keep-alive-connection.ts) on a plain TCP front, as TLS ingress uses it:
// what one connection may hold (pipelined requests reach the app one at a time, bounded read-ahead) and a
// client that stops reading (send timeout).
import type http from 'node:http';
import net from 'node:net';
import type { AddressInfo } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { createHttpForwarder, type HttpForwarder, type HttpModeOptions } from '../../src/http/forwarder.ts';
import { KeepAliveConnection, KeepAliveSweep, type KeepAliveLimits } from '../../src/http/keep-alive-connection.ts';
import { createMemoryLogSink } from '../../src/http/log-sink.ts';
import { fakeContext, ResponseReader, silentLogger, startApp, type TestApp } from './helpers.ts';

interface Front {
  fwd: HttpForwarder;
  port: number;
  /** The agent's side of each accepted client connection. */
  sockets: net.Socket[];
  close(): Promise<void>;
}

const cleanups: (() => Promise<void> | void)[] = [];

afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

/** A forwarder serving every connection of a TCP listener on its keep-alive fast path. */
async function startFront(opts: Omit<HttpModeOptions, 'logger'>): Promise<Front> {
  const fwd = createHttpForwarder({ logger: silentLogger, logSink: createMemoryLogSink(), appStartupGraceMs: 0, ...opts });
  const sockets: net.Socket[] = [];
  const server = net.createServer((s) => {
    sockets.push(s);
    fwd.attach(s, fakeContext({ kind: 'stream' }));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const front: Front = {
    fwd,
    port: (server.address() as AddressInfo).port,
    sockets,
    async close() {
      for (const s of sockets) s.destroy();
      server.close();
      await fwd.close();
    },
  };
  cleanups.push(() => front.close());
  return front;
}

async function app(handler: (req: http.IncomingMessage, res: http.ServerResponse) => void): Promise<TestApp> {
  const a = await startApp(handler);
  cleanups.push(() => a.close());
  return a;
}

function connect(port: number): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const s = net.connect(port, '127.0.0.1', () => resolve(s));
    s.once('error', reject);
    cleanups.push(() => void s.destroy());
  });
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/**
 * The next response on `c`, read in bursts: paused and resumed every 100 ms (shorter than the tests' send
 * timeout), for as long as it takes; `tick` runs at each switch.
 */
async function readInBursts(c: net.Socket, reader: ResponseReader, tick: () => void = () => {}): Promise<Awaited<ReturnType<ResponseReader['next']>>> {
  let reading = true;
  const pacer = setInterval(() => {
    if (reading) c.pause();
    else c.resume();
    reading = !reading;
    tick();
  }, 100);
  cleanups.push(() => clearInterval(pacer));
  try {
    return await reader.next();
  } finally {
    clearInterval(pacer);
    c.resume();
  }
}

async function until(cond: () => boolean, what: string, ms = 5000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(10);
  }
}

const post = (path: string, body: string): string => `POST ${path} HTTP/1.1\r\nHost: a\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`;

describe('keep-alive fast path: what one connection holds', { timeout: 15_000 }, () => {
  it('sends pipelined requests to the app one at a time, in request order, and answers them in order', async () => {
    let atApp = 0;
    let maxAtApp = 0;
    const order: string[] = [];
    const a = await app((req, res) => {
      atApp++;
      maxAtApp = Math.max(maxAtApp, atApp);
      order.push(req.url!);
      req.resume();
      // Later requests answer sooner: were they all at the app at once, side effects would run out of order.
      const n = Number(req.url!.slice(3));
      setTimeout(() => {
        atApp--;
        res.end(`answer ${req.url}`);
      }, 40 - 3 * n);
    });
    const f = await startFront({ appPort: a.port });
    const c = await connect(f.port);
    const reader = new ResponseReader(c);
    let all = '';
    for (let i = 0; i < 10; i++) all += post(`/r/${i}`, `body ${i}`);
    c.write(all);
    const got: string[] = [];
    for (let i = 0; i < 10; i++) got.push((await reader.next()).body.toString());
    expect(got).toEqual(Array.from({ length: 10 }, (_, i) => `answer /r/${i}`));
    expect(order).toEqual(Array.from({ length: 10 }, (_, i) => `/r/${i}`));
    expect(maxAtApp).toBe(1);
    expect(f.fwd.keepAliveFastPathRequests).toBe(10);
  });

  it('reads ahead a bounded amount while a request is at the app, then serves the rest', async () => {
    const held: (() => void)[] = [];
    let holding = true;
    const a = await app((req, res) => {
      let n = 0;
      req.on('data', (c: Buffer) => (n += c.length));
      req.on('end', () => {
        const answer = (): void => void res.end(`${req.url} ${n}`);
        if (holding) held.push(answer);
        else answer();
      });
    });
    const f = await startFront({ appPort: a.port });
    const c = await connect(f.port);
    const reader = new ResponseReader(c);
    const body = 'x'.repeat(64 * 1024);
    let all = '';
    for (let i = 0; i < 40; i++) all += post(`/big/${i}`, body);
    c.write(all);
    await until(() => held.length === 1, 'the first request at the app');
    // Time for the agent to read all it would (2.6 MB sent); it must stop well short of that.
    await sleep(300);
    expect(held.length).toBe(1);
    const agentSide = f.sockets[0]!;
    expect(agentSide.bytesRead).toBeGreaterThan(64 * 1024);
    expect(agentSide.bytesRead).toBeLessThan(512 * 1024);
    holding = false;
    held.shift()!();
    const got: string[] = [];
    for (let i = 0; i < 40; i++) got.push((await reader.next()).body.toString());
    expect(got).toEqual(Array.from({ length: 40 }, (_, i) => `/big/${i} ${body.length}`));
  });
});

describe('keep-alive fast path: a client that stops reading', { timeout: 15_000 }, () => {
  it('times a request that began arriving while the one before it was at the app from when it is its turn', async () => {
    const a = await app((req, res) => {
      req.resume();
      req.on('end', () => setTimeout(() => res.end(req.url), req.url === '/slow' ? 400 : 0));
    });
    const f = await startFront({ appPort: a.port, upstreamTimeoutMs: 5000, headersTimeoutMs: 200, keepAliveTimeoutMs: 5000 });
    const c = await connect(f.port);
    const reader = new ResponseReader(c);
    // /next's head arrives all but its last CRLF while /slow is at the app (longer than the headers timeout).
    c.write('GET /slow HTTP/1.1\r\nHost: a\r\n\r\nGET /next HTTP/1.1\r\nHost: a\r\n');
    expect((await reader.next()).body.toString()).toBe('/slow');
    await new Promise((r) => setTimeout(r, 100)); // within the 200 ms it has from now, past a sweep tick
    c.write('\r\n');
    const next = await reader.next();
    expect(next.status).toBe(200);
    expect(next.body.toString()).toBe('/next');
  });

  it('is cut within upstreamTimeoutMs, which frees the app connection it held for others', async () => {
    const big = Buffer.alloc(8 * 1024 * 1024, 0x61);
    const a = await app((req, res) => {
      req.resume();
      req.on('end', () => {
        if (req.url === '/big') {
          res.setHeader('Content-Length', big.length);
          res.end(big);
        } else res.end('small');
      });
    });
    let appOpen = 0;
    a.server.on('connection', (s: net.Socket) => {
      appOpen++;
      s.on('close', () => appOpen--);
    });
    const sink = createMemoryLogSink();
    const f = await startFront({ appPort: a.port, maxAppConnections: 1, upstreamTimeoutMs: 300, headersTimeoutMs: 2000, keepAliveTimeoutMs: 2000, logSink: sink });
    const slow = await connect(f.port);
    slow.pause();
    slow.write('GET /big HTTP/1.1\r\nHost: a\r\n\r\n');
    await until(() => f.sockets.length === 1 && f.sockets[0]!.writableNeedDrain, 'the response to fill the client connection');
    // The agent cuts the connection that does not read, and the app connection it held.
    await until(() => f.sockets[0]!.destroyed, 'the non-reading client to be cut');
    await until(() => appOpen === 0, 'the app connection to be closed');
    // The only app connection is free again: another client is served.
    const other = await connect(f.port);
    const reader = new ResponseReader(other);
    other.write('GET /small HTTP/1.1\r\nHost: a\r\n\r\n');
    const res = await reader.next();
    expect(res.status).toBe(200);
    expect(res.body.toString()).toBe('small');
    // Its record blames the client that stopped reading (whichever limit cut first), not the app.
    await until(() => sink.records.some((r) => r.path === '/big'), 'the record of /big');
    expect(sink.records.find((r) => r.path === '/big')!.error).toMatch(/^CLIENT_(GONE|NOT_READING)$/);
  });

  it('is cut after the send timeout even with nothing left at the app (long before the keep-alive timeout)', async () => {
    // The connection alone, its responses made here: no app client whose own pause limit could cut it.
    const big = Buffer.alloc(16 * 1024 * 1024, 0x63);
    const limits: KeepAliveLimits = { maxHeaderBytes: 16 * 1024, headersTimeoutMs: 10_000, keepAliveTimeoutMs: 10_000, sendTimeoutMs: 200 };
    const sweep = new KeepAliveSweep(limits);
    let served = 0;
    let agentSide: net.Socket | null = null;
    const server = net.createServer((s) => {
      agentSide = s;
      new KeepAliveConnection(s, fakeContext({ kind: 'stream' }), {
        serve(_conn, _head, _body, res) {
          served++;
          res.writeHead(200, ['Content-Length', String(big.length)]);
          res.end(big);
        },
        fallback() {
          throw new Error('not expected');
        },
        rejected() {},
        abandoned() {},
      }, limits, sweep);
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    cleanups.push(() => {
      agentSide?.destroy();
      server.close();
    });
    const c = await connect((server.address() as AddressInfo).port);
    c.pause();
    c.write('GET /big HTTP/1.1\r\nHost: a\r\n\r\n');
    await until(() => served === 1, 'the request to be served');
    await until(() => agentSide!.destroyed, 'the non-reading client to be cut');
  });

  it('an app writing small pieces is paused while the client reads slowly; the client, still reading, is not cut', async () => {
    const piece = Buffer.alloc(8 * 1024, 0x64);
    const total = 1536; // 12 MiB in 8 KiB writes
    let written = 0;
    const a = await app((req, res) => {
      req.resume();
      req.on('end', () => {
        res.setHeader('Content-Length', piece.length * total);
        const more = (): void => {
          while (written < total) {
            written++;
            if (!res.write(piece)) return void res.once('drain', more);
          }
          res.end();
        };
        more();
      });
    });
    const f = await startFront({ appPort: a.port, upstreamTimeoutMs: 300, headersTimeoutMs: 2000, keepAliveTimeoutMs: 2000 });
    const c = await connect(f.port);
    const reader = new ResponseReader(c);
    c.write('GET /pieces HTTP/1.1\r\nHost: a\r\n\r\n');
    let maxBuffered = 0;
    const res = await readInBursts(c, reader, () => {
      for (const s of f.sockets) maxBuffered = Math.max(maxBuffered, s.writableLength);
    });
    expect(res.status).toBe(200);
    expect(res.body.length).toBe(piece.length * total);
    // The agent held back the app instead of buffering its answer (12 MiB) in the socket.
    expect(maxBuffered).toBeLessThan(2 * 1024 * 1024);
  });

  it('does not cut a client that reads a large response slowly but steadily', async () => {
    const big = Buffer.alloc(4 * 1024 * 1024, 0x62);
    const a = await app((req, res) => {
      req.resume();
      req.on('end', () => {
        res.setHeader('Content-Length', big.length);
        res.end(big);
      });
    });
    const f = await startFront({ appPort: a.port, upstreamTimeoutMs: 300, headersTimeoutMs: 2000, keepAliveTimeoutMs: 2000 });
    const c = await connect(f.port);
    const reader = new ResponseReader(c);
    c.write('GET /big HTTP/1.1\r\nHost: a\r\n\r\n');
    const res = await readInBursts(c, reader);
    expect(res.status).toBe(200);
    expect(res.body.equals(big)).toBe(true);
  });
});
