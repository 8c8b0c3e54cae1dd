// API-key auth and `Expect: 100-continue` on the TLS ingress: the keep-alive fast path hands such a request to the
// http.Server, whose 'checkContinue' used to answer 100 Continue at once — inviting the body of a client with no
// key, which the 401 then cut off. The key is now checked first: no 100 without it, 100 with it. Raw bytes on one
// TLS connection each.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { apiKeyHash } from '../../src/http/stages/api-key.ts';
import { startIngressStack, tlsContinueExchange, type IngressStack } from './helpers.ts';

const KEY = 'k-continue-3f81d2';
let s: IngressStack;

beforeAll(async () => {
  s = await startIngressStack({ forwarder: { apiKeyHashes: [apiKeyHash(KEY)] } });
}, 30_000);

afterAll(async () => {
  await s?.stop();
});

const head = (path: string, extra = ''): string => `POST ${path} HTTP/1.1\r\nHost: localhost\r\nContent-Length: 5\r\nExpect: 100-continue\r\n${extra}\r\n`;

const exchange = (headText: string): Promise<string> => tlsContinueExchange(s.port, headText, 'hello');

describe('API-key auth on the TLS ingress, Expect: 100-continue', () => {
  it('answers a request without a key, or with a wrong one, 401 and no 100 Continue', { timeout: 15_000 }, async () => {
    for (const [path, extra, code] of [['/c-1', '', 'HTTP_API_KEY_MISSING'], ['/c-2', 'api-key: wrong\r\n', 'HTTP_API_KEY_INVALID']] as const) {
      const answer = await exchange(head(path, extra));
      expect(answer).toMatch(/^HTTP\/1\.1 401 /);
      expect(answer).toContain(code);
      expect(answer).not.toMatch(/HTTP\/1\.1 100/);
    }
  });

  it('invites the body of a request with the key (100 Continue), then answers it', { timeout: 15_000 }, async () => {
    const answer = await exchange(head('/c-3', `api-key: ${KEY}\r\nConnection: close\r\n`));
    expect(answer).toMatch(/^HTTP\/1\.1 100 Continue\r\n\r\nHTTP\/1\.1 200 /);
    await expect.poll(() => s.app.seen.filter((r) => r.path.startsWith('/c-')).map((r) => r.path)).toEqual(['/c-3']);
  });
});
