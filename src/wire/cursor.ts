// The decoder's cursor over one CBOR message (WIRE.md §4): heads, skipping ignored values, and the typed field
// readers, strict about everything the profile forbids. Browser-safe (no node:*, no Buffer).
import { decodeError, WireError } from './errors.ts';
import { readIntArray } from './int-array.ts';
import { KEY_KIND, KEY_NAMES, Kind, MAX_SKIP_DEPTH, NONCE_LEN } from './schema.ts';
import type { K } from './schema.ts';

const textDecoder = new TextDecoder('utf-8', { fatal: true });

const MAJOR_UINT = 0;
const MAJOR_BYTES = 2;
export const MAJOR_TEXT = 3;
const MAJOR_ARRAY = 4;
export const MAJOR_MAP = 5;
const MAJOR_SIMPLE = 7;

export function badField(message: string): WireError {
  return new WireError('WIRE_BAD_FIELD', message);
}

export function describeMajor(major: number, arg: number): string {
  switch (major) {
    case 0:
      return 'unsigned int';
    case 1:
      return 'negative int';
    case 2:
      return 'byte string';
    case 3:
      return 'text string';
    case 4:
      return 'array';
    case 5:
      return 'map';
    default:
      return arg === 20 || arg === 21 ? 'bool' : arg === 22 ? 'null' : 'undefined';
  }
}

export class Cursor {
  readonly b: Uint8Array;
  readonly len: number;
  p = 0;
  /** Argument of the last head read (value, length or count; 20..23 for false/true/null/undefined). */
  arg = 0;
  /** Set when any byte field was a byte string. */
  bstr = false;
  readonly copy: boolean;

  constructor(b: Uint8Array, copy: boolean) {
    this.b = b;
    this.len = b.length;
    this.copy = copy;
  }

  truncated(what: string): WireError {
    return decodeError('truncated', `input ends inside ${what} at offset ${this.p} of ${this.len}`);
  }

  /** Reads one head; returns the major type and sets `arg`. Rejects everything the profile forbids. */
  head(): number {
    const b = this.b;
    if (this.p >= this.len) throw this.truncated('an item');
    const at = this.p;
    const ib = b[this.p++]!;
    const major = ib >> 5;
    const info = ib & 31;
    if (major === 6) throw decodeError('tag', `CBOR tags are not allowed (offset ${at})`);
    if (major === MAJOR_SIMPLE) {
      if (info >= 20 && info <= 23) {
        this.arg = info;
        return major;
      }
      if (info >= 25 && info <= 27) throw decodeError('float', `floats are not allowed (offset ${at})`);
      if (info === 31) throw decodeError('simple', `unexpected break (offset ${at})`);
      if (info >= 28) throw decodeError('reserved', `reserved additional info ${info} (offset ${at})`);
      throw decodeError('simple', `simple value ${info === 24 ? b[this.p] ?? '?' : info} is not allowed (offset ${at})`);
    }
    if (info < 24) {
      this.arg = info;
      return major;
    }
    const rem = this.len - this.p;
    switch (info) {
      case 24:
        if (rem < 1) throw this.truncated('an integer');
        this.arg = b[this.p]!;
        this.p += 1;
        return major;
      case 25:
        if (rem < 2) throw this.truncated('an integer');
        this.arg = (b[this.p]! << 8) | b[this.p + 1]!;
        this.p += 2;
        return major;
      case 26:
        if (rem < 4) throw this.truncated('an integer');
        this.arg = ((b[this.p]! << 24) | (b[this.p + 1]! << 16) | (b[this.p + 2]! << 8) | b[this.p + 3]!) >>> 0;
        this.p += 4;
        return major;
      case 27: {
        if (rem < 8) throw this.truncated('an integer');
        const p = this.p;
        const hi = ((b[p]! << 24) | (b[p + 1]! << 16) | (b[p + 2]! << 8) | b[p + 3]!) >>> 0;
        const lo = ((b[p + 4]! << 24) | (b[p + 5]! << 16) | (b[p + 6]! << 8) | b[p + 7]!) >>> 0;
        this.arg = hi * 0x100000000 + lo; // ≥ 2^53 when the true value is (rounding is monotonic)
        this.p += 8;
        return major;
      }
      case 31:
        if (major >= MAJOR_BYTES && major <= MAJOR_MAP) {
          throw decodeError('indefinite', `indefinite-length items are not allowed (offset ${at})`);
        }
        throw decodeError('reserved', `additional info 31 on major type ${major} (offset ${at})`);
      default:
        throw decodeError('reserved', `reserved additional info ${info} (offset ${at})`);
    }
  }

  /** Checks that `n` more bytes are available (n from a length head). */
  need(n: number, what: string): void {
    if (n > this.len - this.p) throw this.truncated(what);
  }

  /** UTF-8 text of `n` bytes at the cursor; advances. */
  utf8(n: number, what: string): string {
    this.need(n, what);
    const start = this.p;
    this.p += n;
    try {
      return textDecoder.decode(this.b.subarray(start, start + n));
    } catch {
      throw decodeError('utf8', `${what} is not valid UTF-8 (offset ${start})`);
    }
  }

  /** Validates and steps over one well-formed value (an ignored field). */
  skip(depth: number): void {
    if (depth > MAX_SKIP_DEPTH) throw decodeError('depth', `nesting deeper than ${MAX_SKIP_DEPTH} in an ignored value`);
    const major = this.head();
    const n = this.arg;
    switch (major) {
      case MAJOR_BYTES:
        this.need(n, 'a byte string');
        this.p += n;
        return;
      case MAJOR_TEXT:
        this.utf8(n, 'a text string');
        return;
      case MAJOR_ARRAY:
        this.need(n, 'an array'); // every item takes at least one byte
        for (let i = 0; i < n; i++) this.skip(depth + 1);
        return;
      case MAJOR_MAP:
        this.need(n * 2, 'a map');
        for (let i = 0; i < 2 * n; i++) this.skip(depth + 1);
        return;
      default:
        return; // ints, false/true/null/undefined
    }
  }

  // --- typed field readers (called with the cursor on the value) ---

  uint(name: string): number {
    const major = this.head();
    if (major !== MAJOR_UINT) throw badField(`${name} must be an unsigned int, found ${describeMajor(major, this.arg)}`);
    if (this.arg > Number.MAX_SAFE_INTEGER) {
      throw new WireError('WIRE_INT_RANGE', `${name} exceeds 2^53-1 (the largest id this implementation accepts)`);
    }
    return this.arg;
  }

  bool(name: string): boolean {
    const major = this.head();
    if (major !== MAJOR_SIMPLE || (this.arg !== 20 && this.arg !== 21)) {
      throw badField(`${name} must be a bool, found ${describeMajor(major, this.arg)}`);
    }
    return this.arg === 21;
  }

  text(name: string): string {
    const major = this.head();
    if (major !== MAJOR_TEXT) throw badField(`${name} must be a text string, found ${describeMajor(major, this.arg)}`);
    return this.utf8(this.arg, name);
  }

  texts(name: string): string[] {
    const major = this.head();
    if (major !== MAJOR_ARRAY) throw badField(`${name} must be an array of text, found ${describeMajor(major, this.arg)}`);
    const n = this.arg;
    this.need(n, name);
    const out: string[] = [];
    for (let i = 0; i < n; i++) out.push(this.text(`${name}[${i}]`));
    return out;
  }

  /** A byte field: an array of uints 0..255 (compat) or a byte string (ours). */
  bytes(name: string): Uint8Array {
    const major = this.head();
    const n = this.arg;
    if (major === MAJOR_BYTES) {
      this.need(n, name);
      const start = this.p;
      this.p += n;
      this.bstr = true;
      return this.copy ? this.b.slice(start, start + n) : this.b.subarray(start, start + n);
    }
    if (major !== MAJOR_ARRAY) {
      throw badField(`${name} must be an array of bytes or a byte string, found ${describeMajor(major, n)}`);
    }
    this.need(n, name); // every element takes at least one byte: no allocation beyond the input size
    return readIntArray(this, name, n);
  }

  #dv: DataView | null = null;
  view(): DataView {
    return (this.#dv ??= new DataView(this.b.buffer, this.b.byteOffset, this.b.byteLength));
  }

  /** Slow path of one int-array element (non-minimal or invalid). */
  byteElement(name: string, i: number): number {
    const major = this.head();
    if (major !== MAJOR_UINT) throw badField(`${name}[${i}] must be an unsigned int, found ${describeMajor(major, this.arg)}`);
    if (this.arg > 255) throw new WireError('WIRE_INT_RANGE', `${name}[${i}] is ${this.arg}, above 255`);
    return this.arg;
  }

  bytes32(name: string): Uint8Array {
    const v = this.bytes(name);
    if (v.length !== NONCE_LEN) throw badField(`${name} must be ${NONCE_LEN} bytes, found ${v.length}`);
    return v;
  }

  half(): 'Write' | 'Both' {
    const s = this.text('half');
    if (s !== 'Write' && s !== 'Both') throw badField(`half must be "Write" or "Both", found ${JSON.stringify(s.slice(0, 40))}`);
    return s;
  }

  /** Reads the value of a known key into vals[key]. */
  field(key: K, vals: unknown[]): void {
    const name = KEY_NAMES[key]!;
    switch (KEY_KIND[key]) {
      case Kind.uint:
        vals[key] = this.uint(name);
        return;
      case Kind.bytes:
        vals[key] = this.bytes(name);
        return;
      case Kind.bytes32:
        vals[key] = this.bytes32(name);
        return;
      case Kind.half:
        vals[key] = this.half();
        return;
      case Kind.text:
        vals[key] = this.text(name);
        return;
      case Kind.bool:
        vals[key] = this.bool(name);
        return;
      case Kind.texts:
        vals[key] = this.texts(name);
        return;
    }
  }
}
