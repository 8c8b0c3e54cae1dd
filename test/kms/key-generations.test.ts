// A keyring of several generations (after `keys rotate`): the newest encrypts, every one decrypts — on the
// event loop, in the decrypt pool's workers, in the HTTP stage and the local API — and the ECDHs a request may
// cost stay under the per-request cap however many generations a value needs.
import { Readable } from 'node:stream';
import pino from 'pino';
import { afterAll, describe, expect, it } from 'vitest';
import { startApiServer } from '../../src/api/server.ts';
import type { Nsm } from '../../src/attestation/nsm.ts';
import { DecryptPool } from '../../src/crypto/decrypt-pool.ts';
import { DecryptScheduler } from '../../src/crypto/decrypt-scheduler.ts';
import { EcdhBudget } from '../../src/crypto/ecdh-budget.ts';
import { EvBudgetError, EvDecryptError } from '../../src/crypto/errors.ts';
import { decryptToken, encryptValue, type EvCurve } from '../../src/crypto/ev-format.ts';
import { decryptJsonTokens } from '../../src/crypto/json-decrypt.ts';
import { KeyMaterial, Keyring, MAX_KEY_GENERATIONS } from '../../src/crypto/keyring.ts';
import { createDecryptStage } from '../../src/http/stages/decrypt-ev.ts';

const gens = [KeyMaterial.generate(), KeyMaterial.generate(), KeyMaterial.generate()];
/** Newest first: gens[2] is current, gens[0] the oldest. */
const ring = Keyring.fromMaterial(KeyMaterial.fromGenerations([gens[2]!, gens[1]!, gens[0]!].map((m) => ({ p256: m.privateKey('p256'), secp256k1: m.privateKey('secp256k1') }))));
const pub = (m: KeyMaterial) => Keyring.fromMaterial(m).publicKeys();
const pool = new DecryptPool(ring, { size: 1 });

afterAll(() => pool.close());

describe('a keyring of several generations', () => {
  it('publishes the newest pair and lists the retired ones newest first', () => {
    expect(ring.generations).toBe(3);
    expect(ring.publicKeys()).toEqual(pub(gens[2]!));
    expect(ring.retiredPublicKeys()).toEqual([pub(gens[1]!), pub(gens[0]!)]);
    expect(Keyring.fromMaterial(gens[2]!).keyIds).toEqual(ring.keyIds);
    expect(JSON.stringify(ring)).not.toMatch(/[0-9a-f]{64}/);
  });

  it('opens values of every version made for any generation; refuses a stranger key', () => {
    for (const m of gens) {
      for (const curve of ['p256', 'secp256k1'] as EvCurve[]) {
        for (const role of [undefined, 'pay']) {
          const v = encryptValue(`v-${curve}-${role}`, pub(m), { curve, ...(role ? { role } : {}) });
          expect(decryptToken(v, ring)).toBe(`v-${curve}-${role}`);
        }
      }
    }
    const stranger = encryptValue('x', Keyring.generate().publicKeys());
    expect(() => decryptToken(stranger, ring)).toThrow(EvDecryptError);
  });

  it('holds at most MAX_KEY_GENERATIONS', () => {
    const one = { p256: gens[0]!.privateKey('p256'), secp256k1: gens[0]!.privateKey('secp256k1') };
    expect(() => KeyMaterial.fromGenerations(new Array(MAX_KEY_GENERATIONS + 1).fill(one))).toThrow(/expected 1 to 4/);
    expect(() => KeyMaterial.fromGenerations([])).toThrow(/expected 1 to 4/);
  });

  it('charges one ECDH per generation tried: values under the oldest key cost 3 each', () => {
    const body = JSON.stringify(Array.from({ length: 4 }, (_, i) => encryptValue(`old-${i}`, pub(gens[0]!))));
    const b = new EcdhBudget(12);
    expect(JSON.parse(decryptJsonTokens(body, ring, b).json)).toEqual(['old-0', 'old-1', 'old-2', 'old-3']);
    expect(b.remaining).toBe(0);
    expect(() => decryptJsonTokens(body, Keyring.fromMaterial(KeyMaterial.fromGenerations(ring.keyMaterial().scalars())), new EcdhBudget(11))).toThrow(EvBudgetError);
    // A value no generation opens costs every generation once, then fails.
    const b2 = new EcdhBudget(100);
    expect(() => decryptJsonTokens(JSON.stringify([encryptValue('x', Keyring.generate().publicKeys())]), ring, b2)).toThrow(EvDecryptError);
    expect(b2.remaining).toBe(100 - 3);
  });

  it('the decrypt pool opens old values in its worker and enforces the budget there', async () => {
    const old = JSON.stringify({ a: encryptValue('one', pub(gens[0]!)), b: encryptValue(7, pub(gens[1]!), { curve: 'secp256k1' }) });
    await expect(pool.decryptJson(old)).resolves.toEqual({ json: '{"a":"one","b":7}', count: 2 });
    const many = JSON.stringify(Array.from({ length: 5 }, () => encryptValue('z', pub(gens[0]!))));
    await expect(pool.decryptJson(many, 10)).rejects.toBeInstanceOf(EvBudgetError);
    const sched = new DecryptScheduler({ pool });
    await expect(sched.decryptJson(many, ring, new EcdhBudget(15))).resolves.toMatchObject({ count: 5 });
  });

  it('the HTTP stage answers 413 when old-key values need more ECDHs than max_decrypt_fields, 200 within it', async () => {
    const stage = createDecryptStage(ring, { maxFields: 4 });
    const body = (n: number, m: KeyMaterial) => Buffer.from(JSON.stringify(Array.from({ length: n }, (_, i) => encryptValue(`v${i}`, pub(m)))));
    const run = (buf: Buffer) => {
      return stage({ requestId: 'r', headers: ['content-type', 'application/json'], body: Readable.from([buf]), contentLength: buf.length, maxBufferedBodyBytes: 1 << 20 } as never);
    };
    await expect(run(body(4, gens[2]!))).resolves.toMatchObject({ decryptedFields: 4 }); // current key: 1 ECDH each
    await expect(run(body(2, gens[1]!))).resolves.toMatchObject({ decryptedFields: 2 }); // 2 each = 4
    await expect(run(body(2, gens[0]!))).rejects.toMatchObject({ code: 'HTTP_TOO_MANY_ENCRYPTED_FIELDS', status: 413 }); // 3 each = 6 > 4
  });

  it('the local API: /decrypt opens old values within the budget, 413 past it', async () => {
    const nsm: Nsm = { attest: () => Promise.reject(new Error('not used')), random: (n) => Promise.resolve(new Uint8Array(n)) };
    const api = await startApiServer({ keyring: ring, nsm, port: 0, logger: pino({ enabled: false }), maxDecryptFields: 4, decryptScheduler: new DecryptScheduler({ pool }) });
    try {
      const post = (values: string[]) => fetch(`http://127.0.0.1:${api.port}/decrypt`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(values) });
      const ok = await post([encryptValue('b1', pub(gens[1]!)), encryptValue('b2', pub(gens[1]!))]);
      expect([ok.status, await ok.json()]).toEqual([200, ['b1', 'b2']]);
      const over = await post([encryptValue('a1', pub(gens[0]!)), encryptValue('a2', pub(gens[0]!))]);
      expect(over.status).toBe(413);
      expect(await over.json()).toMatchObject({ error: 'API_TOO_MANY_ENCRYPTED_FIELDS', message: expect.stringContaining('key agreements') });
    } finally {
      await api.close();
    }
  });
});
