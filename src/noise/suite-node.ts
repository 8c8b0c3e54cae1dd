// The hot-path suite: node:crypto (OpenSSL). Node-only; never imported by browser-safe code.
import {
  createCipheriv,
  createDecipheriv,
  createHash,
  createHmac,
  createPrivateKey,
  createPublicKey,
  createSecretKey,
  diffieHellman,
  randomBytes,
  type KeyObject,
} from 'node:crypto';
import { NoiseError } from './errors.ts';
import {
  DH_LEN,
  KEY_LEN,
  TAG_LEN,
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

// DER wrappers turning raw 32-byte X25519 keys into PKCS#8 / SPKI (RFC 8410).
const PKCS8_X25519_PREFIX = Buffer.from('302e020100300506032b656e04220420', 'hex');
const SPKI_X25519_PREFIX = Buffer.from('302a300506032b656e032100', 'hex');

const OPENSSL_HASH: Record<HashName, string> = {
  BLAKE2s: 'blake2s256',
  BLAKE2b: 'blake2b512',
  SHA256: 'sha256',
  SHA512: 'sha512',
};

// KeyObject caches keyed by the caller's key array: a CipherState (and a handshake's ephemeral)
// passes the same Uint8Array on every call, so the key is imported into OpenSSL once, not per
// message. Entries go away with the arrays. The cached KeyObject holds a copy of the key, so an
// entry is only reused while the array still holds the bytes it was created from (checked on the
// cheap for cipher keys by also remembering a copy; callers in src/noise never mutate keys).
const secretKeys = new WeakMap<Uint8Array, { copy: Uint8Array; key: KeyObject }>();
const privateKeys = new WeakMap<Uint8Array, { copy: Uint8Array; key: KeyObject }>();

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

function secretKeyObject(key: Uint8Array): KeyObject {
  const hit = secretKeys.get(key);
  if (hit !== undefined && sameBytes(hit.copy, key)) return hit.key;
  checkKeyLength('cipher key', key, KEY_LEN);
  const entry = { copy: key.slice(), key: createSecretKey(key) };
  secretKeys.set(key, entry);
  return entry.key;
}

function privateKeyObject(privateKey: Uint8Array): KeyObject {
  const hit = privateKeys.get(privateKey);
  if (hit !== undefined && sameBytes(hit.copy, privateKey)) return hit.key;
  checkKeyLength('X25519 private key', privateKey, DH_LEN);
  const der = Buffer.concat([PKCS8_X25519_PREFIX, privateKey]);
  const key = createPrivateKey({ key: der, format: 'der', type: 'pkcs8' });
  der.fill(0);
  privateKeys.set(privateKey, { copy: privateKey.slice(), key });
  return key;
}

function publicKeyObject(publicKey: Uint8Array): KeyObject {
  checkKeyLength('X25519 public key', publicKey, DH_LEN);
  return createPublicKey({ key: Buffer.concat([SPKI_X25519_PREFIX, publicKey]), format: 'der', type: 'spki' });
}

/** A plain Uint8Array view over a Buffer's bytes (no copy): callers get Uint8Array semantics (`slice` copies). */
function view(buf: Buffer): Uint8Array {
  return new Uint8Array(buf.buffer, buf.byteOffset, buf.byteLength);
}

// One scratch IV: createCipheriv copies it, and everything here is synchronous.
const iv = new Uint8Array(12);

export const nodePrimitives: NoisePrimitives = {
  name: 'node',

  generatePrivateKey(): Uint8Array {
    return view(randomBytes(DH_LEN));
  },

  x25519PublicKey(privateKey: Uint8Array): Uint8Array {
    const spki = createPublicKey(privateKeyObject(privateKey)).export({ format: 'der', type: 'spki' });
    return view(spki).slice(SPKI_X25519_PREFIX.length);
  },

  x25519(privateKey: Uint8Array, publicKey: Uint8Array): Uint8Array {
    const priv = privateKeyObject(privateKey);
    const pub = publicKeyObject(publicKey);
    let shared: Buffer;
    try {
      shared = diffieHellman({ privateKey: priv, publicKey: pub });
    } catch (cause) {
      // OpenSSL refuses to derive the all-zero secret a low-order point yields.
      throw new NoiseError('NOISE_BAD_KEY', 'X25519: expected a public key of large order, found a low-order point', { cause });
    }
    if (isAllZero(shared)) throw new NoiseError('NOISE_BAD_KEY', 'X25519: expected a non-zero shared secret, found all zeros (low-order point)');
    return view(shared);
  },

  encrypt(cipher, key, nonce, ad, plaintext): Uint8Array {
    checkCipher(cipher);
    checkNonce(nonce);
    const k = secretKeyObject(key);
    const n = writeNonce(cipher, nonce, iv);
    const c =
      cipher === 'ChaChaPoly'
        ? createCipheriv('chacha20-poly1305', k, n, { authTagLength: TAG_LEN })
        : createCipheriv('aes-256-gcm', k, n, { authTagLength: TAG_LEN });
    if (ad.length > 0) c.setAAD(ad, { plaintextLength: plaintext.length });
    const body = c.update(plaintext);
    c.final(); // stream ciphers: always empty
    const out = new Uint8Array(body.length + TAG_LEN);
    out.set(body, 0);
    out.set(c.getAuthTag(), body.length);
    return out;
  },

  decrypt(cipher, key, nonce, ad, ciphertext): Uint8Array {
    checkCipher(cipher);
    checkCiphertextLength(ciphertext);
    checkNonce(nonce);
    const bodyLen = ciphertext.length - TAG_LEN;
    const k = secretKeyObject(key);
    const n = writeNonce(cipher, nonce, iv);
    const d =
      cipher === 'ChaChaPoly'
        ? createDecipheriv('chacha20-poly1305', k, n, { authTagLength: TAG_LEN })
        : createDecipheriv('aes-256-gcm', k, n, { authTagLength: TAG_LEN });
    d.setAuthTag(ciphertext.subarray(bodyLen));
    if (ad.length > 0) d.setAAD(ad, { plaintextLength: bodyLen });
    const body = d.update(ciphertext.subarray(0, bodyLen));
    try {
      d.final(); // verifies the tag; `body` is released only after this
    } catch (cause) {
      body.fill(0);
      throw decryptFailed(cause);
    }
    return view(body);
  },

  hash(hash: HashName, data: Uint8Array): Uint8Array {
    return view(createHash(opensslHash(hash)).update(data).digest());
  },

  hmac(hash: HashName, key: Uint8Array, data: Uint8Array): Uint8Array {
    return view(createHmac(opensslHash(hash), key).update(data).digest());
  },
};

function opensslHash(hash: HashName): string {
  const name = OPENSSL_HASH[hash];
  if (name === undefined) throw new NoiseError('NOISE_UNSUPPORTED_PROTOCOL', `hash: expected BLAKE2s, BLAKE2b, SHA256 or SHA512, found ${String(hash)}`);
  return name;
}
