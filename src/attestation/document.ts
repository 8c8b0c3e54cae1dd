/**
 * COSE_Sign1 and Nitro attestation-document parsing (WIRE.md §6). Browser-safe.
 *
 * Document = COSE_Sign1, untagged or tag 18: [protected bstr({1: -35}), unprotected {}, payload bstr,
 * signature bstr(96)]. The payload is the attestation map; its structure rules are AWS's syntactic
 * validation (aws-nitro-enclaves-nsm-api docs/attestation_process.md §3.2.2) plus bounds of our own.
 * Parsing checks structure only; signatures and the certificate chain are checked in verify.ts.
 */
import { toHex } from '../util/bytes.ts';
import { CborDecodeError, decodeStrict, describe, type CborMap, type CborValue } from './cbor.ts';
import { AttestationError } from './errors.ts';

/** Whole COSE_Sign1 document. The NSM's response buffer is 12 KiB; we allow some headroom. */
export const MAX_DOCUMENT_BYTES = 16 * 1024;
export const MAX_CABUNDLE_ENTRIES = 8;
export const MAX_CERT_BYTES = 1024;
export const MAX_PUBLIC_KEY_BYTES = 1024;
export const MAX_USER_DATA_BYTES = 512;
export const MAX_NONCE_BYTES = 512;
export const MAX_PCRS = 32;
/**
 * The last instant a JS Date can hold (ECMA-262 §21.4.1.1). CBOR integers reach 2^53, so a later timestamp is
 * valid CBOR; bounding it here lets every consumer format `new Date(timestamp)` without a RangeError.
 */
export const MAX_TIMESTAMP_MS = 8.64e15;
/** Payload keys beyond the nine known ones are tolerated (and ignored) up to this total. */
const MAX_PAYLOAD_KEYS = 16;
/** COSE algorithm -35 = ES384 (ECDSA P-384 with SHA-384). */
export const COSE_ALG_ES384 = -35;
export const ES384_SIGNATURE_BYTES = 96;
const COSE_SIGN1_TAG = 0xd2; // tag 18 as a one-byte head

/** The real format's payload keys, in the order the NSM writes them. */
export const PAYLOAD_KEYS = ['module_id', 'digest', 'timestamp', 'pcrs', 'certificate', 'cabundle', 'public_key', 'user_data', 'nonce'] as const;

export interface CoseSign1 {
  /** True when the input carried CBOR tag 18. */
  tagged: boolean;
  /** The protected header exactly as serialized (it is part of the signed structure). */
  protectedBytes: Uint8Array;
  alg: number;
  payload: Uint8Array;
  /** r ‖ s, 48 bytes each. */
  signature: Uint8Array;
}

export interface AttestationDocument {
  moduleId: string;
  digest: 'SHA384';
  /** Milliseconds since the Unix epoch, as the NSM wrote it. */
  timestamp: number;
  /** PCR index → value, in wire order. */
  pcrs: Map<number, Uint8Array>;
  /** The signing (leaf) certificate, DER. */
  certificate: Uint8Array;
  /** Issuing CA bundle, DER, root first. */
  cabundle: Uint8Array[];
  publicKey: Uint8Array | null;
  userData: Uint8Array | null;
  nonce: Uint8Array | null;
}

export interface ParsedAttestation {
  cose: CoseSign1;
  document: AttestationDocument;
}

export interface ParseOptions {
  /**
   * Treat a present-but-empty `public_key` as absent. Off by default: AWS's rules and the reference client
   * require a present public_key to be 1–1024 bytes (some real debug-mode documents carry an empty one).
   */
  allowEmptyPublicKey?: boolean;
}

function malformed(message: string, cause?: unknown): never {
  throw new AttestationError('ATTESTATION_MALFORMED', message, cause === undefined ? undefined : { cause });
}

function structure(message: string): never {
  throw new AttestationError('ATTESTATION_STRUCTURE', message);
}

function decode(bytes: Uint8Array, what: string): CborValue {
  try {
    return decodeStrict(bytes);
  } catch (err) {
    if (err instanceof CborDecodeError) malformed(`${what}: ${err.message}`, err);
    throw err;
  }
}

/** Parses the COSE_Sign1 envelope (untagged or tag 18). Throws AttestationError. */
export function parseCoseSign1(bytes: Uint8Array): CoseSign1 {
  if (!(bytes instanceof Uint8Array)) malformed(`expected the document as a Uint8Array, found ${typeof bytes}`);
  if (bytes.length === 0) malformed('document is empty');
  if (bytes.length > MAX_DOCUMENT_BYTES) malformed(`document is ${bytes.length} bytes; the limit is ${MAX_DOCUMENT_BYTES}`);
  const tagged = bytes[0] === COSE_SIGN1_TAG;
  const top = decode(tagged ? bytes.subarray(1) : bytes, 'COSE_Sign1');
  if (!Array.isArray(top) || top.length !== 4) {
    malformed(`COSE_Sign1 must be an array of 4 items; found ${describe(top)}`);
  }
  const [protectedBytes, unprotected, payload, signature] = top as [CborValue, CborValue, CborValue, CborValue];
  if (!(protectedBytes instanceof Uint8Array)) malformed(`COSE protected header must be a byte string; found ${describe(protectedBytes)}`);
  if (!(unprotected instanceof Map)) malformed(`COSE unprotected header must be a map; found ${describe(unprotected)}`);
  if (!(payload instanceof Uint8Array)) malformed(`COSE payload must be a byte string; found ${describe(payload)}`);
  if (!(signature instanceof Uint8Array)) malformed(`COSE signature must be a byte string; found ${describe(signature)}`);
  if (payload.length === 0) malformed('COSE payload is empty');

  const header = decode(protectedBytes, 'COSE protected header');
  if (!(header instanceof Map)) malformed(`COSE protected header must encode a map; found ${describe(header)}`);
  const alg = header.get(1);
  if (alg !== COSE_ALG_ES384) structure(`COSE algorithm must be ES384 (-35); found ${describe(alg)}`);
  for (const key of header.keys()) {
    if (key !== 1) structure(`COSE protected header has an unexpected parameter ${JSON.stringify(key)}; expected only {1: -35}`);
  }
  if (signature.length !== ES384_SIGNATURE_BYTES) {
    structure(`COSE signature must be ${ES384_SIGNATURE_BYTES} bytes (ES384 r‖s); found ${signature.length}`);
  }
  return { tagged, protectedBytes, alg, payload, signature };
}

function optionalBytes(payload: CborMap, key: string, min: number, max: number): Uint8Array | null {
  const v = payload.get(key);
  if (v === undefined || v === null) return null;
  if (!(v instanceof Uint8Array)) structure(`${key} must be a byte string or null; found ${describe(v)}`);
  if (v.length < min || v.length > max) structure(`${key} must be ${min}–${max} bytes; found ${v.length}`);
  return v;
}

/** Applies the attestation payload's structure rules. Throws AttestationError. */
export function parseAttestationPayload(payloadBytes: Uint8Array, opts: ParseOptions = {}): AttestationDocument {
  const payload = decode(payloadBytes, 'attestation payload');
  if (!(payload instanceof Map)) structure(`attestation payload must be a map; found ${describe(payload)}`);
  if (payload.size > MAX_PAYLOAD_KEYS) structure(`attestation payload has ${payload.size} keys; at most ${MAX_PAYLOAD_KEYS} accepted`);
  for (const key of payload.keys()) {
    if (typeof key !== 'string') structure(`attestation payload keys must be text; found ${describe(key)}`);
  }

  const moduleId = payload.get('module_id');
  if (typeof moduleId !== 'string' || moduleId.length === 0) structure(`module_id must be non-empty text; found ${describe(moduleId)}`);

  const digest = payload.get('digest');
  if (digest !== 'SHA384') structure(`digest must be "SHA384"; found ${typeof digest === 'string' ? JSON.stringify(digest) : describe(digest)}`);

  const timestamp = payload.get('timestamp');
  if (typeof timestamp !== 'number' || !Number.isInteger(timestamp) || timestamp <= 0 || timestamp > MAX_TIMESTAMP_MS) {
    structure(`timestamp must be a positive integer (ms since epoch) of at most ${MAX_TIMESTAMP_MS}; found ${describe(timestamp)}`);
  }

  const rawPcrs = payload.get('pcrs');
  if (!(rawPcrs instanceof Map)) structure(`pcrs must be a map; found ${describe(rawPcrs)}`);
  if (rawPcrs.size < 1 || rawPcrs.size > MAX_PCRS) structure(`pcrs must have 1–${MAX_PCRS} entries; found ${rawPcrs.size}`);
  const pcrs = new Map<number, Uint8Array>();
  for (const [index, value] of rawPcrs) {
    if (typeof index !== 'number' || index < 0 || index >= MAX_PCRS) {
      structure(`PCR index must be an integer in [0, ${MAX_PCRS}); found ${JSON.stringify(index)}`);
    }
    if (!(value instanceof Uint8Array) || (value.length !== 32 && value.length !== 48 && value.length !== 64)) {
      structure(`PCR${index} must be a 32, 48 or 64-byte string; found ${describe(value)}`);
    }
    pcrs.set(index, value);
  }

  const certificate = payload.get('certificate');
  if (!(certificate instanceof Uint8Array) || certificate.length < 1 || certificate.length > MAX_CERT_BYTES) {
    structure(`certificate must be a 1–${MAX_CERT_BYTES}-byte string; found ${describe(certificate)}`);
  }

  const rawBundle = payload.get('cabundle');
  if (!Array.isArray(rawBundle)) structure(`cabundle must be an array; found ${describe(rawBundle)}`);
  if (rawBundle.length < 1 || rawBundle.length > MAX_CABUNDLE_ENTRIES) {
    structure(`cabundle must have 1–${MAX_CABUNDLE_ENTRIES} entries; found ${rawBundle.length}`);
  }
  const cabundle = rawBundle.map((entry, i) => {
    if (!(entry instanceof Uint8Array) || entry.length < 1 || entry.length > MAX_CERT_BYTES) {
      structure(`cabundle[${i}] must be a 1–${MAX_CERT_BYTES}-byte string; found ${describe(entry)}`);
    }
    return entry;
  });

  const rawKey = payload.get('public_key');
  const publicKey =
    opts.allowEmptyPublicKey && rawKey instanceof Uint8Array && rawKey.length === 0
      ? null
      : optionalBytes(payload, 'public_key', 1, MAX_PUBLIC_KEY_BYTES);
  const userData = optionalBytes(payload, 'user_data', 0, MAX_USER_DATA_BYTES);
  const nonce = optionalBytes(payload, 'nonce', 0, MAX_NONCE_BYTES);

  return { moduleId, digest, timestamp, pcrs, certificate, cabundle, publicKey, userData, nonce };
}

/** Parses envelope and payload: the full structural check (no cryptography). */
export function parseAttestationDocument(bytes: Uint8Array, opts: ParseOptions = {}): ParsedAttestation {
  const cose = parseCoseSign1(bytes);
  return { cose, document: parseAttestationPayload(cose.payload, opts) };
}

/**
 * The COSE Sig_structure for a COSE_Sign1 with empty external AAD:
 * CBOR ["Signature1", protected, h'', payload] — the exact bytes the ES384 signature covers.
 */
export function coseSign1SigStructure(protectedBytes: Uint8Array, payload: Uint8Array): Uint8Array {
  const context = [0x6a, 0x53, 0x69, 0x67, 0x6e, 0x61, 0x74, 0x75, 0x72, 0x65, 0x31]; // text(10) "Signature1"
  const ph = bstrHead(protectedBytes.length);
  const pl = bstrHead(payload.length);
  const out = new Uint8Array(1 + context.length + ph.length + protectedBytes.length + 1 + pl.length + payload.length);
  let o = 0;
  out[o++] = 0x84;
  out.set(context, o);
  o += context.length;
  out.set(ph, o);
  o += ph.length;
  out.set(protectedBytes, o);
  o += protectedBytes.length;
  out[o++] = 0x40; // external_aad = h''
  out.set(pl, o);
  o += pl.length;
  out.set(payload, o);
  return out;
}

function bstrHead(n: number): Uint8Array {
  if (n < 24) return Uint8Array.of(0x40 | n);
  if (n < 0x100) return Uint8Array.of(0x58, n);
  if (n < 0x10000) return Uint8Array.of(0x59, n >> 8, n & 0xff);
  return Uint8Array.of(0x5a, (n >>> 24) & 0xff, (n >> 16) & 0xff, (n >> 8) & 0xff, n & 0xff);
}

/** True when PCR0, 1, 2 and 8 (those present) are all zero: what a debug-mode enclave reports. */
export function isDebugModeDocument(doc: AttestationDocument): boolean {
  for (const i of [0, 1, 2, 8]) {
    const v = doc.pcrs.get(i);
    if (v && v.some((b) => b !== 0)) return false;
  }
  return true;
}

/** Lowercase hex of a PCR, or undefined when absent. */
export function pcrHex(doc: AttestationDocument, index: number): string | undefined {
  const v = doc.pcrs.get(index);
  return v === undefined ? undefined : toHex(v);
}
