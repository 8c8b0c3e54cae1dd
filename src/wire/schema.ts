// The schema of the CBOR messages of the Enclavia-compatible wire (WIRE.md §4): the message types, the limits,
// and the tables the encoder (encode.ts) and the decoder (decode.ts, cursor.ts) share — keys, value kinds,
// variants. Browser-safe (no node:*, no Buffer).
import { concatBytes } from '../util/bytes.ts';
import { uintSize, writeHead } from './cbor-head.ts';

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
/**
 * Most entries a message map may have. A variant has at most four keys; the rest are unknown keys, ignored but
 * each checked against the others for duplicates — a frame of ~15,000 unique ones cost ~10 ms of decoding.
 */
export const MAX_MAP_ENTRIES = 64;

// ---------------------------------------------------------------------------------------------------------
// Schema tables

export const enum K {
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
export const KEY_NAMES = ['type', 'id', 'payload', 'half', 'signature', 'data', 'control_nonce', 'features', 'message', 'success', 'nonce'];
export const KEY_COUNT = KEY_NAMES.length;

export const enum Kind {
  uint,
  bytes,
  bytes32,
  half,
  text,
  bool,
  texts,
}
export const KEY_KIND: Kind[] = [
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

export const textEncoder = new TextEncoder();

export const KEY_RAW = KEY_NAMES.map((k) => textEncoder.encode(k));
/** The CBOR encoding of each key (text header + UTF-8), ready to copy. */
export const KEY_CBOR = KEY_RAW.map((raw) => concatBytes(textHeader(raw.length), raw));
export const WRITE_RAW = textEncoder.encode('Write');
export const BOTH_RAW = textEncoder.encode('Both');

export interface Variant {
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

export const CLIENT_VARIANTS: Variant[] = [
  variant('RequestAttestation', []),
  variant('GetControlNonce', []),
  variant('Data', [K.id, K.payload]),
  variant('OpenStream', [K.id, K.payload]),
  variant('StreamData', [K.id, K.payload]),
  variant('StreamClose', [K.id, K.half]),
  variant('Control', [K.payload, K.signature]),
];
export const SERVER_VARIANTS: Variant[] = [
  variant('Attestation', [K.data, K.control_nonce], [K.features]),
  variant('Data', [K.id, K.payload]),
  variant('Error', [K.id, K.message]),
  variant('StreamData', [K.id, K.payload]),
  variant('StreamClose', [K.id]),
  variant('ControlNonce', [K.nonce]),
  variant('ControlResult', [K.success, K.message]),
];
export const CLIENT_BY_NAME = new Map(CLIENT_VARIANTS.map((v) => [v.name, v]));
export const SERVER_BY_NAME = new Map(SERVER_VARIANTS.map((v) => [v.name, v]));

function textHeader(len: number): Uint8Array {
  const out = new Uint8Array(uintSize(len));
  writeHead(out, 0, 0x60, len);
  return out;
}
