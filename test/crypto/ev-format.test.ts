import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { EV_DECRYPT_MESSAGE, EvDecryptError, EvFormatError } from '../../src/crypto/errors.ts';
import { decryptToken, decryptTokenDetailed, encryptValue, isEvToken, parseEv } from '../../src/crypto/ev-format.ts';
import { formatEv } from '../../src/crypto/ev-parse.ts';
import { decodeMetadata, encodeMetadata } from '../../src/crypto/msgpack-meta.ts';
import { KeyMaterial, Keyring } from '../../src/crypto/keyring.ts';
import { toBase64, toHex } from '../../src/util/bytes.ts';
import { failingValues } from './ev-forge.ts';

const material = KeyMaterial.generate();
const keyring = Keyring.fromMaterial(material);
const SECRET = 'the-plaintext-4111111111111111';

function mutate(token: string, part: 'iv' | 'epk' | 'ct' | 'tag'): string {
  const t = parseEv(token);
  const flip = (b: Uint8Array, i: number): Uint8Array => {
    const c = Uint8Array.from(b);
    c[i] = c[i]! ^ 0x01;
    return c;
  };
  const body = { ...t };
  if (part === 'iv') body.iv = flip(t.iv, 3);
  if (part === 'epk') body.ephemeralPublicKey = flip(t.ephemeralPublicKey, 20);
  if (part === 'ct') body.ciphertext = flip(t.ciphertext, 0);
  if (part === 'tag') body.ciphertext = flip(t.ciphertext, t.ciphertext.length - 1);
  return formatEv(body);
}

function expectNoSecrets(err: unknown): void {
  const msg = String((err as Error).message) + String((err as Error).stack);
  expect(msg).not.toContain(SECRET);
  for (const c of ['p256', 'secp256k1'] as const) {
    expect(msg).not.toContain(toHex(material.privateKey(c)));
    expect(msg).not.toContain(toBase64(material.privateKey(c)));
  }
}

function decryptError(token: string, kr = keyring): EvDecryptError {
  try {
    decryptToken(token, kr);
  } catch (err) {
    expect(err).toBeInstanceOf(EvDecryptError);
    expectNoSecrets(err);
    return err as EvDecryptError;
  }
  throw new Error('expected decryption to fail');
}

describe('parseEv', () => {
  const good = encryptValue('x', keyring.publicKeys());

  it('parses version, curve, type, debug flag and segment sizes', () => {
    const t = parseEv(encryptValue(5, keyring.publicKeys(), { curve: 'secp256k1', role: 'r', debug: true }));
    expect(t).toMatchObject({ debug: true, version: 'S0lS', curve: 'secp256k1', hasMetadata: true, type: 'number' });
    expect(t.iv.length).toBe(12);
    expect(t.ephemeralPublicKey.length).toBe(33);
  });

  it('accepts base64 padding on the ciphertext (as in Evervault debug examples)', () => {
    const t = parseEv(good);
    const padded = `ev:Tk9D:${toBase64(t.iv)}:${toBase64(t.ephemeralPublicKey)}:${toBase64(t.ciphertext)}:$`;
    expect(decryptToken(padded, keyring)).toBe('x');
  });

  it.each([
    ['no prefix', good.slice(3)],
    ['no terminator', good.slice(0, -2)],
    ['truncated IV', good.replace(/^ev:Tk9D:[^:]{2}/, 'ev:Tk9D:')],
    ['extra segment', good.replace('ev:Tk9D:', 'ev:Tk9D:AAAA:')],
    ['bad type', good.replace('ev:Tk9D:', 'ev:Tk9D:object:')],
    ['non-base64', good.replace(/:([^:]{5})[^:]*:\$$/, ':$1*:$')],
    ['ciphertext shorter than a tag', good.replace(/:[^:]*:\$$/, ':AAAA:$')],
    ['uncompressed-looking key byte', good.replace(/^(ev:Tk9D:[^:]{16}:)A[^:]/, '$1BA')],
    ['garbage', 'ev:hello:$'],
  ])('rejects %s as EV_MALFORMED', (_name, token) => {
    expect(() => parseEv(token)).toThrow(expect.objectContaining({ name: 'EvFormatError', code: 'EV_MALFORMED' }));
    expect(isEvToken(token)).toBe(false);
  });

  it('rejects undefined versions and the legacy format as EV_UNSUPPORTED_VERSION', () => {
    for (const v of ['T1JL', 'TENZ', 'QlJV']) {
      expect(() => parseEv(good.replace('Tk9D', v))).toThrow(expect.objectContaining({ code: 'EV_UNSUPPORTED_VERSION' }));
    }
    expect(() => parseEv(good.replace('ev:Tk9D:', 'ev:'))).toThrow(expect.objectContaining({ code: 'EV_UNSUPPORTED_VERSION' }));
  });
});

describe('decryptToken failures', () => {
  for (const opts of [{}, { role: 'pii' }, { curve: 'secp256k1' as const }, { curve: 'secp256k1' as const, role: 'pii' }]) {
    const label = `${opts.curve ?? 'p256'}${opts.role ? '+role' : ''}`;
    const token = encryptValue(SECRET, keyring.publicKeys(), opts);

    it(`${label}: a tampered IV, ephemeral key, ciphertext or tag is EV_DECRYPT_FAILED without secrets in the message`, () => {
      for (const part of ['iv', 'epk', 'ct', 'tag'] as const) {
        expect(decryptError(mutate(token, part)).code).toBe('EV_DECRYPT_FAILED');
      }
    });

    it(`${label}: a truncated ciphertext and a token for another keyring fail the same way`, () => {
      const t = parseEv(token);
      expect(decryptError(formatEv({ ...t, ciphertext: t.ciphertext.subarray(1) })).code).toBe('EV_DECRYPT_FAILED');
      expect(decryptError(token, Keyring.generate()).code).toBe('EV_DECRYPT_FAILED');
    });
  }

  it('refuses a number value whose authenticated text is not a JSON number (no JSON injection)', () => {
    // Tk9D's AAD does not cover the type segment: anyone can turn a string value into a "number" one.
    const t = parseEv(encryptValue('1, "admin": true', keyring.publicKeys()));
    const forged = formatEv({ ...t, type: 'number' });
    expect(decryptError(forged).reason).toBe('NOT_A_JSON_NUMBER');
    const forgedBool = formatEv({ ...t, type: 'boolean' });
    expect(decryptError(forgedBool).reason).toBe('NOT_A_BOOLEAN');
  });

  it('gives every reason the same code and message; only the operator fields (reason, detail) tell them apart', () => {
    const values = failingValues(keyring);
    const errors = Object.entries(values).map(([reason, token]) => [reason, decryptError(token)] as const);
    for (const [reason, err] of errors) {
      expect(err, reason).toBeInstanceOf(EvDecryptError);
      expect(err.reason).toBe(reason);
      expect({ code: err.code, message: err.message, status: err.status }).toEqual({ code: 'EV_DECRYPT_FAILED', message: EV_DECRYPT_MESSAGE, status: 422 });
      expect(err.detail).toMatch(/^(Tk9D|QkTC)(:number|:boolean)? value, p256 key [0-9a-f]{16}$/);
    }
    expect(new Set(errors.map(([, e]) => e.reason)).size).toBe(7);
    expect(EV_DECRYPT_MESSAGE).not.toMatch(/number|boolean|UTF-8|metadata|curve|Tk9D|key [0-9a-f]/);
  });

  it('binds the type into the AAD of role-carrying values', () => {
    const t = parseEv(encryptValue('12', keyring.publicKeys(), { role: 'r' }));
    expect(decryptError(formatEv({ ...t, type: 'number' })).code).toBe('EV_DECRYPT_FAILED');
  });

  it('throws EvFormatError (not EvDecryptError) for a string that is not a token', () => {
    expect(() => decryptToken('ev:nope:$', keyring)).toThrow(EvFormatError);
  });
});

describe('encryptValue', () => {
  it('refuses invalid data roles with EV_BAD_ROLE', () => {
    for (const role of ['UPPER', 'a'.repeat(21), 'sp ace', '', 'ü']) {
      expect(() => encryptValue('x', keyring.publicKeys(), { role })).toThrow(expect.objectContaining({ code: 'EV_BAD_ROLE' }));
    }
    expect(decryptTokenDetailed(encryptValue('x', keyring.publicKeys(), { role: 'a'.repeat(20) }), keyring).metadata?.role).toBe('a'.repeat(20));
  });

  it('refuses non-finite numbers, objects and bad recipient keys', () => {
    expect(() => encryptValue(NaN, keyring.publicKeys())).toThrow(expect.objectContaining({ code: 'EV_BAD_VALUE' }));
    expect(() => encryptValue({} as unknown as string, keyring.publicKeys())).toThrow(expect.objectContaining({ code: 'EV_BAD_VALUE' }));
    expect(() => encryptValue('x', new Uint8Array(33))).toThrow(expect.objectContaining({ code: 'EV_BAD_KEY' }));
    expect(() => encryptValue('x', { secp256k1: keyring.publicKeys().secp256k1 })).toThrow(expect.objectContaining({ code: 'EV_BAD_KEY' }));
  });

  it('writes debug: values that decrypt (with and without a role)', () => {
    for (const role of [undefined, 'r']) {
      const t = encryptValue(true, keyring.publicKeys(), { debug: true, ...(role ? { role } : {}) });
      expect(t.startsWith('ev:debug:')).toBe(true);
      expect(decryptToken(t, keyring)).toBe(true);
    }
  });

  it('round-trips arbitrary strings, finite numbers and booleans on both curves', () => {
    fc.assert(
      fc.property(
        fc.oneof(fc.string({ unit: 'grapheme' }).map((s) => s.trim()), fc.double({ noNaN: true, noDefaultInfinity: true }), fc.integer(), fc.boolean()),
        fc.constantFrom('p256', 'secp256k1'),
        fc.option(fc.constantFrom('pii', 'x-1'), { nil: undefined }),
        (value, curve, role) => {
          const t = encryptValue(value, keyring.publicKeys(), { curve, ...(role ? { role } : {}) });
          const back = decryptToken(t, keyring);
          expect(back).toBe(Object.is(value, -0) ? 0 : value);
        },
      ),
      { numRuns: 60 },
    );
  });
});

describe('metadata codec', () => {
  it('encodes the SDK layout and reads other integer widths', () => {
    const m = encodeMetadata('role-1', 1_700_000_000);
    expect(decodeMetadata(m)).toEqual({ role: 'role-1', origin: 5, encryptedAt: 1_700_000_000 });
    // map16, str8 key, uint64 timestamp, unknown key with nil
    const other = Uint8Array.from([0xde, 0, 3, 0xd9, 2, 0x64, 0x72, 0xa1, 0x78, 0xa2, 0x65, 0x74, 0xcf, 0, 0, 0, 0, 0x65, 0x53, 0xf1, 0x00, 0xa1, 0x7a, 0xc0]);
    expect(decodeMetadata(other)).toEqual({ role: 'x', encryptedAt: 0x6553f100 });
    expect(decodeMetadata(Uint8Array.from([0x81, 0xa2, 0x64]))).toBeNull();
    expect(decodeMetadata(Uint8Array.from([0x90]))).toBeNull();
  });
});
