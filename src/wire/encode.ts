// The encoder of the wire's CBOR messages (WIRE.md §4; the schema in schema.ts): checks a message, sizes its
// encoding exactly and writes it into one allocation (or a caller's buffer, or as parts around a large payload).
// Browser-safe (no node:*, no Buffer).
import { uintSize, writeHead } from './cbor-head.ts';
import { WireError } from './errors.ts';
import { countBig, writeIntArray } from './int-array.ts';
import { BOTH_RAW, CLIENT_BY_NAME, K, KEY_CBOR, KEY_NAMES, Kind, NONCE_LEN, SERVER_BY_NAME, textEncoder, WRITE_RAW } from './schema.ts';
import type { ByteEncoding, ClientMessage, ServerMessage, Variant } from './schema.ts';

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
  return encodeInto(v, fields, checkEncoding(enc), out, offset);
}

/** `encodeServerMessage` written into `out` at `offset` (see encodeClientMessageInto). */
export function encodeServerMessageInto(m: ServerMessage, enc: ByteEncoding, out: Uint8Array, offset: number): number {
  const { v, fields } = serverFields(m);
  return encodeInto(v, fields, checkEncoding(enc), out, offset);
}

function encodeInto(v: Variant, fields: EncField[], enc: ByteEncoding, out: Uint8Array, offset: number): number {
  const size = sizeOf(v, fields, enc);
  if (!Number.isSafeInteger(offset) || offset < 0 || offset + size > out.length) {
    throw encodeError(`a ${size}-byte message does not fit at offset ${offset} of a ${out.length}-byte buffer`);
  }
  const end = offset + writeMessage(offset === 0 ? out : out.subarray(offset), v, fields, enc, fields.length);
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
