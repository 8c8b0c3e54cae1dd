// `ev:` values that are the app's [secrets], never a client's (README "Secrets for the app"). enclave.toml lives in
// the image and in version control, so its ciphertexts are public: were they decrypted like any client value, a
// client could paste DB_PASSWORD's value into a request and read it back from whatever the app echoes or logs.
// Two marks, checked by decryptTokenDetailed (ev-format.ts), the one function every request path, the local
// API and the decrypt pool's workers decrypt through; only decryptSecrets (secrets.ts) opens such values:
//   - the reserved data role SECRET_ROLE, which `secrets seal` writes. The role sits in the plaintext's
//     metadata block, under AES-GCM, and QkTC/S0lS bind the config byte and both public keys in the AAD: a
//     role cannot be changed or removed, nor the value passed off as a role-less Tk9D/RFVC one (other AAD),
//     without the tag failing;
//   - the exact ciphertexts configured in [secrets] (role-less values sealed before the role existed, or by
//     other tools), registered per Keyring object. A ciphertext is identified by what decryption depends
//     on besides the IV (which the tag covers): its curve, the ephemeral key's x coordinate and ciphertext‖tag
//     bytes — not its spelling, since the parser accepts one value several ways (`debug:`, padding, the unused
//     bits of the last base64 character, the type segment Tk9D/RFVC do not authenticate, and the key's 02/03
//     prefix: a point and its negation share x, so the same ECDH secret, and RFVC — the raw x as key, no AAD —
//     opens with either). x is canonical as bytes: OpenSSL refuses an x coordinate ≥ p.
import { createHash } from 'node:crypto';
import { tryParseEv, type EvToken } from './ev-parse.ts';
import type { Keyring } from './keyring.ts';

/** The data role of [secrets] values (`secrets seal`); the local API's /encrypt refuses to write it. */
export const SECRET_ROLE = 'enclave-secret';

interface Withheld {
  ids: Set<string>;
  /** Ciphertext lengths among `ids`: a client value of another length is not hashed at all. */
  lengths: Set<number>;
}

const registry = new WeakMap<Keyring, Withheld>();

/** What identifies `t`'s ciphertext whatever its spelling (see above): "length:base64(SHA-256(curve ‖ x ‖ ciphertext))". */
export function ciphertextId(t: EvToken): string {
  const digest = createHash('sha256')
    .update(t.curve === 'p256' ? 'P' : 'K')
    .update(t.ephemeralPublicKey.subarray(1))
    .update(t.ciphertext)
    .digest('base64');
  return `${t.ciphertext.length}:${digest}`;
}

/** Registers the ev: values among `values` ([secrets] of enclave.toml; kms: values are skipped) for `keyring`. */
export function withholdSecretValues(keyring: Keyring, values: Iterable<string>): void {
  const ids: string[] = [];
  for (const v of values) {
    const t = tryParseEv(v);
    if (t !== null) ids.push(ciphertextId(t));
  }
  withholdCiphertextIds(keyring, ids);
}

/** Registers ciphertext ids (as ciphertextId gives them): how another thread's keyring learns the set. */
export function withholdCiphertextIds(keyring: Keyring, ids: Iterable<string>): void {
  let w = registry.get(keyring);
  for (const id of ids) {
    const length = typeof id === 'string' ? Number(id.slice(0, id.indexOf(':'))) : NaN;
    if (!Number.isSafeInteger(length)) continue;
    if (w === undefined) registry.set(keyring, (w = { ids: new Set(), lengths: new Set() }));
    w.ids.add(id);
    w.lengths.add(length);
  }
}

/** The ids registered for `keyring`, in registration order (the set only grows: its size is a version). */
export function withheldCiphertextIds(keyring: Keyring): string[] {
  return [...(registry.get(keyring)?.ids ?? [])];
}

/** How many ids are registered for `keyring` (cheap: lets a pool tell whether its workers are up to date). */
export function withheldCount(keyring: Keyring): number {
  return registry.get(keyring)?.ids.size ?? 0;
}

/** True when `t` (already opened, with this role) must not be decrypted for anyone but decryptSecrets. */
export function isSecretOnly(keyring: Keyring, t: EvToken, role: string | undefined): boolean {
  if (role === SECRET_ROLE) return true;
  const w = registry.get(keyring);
  return w !== undefined && w.lengths.has(t.ciphertext.length) && w.ids.has(ciphertextId(t));
}
