// The header-field limit on the TLS ingress's http.Server path (a head of more than 64 fields leaves the keep-alive
// fast path for the server). Node's parser kept 1,000 fields in `req.headers` and up to 1,023 in `rawHeaders`,
// silently dropping the rest: fields the API-key check, Content-Length/Transfer-Encoding and Expect never saw still
// reached the app. The limit is now explicit (MAX_REQUEST_HEADERS fields, a request over it 431, nothing forwarded),
// so whatever the app gets, every stage saw. A head of exactly the limit passes, every field of it forwarded.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MAX_REQUEST_HEADERS } from '../../src/http/request-head-checks.ts';
import { startApp, type TestApp } from '../http/helpers.ts';
import { startIngressStack, tlsExchange, type IngressStack } from './helpers.ts';

let app: TestApp;
let s: IngressStack;

beforeAll(async () => {
  app = await startApp((_req, res) => res.end('ok'));
  // A head of 2,000 short fields fits the head cap: the count is what is tested, not the size.
  s = await startIngressStack({ forwarder: { appPort: app.port, maxHeaderBytes: 64 * 1024 } });
}, 30_000);

afterAll(async () => {
  await s?.stop();
  await app?.close();
});

/** `n` header fields in all: Host, `first` (default Connection: close), then fillers f0, f1, ... */
function head(requestLine: string, n: number, first = ['Connection: close']): string {
  const fields = ['Host: localhost', ...first];
  for (let i = 0; fields.length < n; i++) fields.push(`f${i}: v`);
  return `${requestLine}\r\n${fields.join('\r\n')}\r\n\r\n`;
}

const seen = (path: string): number => app.seen.filter((r) => r.url === path).length;

describe('TLS ingress: the header-field limit on the http.Server path', () => {
  it('forwards a request of exactly the limit, every field of it', { timeout: 15_000 }, async () => {
    const answer = await tlsExchange(s.port, head('GET /h-limit HTTP/1.1', MAX_REQUEST_HEADERS));
    expect(answer).toMatch(/^HTTP\/1\.1 200 /);
    const req = app.seen.find((r) => r.url === '/h-limit');
    expect(req?.headers[`f${MAX_REQUEST_HEADERS - 3}`]).toBe('v'); // the last filler
  });

  it.each([
    ['one field over the limit', head('GET /h-over HTTP/1.1', MAX_REQUEST_HEADERS + 1), '/h-over'],
    ['twice the limit (Node dropped every field past the 1,023rd)', head('GET /h-twice HTTP/1.1', 2 * MAX_REQUEST_HEADERS), '/h-twice'],
    ['an Upgrade one field over', head('GET /h-upgrade HTTP/1.1', MAX_REQUEST_HEADERS + 1, ['Upgrade: websocket', 'Connection: Upgrade']), '/h-upgrade'],
  ])('%s: 431 HTTP_TOO_MANY_HEADERS, nothing forwarded, recorded', { timeout: 15_000 }, async (_what, bytes, path) => {
    const answer = await tlsExchange(s.port, bytes);
    expect(answer).toMatch(/^HTTP\/1\.1 431 /);
    expect(answer).toContain('HTTP_TOO_MANY_HEADERS');
    await expect.poll(() => s.sink.records.find((r) => r.path === path)?.error).toBe('HTTP_TOO_MANY_HEADERS');
    expect(seen(path)).toBe(0);
  });
});
