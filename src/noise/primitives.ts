// What a primitive suite provides to the Noise layer, plus the constants and small helpers both
// suites share. Browser-safe: no Node built-ins.
import { NoiseError } from './errors.ts';

export type CipherName = 'ChaChaPoly' | 'AESGCM';
export type HashName = 'BLAKE2s' | 'BLAKE2b' | 'SHA256' | 'SHA512';

export interface NoisePrimitives {
  readonly name: 'node' | 'noble';
  /** 32 random bytes (an X25519 private key). */
  generatePrivateKey(): Uint8Array;
  x25519PublicKey(privateKey: Uint8Array): Uint8Array;
  /** X25519(privateKey, publicKey). Throws NoiseError NOISE_BAD_KEY on a bad length or an all-zero result (low-order point). */
  x25519(privateKey: Uint8Array, publicKey: Uint8Array): Uint8Array;
  /** AEAD encrypt: ciphertext ‖ 16-byte tag. `nonce` is the Noise counter (0 ≤ n < 2^64). */
  encrypt(cipher: CipherName, key: Uint8Array, nonce: bigint, ad: Uint8Array, plaintext: Uint8Array): Uint8Array;
  /** AEAD decrypt of ciphertext ‖ tag. Throws NoiseError NOISE_DECRYPT_FAILED (or NOISE_BAD_MESSAGE when shorter than the tag). */
  decrypt(cipher: CipherName, key: Uint8Array, nonce: bigint, ad: Uint8Array, ciphertext: Uint8Array): Uint8Array;
  hash(hash: HashName, data: Uint8Array): Uint8Array;
  hmac(hash: HashName, key: Uint8Array, data: Uint8Array): Uint8Array;
  /**
   * Optional (the node suite): `encrypt` of the concatenation of `plaintext`, returned as consecutive ciphertext
   * parts (their concatenation is what `encrypt` returns) — no concatenating copies. The inputs are not modified.
   */
  encryptParts?(cipher: CipherName, key: Uint8Array, nonce: bigint, ad: Uint8Array, plaintext: readonly Uint8Array[]): Uint8Array[];
  /**
   * Optional (the node suite): like `encryptParts`, but the caller hands the parts over — they may be encrypted
   * in place and returned as the ciphertext parts (then the tag), so nothing is allocated for the body.
   */
  encryptOwned?(cipher: CipherName, key: Uint8Array, nonce: bigint, ad: Uint8Array, plaintext: readonly Uint8Array[]): Uint8Array[];
  /**
   * Optional (the node suite): `decrypt`, but the caller hands `ciphertext` over — it may be decrypted in place
   * and the plaintext returned as a view of it. On failure its body may have been zeroed.
   */
  decryptOwned?(cipher: CipherName, key: Uint8Array, nonce: bigint, ad: Uint8Array, ciphertext: Uint8Array): Uint8Array;
}

/** Largest Noise message (handshake or transport), in bytes. */
export const MAX_MESSAGE_LEN = 65535;
/** AEAD tag length of both ciphers. */
export const TAG_LEN = 16;
/** X25519 key / shared-secret length. */
export const DH_LEN = 32;
/** AEAD key length of both ciphers. */
export const KEY_LEN = 32;
/** 2^64 − 1: reserved by the spec, never used as a nonce. */
export const MAX_NONCE = 0xffffffffffffffffn;

export const HASH_LEN: Readonly<Record<HashName, number>> = { BLAKE2s: 32, SHA256: 32, BLAKE2b: 64, SHA512: 64 };

export const CIPHER_NAMES: readonly CipherName[] = ['ChaChaPoly', 'AESGCM'];
export const HASH_NAMES: readonly HashName[] = ['BLAKE2s', 'BLAKE2b', 'SHA256', 'SHA512'];

/**
 * Writes the 12-byte AEAD nonce for counter `n` into `out`: 4 zero bytes, then the counter as
 * u64 little-endian (ChaChaPoly) or big-endian (AESGCM), as Noise rev 34 §12.3/§12.4 specify.
 */
export function writeNonce(cipher: CipherName, n: bigint, out: Uint8Array): Uint8Array {
  let lo = Number(n & 0xffffffffn);
  let hi = Number(n >> 32n);
  out[0] = out[1] = out[2] = out[3] = 0;
  if (cipher === 'ChaChaPoly') {
    for (let i = 4; i < 8; i++, lo >>>= 8) out[i] = lo & 0xff;
    for (let i = 8; i < 12; i++, hi >>>= 8) out[i] = hi & 0xff;
  } else {
    for (let i = 11; i >= 8; i--, lo >>>= 8) out[i] = lo & 0xff;
    for (let i = 7; i >= 4; i--, hi >>>= 8) out[i] = hi & 0xff;
  }
  return out;
}

export function isAllZero(bytes: Uint8Array): boolean {
  let acc = 0;
  for (let i = 0; i < bytes.length; i++) acc |= bytes[i]!;
  return acc === 0;
}

export function checkKeyLength(what: string, key: Uint8Array, expected: number): void {
  if (!(key instanceof Uint8Array) || key.length !== expected) {
    const found = key instanceof Uint8Array ? `${key.length} bytes` : typeof key;
    throw new NoiseError('NOISE_BAD_KEY', `${what}: expected ${expected} bytes, found ${found}`);
  }
}

export function checkCipher(cipher: CipherName): void {
  if (cipher !== 'ChaChaPoly' && cipher !== 'AESGCM') {
    throw new NoiseError('NOISE_UNSUPPORTED_PROTOCOL', `cipher: expected ChaChaPoly or AESGCM, found ${String(cipher)}`);
  }
}

export function checkNonce(n: bigint): void {
  if (typeof n !== 'bigint' || n < 0n || n >= MAX_NONCE) {
    throw new NoiseError('NOISE_NONCE_EXHAUSTED', `nonce: expected 0 ≤ n < 2^64−1, found ${String(n)}`);
  }
}

/** Throws NOISE_DECRYPT_FAILED / NOISE_BAD_MESSAGE consistently across suites. */
export function decryptFailed(cause?: unknown): NoiseError {
  return new NoiseError('NOISE_DECRYPT_FAILED', 'AEAD authentication failed', cause === undefined ? undefined : { cause });
}

export function checkCiphertextLength(ciphertext: Uint8Array): void {
  if (ciphertext.length < TAG_LEN) {
    throw new NoiseError('NOISE_BAD_MESSAGE', `ciphertext: expected at least ${TAG_LEN} bytes (the tag), found ${ciphertext.length}`);
  }
}
