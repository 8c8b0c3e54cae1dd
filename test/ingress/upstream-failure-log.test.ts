// Any client can make a forwarded request fail on its way to the app: a chunked body whose framing breaks off fails
// the request undici is sending (with api_key_auth off: anyone, once per request). Each failure wrote its own
// "upstream request failed" warn line, so a client sending them in a loop filled the operational log. Failures are
// now counted into one line per interval by code and cause (RateLimitedLog, as every other per-request refusal);
// the forwarder's close writes the last interval's counts, so none is lost. The request's transaction record still
// has its request id and error code.
import net, { type AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createHttpForwarder } from '../../src/http/forwarder.ts';
import { UPSTREAM_FAILURES_MESSAGE } from '../../src/http/stages/forward.ts';
import { memoryLog, type MemoryLog } from '../faults/stack.ts';
import { dataRequest, get, startApp, type TestApp } from '../http/helpers.ts';
import { startIngressStack, tlsExchange, type IngressStack } from './helpers.ts';

let app: TestApp;
let s: IngressStack;
let log: MemoryLog;

beforeAll(async () => {
  log = memoryLog();
  // The app reads the body before it answers: the request is still being sent when its framing breaks.
  app = await startApp((req, res) => {
    req.on('data', () => {});
    req.on('end', () => res.end('ok'));
    req.on('error', () => {});
  });
  s = await startIngressStack({ forwarder: { appPort: app.port, logger: log.logger } });
}, 30_000);

afterAll(async () => {
  await s?.stop();
  await app?.close();
});

/** Every line, old ("upstream request failed", one per failure) or new (counts). */
const failureLines = (l: MemoryLog): Record<string, unknown>[] => l.records().filter((r) => /^upstream requests? failed$/.test(String(r.msg)));

const BROKEN = 'POST /broken HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nzz\r\n';

describe('operator log: app requests that failed', () => {
  it('a broken chunked body per request on the TLS ingress: one counted line, written by close()', { timeout: 20_000 }, async () => {
    const N = 12;
    for (let i = 0; i < N; i++) expect(await tlsExchange(s.port, BROKEN)).toMatch(/^HTTP\/1\.1 400 /);
    await expect.poll(() => s.sink.records.filter((r) => r.path === '/broken').length).toBe(N);
    expect(failureLines(log)).toEqual([]); // within the interval: counted, not yet written
    await s.fwd.close();
    const lines = failureLines(log);
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatchObject({ level: 40, msg: UPSTREAM_FAILURES_MESSAGE });
    // A request whose 400 went out before its app request started was never sent: at most one failure each.
    expect(lines[0]!.total).toBeGreaterThan(0);
    expect(lines[0]!.total).toBeLessThanOrEqual(N);
    for (const reason of Object.keys(lines[0]!.counts as object)) expect(reason).toMatch(/^CLIENT_BODY_INCOMPLETE [A-Z_]+$/); // the client's fault, with its cause
  });

  it('an app that refuses every connection: the count is every request', { timeout: 20_000 }, async () => {
    const own = memoryLog();
    const closed = net.createServer();
    await new Promise<void>((r) => closed.listen(0, '127.0.0.1', r));
    const port = (closed.address() as AddressInfo).port;
    await new Promise<void>((r) => closed.close(() => r()));
    const fwd = createHttpForwarder({ appPort: port, appStartupGraceMs: 0, logger: own.logger, trxLogging: false });
    try {
      const N = 7;
      for (let i = 0; i < N; i++) expect((await dataRequest(fwd, get(`/down-${i}`))).status).toBe(502);
      expect(failureLines(own)).toEqual([]);
      await fwd.close();
      expect(failureLines(own)).toEqual([expect.objectContaining({ total: N, counts: { 'HTTP_APP_UNREACHABLE ECONNREFUSED': N } })]);
    } finally {
      await fwd.close();
    }
  });
});
