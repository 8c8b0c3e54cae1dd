// The local API on 127.0.0.1:9999: every refused ev: value (422) and every failed request (500) wrote its own log
// line, so an app sending them in a loop filled the operator log. They are now counted, one line per interval each
// (reason and detail, or code and cause: never a value), and close() writes the last interval's counts. close()
// also zeroes the keyring's cached key agreements (ecdh-cache.ts).
import { describe, expect, it } from 'vitest';
import { API_EV_REFUSALS_MESSAGE, API_FAILURES_MESSAGE, startApiServer } from '../../src/api/server.ts';
import type { AttestationRequest, Nsm } from '../../src/attestation/nsm.ts';
import { encryptValue } from '../../src/crypto/ev-format.ts';
import { Keyring } from '../../src/crypto/keyring.ts';
import { watchedKeyring } from '../crypto/watched-keyring.ts';
import { memoryLog } from '../faults/stack.ts';

const SECRET = 'plaintext-3141592';

const failingNsm: Nsm = {
  attest: (_req: AttestationRequest) => Promise.reject(new Error('device gone')),
  random: (n: number) => Promise.resolve(new Uint8Array(n)),
};

describe('local API: refusals and failures in the operator log', () => {
  it('counts refused ev: values and failed requests, one line each at close(), and zeroes the key agreements', { timeout: 20_000 }, async () => {
    const log = memoryLog('info');
    const { keyring, agreed } = watchedKeyring();
    const api = await startApiServer({ keyring, nsm: failingNsm, port: 0, logger: log.logger, refusalLogIntervalMs: 600_000 });
    let closed = false;
    try {
      const post = (path: string, body: string): Promise<Response> =>
        fetch(`http://127.0.0.1:${api.port}${path}`, { method: 'POST', body, headers: { 'content-type': 'application/json' } });
      const foreign = encryptValue(SECRET, Keyring.generate().publicKeys()); // another enclave's value
      const own = encryptValue(SECRET, keyring.publicKeys());
      for (let i = 0; i < 9; i++) expect((await post('/decrypt', JSON.stringify({ ok: own, bad: foreign }))).status).toBe(422);
      for (let i = 0; i < 4; i++) expect((await post('/attestation-doc', '{}')).status).toBe(500);
      const counted = (msg: string): Record<string, unknown>[] => log.records().filter((r) => r.msg === msg);
      // Nothing per request (before: 9 "ev: value refused" and 4 "local API request failed" lines).
      expect(log.records().filter((r) => (r.level as number) >= 40)).toEqual([]);
      expect(agreed.length).toBeGreaterThan(0);
      expect(agreed.every((z) => z.some((x) => x !== 0))).toBe(true);
      await api.close();
      closed = true;
      expect(counted(API_EV_REFUSALS_MESSAGE)).toEqual([expect.objectContaining({ level: 40, total: 9 })]);
      expect(counted(API_FAILURES_MESSAGE)).toEqual([expect.objectContaining({ level: 50, total: 4, counts: { 'API_ATTESTATION_FAILED no code': 4 } })]);
      expect(log.text()).not.toContain(SECRET);
      expect(agreed.every((z) => z.every((x) => x === 0))).toBe(true); // close() zeroed the cached Z
    } finally {
      if (!closed) await api.close();
    }
  });
});
