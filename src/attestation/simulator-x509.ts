/**
 * The NSM simulator's certificates, written as DER directly: one fixed shape (X.509 v3, P-384 key, ECDSA with
 * SHA-384, basicConstraints and keyUsage), so a few encoders cover it. Not a general X.509 library: pkijs and
 * asn1js did this before, and cost an agent started with the simulator ~0.7 MB of source and its heap at rest
 * (docs/performance.md, Memory). What comes out is checked by an independent strict DER parser (Python's
 * `cryptography`, test/attestation/simulator-der.test.ts) and by the agent's own chain verifier.
 */
import { randomBytes, webcrypto } from 'node:crypto';
import { concatBytes, utf8 } from '../util/bytes.ts';

const OID_ECDSA_SHA384 = '1.2.840.10045.4.3.3';
const OID_BASIC_CONSTRAINTS = '2.5.29.19';
const OID_KEY_USAGE = '2.5.29.15';
export const OID_C = '2.5.4.6';
export const OID_ST = '2.5.4.8';
export const OID_L = '2.5.4.7';
export const OID_O = '2.5.4.10';
export const OID_OU = '2.5.4.11';
export const OID_CN = '2.5.4.3';

/** One DER element: tag, minimal definite length, contents. */
function tlv(tag: number, ...contents: Uint8Array[]): Uint8Array {
  const body = concatBytes(...contents);
  const n = body.length;
  let len: Uint8Array;
  if (n < 0x80) len = Uint8Array.of(n);
  else {
    const bytes: number[] = [];
    for (let v = n; v > 0; v = Math.floor(v / 256)) bytes.unshift(v & 0xff);
    len = Uint8Array.of(0x80 | bytes.length, ...bytes);
  }
  return concatBytes(Uint8Array.of(tag), len, body);
}

const seq = (...items: Uint8Array[]): Uint8Array => tlv(0x30, ...items);

function oid(dotted: string): Uint8Array {
  const parts = dotted.split('.').map(Number);
  const out: number[] = [parts[0]! * 40 + parts[1]!];
  for (const p of parts.slice(2)) {
    const sevens: number[] = [p & 0x7f];
    for (let v = Math.floor(p / 128); v > 0; v = Math.floor(v / 128)) sevens.unshift((v & 0x7f) | 0x80);
    out.push(...sevens);
  }
  return tlv(0x06, Uint8Array.from(out));
}

/** A non-negative INTEGER from big-endian magnitude bytes: minimal, with a 0x00 before a high bit. */
function unsignedInteger(magnitude: Uint8Array): Uint8Array {
  let i = 0;
  while (i < magnitude.length - 1 && magnitude[i] === 0) i++;
  const m = magnitude.subarray(i);
  return tlv(0x02, m[0]! & 0x80 ? concatBytes(Uint8Array.of(0), m) : m);
}

/** UTCTime before 2050, GeneralizedTime from then on (RFC 5280 4.1.2.5), whole seconds, Zulu. */
function time(ms: number): Uint8Array {
  const d = new Date(Math.floor(ms / 1000) * 1000);
  const year = d.getUTCFullYear();
  const p2 = (n: number): string => String(n).padStart(2, '0');
  const rest = `${p2(d.getUTCMonth() + 1)}${p2(d.getUTCDate())}${p2(d.getUTCHours())}${p2(d.getUTCMinutes())}${p2(d.getUTCSeconds())}Z`;
  return year >= 2050 ? tlv(0x18, utf8.encode(`${year}${rest}`)) : tlv(0x17, utf8.encode(`${p2(year % 100)}${rest}`));
}

/**
 * An X.501 Name as AWS's Nitro certificates encode it: one attribute per RDN, in the order given, countryName as
 * PrintableString and everything else as UTF8String.
 */
export function encodeName(attrs: [string, string][]): Uint8Array {
  return seq(...attrs.map(([type, value]) => tlv(0x31, seq(oid(type), tlv(type === OID_C ? 0x13 : 0x0c, utf8.encode(value))))));
}

/** WebCrypto's ECDSA signature (r ‖ s, fixed width) as the DER ECDSA-Sig-Value X.509 carries. */
function derSignature(raw: Uint8Array): Uint8Array {
  const half = raw.length / 2;
  return seq(unsignedInteger(raw.subarray(0, half)), unsignedInteger(raw.subarray(half)));
}

export interface CertificateSpec {
  /** Name DER (encodeName). */
  subject: Uint8Array;
  /** The issuer's subject Name DER; the subject for a self-signed certificate. */
  issuer: Uint8Array;
  publicKey: webcrypto.CryptoKey;
  signingKey: webcrypto.CryptoKey;
  notBefore: number;
  notAfter: number;
  ca: boolean;
  pathLen?: number;
}

/**
 * A signed certificate: v3, a random positive 16-byte serial, ecdsa-with-SHA384, basicConstraints (critical;
 * cA and pathLen for a CA, empty otherwise), keyUsage (keyCertSign + cRLSign + digitalSignature for a CA,
 * critical; digitalSignature + nonRepudiation for a leaf).
 */
export async function mintCertificate(spec: CertificateSpec): Promise<Uint8Array> {
  const serial = randomBytes(16);
  serial[0] = (serial[0]! & 0x7f) | 0x01; // positive and minimal
  const alg = seq(oid(OID_ECDSA_SHA384));
  const TRUE = tlv(0x01, Uint8Array.of(0xff));
  const basic = spec.ca ? seq(TRUE, ...(spec.pathLen === undefined ? [] : [unsignedInteger(Uint8Array.of(spec.pathLen))])) : seq();
  // keyUsage bits: digitalSignature(0x80) nonRepudiation(0x40) keyCertSign(0x04) cRLSign(0x02)
  const usage = spec.ca ? tlv(0x03, Uint8Array.of(1, 0x86)) : tlv(0x03, Uint8Array.of(6, 0xc0));
  const extensions = seq(
    seq(oid(OID_BASIC_CONSTRAINTS), TRUE, tlv(0x04, basic)),
    seq(oid(OID_KEY_USAGE), ...(spec.ca ? [TRUE] : []), tlv(0x04, usage)),
  );
  const spki = new Uint8Array(await webcrypto.subtle.exportKey('spki', spec.publicKey));
  const tbs = seq(
    tlv(0xa0, tlv(0x02, Uint8Array.of(2))),
    unsignedInteger(serial),
    alg,
    spec.issuer,
    seq(time(spec.notBefore), time(spec.notAfter)),
    spec.subject,
    spki,
    tlv(0xa3, extensions),
  );
  const raw = new Uint8Array(await webcrypto.subtle.sign({ name: 'ECDSA', hash: 'SHA-384' }, spec.signingKey, tbs));
  return seq(tbs, alg, tlv(0x03, Uint8Array.of(0), derSignature(raw)));
}
