// The portable suite: pure-JS @noble/* primitives. Runs in browsers (the client SDK) and serves as
// the independent oracle for the node suite in tests. No Node built-ins here.
import { x25519 as nobleX25519 } from '@noble/curves/ed25519.js';
import { chacha20poly1305 } from '@noble/ciphers/chacha.js';
import { gcm } from '@noble/ciphers/aes.js';
import { blake2b, blake2s } from '@noble/hashes/blake2.js';
import { sha256, sha512 } from '@noble/hashes/sha2.js';
import { hmac as nobleHmac } from '@noble/hashes/hmac.js';
import { randomBytes } from '@noble/hashes/utils.js';
import { NoiseError } from './errors.ts';
import {
  DH_LEN,
  KEY_LEN,
  checkCipher,
  checkCiphertextLength,
  checkKeyLength,
  checkNonce,
  decryptFailed,
  isAllZero,
  writeNonce,
  type CipherName,
  type HashName,
  type NoisePrimitives,
} from './primitives.ts';

const HASHES = { BLAKE2s: blake2s, BLAKE2b: blake2b, SHA256: sha256, SHA512: sha512 } as const;

function hashFn(name: HashName): (typeof HASHES)[HashName] {
  const fn = HASHES[name];
  if (fn === undefined) throw new NoiseError('NOISE_UNSUPPORTED_PROTOCOL', `hash: expected BLAKE2s, BLAKE2b, SHA256 or SHA512, found ${String(name)}`);
  return fn;
}

function aead(cipher: CipherName, key: Uint8Array, nonce: bigint, ad: Uint8Array) {
  checkCipher(cipher);
  checkKeyLength('cipher key', key, KEY_LEN);
  checkNonce(nonce);
  const iv = writeNonce(cipher, nonce, new Uint8Array(12));
  return cipher === 'ChaChaPoly' ? chacha20poly1305(key, iv, ad) : gcm(key, iv, ad);
}

export const noblePrimitives: NoisePrimitives = {
  name: 'noble',

  generatePrivateKey(): Uint8Array {
    return randomBytes(DH_LEN);
  },

  x25519PublicKey(privateKey: Uint8Array): Uint8Array {
    checkKeyLength('X25519 private key', privateKey, DH_LEN);
    return nobleX25519.getPublicKey(privateKey);
  },

  x25519(privateKey: Uint8Array, publicKey: Uint8Array): Uint8Array {
    checkKeyLength('X25519 private key', privateKey, DH_LEN);
    checkKeyLength('X25519 public key', publicKey, DH_LEN);
    let shared: Uint8Array;
    try {
      shared = nobleX25519.getSharedSecret(privateKey, publicKey);
    } catch (cause) {
      throw new NoiseError('NOISE_BAD_KEY', 'X25519: expected a public key of large order, found a low-order point', { cause });
    }
    if (isAllZero(shared)) throw new NoiseError('NOISE_BAD_KEY', 'X25519: expected a non-zero shared secret, found all zeros (low-order point)');
    return shared;
  },

  encrypt(cipher, key, nonce, ad, plaintext): Uint8Array {
    return aead(cipher, key, nonce, ad).encrypt(plaintext);
  },

  decrypt(cipher, key, nonce, ad, ciphertext): Uint8Array {
    checkCiphertextLength(ciphertext);
    const c = aead(cipher, key, nonce, ad);
    try {
      return c.decrypt(ciphertext);
    } catch (cause) {
      throw decryptFailed(cause);
    }
  },

  hash(hash: HashName, data: Uint8Array): Uint8Array {
    return hashFn(hash)(data);
  },

  hmac(hash: HashName, key: Uint8Array, data: Uint8Array): Uint8Array {
    return nobleHmac(hashFn(hash), key, data);
  },
};
