// Test helpers for src/http: a real app on 127.0.0.1:0, a hand-made ForwardContext, and a small HTTP/1.1
// response reader for the bytes coming back out of the forwarder's Duplex.
import http from 'node:http';
import net, { type AddressInfo } from 'node:net';
import type { Duplex } from 'node:stream';
import pino from 'pino';
import type { ForwardContext } from '../../src/responder/forwarder.ts';

export const silentLogger = pino({ level: 'silent' });

export interface TestApp {
  server: http.Server;
  port: number;
  /** TCP connections the app accepted. */
  connections: number;
  /** Requests the app saw (method, url, headers). */
  seen: { method: string; url: string; headers: http.IncomingHttpHeaders; rawHeaders: string[] }[];
  close(): Promise<void>;
}

export async function startApp(handler: (req: http.IncomingMessage, res: http.ServerResponse) => void, opts: { keepAliveTimeout?: number } = {}): Promise<TestApp> {
  const app: TestApp = {
    server: null as unknown as http.Server,
    port: 0,
    connections: 0,
    seen: [],
    close: async () => {},
  };
  const server = http.createServer((req, res) => {
    app.seen.push({ method: req.method ?? '', url: req.url ?? '', headers: req.headers, rawHeaders: req.rawHeaders });
    handler(req, res);
  });
  server.keepAliveTimeout = opts.keepAliveTimeout ?? 30_000;
  server.on('connection', () => app.connections++);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  app.server = server;
  app.port = (server.address() as AddressInfo).port;
  app.close = () =>
    new Promise<void>((resolve) => {
      server.closeAllConnections();
      server.close(() => resolve());
    });
  return app;
}

export function fakeContext(over: Partial<ForwardContext> = {}): ForwardContext {
  return {
    sessionId: 'test-session',
    kind: 'data',
    handshakeHash: new Uint8Array(32).fill(7),
    attest: () => Promise.resolve(new Uint8Array([1, 2, 3])),
    ...over,
  };
}

export interface ParsedResponse {
  status: number;
  headers: Record<string, string>;
  /** Raw header list (name, value, ...) as received. */
  rawHeaders: string[];
  body: Buffer;
}

/**
 * Reads HTTP/1.1 responses from a stream one at a time (Content-Length, chunked, or to EOF), so a test can
 * run several requests over one keep-alive connection.
 */
export class ResponseReader {
  // Chunks are joined only when the reader looks at the bytes: joining on every 'data' copied a 12 MiB
  // answer ~100 times over, starving the event loop the agent under test shares with this reader.
  private joined: Buffer = Buffer.alloc(0);
  private parts: Buffer[] = [];
  private partsBytes = 0;
  private ended = false;
  private waiters: (() => void)[] = [];

  constructor(readonly stream: Duplex) {
    stream.on('data', (c: Buffer) => {
      this.parts.push(c);
      this.partsBytes += c.length;
      this.wake();
    });
    stream.on('end', () => {
      this.ended = true;
      this.wake();
    });
    stream.on('close', () => {
      this.ended = true;
      this.wake();
    });
  }

  get isEnded(): boolean {
    return this.ended;
  }

  private get buf(): Buffer {
    if (this.parts.length > 0) {
      this.joined = Buffer.concat([this.joined, ...this.parts]);
      this.parts = [];
      this.partsBytes = 0;
    }
    return this.joined;
  }

  private set buf(b: Buffer) {
    this.joined = b;
  }

  /** Bytes received and not yet consumed, without joining them. */
  private get size(): number {
    return this.joined.length + this.partsBytes;
  }

  private wake(): void {
    for (const w of this.waiters.splice(0)) w();
  }

  private async more(): Promise<boolean> {
    if (this.ended) return false;
    await new Promise<void>((r) => this.waiters.push(r));
    return true;
  }

  /** Resolves when the stream has ended (EOF or close). */
  async waitEnd(): Promise<void> {
    while (!this.ended) await this.more();
  }

  /** Everything received from now until EOF. */
  async readToEnd(): Promise<Buffer> {
    await this.waitEnd();
    const out = this.buf;
    this.buf = Buffer.alloc(0);
    return out;
  }

  async next(opts: { head?: boolean } = {}): Promise<ParsedResponse> {
    let end: number;
    while ((end = this.buf.indexOf('\r\n\r\n')) < 0) {
      if (!(await this.more())) throw new Error(`stream ended before a response head (have ${this.buf.length} bytes)`);
    }
    const lines = this.buf.subarray(0, end).toString('latin1').split('\r\n');
    this.buf = this.buf.subarray(end + 4);
    const status = Number(/^HTTP\/1\.[01] (\d{3})/.exec(lines[0]!)?.[1] ?? NaN);
    const headers: Record<string, string> = {};
    const rawHeaders: string[] = [];
    for (const line of lines.slice(1)) {
      const i = line.indexOf(':');
      const name = line.slice(0, i);
      const value = line.slice(i + 1).trim();
      rawHeaders.push(name, value);
      const lower = name.toLowerCase();
      headers[lower] = headers[lower] === undefined ? value : `${headers[lower]}, ${value}`;
    }
    if (opts.head === true || status === 101 || status === 204 || status === 304) return { status, headers, rawHeaders, body: Buffer.alloc(0) };
    let body: Buffer;
    if (headers['transfer-encoding']?.toLowerCase().includes('chunked')) {
      const parts: Buffer[] = [];
      for (;;) {
        let lineEnd: number;
        while ((lineEnd = this.buf.indexOf('\r\n')) < 0) if (!(await this.more())) throw new Error('EOF in chunk size');
        const size = parseInt(this.buf.subarray(0, lineEnd).toString('latin1'), 16);
        while (this.size < lineEnd + 2 + size + 2) if (!(await this.more())) throw new Error('EOF in chunk');
        if (size === 0) {
          // no trailers in these tests
          this.buf = this.buf.subarray(lineEnd + 4);
          break;
        }
        parts.push(Buffer.from(this.buf.subarray(lineEnd + 2, lineEnd + 2 + size)));
        this.buf = this.buf.subarray(lineEnd + 2 + size + 2);
      }
      body = Buffer.concat(parts);
    } else if (headers['content-length'] !== undefined) {
      const n = Number(headers['content-length']);
      while (this.size < n) if (!(await this.more())) throw new Error(`EOF in body: ${this.size}/${n}`);
      body = Buffer.from(this.buf.subarray(0, n));
      this.buf = this.buf.subarray(n);
    } else {
      await this.waitEnd();
      body = this.buf;
      this.buf = Buffer.alloc(0);
    }
    return { status, headers, rawHeaders, body };
  }

  /** The next `n` bytes (after what next() consumed), waiting for them. */
  async readBytes(n: number): Promise<Buffer> {
    while (this.size < n) if (!(await this.more())) throw new Error(`stream ended after ${this.size}/${n} bytes`);
    const out = Buffer.from(this.buf.subarray(0, n));
    this.buf = this.buf.subarray(n);
    return out;
  }

  /** Bytes received but not consumed by next(). */
  takeBuffered(): Buffer {
    const b = this.buf;
    this.buf = Buffer.alloc(0);
    return b;
  }
}

/** One request the way a Data message carries it: write everything, end, read the answer to EOF. */
export async function dataRequest(fwd: { connect(ctx: ForwardContext): Promise<Duplex> }, raw: string | Buffer, ctx: ForwardContext = fakeContext()): Promise<ParsedResponse & { eof: boolean }> {
  const d = await fwd.connect(ctx);
  const reader = new ResponseReader(d);
  d.end(raw);
  const res = await reader.next();
  await reader.waitEnd();
  return { ...res, eof: reader.isEnded };
}

export function get(path: string, headers: Record<string, string> = {}, opts: { close?: boolean } = {}): string {
  let out = `GET ${path} HTTP/1.1\r\nHost: app.test\r\n`;
  for (const [k, v] of Object.entries(headers)) out += `${k}: ${v}\r\n`;
  if (opts.close !== false) out += 'Connection: close\r\n';
  return out + '\r\n';
}

export function json(body: Buffer): unknown {
  return JSON.parse(body.toString('utf8'));
}

type Cleanups = (() => Promise<void> | void)[];

/** A TCP front port whose connections `fwd` serves as TLS ingress does (attach: the keep-alive fast path). */
export async function attachFront(fwd: { attach(s: net.Socket, ctx: ForwardContext): void }, cleanups: Cleanups): Promise<number> {
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

/** A connected loopback TCP socket, destroyed by `cleanups`. */
export async function tcpTo(port: number, cleanups: Cleanups): Promise<net.Socket> {
  const s = net.connect(port, '127.0.0.1');
  s.on('error', () => {});
  cleanups.push(() => void s.destroy());
  await new Promise<void>((r) => s.once('connect', r));
  return s;
}
