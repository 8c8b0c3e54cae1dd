/**
 * ECDSA signature checks for the attestation chain and the COSE signature, behind one small interface so the
 * verifier stays browser-safe (WebCrypto, the default) while Node entry points install node:crypto
 * (ecdsa-node.ts): its synchronous verify skips WebCrypto's cold start and thread-pool round trips, which in a
 * fresh Node process cost more than the five P-384 verifications of a Nitro chain themselves.
 */
import { bytesKey } from '../util/bytes.ts';
import { DerReader, readUnsignedInteger, TAG } from './der.ts';

export type CurveName = 'P-256' | 'P-384' | 'P-521';
export type EcdsaHash = 'SHA-256' | 'SHA-384' | 'SHA-512';
export const CURVE_SIZE: Record<CurveName, number> = { 'P-256': 32, 'P-384': 48, 'P-521': 66 };

export interface EcdsaVerifier {
  /**
   * True when `sig` (raw r ‖ s, each `CURVE_SIZE[curve]` bytes) over `data` verifies with the key in `spki`
   * (SubjectPublicKeyInfo DER). Throws (or rejects) only when the key itself is unusable.
   */
  verify(spki: Uint8Array, curve: CurveName, hash: EcdsaHash, sig: Uint8Array, data: Uint8Array): boolean | Promise<boolean>;
  clearCache(): void;
}

/** Strict DER ECDSA-Sig-Value → r ‖ s (each left-padded to the curve size); undefined when malformed. */
export function ecdsaDerToRaw(sig: Uint8Array, size: number): Uint8Array | undefined {
  try {
    const outer = new DerReader(sig);
    const seq = outer.next(TAG.SEQUENCE, 'ECDSA signature');
    outer.expectDone('ECDSA signature');
    const r = DerReader.of(seq);
    const out = new Uint8Array(2 * size);
    for (let i = 0; i < 2; i++) {
      const v = readUnsignedInteger(r.next(TAG.INTEGER), i === 0 ? 'r' : 's');
      if (v.length > size) return undefined;
      out.set(v, i * size + size - v.length);
    }
    r.expectDone('ECDSA signature');
    return out;
  } catch {
    return undefined;
  }
}

const KEY_CACHE_MAX = 64;

function subtle(): SubtleCrypto {
  const s = globalThis.crypto?.subtle;
  if (!s) throw new Error('WebCrypto (globalThis.crypto.subtle) is not available');
  return s;
}

/** WebCrypto: works in browsers and Node alike. Imported keys are cached by SPKI. */
export function webCryptoVerifier(): EcdsaVerifier {
  const keys = new Map<string, Promise<CryptoKey>>();
  return {
    async verify(spki, curve, hash, sig, data) {
      const id = bytesKey(spki);
      let key = keys.get(id);
      if (!key) {
        key = subtle().importKey('spki', spki as Uint8Array<ArrayBuffer>, { name: 'ECDSA', namedCurve: curve }, false, ['verify']);
        key.catch(() => keys.delete(id));
        if (keys.size >= KEY_CACHE_MAX) keys.delete(keys.keys().next().value!);
        keys.set(id, key);
      }
      const k = await key;
      if (sig.length !== 2 * CURVE_SIZE[curve]) return false;
      return subtle().verify({ name: 'ECDSA', hash }, k, sig as Uint8Array<ArrayBuffer>, data as Uint8Array<ArrayBuffer>);
    },
    clearCache: () => keys.clear(),
  };
}

let active: EcdsaVerifier = webCryptoVerifier();

/** Replaces the process-wide verifier (Node entry points install node:crypto's). */
export function useEcdsaVerifier(v: EcdsaVerifier): void {
  active = v;
}

export function ecdsaVerifier(): EcdsaVerifier {
  return active;
}
