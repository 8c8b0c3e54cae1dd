// Grammar of an Evervault `ev:` value (ENCRYPTION.md §1):
//
//   ev:[debug:]VERSION:[TYPE:]IV:EPHEMERAL_PUBLIC_KEY:CIPHERTEXT:$
//
//   VERSION    Tk9D (P-256) · QkTC (P-256 + metadata) · RFVC (secp256k1) · S0lS (secp256k1 + metadata)
//   TYPE       "number" | "boolean"; absent = string
//   IV         12 bytes, standard base64 (16 chars; padding tolerated)
//   EPK        33-byte compressed point, standard base64 (44 chars; first byte 02/03)
//   CIPHERTEXT AES-256-GCM ciphertext ‖ 16-byte tag, standard base64, padding optional
//
// Other 4-char versions Evervault's parser knows (T1JL, TENZ, QlJV) and the legacy unversioned format
// are EV_UNSUPPORTED_VERSION; every other deviation is EV_MALFORMED.
import { fromBase64, toBase64 } from '../util/bytes.ts';
import { EvFormatError } from './errors.ts';
import type { EvCurve } from './ev-kdf.ts';

export type EvVersion = 'Tk9D' | 'QkTC' | 'RFVC' | 'S0lS';
export type EvType = 'string' | 'number' | 'boolean';

export interface EvToken {
  debug: boolean;
  version: EvVersion;
  curve: EvCurve;
  /** True for QkTC/S0lS: the plaintext carries the msgpack metadata block (data role). */
  hasMetadata: boolean;
  type: EvType;
  iv: Uint8Array;
  /** Compressed ephemeral public key (33 bytes). */
  ephemeralPublicKey: Uint8Array;
  /** The EPK segment as written in the token (used as a cache key). */
  ephemeralSegment: string;
  /** Ciphertext ‖ 16-byte tag. */
  ciphertext: Uint8Array;
}

export const VERSIONS: Record<EvVersion, { curve: EvCurve; hasMetadata: boolean }> = {
  Tk9D: { curve: 'p256', hasMetadata: false },
  QkTC: { curve: 'p256', hasMetadata: true },
  RFVC: { curve: 'secp256k1', hasMetadata: false },
  S0lS: { curve: 'secp256k1', hasMetadata: true },
};

export function versionFor(curve: EvCurve, withMetadata: boolean): EvVersion {
  if (curve === 'p256') return withMetadata ? 'QkTC' : 'Tk9D';
  return withMetadata ? 'S0lS' : 'RFVC';
}

const KNOWN_UNSUPPORTED = new Set(['T1JL', 'TENZ', 'QlJV']);
const B64_SEGMENT = /^[A-Za-z0-9+/]+={0,2}$/;
export const TAG_LENGTH = 16;

/** Cheap pre-check used by scanners: starts with `ev:` and ends with `:$`. */
export function looksLikeEv(s: string): boolean {
  return s.length > 8 && s.startsWith('ev:') && s.endsWith(':$');
}

/** Why a string is not a supported ev: value (EvFormatError's code and message, without the throw). */
export interface EvParseProblem {
  readonly problem: 'EV_MALFORMED' | 'EV_UNSUPPORTED_VERSION';
  readonly message: string;
}

function malformed(what: string): EvParseProblem {
  return { problem: 'EV_MALFORMED', message: `malformed ev: value: ${what}` };
}

/** Bytes a base64 segment decodes to, or -1 when fromBase64 would refuse its length or padding. */
function decodedLength(seg: string): number {
  let end = seg.length;
  while (end > 0 && seg.charCodeAt(end - 1) === 61 /* = */ && seg.length - end < 2) end--;
  if (end % 4 === 1 || (end !== seg.length && seg.length % 4 !== 0)) return -1;
  return Math.floor((end * 3) / 4);
}

/** A segment's bytes, or why it is not one (checked before decoding: nothing here throws). */
function segmentBytes(seg: string, name: string, expectedLen?: number): Uint8Array | EvParseProblem {
  const n = B64_SEGMENT.test(seg) ? decodedLength(seg) : -1;
  if (n < 0) return malformed(`${name} is not standard base64`);
  if (expectedLen !== undefined && n !== expectedLen) return malformed(`${name} is ${n} bytes, expected ${expectedLen}`);
  return fromBase64(seg);
}

/**
 * Parses an `ev:` string, or says why it is not one — without throwing: scanners try every candidate string
 * of a request body, and an exception per failed candidate (~9 µs) let a body of near-tokens hold the event loop.
 */
export function tryParseEvDetailed(token: string): EvToken | EvParseProblem {
  if (typeof token !== 'string' || !looksLikeEv(token)) return malformed('expected "ev:…:$"');
  const parts = token.slice(3, -2).split(':');
  let i = 0;
  let debug = false;
  if (parts[i] === 'debug') {
    debug = true;
    i++;
  }
  const v = parts[i];
  if (v === undefined) return malformed('missing version');
  if (!Object.hasOwn(VERSIONS, v)) {
    if (KNOWN_UNSUPPORTED.has(v) || v === 'number' || v === 'boolean' || v.length === 16) {
      return { problem: 'EV_UNSUPPORTED_VERSION', message: `unsupported ev: version: expected Tk9D, QkTC, RFVC or S0lS, found ${v.length === 4 ? v : 'none (legacy format)'}` };
    }
    return malformed('unknown version segment');
  }
  const version = v as EvVersion;
  i++;
  let type: EvType = 'string';
  if (parts[i] === 'number' || parts[i] === 'boolean') {
    type = parts[i] as EvType;
    i++;
  }
  if (parts.length - i !== 3) return malformed(`expected IV, ephemeral key and ciphertext segments, found ${Math.max(0, parts.length - i)} segments`);
  const iv = segmentBytes(parts[i]!, 'IV', 12);
  if (!(iv instanceof Uint8Array)) return iv;
  const ephemeralSegment = parts[i + 1]!;
  const ephemeralPublicKey = segmentBytes(ephemeralSegment, 'ephemeral public key', 33);
  if (!(ephemeralPublicKey instanceof Uint8Array)) return ephemeralPublicKey;
  if (ephemeralPublicKey[0] !== 0x02 && ephemeralPublicKey[0] !== 0x03) return malformed('ephemeral public key is not a compressed point');
  const ciphertext = segmentBytes(parts[i + 2]!, 'ciphertext');
  if (!(ciphertext instanceof Uint8Array)) return ciphertext;
  if (ciphertext.length < TAG_LENGTH) return malformed(`ciphertext is ${ciphertext.length} bytes, expected at least the ${TAG_LENGTH}-byte tag`);
  const { curve, hasMetadata } = VERSIONS[version];
  return { debug, version, curve, hasMetadata, type, iv, ephemeralPublicKey, ephemeralSegment, ciphertext };
}

/** The parsed token, or null when `s` is not a supported ev: value (never throws). */
export function tryParseEv(s: string): EvToken | null {
  if (!looksLikeEv(s)) return null;
  const r = tryParseEvDetailed(s);
  return 'problem' in r ? null : r;
}

/** Parses an `ev:` string. Throws EvFormatError (EV_MALFORMED, EV_UNSUPPORTED_VERSION). */
export function parseEv(token: string): EvToken {
  const r = tryParseEvDetailed(token);
  if ('problem' in r) throw new EvFormatError(r.problem, r.message);
  return r;
}

/** True when `s` is a grammatically valid, supported `ev:` value. */
export function isEvToken(s: string): boolean {
  return tryParseEv(s) !== null;
}

const unpad = (b64: string): string => b64.replace(/=+$/, '');

/** Serialises the parts of a token exactly as @evervault/sdk does (padding stripped). */
export function formatEv(t: { debug?: boolean; version: EvVersion; type: EvType; iv: Uint8Array; ephemeralPublicKey: Uint8Array; ciphertext: Uint8Array }): string {
  return (
    'ev:' +
    (t.debug ? 'debug:' : '') +
    t.version +
    (t.type === 'string' ? '' : ':' + t.type) +
    ':' +
    unpad(toBase64(t.iv)) +
    ':' +
    unpad(toBase64(t.ephemeralPublicKey)) +
    ':' +
    unpad(toBase64(t.ciphertext)) +
    ':$'
  );
}
