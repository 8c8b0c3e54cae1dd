// The API-key stage's comparison, by construction rather than by timing: the presented key is hashed first (so
// every comparison is between two 32-byte digests, whatever the key's length), and it is compared with EVERY
// configured hash through crypto.timingSafeEqual — no early exit on a match, no length check on the key.
import type * as NodeCrypto from 'node:crypto';
import { afterEach, describe, expect, it, vi } from 'vitest';

const calls: [Buffer, Buffer][] = [];
vi.mock('node:crypto', async (importOriginal) => {
  const actual = await importOriginal<typeof NodeCrypto>();
  return {
    ...actual,
    timingSafeEqual: (a: Buffer, b: Buffer) => {
      calls.push([a, b]);
      return actual.timingSafeEqual(a, b);
    },
  };
});

const { apiKeyHash, apiKeyStage } = await import('../../src/http/stages/api-key.ts');

function exchange(key: string | undefined): { req: { headers: Record<string, string> }; upstreamHeaders: string[] } {
  const headers: Record<string, string> = key === undefined ? {} : { 'api-key': key };
  return { req: { headers }, upstreamHeaders: key === undefined ? [] : ['api-key', key, 'accept', '*/*'] };
}

afterEach(() => void (calls.length = 0));

describe('api-key stage comparison', () => {
  const keys = ['first-key', 'second-key', 'third-key'];
  const stage = apiKeyStage({ hashes: keys.map(apiKeyHash) });
  const run = async (key: string | undefined): Promise<string> => {
    const ex = exchange(key);
    try {
      await stage(ex as never, () => Promise.resolve());
      expect(ex.upstreamHeaders).toEqual(['accept', '*/*']);
      return 'passed';
    } catch (err) {
      return (err as { code: string }).code;
    }
  };

  it('compares 32-byte digests against every configured hash, whether the key matches first, last or never', async () => {
    for (const [key, outcome] of [['first-key', 'passed'], ['third-key', 'passed'], ['x', 'HTTP_API_KEY_INVALID'], ['y'.repeat(10_000), 'HTTP_API_KEY_INVALID']] as const) {
      calls.length = 0;
      expect(await run(key)).toBe(outcome);
      expect(calls).toHaveLength(3);
      for (const [a, b] of calls) expect([a.length, b.length]).toEqual([32, 32]);
    }
  });

  it('hashes the header as the bytes it was sent as (latin1 from the parser); a character past U+00FF is refused', async () => {
    const stage2 = apiKeyStage({ hashes: [apiKeyHash('café'), apiKeyHash('a')] });
    const run2 = (key: string): Promise<string> => stage2(exchange(key) as never, () => Promise.resolve()).then(() => 'passed', (err: { code: string }) => err.code);
    expect(await run2(Buffer.from('café', 'utf8').toString('latin1'))).toBe('passed'); // as Node hands over UTF-8 bytes
    expect(await run2('café')).toBe('HTTP_API_KEY_INVALID'); // the single byte 0xe9: not the bytes hashed
    expect(await run2('\u0161')).toBe('HTTP_API_KEY_INVALID'); // low byte 0x61 ("a"): not from a wire parser
  });

  it('a missing header is refused without any comparison; bad options are refused at build time', async () => {
    expect(await run(undefined)).toBe('HTTP_API_KEY_MISSING');
    expect(calls).toHaveLength(0);
    expect(() => apiKeyStage({ hashes: [] })).toThrow(/at least one/);
    expect(() => apiKeyStage({ hashes: ['not-hex'] })).toThrow(/64 hex/);
  });
});
