// The key derivation of Evervault's `ev:` values (P-256 always; secp256k1 with a data role):
//
//   aesKey = SHA-256( Z ‖ 00 00 00 01 ‖ DER(SubjectPublicKeyInfo of the EPHEMERAL public key) )
//
// where Z is the ECDH shared x-coordinate and the SPKI carries the uncompressed point and EXPLICIT
// X9.62 ECParameters (not the named-curve OID):
//
//   SEQUENCE {
//     SEQUENCE { OID ecPublicKey 1.2.840.10045.2.1,
//                SEQUENCE { INTEGER 1,                                   -- version
//                           SEQUENCE { OID prime-field 1.2.840.10045.1.1, INTEGER p },
//                           SEQUENCE { OCTET STRING a(32), OCTET STRING b(32) [, BIT STRING seed] },
//                           OCTET STRING base (uncompressed generator, 65),
//                           INTEGER n,
//                           INTEGER h (1) } }
//     BIT STRING (0 unused bits) uncompressed point (65) }
//
// The seed is present for P-256 and absent for secp256k1; `a` for secp256k1 is 32 zero bytes (not a
// minimal integer). Everything before the point is constant per curve, so it is built once here and the
// test compares it byte for byte with @evervault/sdk's asn1js encoder.
import { createECDH, createHash } from 'node:crypto';
import type { ECDH } from 'node:crypto';
import { fromHex } from '../util/bytes.ts';

export type EvCurve = 'p256' | 'secp256k1';

/** Node/OpenSSL curve names. */
export const NODE_CURVE: Record<EvCurve, string> = { p256: 'prime256v1', secp256k1: 'secp256k1' };

interface CurveParams {
  p: string;
  a: string;
  b: string;
  seed?: string;
  generator: string;
  n: string;
  h: string;
}

// SEC 2 / X9.62 constants (hex, big-endian).
const PARAMS: Record<EvCurve, CurveParams> = {
  p256: {
    p: 'ffffffff00000001000000000000000000000000ffffffffffffffffffffffff',
    a: 'ffffffff00000001000000000000000000000000fffffffffffffffffffffffc',
    b: '5ac635d8aa3a93e7b3ebbd55769886bc651d06b0cc53b0f63bce3c3e27d2604b',
    seed: 'c49d360886e704936a6678e1139d26b7819f7e90',
    generator:
      '046b17d1f2e12c4247f8bce6e563a440f277037d812deb33a0f4a13945d898c2964fe342e2fe1a7f9b8ee7eb4a7c0f9e162bce33576b315ececbb6406837bf51f5',
    n: 'ffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551',
    h: '01',
  },
  secp256k1: {
    p: 'fffffffffffffffffffffffffffffffffffffffffffffffffffffffefffffc2f',
    a: '0000000000000000000000000000000000000000000000000000000000000000',
    b: '0000000000000000000000000000000000000000000000000000000000000007',
    generator:
      '0479be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798483ada7726a3c4655da4fbfc0e1108a8fd17b448a68554199c47d08ffb10d4b8',
    n: 'fffffffffffffffffffffffffffffffebaaedce6af48a03bbfd25e8cd0364141',
    h: '01',
  },
};

// --- a minimal DER writer (definite lengths) -------------------------------------------------------

function derLength(len: number): number[] {
  if (len < 0x80) return [len];
  if (len < 0x100) return [0x81, len];
  return [0x82, len >> 8, len & 0xff];
}

function tlv(tag: number, body: number[]): number[] {
  return [tag, ...derLength(body.length), ...body];
}

const seq = (...items: number[][]): number[] => tlv(0x30, items.flat());
const octets = (hex: string): number[] => tlv(0x04, [...fromHex(hex)]);
const bits = (hex: string): number[] => tlv(0x03, [0x00, ...fromHex(hex)]);
/** Unsigned big-endian integer, with the leading 00 DER needs when the top bit is set. */
const integer = (hex: string): number[] => {
  const b = [...fromHex(hex)];
  return tlv(0x02, b[0]! & 0x80 ? [0x00, ...b] : b);
};
const OID_EC_PUBLIC_KEY = [0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01]; // 1.2.840.10045.2.1
const OID_PRIME_FIELD = [0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x01, 0x01]; // 1.2.840.10045.1.1

/** The DER SPKI for `curve` up to (and including) the BIT STRING header and its unused-bits byte. */
function spkiPrefix(curve: EvCurve): Uint8Array {
  const c = PARAMS[curve];
  const curveSeq = c.seed ? seq(octets(c.a), octets(c.b), bits(c.seed)) : seq(octets(c.a), octets(c.b));
  const ecParameters = seq(integer('01'), seq(OID_PRIME_FIELD, integer(c.p)), curveSeq, octets(c.generator), integer(c.n), integer(c.h));
  const placeholderPoint = '04' + '00'.repeat(64);
  const full = seq(seq(OID_EC_PUBLIC_KEY, ecParameters), bits(placeholderPoint));
  return Uint8Array.from(full.slice(0, full.length - 65));
}

const SPKI_PREFIX: Record<EvCurve, Uint8Array> = { p256: spkiPrefix('p256'), secp256k1: spkiPrefix('secp256k1') };
const COUNTER = Uint8Array.of(0, 0, 0, 1);

/** DER SubjectPublicKeyInfo with explicit curve parameters for an uncompressed (65-byte) point. */
export function explicitSpki(curve: EvCurve, uncompressedPoint: Uint8Array): Uint8Array {
  const prefix = SPKI_PREFIX[curve];
  const out = new Uint8Array(prefix.length + uncompressedPoint.length);
  out.set(prefix, 0);
  out.set(uncompressedPoint, prefix.length);
  return out;
}

// One scratch ECDH per curve, used only to decompress points (setPublicKey + getPublicKey is ~2× faster
// than the static ECDH.convertKey, which builds a group per call). Synchronous use only.
// (setPublicKey is documentation-deprecated and absent from @types/node, hence the local type.)
type ScratchEcdh = ECDH & { setPublicKey(key: Uint8Array): void };
const scratch: Partial<Record<EvCurve, ScratchEcdh>> = {};

/** 33-byte compressed point → 65-byte uncompressed point. Throws (a plain Error) on an invalid point. */
export function decompressPoint(curve: EvCurve, compressed: Uint8Array): Buffer {
  const ecdh = (scratch[curve] ??= createECDH(NODE_CURVE[curve]) as ScratchEcdh);
  ecdh.setPublicKey(compressed);
  return ecdh.getPublicKey(null, 'uncompressed');
}

/** SHA-256(Z ‖ 00000001 ‖ explicit-SPKI(ephemeral)), with the ephemeral point uncompressed (65 bytes). */
export function deriveEvKey(curve: EvCurve, sharedX: Uint8Array, ephemeralUncompressed: Uint8Array): Buffer {
  return createHash('sha256').update(sharedX).update(COUNTER).update(SPKI_PREFIX[curve]).update(ephemeralUncompressed).digest();
}
