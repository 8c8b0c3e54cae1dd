// Tiny hand CBOR builders (hex strings) for crafting exact — often hostile — inputs in the wire tests.
import { expect } from 'vitest';
import { toHex, utf8 } from '../../src/util/bytes.ts';
import { WireError } from '../../src/wire/errors.ts';
import type { WireDecodeDetail, WireErrorCode } from '../../src/wire/errors.ts';

/** Minimal head of major type `major` with argument n (n < 2^53). */
export function head(major: number, n: number): string {
  const mt = major << 5;
  const hx = (v: number, bytes: number) => v.toString(16).padStart(bytes * 2, '0');
  if (n < 24) return hx(mt | n, 1);
  if (n < 0x100) return hx(mt | 24, 1) + hx(n, 1);
  if (n < 0x10000) return hx(mt | 25, 1) + hx(n, 2);
  if (n < 0x100000000) return hx(mt | 26, 1) + hx(n, 4);
  return hx(mt | 27, 1) + hx(Math.floor(n / 0x100000000), 4) + hx(n >>> 0, 4);
}
export const u = (n: number): string => head(0, n);
export const t = (s: string): string => {
  const b = utf8.encode(s);
  return head(3, b.length) + toHex(b);
};
/** Text with raw (possibly invalid UTF-8) bytes. */
export const traw = (hex: string): string => head(3, hex.length / 2) + hex;
export const bs = (hex: string): string => head(2, hex.length / 2) + hex;
export const arr = (...items: string[]): string => head(4, items.length) + items.join('');
/** Byte field as an int array of the bytes in `hex`. */
export const ints = (hex: string): string => arr(...(hex.match(/../g) ?? []).map((b) => u(parseInt(b, 16))));
export const map = (...kv: string[]): string => {
  if (kv.length % 2 !== 0) throw new Error('map needs key/value pairs');
  return head(5, kv.length / 2) + kv.join('');
};

/** Asserts that fn throws a WireError with this code (and detail, for WIRE_DECODE). */
export function expectWireError(fn: () => unknown, code: WireErrorCode, detail?: WireDecodeDetail): WireError {
  let caught: unknown;
  try {
    fn();
  } catch (err) {
    caught = err;
  }
  expect(caught).toBeInstanceOf(WireError);
  const err = caught as WireError;
  expect({ code: err.code, detail: err.detail }).toEqual({ code, detail: detail ?? (code === 'WIRE_DECODE' ? err.detail : undefined) });
  return err;
}
