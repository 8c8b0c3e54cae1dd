// AES-256-GCM with a 16-byte tag appended (ciphertext ‖ tag): the layout of every file and value the agent seals
// with a key it holds (the sealed-file keyring, the KMS-sealed keyring, `kms:` secrets).
import { createCipheriv, createDecipheriv } from 'node:crypto';
import { concatBytes } from '../util/bytes.ts';
import { decipherWhole } from './decipher-whole.ts';

const TAG = 16;

export function gcmSeal(key: Uint8Array, iv: Uint8Array, aad: Uint8Array, plaintext: Uint8Array): Uint8Array {
  const c = createCipheriv('aes-256-gcm', key, iv, { authTagLength: TAG });
  c.setAAD(aad);
  return concatBytes(c.update(plaintext), c.final(), c.getAuthTag());
}

/**
 * The plaintext (the caller wipes it), or null when `sealed` does not authenticate under `key` and `aad` (null:
 * no associated data, as some `ev:` formats have).
 */
export function gcmOpen(key: Uint8Array, iv: Uint8Array, aad: Uint8Array | null, sealed: Uint8Array): Buffer | null {
  if (sealed.length < TAG) return null;
  try {
    const d = createDecipheriv('aes-256-gcm', key, iv, { authTagLength: TAG });
    if (aad !== null) d.setAAD(aad);
    d.setAuthTag(sealed.subarray(sealed.length - TAG));
    return decipherWhole(d, sealed.subarray(0, sealed.length - TAG));
  } catch {
    return null;
  }
}
