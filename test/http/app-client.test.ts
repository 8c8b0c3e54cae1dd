import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import net from 'node:net';
import type { AddressInfo } from 'node:net';
import type http from 'node:http';
import { PassThrough } from 'node:stream';
import { AppClient } from '../../src/http/app-client.ts';
import type { AppClientOptions, AppRequest, AppResponseHandler } from '../../src/http/app-client.ts';
import { HttpModeError } from '../../src/http/errors.ts';
import type { HeaderList } from '../../src/http/headers.ts';
import { createHttpForwarder } from '../../src/http/forwarder.ts';
import type { HttpForwarder } from '../../src/http/forwarder.ts';
import { ResponseReader, fakeContext, get, silentLogger, startApp } from './helpers.ts';
import type { TestApp } from './helpers.ts';
import { refusedPort } from '../util/refused-port.ts';

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Polls `cond` every 5 ms; fails after `ms`. */
async function until(cond: () => boolean, what: string, ms = 2000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(5);
  }
}

// ---------------------------------------------------------------------------------------------------------
// A handler that records everything, and checks (in afterEach) that it heard exactly one terminal callback.

type AppError = Error & { code?: string };

let recs: Rec[] = [];

class Rec implements AppResponseHandler {
  status: number | null = null;
  headers: HeaderList = [];
  chunks: Buffer[] = [];
  dataCalls = 0;
  completes = 0;
  errors: AppError[] = [];
  /** Callbacks that came after the terminal one. */
  late: string[] = [];
  resume: (() => void) | null = null;
  readonly ended: Promise<void>;
  #end!: () => void;

  constructor(
    readonly label: string,
    readonly hooks: { head?: (rec: Rec) => void; data?: (rec: Rec, chunk: Buffer) => boolean } = {},
    /** False for a request that request() refuses (no callback at all). */
    readonly expectTerminal = true,
  ) {
    this.ended = new Promise<void>((r) => (this.#end = r));
    recs.push(this);
  }

  get terminals(): number {
    return this.completes + this.errors.length;
  }

  get body(): Buffer {
    return Buffer.concat(this.chunks);
  }

  get error(): AppError | undefined {
    return this.errors[0];
  }

  onAppHead(status: number, headers: HeaderList, resume: () => void): void {
    if (this.terminals > 0) this.late.push('head');
    if (this.status !== null) this.late.push('second head');
    this.status = status;
    this.headers = [...headers];
    this.resume = resume;
    this.hooks.head?.(this);
  }

  onAppData(chunk: Buffer): boolean {
    if (this.terminals > 0) this.late.push('data');
    if (this.status === null) this.late.push('data before head');
    this.dataCalls++;
    this.chunks.push(Buffer.from(chunk));
    return this.hooks.data?.(this, chunk) ?? true;
  }

  onAppComplete(): void {
    if (this.terminals > 0) this.late.push('complete');
    if (this.status === null) this.late.push('complete before head');
    this.completes++;
    this.#end();
  }

  onAppError(err: AppError): void {
    if (this.terminals > 0) this.late.push(`error ${err.code ?? err.message}`);
    this.errors.push(err);
    this.#end();
  }
}

// ---------------------------------------------------------------------------------------------------------
// Apps: node:http ones (helpers.ts) with open-connection tracking, and raw net.Servers writing chosen bytes.

interface Tracked {
  open: number;
  maxOpen: number;
  closed: number;
}

function track(server: net.Server): Tracked {
  const t: Tracked = { open: 0, maxOpen: 0, closed: 0 };
  server.on('connection', (s: net.Socket) => {
    t.open++;
    t.maxOpen = Math.max(t.maxOpen, t.open);
    s.on('close', () => {
      t.open--;
      t.closed++;
    });
  });
  return t;
}

interface RawConn {
  id: number;
  socket: net.Socket;
  requests: number;
  closed: boolean;
}

interface RawRequest {
  conn: RawConn;
  /** Index of the request on its connection. */
  index: number;
  method: string;
  path: string;
  /** The head as received, CRLFCRLF included. */
  head: string;
  body: Buffer;
}

interface RawApp extends Tracked {
  port: number;
  accepted: number;
  conns: RawConn[];
  requests: RawRequest[];
  /** Bytes received on every connection, as they came. */
  received: Buffer[];
  close(): Promise<void>;
}

const apps: { close(): Promise<void> }[] = [];

/** A net.Server that reads requests (Content-Length bodies only) and lets `respond` write raw bytes. */
async function startRawApp(respond: (r: RawRequest) => void): Promise<RawApp> {
  const app: RawApp = { port: 0, accepted: 0, open: 0, maxOpen: 0, closed: 0, conns: [], requests: [], received: [], close: async () => {} };
  const server = net.createServer((socket) => {
    const conn: RawConn = { id: app.accepted++, socket, requests: 0, closed: false };
    app.conns.push(conn);
    app.open++;
    app.maxOpen = Math.max(app.maxOpen, app.open);
    socket.on('error', () => {});
    socket.on('close', () => {
      conn.closed = true;
      app.open--;
      app.closed++;
    });
    let buf = Buffer.alloc(0);
    socket.on('data', (chunk: Buffer) => {
      app.received.push(Buffer.from(chunk));
      buf = Buffer.concat([buf, chunk]);
      for (;;) {
        const end = buf.indexOf('\r\n\r\n');
        if (end < 0) return;
        const head = buf.toString('latin1', 0, end + 4);
        const length = Number(/\r\ncontent-length: *(\d+)\r\n/i.exec(head)?.[1] ?? 0);
        if (buf.length < end + 4 + length) return;
        const body = Buffer.from(buf.subarray(end + 4, end + 4 + length));
        buf = buf.subarray(end + 4 + length);
        const [method = '', path = ''] = head.split(' ');
        const r: RawRequest = { conn, index: conn.requests++, method, path, head, body };
        app.requests.push(r);
        respond(r);
        if (socket.destroyed) return;
      }
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  app.port = (server.address() as AddressInfo).port;
  app.close = () =>
    new Promise<void>((resolve) => {
      for (const c of app.conns) c.socket.destroy();
      server.close(() => resolve());
    });
  apps.push(app);
  return app;
}

/** A complete Content-Length response. */
function answer(r: RawRequest, body = 'ok', extraHeaders = ''): void {
  r.conn.socket.write(`HTTP/1.1 200 OK\r\n${extraHeaders}Content-Length: ${Buffer.byteLength(body, 'latin1')}\r\n\r\n${body}`, 'latin1');
}

async function nodeApp(handler: (req: http.IncomingMessage, res: http.ServerResponse) => void, opts: { keepAliveTimeout?: number } = {}): Promise<TestApp & { tracked: Tracked }> {
  const app = await startApp(handler, opts);
  const tracked = track(app.server);
  apps.push(app);
  return Object.assign(app, { tracked });
}

// ---------------------------------------------------------------------------------------------------------

const clients: AppClient[] = [];

function client(port: number, over: Partial<AppClientOptions> = {}): AppClient {
  const c = new AppClient({ host: '127.0.0.1', port, maxConnections: 8, keepAliveTimeoutMs: 5000, headersTimeoutMs: 2000, bodyTimeoutMs: 2000, ...over });
  clients.push(c);
  return c;
}

function req(path: string, over: Partial<AppRequest> = {}): AppRequest {
  return { method: 'GET', path, headers: ['Host', 'app.test'], body: null, ...over };
}

/** Sends a request and waits for its end. */
async function send(c: AppClient, r: AppRequest, rec = new Rec(`${r.method} ${r.path}`)): Promise<Rec> {
  c.request(r, rec);
  await rec.ended;
  return rec;
}

beforeEach(() => {
  recs = [];
});

afterEach(async () => {
  const current = recs;
  try {
    for (const r of current) {
      expect(r.late, `${r.label}: callbacks after the end`).toEqual([]);
      expect(r.terminals, `${r.label}: terminal callbacks`).toBe(r.expectTerminal ? 1 : 0);
    }
  } finally {
    for (const c of clients.splice(0)) c.close();
    await Promise.all(apps.splice(0).map((a) => a.close()));
  }
  // close() must not report anything again.
  await sleep(10);
  for (const r of current) expect(r.terminals, `${r.label}: terminal callbacks after close()`).toBe(r.expectTerminal ? 1 : 0);
});

const expectCode = (rec: Rec, code: string): void => {
  expect(rec.completes, `${rec.label} completed`).toBe(0);
  expect(rec.error?.code, rec.error?.message).toBe(code);
};

describe('AppClient: connections', { timeout: 10_000 }, () => {
  it('sends 100 sequential requests over one keep-alive connection', async () => {
    const app = await nodeApp((r, res) => res.end(`hello ${r.url}`));
    const c = client(app.port);
    for (let i = 0; i < 100; i++) {
      const rec = await send(c, req(`/n${i}`));
      expect(rec.status).toBe(200);
      expect(rec.body.toString()).toBe(`hello /n${i}`);
    }
    expect(app.connections).toBe(1);
    expect(c.connections).toBe(1);
    expect(app.seen).toHaveLength(100);
  });

  it('runs 20 parallel requests on at most 4 connections and sends the queued ones in FIFO order', async () => {
    const arrived: number[] = [];
    const pending: { n: number; res: http.ServerResponse }[] = [];
    let answered = 0;
    let clientMax = 0;
    // The app answers one request at a time, the oldest, once every free connection carries one: a
    // connection frees up, the next queued request goes on it, and so on — arrival order is send order.
    const pump = (): void => {
      while (pending.length > 0 && pending.length >= Math.min(4, 20 - answered)) {
        const p = pending.shift()!;
        answered++;
        p.res.end(`answer ${p.n}`);
      }
    };
    const app = await nodeApp((r, res) => {
      const n = Number(r.url!.slice(1));
      arrived.push(n);
      pending.push({ n, res });
      pump();
    });
    const c = client(app.port, { maxConnections: 4 });
    const all = Array.from({ length: 20 }, (_v, i) => {
      const rec = new Rec(`/${i}`, {
        head: () => {
          clientMax = Math.max(clientMax, c.connections);
        },
      });
      c.request(req(`/${i}`), rec);
      return rec;
    });
    expect(c.connections).toBe(4);
    await Promise.all(all.map((r) => r.ended));
    all.forEach((r, i) => expect(r.body.toString()).toBe(`answer ${i}`));
    expect([...arrived.slice(0, 4)].sort((a, b) => a - b)).toEqual([0, 1, 2, 3]);
    expect(arrived.slice(4)).toEqual(Array.from({ length: 16 }, (_v, i) => i + 4));
    expect(app.tracked.maxOpen).toBeLessThanOrEqual(4);
    expect(app.connections).toBe(4);
    expect(clientMax).toBeLessThanOrEqual(4);
  });

  it('queues behind a single connection in FIFO order', async () => {
    const app = await nodeApp((r, res) => setTimeout(() => res.end(r.url), 2));
    const c = client(app.port, { maxConnections: 1 });
    const all = Array.from({ length: 10 }, (_v, i) => {
      const rec = new Rec(`/${i}`);
      c.request(req(`/${i}`), rec);
      return rec;
    });
    await Promise.all(all.map((r) => r.ended));
    expect(app.seen.map((s) => s.url)).toEqual(Array.from({ length: 10 }, (_v, i) => `/${i}`));
    expect(app.connections).toBe(1);
    expect(app.tracked.maxOpen).toBe(1);
  });

  it('opens a new connection after the app closed an idle one, and the request succeeds', async () => {
    const app = await nodeApp((r, res) => res.end(r.url), { keepAliveTimeout: 50 });
    const c = client(app.port);
    expect((await send(c, req('/one'))).body.toString()).toBe('/one');
    await until(() => app.tracked.closed === 1, 'the app to close the idle connection');
    await until(() => c.connections === 0, 'the client to drop the closed connection');
    const rec = await send(c, req('/two'));
    expect(rec.body.toString()).toBe('/two');
    expect(app.connections).toBe(2);
  });

  it('sends a GET again on a new connection when a reused connection is closed as the request goes out', async () => {
    // Each connection: the first request is answered, the second is read and the connection closed unanswered.
    const app = await startRawApp((r) => {
      if (r.index === 0) answer(r, `answer ${r.path}`);
      else r.conn.socket.end();
    });
    const c = client(app.port);
    expect((await send(c, req('/a'))).body.toString()).toBe('answer /a');
    const rec = await send(c, req('/b'));
    expect(rec.status).toBe(200);
    expect(rec.body.toString()).toBe('answer /b');
    expect(app.accepted).toBe(2);
    expect(app.requests.map((r) => `${r.conn.id}${r.path}`)).toEqual(['0/a', '0/b', '1/b']);
  });

  it('sends a GET again when a reused connection is reset (RST) as the request goes out', async () => {
    const app = await startRawApp((r) => {
      if (r.index === 0) answer(r, `answer ${r.path}`);
      else r.conn.socket.resetAndDestroy();
    });
    const c = client(app.port);
    await send(c, req('/a'));
    const rec = await send(c, req('/b'));
    expect(rec.body.toString()).toBe('answer /b');
    expect(app.accepted).toBe(2);
  });

  it('does not send a POST again: the caller gets APP_CONNECTION_CLOSED', async () => {
    const app = await startRawApp((r) => {
      if (r.index === 0) answer(r);
      else r.conn.socket.end();
    });
    const c = client(app.port);
    await send(c, req('/a'));
    const rec = await send(c, req('/b', { method: 'POST', body: Buffer.from('once') }));
    expectCode(rec, 'APP_CONNECTION_CLOSED');
    expect(rec.status).toBeNull();
    expect(app.accepted).toBe(1);
    expect(app.requests.filter((r) => r.path === '/b')).toHaveLength(1);
    await until(() => c.connections === 0, 'the client to drop the connection');
  });

  it('does not retry a GET cut on a fresh connection (the app, not a stale connection, failed)', async () => {
    const app = await startRawApp((r) => r.conn.socket.end());
    const c = client(app.port);
    const rec = await send(c, req('/x'));
    expectCode(rec, 'APP_CONNECTION_CLOSED');
    expect(app.accepted).toBe(1);
  });

  it('does not retry a GET cut after part of the response arrived', async () => {
    const app = await startRawApp((r) => {
      if (r.index === 0) answer(r);
      else {
        r.conn.socket.write('HTTP/1.1 200 OK\r\nContent-Le');
        setTimeout(() => r.conn.socket.end(), 5);
      }
    });
    const c = client(app.port);
    await send(c, req('/a'));
    const rec = await send(c, req('/b'));
    expect(rec.error).toBeInstanceOf(HttpModeError);
    expect((rec.error as HttpModeError).code).toBe('HTTP_APP_BAD_RESPONSE');
    expect(app.accepted).toBe(1);
  });

  it('sends a retried GET before queued requests and stays within maxConnections', async () => {
    // The app cuts the first connection at its second request; every other request is answered.
    const app = await startRawApp((r) => {
      if (r.conn.id === 0 && r.index === 1) r.conn.socket.end();
      else answer(r, `answer ${r.path}`);
    });
    const c = client(app.port, { maxConnections: 1 });
    await send(c, req('/a'));
    // /b goes on the idle connection (which the app cuts), /c waits for it.
    const b = new Rec('/b');
    const cc = new Rec('/c');
    c.request(req('/b'), b);
    c.request(req('/c'), cc);
    await Promise.all([b.ended, cc.ended]);
    expect(b.body.toString()).toBe('answer /b');
    expect(cc.body.toString()).toBe('answer /c');
    // Within the cap of 1: /c waited for the retry's connection instead of opening a third (the app's own
    // count of open sockets can overlap for a moment: it learns of the cut connection's close asynchronously).
    expect(app.accepted, 'connections the app accepted').toBe(2);
    expect(app.requests.map((r) => r.path)).toEqual(['/a', '/b', '/b', '/c']);
    expect(c.connections).toBe(1);
  });

  it('reports ECONNREFUSED when nothing listens on the port', async () => {
    const c = client(await refusedPort());
    const rec = await send(c, req('/'));
    expectCode(rec, 'ECONNREFUSED');
    expect(c.connections).toBe(0);
  });
});

describe('AppClient: keep-alive expiry', { timeout: 10_000 }, () => {
  it("does not reuse a connection whose Keep-Alive timeout is 1 s (less the 1 s margin: 0), and closes it", async () => {
    const app = await startRawApp((r) => answer(r, r.path, 'Keep-Alive: timeout=1\r\n'));
    const c = client(app.port);
    await send(c, req('/one'));
    await until(() => app.closed === 1, 'the client to close the connection');
    expect(c.connections).toBe(0);
    expect((await send(c, req('/two'))).body.toString()).toBe('/two');
    expect(app.accepted).toBe(2);
  });

  it('does not reuse a connection idle for longer than its keep-alive time, even before the sweep closes it', async () => {
    const app = await startRawApp((r) => answer(r, r.path));
    // Timeouts of 8 s: the sweep runs once a second, long after the 50 ms keep-alive time.
    const c = client(app.port, { keepAliveTimeoutMs: 50, headersTimeoutMs: 8000, bodyTimeoutMs: 8000 });
    await send(c, req('/one'));
    await new Promise((r) => setTimeout(r, 120));
    expect((await send(c, req('/two'))).body.toString()).toBe('/two');
    expect(app.accepted).toBe(2);
    expect(app.requests.map((r) => `${r.conn.id}${r.path}`)).toEqual(['0/one', '1/two']);
  });

  it('reuses a connection whose Keep-Alive timeout leaves time', async () => {
    const app = await startRawApp((r) => answer(r, r.path, 'Keep-Alive: timeout=5, max=1000\r\n'));
    const c = client(app.port);
    await send(c, req('/one'));
    await send(c, req('/two'));
    expect(app.accepted).toBe(1);
  });

  it('closes an idle connection after keepAliveTimeoutMs, and keeps it until then', async () => {
    const app = await nodeApp((r, res) => res.end(r.url));
    // headersTimeoutMs sets the sweep period (1/8 of it): 100 ms here.
    const c = client(app.port, { keepAliveTimeoutMs: 100, headersTimeoutMs: 800, bodyTimeoutMs: 800 });
    await send(c, req('/one'));
    expect(c.connections).toBe(1);
    // Used again right away: still the same connection.
    await send(c, req('/two'));
    expect(app.connections).toBe(1);
    await until(() => app.tracked.closed === 1, 'the idle connection to be closed');
    expect(c.connections).toBe(0);
    await send(c, req('/three'));
    expect(app.connections).toBe(2);
  });
});

describe('AppClient: request bytes', { timeout: 10_000 }, () => {
  const wire = async (r: AppRequest): Promise<RawRequest> => {
    const app = await startRawApp((x) => answer(x));
    const c = client(app.port);
    await send(c, r);
    expect(app.requests).toHaveLength(1);
    return app.requests[0]!;
  };

  it('writes host first, then connection: keep-alive, then the headers in order, and no content-length without a body', async () => {
    const r = await wire(req('/p?q=1', { headers: ['Host', 'h', 'X-A', '1', 'x-b', 'two words', 'X-A', 'again', 'X-Empty', ''] }));
    expect(r.head).toBe('GET /p?q=1 HTTP/1.1\r\nhost: h\r\nconnection: keep-alive\r\nX-A: 1\r\nx-b: two words\r\nX-A: again\r\nX-Empty: \r\n\r\n');
    expect(r.body.length).toBe(0);
  });

  it('moves a Host header given later in the list to the front', async () => {
    const r = await wire(req('/p', { headers: ['X-A', '1', 'HOST', 'h:8080', 'X-B', '2'] }));
    expect(r.head).toBe('GET /p HTTP/1.1\r\nhost: h:8080\r\nconnection: keep-alive\r\nX-A: 1\r\nX-B: 2\r\n\r\n');
  });

  it('writes content-length last and the body after the head', async () => {
    const r = await wire(req('/p', { method: 'POST', headers: ['Host', 'h', 'Content-Type', 'text/plain', 'X-A', '1'], body: Buffer.from('hello') }));
    expect(r.head).toBe('POST /p HTTP/1.1\r\nhost: h\r\nconnection: keep-alive\r\nContent-Type: text/plain\r\nX-A: 1\r\ncontent-length: 5\r\n\r\n');
    expect(r.body.toString()).toBe('hello');
  });

  it.each(['POST', 'PUT', 'PATCH'])('sends content-length: 0 for a %s without a body', async (method) => {
    for (const body of [null, Buffer.alloc(0)]) {
      const r = await wire(req('/p', { method, headers: ['Host', 'h'], body }));
      expect(r.head).toBe(`${method} /p HTTP/1.1\r\nhost: h\r\nconnection: keep-alive\r\ncontent-length: 0\r\n\r\n`);
    }
  });

  it.each(['GET', 'HEAD', 'DELETE', 'OPTIONS'])('sends no content-length for a %s without a body', async (method) => {
    const r = await wire(req('/p', { method, headers: ['Host', 'h'] }));
    expect(r.head).toBe(`${method} /p HTTP/1.1\r\nhost: h\r\nconnection: keep-alive\r\n\r\n`);
  });

  it('sends a DELETE body with its length', async () => {
    const r = await wire(req('/p', { method: 'DELETE', headers: ['Host', 'h'], body: Buffer.from('x') }));
    expect(r.head).toBe('DELETE /p HTTP/1.1\r\nhost: h\r\nconnection: keep-alive\r\ncontent-length: 1\r\n\r\n');
    expect(r.body.toString()).toBe('x');
  });

  it('writes obs-text header values as their latin1 bytes', async () => {
    const app = await startRawApp((x) => answer(x));
    const c = client(app.port);
    await send(c, req('/p', { headers: ['Host', 'h', 'X-Name', 'caf\xe9\xff'] }));
    const bytes = Buffer.concat(app.received);
    const at = bytes.indexOf('X-Name: ');
    expect([...bytes.subarray(at + 8, at + 8 + 7)]).toEqual([0x63, 0x61, 0x66, 0xe9, 0xff, 0x0d, 0x0a]);
  });

  it('sends a 1 MiB body intact', async () => {
    const body = Buffer.alloc(1024 * 1024);
    for (let i = 0; i < body.length; i++) body[i] = (i * 7) & 0xff;
    const r = await wire(req('/big', { method: 'PUT', headers: ['Host', 'h'], body }));
    expect(r.body.equals(body)).toBe(true);
  });
});

describe('AppClient: requests that cannot be written safely', { timeout: 10_000 }, () => {
  const refused = (c: AppClient, r: AppRequest): unknown => {
    const rec = new Rec(`refused ${JSON.stringify(r)}`, {}, false);
    try {
      c.request(r, rec);
    } catch (err) {
      return err;
    }
    return null;
  };
  const expect400 = (err: unknown, what: string): void => {
    expect(err, what).toBeInstanceOf(HttpModeError);
    expect((err as HttpModeError).status, what).toBe(400);
    expect((err as HttpModeError).code, what).toBe('HTTP_BAD_REQUEST');
  };

  it('refuses header values with CR, LF, NUL, other controls or characters above U+00FF, and writes nothing', async () => {
    const app = await startRawApp((x) => answer(x));
    const c = client(app.port);
    for (const value of ['a\r\nX-Evil: 1', '\r\n', 'a\nb', 'a\rb', 'a\0b', 'a\x01b', 'a\x7fb', '\u0100', 'snow \u2603', '\ud83d\ude00']) {
      const err = refused(c, req('/p', { headers: ['Host', 'h', 'X-A', value] }));
      expect400(err, JSON.stringify(value));
      expect((err as Error).message).not.toContain(value);
    }
    // A Host value is checked too.
    expect400(refused(c, req('/p', { headers: ['Host', 'h\r\nX-Evil: 1'] })), 'host');
    await sleep(30);
    expect(app.accepted).toBe(0);
    expect(c.connections).toBe(0);
    // The client still works.
    expect((await send(c, req('/ok'))).status).toBe(200);
    expect(app.requests.map((r) => r.path)).toEqual(['/ok']);
  });

  it('refuses invalid header names, a missing Host, and bad request targets', async () => {
    const app = await startRawApp((x) => answer(x));
    const c = client(app.port);
    for (const name of ['a b', 'a:b', '', 'X-\xe9', 'a\r\nX-Evil', 'a\0', '(x)']) {
      expect400(refused(c, req('/p', { headers: ['Host', 'h', name, 'v'] })), JSON.stringify(name));
    }
    expect400(refused(c, req('/p', { headers: ['X-A', '1'] })), 'no host');
    for (const path of ['p', '', '/a b', 'http://x/', '*', '/a\r\nX-Evil: 1', '/a\tb', '/caf\xe9', '/a\0']) {
      expect400(refused(c, req(path)), JSON.stringify(path));
    }
    await sleep(30);
    expect(app.accepted).toBe(0);
    expect(c.connections).toBe(0);
  });

  it('refuses a method that is not a token (it would inject into the request line)', async () => {
    const app = await startRawApp((x) => answer(x));
    const c = client(app.port);
    for (const method of ['GET /evil HTTP/1.1\r\nHost: x\r\n\r\nGET', 'G ET', '', 'GET\r\n', 'G\0T']) {
      expect400(refused(c, req('/p', { method })), JSON.stringify(method));
    }
    await sleep(30);
    expect(app.accepted).toBe(0);
  });
});

describe('AppClient: responses', { timeout: 10_000 }, () => {
  it('relays a chunked response body and the headers as sent', async () => {
    const app = await nodeApp((_r, res) => {
      res.setHeader('X-App', 'yes');
      res.write('part one, ');
      setTimeout(() => res.end('part two'), 5);
    });
    const c = client(app.port);
    const rec = await send(c, req('/'));
    expect(rec.status).toBe(200);
    expect(rec.body.toString()).toBe('part one, part two');
    const names = rec.headers.filter((_v, i) => i % 2 === 0).map((n) => n.toLowerCase());
    expect(names).toContain('x-app');
    expect(names).toContain('transfer-encoding');
    // The connection is reused after a chunked response.
    await send(c, req('/again'));
    expect(app.connections).toBe(1);
  });

  it('completes a HEAD response without a body and does not reuse the connection (a stray body may follow)', async () => {
    const app = await nodeApp((_r, res) => {
      res.setHeader('Content-Length', '1000');
      res.end();
    });
    const c = client(app.port);
    const rec = await send(c, req('/', { method: 'HEAD' }));
    expect(rec.status).toBe(200);
    expect(rec.dataCalls).toBe(0);
    await send(c, req('/', { method: 'HEAD' }));
    expect(app.connections).toBe(2);
  });

  // An app that answers HEAD like GET (do_HEAD = do_GET), or 204/304 with a body, in a second write: were the
  // connection reused, the queued request (another client's) would read those bytes as its response.
  it.each([
    ['HEAD → 200 with Content-Length', 'HEAD', 'HTTP/1.1 200 OK\r\nContent-Length: LEN\r\n\r\n'],
    ['GET → 204 with Content-Length', 'GET', 'HTTP/1.1 204 No Content\r\nContent-Length: LEN\r\n\r\n'],
    ['GET → 304 with Transfer-Encoding', 'GET', 'HTTP/1.1 304 Not Modified\r\nTransfer-Encoding: chunked\r\n\r\n'],
  ])('a stray body after %s never reaches the next queued request', async (_label, method, headTemplate) => {
    const forged = 'HTTP/1.1 200 OK\r\nContent-Length: 6\r\nX-Forged: yes\r\n\r\nforged';
    const app = await startRawApp((r) => {
      if (r.path === '/first') {
        r.conn.socket.write(headTemplate.replace('LEN', String(forged.length)), 'latin1');
        // The body in a second write, after the client has taken the response as complete.
        setTimeout(() => r.conn.socket.write(forged, 'latin1'), 30);
      } else setTimeout(() => answer(r, `own answer ${r.path}`), 60);
    });
    const c = client(app.port, { maxConnections: 1 });
    const first = new Rec('first');
    c.request(req('/first', { method }), first);
    const second = await send(c, req('/second'));
    await first.ended;
    expect(first.completes).toBe(1);
    expect(second.status).toBe(200);
    expect(second.body.toString()).toBe('own answer /second');
    expect(second.headers.map((h) => h.toLowerCase())).not.toContain('x-forged');
    expect(app.requests.map((r) => `${r.conn.id}${r.path}`)).toEqual(['0/first', '1/second']);
  });

  it('reuses the connection after a 204 or 304 that declares no body', async () => {
    const app = await startRawApp((r) => {
      if (r.path === '/204') r.conn.socket.write('HTTP/1.1 204 No Content\r\n\r\n');
      else r.conn.socket.write('HTTP/1.1 304 Not Modified\r\nContent-Length: 0\r\n\r\n');
    });
    const c = client(app.port);
    expect((await send(c, req('/204'))).status).toBe(204);
    expect((await send(c, req('/304'))).status).toBe(304);
    expect(app.accepted).toBe(1);
  });

  it('skips 100 and 103 interim responses and reports the final one once', async () => {
    const app = await startRawApp((r) => {
      r.conn.socket.write('HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n');
      setTimeout(() => answer(r, 'final'), 5);
    });
    const c = client(app.port);
    const rec = await send(c, req('/'));
    expect(rec.status).toBe(200);
    expect(rec.body.toString()).toBe('final');
  });

  it('completes a close-delimited body when the app closes, and does not reuse the connection', async () => {
    const app = await startRawApp((r) => {
      r.conn.socket.write('HTTP/1.1 200 OK\r\nX-A: b\r\n\r\nuntil ');
      setTimeout(() => r.conn.socket.end('the end'), 5);
    });
    const c = client(app.port);
    const rec = await send(c, req('/'));
    expect(rec.body.toString()).toBe('until the end');
    expect(rec.completes).toBe(1);
    await until(() => c.connections === 0, 'the connection to be dropped');
    await send(c, req('/again'));
    expect(app.accepted).toBe(2);
  });

  it('does not reuse a connection after Connection: close or an HTTP/1.0 response', async () => {
    const app = await startRawApp((r) => {
      if (r.path === '/close') r.conn.socket.write('HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 1\r\n\r\nx');
      else r.conn.socket.write('HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\ny');
    });
    const c = client(app.port);
    expect((await send(c, req('/close'))).body.toString()).toBe('x');
    expect((await send(c, req('/ten'))).body.toString()).toBe('y');
    expect((await send(c, req('/close'))).body.toString()).toBe('x');
    expect(app.accepted).toBe(3);
    await until(() => app.closed === 3, 'the client to close every connection');
  });

  it('reports a malformed response as HTTP_APP_BAD_RESPONSE (502) and does not reuse the connection', async () => {
    const app = await startRawApp((r) => {
      if (r.path === '/bad') r.conn.socket.write('HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx');
      else answer(r, 'fine');
    });
    const c = client(app.port);
    await send(c, req('/first'));
    const rec = await send(c, req('/bad'));
    expect(rec.error).toBeInstanceOf(HttpModeError);
    expect((rec.error as HttpModeError).code).toBe('HTTP_APP_BAD_RESPONSE');
    expect((rec.error as HttpModeError).status).toBe(502);
    expect(rec.status).toBeNull();
    await until(() => app.closed === 1, 'the bad connection to be closed');
    expect((await send(c, req('/next'))).body.toString()).toBe('fine');
    expect(app.accepted).toBe(2);
  });

  it('reports a malformed chunked body after the head as an error, not a completion', async () => {
    const app = await startRawApp((r) => r.conn.socket.write('HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabc\r\n0\r\n\r\n'));
    const c = client(app.port);
    const rec = await send(c, req('/'));
    expect(rec.status).toBe(200);
    expect((rec.error as HttpModeError).code).toBe('HTTP_APP_BAD_RESPONSE');
  });

  it('completes a response followed by an extra byte, then discards that connection', async () => {
    const app = await startRawApp((r) => {
      if (r.path === '/extra') r.conn.socket.write('HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokX');
      else answer(r, 'fine');
    });
    const c = client(app.port);
    const rec = await send(c, req('/extra'));
    expect(rec.completes).toBe(1);
    expect(rec.body.toString()).toBe('ok');
    const next = await send(c, req('/next'));
    expect(next.body.toString()).toBe('fine');
    expect(app.accepted).toBe(2);
    expect(app.requests.map((r) => `${r.conn.id}${r.path}`)).toEqual(['0/extra', '1/next']);
  });

  it('discards an idle connection on which the app sends unsolicited bytes', async () => {
    const app = await startRawApp((r) => {
      answer(r, 'fine');
      if (r.index === 0) setTimeout(() => r.conn.socket.write('HTTP/1.1 200 OK\r\n\r\n'), 10);
    });
    const c = client(app.port);
    await send(c, req('/one'));
    await until(() => app.closed === 1, 'the client to close the connection');
    expect(c.connections).toBe(0);
    expect((await send(c, req('/two'))).body.toString()).toBe('fine');
    expect(app.accepted).toBe(2);
  });
});

describe('AppClient: backpressure', { timeout: 15_000 }, () => {
  it('stops reading while the handler is paused and goes on after resume()', async () => {
    const total = 24 * 1024 * 1024;
    const piece = 64 * 1024;
    let written = 0;
    const app = await nodeApp((_r, res) => {
      res.setHeader('Content-Length', String(total));
      const more = (): void => {
        while (written < total) {
          const b = Buffer.alloc(piece, (written / piece) & 0xff);
          written += piece;
          if (!res.write(b)) {
            res.once('drain', more);
            return;
          }
        }
        res.end();
      };
      more();
    });
    const c = client(app.port);
    let pause = true;
    const rec = new Rec('big', { data: () => !pause });
    let received = 0;
    c.request(req('/big'), {
      onAppHead: (s, h, resume) => rec.onAppHead(s, h, resume),
      onAppData: (chunk) => {
        received += chunk.length;
        return rec.onAppData(chunk);
      },
      onAppComplete: () => rec.onAppComplete(),
      onAppError: (e) => rec.onAppError(e),
    });
    await until(() => rec.dataCalls > 0, 'the first body bytes');
    expect(rec.dataCalls).toBe(1);
    await sleep(200);
    const callsWhilePaused = rec.dataCalls;
    const writtenWhilePaused = written;
    await sleep(100);
    expect(rec.dataCalls, 'no data while paused').toBe(callsWhilePaused);
    expect(rec.dataCalls).toBe(1);
    expect(written, 'the app stopped writing').toBe(writtenWhilePaused);
    expect(written).toBeLessThan(total);
    pause = false;
    rec.resume!();
    await rec.ended;
    expect(rec.completes).toBe(1);
    expect(received).toBe(total);
    // The bytes are the app's, in order.
    const body = rec.body;
    for (let at = 0; at < total; at += piece) expect(body[at], `piece at ${at}`).toBe((at / piece) & 0xff);
  });

  it('reuses a connection whose last response ended while the handler had paused it', async () => {
    const app = await nodeApp((r, res) => res.end(`small ${r.url}`));
    const c = client(app.port, { headersTimeoutMs: 1000 });
    // The handler asks to pause on the only chunk, and the response is complete: nobody will call resume().
    const first = await send(c, req('/one'), new Rec('/one', { data: () => false }));
    expect(first.body.toString()).toBe('small /one');
    const second = await send(c, req('/two'));
    expect(second.error?.code, second.error?.message).toBeUndefined();
    expect(second.body.toString()).toBe('small /two');
    expect(app.connections).toBe(1);
  });

  it('does not count a pause against the body timeout: the app is not the one stalling', async () => {
    const app = await nodeApp((_r, res) => {
      res.setHeader('Content-Length', String(4 * 1024 * 1024));
      res.end(Buffer.alloc(4 * 1024 * 1024, 1));
    });
    const c = client(app.port, { bodyTimeoutMs: 100, headersTimeoutMs: 1000, pausedTimeoutMs: 5000 });
    let pause = true;
    const rec = new Rec('paused', { data: () => !pause });
    c.request(req('/'), rec);
    await until(() => rec.dataCalls > 0, 'the first body bytes');
    // Paused for several body timeouts: the app is not the one stalling.
    await sleep(250);
    await sleep(250);
    expect(rec.error?.code, rec.error?.message).toBeUndefined();
    pause = false;
    rec.resume!();
    await rec.ended;
    expect(rec.completes).toBe(1);
    expect(rec.body.length).toBe(4 * 1024 * 1024);
  });

  it('fails a response held paused longer than pausedTimeoutMs with APP_PAUSED_TIMEOUT, closes that connection, and the next request works', async () => {
    const app = await nodeApp((r, res) => {
      if (r.url === '/big') {
        res.setHeader('Content-Length', String(4 * 1024 * 1024));
        res.end(Buffer.alloc(4 * 1024 * 1024, 1));
      } else res.end('small');
    });
    const c = client(app.port, { maxConnections: 1, bodyTimeoutMs: 5000, headersTimeoutMs: 5000, pausedTimeoutMs: 150 });
    // The caller never resumes (its client stopped reading).
    const rec = await send(c, req('/big'), new Rec('paused', { data: () => false }));
    expectCode(rec, 'APP_PAUSED_TIMEOUT');
    expect(rec.status).toBe(200);
    await until(() => app.tracked.closed === 1, 'the paused connection to be closed');
    const next = await send(c, req('/small'));
    expect(next.body.toString()).toBe('small');
  });
});

describe('AppClient: timeouts', { timeout: 10_000 }, () => {
  it('fails with APP_HEADERS_TIMEOUT when the app never answers, closes that connection, and the next request works', async () => {
    const app = await startRawApp((r) => {
      if (r.path !== '/hang') answer(r, 'fine');
    });
    const c = client(app.port, { headersTimeoutMs: 150, bodyTimeoutMs: 1000 });
    const rec = await send(c, req('/hang'));
    expectCode(rec, 'APP_HEADERS_TIMEOUT');
    expect(rec.status).toBeNull();
    await until(() => app.closed === 1, 'the connection to be closed');
    expect((await send(c, req('/next'))).body.toString()).toBe('fine');
    expect(app.accepted).toBe(2);
  });

  it('fails with APP_BODY_TIMEOUT when the app stalls after the head, closes that connection, and the next request works', async () => {
    const app = await startRawApp((r) => {
      if (r.path === '/stall') r.conn.socket.write('HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc');
      else answer(r, 'fine');
    });
    const c = client(app.port, { headersTimeoutMs: 1000, bodyTimeoutMs: 150 });
    const rec = await send(c, req('/stall'));
    expectCode(rec, 'APP_BODY_TIMEOUT');
    expect(rec.status).toBe(200);
    expect(rec.body.toString()).toBe('abc');
    await until(() => app.closed === 1, 'the connection to be closed');
    expect((await send(c, req('/next'))).body.toString()).toBe('fine');
  });

  it('fails a request still queued when the head timeout passes', async () => {
    const app = await startRawApp(() => {});
    const c = client(app.port, { maxConnections: 1, headersTimeoutMs: 150, bodyTimeoutMs: 1000 });
    const a = new Rec('/a');
    const b = new Rec('/b');
    c.request(req('/a'), a);
    c.request(req('/b'), b);
    await Promise.all([a.ended, b.ended]);
    expectCode(a, 'APP_HEADERS_TIMEOUT');
    expectCode(b, 'APP_HEADERS_TIMEOUT');
  });
});

describe('AppClient: abort and close', { timeout: 10_000 }, () => {
  it('abort() before the response: the reason once, the connection closed, nothing after', async () => {
    let held: RawRequest | null = null;
    const app = await startRawApp((r) => {
      if (r.path === '/slow') held = r;
      else answer(r, 'fine');
    });
    const c = client(app.port);
    const rec = new Rec('/slow');
    const abort = c.request(req('/slow'), rec);
    await until(() => held !== null, 'the app to get the request');
    const reason = Object.assign(new Error('gone'), { code: 'TEST_REASON' });
    abort(reason);
    expect(rec.errors).toEqual([reason]);
    expect(rec.errors[0]).toBe(reason);
    abort(reason);
    abort();
    await until(() => app.closed === 1, 'the app to see the connection closed');
    expect(c.connections).toBe(0);
    // The app answering now reaches nobody.
    answer(held!, 'late');
    await sleep(20);
    expect(rec.terminals).toBe(1);
    expect(rec.status).toBeNull();
    expect((await send(c, req('/next'))).body.toString()).toBe('fine');
  });

  it('abort() without a reason reports APP_REQUEST_ABORTED', async () => {
    const app = await startRawApp(() => {});
    const c = client(app.port);
    const rec = new Rec('/slow');
    const abort = c.request(req('/slow'), rec);
    await until(() => app.requests.length === 1, 'the app to get the request');
    abort();
    expectCode(rec, 'APP_REQUEST_ABORTED');
  });

  it('abort() from onAppHead: one error, no data or completion', async () => {
    const app = await startRawApp((r) => answer(r, 'some body'));
    const c = client(app.port);
    let abort: (reason?: Error) => void = () => {};
    const rec = new Rec('/', { head: () => abort() });
    abort = c.request(req('/'), rec);
    await rec.ended;
    expectCode(rec, 'APP_REQUEST_ABORTED');
    expect(rec.status).toBe(200);
    expect(rec.dataCalls).toBe(0);
    await until(() => app.closed === 1, 'the connection to be closed');
    expect((await send(c, req('/next'))).body.toString()).toBe('some body');
  });

  it('abort() after completion does nothing', async () => {
    const app = await startRawApp((r) => answer(r));
    const c = client(app.port);
    const rec = new Rec('/');
    const abort = c.request(req('/'), rec);
    await rec.ended;
    abort();
    expect(rec.completes).toBe(1);
    expect(rec.errors).toEqual([]);
    // The connection stays for the next request.
    await send(c, req('/again'));
    expect(app.accepted).toBe(1);
  });

  it('abort() of a queued request takes it out of the queue: the app never sees it', async () => {
    let held: RawRequest | null = null;
    const app = await startRawApp((r) => {
      if (r.path === '/slow') held = r;
      else answer(r, r.path);
    });
    const c = client(app.port, { maxConnections: 1 });
    const slow = new Rec('/slow');
    c.request(req('/slow'), slow);
    const queued = new Rec('/queued');
    const abort = c.request(req('/queued'), queued);
    const after = new Rec('/after');
    c.request(req('/after'), after);
    await until(() => held !== null, 'the app to get /slow');
    abort();
    expectCode(queued, 'APP_REQUEST_ABORTED');
    answer(held!, 'slow done');
    await Promise.all([slow.ended, after.ended]);
    expect(slow.body.toString()).toBe('slow done');
    expect(after.body.toString()).toBe('/after');
    expect(app.requests.map((r) => r.path)).toEqual(['/slow', '/after']);
    expect(app.accepted).toBe(1);
  });

  it('close() fails requests in flight and queued with APP_CLIENT_CLOSED, closes the connections, and refuses new requests', async () => {
    const app = await startRawApp(() => {});
    const c = client(app.port, { maxConnections: 1 });
    const inFlight = new Rec('/a');
    const queued = new Rec('/b');
    c.request(req('/a'), inFlight);
    c.request(req('/b'), queued);
    await until(() => app.requests.length === 1, 'the app to get /a');
    c.close();
    expectCode(inFlight, 'APP_CLIENT_CLOSED');
    expectCode(queued, 'APP_CLIENT_CLOSED');
    expect(c.connections).toBe(0);
    await until(() => app.closed === 1, 'the app to see the connection closed');
    const late = new Rec('late', {}, false);
    let thrown: unknown = null;
    try {
      c.request(req('/c'), late);
    } catch (err) {
      thrown = err;
    }
    expect(thrown).toBeInstanceOf(HttpModeError);
    expect((thrown as HttpModeError).status).toBe(503);
    c.close();
    expect(app.requests.map((r) => r.path)).toEqual(['/a']);
  });

  it('close() also closes idle connections', async () => {
    const app = await startRawApp((r) => answer(r));
    const c = client(app.port);
    await send(c, req('/'));
    expect(c.connections).toBe(1);
    c.close();
    expect(c.connections).toBe(0);
    await until(() => app.closed === 1, 'the app to see the connection closed');
  });
});

describe('AppClient through the HTTP forwarder (one-shot Data requests)', { timeout: 10_000 }, () => {
  let fwd: HttpForwarder | undefined;
  afterEach(async () => {
    await fwd?.close();
    fwd = undefined;
  });
  const forwarder = (port: number): HttpForwarder => {
    fwd = createHttpForwarder({ appPort: port, logger: silentLogger, trxLogging: false, appStartupGraceMs: 0 });
    return fwd;
  };

  /** The session's view: the answer bytes, parsed as one HTTP/1.1 response. */
  async function exchange(f: HttpForwarder, raw: string): Promise<{ status: number; headers: Record<string, string>; body: Buffer; rest: Buffer }> {
    const one = f.exchangeData!(fakeContext(), Buffer.from(raw, 'latin1'), 65519);
    expect(one, 'taken by the fast path').not.toBeNull();
    const result = await one!.done;
    if (!('bytes' in result)) throw new Error(`request failed: ${result.failed}`);
    const stream = new PassThrough();
    const reader = new ResponseReader(stream);
    stream.end(Buffer.from(result.bytes));
    const res = await reader.next();
    await reader.waitEnd();
    return { ...res, rest: reader.takeBuffered() };
  }

  it('re-frames a chunked response from the app for the client', async () => {
    const app = await nodeApp((_r, res) => {
      res.setHeader('X-App', 'yes');
      res.write('part one, ');
      setTimeout(() => res.end('part two'), 5);
    });
    const f = forwarder(app.port);
    const res = await exchange(f, get('/chunked'));
    expect(res.status).toBe(200);
    expect(res.headers['x-app']).toBe('yes');
    expect(res.body.toString()).toBe('part one, part two');
    expect(res.rest.length).toBe(0);
    expect(f.fastPathRequests).toBe(1);
  });

  it('re-frames a close-delimited response from a raw app for the client', async () => {
    const app = await startRawApp((r) => {
      r.conn.socket.write('HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil ');
      setTimeout(() => r.conn.socket.end('the app closes'), 5);
    });
    const f = forwarder(app.port);
    const res = await exchange(f, get('/'));
    expect(res.status).toBe(200);
    expect(res.headers['content-type']).toBe('text/plain');
    expect(res.body.toString()).toBe('until the app closes');
    expect(res.rest.length).toBe(0);
    // The answer carries its own framing: a length or chunked.
    expect(res.headers['content-length'] !== undefined || res.headers['transfer-encoding'] === 'chunked').toBe(true);
  });

  it('answers 502 JSON when the app sends a malformed response', async () => {
    const app = await startRawApp((r) => r.conn.socket.write('HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx'));
    const f = forwarder(app.port);
    const res = await exchange(f, get('/'));
    expect(res.status).toBe(502);
    expect(JSON.parse(res.body.toString())).toMatchObject({ error: 'HTTP_APP_BAD_RESPONSE' });
  });

  it('cancel() while the app is slow resolves {failed: closed} and closes the app connection', async () => {
    const app = await startRawApp(() => {});
    const f = forwarder(app.port);
    const one = f.exchangeData!(fakeContext(), Buffer.from(get('/slow'), 'latin1'), 65519);
    expect(one).not.toBeNull();
    await until(() => app.requests.length === 1, 'the app to get the request');
    one!.cancel();
    expect(await one!.done).toEqual({ failed: 'closed' });
    await until(() => app.closed === 1, 'the app connection to be closed');
  });
});
