// The int-array loops of the wire codec: byte fields as CBOR arrays of uints (serde's Vec<u8>, WIRE.md §4), the
// hot path of the compat encoding. SWAR counting and writing, the decode loop, and the hook for a faster (native)
// implementation. Browser-safe (no node:*, no Buffer).
import type { Cursor } from './cursor.ts';

/** For a big-endian u32 of four bytes: 0x80 in each byte that is ≥ 24 (SWAR; no carries between bytes). */
function bigMask(x: number): number {
  return (((x & 0x7f7f7f7f) + 0x68686868) | x) & 0x80808080;
}
const ALL_BIG = 0x80808080 | 0;

/**
 * A faster implementation of the int-array loops (countBig, writeIntArray, readIntArray) that node-only code may
 * install: src/wire/native-int-array.ts puts the C addon here. This file stays browser-safe: it never loads
 * anything; without a codec (the default, and always in browsers) the JS loops run.
 */
export interface IntArrayCodec {
  /** Elements of `src` that are ≥ 24. */
  count(src: Uint8Array): number;
  /** Writes `src` as int-array elements (no array head) at dst[dstOffset..]; returns the end offset. */
  encode(src: Uint8Array, dst: Uint8Array, dstOffset: number): number;
  /**
   * Decodes up to `n` (< 2^26) elements at src[srcOffset..] into dst[dstOffset..] while each is `v` (v < 24) or
   * `0x18 v`; stops at any other element and at the end of `src`. Returns decoded + consumed × 2^26 (elements
   * written, input bytes read). The JS reader continues from there (non-minimal heads, errors).
   */
  decode(src: Uint8Array, srcOffset: number, n: number, dst: Uint8Array, dstOffset: number): number;
}

/** Default for setIntArrayCodec: below ~256 bytes the ~0.2 µs of an N-API call outweighs the faster loop. */
export const INT_ARRAY_CODEC_THRESHOLD = 256;
const DECODE_SCALE = 0x4000000; // 2^26
let intCodec: IntArrayCodec | null = null;
let intCodecMin = Infinity;

/**
 * Installs `codec` for byte fields of at least `threshold` bytes (elements, on decode), or with null restores
 * the JS loops. Process-wide. The codec must give exactly what the JS loops give.
 */
export function setIntArrayCodec(codec: IntArrayCodec | null, threshold: number = INT_ARRAY_CODEC_THRESHOLD): void {
  if (!Number.isSafeInteger(threshold) || threshold < 0) throw new RangeError(`threshold must be an integer ≥ 0, got ${threshold}`);
  intCodec = codec;
  intCodecMin = codec === null ? Infinity : threshold;
}

/** The installed codec, or null. */
export function getIntArrayCodec(): IntArrayCodec | null {
  return intCodec;
}

/** Elements ≥ 24, which take two bytes (0x18 v) in an int array; the others take one. */
export function countBig(b: Uint8Array): number {
  const n = b.length;
  if (n >= intCodecMin) return intCodec!.count(b);
  let big = 0;
  let i = 0;
  if (n >= 8) {
    const src = new DataView(b.buffer, b.byteOffset, n);
    for (; i + 4 <= n; i += 4) big += Math.imul(bigMask(src.getUint32(i)) >>> 7, 0x01010101) >>> 24;
  }
  for (; i < n; i++) if (b[i]! >= 24) big++;
  return big;
}

/**
 * Writes `b` as the elements of a CBOR int array (head already written) at out[p..]; returns the end.
 * `big` = countBig(b). Four elements at a time when all four are ≥ 24 (one u32 read, two u32 writes),
 * else one element at a time until the next such block.
 */
export function writeIntArray(out: Uint8Array, p: number, b: Uint8Array, big: number): number {
  const n = b.length;
  if (big === 0) {
    out.set(b, p); // every element < 24 encodes as itself
    return p + n;
  }
  if (n >= intCodecMin) return intCodec!.encode(b, out, p);
  const dst = new DataView(out.buffer, out.byteOffset, out.byteLength);
  const src = new DataView(b.buffer, b.byteOffset, n);
  let i = 0;
  while (i < n) {
    for (; i + 4 <= n; i += 4) {
      const x = src.getUint32(i);
      if (bigMask(x) !== ALL_BIG) break;
      // [0x18, b0, 0x18, b1] and [0x18, b2, 0x18, b3], big-endian
      dst.setUint32(p, 0x18001800 | ((x >>> 8) & 0xff0000) | ((x >>> 16) & 0xff));
      dst.setUint32(p + 4, 0x18001800 | ((x << 8) & 0xff0000) | (x & 0xff));
      p += 8;
    }
    if (i < n) {
      const v = b[i++]!;
      if (v < 24) {
        out[p++] = v;
      } else {
        out[p] = 0x18;
        out[p + 1] = v;
        p += 2;
      }
    }
  }
  return p;
}

/**
 * The `n` elements of an int array whose head the cursor has read (c.need(n) already checked) at c.p; advances
 * c.p. Non-minimal and invalid elements go through c.byteElement.
 */
export function readIntArray(c: Cursor, name: string, n: number): Uint8Array {
  const out = new Uint8Array(n);
  const dv = c.view();
  const end = c.len;
  let p = c.p;
  let i = 0;
  // The installed codec (if any) for long arrays; after it stops, the element at p is one the fast paths
  // below would not take either: byteElement decodes it (or throws), then the codec again while it pays.
  let codec = n >= intCodecMin && n < DECODE_SCALE ? intCodec : null;
  while (codec !== null) {
    const r = codec.decode(c.b, p, n - i, out, i);
    const done = r % DECODE_SCALE;
    i += done;
    p += (r - done) / DECODE_SCALE;
    if (i === n) break;
    c.p = p;
    out[i] = c.byteElement(name, i);
    i++;
    p = c.p;
    // a run shorter than the threshold (e.g. every other element non-minimal): the JS loop, without calls
    if (done < intCodecMin || n - i < intCodecMin) codec = null;
  }
  while (i < n) {
    // Fast path: two `0x18 v` elements per big-endian u32 read.
    const pairs = Math.min((n - i) >> 1, (end - p) >> 2);
    for (let k = 0; k < pairs; k++) {
      const w = dv.getUint32(p);
      if ((w & 0xff00ff00) !== 0x18001800) break;
      out[i] = (w >>> 16) & 0xff;
      out[i + 1] = w & 0xff;
      i += 2;
      p += 4;
    }
    if (i === n) break;
    // One element: `v` (< 24) or `0x18 v` from a u16 read; anything else (the last input byte, a
    // non-minimal int, an invalid element) through the general reader.
    if (p + 1 < end) {
      const w = dv.getUint16(p);
      if (w < 0x1800) {
        out[i++] = w >> 8;
        p += 1;
        continue;
      }
      if (w < 0x1900) {
        out[i++] = w & 0xff;
        p += 2;
        continue;
      }
    }
    c.p = p;
    out[i] = c.byteElement(name, i);
    i++;
    p = c.p;
  }
  c.p = p;
  return out;
}
