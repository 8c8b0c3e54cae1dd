// The data key KMS releases and the keyring scalars it opens are wiped by their callers once used — but each
// was first the output of a Decipher's update()/final(), which the openers concatenated and dropped unwiped, so
// a copy of the data key (CMS envelope) and of the enclave's private scalars (AES-GCM) stayed in freed memory
// for as long as nothing reused it. Every buffer a Decipher hands these openers must be zero once the caller
// has wiped what it was given.
import type * as NodeCrypto from 'node:crypto';
import { createCipheriv, generateKeyPairSync, randomBytes } from 'node:crypto';
import { afterEach, describe, expect, it, vi } from 'vitest';

const outputs: Buffer[] = [];
vi.mock('node:crypto', async (importOriginal) => {
  const real = await importOriginal<typeof NodeCrypto>();
  const createDecipheriv = ((...args: Parameters<typeof real.createDecipheriv>) => {
    const d = real.createDecipheriv(...args);
    const update = d.update.bind(d) as (data: Uint8Array) => Buffer;
    const final = d.final.bind(d) as () => Buffer;
    return Object.assign(d, {
      update: (data: Uint8Array) => {
        const out = update(data);
        outputs.push(out);
        return out;
      },
      final: () => {
        const out = final();
        outputs.push(out);
        return out;
      },
    });
  }) as typeof real.createDecipheriv;
  return { ...real, default: { ...real, createDecipheriv }, createDecipheriv };
});

const { openRecipientEnvelope } = await import('../../src/crypto/cms-envelope.ts');
const { gcmOpen } = await import('../../src/crypto/aes-gcm.ts');
const { opensslRecipientEnvelope } = await import('./openssl-cms.ts');

afterEach(() => {
  outputs.length = 0;
});

const zero = (b: Uint8Array): boolean => b.every((x) => x === 0);

describe('what the Decipher gave the openers of KMS data keys and sealed keyrings', () => {
  it('the CMS envelope: no copy of the data key survives the caller wiping the one it got', () => {
    const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
    const dataKey = randomBytes(32);
    const cms = opensslRecipientEnvelope(new Uint8Array(publicKey.export({ type: 'spki', format: 'der' })), dataKey);
    const opened = openRecipientEnvelope(cms, privateKey);
    expect(opened.equals(dataKey)).toBe(true);
    expect(outputs.some((o) => o.length > 0)).toBe(true);
    opened.fill(0);
    expect(outputs.filter((o) => !zero(o)).map((o) => o.length)).toEqual([]);
  });

  it('AES-GCM (sealed keyring, kms: secrets): no copy of the plaintext survives the caller wiping its own', () => {
    const key = randomBytes(32);
    const iv = randomBytes(12);
    const scalars = randomBytes(64);
    const c = createCipheriv('aes-256-gcm', key, iv);
    c.setAAD(Buffer.from('aad'));
    const sealed = Buffer.concat([c.update(scalars), c.final(), c.getAuthTag()]);
    const pt = gcmOpen(key, iv, Buffer.from('aad'), sealed)!;
    expect(pt.equals(scalars)).toBe(true);
    pt.fill(0);
    expect(outputs.filter((o) => !zero(o)).map((o) => o.length)).toEqual([]);
  });

  it('AES-GCM that does not authenticate: what update() gave is wiped too (null, nothing left behind)', () => {
    const key = randomBytes(32);
    const sealed = Buffer.concat([randomBytes(64), randomBytes(16)]);
    expect(gcmOpen(key, randomBytes(12), Buffer.from('aad'), sealed)).toBeNull();
    expect(outputs.filter((o) => !zero(o)).map((o) => o.length)).toEqual([]);
  });
});
