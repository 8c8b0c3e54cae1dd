/**
 * node:crypto's ECDSA for the attestation verifier (see ecdsa.ts for why). Importing this module installs it;
 * the Node client entry, the CLI and the agent import it. Not browser-safe by design.
 */
import { createPublicKey, verify, type KeyObject } from 'node:crypto';
import { bytesKey } from '../util/bytes.ts';
import { CURVE_SIZE, useEcdsaVerifier, type EcdsaVerifier } from './ecdsa.ts';

const KEY_CACHE_MAX = 64;
const HASH = { 'SHA-256': 'sha256', 'SHA-384': 'sha384', 'SHA-512': 'sha512' } as const;
const keys = new Map<string, KeyObject>();

export const nodeEcdsaVerifier: EcdsaVerifier = {
  verify(spki, curve, hash, sig, data) {
    const id = bytesKey(spki);
    let key = keys.get(id);
    if (!key) {
      key = createPublicKey({ key: Buffer.from(spki.buffer, spki.byteOffset, spki.byteLength), format: 'der', type: 'spki' });
      if (keys.size >= KEY_CACHE_MAX) keys.delete(keys.keys().next().value!);
      keys.set(id, key);
    }
    if (sig.length !== 2 * CURVE_SIZE[curve]) return false;
    return verify(HASH[hash], data, { key, dsaEncoding: 'ieee-p1363' }, sig);
  },
  clearCache: () => keys.clear(),
};

useEcdsaVerifier(nodeEcdsaVerifier);
