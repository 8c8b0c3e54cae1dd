/**
 * A strict, bounded CBOR decoder for untrusted attestation input (COSE_Sign1, the attestation payload, NSM
 * replies). Browser-safe. It accepts only what those formats use and rejects everything else:
 * - definite lengths only (no indefinite strings, arrays or maps), no floats, no tags (tag 18 is handled by
 *   the COSE layer before decoding), simple values only false/true/null;
 * - map keys are unsigned/negative integers or text, duplicates rejected; maps keep their wire order;
 * - every length is checked against the bytes that remain before anything is allocated; nesting is bounded;
 * - text must be valid UTF-8; integers outside ±2^53 are rejected (nothing here needs them);
 * - the input must be exactly one item: trailing bytes are an error.
 * Byte strings are copies (never views into the input).
 */
import { utf8 } from '../util/bytes.ts';

export type CborKey = number | string;
export type CborValue = number | string | boolean | null | Uint8Array | CborValue[] | CborMap;
/** A decoded CBOR map: insertion order = wire order. */
export type CborMap = Map<CborKey, CborValue>;

export class CborDecodeError extends Error {
  override name = 'CborDecodeError';
}

const MAX_DEPTH = 16;

/** Decodes exactly one CBOR item spanning all of `bytes`. Throws CborDecodeError. */
export function decodeStrict(bytes: Uint8Array): CborValue {
  const r = new Reader(bytes);
  const value = r.item(0);
  if (r.pos !== bytes.length) throw new CborDecodeError(`${bytes.length - r.pos} trailing byte(s) after the CBOR item`);
  return value;
}

class Reader {
  pos = 0;
  constructor(private readonly b: Uint8Array) {}

  private need(n: number): void {
    if (n > this.b.length - this.pos) {
      throw new CborDecodeError(`truncated: need ${n} byte(s) at offset ${this.pos}, ${this.b.length - this.pos} left`);
    }
  }

  private byte(): number {
    this.need(1);
    return this.b[this.pos++]!;
  }

  /** The argument of a head with additional info `ai`. */
  private arg(ai: number): number {
    if (ai < 24) return ai;
    if (ai === 24) return this.byte();
    if (ai === 25) {
      this.need(2);
      const v = (this.b[this.pos]! << 8) | this.b[this.pos + 1]!;
      this.pos += 2;
      return v;
    }
    if (ai === 26) {
      this.need(4);
      const v = ((this.b[this.pos]! << 24) >>> 0) + ((this.b[this.pos + 1]! << 16) | (this.b[this.pos + 2]! << 8) | this.b[this.pos + 3]!);
      this.pos += 4;
      return v;
    }
    if (ai === 27) {
      this.need(8);
      const hi = ((this.b[this.pos]! << 24) >>> 0) + ((this.b[this.pos + 1]! << 16) | (this.b[this.pos + 2]! << 8) | this.b[this.pos + 3]!);
      const lo = ((this.b[this.pos + 4]! << 24) >>> 0) + ((this.b[this.pos + 5]! << 16) | (this.b[this.pos + 6]! << 8) | this.b[this.pos + 7]!);
      if (hi >= 0x200000) throw new CborDecodeError(`integer at offset ${this.pos - 1} exceeds 2^53`);
      this.pos += 8;
      return hi * 0x100000000 + lo;
    }
    if (ai === 31) throw new CborDecodeError(`indefinite length at offset ${this.pos - 1} is not accepted`);
    throw new CborDecodeError(`reserved additional info ${ai} at offset ${this.pos - 1}`);
  }

  private length(ai: number): number {
    const n = this.arg(ai);
    this.need(n);
    return n;
  }

  item(depth: number): CborValue {
    if (depth > MAX_DEPTH) throw new CborDecodeError(`nesting deeper than ${MAX_DEPTH}`);
    const start = this.pos;
    const head = this.byte();
    const major = head >> 5;
    const ai = head & 0x1f;
    switch (major) {
      case 0:
        return this.arg(ai);
      case 1:
        return -1 - this.arg(ai);
      case 2: {
        const n = this.length(ai);
        const out = this.b.slice(this.pos, this.pos + n);
        this.pos += n;
        return out;
      }
      case 3: {
        const n = this.length(ai);
        let s: string;
        try {
          s = utf8.decode(this.b.subarray(this.pos, this.pos + n));
        } catch {
          throw new CborDecodeError(`invalid UTF-8 in text string at offset ${start}`);
        }
        this.pos += n;
        return s;
      }
      case 4: {
        const n = this.arg(ai);
        this.need(n); // every item takes at least one byte: bounds the allocation
        const out: CborValue[] = [];
        for (let i = 0; i < n; i++) out.push(this.item(depth + 1));
        return out;
      }
      case 5: {
        const n = this.arg(ai);
        this.need(n * 2);
        const out: CborMap = new Map();
        for (let i = 0; i < n; i++) {
          const keyAt = this.pos;
          const key = this.item(depth + 1);
          if (typeof key !== 'number' && typeof key !== 'string') {
            throw new CborDecodeError(`map key at offset ${keyAt} is not an integer or text`);
          }
          if (out.has(key)) throw new CborDecodeError(`duplicate map key ${JSON.stringify(key)} at offset ${keyAt}`);
          out.set(key, this.item(depth + 1));
        }
        return out;
      }
      case 6:
        throw new CborDecodeError(`unexpected tag at offset ${start}`);
      default:
        if (ai === 20) return false;
        if (ai === 21) return true;
        if (ai === 22) return null;
        throw new CborDecodeError(`unsupported simple value or float (0x${head.toString(16)}) at offset ${start}`);
    }
  }
}

/** Describes a decoded value's type for error messages ("byte string (12 bytes)", "map", ...). */
export function describe(v: CborValue | undefined): string {
  if (v === undefined) return 'absent';
  if (v === null) return 'null';
  if (v instanceof Uint8Array) return `byte string (${v.length} bytes)`;
  if (v instanceof Map) return `map (${v.size} entries)`;
  if (Array.isArray(v)) return `array (${v.length} items)`;
  if (typeof v === 'string') return `text (${v.length} chars)`;
  return `${typeof v} ${String(v)}`;
}
