// DecryptPool: ev: values of JSON texts decrypted in worker threads, with the results and refusals of the
// in-thread code, under the scheduler's budget, and without holding the event loop.
import { afterAll, describe, expect, it } from 'vitest';
import { DecryptPool } from '../../src/crypto/decrypt-pool.ts';
import { DecryptScheduler } from '../../src/crypto/decrypt-scheduler.ts';
import { EV_DECRYPT_MESSAGE, EvBusyError, EvDecryptError } from '../../src/crypto/errors.ts';
import { EvEncryptor, encryptValue } from '../../src/crypto/ev-format.ts';
import { decryptJsonTokens } from '../../src/crypto/json-decrypt.ts';
import { Keyring } from '../../src/crypto/keyring.ts';
import { failingValues } from './ev-forge.ts';
import { sdkFor } from './sdk.ts';

const keyring = Keyring.generate();
const pub = keyring.publicKeys();
const pool = new DecryptPool(keyring, { size: 2 });

afterAll(async () => {
  await pool.close();
});

describe('DecryptPool', () => {
  it('returns exactly what decryptJsonTokens returns, for our values and the Evervault SDK’s', { timeout: 60_000 }, async () => {
    const enc = new EvEncryptor(pub, { role: 'pii' });
    const sdk = sdkFor(keyring, 'secp256k1');
    const doc = JSON.stringify({
      n: encryptValue(1234.5, pub),
      exact: enc.encryptJsonNumber('12345678901234567890'),
      s: encryptValue('héllo "x"', pub, { curve: 'secp256k1' }),
      b: enc.encrypt(false),
      sdk: await sdk.encrypt({ card: '4242', cvc: 123, ok: true }, 'pii'),
      plain: 'ev:not-a-token:$',
      keyed: { [encryptValue(7, pub)]: encryptValue(8, pub) }, // the key stays a token: only values are decrypted
    });
    const out = await pool.decryptJson(doc);
    expect(out).toEqual(decryptJsonTokens(doc, keyring));
    expect(JSON.parse(out.json)).toMatchObject({ s: 'héllo "x"', b: false, sdk: { card: '4242', cvc: 123, ok: true }, plain: 'ev:not-a-token:$' });
    expect(out.json).toContain('"exact":12345678901234567890');
    expect(Object.keys((JSON.parse(out.json) as { keyed: object }).keyed)).toEqual(Object.keys((JSON.parse(doc) as { keyed: object }).keyed));
    expect(pool.workers).toBeGreaterThanOrEqual(1);
  });

  it('refuses each failing value with the EvDecryptError the thread itself would throw (same reason, same message)', async () => {
    for (const [reason, value] of Object.entries(failingValues(keyring))) {
      const err = (await pool.decryptJson(JSON.stringify([value])).catch((e: unknown) => e)) as EvDecryptError;
      expect(err, reason).toBeInstanceOf(EvDecryptError);
      expect({ reason: err.reason, message: err.message, code: err.code }).toEqual({ reason, message: EV_DECRYPT_MESSAGE, code: 'EV_DECRYPT_FAILED' });
    }
  });

  it('keeps the event loop free while decrypting: timers run before a 400-value distinct-key body is done', { timeout: 60_000 }, async () => {
    const body = JSON.stringify(Array.from({ length: 400 }, (_, i) => encryptValue(i, pub, { curve: 'secp256k1' })));
    await pool.decryptJson('[]'); // workers started
    const order: string[] = [];
    const job = pool.decryptJson(body).then((o) => {
      order.push('body');
      return o;
    });
    const ticks = (async () => {
      for (let i = 0; i < 3; i++) await new Promise((r) => setTimeout(r, 1));
      order.push('timers');
    })();
    const [out] = await Promise.all([job, ticks]);
    expect(out.count).toBe(400);
    expect(order).toEqual(['timers', 'body']);
  });

  it('counts pool jobs in the scheduler budget (EvBusyError past it) and decrypts a keyring it does not hold in slices', async () => {
    const scheduler = new DecryptScheduler({ maxConcurrent: 1, pool });
    let released = false;
    const held = scheduler.run(
      (function* () {
        while (!released) yield;
      })(),
    );
    await expect(scheduler.decryptJson(JSON.stringify([encryptValue(1, pub)]), keyring)).rejects.toThrow(EvBusyError);
    released = true;
    await held;
    expect((await scheduler.decryptJson(JSON.stringify([encryptValue(1, pub)]), keyring)).json).toBe('[1]');
    const other = Keyring.generate();
    expect((await scheduler.decryptJson(JSON.stringify([encryptValue(2, other.publicKeys())]), other)).json).toBe('[2]');
    expect(scheduler.active).toBe(0);
  });

  it('refuses work once closed', async () => {
    const p = new DecryptPool(keyring, { size: 1 });
    expect(p.workers).toBe(0); // started on first use
    await p.close();
    await expect(p.decryptJson('[]')).rejects.toMatchObject({ code: 'EV_POOL_CLOSED' });
    expect(() => new DecryptPool(keyring, { size: 0 })).toThrow(/positive integer/);
  });
});
