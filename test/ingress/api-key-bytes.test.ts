// API-key auth compares the api-key header's bytes as the client sent them. Node's parsers hand a header value
// over as latin1 (one character per byte); it used to be re-encoded as UTF-8 before hashing, so a key with
// non-ASCII characters — configured as `printf %s "$KEY" | sha256sum`, i.e. the SHA-256 of its UTF-8 bytes —
// never matched, whatever the client sent (it failed closed, silently). Raw bytes on a TLS connection each.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { apiKeyHash } from '../../src/http/stages/api-key.ts';
import { startIngressStack, tlsExchange, type IngressStack } from './helpers.ts';

const KEY = 'clé-ключ-🔑-b7';
let s: IngressStack;

beforeAll(async () => {
  s = await startIngressStack({ forwarder: { apiKeyHashes: [apiKeyHash(KEY), apiKeyHash('café-b7'), apiKeyHash('ascii-key-b7')] } });
}, 30_000);

afterAll(async () => {
  await s?.stop();
});

/** One request whose api-key header is `key` (raw bytes); resolves with the answer's status once the agent closes. */
function status(path: string, key: Buffer): Promise<string | undefined> {
  const head = (text: string): Buffer => Buffer.from(text, 'latin1');
  const bytes = Buffer.concat([head(`GET ${path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\napi-key: `), key, head('\r\n\r\n')]);
  return tlsExchange(s.port, bytes).then((answer) => /^HTTP\/1\.1 (\d{3})/.exec(answer)?.[1]);
}

describe('API-key auth on the TLS ingress: the header bytes as sent', () => {
  it('accepts a non-ASCII key sent as the UTF-8 bytes it was hashed from', async () => {
    expect(await status('/b-1', Buffer.from(KEY, 'utf8'))).toBe('200');
    expect(await status('/b-2', Buffer.from('café-b7', 'utf8'))).toBe('200');
    expect(await status('/b-3', Buffer.from('ascii-key-b7', 'utf8'))).toBe('200');
  });

  it('refuses other bytes for the same characters (latin-1 é, a cut key) and a near miss', async () => {
    expect(await status('/b-4', Buffer.from('café-b7', 'latin1'))).toBe('401');
    expect(await status('/b-5', Buffer.from(KEY, 'utf8').subarray(0, -1))).toBe('401');
    expect(await status('/b-6', Buffer.from(KEY.replace('é', 'e'), 'utf8'))).toBe('401');
    await expect.poll(() => s.app.seen.filter((r) => r.path.startsWith('/b-')).map((r) => r.path)).toEqual(['/b-1', '/b-2', '/b-3']);
  });
});
