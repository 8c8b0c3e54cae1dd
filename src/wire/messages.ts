// The CBOR messages of the Enclavia-compatible wire (WIRE.md §4), hand-written for the fixed schema.
// Browser-safe (no node:*, no Buffer). A generic CBOR library is ~100× slower on the int-array byte fields that
// serde produces for Vec<u8>; this codec sizes the output exactly, encodes into one allocation and decodes with
// an index cursor and tight loops for the arrays.
//
// Encoding (what the Rust reference emits): a definite-length map with text keys, "type" first, then the fields
// in schema order; minimal-length unsigned ints; byte fields as arrays of uints ('array', the compat default) or
// as byte strings ('bstr', our extension, WIRE.md §5).
//
// Decoding is liberal where serde is (any key order, unknown keys ignored, ints in non-minimal form, byte fields
// as int arrays or byte strings) and strict everywhere else: every malformed or forbidden input (tags,
// indefinite lengths, floats, trailing bytes, duplicate keys, non-UTF-8 text, non-text keys, nesting deeper than
// MAX_SKIP_DEPTH in an ignored value) is a WireError — decode never throws anything else.
//
// Ids are u64 on the wire and JS numbers here: ids above Number.MAX_SAFE_INTEGER (2^53 − 1) are rejected with
// WIRE_INT_RANGE on decode and WIRE_ENCODE on encode. Our own client counts from 1 and never gets near that.
import { concatBytes } from '../util/bytes.ts';
import { decodeError, WireError } from './errors.ts';

/** 'array' = CBOR array of uints (compat default), 'bstr' = CBOR byte string (our extension). */
export type ByteEncoding = 'array' | 'bstr';

export type ClientMessage =
  | { type: 'RequestAttestation' }
  | { type: 'GetControlNonce' }
  | { type: 'Data'; id: number; payload: Uint8Array }
  | { type: 'OpenStream'; id: number; payload: Uint8Array }
  | { type: 'StreamData'; id: number; payload: Uint8Array }
  | { type: 'StreamClose'; id: number; half: 'Write' | 'Both' }
  | { type: 'Control'; payload: Uint8Array; signature: Uint8Array };

export type ServerMessage =
  | { type: 'Attestation'; data: Uint8Array; control_nonce: Uint8Array; features?: string[] }
  | { type: 'Data'; id: number; payload: Uint8Array }
  | { type: 'Error'; id: number; message: string }
  | { type: 'StreamData'; id: number; payload: Uint8Array }
  | { type: 'StreamClose'; id: number }
  | { type: 'ControlNonce'; nonce: Uint8Array }
  | { type: 'ControlResult'; success: boolean; message: string };

export interface DecodeOptions {
  /**
   * Byte fields sent as CBOR byte strings are returned as views into the input (no copy) by default; the
   * caller must then not modify the input while it uses them. Pass `copy: true` to get owned copies.
   * Byte fields sent as int arrays are always fresh arrays.
   */
  copy?: boolean;
}

/** Largest CBOR plaintext that fits one frame: 65535 − 16-byte AEAD tag. */
export const MAX_MESSAGE_LEN = 65519;
/** Length of `control_nonce` and `nonce`. */
export const NONCE_LEN = 32;
/** Nesting bound for ignored (unknown-key) values. */
export const MAX_SKIP_DEPTH = 16;

// ---------------------------------------------------------------------------------------------------------
// Schema tables

const enum K {
  type,
  id,
  payload,
  half,
  signature,
  data,
  control_nonce,
  features,
  message,
  success,
  nonce,
}
const KEY_NAMES = ['type', 'id', 'payload', 'half', 'signature', 'data', 'control_nonce', 'features', 'message', 'success', 'nonce'];
const KEY_COUNT = KEY_NAMES.length;

const enum Kind {
  uint,
  bytes,
  bytes32,
  half,
  text,
  bool,
  texts,
}
const KEY_KIND: Kind[] = [
  Kind.text, // type (decoded specially)
  Kind.uint,
  Kind.bytes,
  Kind.half,
  Kind.bytes,
  Kind.bytes,
  Kind.bytes32,
  Kind.texts,
  Kind.text,
  Kind.bool,
  Kind.bytes32,
];

const textEncoder = new TextEncoder();
const textDecoder = new TextDecoder('utf-8', { fatal: true });

const KEY_RAW = KEY_NAMES.map((k) => textEncoder.encode(k));
/** The CBOR encoding of each key (text header + UTF-8), ready to copy. */
const KEY_CBOR = KEY_RAW.map((raw) => concatBytes(textHeader(raw.length), raw));
const WRITE_RAW = textEncoder.encode('Write');
const BOTH_RAW = textEncoder.encode('Both');

interface Variant {
  name: string;
  raw: Uint8Array;
  /** Map header is written separately; this is `"type": "<name>"`. */
  prefix: Uint8Array;
  required: K[];
  optional: K[];
  /** Bit per key the variant uses. */
  mask: number;
}

function variant(name: string, required: K[], optional: K[] = []): Variant {
  const raw = textEncoder.encode(name);
  let mask = 0;
  for (const k of [...required, ...optional]) mask |= 1 << k;
  return { name, raw, prefix: concatBytes(KEY_CBOR[K.type]!, textHeader(raw.length), raw), required, optional, mask };
}

const CLIENT_VARIANTS: Variant[] = [
  variant('RequestAttestation', []),
  variant('GetControlNonce', []),
  variant('Data', [K.id, K.payload]),
  variant('OpenStream', [K.id, K.payload]),
  variant('StreamData', [K.id, K.payload]),
  variant('StreamClose', [K.id, K.half]),
  variant('Control', [K.payload, K.signature]),
];
const SERVER_VARIANTS: Variant[] = [
  variant('Attestation', [K.data, K.control_nonce], [K.features]),
  variant('Data', [K.id, K.payload]),
  variant('Error', [K.id, K.message]),
  variant('StreamData', [K.id, K.payload]),
  variant('StreamClose', [K.id]),
  variant('ControlNonce', [K.nonce]),
  variant('ControlResult', [K.success, K.message]),
];
const CLIENT_BY_NAME = new Map(CLIENT_VARIANTS.map((v) => [v.name, v]));
const SERVER_BY_NAME = new Map(SERVER_VARIANTS.map((v) => [v.name, v]));

function textHeader(len: number): Uint8Array {
  const out = new Uint8Array(uintSize(len));
  writeHead(out, 0, 0x60, len);
  return out;
}

// ---------------------------------------------------------------------------------------------------------
// Encoder

/** Bytes of a CBOR head carrying `n` (minimal length). */
function uintSize(n: number): number {
  return n < 24 ? 1 : n < 0x100 ? 2 : n < 0x10000 ? 3 : n < 0x100000000 ? 5 : 9;
}

/** Writes a head of major type `mt` (already shifted: 0x00, 0x40, 0x60, 0x80, 0xa0) with argument n. */
function writeHead(out: Uint8Array, p: number, mt: number, n: number): number {
  if (n < 24) {
    out[p] = mt | n;
    return p + 1;
  }
  if (n < 0x100) {
    out[p] = mt | 24;
    out[p + 1] = n;
    return p + 2;
  }
  if (n < 0x10000) {
    out[p] = mt | 25;
    out[p + 1] = n >>> 8;
    out[p + 2] = n & 0xff;
    return p + 3;
  }
  if (n < 0x100000000) {
    out[p] = mt | 26;
    out[p + 1] = n >>> 24;
    out[p + 2] = (n >>> 16) & 0xff;
    out[p + 3] = (n >>> 8) & 0xff;
    out[p + 4] = n & 0xff;
    return p + 5;
  }
  const hi = Math.floor(n / 0x100000000);
  const lo = n >>> 0;
  out[p] = mt | 27;
  out[p + 1] = hi >>> 24;
  out[p + 2] = (hi >>> 16) & 0xff;
  out[p + 3] = (hi >>> 8) & 0xff;
  out[p + 4] = hi & 0xff;
  out[p + 5] = lo >>> 24;
  out[p + 6] = (lo >>> 16) & 0xff;
  out[p + 7] = (lo >>> 8) & 0xff;
  out[p + 8] = lo & 0xff;
  return p + 9;
}

/**
 * One field to encode; `size` is the encoded size of the value, filled in by the sizing pass. `n` is the
 * integer (uint), 1/0 (bool), or for a byte field the count of elements ≥ 24 (set by the sizing pass).
 */
interface EncField {
  key: K;
  kind: Kind;
  n: number;
  bytes: Uint8Array | null;
  list: Uint8Array[] | null;
  size: number;
}

function encodeError(message: string): WireError {
  return new WireError('WIRE_ENCODE', message);
}

function fId(v: unknown): EncField {
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0) {
    throw encodeError(`id must be an integer in 0..2^53-1, got ${typeof v === 'number' ? v : typeof v}`);
  }
  return { key: K.id, kind: Kind.uint, n: v, bytes: null, list: null, size: 0 };
}

function fBytes(key: K, v: unknown, exact?: number): EncField {
  if (!(v instanceof Uint8Array)) throw encodeError(`${KEY_NAMES[key]} must be a Uint8Array, got ${typeof v}`);
  if (exact !== undefined && v.length !== exact) {
    throw encodeError(`${KEY_NAMES[key]} must be ${exact} bytes, got ${v.length}`);
  }
  return { key, kind: Kind.bytes, n: 0, bytes: v, list: null, size: 0 };
}

function fText(key: K, v: unknown): EncField {
  if (typeof v !== 'string') throw encodeError(`${KEY_NAMES[key]} must be a string, got ${typeof v}`);
  return { key, kind: Kind.text, n: 0, bytes: textEncoder.encode(v), list: null, size: 0 };
}

function fHalf(v: unknown): EncField {
  if (v !== 'Write' && v !== 'Both') throw encodeError(`half must be "Write" or "Both", got ${JSON.stringify(v)}`);
  return { key: K.half, kind: Kind.text, n: 0, bytes: v === 'Write' ? WRITE_RAW : BOTH_RAW, list: null, size: 0 };
}

function fBool(key: K, v: unknown): EncField {
  if (typeof v !== 'boolean') throw encodeError(`${KEY_NAMES[key]} must be a boolean, got ${typeof v}`);
  return { key, kind: Kind.bool, n: v ? 1 : 0, bytes: null, list: null, size: 0 };
}

function fTexts(key: K, v: unknown): EncField {
  if (!Array.isArray(v) || !v.every((s) => typeof s === 'string')) {
    throw encodeError(`${KEY_NAMES[key]} must be an array of strings`);
  }
  return { key, kind: Kind.texts, n: 0, bytes: null, list: v.map((s: string) => textEncoder.encode(s)), size: 0 };
}

/** For a big-endian u32 of four bytes: 0x80 in each byte that is ≥ 24 (SWAR; no carries between bytes). */
function bigMask(x: number): number {
  return (((x & 0x7f7f7f7f) + 0x68686868) | x) & 0x80808080;
}
const ALL_BIG = 0x80808080 | 0;

/**
 * A faster implementation of the int-array loops (countBig, writeIntArray, the int-array branch of Cursor.bytes)
 * that node-only code may install: src/wire/native-int-array.ts puts the C addon here. This file stays
 * browser-safe: it never loads anything; without a codec (the default, and always in browsers) the JS loops run.
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
function countBig(b: Uint8Array): number {
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
function writeIntArray(out: Uint8Array, p: number, b: Uint8Array, big: number): number {
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

function valueSize(f: EncField, enc: ByteEncoding): number {
  switch (f.kind) {
    case Kind.uint:
      return uintSize(f.n);
    case Kind.bytes: {
      const b = f.bytes!;
      if (enc === 'bstr') return uintSize(b.length) + b.length;
      f.n = countBig(b);
      return uintSize(b.length) + b.length + f.n;
    }
    case Kind.text:
      return uintSize(f.bytes!.length) + f.bytes!.length;
    case Kind.bool:
      return 1;
    case Kind.texts: {
      let size = uintSize(f.list!.length);
      for (const t of f.list!) size += uintSize(t.length) + t.length;
      return size;
    }
    default:
      throw encodeError('internal: unexpected field kind');
  }
}

function writeValue(out: Uint8Array, p: number, f: EncField, enc: ByteEncoding): number {
  switch (f.kind) {
    case Kind.uint:
      return writeHead(out, p, 0x00, f.n);
    case Kind.bytes: {
      const b = f.bytes!;
      const n = b.length;
      if (enc === 'bstr') {
        p = writeHead(out, p, 0x40, n);
        out.set(b, p);
        return p + n;
      }
      p = writeHead(out, p, 0x80, n);
      return writeIntArray(out, p, b, f.n);
    }
    case Kind.text: {
      const t = f.bytes!;
      p = writeHead(out, p, 0x60, t.length);
      out.set(t, p);
      return p + t.length;
    }
    case Kind.bool:
      out[p] = f.n === 1 ? 0xf5 : 0xf4;
      return p + 1;
    case Kind.texts: {
      const list = f.list!;
      p = writeHead(out, p, 0x80, list.length);
      for (const t of list) {
        p = writeHead(out, p, 0x60, t.length);
        out.set(t, p);
        p += t.length;
      }
      return p;
    }
    default:
      throw encodeError('internal: unexpected field kind');
  }
}

function checkEncoding(enc: unknown): ByteEncoding {
  if (enc !== 'array' && enc !== 'bstr') throw encodeError(`byte encoding must be "array" or "bstr", got ${JSON.stringify(enc)}`);
  return enc;
}

function messageType(m: unknown): string {
  if (typeof m !== 'object' || m === null || typeof (m as { type?: unknown }).type !== 'string') {
    throw encodeError('message must be an object with a string "type"');
  }
  return (m as { type: string }).type;
}

function clientFields(m: ClientMessage): { v: Variant; fields: EncField[] } {
  const type = messageType(m);
  const v = CLIENT_BY_NAME.get(type);
  if (v === undefined) throw encodeError(`unknown client message type ${JSON.stringify(type.slice(0, 40))}`);
  const x = m as unknown as Record<string, unknown>;
  switch (type) {
    case 'RequestAttestation':
    case 'GetControlNonce':
      return { v, fields: [] };
    case 'Data':
    case 'OpenStream':
    case 'StreamData':
      return { v, fields: [fId(x.id), fBytes(K.payload, x.payload)] };
    case 'StreamClose':
      return { v, fields: [fId(x.id), fHalf(x.half)] };
    default: // Control
      return { v, fields: [fBytes(K.payload, x.payload), fBytes(K.signature, x.signature)] };
  }
}

function serverFields(m: ServerMessage): { v: Variant; fields: EncField[] } {
  const type = messageType(m);
  const v = SERVER_BY_NAME.get(type);
  if (v === undefined) throw encodeError(`unknown server message type ${JSON.stringify(type.slice(0, 40))}`);
  const x = m as unknown as Record<string, unknown>;
  switch (type) {
    case 'Attestation': {
      const fields = [fBytes(K.data, x.data), fBytes(K.control_nonce, x.control_nonce, NONCE_LEN)];
      if (x.features !== undefined) fields.push(fTexts(K.features, x.features));
      return { v, fields };
    }
    case 'Data':
    case 'StreamData':
      return { v, fields: [fId(x.id), fBytes(K.payload, x.payload)] };
    case 'Error':
      return { v, fields: [fId(x.id), fText(K.message, x.message)] };
    case 'StreamClose':
      return { v, fields: [fId(x.id)] };
    case 'ControlNonce':
      return { v, fields: [fBytes(K.nonce, x.nonce, NONCE_LEN)] };
    default: // ControlResult
      return { v, fields: [fBool(K.success, x.success), fText(K.message, x.message)] };
  }
}

function sizeOf(v: Variant, fields: EncField[], enc: ByteEncoding): number {
  let size = 1 + v.prefix.length; // map header (≤ 23 entries) + "type": name
  for (const f of fields) {
    f.size = valueSize(f, enc);
    size += KEY_CBOR[f.key]!.length + f.size;
  }
  return size;
}

function encode(v: Variant, fields: EncField[], enc: ByteEncoding): Uint8Array {
  const size = sizeOf(v, fields, enc);
  const out = new Uint8Array(size);
  const p = writeMessage(out, v, fields, enc, fields.length);
  if (p !== size) throw encodeError(`internal: encoded ${p} bytes, sized ${size}`);
  return out;
}

/** Writes the map head, the type and the first `count` fields at out[0..]; returns the end. */
function writeMessage(out: Uint8Array, v: Variant, fields: EncField[], enc: ByteEncoding, count: number): number {
  out[0] = 0xa0 | (fields.length + 1);
  out.set(v.prefix, 1);
  let p = 1 + v.prefix.length;
  for (let i = 0; i < count; i++) {
    const f = fields[i]!;
    const key = KEY_CBOR[f.key]!;
    out.set(key, p);
    p += key.length;
    p = writeValue(out, p, f, enc);
  }
  return p;
}

/** Below this, a byte-string payload is copied into the message: one small buffer beats two parts. */
const PARTS_MIN_PAYLOAD = 1024;

/**
 * The encoding as consecutive parts: for a byte-string payload that ends the message (Data, OpenStream,
 * StreamData in bstr), [everything up to the payload's head, the payload itself] — the payload is not copied;
 * otherwise one part. Their concatenation is exactly `encode`'s output.
 */
function encodeParts(v: Variant, fields: EncField[], enc: ByteEncoding): Uint8Array[] {
  const last = fields[fields.length - 1];
  if (enc !== 'bstr' || last === undefined || last.kind !== Kind.bytes || last.bytes!.length < PARTS_MIN_PAYLOAD) {
    return [encode(v, fields, enc)];
  }
  const payload = last.bytes!;
  const size = sizeOf(v, fields, enc);
  const head = new Uint8Array(size - payload.length);
  let p = writeMessage(head, v, fields, enc, fields.length - 1);
  const key = KEY_CBOR[last.key]!;
  head.set(key, p);
  p = writeHead(head, p + key.length, 0x40, payload.length);
  if (p !== head.length) throw encodeError(`internal: encoded a ${p}-byte head, sized ${head.length}`);
  return [head, payload];
}

/** CBOR of a client→agent message. `enc` defaults to 'array' (what compat peers understand). */
export function encodeClientMessage(m: ClientMessage, enc: ByteEncoding = 'array'): Uint8Array {
  const { v, fields } = clientFields(m);
  return encode(v, fields, checkEncoding(enc));
}

/** CBOR of an agent→client message. `enc` defaults to 'array' (what compat peers understand). */
export function encodeServerMessage(m: ServerMessage, enc: ByteEncoding = 'array'): Uint8Array {
  const { v, fields } = serverFields(m);
  return encode(v, fields, checkEncoding(enc));
}

/**
 * `encodeClientMessage` as consecutive parts whose concatenation is its output: a large byte-string payload
 * comes back as its own part, uncopied (for CipherState.encryptParts, which encrypts parts in sequence).
 */
export function encodeClientMessageParts(m: ClientMessage, enc: ByteEncoding = 'array'): Uint8Array[] {
  const { v, fields } = clientFields(m);
  return encodeParts(v, fields, checkEncoding(enc));
}

/**
 * `encodeClientMessage` written into `out` at `offset` (e.g. a reused frame buffer: no allocation); returns the
 * end offset. Throws WIRE_ENCODE (nothing written) when the message does not fit.
 */
export function encodeClientMessageInto(m: ClientMessage, enc: ByteEncoding, out: Uint8Array, offset: number): number {
  const { v, fields } = clientFields(m);
  const e = checkEncoding(enc);
  const size = sizeOf(v, fields, e);
  if (!Number.isSafeInteger(offset) || offset < 0 || offset + size > out.length) {
    throw encodeError(`a ${size}-byte message does not fit at offset ${offset} of a ${out.length}-byte buffer`);
  }
  const end = offset + writeMessage(offset === 0 ? out : out.subarray(offset), v, fields, e, fields.length);
  if (end !== offset + size) throw encodeError(`internal: encoded ${end - offset} bytes, sized ${size}`);
  return end;
}

/** `encodeServerMessage` as consecutive parts (see encodeClientMessageParts). */
export function encodeServerMessageParts(m: ServerMessage, enc: ByteEncoding = 'array'): Uint8Array[] {
  const { v, fields } = serverFields(m);
  return encodeParts(v, fields, checkEncoding(enc));
}

/** Encoded length of a client message without encoding it (compare with MAX_MESSAGE_LEN). */
export function clientMessageSize(m: ClientMessage, enc: ByteEncoding = 'array'): number {
  const { v, fields } = clientFields(m);
  return sizeOf(v, fields, checkEncoding(enc));
}

/** Encoded length of a server message without encoding it (compare with MAX_MESSAGE_LEN). */
export function serverMessageSize(m: ServerMessage, enc: ByteEncoding = 'array'): number {
  const { v, fields } = serverFields(m);
  return sizeOf(v, fields, checkEncoding(enc));
}

// ---------------------------------------------------------------------------------------------------------
// Decoder

const MAJOR_UINT = 0;
const MAJOR_BYTES = 2;
const MAJOR_TEXT = 3;
const MAJOR_ARRAY = 4;
const MAJOR_MAP = 5;
const MAJOR_SIMPLE = 7;

function badField(message: string): WireError {
  return new WireError('WIRE_BAD_FIELD', message);
}

function describeMajor(major: number, arg: number): string {
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

class Cursor {
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
    const out = new Uint8Array(n);
    const dv = this.view();
    const end = this.len;
    let p = this.p;
    let i = 0;
    // The installed codec (if any) for long arrays; after it stops, the element at p is one the fast paths
    // below would not take either: byteElement decodes it (or throws), then the codec again while it pays.
    let codec = n >= intCodecMin && n < DECODE_SCALE ? intCodec : null;
    while (codec !== null) {
      const r = codec.decode(this.b, p, n - i, out, i);
      const done = r % DECODE_SCALE;
      i += done;
      p += (r - done) / DECODE_SCALE;
      if (i === n) break;
      this.p = p;
      out[i] = this.byteElement(name, i);
      i++;
      p = this.p;
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
      this.p = p;
      out[i] = this.byteElement(name, i);
      i++;
      p = this.p;
    }
    this.p = p;
    return out;
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

function sameBytes(b: Uint8Array, at: number, raw: Uint8Array): boolean {
  for (let i = 0; i < raw.length; i++) if (b[at + i] !== raw[i]) return false;
  return true;
}

/** Index of the known key whose UTF-8 is b[at..at+n), or -1. */
function knownKey(b: Uint8Array, at: number, n: number): number {
  for (let k = 0; k < KEY_COUNT; k++) {
    const raw = KEY_RAW[k]!;
    if (raw.length === n && sameBytes(b, at, raw)) return k;
  }
  return -1;
}

function decodeMessage(bytes: Uint8Array, variants: Variant[], side: string, opts: DecodeOptions | undefined): { v: Variant; vals: unknown[]; bstr: boolean } {
  if (!(bytes instanceof Uint8Array)) throw decodeError('not-map', `input must be a Uint8Array, got ${typeof bytes}`);
  const c = new Cursor(bytes, opts?.copy === true);
  const b = bytes;
  const top = c.head();
  if (top !== MAJOR_MAP) throw decodeError('not-map', `a message must be a CBOR map, found ${describeMajor(top, c.arg)}`);
  const entries = c.arg;
  c.need(entries * 2, 'the message map');
  let v: Variant | null = null;
  let seen = 0;
  const vals: unknown[] = new Array(KEY_COUNT);
  /** Offsets of values seen before "type" (-1: none). */
  let early: number[] | null = null;
  let unknown: Set<string> | null = null;
  for (let e = 0; e < entries; e++) {
    const keyAt = c.p;
    const km = c.head();
    if (km !== MAJOR_TEXT) throw decodeError('key-type', `map keys must be text, found ${describeMajor(km, c.arg)} (offset ${keyAt})`);
    const kn = c.arg;
    c.need(kn, 'a map key');
    const key = knownKey(b, c.p, kn);
    if (key < 0) {
      const name = c.utf8(kn, 'a map key');
      unknown ??= new Set();
      if (unknown.has(name)) throw decodeError('duplicate-key', `duplicate key ${JSON.stringify(name.slice(0, 40))}`);
      unknown.add(name);
      c.skip(1);
      continue;
    }
    c.p += kn;
    const bit = 1 << key;
    if (seen & bit) throw decodeError('duplicate-key', `duplicate key "${KEY_NAMES[key]}"`);
    seen |= bit;
    if (key === K.type) {
      const tm = c.head();
      if (tm !== MAJOR_TEXT) throw badField(`type must be a text string, found ${describeMajor(tm, c.arg)}`);
      const tn = c.arg;
      c.need(tn, 'the type');
      for (const cand of variants) {
        if (cand.raw.length === tn && sameBytes(b, c.p, cand.raw)) {
          v = cand;
          break;
        }
      }
      if (v === null) {
        const name = c.utf8(tn, 'the type');
        throw new WireError('WIRE_UNKNOWN_TYPE', `unknown ${side} message type ${JSON.stringify(name.slice(0, 40))}`);
      }
      c.p += tn;
      if (early !== null) {
        const resume = c.p;
        for (let k = 1; k < KEY_COUNT; k++) {
          const at = early[k]!;
          if (at >= 0 && v.mask & (1 << k)) {
            c.p = at;
            c.field(k, vals);
          }
        }
        c.p = resume;
      }
      continue;
    }
    if (v === null) {
      // The type is not known yet: validate and remember where the value is.
      early ??= new Array<number>(KEY_COUNT).fill(-1);
      early[key] = c.p;
      c.skip(1);
    } else if (v.mask & bit) {
      c.field(key, vals);
    } else {
      c.skip(1); // a known key that this variant does not use: ignored like any unknown key
    }
  }
  if (c.p !== c.len) throw decodeError('trailing', `${c.len - c.p} bytes after the message`);
  if (v === null) throw new WireError('WIRE_MISSING_FIELD', 'missing field "type"');
  for (const k of v.required) {
    if (!(seen & (1 << k))) throw new WireError('WIRE_MISSING_FIELD', `${side} message ${v.name} is missing field "${KEY_NAMES[k]}"`);
  }
  return { v, vals, bstr: c.bstr };
}

/** Any non-WireError escaping the decoder would be a bug; keep the contract (WireError only) regardless. */
function guard<T>(fn: () => T): T {
  try {
    return fn();
  } catch (err) {
    if (err instanceof WireError) throw err;
    throw new WireError('WIRE_DECODE', `internal: decoder failed: ${(err as Error)?.message ?? String(err)}`, {
      cause: err,
      detail: 'internal',
    });
  }
}

/**
 * Decodes a client→agent message. `encoding` is 'bstr' if any byte field was a byte string, else 'array'
 * (also for messages without byte fields) — answer in the same encoding. Throws WireError only.
 */
export function decodeClientMessage(bytes: Uint8Array, opts?: DecodeOptions): { message: ClientMessage; encoding: ByteEncoding } {
  return guard(() => {
    const { v, vals, bstr } = decodeMessage(bytes, CLIENT_VARIANTS, 'client', opts);
    let message: ClientMessage;
    switch (v.name) {
      case 'RequestAttestation':
        message = { type: 'RequestAttestation' };
        break;
      case 'GetControlNonce':
        message = { type: 'GetControlNonce' };
        break;
      case 'Data':
      case 'OpenStream':
      case 'StreamData':
        message = { type: v.name, id: vals[K.id] as number, payload: vals[K.payload] as Uint8Array };
        break;
      case 'StreamClose':
        message = { type: 'StreamClose', id: vals[K.id] as number, half: vals[K.half] as 'Write' | 'Both' };
        break;
      default:
        message = { type: 'Control', payload: vals[K.payload] as Uint8Array, signature: vals[K.signature] as Uint8Array };
    }
    return { message, encoding: bstr ? 'bstr' : 'array' };
  });
}

/**
 * Decodes an agent→client message. `encoding` is 'bstr' if any byte field was a byte string, else 'array'
 * (also for messages without byte fields). Throws WireError only.
 */
export function decodeServerMessage(bytes: Uint8Array, opts?: DecodeOptions): { message: ServerMessage; encoding: ByteEncoding } {
  return guard(() => {
    const { v, vals, bstr } = decodeMessage(bytes, SERVER_VARIANTS, 'server', opts);
    let message: ServerMessage;
    switch (v.name) {
      case 'Attestation': {
        const features = vals[K.features] as string[] | undefined;
        message =
          features === undefined
            ? { type: 'Attestation', data: vals[K.data] as Uint8Array, control_nonce: vals[K.control_nonce] as Uint8Array }
            : { type: 'Attestation', data: vals[K.data] as Uint8Array, control_nonce: vals[K.control_nonce] as Uint8Array, features };
        break;
      }
      case 'Data':
      case 'StreamData':
        message = { type: v.name, id: vals[K.id] as number, payload: vals[K.payload] as Uint8Array };
        break;
      case 'Error':
        message = { type: 'Error', id: vals[K.id] as number, message: vals[K.message] as string };
        break;
      case 'StreamClose':
        message = { type: 'StreamClose', id: vals[K.id] as number };
        break;
      case 'ControlNonce':
        message = { type: 'ControlNonce', nonce: vals[K.nonce] as Uint8Array };
        break;
      default:
        message = { type: 'ControlResult', success: vals[K.success] as boolean, message: vals[K.message] as string };
    }
    return { message, encoding: bstr ? 'bstr' : 'array' };
  });
}
