// `Expect: 100-continue` on the TLS ingress for a request the stages refuse whatever its body: the keep-alive fast
// path hands it to the http.Server, whose 'checkContinue' answered 100 Continue first (unless the API key was
// missing, 33403b8) — inviting a body that the 400/413/431/501 then left unread. Now no 100 for a bad target, a
// transfer coding other than chunked, two Host headers, too many header fields or a declared length over the body
// limit; a request that passes still gets its 100. Raw bytes on one TLS connection each.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MAX_REQUEST_HEADERS } from '../../src/http/request-head-checks.ts';
import { startIngressStack, tlsContinueExchange, type IngressStack } from './helpers.ts';

let s: IngressStack;

beforeAll(async () => {
  s = await startIngressStack({ forwarder: { maxRequestBodyBytes: 1000 } });
}, 30_000);

afterAll(async () => {
  await s?.stop();
});

const expect100 = 'Expect: 100-continue\r\n';
const fillers = (n: number): string => Array.from({ length: n }, (_, i) => `x-f${i}: v\r\n`).join('');

describe('TLS ingress: no 100 Continue before a refusal', () => {
  it.each([
    ['a target not in origin-form', `POST http://user@localhost/r-1 HTTP/1.1\r\nHost: localhost\r\nContent-Length: 5\r\n${expect100}\r\n`, 400, 'HTTP_BAD_REQUEST'],
    ['Transfer-Encoding: gzip, chunked', `POST /r-2 HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: gzip, chunked\r\n${expect100}\r\n`, 501, 'HTTP_UNSUPPORTED_TRANSFER_CODING'],
    ['two Host headers', `POST /r-3 HTTP/1.1\r\nHost: localhost\r\nHost: other\r\nContent-Length: 5\r\n${expect100}\r\n`, 400, 'HTTP_BAD_REQUEST'],
    ['a declared length over the body limit', `POST /r-4 HTTP/1.1\r\nHost: localhost\r\nContent-Length: 5000\r\n${expect100}\r\n`, 413, 'HTTP_BODY_TOO_LARGE'],
    ['more header fields than the limit', `POST /r-5 HTTP/1.1\r\nHost: localhost\r\nContent-Length: 5\r\n${expect100}${fillers(MAX_REQUEST_HEADERS)}\r\n`, 431, 'HTTP_TOO_MANY_HEADERS'],
  ])('%s: answered at once, no 100 Continue', { timeout: 15_000 }, async (_what, head, status, code) => {
    const answer = await tlsContinueExchange(s.port, head, 'hello');
    expect(answer).not.toMatch(/HTTP\/1\.1 100/);
    expect(answer).toMatch(new RegExp(`^HTTP/1\\.1 ${status} `));
    expect(answer).toContain(code);
  });

  it('invites the body of a request that passes (100 Continue), then answers it', { timeout: 15_000 }, async () => {
    const answer = await tlsContinueExchange(s.port, `POST /r-ok HTTP/1.1\r\nHost: localhost\r\nContent-Length: 5\r\nConnection: close\r\n${expect100}\r\n`, 'hello');
    expect(answer).toMatch(/^HTTP\/1\.1 100 Continue\r\n\r\nHTTP\/1\.1 200 /);
    expect(answer).toContain('posted 5');
    await expect.poll(() => s.app.seen.filter((r) => r.path.startsWith('/r')).map((r) => r.path)).toEqual(['/r-ok']);
  });
});
