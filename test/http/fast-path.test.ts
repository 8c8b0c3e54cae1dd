import { afterEach, describe, expect, it } from 'vitest';
import { parseSimpleRequest, MAX_FAST_HEADERS } from '../../src/http/simple-request.ts';
import { createHttpForwarder } from '../../src/http/forwarder.ts';
import type { HttpForwarder, HttpModeOptions } from '../../src/http/forwarder.ts';
import { createMemoryLogSink } from '../../src/http/log-sink.ts';
import type { MemoryLogSink } from '../../src/http/log-sink.ts';
import { ResponseReader, dataRequest, fakeContext, get, silentLogger, startApp } from './helpers.ts';
import type { TestApp } from './helpers.ts';

let app: TestApp | undefined;
let fwd: HttpForwarder | undefined;
let sink: MemoryLogSink;

afterEach(async () => {
  await fwd?.close();
  await app?.close();
  fwd = undefined;
  app = undefined;
});

function forwarder(port: number, over: Partial<HttpModeOptions> = {}): HttpForwarder {
  sink = createMemoryLogSink();
  fwd = createHttpForwarder({ appPort: port, logger: silentLogger, logSink: sink, ...over });
  return fwd;
}

const parse = (raw: string): ReturnType<typeof parseSimpleRequest> => parseSimpleRequest(Buffer.from(raw, 'latin1'), 16 * 1024);

async function records(n: number): Promise<Record<string, unknown>[]> {
  const end = Date.now() + 2000;
  while (sink.records.length < n && Date.now() < end) await new Promise((r) => setTimeout(r, 5));
  return sink.records;
}

/** Heads the fast path must leave to the http.Server (smuggling shapes, malformed or unusual requests). */
const HOSTILE: [string, string][] = [
  ['Content-Length with Transfer-Encoding', 'POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n'],
  ['Transfer-Encoding with Content-Length', 'POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n'],
  ['two Content-Length headers that differ', 'POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab'],
  ['two identical Content-Length headers', 'POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nab'],
  ['a Content-Length list', 'POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 2, 2\r\n\r\nab'],
  ['a signed Content-Length', 'POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +2\r\n\r\nab'],
  ['a Content-Length with leading zeros', 'POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 02\r\n\r\nab'],
  ['a chunked body with a bad chunk size', 'POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nab\r\n0\r\n\r\n'],
  ['an obs-fold continuation line', 'GET / HTTP/1.1\r\nHost: a\r\nX-A: 1\r\n  folded\r\n\r\n'],
  ['a bare LF line ending', 'GET / HTTP/1.1\nHost: a\r\n\r\n'],
  ['a bare LF inside a header line', 'GET / HTTP/1.1\r\nHost: a\r\nX-A: 1\nX-B: 2\r\n\r\n'],
  ['a bare CR inside a header value', 'GET / HTTP/1.1\r\nHost: a\r\nX-A: 1\rX-B: 2\r\n\r\n'],
  ['a NUL in a header value', 'GET / HTTP/1.1\r\nHost: a\r\nX-A: a\0b\r\n\r\n'],
  ['obs-text in a header value', 'GET / HTTP/1.1\r\nHost: a\r\nX-A: caf\xe9\r\n\r\n'],
  ['whitespace before the colon', 'GET / HTTP/1.1\r\nHost: a\r\nX-A : 1\r\n\r\n'],
  ['an empty header name', 'GET / HTTP/1.1\r\nHost: a\r\n: 1\r\n\r\n'],
  ['a header line without a colon', 'GET / HTTP/1.1\r\nHost: a\r\nX-A\r\n\r\n'],
  ['no Host header', 'GET / HTTP/1.1\r\nX-A: 1\r\n\r\n'],
  ['two Host headers', 'GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n'],
  ['HTTP/1.0', 'GET / HTTP/1.0\r\nHost: a\r\n\r\n'],
  ['an unknown HTTP version', 'GET / HTTP/1.2\r\nHost: a\r\n\r\n'],
  ['an absolute-form target', 'GET http://a/ HTTP/1.1\r\nHost: a\r\n\r\n'],
  ['a space in the target', 'GET /a b HTTP/1.1\r\nHost: a\r\n\r\n'],
  ['a lower-case method', 'get / HTTP/1.1\r\nHost: a\r\n\r\n'],
  ['an unusual method', 'PROPFIND / HTTP/1.1\r\nHost: a\r\n\r\n'],
  ['CONNECT', 'CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n'],
  ['two spaces after the method', 'GET  / HTTP/1.1\r\nHost: a\r\n\r\n'],
  ['an Upgrade request', 'GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n'],
  ['an expectation other than 100-continue (417)', 'POST / HTTP/1.1\r\nHost: a\r\nExpect: x-other\r\nContent-Length: 1\r\n\r\na'],
  ['a pipelined second request', 'GET /a HTTP/1.1\r\nHost: a\r\n\r\nGET /b HTTP/1.1\r\nHost: a\r\n\r\n'],
  ['a smuggled request after a Content-Length: 0 body', 'POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\nGET /admin HTTP/1.1\r\nHost: a\r\n\r\n'],
  ['fewer body bytes than declared', 'POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nabc'],
  ['no end of head', 'GET / HTTP/1.1\r\nHost: a\r\n'],
  ['the attestation endpoint', 'GET /.well-known/attestation HTTP/1.1\r\nHost: a\r\n\r\n'],
  ['the health endpoint', 'GET /.well-known/health HTTP/1.1\r\nHost: a\r\n\r\n'],
];

describe('fast path request parsing (parseSimpleRequest)', () => {
  it('parses a plain GET: method, target, raw headers with values trimmed, no body', () => {
    const r = parse('GET /x?y=1 HTTP/1.1\r\nHost: app.test\r\nX-Pad: \t spaced \t\r\nX-Empty:\r\n\r\n');
    expect(r).toEqual({ method: 'GET', url: '/x?y=1', rawHeaders: ['Host', 'app.test', 'X-Pad', 'spaced', 'X-Empty', ''], contentLength: null, body: null });
  });

  it('parses a POST with exactly Content-Length body bytes', () => {
    const r = parse('POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello');
    expect(r?.contentLength).toBe(5);
    expect(r?.body?.toString()).toBe('hello');
  });

  it('takes Expect: 100-continue (the body is all there), but not two Expect fields', () => {
    expect(parse('POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-Continue\r\nContent-Length: 1\r\n\r\na')?.body?.toString()).toBe('a');
    expect(parse('POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\na')).toBeNull();
  });

  it.each(HOSTILE)('leaves %s to the http.Server', (_name, raw) => {
    expect(parse(raw)).toBeNull();
  });

  it('reads a header line of 64 KiB of blanks in linear time (before a bare LF, a control byte, or nothing)', { timeout: 3000 }, () => {
    // Two adjacent optional-whitespace runs around an empty value used to backtrack quadratically: ~0.4 s of
    // CPU for 16 KiB of blanks, on bytes any client can send.
    const blanks = ' '.repeat(64 * 1024);
    for (const tail of ['\n', '\x01']) expect(parseSimpleRequest(Buffer.from(`GET / HTTP/1.1\r\nHost: a\r\nX:${blanks}${tail}\r\n\r\n`, 'latin1'), 1 << 20)).toBeNull();
    expect(parseSimpleRequest(Buffer.from(`GET / HTTP/1.1\r\nHost: a\r\nX:${blanks}\r\n\r\n`, 'latin1'), 1 << 20)?.rawHeaders).toEqual(['Host', 'a', 'X', '']);
  });

  it('leaves a head larger than the server cap, or with too many header lines, to the http.Server', () => {
    const big = `GET / HTTP/1.1\r\nHost: a\r\nX-Big: ${'a'.repeat(2000)}\r\n\r\n`;
    expect(parseSimpleRequest(Buffer.from(big), 1024)).toBeNull();
    expect(parseSimpleRequest(Buffer.from(big), 4096)).not.toBeNull();
    let many = 'GET / HTTP/1.1\r\nHost: a\r\n';
    for (let i = 0; i < MAX_FAST_HEADERS; i++) many += `X-${i}: 1\r\n`;
    expect(parse(many + '\r\n')).toBeNull();
  });
});

describe('fast path through the forwarder', () => {
  it.each(HOSTILE.filter(([name]) => !name.includes('endpoint')))('falls back to the http.Server for %s and answers exactly as it does', async (_name, raw) => {
    app = await startApp((req, res) => {
      req.resume();
      req.on('end', () => res.end('ok'));
    });
    const f = forwarder(app.port);
    // The reference: the same bytes on a stream connection, which always takes the http.Server.
    const ref = await f.connect(fakeContext({ kind: 'stream' }));
    const refReader = new ResponseReader(ref);
    ref.end(Buffer.from(raw, 'latin1'));
    const expected = await refReader.readToEnd();
    const seenByApp = app.seen.map((s) => `${s.method} ${s.url}`);
    app.seen.length = 0;

    const d = await f.connect(fakeContext({ kind: 'data' }));
    const reader = new ResponseReader(d);
    d.end(Buffer.from(raw, 'latin1'));
    const got = await reader.readToEnd();

    expect(f.fastPathRequests).toBe(0);
    expect(app.seen.map((s) => `${s.method} ${s.url}`)).toEqual(seenByApp);
    const statusLines = (b: Buffer): string[] => b.toString('latin1').match(/HTTP\/1\.1 \d{3}/g) ?? [];
    expect(statusLines(got)).toEqual(statusLines(expected));
    expect(reader.isEnded).toBe(true);
  });

  it.each([
    ['padded values, duplicates and a Connection-named header', 'GET /q?a=1 HTTP/1.1\r\nHost: a\r\nX-Pad: \t spaced \t\r\nX-Dup: 1\r\nx-dup: 2\r\nConnection: x-hop, keep-alive\r\nX-Hop: gone\r\nKeep-Alive: 5\r\nTE: trailers\r\nX-Empty:\r\n\r\n'],
    ['a Content-Length body and client forwarding headers', 'PUT /p HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: 6.6.6.6\r\nForwarded: for=6.6.6.6\r\nX-Real-IP: 6.6.6.6\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello'],
    ['Content-Length: 0 on a POST', 'POST /empty HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n'],
  ])('sends the app the same request as the http.Server path: %s', async (_name, raw) => {
    const bodies: string[] = [];
    app = await startApp((req, res) => {
      let body = '';
      req.setEncoding('latin1');
      req.on('data', (c: string) => (body += c));
      req.on('end', () => {
        bodies.push(body);
        res.end('ok');
      });
    });
    const f = forwarder(app.port);
    const client = { address: '198.51.100.4', port: 5, family: 'IPv4' as const };
    const ref = await f.connect(fakeContext({ kind: 'stream', client }));
    const refReader = new ResponseReader(ref);
    ref.end(raw);
    const refRes = await refReader.next();
    await refReader.waitEnd();
    const fast = await dataRequest(f, raw, fakeContext({ client }));
    expect(f.fastPathRequests).toBe(1);
    expect(fast.status).toBe(refRes.status);
    expect(fast.body.toString()).toBe(refRes.body.toString());
    const [viaServer, viaFast] = app.seen;
    const withoutId = (h: string[]): string[] => h.filter((_v, i) => (i % 2 === 0 ? h[i]!.toLowerCase() !== 'x-request-id' : h[i - 1]!.toLowerCase() !== 'x-request-id'));
    expect(viaFast!.method).toBe(viaServer!.method);
    expect(viaFast!.url).toBe(viaServer!.url);
    expect(withoutId(viaFast!.rawHeaders)).toEqual(withoutId(viaServer!.rawHeaders));
    expect(bodies[1]).toBe(bodies[0]);
    // The client sees the same response headers, but for the connection handling: one request per Data.
    const comparable = (h: Record<string, string>): Record<string, string> => {
      const { date: _d, connection: _c, 'keep-alive': _k, 'x-request-id': _id, ...rest } = h;
      return rest;
    };
    expect(comparable(fast.headers)).toEqual(comparable(refRes.headers));
    expect(fast.headers['connection']).toBe('close');
  });

  it('refuses smuggling shapes with 400 and a closed connection, and the app never sees them', async () => {
    app = await startApp((_req, res) => res.end('ok'));
    const f = forwarder(app.port);
    for (const raw of [
      'POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n',
      'POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab',
      'POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nab\r\n0\r\n\r\n',
      'GET / HTTP/1.1\r\nHost: a\r\nX-A: 1\r\n  folded\r\n\r\n',
      'GET / HTTP/1.1\r\nHost: a\r\nX-A: 1\rX-B: 2\r\n\r\n',
      'GET / HTTP/1.1\r\nHost: a\r\nX-A: a\0b\r\n\r\n',
    ]) {
      const res = await dataRequest(f, raw);
      expect(res.status, JSON.stringify(raw)).toBe(400);
      expect(res.eof).toBe(true);
    }
    expect(app.seen).toHaveLength(0);
    expect(f.fastPathRequests).toBe(0);
  });

  it('answers a simple GET on the fast path: the app response relayed with Connection: close and a Date, the request id both ways', async () => {
    app = await startApp((req, res) => {
      res.setHeader('X-App', 'yes');
      res.end(`hello ${req.url}`);
    });
    const f = forwarder(app.port);
    const res = await dataRequest(f, get('/x?y=1', { 'X-Request-Id': 'forged', 'X-Forwarded-For': '6.6.6.6' }, { close: false }), fakeContext({ client: { address: '203.0.113.7', port: 1234, family: 'IPv4' } }));
    expect(f.fastPathRequests).toBe(1);
    expect(res.status).toBe(200);
    expect(res.body.toString()).toBe('hello /x?y=1');
    expect(res.eof).toBe(true);
    expect(res.headers['connection']).toBe('close');
    expect(res.headers['x-app']).toBe('yes');
    expect(res.headers['date']).toBeDefined();
    const id = res.headers['x-request-id'];
    expect(id).toMatch(/^[0-9a-f-]{36}$/);
    expect(app.seen[0]!.headers['x-request-id']).toBe(id);
    expect(app.seen[0]!.headers['x-forwarded-for']).toBe('203.0.113.7');
    const [r] = await records(1);
    expect(r).toMatchObject({ txid: id, status: 200, method: 'GET', path: '/x?y=***', remote_ip: '203.0.113.7', bytes_out: 'hello /x?y=1'.length });
  });

  it('relays a response without a length chunked, and sends no body for HEAD and 204', async () => {
    app = await startApp((req, res) => {
      if (req.url === '/none') {
        res.writeHead(204);
        res.end();
        return;
      }
      res.write('part one, ');
      setTimeout(() => res.end('part two'), 10);
    });
    const f = forwarder(app.port);
    const chunked = await dataRequest(f, get('/chunked'));
    expect(chunked.headers['transfer-encoding']).toBe('chunked');
    expect(chunked.body.toString()).toBe('part one, part two');

    const d = await f.connect(fakeContext());
    const reader = new ResponseReader(d);
    d.end('HEAD /h HTTP/1.1\r\nHost: a\r\n\r\n');
    const head = await reader.next({ head: true });
    expect(head.status).toBe(200);
    expect((await reader.readToEnd()).length).toBe(0);

    const none = await dataRequest(f, get('/none'));
    expect(none.status).toBe(204);
    expect(none.body.length).toBe(0);
    expect(none.headers['transfer-encoding']).toBeUndefined();
    expect(f.fastPathRequests).toBe(3);
  });

  it('forwards a Content-Length body on the fast path and logs its size, never its bytes', async () => {
    let received = '';
    app = await startApp((req, res) => {
      req.setEncoding('utf8');
      req.on('data', (c: string) => (received += c));
      req.on('end', () => res.end(`got ${req.headers['content-length']}`));
    });
    const f = forwarder(app.port);
    const body = '{"card":"4111111111111111"}';
    const res = await dataRequest(f, `POST /pay HTTP/1.1\r\nHost: a\r\nContent-Type: application/json\r\nContent-Length: ${body.length}\r\nAuthorization: Bearer s3cret\r\n\r\n${body}`);
    expect(f.fastPathRequests).toBe(1);
    expect(res.body.toString()).toBe(`got ${body.length}`);
    expect(received).toBe(body);
    const [r] = await records(1);
    expect(r).toMatchObject({ bytes_in: body.length, status: 200 });
    const line = JSON.stringify(r);
    expect(line).not.toContain('4111');
    expect(line).not.toContain('s3cret');
  });

  it('answers 502 JSON on the fast path when the app is down, and 413 for a declared body over the limit', async () => {
    app = await startApp((_req, res) => res.end('ok'));
    const port = app.port;
    await app.close();
    app = undefined;
    const f = forwarder(port, { appStartupGraceMs: 0, maxRequestBodyBytes: 4 });
    const down = await dataRequest(f, get('/'));
    expect(down.status).toBe(502);
    expect(JSON.parse(down.body.toString())).toMatchObject({ error: 'HTTP_APP_UNREACHABLE' });
    const big = await dataRequest(f, 'POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello');
    expect(big.status).toBe(413);
    expect(big.eof).toBe(true);
    expect(f.fastPathRequests).toBe(2);
  });

  it('aborts the app request when the session drops a fast-path connection mid-flight, and the next request works', async () => {
    let aborted = false;
    app = await startApp((req, res) => {
      if (req.url === '/slow') {
        res.on('close', () => (aborted = !res.writableFinished));
        return;
      }
      res.end('ok');
    });
    const f = forwarder(app.port);
    const d = await f.connect(fakeContext());
    d.end(get('/slow'));
    const end = Date.now() + 2000;
    while (app.seen.length === 0 && Date.now() < end) await new Promise((r) => setTimeout(r, 5));
    d.destroy();
    while (!aborted && Date.now() < end) await new Promise((r) => setTimeout(r, 5));
    expect(aborted).toBe(true);
    expect(f.connectionCount).toBe(0);
    expect((await dataRequest(f, get('/'))).status).toBe(200);
    const [r] = await records(1);
    expect(r).toMatchObject({ path: '/slow', error: 'CLIENT_GONE' });
  });

  it('serves a data-kind connection that is not ended right away through the http.Server (keep-alive requests)', async () => {
    app = await startApp((req, res) => res.end(req.url));
    const f = forwarder(app.port);
    const d = await f.connect(fakeContext());
    const reader = new ResponseReader(d);
    d.write(get('/one', {}, { close: false }));
    expect((await reader.next()).body.toString()).toBe('/one');
    d.write(get('/two'));
    expect((await reader.next()).body.toString()).toBe('/two');
    await reader.waitEnd();
    expect(f.fastPathRequests).toBe(0);
  });
});
