// The metadata block of role-carrying `ev:` values (QkTC, S0lS). The plaintext is
//
//   u16 little-endian metadataLength ‖ metadata (msgpack) ‖ data
//
// and the metadata is a msgpack map, written by @evervault/sdk as exactly
//   fixmap(3) { fixstr "dr": fixstr role, fixstr "eo": positive fixint origin, fixstr "et": uint32 epochSeconds }
// We write that layout byte for byte. The reader accepts any map of string keys to scalar values (other
// SDKs may choose other integer widths), ignores keys it does not know, and rejects anything else.

export interface EvMetadata {
  /** Data role (`dr`), if present. */
  role?: string;
  /** Encryption origin (`eo`): which SDK produced the value. */
  origin?: number;
  /** Encryption time (`et`), Unix seconds. */
  encryptedAt?: number;
}

/** `eo` written by us: 5, the value the Node SDK writes (keeps our values format-identical to the SDK's). */
export const ORIGIN_NODE = 5;

const KEY_DR = [0xa2, 0x64, 0x72];
const KEY_EO = [0xa2, 0x65, 0x6f];
const KEY_ET = [0xa2, 0x65, 0x74];

/** Encodes the metadata block (role must already be validated: `^[a-z0-9-]{1,20}$`). */
export function encodeMetadata(role: string, epochSeconds: number, origin = ORIGIN_NODE): Uint8Array {
  const out: number[] = [0x83, ...KEY_DR, 0xa0 | role.length];
  for (let i = 0; i < role.length; i++) out.push(role.charCodeAt(i));
  out.push(...KEY_EO, origin & 0x7f);
  const t = epochSeconds >>> 0;
  out.push(...KEY_ET, 0xce, (t >>> 24) & 0xff, (t >>> 16) & 0xff, (t >>> 8) & 0xff, t & 0xff);
  return Uint8Array.from(out);
}

/** Prefixes `data` with the u16le length and the metadata block. */
export function wrapWithMetadata(metadata: Uint8Array, data: Uint8Array): Uint8Array {
  const out = new Uint8Array(2 + metadata.length + data.length);
  out[0] = metadata.length & 0xff;
  out[1] = metadata.length >> 8;
  out.set(metadata, 2);
  out.set(data, 2 + metadata.length);
  return out;
}

/** Splits a decrypted plaintext into its metadata and data. Returns null when the layout is not valid. */
export function unwrapMetadata(plaintext: Uint8Array): { metadata: EvMetadata; data: Uint8Array } | null {
  if (plaintext.length < 2) return null;
  const len = plaintext[0]! | (plaintext[1]! << 8);
  if (2 + len > plaintext.length) return null;
  const metadata = decodeMetadata(plaintext.subarray(2, 2 + len));
  if (metadata === null) return null;
  return { metadata, data: plaintext.subarray(2 + len) };
}

type Scalar = string | number | boolean | null;

const UTF8 = new TextDecoder('utf-8', { fatal: true });

/** Reads a msgpack map of string → scalar. Returns null on anything else or on trailing bytes. */
export function decodeMetadata(bytes: Uint8Array): EvMetadata | null {
  const r = new Reader(bytes);
  const first = r.byte();
  let count: number;
  if (first === null) return null;
  if ((first & 0xf0) === 0x80) count = first & 0x0f;
  else if (first === 0xde) {
    const n = r.uint(2);
    if (n === null) return null;
    count = n;
  } else return null;
  const out: EvMetadata = {};
  for (let i = 0; i < count; i++) {
    const key = r.scalar();
    const value = r.scalar();
    if (typeof key !== 'string' || value === undefined) return null;
    if (key === 'dr' && typeof value === 'string') out.role = value;
    else if (key === 'eo' && typeof value === 'number') out.origin = value;
    else if (key === 'et' && typeof value === 'number') out.encryptedAt = value;
  }
  return r.done() ? out : null;
}

class Reader {
  private pos = 0;
  constructor(private readonly b: Uint8Array) {}

  done(): boolean {
    return this.pos === this.b.length;
  }

  byte(): number | null {
    return this.pos < this.b.length ? this.b[this.pos++]! : null;
  }

  uint(n: 1 | 2 | 4 | 8): number | null {
    if (this.pos + n > this.b.length) return null;
    let v = 0;
    for (let i = 0; i < n; i++) v = v * 256 + this.b[this.pos++]!;
    return v;
  }

  int(n: 1 | 2 | 4 | 8): number | null {
    const u = this.uint(n);
    if (u === null) return null;
    const half = 2 ** (8 * n - 1);
    return u >= half ? u - 2 * half : u;
  }

  str(len: number | null): string | undefined {
    if (len === null || this.pos + len > this.b.length) return undefined;
    const start = this.pos;
    this.pos += len;
    let ascii = '';
    for (let i = start; i < this.pos; i++) {
      const c = this.b[i]!;
      if (c >= 0x80) {
        try {
          return UTF8.decode(this.b.subarray(start, this.pos));
        } catch {
          return undefined;
        }
      }
      ascii += String.fromCharCode(c);
    }
    return ascii;
  }

  float(n: 4 | 8): number | undefined {
    if (this.pos + n > this.b.length) return undefined;
    const view = new DataView(this.b.buffer, this.b.byteOffset + this.pos, n);
    this.pos += n;
    return n === 4 ? view.getFloat32(0) : view.getFloat64(0);
  }

  /** One scalar value; undefined for unsupported types or truncation. */
  scalar(): Scalar | undefined {
    const t = this.byte();
    if (t === null) return undefined;
    if (t <= 0x7f) return t;
    if (t >= 0xe0) return t - 0x100;
    if ((t & 0xe0) === 0xa0) return this.str(t & 0x1f);
    const orUndef = (v: number | null): number | undefined => (v === null ? undefined : v);
    switch (t) {
      case 0xc0:
        return null;
      case 0xc2:
        return false;
      case 0xc3:
        return true;
      case 0xcc:
        return orUndef(this.uint(1));
      case 0xcd:
        return orUndef(this.uint(2));
      case 0xce:
        return orUndef(this.uint(4));
      case 0xcf:
        return orUndef(this.uint(8));
      case 0xd0:
        return orUndef(this.int(1));
      case 0xd1:
        return orUndef(this.int(2));
      case 0xd2:
        return orUndef(this.int(4));
      case 0xd3:
        return orUndef(this.int(8));
      case 0xca:
        return this.float(4);
      case 0xcb:
        return this.float(8);
      case 0xd9:
        return this.str(this.uint(1));
      case 0xda:
        return this.str(this.uint(2));
      case 0xdb:
        return this.str(this.uint(4));
      default:
        return undefined;
    }
  }
}
