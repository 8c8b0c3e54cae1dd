import { describe, expect, it } from 'vitest';
import { bytesKey, fromBase64, fromHex, toBase64, toHex, equalBytes, concatBytes } from '../../src/util/bytes.ts';

describe('bytes helpers', () => {
  it('round-trips hex and base64 against Buffer for every length up to 64', () => {
    for (let n = 0; n <= 64; n++) {
      const b = new Uint8Array(n).map((_, i) => (i * 37 + n) & 0xff);
      expect(toHex(b)).toBe(Buffer.from(b).toString('hex'));
      expect(fromHex(toHex(b))).toEqual(b);
      const b64 = Buffer.from(b).toString('base64');
      expect(toBase64(b)).toBe(b64);
      expect(fromBase64(b64)).toEqual(b);
      expect(fromBase64(b64.replace(/=+$/, ''))).toEqual(b);
      expect(toBase64(b, false)).toBe(b64.replace(/=+$/, ''));
    }
  });

  it('bytesKey is one unit per byte, so distinct byte strings (any length, past its 8 KiB chunks) give distinct keys', () => {
    const big = Uint8Array.from({ length: 20_000 }, (_, i) => (i * 7) & 0xff);
    const other = big.slice();
    other[19_999] = other[19_999]! ^ 1;
    expect(bytesKey(big)).toHaveLength(20_000);
    expect(bytesKey(big)).not.toBe(bytesKey(other));
    expect([...bytesKey(Uint8Array.of(0, 0x80, 0xff))].map((c) => c.charCodeAt(0))).toEqual([0, 0x80, 0xff]);
    expect(bytesKey(Uint8Array.of(1, 2))).not.toBe(bytesKey(Uint8Array.of(1, 2, 0)));
  });

  it('fromHex decodes every digit pair in either case, and refuses every other character in either place', () => {
    const digits = '0123456789abcdefABCDEF';
    for (const a of digits) for (const b of digits) expect(fromHex(a + b)).toEqual(Uint8Array.of(parseInt(a + b, 16)));
    for (let c = 0; c < 0x180; c++) {
      const ch = String.fromCharCode(c);
      if (digits.includes(ch)) continue;
      expect(() => fromHex(`0${ch}`)).toThrow(TypeError);
      expect(() => fromHex(`${ch}0`)).toThrow(TypeError);
    }
    // Characters whose code is a digit's plus 256 (or 65536 as a pair) must not alias it.
    expect(() => fromHex('\u0130\u0131')).toThrow(TypeError);
    expect(() => fromHex('a\u{1F600}')).toThrow(TypeError);
  });

  it('rejects malformed hex and base64', () => {
    expect(() => fromHex('abc')).toThrow(TypeError);
    expect(() => fromHex('zz')).toThrow(TypeError);
    expect(() => fromBase64('a')).toThrow(TypeError);
    expect(() => fromBase64('ab$d')).toThrow(TypeError);
    expect(() => fromBase64('ab=d')).toThrow(TypeError);
  });

  it('compares and concatenates', () => {
    expect(equalBytes(new Uint8Array([1, 2]), new Uint8Array([1, 2]))).toBe(true);
    expect(equalBytes(new Uint8Array([1, 2]), new Uint8Array([1, 3]))).toBe(false);
    expect(equalBytes(new Uint8Array([1]), new Uint8Array([1, 2]))).toBe(false);
    expect(concatBytes(new Uint8Array([1]), new Uint8Array([]), new Uint8Array([2, 3]))).toEqual(new Uint8Array([1, 2, 3]));
  });
});
