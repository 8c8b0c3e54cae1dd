// The decoder of the wire's CBOR messages (WIRE.md §4; the schema in schema.ts, the reading in cursor.ts): the
// message map with its keys in any order, then the variant's fields as a ClientMessage or ServerMessage.
// Browser-safe (no node:*, no Buffer).
import { Cursor, badField, describeMajor, MAJOR_MAP, MAJOR_TEXT } from './cursor.ts';
import { decodeError, WireError } from './errors.ts';
import { CLIENT_VARIANTS, K, KEY_COUNT, KEY_NAMES, KEY_RAW, MAX_MAP_ENTRIES, SERVER_VARIANTS } from './schema.ts';
import type { ByteEncoding, ClientMessage, DecodeOptions, ServerMessage, Variant } from './schema.ts';

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
  if (entries > MAX_MAP_ENTRIES) throw decodeError('map-size', `a message map has at most ${MAX_MAP_ENTRIES} entries, found ${entries}`);
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
