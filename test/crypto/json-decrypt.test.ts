import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { EvDecryptError } from '../../src/crypto/errors.ts';
import { decryptToken, encryptValue } from '../../src/crypto/ev-format.ts';
import { countHeaderTokens, countJsonTokens, decryptHeaderValue, decryptJsonTokens, encryptJsonText, walkDecrypt } from '../../src/crypto/json-decrypt.ts';
import { countJsonValues } from '../../src/crypto/json-encrypt.ts';
import { Keyring } from '../../src/crypto/keyring.ts';
import { sdkFor } from './sdk.ts';

const keyring = Keyring.generate();
const enc = (v: string | number | boolean, role?: string): string => encryptValue(v, keyring.publicKeys(), role ? { role } : {});

describe('decryptJsonTokens', () => {
  it('replaces tokens by typed JSON values inside nested structures', () => {
    const doc = { a: enc('text'), b: [enc(123), { c: enc(true), d: [enc(false), enc(-1.5e-3)] }], plain: 'x', n: 5, z: null };
    const out = decryptJsonTokens(JSON.stringify(doc, null, 2), keyring);
    expect(out.count).toBe(5);
    expect(JSON.parse(out.json)).toEqual({ a: 'text', b: [123, { c: true, d: [false, -1.5e-3] }], plain: 'x', n: 5, z: null });
    expect(out.json).toContain('"b": [\n    123,');
  });

  it('escapes decrypted strings properly (quotes, backslashes, controls, unicode)', () => {
    const nasty = 'he said "x" \\ \n\t\u0001 ☃ 𝄞 \u2028 end';
    const out = decryptJsonTokens(JSON.stringify({ v: enc(nasty), w: enc('}, "admin": true, "x": {') }), keyring);
    expect(JSON.parse(out.json)).toEqual({ v: nasty, w: '}, "admin": true, "x": {' });
  });

  it('keeps the exact digits of decrypted numbers', () => {
    expect(decryptJsonTokens(`[${JSON.stringify(enc(1))}]`, keyring).json).toBe('[1]');
    const exact = encryptJsonText('12345678901234567890.50', keyring).json;
    expect(decryptJsonTokens(exact, keyring).json).toBe('12345678901234567890.50');
  });

  it('leaves non-token strings alone: prefix-only, bad grammar, unsupported version, tokens inside larger strings', () => {
    const good = enc('v');
    const doc = JSON.stringify({
      a: 'ev:not a token:$',
      b: good.replace('Tk9D', 'T1JL'),
      c: `prefix ${good}`,
      d: `${good} suffix`,
      e: 'ev:',
      f: good.slice(0, -2),
    });
    expect(decryptJsonTokens(doc, keyring)).toEqual({ json: doc, count: 0 });
  });

  it('does not mistake an escaped quote followed by a token for a string start', () => {
    const good = enc('v');
    const doc = JSON.stringify({ a: `x\\"${good}` }); // the string content contains \" then the token text
    expect(decryptJsonTokens(doc, keyring).count).toBe(0);
    const doc2 = `{"a":"x\\\\","b":"${good}"}`; // escaped backslash then end of string: the next string is a token
    expect(JSON.parse(decryptJsonTokens(doc2, keyring).json)).toEqual({ a: 'x\\', b: 'v' });
  });

  it('decodes JSON escapes inside a token string (PHP writes \\/)', () => {
    let good = enc('slashy');
    while (!good.includes('/')) good = enc('slashy');
    const doc = `{"v":"${good.replaceAll('/', '\\/')}"}`;
    expect(JSON.parse(decryptJsonTokens(doc, keyring).json)).toEqual({ v: 'slashy' });
  });

  it('leaves a token used as an object key as it is (a key is structure): only values are decrypted', () => {
    // Failed before the fix: keys were decrypted too, the number token becoming the string key "7".
    const [key, inner] = [enc(7), enc('k')];
    const doc = `{${JSON.stringify(key)}: ${JSON.stringify(enc(8))}, "n": {${JSON.stringify(inner)} :\n${JSON.stringify(enc(true))}}}`;
    const out = decryptJsonTokens(doc, keyring);
    expect(JSON.parse(out.json)).toEqual({ [key]: 8, n: { [inner]: true } });
    expect(out.count).toBe(2);
    expect(countJsonTokens(doc)).toBe(2);
    // Decoded JSON (walkDecrypt) keeps its keys too: both paths give the same value.
    expect(walkDecrypt(JSON.parse(doc), keyring)).toEqual(JSON.parse(out.json));
  });

  it('throws EvDecryptError (status 422) for a valid token that does not decrypt', () => {
    const foreign = encryptValue('secret-value', Keyring.generate().publicKeys());
    let caught: unknown;
    try {
      decryptJsonTokens(JSON.stringify({ ok: enc('fine'), bad: foreign }), keyring);
    } catch (err) {
      caught = err;
    }
    expect(caught).toBeInstanceOf(EvDecryptError);
    expect((caught as EvDecryptError).status).toBe(422);
    expect((caught as Error).message).not.toContain('fine');
  });

  it('returns the input unchanged (same string) when there is no ev: at all', () => {
    const s = JSON.stringify({ a: 'b'.repeat(1000) });
    expect(decryptJsonTokens(s, keyring).json).toBe(s);
  });

  it('decrypts a JSON body produced by the real SDK', async () => {
    const body = JSON.stringify(await sdkFor(keyring, 'prime256v1').encrypt({ card: '4242', cvc: 123, save: true }, 'pci'));
    expect(JSON.parse(decryptJsonTokens(body, keyring).json)).toEqual({ card: '4242', cvc: 123, save: true });
  });
});

describe('decryptHeaderValue', () => {
  it('replaces tokens anywhere in the value by their text', () => {
    const out = decryptHeaderValue(`Bearer ${enc('tok-123')}, n=${enc(5)}`, keyring);
    expect(out).toEqual({ value: 'Bearer tok-123, n=5', count: 2 });
    expect(decryptHeaderValue('plain ev:value', keyring)).toEqual({ value: 'plain ev:value', count: 0 });
  });

  it('refuses decrypted text that would inject header lines', () => {
    for (const bad of ['a\r\nx-admin: 1', 'nul\u0000', '東京']) {
      expect(() => decryptHeaderValue(enc(bad), keyring)).toThrow(expect.objectContaining({ code: 'EV_DECRYPT_FAILED', reason: 'UNSAFE_HEADER_VALUE' }));
    }
  });
});

describe('encryptJsonText and walkDecrypt', () => {
  it('encrypts every value leaf, keeps keys, null and layout', () => {
    const text = '{ "a": "x", "b": [1, -2.5e3, true, false, null], "c": {"d": "q\\"uote"} }';
    const out = encryptJsonText(text, keyring);
    expect(out.count).toBe(6);
    const parsed = JSON.parse(out.json) as { a: string; b: unknown[]; c: { d: string } };
    expect(parsed.b[4]).toBeNull();
    expect(Object.keys(parsed)).toEqual(['a', 'b', 'c']);
    expect(decryptToken(parsed.c.d, keyring)).toBe('q"uote');
    expect(walkDecrypt(parsed, keyring)).toEqual(JSON.parse(text));
    expect(decryptJsonTokens(out.json, keyring).json).toBe('{ "a": "x", "b": [1, -2.5e3, true, false, null], "c": {"d": "q\\"uote"} }');
  });

  it('walkDecrypt refuses absurd nesting with a typed error instead of overflowing the stack', () => {
    const deep = JSON.parse('['.repeat(5000) + ']'.repeat(5000)) as unknown;
    expect(() => walkDecrypt(deep, keyring)).toThrow(expect.objectContaining({ code: 'EV_BAD_VALUE' }));
  });
});

describe('countJsonTokens / countHeaderTokens', () => {
  it('count exactly what decryption would decrypt, without decrypting (a token for another keyring counts too)', () => {
    const other = Keyring.generate();
    const escaped = JSON.stringify(enc('slashes')).replaceAll('/', '\\/');
    const doc = `{${JSON.stringify(enc('key'))}: ${JSON.stringify(enc(1))}, "list": [${escaped}, "ev:Tk9D:x:$", "ev:nope", ${JSON.stringify(enc(true))}], "plain": "ev: not a token :$"}`;
    expect(countJsonTokens(doc)).toBe(3); // the key's token is not decrypted, so not counted
    expect(decryptJsonTokens(doc, keyring).count).toBe(3);
    expect(countJsonTokens(JSON.stringify([encryptValue(1, other.publicKeys())]))).toBe(1);
    expect(countJsonTokens('{"a": 1}')).toBe(0);
    const header = `Bearer ${enc('t')}, ${enc(2)} ev:Tk9D:x:$`;
    expect(countHeaderTokens(header)).toBe(2);
    expect(decryptHeaderValue(header, keyring).count).toBe(2);
  });

  it('stops counting once past stopAfter', () => {
    const doc = JSON.stringify(Array.from({ length: 20 }, (_, i) => enc(i)));
    expect(countJsonTokens(doc, 5)).toBe(6);
    expect(countJsonTokens(doc, 0)).toBe(1);
    expect(countJsonTokens(doc)).toBe(20);
  });
});

describe('countJsonValues', () => {
  it('counts exactly the values encryptJsonText encrypts, for arbitrary JSON', () => {
    fc.assert(
      fc.property(fc.jsonValue(), (v) => {
        const text = JSON.stringify(v);
        expect(countJsonValues(text)).toBe(encryptJsonText(text, keyring).count);
      }),
      { numRuns: 200 },
    );
  });

  it('stops counting past stopAfter', () => {
    expect(countJsonValues(JSON.stringify(Array(100).fill(1)), 3)).toBe(4);
  });
});
