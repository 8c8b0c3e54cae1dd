// API-key auth against a hostile client on the TLS ingress, raw bytes on one connection each: every request is
// checked on its own, whichever parser takes it (the keep-alive fast path or the http.Server it hands the
// connection to) — a request pipelined after an authenticated one, one after a refusal, HTTP/1.0, an Upgrade;
// a repeated api-key header (even of the right key twice), one folded over two lines (obs-fold: 400), and the
// key under another spelling (api_key) are refused; no refused request reaches the app. Coverage of the review
// (these passed before it); the comparison itself: api-key-stage.test.ts, the basic outcomes: api-key.test.ts.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { apiKeyHash } from '../../src/http/stages/api-key.ts';
import { startIngressStack, tlsExchange, type IngressStack } from './helpers.ts';

const KEY = 'k-hostile-5c1e9a';
let s: IngressStack;

beforeAll(async () => {
  s = await startIngressStack({ forwarder: { apiKeyHashes: [apiKeyHash(KEY)] } });
}, 30_000);

afterAll(async () => {
  await s?.stop();
});

/** Writes `bytes` on one TLS connection; resolves with the status lines of the answers once the agent closes it. */
function statuses(bytes: string): Promise<string[]> {
  return tlsExchange(s.port, bytes).then((answer) => [...answer.matchAll(/HTTP\/1\.1 (\d{3})/g)].map((m) => m[1]!));
}

const req = (path: string, extra = '', version = '1.1'): string => `GET ${path} HTTP/${version}\r\nHost: localhost\r\n${extra}\r\n`;
const key = `api-key: ${KEY}\r\n`;
/** Paths the app saw (it reports each on its stdout, which may arrive after the answer did). */
const seen = (prefix: string): string[] => s.app.seen.filter((r) => r.path.startsWith(prefix)).map((r) => r.path);

describe('API-key auth on the TLS ingress, hostile client', () => {
  it('checks every pipelined request: one without a key after an authenticated one, one with it after a refusal', async () => {
    expect(await statuses(req('/p-1', key) + req('/p-2') + req('/p-3', key) + req('/p-4', 'api-key: wrong\r\n'))).toEqual(['200', '401', '200', '401']);
    await expect.poll(() => seen('/p-')).toEqual(['/p-1', '/p-3']);
  });

  it('checks them on the http.Server too, once a request has handed the connection over (HTTP/1.0, chunked)', async () => {
    const chunked = `POST /s-2 HTTP/1.1\r\nHost: localhost\r\n${key}Transfer-Encoding: chunked\r\n\r\n1\r\na\r\n0\r\n\r\n`;
    expect(await statuses(req('/s-1', `${key}Connection: keep-alive\r\n`, '1.0') + chunked + req('/s-3'))).toEqual(['200', '200', '401']);
    expect(await statuses(req('/s-4', 'Connection: keep-alive\r\n', '1.0'))).toEqual(['401']);
    await expect.poll(() => seen('/s-')).toEqual(['/s-1', '/s-2']);
  });

  it('refuses a repeated api-key header (the right key twice too), a folded one, and other spellings of the name', async () => {
    expect(await statuses(req('/d-1', `${key}api-key: wrong\r\n`))).toEqual(['401']);
    expect(await statuses(req('/d-2', `api-key: wrong\r\n${key}`))).toEqual(['401']);
    expect(await statuses(req('/d-3', key + key))).toEqual(['401']);
    expect(await statuses(req('/d-4', `api-key: wrong\r\n ${KEY}\r\n`))).toEqual(['400']);
    expect(await statuses(req('/d-5', `api_key: ${KEY}\r\nx-api-key: ${KEY}\r\n`))).toEqual(['401']);
    expect(await statuses(req('/d-6', `API-KEY: ${KEY}\r\n`))).toEqual(['200']);
    await expect.poll(() => seen('/d-')).toEqual(['/d-6']);
  });

  it('refuses an Upgrade without the key before it reaches the app', async () => {
    const upgrade = req('/u-1', 'Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n');
    expect(await statuses(req('/u-0', key) + upgrade)).toEqual(['200', '401']);
    await expect.poll(() => seen('/u-')).toEqual(['/u-0']);
  });
});
