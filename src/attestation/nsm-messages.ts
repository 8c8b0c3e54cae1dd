/**
 * The NSM's own CBOR messages (WIRE.md §6; aws-nitro-enclaves-nsm-api `Request`/`Response`, serde externally
 * tagged enums): shared by the device client (encodes requests, decodes replies) and the simulator (the
 * reverse). Encoding goes through cbor-x configured for standard CBOR; decoding through the strict decoder.
 *
 *   {"Attestation": {"user_data": bstr|null, "nonce": bstr|null, "public_key": bstr|null}}
 *     → {"Attestation": {"document": bstr}}
 *   "GetRandom" → {"GetRandom": {"random": bstr}}
 *   any failure → {"Error": "<ErrorCode>"}   (InvalidArgument, InputTooLarge, InternalError, ...)
 */
import { Encoder } from 'cbor-x';
import { CborDecodeError, decodeStrict, describe, type CborValue } from './cbor.ts';
import { AttestationError } from './errors.ts';
import type { AttestationRequest } from './nsm.ts';

/** The device's limits on the optional attestation fields. */
export const NSM_MAX_USER_DATA = 512;
export const NSM_MAX_NONCE = 512;
export const NSM_MAX_PUBLIC_KEY = 1024;
/** The driver's request buffer limit and the response buffer the caller must provide. */
export const NSM_MAX_REQUEST_BYTES = 4 * 1024;
export const NSM_RESPONSE_BUFFER_BYTES = 12 * 1024;

/** Standard CBOR: no records/structures, plain byte strings, exact map sizes, JS Maps as CBOR maps. */
export const nsmEncoder = new Encoder({
  useRecords: false,
  tagUint8Array: false,
  variableMapSize: true,
  mapsAsObjects: false,
  pack: false,
  structuredClone: false,
});

export function encodeCbor(value: unknown): Uint8Array {
  const out = nsmEncoder.encode(value);
  // cbor-x hands back a Buffer in Node; give callers a plain Uint8Array (browser-shaped).
  return new Uint8Array(out.buffer, out.byteOffset, out.byteLength);
}

export type NsmRequest =
  | { kind: 'Attestation'; userData: Uint8Array | null; nonce: Uint8Array | null; publicKey: Uint8Array | null }
  | { kind: 'GetRandom' }
  | { kind: 'Other'; name: string };

export type NsmResponse =
  | { kind: 'Attestation'; document: Uint8Array }
  | { kind: 'GetRandom'; random: Uint8Array }
  | { kind: 'Error'; code: string };

function field(v: Uint8Array | null | undefined, name: string): Uint8Array | null {
  if (v === undefined || v === null) return null;
  if (!(v instanceof Uint8Array)) throw new TypeError(`AttestationRequest.${name} must be a Uint8Array, null or undefined`);
  return v;
}

export function encodeAttestationRequest(req: AttestationRequest): Uint8Array {
  // Field order = the Rust struct's: user_data, nonce, public_key.
  return encodeCbor({
    Attestation: {
      user_data: field(req.userData, 'userData'),
      nonce: field(req.nonce, 'nonce'),
      public_key: field(req.publicKey, 'publicKey'),
    },
  });
}

export function encodeGetRandomRequest(): Uint8Array {
  return encodeCbor('GetRandom');
}

export function encodeNsmResponse(res: NsmResponse): Uint8Array {
  switch (res.kind) {
    case 'Attestation':
      return encodeCbor({ Attestation: { document: res.document } });
    case 'GetRandom':
      return encodeCbor({ GetRandom: { random: res.random } });
    case 'Error':
      return encodeCbor({ Error: res.code });
  }
}

function decodeOrThrow(bytes: Uint8Array, what: string): CborValue {
  try {
    return decodeStrict(bytes);
  } catch (err) {
    if (err instanceof CborDecodeError) throw new AttestationError('NSM_ERROR', `${what} is not valid CBOR: ${err.message}`, { cause: err });
    throw err;
  }
}

function optionalBstr(m: Map<unknown, CborValue>, key: string): Uint8Array | null {
  const v = m.get(key);
  if (v === undefined || v === null) return null;
  if (!(v instanceof Uint8Array)) throw new AttestationError('NSM_ERROR', `request field ${key} must be a byte string or null; found ${describe(v)}`);
  return v;
}

/** Decodes a request as the device would see it (simulator side). Throws AttestationError('NSM_ERROR'). */
export function decodeNsmRequest(bytes: Uint8Array): NsmRequest {
  const v = decodeOrThrow(bytes, 'NSM request');
  if (typeof v === 'string') return v === 'GetRandom' ? { kind: 'GetRandom' } : { kind: 'Other', name: v };
  if (!(v instanceof Map) || v.size !== 1) throw new AttestationError('NSM_ERROR', `NSM request must be a text or a one-entry map; found ${describe(v)}`);
  const [name, body] = [...v][0]!;
  if (name !== 'Attestation') return { kind: 'Other', name: String(name) };
  if (!(body instanceof Map)) throw new AttestationError('NSM_ERROR', `Attestation request body must be a map; found ${describe(body)}`);
  for (const k of body.keys()) {
    if (k !== 'user_data' && k !== 'nonce' && k !== 'public_key') throw new AttestationError('NSM_ERROR', `unknown Attestation request field ${JSON.stringify(k)}`);
  }
  return { kind: 'Attestation', userData: optionalBstr(body, 'user_data'), nonce: optionalBstr(body, 'nonce'), publicKey: optionalBstr(body, 'public_key') };
}

/** Decodes the device's reply (client side). Throws AttestationError('NSM_ERROR') when it is not a known reply. */
export function decodeNsmResponse(bytes: Uint8Array): NsmResponse {
  const v = decodeOrThrow(bytes, 'NSM response');
  if (!(v instanceof Map) || v.size !== 1) throw new AttestationError('NSM_ERROR', `NSM response must be a one-entry map; found ${describe(v)}`);
  const [name, body] = [...v][0]!;
  if (name === 'Error') {
    if (typeof body !== 'string') throw new AttestationError('NSM_ERROR', `NSM Error reply must carry a text code; found ${describe(body)}`);
    return { kind: 'Error', code: body };
  }
  if (name === 'Attestation' || name === 'GetRandom') {
    const key = name === 'Attestation' ? 'document' : 'random';
    const value = body instanceof Map ? body.get(key) : undefined;
    if (!(value instanceof Uint8Array)) throw new AttestationError('NSM_ERROR', `NSM ${name} reply must carry ${key} as a byte string; found ${describe(value)}`);
    return name === 'Attestation' ? { kind: 'Attestation', document: value } : { kind: 'GetRandom', random: value };
  }
  throw new AttestationError('NSM_ERROR', `unexpected NSM reply ${JSON.stringify(String(name))}`);
}
