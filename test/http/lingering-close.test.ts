// Lingering close on the keep-alive fast path (src/http/keep-alive-connection.ts, as TLS ingress uses it): once
// the last answer is handed to the kernel the connection is not closed outright. close(2) with bytes of the
// client unread (or arriving after it) makes the kernel send RST and drop what of the answer is still queued;
// the agent instead reads and drops the client's bytes until its FIN, or a bound.
import net from 'node:net';
import type { AddressInfo } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { createHttpForwarder, type HttpForwarder, type HttpModeOptions } from '../../src/http/forwarder.ts';
import { KeepAliveConnection, KeepAliveSweep, type KeepAliveHandlers, type KeepAliveLimits } from '../../src/http/keep-alive-connection.ts';
import { createMemoryLogSink } from '../../src/http/log-sink.ts';
import { fakeContext, silentLogger, startApp } from './helpers.ts';

const cleanups: (() => Promise<void> | void)[] = [];

afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

async function until(cond: () => boolean, what: string, ms = 5000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(5);
  }
}

const LIMITS: KeepAliveLimits = { maxHeaderBytes: 16 * 1024, headersTimeoutMs: 10_000, keepAliveTimeoutMs: 10_000, sendTimeoutMs: 10_000 };

interface Front {
  port: number;
  /** The agent's side of each accepted connection, and its KeepAliveConnection. */
  sockets: net.Socket[];
  conns: KeepAliveConnection[];
}

/** A TCP listener whose connections are served by KeepAliveConnection alone: every request is answered `answer`. */
async function startFront(answer: Buffer, limits: Partial<KeepAliveLimits> = {}): Promise<Front> {
  const all = { ...LIMITS, ...limits };
  const sweep = new KeepAliveSweep(all);
  const handlers: KeepAliveHandlers = {
    serve(_conn, _head, _body, res) {
      res.writeHead(200, ['Content-Length', String(answer.length)]);
      res.end(answer);
    },
    fallback() {
      throw new Error('not expected');
    },
    rejected() {},
    abandoned() {},
  };
  const front: Front = { port: 0, sockets: [], conns: [] };
  const server = net.createServer((s) => {
    front.sockets.push(s);
    front.conns.push(new KeepAliveConnection(s, fakeContext({ kind: 'stream' }), handlers, all, sweep));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  cleanups.push(() => {
    for (const s of front.sockets) s.destroy();
    server.close();
  });
  front.port = (server.address() as AddressInfo).port;
  return front;
}

/**
 * A client connection that collects what it receives, and how it ended. `allowHalfOpen`: it does not close its
 * side when the agent closes (a client that never sends FIN).
 */
async function client(port: number, allowHalfOpen = false): Promise<{ sock: net.Socket; got: () => Buffer; ended: Promise<string> }> {
  const sock = net.connect({ port, host: '127.0.0.1', allowHalfOpen });
  const parts: Buffer[] = [];
  sock.on('data', (c: Buffer) => parts.push(c));
  const ended = new Promise<string>((resolve) => {
    sock.once('end', () => resolve('end'));
    sock.once('error', (err: NodeJS.ErrnoException) => resolve(err.code ?? 'error'));
  });
  cleanups.push(() => void sock.destroy());
  await new Promise<void>((r) => sock.once('connect', r));
  return { sock, got: () => Buffer.concat(parts), ended };
}

describe('lingering close: the last answer reaches a slow client whole', { timeout: 20_000 }, () => {
  it('a client that sends more after `Connection: close` while its answer is still queued gets all of it', async () => {
    const answer = Buffer.alloc(1024 * 1024, 0x61);
    const f = await startFront(answer);
    const c = await client(f.port);
    // A slow reader: nothing is read while the answer is handed to the kernel (it fits in the two socket
    // buffers, so the agent's side finishes writing; most of it is still in the agent's send queue).
    c.sock.pause();
    c.sock.write('GET /big HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n');
    await until(() => f.sockets[0]?.writableFinished === true, 'the answer to be handed to the kernel');
    // The client, not knowing yet, sends its next request (a pipelining client, a body still on its way).
    c.sock.write('GET /next HTTP/1.1\r\nHost: a\r\n\r\n');
    await sleep(50);
    c.sock.resume();
    const ended = await c.ended;
    expect(bodyOf(c.got()).length).toBe(answer.length);
    expect(bodyOf(c.got()).equals(answer)).toBe(true);
    expect(ended).toBe('end');
    // The client's FIN (it closes at the agent's) ends the linger.
    await until(() => f.sockets[0]!.destroyed, 'the agent side to close');
  });

  it('a client that keeps sending the head the agent refuses (431) gets the answers before it and the 431', async () => {
    const answer = Buffer.alloc(1024 * 1024, 0x62);
    const f = await startFront(answer, { maxHeaderBytes: 4096 });
    const c = await client(f.port);
    c.sock.pause();
    // A keep-alive request, then a head over the cap: refused after the first answer, then the connection closes.
    c.sock.write(`GET /big HTTP/1.1\r\nHost: a\r\n\r\nGET /huge HTTP/1.1\r\nHost: a\r\nX-Fill: ${'f'.repeat(8192)}`);
    await until(() => f.sockets[0]?.writableFinished === true, 'the answers to be handed to the kernel');
    // The client goes on sending the rest of its head and a body.
    c.sock.write(`\r\nContent-Length: 65536\r\n\r\n${'b'.repeat(65536)}`);
    await sleep(50);
    c.sock.resume();
    const ended = await c.ended;
    const got = c.got();
    const first = bodyOf(got).subarray(0, answer.length);
    expect(first.equals(answer)).toBe(true);
    const rest = got.subarray(got.indexOf('\r\n\r\n') + 4 + answer.length).toString('latin1');
    expect(rest).toMatch(/^HTTP\/1\.1 431 /);
    expect(rest).toContain('HTTP_HEADERS_TOO_LARGE');
    expect(ended).toBe('end');
  });
});

/** What follows the first response head in `got`. */
function bodyOf(got: Buffer): Buffer {
  return got.subarray(got.indexOf('\r\n\r\n') + 4);
}

interface ForwarderFront {
  fwd: HttpForwarder;
  port: number;
  sockets: net.Socket[];
  /** Paths the app was asked for. */
  seen: string[];
}

/** The forwarder serving a TCP listener's connections on the keep-alive fast path (as TLS ingress does). */
async function startForwarderFront(answer: Buffer, opts: Partial<HttpModeOptions> & { lingerTimeoutMs: number; lingerTimeMs: number }): Promise<ForwarderFront> {
  const seen: string[] = [];
  const a = await startApp((req, res) => {
    seen.push(req.url ?? '');
    req.resume();
    req.on('end', () => {
      res.setHeader('Content-Length', answer.length);
      res.end(answer);
    });
  });
  cleanups.push(() => a.close());
  const fwd = createHttpForwarder({ appPort: a.port, logger: silentLogger, logSink: createMemoryLogSink(), appStartupGraceMs: 0, ...opts });
  const sockets: net.Socket[] = [];
  const server = net.createServer((s) => {
    sockets.push(s);
    fwd.attach(s, fakeContext({ kind: 'stream' }));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  cleanups.push(async () => {
    for (const s of sockets) s.destroy();
    server.close();
    await fwd.close();
  });
  return { fwd, port: (server.address() as AddressInfo).port, sockets, seen };
}

describe('lingering close: a connection handed to the http.Server', { timeout: 20_000 }, () => {
  it('a client still uploading the body the server refuses (413) gets the answer before it and the 413', async () => {
    const answer = Buffer.alloc(1024 * 1024, 0x64);
    const f = await startForwarderFront(answer, { maxRequestBodyBytes: 1024, lingerTimeoutMs: 5000, lingerTimeMs: 10_000 });
    const c = await client(f.port);
    c.sock.pause();
    // A larger body than the fast path buffers: that request goes to the http.Server, whose body limit refuses it
    // and closes the connection.
    c.sock.write(`GET /big HTTP/1.1\r\nHost: a\r\n\r\nPOST /up HTTP/1.1\r\nHost: a\r\nContent-Length: 10000000\r\n\r\n${'u'.repeat(65536)}`);
    await until(() => f.sockets[0]?.writableFinished === true, 'the answers to be handed to the kernel');
    c.sock.write('u'.repeat(256 * 1024));
    await sleep(50);
    c.sock.resume();
    const ended = await c.ended;
    const got = c.got();
    expect(bodyOf(got).subarray(0, answer.length).equals(answer)).toBe(true);
    const rest = got.subarray(got.indexOf('\r\n\r\n') + 4 + answer.length).toString('latin1');
    expect(rest).toMatch(/^HTTP\/1\.1 413 /);
    expect(ended).toBe('end');
    await until(() => f.fwd.connectionCount === 0, 'the connection to close');
    expect(f.seen).toEqual(['/big']);
  });
});

describe('lingering close: a tunnel the app ended', { timeout: 20_000 }, () => {
  it('the app side and the record end at once; only the client connection lingers', async () => {
    // The app accepts the upgrade, sends a few bytes and ends its side (FIN).
    const a = await startApp(() => {});
    let appSocketClosed = false;
    a.server.on('upgrade', (_req, sock: net.Socket) => {
      sock.on('error', () => {});
      sock.on('close', () => (appSocketClosed = true));
      sock.end('HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\nbye');
    });
    cleanups.push(() => a.close());
    const logSink = createMemoryLogSink();
    const fwd = createHttpForwarder({ appPort: a.port, logger: silentLogger, logSink, appStartupGraceMs: 0, lingerTimeoutMs: 60_000, lingerTimeMs: 60_000 });
    const sockets: net.Socket[] = [];
    const server = net.createServer((sock) => {
      sockets.push(sock);
      fwd.attach(sock, fakeContext({ kind: 'stream' }));
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    cleanups.push(async () => {
      server.close();
      await fwd.close();
    });
    // A client that keeps its side open (no FIN) once the tunnel ended.
    const c = await client((server.address() as AddressInfo).port, true);
    c.sock.write('GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n');
    expect(await c.ended).toBe('end');
    expect(c.got().toString('latin1')).toMatch(/^HTTP\/1\.1 101 [\s\S]*\r\n\r\nbye$/);
    // Nothing of the client is forwarded any more: the app's connection closes and the tunnel is recorded now,
    // not when the client's linger ends (60 s here).
    await until(() => appSocketClosed, "the app's connection to close");
    await until(() => logSink.records.some((r) => r.status === 101), 'the tunnel to be recorded');
    expect(sockets[0]!.destroyed).toBe(false);
    expect(fwd.connectionCount).toBe(1);
  });
});

describe('lingering close: bounded', { timeout: 20_000 }, () => {
  it('a client that never sends FIN is closed after the linger timeout; its slot is freed', async () => {
    const answer = Buffer.alloc(1024 * 1024, 0x63);
    const f = await startForwarderFront(answer, { lingerTimeoutMs: 200, lingerTimeMs: 60_000 });
    const c = await client(f.port, true);
    c.sock.pause();
    c.sock.write('GET /big HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n');
    await until(() => f.sockets[0]?.writableFinished === true, 'the answer to be handed to the kernel');
    c.sock.write('GET /after HTTP/1.1\r\nHost: a\r\n\r\n');
    await sleep(50);
    c.sock.resume();
    expect(await c.ended).toBe('end');
    expect(bodyOf(c.got()).equals(answer)).toBe(true);
    // The client keeps its side open and sends nothing more: the agent closes once the linger timeout is over.
    await until(() => f.sockets[0]!.closed, 'the agent side to close');
    // Its slot: freed as the connection's last part closes (an in-process relay side may close a tick later).
    await until(() => f.fwd.connectionCount === 0, 'its slot freed');
    // What came after `Connection: close` was read and dropped, never sent to the app.
    expect(f.seen).toEqual(['/big']);
  });

  it('a client that keeps sending is cut at the linger time; what it sends meanwhile is dropped', async () => {
    const answer = Buffer.from('small answer');
    const f = await startForwarderFront(answer, { lingerTimeoutMs: 300, lingerTimeMs: 800 });
    const c = await client(f.port, true);
    c.sock.write('GET /first HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n');
    await until(() => f.sockets[0]?.writableFinished === true, 'the answer to be handed to the kernel');
    const readAtFinish = f.sockets[0]!.bytesRead;
    // More often than the linger timeout: only the linger time can end it.
    let writeFailed = false;
    const trickle = setInterval(() => {
      c.sock.write('GET /trickle HTTP/1.1\r\nHost: a\r\n\r\n', (err) => {
        if (err) writeFailed = true;
      });
    }, 50);
    cleanups.push(() => clearInterval(trickle));
    await until(() => f.sockets[0]!.closed, 'the agent side to be cut');
    // It lingered: it read (and dropped) what the client sent after the answer.
    expect(f.sockets[0]!.bytesRead).toBeGreaterThan(readAtFinish);
    // The client, still sending, learns that the connection is gone.
    await until(() => writeFailed || c.sock.destroyed, 'the client to see the connection cut');
    clearInterval(trickle);
    expect(bodyOf(c.got()).toString()).toBe('small answer');
    // Its slot: freed as the connection's last part closes (an in-process relay side may close a tick later).
    await until(() => f.fwd.connectionCount === 0, 'its slot freed');
    expect(f.seen).toEqual(['/first']);
  });

  it('close() of the forwarder ends a lingering connection at once', async () => {
    const f = await startForwarderFront(Buffer.from('x'), { lingerTimeoutMs: 60_000, lingerTimeMs: 60_000 });
    const c = await client(f.port, true);
    c.sock.write('GET /one HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n');
    expect(await c.ended).toBe('end');
    await until(() => f.sockets[0]?.writableFinished === true, 'the answer to be handed to the kernel');
    expect(f.fwd.connectionCount).toBe(1);
    await f.fwd.close();
    await until(() => f.sockets[0]!.destroyed, 'the agent side to close');
    // Its slot: freed as the connection's last part closes (an in-process relay side may close a tick later).
    await until(() => f.fwd.connectionCount === 0, 'its slot freed');
  });
});
