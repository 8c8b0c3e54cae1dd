// A request with two Host headers (or none, in HTTP/1.1) is refused 400 on the http.Server path before the
// pipeline's stages run — and still gets its request id and transaction record (before: neither), so a refusal
// is never silent in the log.
import { afterEach, describe, expect, it } from 'vitest';
import { createHttpForwarder } from '../../src/http/forwarder.ts';
import type { HttpForwarder } from '../../src/http/forwarder.ts';
import { createMemoryLogSink } from '../../src/http/log-sink.ts';
import { dataRequest, fakeContext, silentLogger, startApp } from './helpers.ts';
import type { TestApp } from './helpers.ts';

let app: TestApp | undefined;
let fwd: HttpForwarder | undefined;
afterEach(async () => {
  await fwd?.close();
  await app?.close();
  fwd = undefined;
  app = undefined;
});

describe('the Host header count', () => {
  it('answers 400 to two Host headers or none, with a request id and a transaction record, forwarding nothing', async () => {
    app = await startApp((_req, res) => res.end('ok'));
    const sink = createMemoryLogSink();
    fwd = createHttpForwarder({ appPort: app.port, logger: silentLogger, logSink: sink });
    for (const head of ['GET /two?k=secret HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n', 'GET /none HTTP/1.1\r\n\r\n']) {
      const res = await dataRequest(fwd, head, fakeContext({ kind: 'stream' }));
      expect(res.status).toBe(400);
      const body = JSON.parse(res.body.toString()) as { error: string; request_id: string };
      expect(body.error).toBe('HTTP_BAD_REQUEST');
      expect(body.request_id).toMatch(/^[0-9a-f-]{36}$/);
    }
    while (sink.records.length < 2) await new Promise((r) => setTimeout(r, 10));
    expect(sink.records.map((r) => [r.path, r.status, r.error])).toEqual([
      ['/two?k=***', 400, 'HTTP_BAD_REQUEST'],
      ['/none', 400, 'HTTP_BAD_REQUEST'],
    ]);
    expect(app.seen).toEqual([]);
  });
});
