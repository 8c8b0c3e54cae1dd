import { describe, expect, it } from 'vitest';
import { decryptToken, decryptTokenDetailed, encryptValue, parseEv } from '../../src/crypto/ev-format.ts';
import { explicitSpki, decompressPoint } from '../../src/crypto/ev-kdf.ts';
import { walkDecrypt, walkEncrypt } from '../../src/crypto/json-decrypt.ts';
import { KeyMaterial, Keyring } from '../../src/crypto/keyring.ts';
import { utf8 } from '../../src/util/bytes.ts';
import { SDK_TOKEN_SHAPE, oracleDecrypt, SDK_SAMPLE as SAMPLE, SDK_CASES as CASES, leaves, sdkFor, sdkSpki } from './sdk.ts';

const material = KeyMaterial.generate();
const keyring = Keyring.fromMaterial(material);

describe('values produced by the real @evervault/sdk', () => {
  for (const { curve, role, version } of CASES) {
    it(`decrypts ${version} (${curve}, ${role ? 'with' : 'without'} a data role) objects back to the exact original values`, async () => {
      const ev = sdkFor(keyring, curve);
      const encrypted = (await ev.encrypt(SAMPLE, role)) as unknown;
      const tokens = leaves(encrypted);
      expect(tokens.length).toBe(17);
      for (const t of tokens) {
        expect(t).toMatch(SDK_TOKEN_SHAPE);
        expect(parseEv(t).version).toBe(version);
      }
      expect(walkDecrypt(encrypted, keyring)).toEqual(SAMPLE);
    });
  }

  it('decrypts top-level primitives of every type and trims strings as the SDK does', async () => {
    for (const curve of ['prime256v1', 'secp256k1'] as const) {
      const ev = sdkFor(keyring, curve);
      expect(decryptToken((await ev.encrypt('  padded  ')) as string, keyring)).toBe('padded');
      expect(decryptToken((await ev.encrypt(0)) as string, keyring)).toBe(0);
      expect(decryptToken((await ev.encrypt(true)) as string, keyring)).toBe(true);
      const arr = (await ev.encrypt([1, 'a', false])) as string[];
      expect(arr.map((t) => decryptToken(t, keyring))).toEqual([1, 'a', false]);
    }
  });

  it('exposes the data role and encryption time from the metadata block', async () => {
    const before = Math.floor(Date.now() / 1000);
    const ev = sdkFor(keyring, 'prime256v1');
    const t = (await ev.encrypt('secret', 'my-role')) as string;
    const d = decryptTokenDetailed(t, keyring);
    expect(d.value).toBe('secret');
    expect(d.metadata?.role).toBe('my-role');
    expect(d.metadata?.origin).toBe(5);
    expect(d.metadata!.encryptedAt).toBeGreaterThanOrEqual(before);
    expect(d.metadata!.encryptedAt).toBeLessThanOrEqual(before + 5);
  });

  it('opens secp256k1 values from an SDK instance that mixes calls with and without a role in one key cycle', async () => {
    // The SDK fixes its secp256k1 AES key from the first call of a 15-second cycle.
    const noRoleFirst = sdkFor(keyring, 'secp256k1');
    const a = (await noRoleFirst.encrypt('first')) as string;
    const b = (await noRoleFirst.encrypt('second', 'r1')) as string;
    const roleFirst = sdkFor(keyring, 'secp256k1');
    const c = (await roleFirst.encrypt(7, 'r2')) as string;
    const d = (await roleFirst.encrypt(false)) as string;
    expect([a, b, c, d].map((t) => parseEv(t).version)).toEqual(['RFVC', 'S0lS', 'S0lS', 'RFVC']);
    expect([a, b, c, d].map((t) => decryptToken(t, keyring))).toEqual(['first', 'second', 7, false]);
  });

  it('rejects SDK values made for another enclave key', async () => {
    const other = Keyring.generate();
    for (const { curve, role } of CASES) {
      const t = (await sdkFor(other, curve).encrypt('x', role)) as string;
      expect(() => decryptToken(t, keyring)).toThrow(expect.objectContaining({ name: 'EvDecryptError', code: 'EV_DECRYPT_FAILED' }));
    }
  });
});

describe('values produced by encryptValue', () => {
  const variants = [
    { curve: 'p256', role: undefined, version: 'Tk9D' },
    { curve: 'p256', role: 'pii', version: 'QkTC' },
    { curve: 'secp256k1', role: undefined, version: 'RFVC' },
    { curve: 'secp256k1', role: 'pii', version: 'S0lS' },
  ] as const;

  for (const { curve, role, version } of variants) {
    it(`${version}: have the SDK's shape, open with an independent noble-based decryptor and round-trip`, () => {
      for (const value of ['hello wörld', 12.5, -3, true, false, ''] as const) {
        const t = encryptValue(value, keyring.publicKeys(), { curve, ...(role ? { role } : {}) });
        expect(t).toMatch(SDK_TOKEN_SHAPE);
        const o = oracleDecrypt(t, material);
        expect(o.version).toBe(version);
        expect(o.type).toBe(typeof value === 'string' ? 'string' : typeof value);
        let data = o.plaintext;
        if (role) {
          const len = data[0]! | (data[1]! << 8);
          // metadata: fixmap(3) "dr" role "eo" 5 "et" uint32 — byte-identical to the SDK's encoder
          expect(Array.from(data.subarray(2, 2 + 8 + role.length))).toEqual([0x83, 0xa2, 0x64, 0x72, 0xa0 | role.length, ...utf8.encode(role), 0xa2, 0x65, 0x6f].slice(0, 8 + role.length));
          data = data.subarray(2 + len);
        }
        expect(utf8.decode(data)).toBe(typeof value === 'string' ? value : JSON.stringify(value));
        expect(decryptToken(t, keyring)).toBe(value);
      }
    });
  }

  it('walkEncrypt keeps the shape, leaves null alone and round-trips through walkDecrypt', () => {
    const enc = walkEncrypt(SAMPLE, keyring, { role: 'abc' }) as typeof SAMPLE;
    expect(enc.none).toBeNull();
    expect(leaves(enc).every((t) => SDK_TOKEN_SHAPE.test(t))).toBe(true);
    expect(walkDecrypt(enc, keyring)).toEqual(SAMPLE);
  });
});

describe('key derivation', () => {
  it('builds the explicit-parameter SPKI byte-identical to the SDK encoder for both curves', () => {
    for (const [curve, sdkCurve] of [['p256', 'prime256v1'], ['secp256k1', 'secp256k1']] as const) {
      for (let i = 0; i < 3; i++) {
        const pub = Keyring.generate().publicKey(curve);
        expect(Buffer.from(explicitSpki(curve, decompressPoint(curve, pub))).toString('hex')).toBe(Buffer.from(sdkSpki(sdkCurve, pub)).toString('hex'));
      }
    }
  });
});
