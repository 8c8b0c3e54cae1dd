/**
 * A strict DER reader for the few structures the attestation chain needs (certificates, ECDSA signatures).
 * Definite, minimal lengths only; single-byte tags only (X.509 uses no others); every read is bounds-checked
 * and a violation throws DerError. Hand-written because asn1js — a general BER library — costs ~30 ms of
 * cold start to parse the five certificates of a first Nitro chain, which is most of a client's first
 * verification; this reader does it in well under 1 ms. Browser-safe.
 */

export class DerError extends Error {
  override name = 'DerError';
  readonly code = 'DER_MALFORMED';
}

/** One element: its tag, its whole encoding (`tlv`) and its contents (`value`), as views into the input. */
export interface Tlv {
  tag: number;
  tlv: Uint8Array;
  value: Uint8Array;
}

export const TAG = {
  BOOLEAN: 0x01,
  INTEGER: 0x02,
  BIT_STRING: 0x03,
  OCTET_STRING: 0x04,
  OID: 0x06,
  UTF8_STRING: 0x0c,
  PRINTABLE_STRING: 0x13,
  TELETEX_STRING: 0x14,
  IA5_STRING: 0x16,
  UTC_TIME: 0x17,
  GENERALIZED_TIME: 0x18,
  UNIVERSAL_STRING: 0x1c,
  BMP_STRING: 0x1e,
  SEQUENCE: 0x30,
  SET: 0x31,
} as const;

/** Reads consecutive elements from `buf[pos, end)`. */
export class DerReader {
  private pos: number;
  constructor(
    private readonly buf: Uint8Array,
    start = 0,
    private readonly end = buf.length,
  ) {
    this.pos = start;
  }

  /** Reads the contents of a constructed element as a new reader. */
  static of(el: Tlv): DerReader {
    return new DerReader(el.value);
  }

  done(): boolean {
    return this.pos >= this.end;
  }

  peekTag(): number | undefined {
    return this.done() ? undefined : this.buf[this.pos];
  }

  next(expectTag?: number, what = 'element'): Tlv {
    const { buf, end } = this;
    const start = this.pos;
    if (start + 2 > end) throw new DerError(`${what}: truncated`);
    const tag = buf[start]!;
    if ((tag & 0x1f) === 0x1f) throw new DerError(`${what}: multi-byte tags are not supported`);
    if (expectTag !== undefined && tag !== expectTag) {
      throw new DerError(`${what}: expected tag 0x${expectTag.toString(16)}, found 0x${tag.toString(16)}`);
    }
    let len = buf[start + 1]!;
    let at = start + 2;
    if (len & 0x80) {
      const n = len & 0x7f;
      if (n === 0) throw new DerError(`${what}: indefinite length is not DER`);
      if (n > 4) throw new DerError(`${what}: length of ${n} bytes is too large`);
      if (at + n > end) throw new DerError(`${what}: truncated length`);
      if (buf[at] === 0) throw new DerError(`${what}: non-minimal length`);
      len = 0;
      for (let i = 0; i < n; i++) len = len * 256 + buf[at + i]!;
      if (len < 0x80) throw new DerError(`${what}: non-minimal length`);
      at += n;
    }
    if (at + len > end) throw new DerError(`${what}: ${len}-byte contents run past the end`);
    this.pos = at + len;
    return { tag, tlv: buf.subarray(start, at + len), value: buf.subarray(at, at + len) };
  }

  /** Reads the next element only when it carries `tag`. */
  optional(tag: number, what?: string): Tlv | undefined {
    return this.peekTag() === tag ? this.next(tag, what) : undefined;
  }

  expectDone(what: string): void {
    if (!this.done()) throw new DerError(`${what}: ${this.end - this.pos} unexpected trailing byte(s)`);
  }
}

/** Parses exactly one element spanning all of `der`. */
export function readOne(der: Uint8Array, expectTag: number, what: string): Tlv {
  const r = new DerReader(der);
  const el = r.next(expectTag, what);
  if (!r.done()) throw new DerError(`${der.length - el.tlv.length} trailing byte(s) after ${what}`);
  return el;
}

export function readOid(el: Tlv, what = 'OBJECT IDENTIFIER'): string {
  const v = el.value;
  if (el.tag !== TAG.OID || v.length === 0 || (v[v.length - 1]! & 0x80) !== 0) throw new DerError(`${what}: malformed`);
  const parts: number[] = [];
  let n = 0;
  for (let i = 0; i < v.length; i++) {
    if (n === 0 && v[i] === 0x80) throw new DerError(`${what}: non-minimal sub-identifier`);
    n = n * 128 + (v[i]! & 0x7f);
    if (n > Number.MAX_SAFE_INTEGER / 128) throw new DerError(`${what}: sub-identifier too large`);
    if ((v[i]! & 0x80) === 0) {
      if (parts.length === 0) parts.push(n < 80 ? Math.floor(n / 40) : 2, n < 80 ? n % 40 : n - 80);
      else parts.push(n);
      n = 0;
    }
  }
  return parts.join('.');
}

/** A non-negative INTEGER small enough for a JS number (versions, path lengths). */
export function readSmallUint(el: Tlv, what: string): number {
  const v = el.value;
  if (el.tag !== TAG.INTEGER || v.length === 0 || v.length > 6) throw new DerError(`${what}: not a small INTEGER`);
  if ((v[0]! & 0x80) !== 0) throw new DerError(`${what}: negative`);
  if (v.length > 1 && v[0] === 0 && (v[1]! & 0x80) === 0) throw new DerError(`${what}: non-minimal INTEGER`);
  let n = 0;
  for (const b of v) n = n * 256 + b;
  return n;
}

/** A positive INTEGER's magnitude without the sign byte (ECDSA r and s). */
export function readUnsignedInteger(el: Tlv, what: string): Uint8Array {
  let v = el.value;
  if (el.tag !== TAG.INTEGER || v.length === 0 || (v[0]! & 0x80) !== 0) throw new DerError(`${what}: not a positive INTEGER`);
  if (v.length > 1 && v[0] === 0) {
    if ((v[1]! & 0x80) === 0) throw new DerError(`${what}: non-minimal INTEGER`);
    v = v.subarray(1);
  }
  return v;
}

export function readBoolean(el: Tlv, what: string): boolean {
  if (el.tag !== TAG.BOOLEAN || el.value.length !== 1 || (el.value[0] !== 0 && el.value[0] !== 0xff)) {
    throw new DerError(`${what}: not a DER BOOLEAN`);
  }
  return el.value[0] === 0xff;
}

/**
 * BIT STRING contents after the unused-bits byte (which must be 0..7, and 0 when empty). The unused bits must be
 * zero (X.690 11.2.1): otherwise a reader that looks at whole bytes (keyUsage) would see bits OpenSSL ignores.
 */
export function readBitString(el: Tlv, what: string): { bits: Uint8Array; unused: number } {
  const v = el.value;
  if (el.tag !== TAG.BIT_STRING || v.length === 0 || v[0]! > 7 || (v.length === 1 && v[0] !== 0)) throw new DerError(`${what}: malformed BIT STRING`);
  if ((v[v.length - 1]! & ((1 << v[0]!) - 1)) !== 0) throw new DerError(`${what}: BIT STRING with non-zero unused bits`);
  return { bits: v.subarray(1), unused: v[0]! };
}

const TIME_RE = { [TAG.UTC_TIME]: /^(\d{2})(\d{2})(\d{2})(\d{2})(\d{2})(\d{2})Z$/, [TAG.GENERALIZED_TIME]: /^(\d{4})(\d{2})(\d{2})(\d{2})(\d{2})(\d{2})Z$/ };

/** UTCTime or GeneralizedTime in RFC 5280's DER profile (seconds present, "Z", no fraction). */
export function readTime(el: Tlv, what: string): Date {
  const re = el.tag === TAG.UTC_TIME || el.tag === TAG.GENERALIZED_TIME ? TIME_RE[el.tag] : undefined;
  const m = re?.exec(String.fromCharCode(...el.value));
  if (!m) throw new DerError(`${what}: not an RFC 5280 time`);
  let year = Number(m[1]);
  if (el.tag === TAG.UTC_TIME) year += year < 50 ? 2000 : 1900;
  const [mo, d, h, mi, s] = [m[2], m[3], m[4], m[5], m[6]].map(Number) as [number, number, number, number, number];
  // setUTCFullYear, not Date.UTC: that maps years 0–99 to 1900–1999 (a GeneralizedTime of 0049 is not 1949).
  const date = new Date(0);
  date.setUTCFullYear(year, mo - 1, d);
  date.setUTCHours(h, mi, s, 0);
  // Reject what Date.UTC would silently roll over (month 13, 31 February, 24:00).
  if (date.getUTCMonth() !== mo - 1 || date.getUTCDate() !== d || date.getUTCHours() !== h || date.getUTCMinutes() !== mi || s > 59) {
    throw new DerError(`${what}: not a valid date`);
  }
  return date;
}

const utf8 = new TextDecoder('utf-8', { fatal: true });

/** A directory string's text (the string types X.509 names use). */
export function readString(el: Tlv, what: string): string {
  const v = el.value;
  switch (el.tag) {
    case TAG.UTF8_STRING:
      try {
        return utf8.decode(v);
      } catch {
        throw new DerError(`${what}: invalid UTF-8`);
      }
    case TAG.PRINTABLE_STRING:
    case TAG.IA5_STRING:
    case TAG.TELETEX_STRING:
      return String.fromCharCode(...v);
    case TAG.BMP_STRING: {
      if (v.length % 2 !== 0) throw new DerError(`${what}: odd-length BMPString`);
      let s = '';
      for (let i = 0; i < v.length; i += 2) s += String.fromCharCode((v[i]! << 8) | v[i + 1]!);
      return s;
    }
    case TAG.UNIVERSAL_STRING: {
      if (v.length % 4 !== 0) throw new DerError(`${what}: malformed UniversalString`);
      let s = '';
      for (let i = 0; i < v.length; i += 4) {
        const cp = ((v[i]! << 24) | (v[i + 1]! << 16) | (v[i + 2]! << 8) | v[i + 3]!) >>> 0;
        if (cp > 0x10ffff) throw new DerError(`${what}: invalid code point in UniversalString`);
        s += String.fromCodePoint(cp);
      }
      return s;
    }
    default:
      throw new DerError(`${what}: unsupported string type 0x${el.tag.toString(16)}`);
  }
}
