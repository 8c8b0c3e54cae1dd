// The keep-alive fast path for TLS ingress (src/http/keep-alive-connection.ts): pipelined requests in one TLS
// write answered in order, a request split across TLS records byte by byte, a body with Content-Length, the
// 431 for an oversized head, malformed input → 400 and close, and the hand-over to the http.Server for what
// the fast path does not take (a chunked body, Expect: 100-continue, an Upgrade), mid-connection; the
// transaction record has the Data path's shape; drain() answers in-flight requests and closes idle
// connections — also through the runtime's drain (SIGTERM), which cut them before.
import type http from 'node:http';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import tls from 'node:tls';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createNsmSimulator, type NsmSimulator } from '../../src/attestation/simulator.ts';
import { configFromObject } from '../../src/config.ts';
import { createHttpForwarder, type HttpForwarder } from '../../src/http/forwarder.ts';
import { createMemoryLogSink, type MemoryLogSink } from '../../src/http/log-sink.ts';
import { AttestedIdentity } from '../../src/ingress/attested-identity.ts';
import { startTlsIngress, type TlsIngress } from '../../src/ingress/tls-ingress.ts';
import { startAgentRuntime } from '../../src/runtime/agent.ts';
import { listenTcp } from '../../src/transport/tcp.ts';
import { dataRequest, fakeContext, ResponseReader, silentLogger, startApp, type TestApp } from '../http/helpers.ts';

/** Requests to /slow/<id> wait here until the test releases them. */
const held = new Map<string, () => void>();
let app: TestApp;
let sim: NsmSimulator;
let stateDir: string;

/** The app: echoes what it got as JSON; /slow/<id> answers when released; Upgrade: echo tunnels bytes back. */
async function startEchoApp(): Promise<TestApp> {
  const a = await startApp((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const answer = (): void => {
        const body = JSON.stringify({ method: req.method, url: req.url, body: Buffer.concat(chunks).toString('latin1'), te: req.headers['transfer-encoding'] ?? null });
        res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
        res.end(body);
      };
      const slow = /^\/slow\/(.+)$/.exec(req.url ?? '');
      if (slow) held.set(slow[1]!, answer);
      else answer();
    });
  });
  a.server.on('upgrade', (req: http.IncomingMessage, socket) => {
    socket.write('HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n');
    socket.pipe(socket);
  });
  return a;
}

interface Stack {
  fwd: HttpForwarder;
  sink: MemoryLogSink;
  ingress: TlsIngress;
  port: number;
  stop(): Promise<void>;
}

/** A forwarder and a TLS ingress in front of the echo app; `limits` override the forwarder's defaults. */
async function startStack(limits: Omit<Parameters<typeof createHttpForwarder>[0], 'appPort' | 'logger' | 'logSink'> = { maxHeaderBytes: 4096 }): Promise<Stack> {
  const sink = createMemoryLogSink();
  const fwd = createHttpForwarder({ appPort: app.port, logger: silentLogger, logSink: sink, ...limits });
  const ingress = await startTlsIngress({
    listen: (o) => listenTcp({ host: '127.0.0.1', port: 0 }, o),
    identity: new AttestedIdentity({ nsm: sim }),
    attach: (s, c) => fwd.attach(s, c),
    logger: silentLogger,
  });
  return {
    fwd,
    sink,
    ingress,
    port: ingress.port!,
    async stop() {
      await ingress.close();
      await fwd.close();
    },
  };
}

let s: Stack;

beforeAll(async () => {
  stateDir = await mkdtemp(path.join(os.tmpdir(), 'ingress-keepalive-'));
  app = await startEchoApp();
  sim = await createNsmSimulator({ stateDir, identity: { agentVersion: 'test', app: 'keepalive', config: '' } });
  s = await startStack();
}, 30_000);

afterAll(async () => {
  for (const release of held.values()) release();
  await s?.stop();
  await app?.close();
  await rm(stateDir, { recursive: true, force: true });
});

function connect(port: number): Promise<tls.TLSSocket> {
  return new Promise((resolve, reject) => {
    const t = tls.connect({ host: '127.0.0.1', port, servername: 'localhost', rejectUnauthorized: false });
    t.once('secureConnect', () => resolve(t));
    t.once('error', reject);
  });
}

const GET = (p: string, extra = ''): string => `GET ${p} HTTP/1.1\r\nHost: localhost\r\n${extra}\r\n`;
const body = (r: { body: Buffer }): Record<string, unknown> => JSON.parse(r.body.toString('utf8')) as Record<string, unknown>;
const closed = (t: tls.TLSSocket): Promise<void> => new Promise((r) => (t.destroyed ? r() : t.once('close', () => r())));

describe('keep-alive fast path', () => {
  it('answers pipelined requests sent in one TLS write, in order, on the fast path', async () => {
    const t = await connect(s.port);
    const reader = new ResponseReader(t);
    const before = s.fwd.keepAliveFastPathRequests;
    t.write(GET('/p1') + GET('/p2') + `POST /p3 HTTP/1.1\r\nHost: localhost\r\nContent-Length: 5\r\n\r\nhello` + GET('/p4'));
    const got = [];
    for (let i = 0; i < 4; i++) got.push(await reader.next());
    expect(got.map((r) => r.status)).toEqual([200, 200, 200, 200]);
    expect(got.map((r) => body(r).url)).toEqual(['/p1', '/p2', '/p3', '/p4']);
    expect(body(got[2]!)).toMatchObject({ method: 'POST', body: 'hello' });
    for (const r of got) expect(r.headers['x-request-id']).toMatch(/^[0-9a-f-]{36}$/);
    expect(s.fwd.keepAliveFastPathRequests - before).toBe(4);
    // Still open for more.
    t.write(GET('/p5'));
    expect(body(await reader.next()).url).toBe('/p5');
    t.destroy();
  });

  it('answers more pipelined requests than it keeps in flight, and all of them after the client half-closes', async () => {
    const t = await connect(s.port);
    const reader = new ResponseReader(t);
    let all = '';
    for (let i = 0; i < 50; i++) all += GET(`/many/${i}`);
    t.end(all);
    const urls = [];
    for (let i = 0; i < 50; i++) urls.push(body(await reader.next()).url);
    expect(urls).toEqual(Array.from({ length: 50 }, (_, i) => `/many/${i}`));
    // Then the agent closes its side.
    await reader.waitEnd();
  });

  it('reassembles a request split across TLS records byte by byte', async () => {
    const t = await connect(s.port);
    const reader = new ResponseReader(t);
    const raw = Buffer.from(`POST /bytes HTTP/1.1\r\nHost: localhost\r\nContent-Length: 11\r\n\r\nhello world`);
    for (const byte of raw) {
      // One write per byte, each flushed before the next: one TLS record each.
      await new Promise<void>((r) => t.write(Buffer.from([byte]), () => setImmediate(r)));
    }
    const res = await reader.next();
    expect(res.status).toBe(200);
    expect(body(res)).toMatchObject({ method: 'POST', url: '/bytes', body: 'hello world' });
    t.destroy();
  });

  it('forwards a Content-Length body (binary) and the Connection: close request is the last', async () => {
    const t = await connect(s.port);
    const reader = new ResponseReader(t);
    const payload = Buffer.alloc(20_000, 0x61);
    t.write(`PUT /put HTTP/1.1\r\nHost: localhost\r\nContent-Length: ${payload.length}\r\nConnection: close\r\n\r\n`);
    t.write(payload);
    const res = await reader.next();
    expect(res.status).toBe(200);
    expect(res.headers.connection).toBe('close');
    expect((body(res).body as string).length).toBe(20_000);
    await reader.waitEnd();
  });

  it('answers 431 to an oversized head and closes; the agent keeps serving', async () => {
    const t = await connect(s.port);
    const reader = new ResponseReader(t);
    t.write(`GET /big HTTP/1.1\r\nHost: localhost\r\nX-Big: ${'a'.repeat(5000)}\r\n\r\n`);
    const res = await reader.next();
    expect(res.status).toBe(431);
    expect(body(res)).toMatchObject({ error: 'HTTP_HEADERS_TOO_LARGE' });
    await reader.waitEnd();
    // A head that never ends is refused once it passes the cap, too.
    const t2 = await connect(s.port);
    const r2 = new ResponseReader(t2);
    t2.write(`GET /endless HTTP/1.1\r\nX: ${'b'.repeat(5000)}`);
    expect((await r2.next()).status).toBe(431);
    await r2.waitEnd();
    expect(app.seen.some((r) => r.url === '/big' || r.url === '/endless')).toBe(false);
    await new Promise((r) => setTimeout(r, 20));
    expect(s.sink.records.filter((r) => r.status === 431)).toHaveLength(2);
  });

  it('malformed input gets 400 and the connection closes, after the answers before it', async () => {
    const t = await connect(s.port);
    const reader = new ResponseReader(t);
    t.write(GET('/before-bad') + 'GET /bad HTTP/1.1\r\nHost: localhost\r\nBad Header\r\n\r\n');
    expect(body(await reader.next()).url).toBe('/before-bad');
    const bad = await reader.next();
    expect(bad.status).toBe(400);
    expect(body(bad)).toMatchObject({ error: 'HTTP_BAD_REQUEST' });
    await reader.waitEnd();
    const t2 = await connect(s.port);
    t2.write('\x00\x01\x02garbage\r\n\r\n');
    const r2 = new ResponseReader(t2);
    expect((await r2.next()).status).toBe(400);
    await r2.waitEnd();
    // Bare LF line ends never make a CRLFCRLF: the server decides (Node's parser answers 400), no wait for a timeout.
    const t3 = await connect(s.port);
    t3.write('GET /bare-lf HTTP/1.1\nHost: localhost\n\n');
    const r3 = new ResponseReader(t3);
    expect((await r3.next()).status).toBe(400);
    t3.destroy();
  });

  it('hands a chunked request to the http.Server mid-connection; the connection goes on there', async () => {
    const t = await connect(s.port);
    const reader = new ResponseReader(t);
    const before = s.fwd.keepAliveFastPathRequests;
    t.write(GET('/fast-first'));
    expect(body(await reader.next()).url).toBe('/fast-first');
    t.write('POST /chunked HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n');
    const res = await reader.next();
    expect(body(res)).toMatchObject({ url: '/chunked', body: 'hello world', te: 'chunked' });
    t.write(GET('/after-chunked'));
    expect(body(await reader.next()).url).toBe('/after-chunked');
    expect(s.fwd.keepAliveFastPathRequests - before).toBe(1);
    t.destroy();
  });

  it('Expect: 100-continue goes to the http.Server: the client gets the 100 before sending its body', async () => {
    const t = await connect(s.port);
    const reader = new ResponseReader(t);
    t.write('POST /expect HTTP/1.1\r\nHost: localhost\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n');
    expect((await reader.next({ head: true })).status).toBe(100);
    t.write('data');
    expect(body(await reader.next())).toMatchObject({ url: '/expect', body: 'data' });
    t.destroy();
  });

  it('an Upgrade request after a fast-path request still works (through the http.Server)', async () => {
    const t = await connect(s.port);
    const reader = new ResponseReader(t);
    t.write(GET('/before-upgrade'));
    expect(body(await reader.next()).url).toBe('/before-upgrade');
    t.write(GET('/ws', 'Connection: Upgrade\r\nUpgrade: echo\r\n'));
    const up = await reader.next();
    expect(up.status).toBe(101);
    t.write('ping over the tunnel');
    expect((await reader.readBytes(20)).toString()).toBe('ping over the tunnel');
    t.destroy();
  });

  it('the transaction record of a fast-path TLS request has the shape of a Data request\'s and of the general path\'s', async () => {
    const t = await connect(s.port);
    const reader = new ResponseReader(t);
    t.write(GET('/trx-fast?q=secret', 'User-Agent: test\r\n'));
    await reader.next();
    t.write('POST /trx-general HTTP/1.1\r\nHost: localhost\r\nUser-Agent: test\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n');
    await reader.next();
    t.destroy();
    await dataRequest(s.fwd, 'GET /trx-data?q=secret HTTP/1.1\r\nHost: localhost\r\nUser-Agent: test\r\n\r\n', fakeContext({ kind: 'data' }));
    await new Promise((r) => setTimeout(r, 50));
    const find = (p: string): Record<string, unknown> => s.sink.records.find((r) => String(r.path).startsWith(p))!;
    const [fast, general, data] = [find('/trx-fast'), find('/trx-general'), find('/trx-data')];
    const shape = (r: Record<string, unknown>): string[] => Object.entries(r).map(([k, v]) => `${k}:${Array.isArray(v) ? 'array' : v === null ? 'null' : typeof v}`).sort();
    expect(shape(fast)).toEqual(shape(data));
    expect(shape(fast)).toEqual(shape(general));
    expect(fast).toMatchObject({ method: 'GET', path: '/trx-fast?q=***', status: 200 });
    expect(String(fast.session_id)).toMatch(/^tls-/);
    expect(fast.request_headers).toEqual(data.request_headers);
  });
});

describe('body limit (max_request_bytes)', () => {
  it('413 for a body over the limit on both paths; the app sees neither', async () => {
    const stack = await startStack({ maxRequestBodyBytes: 100 });
    try {
      const t = await connect(stack.port);
      const reader = new ResponseReader(t);
      // Fast path (a buffered body): 413, and the connection goes on (the body was read).
      t.write(`POST /over-fast HTTP/1.1\r\nHost: localhost\r\nContent-Length: 200\r\n\r\n${'x'.repeat(200)}`);
      const fast = await reader.next();
      expect(fast.status).toBe(413);
      expect(body(fast)).toMatchObject({ error: 'HTTP_BODY_TOO_LARGE' });
      t.write(`POST /within HTTP/1.1\r\nHost: localhost\r\nContent-Length: 10\r\n\r\n0123456789`);
      expect(body(await reader.next())).toMatchObject({ url: '/within', body: '0123456789' });
      // Larger than the fast path buffers: the http.Server's answer, 413 and close.
      t.write(`POST /over-large HTTP/1.1\r\nHost: localhost\r\nContent-Length: 100000\r\n\r\n`);
      const large = await reader.next();
      expect(large.status).toBe(413);
      await reader.waitEnd();
      expect(app.seen.some((r) => r.url.startsWith('/over-'))).toBe(false);
    } finally {
      await stack.stop();
    }
  });
});

describe('timeouts', () => {
  it('a request not complete within the headers timeout gets 408; an idle connection is closed', async () => {
    const stack = await startStack({ headersTimeoutMs: 300, keepAliveTimeoutMs: 300 });
    try {
      const slow = await connect(stack.port);
      const reader = new ResponseReader(slow);
      slow.write('GET /never-finished HTTP/1.1\r\nHost: localhost\r\n');
      const res = await reader.next();
      expect(res.status).toBe(408);
      expect(body(res)).toMatchObject({ error: 'HTTP_REQUEST_TIMEOUT' });
      await reader.waitEnd();
      const idle = await connect(stack.port);
      const r2 = new ResponseReader(idle);
      idle.write(GET('/then-idle'));
      expect((await r2.next()).status).toBe(200);
      await r2.waitEnd();
      expect(app.seen.some((r) => r.url === '/never-finished')).toBe(false);
      expect(stack.sink.records.filter((r) => r.status === 408)).toHaveLength(1);
    } finally {
      await stack.stop();
    }
  });
});

describe('connections handed to the http.Server: how they end', () => {
  /** Sends `req` and half-closes (or not); resolves with every byte received once the agent ends its side. */
  async function exchangeAll(port: number, req: string, halfClose: boolean): Promise<string> {
    const t = await new Promise<tls.TLSSocket>((resolve, reject) => {
      const c = tls.connect({ host: '127.0.0.1', port, servername: 'localhost', rejectUnauthorized: false, allowHalfOpen: true } as tls.ConnectionOptions);
      c.once('secureConnect', () => resolve(c));
      c.once('error', reject);
    });
    t.on('error', () => {});
    let data = '';
    t.on('data', (c: Buffer) => (data += c.toString('latin1')));
    const ended = new Promise<void>((r) => t.once('end', () => r()));
    if (halfClose) t.end(req);
    else t.write(req); // never sends its FIN: the agent must close the connection itself
    await ended;
    if (halfClose) await closed(t);
    else open.push(t); // still open on this side: the test looks at the agent's count, then destroys it
    return data;
  }
  const bodyBytes = (r: string): number => r.length - r.indexOf('\r\n\r\n') - 4;
  const open: tls.TLSSocket[] = [];
  afterAll(() => open.forEach((t) => t.destroy()));

  it('the last answer keeps its body when the client half-closes after a relayed request', async () => {
    for (const req of ['GET /h10 HTTP/1.0\r\nHost: localhost\r\n\r\n', 'POST /chunked HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n']) {
      const r = await exchangeAll(s.port, req, true);
      const length = Number(/content-length: (\d+)/i.exec(r)?.[1]);
      expect(length).toBeGreaterThan(0);
      expect(bodyBytes(r)).toBe(length);
    }
  });

  it('a half-open client does not keep a relayed connection once the server side is done (HTTP/1.0, a 400)', async () => {
    // Closed once the linger after the last answer is over (the clients send nothing more).
    const stack = await startStack({ keepAliveTimeoutMs: 60_000, headersTimeoutMs: 60_000, lingerTimeoutMs: 200 });
    try {
      expect((await exchangeAll(stack.port, 'GET /h10 HTTP/1.0\r\nHost: localhost\r\n\r\n', false)).split('\r\n')[0]).toBe('HTTP/1.1 200 OK');
      expect((await exchangeAll(stack.port, 'GET /bad HTTP/1.1\r\nHost: localhost\r\nBad Header: x\r\n\r\n', false)).split('\r\n')[0]).toBe('HTTP/1.1 400 Bad Request');
      for (let i = 0; i < 100 && stack.fwd.connectionCount > 0; i++) await new Promise((r) => setTimeout(r, 20));
      expect(open.every((t) => !t.destroyed)).toBe(true); // the clients never closed
      expect(stack.fwd.connectionCount).toBe(0);
    } finally {
      await stack.stop();
    }
  });

  it('the first connection after a quiet spell gets its whole keep-alive time (the sweep clock had stood still)', async () => {
    const stack = await startStack({ keepAliveTimeoutMs: 400, headersTimeoutMs: 400 });
    try {
      await new Promise((r) => setTimeout(r, 600)); // no connection: the sweep is stopped, its clock stale
      const t = await connect(stack.port);
      const reader = new ResponseReader(t);
      await new Promise((r) => setTimeout(r, 150)); // past a sweep tick (100 ms), well within the 400 ms
      t.write(GET('/after-quiet'));
      expect((await reader.next()).status).toBe(200);
      t.destroy();
    } finally {
      await stack.stop();
    }
  });
});

describe('drain', () => {
  it('answers in-flight requests (the last says Connection: close), closes idle connections at once', async () => {
    const d = await startStack();
    try {
      const busy = await connect(d.port);
      const idle = await connect(d.port);
      const idleReader = new ResponseReader(idle);
      idle.write(GET('/idle-first'));
      await idleReader.next();
      const reader = new ResponseReader(busy);
      busy.write(GET('/slow/drain-1'));
      await expect.poll(() => held.has('drain-1')).toBe(true);
      const drained = d.ingress.drain(10_000);
      await closed(idle);
      expect(busy.destroyed).toBe(false);
      held.get('drain-1')!();
      held.delete('drain-1');
      const res = await reader.next();
      expect(res.status).toBe(200);
      expect(res.headers.connection).toBe('close');
      await reader.waitEnd();
      await drained;
    } finally {
      await d.stop();
    }
  });

  it('the runtime\'s drain (SIGTERM) lets an in-flight TLS request finish', async () => {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'ingress-drain-'));
    const runtime = await startAgentRuntime({
      config: configFromObject({ tls_termination: true, app: { port: app.port }, api: { enabled: false } }),
      listen: { kind: 'tcp', host: '127.0.0.1', publicPort: 0, controlPort: 0, opsPort: 0, tlsPort: 0 },
      nsm: sim,
      stateDir: dir,
      processMetrics: false,
    });
    try {
      const t = await connect(runtime.tlsPort!);
      const reader = new ResponseReader(t);
      t.write(GET('/slow/runtime-drain'));
      await expect.poll(() => held.has('runtime-drain')).toBe(true);
      const drained = runtime.drain(10_000);
      // The sessions' side has nothing in flight: before the fix, the ingress closed here and cut the request.
      await new Promise((r) => setTimeout(r, 200));
      held.get('runtime-drain')!();
      held.delete('runtime-drain');
      const res = await reader.next();
      expect(res.status).toBe(200);
      expect(body(res).url).toBe('/slow/runtime-drain');
      await drained;
    } finally {
      await runtime.close();
      await rm(dir, { recursive: true, force: true });
    }
  });
});
