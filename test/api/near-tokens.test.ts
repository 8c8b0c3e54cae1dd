// POST /decrypt with a body of strings that look like ev: values but fail the grammar ("ev:Tk9D:A:A:A:$"):
// they count toward [limits] max_decrypt_fields like values (413 past it, nothing decrypted), counted in
// steps on the scheduler; under the cap they come back unaltered. (A 4 MiB body of them held the agent's
// event loop 2.6–3.7 s in one synchronous count before.)
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startApiServer, type ApiServer } from '../../src/api/server.ts';
import type { Nsm } from '../../src/attestation/nsm.ts';
import { encryptValue } from '../../src/crypto/ev-format.ts';
import { Keyring } from '../../src/crypto/keyring.ts';

const keyring = Keyring.generate();
const nsm: Nsm = { attest: () => Promise.resolve(new Uint8Array([0x84])), random: (n) => Promise.resolve(new Uint8Array(n)) };
const NEAR = 'ev:Tk9D:A:A:A:$';
let api: ApiServer;

beforeAll(async () => {
  api = await startApiServer({ keyring, nsm, port: 0, maxDecryptFields: 64, logger: pino({ level: 'silent' }) });
});
afterAll(async () => {
  await api.close();
});

async function decrypt(body: unknown): Promise<{ status: number; body: unknown }> {
  const r = await fetch(`http://127.0.0.1:${api.port}/decrypt`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
  return { status: r.status, body: await r.json() };
}

describe('local API /decrypt: near-tokens', () => {
  it('a body of more near-tokens than max_decrypt_fields → 413 API_TOO_MANY_ENCRYPTED_FIELDS', async () => {
    const r = await decrypt(Array<string>(5000).fill(NEAR));
    expect(r.status).toBe(413);
    expect(r.body).toMatchObject({ error: 'API_TOO_MANY_ENCRYPTED_FIELDS' });
  });

  it('near-tokens and values together count toward the cap; under it near-tokens come back unaltered', async () => {
    const value = encryptValue('4111', keyring.publicKeys());
    expect((await decrypt([...Array<string>(64).fill(NEAR), value])).status).toBe(413);
    const ok = await decrypt([...Array<string>(63).fill(NEAR), value]);
    expect(ok.status).toBe(200);
    expect(ok.body).toEqual([...Array<string>(63).fill(NEAR), '4111']);
  });

  it('ev:-looking object keys do not count (keys are never decrypted): many of them, one value → 200', async () => {
    const value = encryptValue('4111', keyring.publicKeys());
    const doc = { ...Object.fromEntries(Array.from({ length: 500 }, (_, i) => [`ev:Tk9D:A:A:${i}:$`, i])), card: value };
    const r = await decrypt(doc);
    expect(r.status).toBe(200);
    expect(r.body).toEqual({ ...doc, card: '4111' });
  });
});
