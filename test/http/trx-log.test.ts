import { afterEach, describe, expect, it } from 'vitest';
import { PassThrough } from 'node:stream';
import { createHttpForwarder } from '../../src/http/forwarder.ts';
import type { HttpForwarder } from '../../src/http/forwarder.ts';
import { createMemoryLogSink, createStreamLogSink } from '../../src/http/log-sink.ts';
import type { MemoryLogSink } from '../../src/http/log-sink.ts';
import { createHeaderMasker, maskedPath } from '../../src/http/stages/trx-log.ts';
import { dataRequest, fakeContext, get, silentLogger, startApp } from './helpers.ts';
import type { TestApp } from './helpers.ts';

let app: TestApp | undefined;
let fwd: HttpForwarder | undefined;

afterEach(async () => {
  await fwd?.close();
  await app?.close();
  fwd = undefined;
  app = undefined;
});

async function waitRecords(sink: MemoryLogSink, n: number): Promise<void> {
  const end = Date.now() + 2000;
  while (sink.records.length < n) {
    if (Date.now() > end) throw new Error(`expected ${n} records, found ${sink.records.length}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

describe('transaction log', () => {
  it('writes one record per request after the response, with the fields of ENCRYPTION.md §4', async () => {
    app = await startApp((req, res) => {
      req.resume();
      req.on('end', () => {
        res.setHeader('Set-Cookie', 'session=secret');
        res.setHeader('X-Trace-Id', 'trace-1');
        res.statusCode = 201;
        res.end('created!');
      });
    });
    const sink = createMemoryLogSink();
    fwd = createHttpForwarder({ appPort: app.port, logger: silentLogger, logSink: sink, trustedHeaders: ['x-trace-*', 'Authorization'] });
    const body = '{"card":"4242"}';
    const res = await dataRequest(
      fwd,
      `POST /pay?card=4242&amount=10 HTTP/1.1\r\nHost: a\r\nUser-Agent: sdk/1.0\r\nAuthorization: Bearer sk_live_secret\r\nCookie: sid=secret\r\nApi-Key: k-secret\r\nX-Custom: custom-secret\r\nX-Trace-Parent: tp-1\r\nContent-Type: application/json\r\nContent-Length: ${body.length}\r\nConnection: close\r\n\r\n${body}`,
      fakeContext({ sessionId: 'sess-1', client: { address: '198.51.100.7', port: 1, family: 'IPv4' } }),
    );
    expect(res.status).toBe(201);
    await waitRecords(sink, 1);
    expect(sink.records).toHaveLength(1);
    const r = sink.records[0]!;
    expect(r).toMatchObject({
      kind: 'trx',
      txid: res.headers['x-request-id'],
      session_id: 'sess-1',
      type: 'HTTP',
      method: 'POST',
      path: '/pay?card=***&amount=***',
      status: 201,
      status_group: '2xx',
      bytes_in: body.length,
      bytes_out: 'created!'.length,
      remote_ip: '198.51.100.7',
      user_agent: 'sdk/1.0',
      decrypted_fields: 0,
    });
    expect(typeof r.elapsed_ms).toBe('number');
    expect(Date.parse(r.ts as string)).not.toBeNaN();
    const reqH = r.request_headers as Record<string, string>;
    expect(reqH['authorization']).toBe('***'); // trusted_headers cannot unmask credentials
    expect(reqH['cookie']).toBe('***');
    expect(reqH['api-key']).toBe('***');
    expect(reqH['x-custom']).toBe('***');
    expect(reqH['x-trace-parent']).toBe('tp-1');
    expect(reqH['content-type']).toBe('application/json');
    const resH = r.response_headers as Record<string, string>;
    expect(resH['set-cookie']).toBe('***');
    expect(resH['x-trace-id']).toBe('trace-1');
    expect(resH['x-request-id']).toBe(res.headers['x-request-id']);
    // No secret ever reaches the log line.
    const line = JSON.stringify(r);
    for (const secret of ['sk_live_secret', 'sid=secret', 'k-secret', 'custom-secret', '4242', 'session=secret']) expect(line).not.toContain(secret);
  });

  it('logs errors too: a 502 when the app is down, with its error code', async () => {
    app = await startApp((_req, res) => res.end());
    const port = app.port;
    await app.close();
    app = undefined;
    const sink = createMemoryLogSink();
    fwd = createHttpForwarder({ appPort: port, logger: silentLogger, logSink: sink, appStartupGraceMs: 0 });
    const res = await dataRequest(fwd, get('/x'));
    expect(res.status).toBe(502);
    await waitRecords(sink, 1);
    expect(sink.records[0]).toMatchObject({ status: 502, status_group: '5xx', error: 'HTTP_APP_UNREACHABLE', path: '/x', txid: res.headers['x-request-id'] });
  });

  it('logs a malformed request as a 400 record', async () => {
    app = await startApp((_req, res) => res.end());
    const sink = createMemoryLogSink();
    fwd = createHttpForwarder({ appPort: app.port, logger: silentLogger, logSink: sink });
    await dataRequest(fwd, 'NOT HTTP\r\n\r\n');
    await waitRecords(sink, 1);
    expect(sink.records[0]).toMatchObject({ status: 400, error: 'HPE_INVALID_METHOD' });
  });

  it('writes nothing when trx_logging is off', async () => {
    app = await startApp((_req, res) => res.end());
    const sink = createMemoryLogSink();
    fwd = createHttpForwarder({ appPort: app.port, logger: silentLogger, logSink: sink, trxLogging: false });
    await dataRequest(fwd, get('/'));
    await new Promise((r) => setTimeout(r, 20));
    expect(sink.records).toHaveLength(0);
  });

  it('sends records as JSON lines over a stream sink and drops (counting) while the stream is backed up', async () => {
    const stream = new PassThrough({ highWaterMark: 16 });
    const sink = createStreamLogSink(stream, { maxQueuedBytes: 200 });
    for (let i = 0; i < 50; i++) sink.write({ kind: 'trx', i, pad: 'x'.repeat(50) });
    expect(sink.dropped).toBeGreaterThan(0);
    const chunks: Buffer[] = [];
    stream.on('data', (c: Buffer) => chunks.push(c));
    await sink.close();
    const lines = Buffer.concat(chunks).toString().trim().split('\n');
    expect(lines.length + sink.dropped).toBe(50);
    expect(JSON.parse(lines[0]!)).toMatchObject({ kind: 'trx', i: 0 });
  });
});

describe('masking helpers', () => {
  it('masks query values but keeps names and the path; a part without = is masked whole (it may be a token)', () => {
    expect(maskedPath('/a/b?x=1&y=&z#frag')).toBe('/a/b?x=***&y=***&***');
    expect(maskedPath('/a?4f9c2e7ad1b0secrettoken')).toBe('/a?***');
    expect(maskedPath('/a?&x=1&')).toBe('/a?&x=***&');
    expect(maskedPath('/plain')).toBe('/plain');
  });

  it('keeps duplicate headers as arrays and masks unknown headers', () => {
    const mask = createHeaderMasker(['x-ok']);
    expect(mask(['X-Ok', '1', 'x-ok', '2', 'X-Secret', 's', 'Cookie', 'c'])).toEqual({ 'x-ok': ['1', '2'], 'x-secret': '***', cookie: '***' });
  });
});
