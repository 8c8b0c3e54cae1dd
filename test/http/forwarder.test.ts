import { afterEach, describe, expect, it } from 'vitest';
import { createHash } from 'node:crypto';
import { createHttpForwarder } from '../../src/http/forwarder.ts';
import type { HttpForwarder, HttpModeOptions } from '../../src/http/forwarder.ts';
import { createMemoryLogSink } from '../../src/http/log-sink.ts';
import { ResponseReader, dataRequest, fakeContext, get, json, silentLogger, startApp } from './helpers.ts';
import type { TestApp } from './helpers.ts';

let app: TestApp | undefined;
let fwd: HttpForwarder | undefined;

afterEach(async () => {
  await fwd?.close();
  await app?.close();
  fwd = undefined;
  app = undefined;
});

function forwarder(port: number, over: Partial<HttpModeOptions> = {}): HttpForwarder {
  fwd = createHttpForwarder({ appPort: port, logger: silentLogger, logSink: createMemoryLogSink(), ...over });
  return fwd;
}

describe('HTTP forwarding', () => {
  it('answers a Data request and closes the connection after the response (Connection: close)', async () => {
    app = await startApp((req, res) => res.end(`hello ${req.url}`));
    const f = forwarder(app.port);
    const res = await dataRequest(f, get('/x?y=1'));
    expect(res.status).toBe(200);
    expect(res.body.toString()).toBe('hello /x?y=1');
    expect(res.eof).toBe(true);
    expect(app.seen[0]!.headers.host).toBe('app.test');
  });

  it('also closes after the response when the Data request has no Connection header (the session ended its side)', async () => {
    app = await startApp((_req, res) => res.end('ok'));
    const f = forwarder(app.port);
    const res = await dataRequest(f, get('/', {}, { close: false }));
    expect(res.status).toBe(200);
    expect(res.eof).toBe(true);
  });

  it('reuses one app connection for 100 sequential requests (keep-alive pool)', async () => {
    app = await startApp((req, res) => res.end(req.url));
    const f = forwarder(app.port);
    for (let i = 0; i < 100; i++) {
      const res = await dataRequest(f, get(`/n/${i}`));
      expect(res.body.toString()).toBe(`/n/${i}`);
      // A real client's next request arrives after a network round trip; undici reuses a connection from the
      // next event-loop turn on (it waits one turn for servers that close despite keep-alive).
      await new Promise((r) => setImmediate(r));
    }
    expect(app.connections).toBe(1);
    expect(app.seen).toHaveLength(100);
  });

  it('serves several requests on one keep-alive stream and keeps it open between them', async () => {
    app = await startApp((req, res) => res.end(req.url));
    const f = forwarder(app.port);
    const d = await f.connect(fakeContext({ kind: 'stream' }));
    const reader = new ResponseReader(d);
    for (let i = 0; i < 5; i++) {
      d.write(get(`/s/${i}`, {}, { close: false }));
      const res = await reader.next();
      expect(res.body.toString()).toBe(`/s/${i}`);
    }
    expect(reader.isEnded).toBe(false);
    d.write(get('/last'));
    expect((await reader.next()).body.toString()).toBe('/last');
    await reader.waitEnd();
  });

  it('streams a chunked request body to the app and a chunked response back', async () => {
    app = await startApp((req, res) => {
      const hash = createHash('sha256');
      req.on('data', (c: Buffer) => hash.update(c));
      req.on('end', () => {
        res.writeHead(200, { 'content-type': 'text/plain' });
        res.write('te=' + String(req.headers['transfer-encoding']) + ';');
        res.write('cl=' + String(req.headers['content-length']) + ';');
        res.end(hash.digest('hex'));
      });
    });
    const f = forwarder(app.port);
    const parts = ['hello ', 'chunked ', 'world'];
    let raw = 'POST /up HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n';
    for (const p of parts) raw += `${p.length.toString(16)}\r\n${p}\r\n`;
    raw += '0\r\n\r\n';
    const res = await dataRequest(f, raw);
    expect(res.status).toBe(200);
    expect(res.headers['transfer-encoding']).toBe('chunked');
    const expected = createHash('sha256').update(parts.join('')).digest('hex');
    expect(res.body.toString()).toBe(`te=chunked;cl=undefined;${expected}`);
  });

  it('removes hop-by-hop headers and the headers named in Connection, both ways', async () => {
    app = await startApp((_req, res) => {
      res.writeHead(200, [
        'Connection', 'x-app-hop',
        'X-App-Hop', 'secret-hop',
        'Keep-Alive', 'timeout=5',
        'X-End', 'kept',
        'Set-Cookie', 'a=1',
        'Set-Cookie', 'b=2',
        'Content-Length', '2',
      ]);
      res.end('ok');
    });
    const f = forwarder(app.port);
    const res = await dataRequest(
      f,
      'GET / HTTP/1.1\r\nHost: a\r\nConnection: close, x-client-hop\r\nX-Client-Hop: 1\r\nKeep-Alive: 300\r\nTE: trailers\r\nProxy-Connection: keep-alive\r\nX-Keep: yes\r\n\r\n',
    );
    const seen = app.seen[0]!.headers;
    expect(seen['x-client-hop']).toBeUndefined();
    expect(seen['keep-alive']).toBeUndefined();
    expect(seen['te']).toBeUndefined();
    expect(seen['proxy-connection']).toBeUndefined();
    expect(seen['x-keep']).toBe('yes');
    expect(res.headers['x-app-hop']).toBeUndefined();
    expect(res.headers['keep-alive']).toBeUndefined();
    expect(res.headers['x-end']).toBe('kept');
    expect(res.rawHeaders.filter((h) => h.toLowerCase() === 'set-cookie')).toHaveLength(2);
    expect(res.body.toString()).toBe('ok');
  });

  it('sends a generated request id to the app and returns the same id to the client, replacing a client-supplied one', async () => {
    app = await startApp((req, res) => res.end(String(req.headers['x-request-id'])));
    const f = forwarder(app.port);
    const res = await dataRequest(f, get('/', { 'X-Request-Id': 'forged' }));
    const id = res.headers['x-request-id'];
    expect(id).toMatch(/^[0-9a-f-]{36}$/);
    expect(res.body.toString()).toBe(id);
    expect(app.seen[0]!.rawHeaders.filter((h) => h.toLowerCase() === 'x-request-id')).toHaveLength(1);
  });

  it('answers 502 JSON when the app is unreachable, and serves the next request once it is back', async () => {
    app = await startApp((_req, res) => res.end('up'));
    const port = app.port;
    const f = forwarder(port);
    expect((await dataRequest(f, get('/'))).status).toBe(200);
    await app.close();
    const down = await dataRequest(f, get('/'));
    expect(down.status).toBe(502);
    expect(down.headers['content-type']).toBe('application/json');
    expect(json(down.body)).toMatchObject({ error: 'HTTP_APP_UNREACHABLE' });
    // The app comes back on the same port: the next request works.
    app = await startAppOnPort(port);
    const back = await dataRequest(f, get('/'));
    expect(back.status).toBe(200);
    expect(back.body.toString()).toBe('back again');
  });

  it('answers 504 JSON when the app is too slow, and the next request works', async () => {
    let slow = true;
    app = await startApp((_req, res) => {
      if (slow) setTimeout(() => res.end('late'), 1500).unref();
      else res.end('fast');
    });
    const f = forwarder(app.port, { upstreamTimeoutMs: 300 });
    const res = await dataRequest(f, get('/'));
    expect(res.status).toBe(504);
    expect(json(res.body)).toMatchObject({ error: 'HTTP_APP_TIMEOUT' });
    slow = false;
    const next = await dataRequest(f, get('/'));
    expect(next.status).toBe(200);
    expect(next.body.toString()).toBe('fast');
  });

  it('answers 400 JSON to a malformed request and closes the connection', async () => {
    app = await startApp((_req, res) => res.end('never'));
    const f = forwarder(app.port);
    const cases = [
      'GARBAGE\r\n\r\n',
      'GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n',
      'GET / HTTP/1.1\r\nBad Header\r\n\r\n',
      'GET / HTTP/1.1\r\n\r\n', // no Host
      'GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n',
      'POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n',
      'GET / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n',
    ];
    for (const raw of cases) {
      const d = await f.connect(fakeContext({ kind: 'stream' }));
      const reader = new ResponseReader(d);
      d.write(raw);
      const res = await reader.next();
      expect(res.status, raw).toBe(400);
      expect(json(res.body)).toMatchObject({ error: 'HTTP_BAD_REQUEST' });
      await reader.waitEnd();
    }
    expect(app.seen).toHaveLength(0);
    // The forwarder still works.
    expect((await dataRequest(f, get('/'))).status).toBe(200);
  });

  it('answers 431 to a request head over the limit', async () => {
    app = await startApp((_req, res) => res.end('never'));
    const f = forwarder(app.port, { maxHeaderBytes: 1024 });
    const res = await dataRequest(f, get('/', { 'X-Big': 'a'.repeat(4096) }));
    expect(res.status).toBe(431);
    expect(app.seen).toHaveLength(0);
  });

  it('answers 408 when the request head does not arrive within headersTimeoutMs', async () => {
    app = await startApp((_req, res) => res.end('never'));
    const f = forwarder(app.port, { headersTimeoutMs: 200 });
    const d = await f.connect(fakeContext({ kind: 'stream' }));
    const reader = new ResponseReader(d);
    d.write('GET / HTTP/1.1\r\nHost: a\r\n');
    const res = await reader.next();
    expect(res.status).toBe(408);
    await reader.waitEnd();
  });

  it('refuses CONNECT with 405', async () => {
    app = await startApp((_req, res) => res.end('never'));
    const f = forwarder(app.port);
    const res = await dataRequest(f, 'CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n');
    expect(res.status).toBe(405);
  });

  it('aborts the app request when the session destroys the connection', async () => {
    let aborted!: () => void;
    const gotAbort = new Promise<void>((r) => (aborted = r));
    app = await startApp((req, res) => {
      res.writeHead(200);
      res.write('partial');
      res.on('close', () => aborted());
      void req;
    });
    const f = forwarder(app.port);
    const d = await f.connect(fakeContext({ kind: 'stream' }));
    const reader = new ResponseReader(d);
    d.write(get('/', {}, { close: false }));
    await reader.next({ head: true });
    d.destroy();
    await gotAbort;
    await new Promise((r) => setTimeout(r, 20));
    expect(f.connectionCount).toBe(0);
  });

  it('answers pipelined requests of one Data payload in order, then closes', async () => {
    app = await startApp((req, res) => res.end(req.url));
    const f = forwarder(app.port);
    const d = await f.connect(fakeContext());
    const reader = new ResponseReader(d);
    d.end(get('/1', {}, { close: false }) + get('/2', {}, { close: false }) + get('/3'));
    const bodies = [];
    for (let i = 0; i < 3; i++) bodies.push((await reader.next()).body.toString());
    expect(bodies).toEqual(['/1', '/2', '/3']);
    await reader.waitEnd();
  });

  it('answers HEAD with the app headers and no body', async () => {
    app = await startApp((_req, res) => {
      res.setHeader('Content-Length', '1234');
      res.end();
    });
    const f = forwarder(app.port);
    const d = await f.connect(fakeContext());
    const reader = new ResponseReader(d);
    d.end('HEAD / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n');
    const res = await reader.next({ head: true });
    expect(res.status).toBe(200);
    expect(res.headers['content-length']).toBe('1234');
    const rest = await reader.readToEnd();
    expect(rest.length).toBe(0);
  });

  it('handles Expect: 100-continue (100 from the agent, the app never sees Expect)', async () => {
    app = await startApp((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => res.end(`expect=${String(req.headers.expect)};${Buffer.concat(chunks).toString()}`));
    });
    const f = forwarder(app.port);
    const d = await f.connect(fakeContext({ kind: 'stream' }));
    const reader = new ResponseReader(d);
    d.write('POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 4\r\nConnection: close\r\n\r\n');
    const cont = await reader.next({ head: true });
    expect(cont.status).toBe(100);
    d.write('body');
    const res = await reader.next();
    expect(res.status).toBe(200);
    expect(res.body.toString()).toBe('expect=undefined;body');
  });

  it('keeps a stream usable after the app answers before reading the request body', async () => {
    app = await startApp((req, res) => {
      if (req.url === '/early') {
        res.statusCode = 403;
        res.end('denied');
        req.resume();
        return;
      }
      res.end('second');
    });
    const f = forwarder(app.port);
    const d = await f.connect(fakeContext({ kind: 'stream' }));
    const reader = new ResponseReader(d);
    const big = 'z'.repeat(200_000);
    d.write(`POST /early HTTP/1.1\r\nHost: a\r\nContent-Length: ${big.length}\r\n\r\n${big.slice(0, 1000)}`);
    const first = await reader.next();
    expect(first.status).toBe(403);
    d.write(big.slice(1000));
    d.write(get('/after', {}, { close: false }));
    const second = await reader.next();
    expect(second.body.toString()).toBe('second');
    d.end();
    await reader.waitEnd();
  });

  it('retries a refused connection during app start-up within appStartupGraceMs', async () => {
    const probe = await startApp(() => {});
    const port = probe.port;
    await probe.close();
    const f = forwarder(port, { appStartupGraceMs: 5000 });
    const pending = dataRequest(f, get('/'));
    await new Promise((r) => setTimeout(r, 300));
    app = await startAppOnPort(port);
    const res = await pending;
    expect(res.status).toBe(200);
  });

  it('keeps serving after a flood of hostile inputs (never throws)', async () => {
    app = await startApp((_req, res) => res.end('ok'));
    const f = forwarder(app.port);
    const junk = [
      Buffer.alloc(0),
      Buffer.from([0, 1, 2, 255, 254]),
      Buffer.from('GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nab'),
      Buffer.from('GET /\x00 HTTP/1.1\r\nHost: a\r\n\r\n'),
      Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n'),
      Buffer.from('GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n'),
    ];
    for (const j of junk) {
      const d = await f.connect(fakeContext());
      d.on('error', () => {});
      d.resume();
      d.end(j);
      await new Promise<void>((r) => d.once('close', () => r()).once('end', () => r()));
    }
    expect((await dataRequest(f, get('/'))).status).toBe(200);
  });
});

async function startAppOnPort(port: number): Promise<TestApp> {
  const http = await import('node:http');
  const server = http.createServer((_req, res) => res.end('back again'));
  let connections = 0;
  server.on('connection', () => connections++);
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, '127.0.0.1', resolve);
  });
  return {
    server,
    port,
    get connections() {
      return connections;
    },
    seen: [],
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  } as TestApp;
}


describe('keep-alive streams', () => {
  it('closes an idle keep-alive stream after keepAliveTimeoutMs', async () => {
    app = await startApp((_req, res) => res.end('ok'));
    const f = forwarder(app.port, { keepAliveTimeoutMs: 100 });
    const d = await f.connect(fakeContext({ kind: 'stream' }));
    const reader = new ResponseReader(d);
    d.write(get('/', {}, { close: false }));
    expect((await reader.next()).status).toBe(200);
    // Ending at all proves it: nothing else closes an idle stream before this test's own timeout (15 s), the
    // default keep-alive timeout being 60 s. (Node adds a 1 s buffer to the advertised keep-alive timeout.)
    await reader.waitEnd();
  }, 15_000);
});

describe('hostile input', () => {
  it('survives 300 mutated requests, each answered or closed, and then serves a valid one', async () => {
    app = await startApp((req, res) => {
      req.resume();
      req.on('end', () => res.end('ok'));
    });
    const f = forwarder(app.port, { headersTimeoutMs: 500, upstreamTimeoutMs: 2000, appStartupGraceMs: 0 });
    const base = Buffer.from('POST /p?q=1 HTTP/1.1\r\nHost: a\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\nX-A: b\r\n\r\n5\r\nhello\r\n0\r\n\r\n');
    let seed = 12345;
    const rand = (n: number): number => {
      seed = (seed * 1103515245 + 12345) & 0x7fffffff;
      return seed % n;
    };
    const statuses = new Map<number, number>();
    for (let i = 0; i < 300; i++) {
      const buf = Buffer.from(base);
      for (let m = 0; m < 1 + rand(4); m++) buf[rand(buf.length)] = rand(256);
      const d = await f.connect(fakeContext());
      const reader = new ResponseReader(d);
      d.on('error', () => {});
      // Fragmented writes, as frames may split the bytes anywhere.
      const cut = rand(buf.length);
      d.write(buf.subarray(0, cut));
      d.end(buf.subarray(cut));
      await reader.waitEnd();
      const raw = (await reader.readToEnd()).toString('latin1');
      const status = Number(/^HTTP\/1\.1 (\d{3})/.exec(raw)?.[1] ?? 0);
      statuses.set(status, (statuses.get(status) ?? 0) + 1);
    }
    // Mutations produce a mix of accepted requests and refusals; nothing hangs or throws.
    expect([...statuses.keys()].every((s) => s === 0 || (s >= 200 && s < 600))).toBe(true);
    expect(statuses.get(400) ?? 0).toBeGreaterThan(0);
    expect((await dataRequest(f, get('/'))).status).toBe(200);
  });

  it('parses a request delivered one byte at a time', async () => {
    app = await startApp((req, res) => res.end(req.url));
    const f = forwarder(app.port);
    const d = await f.connect(fakeContext());
    const reader = new ResponseReader(d);
    for (const b of Buffer.from(get('/bytewise'))) d.write(Buffer.of(b));
    d.end();
    const res = await reader.next();
    expect(res.body.toString()).toBe('/bytewise');
  });
});
