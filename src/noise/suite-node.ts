// The hot-path suite: node:crypto (OpenSSL). Node-only; never imported by browser-safe code.
import {
  createCipheriv,
  createDecipheriv,
  createHmac,
  createPrivateKey,
  createPublicKey,
  createSecretKey,
  diffieHellman,
  hash as oneShotHash,
  randomFillSync,
  type KeyObject,
} from 'node:crypto';
import { NoiseError } from './errors.ts';
import { nativeAead, type NativeAead, type NativeAeadCipher, type NativeAeadContext } from './native-aead.ts';
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

// X25519 keys cross into OpenSSL as JWK: on Node 20 / OpenSSL 3 the JWK path is several times
// faster than PKCS#8/SPKI DER (which goes through OpenSSL's generic decoder lookup).
// For a private JWK Node derives the public half from `d` and only type-checks `x`, so a
// placeholder `x` is passed; `jwkPrivateImportSound()` verifies that once against RFC 7748 §6.1
// and falls back to PKCS#8 DER if a future Node ever behaves differently.
const PLACEHOLDER_X = 'AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA';
const PKCS8_X25519_PREFIX = Buffer.from('302e020100300506032b656e04220420', 'hex');

const OPENSSL_HASH: Record<HashName, string> = {
  BLAKE2s: 'blake2s256',
  BLAKE2b: 'blake2b512',
  SHA256: 'sha256',
  SHA512: 'sha512',
};

const b64u = (bytes: Uint8Array): string => Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('base64url');
/** Decodes into a dedicated array (small Buffers live in Node's shared pool) and wipes the pooled bytes. */
function fromB64u(text: string | undefined): Uint8Array {
  const pooled = Buffer.from(text ?? '', 'base64url');
  const out = new Uint8Array(pooled);
  pooled.fill(0);
  return out;
}

interface PrivateEntry {
  copy: Uint8Array;
  key: KeyObject;
  pub: Uint8Array | null;
}

// (Copies below are `new Uint8Array(x)`: a Buffer's slice() is a view, which would make the guard compare a key
// with itself.)
// KeyObject caches keyed by the caller's key array: a CipherState (and a handshake's ephemeral)
// passes the same Uint8Array on every call, so each key is imported into OpenSSL once, not per
// message. Entries go away with the arrays. An entry is reused only while the array still holds
// the bytes it was created from (src/noise never mutates a key in use; wiping one evicts it).
const secretKeys = new WeakMap<Uint8Array, { copy: Uint8Array; key: KeyObject }>();
const privateKeys = new WeakMap<Uint8Array, PrivateEntry>();

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

let jwkSound: boolean | undefined;
function jwkPrivateImportSound(): boolean {
  if (jwkSound === undefined) {
    const d = Buffer.from('77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a', 'hex');
    try {
      const k = createPrivateKey({ key: { kty: 'OKP', crv: 'X25519', d: d.toString('base64url'), x: PLACEHOLDER_X }, format: 'jwk' });
      const x = createPublicKey(k).export({ format: 'jwk' }).x;
      jwkSound = x === Buffer.from('8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a', 'hex').toString('base64url');
    } catch {
      jwkSound = false;
    }
  }
  return jwkSound;
}

function importPrivateKey(privateKey: Uint8Array): KeyObject {
  if (jwkPrivateImportSound()) {
    return createPrivateKey({ key: { kty: 'OKP', crv: 'X25519', d: b64u(privateKey), x: PLACEHOLDER_X }, format: 'jwk' });
  }
  const der = Buffer.concat([PKCS8_X25519_PREFIX, privateKey]);
  try {
    return createPrivateKey({ key: der, format: 'der', type: 'pkcs8' });
  } finally {
    der.fill(0);
  }
}

function privateEntry(privateKey: Uint8Array): PrivateEntry {
  const hit = privateKeys.get(privateKey);
  if (hit !== undefined && sameBytes(hit.copy, privateKey)) return hit;
  checkKeyLength('X25519 private key', privateKey, DH_LEN);
  const entry: PrivateEntry = { copy: new Uint8Array(privateKey), key: importPrivateKey(privateKey), pub: null };
  privateKeys.set(privateKey, entry);
  return entry;
}

function publicKeyObject(publicKey: Uint8Array): KeyObject {
  checkKeyLength('X25519 public key', publicKey, DH_LEN);
  return createPublicKey({ key: { kty: 'OKP', crv: 'X25519', x: b64u(publicKey) }, format: 'jwk' });
}

function secretKeyObject(key: Uint8Array): KeyObject {
  const hit = secretKeys.get(key);
  if (hit !== undefined && sameBytes(hit.copy, key)) return hit.key;
  checkKeyLength('cipher key', key, KEY_LEN);
  const entry = { copy: new Uint8Array(key), key: createSecretKey(key) };
  secretKeys.set(key, entry);
  return entry.key;
}

/** A plain Uint8Array view over a Buffer's bytes (no copy): callers get Uint8Array semantics (`slice` copies). */
function view(buf: Buffer): Uint8Array {
  return new Uint8Array(buf.buffer, buf.byteOffset, buf.byteLength);
}

// One scratch IV: createCipheriv copies it, and everything here is synchronous.
const iv = new Uint8Array(12);
const EMPTY = new Uint8Array(0);

/**
 * AEAD encrypt of a plaintext given as consecutive parts (its concatenation is the message) into ciphertext
 * parts: one per plaintext part, then the 16-byte tag. The concatenation is what `encrypt` returns for the
 * concatenated plaintext (ChaCha20 and GCM are stream modes: `update` per part continues the keystream). A caller
 * that copies the bytes onward anyway (a FrameWriter) saves the plaintext and ciphertext concatenations.
 */
function encryptParts(cipher: CipherName, key: Uint8Array, nonce: bigint, ad: Uint8Array, plaintext: Uint8Array | readonly Uint8Array[]): Uint8Array[] {
  checkCipher(cipher);
  checkNonce(nonce);
  const parts = plaintext instanceof Uint8Array ? [plaintext] : plaintext;
  if (aead !== null) return [sealCopy(aead, cipher, key, nonce, ad, parts)];
  const k = secretKeyObject(key);
  const n = writeNonce(cipher, nonce, iv);
  const c =
    cipher === 'ChaChaPoly'
      ? createCipheriv('chacha20-poly1305', k, n, { authTagLength: TAG_LEN })
      : createCipheriv('aes-256-gcm', k, n, { authTagLength: TAG_LEN });
  if (ad.length > 0) {
    let len = 0;
    for (const p of parts) len += p.length;
    c.setAAD(ad, { plaintextLength: len });
  }
  const out: Uint8Array[] = [];
  for (const p of parts) if (p.length > 0) out.push(view(c.update(p)));
  c.final(); // stream ciphers: always empty
  out.push(view(c.getAuthTag()));
  return out;
}

// The native addon's AEAD (native/src/aead.c; optional): a context per key holds only the key (the OpenSSL
// context is shared per thread and keyed per message) — no per-message createCipheriv — and in-place
// sealing/opening of buffers the caller hands over, so a stream's 64 KB messages allocate nothing (each Buffer
// that update() returns is external memory, and V8 runs a full GC every ~64 MB of it). Without the addon,
// node:crypto as before.
const aead = nativeAead();
const OPENSSL_CIPHER: Record<CipherName, NativeAeadCipher> = { ChaChaPoly: 'chacha20-poly1305', AESGCM: 'aes-256-gcm' };
const contexts = new WeakMap<Uint8Array, { copy: Uint8Array; cipher: CipherName; ctx: NativeAeadContext }>();

/** The context for `key` (cached by the key array, like secretKeys). */
function aeadContext(a: NativeAead, cipher: CipherName, key: Uint8Array): NativeAeadContext {
  const hit = contexts.get(key);
  if (hit !== undefined && hit.cipher === cipher && sameBytes(hit.copy, key)) return hit.ctx;
  checkKeyLength('cipher key', key, KEY_LEN);
  const entry = { copy: new Uint8Array(key), cipher, ctx: a.aeadNew(OPENSSL_CIPHER[cipher], key) };
  contexts.set(key, entry);
  return entry.ctx;
}

/** body ‖ tag in one new buffer: the parts copied in and sealed there (one allocation, no cipher object). */
function sealCopy(a: NativeAead, cipher: CipherName, key: Uint8Array, nonce: bigint, ad: Uint8Array, parts: readonly Uint8Array[]): Uint8Array {
  let len = 0;
  for (const p of parts) len += p.length;
  const out = new Uint8Array(len + TAG_LEN);
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  a.aeadSeal(aeadContext(a, cipher, key), writeNonce(cipher, nonce, iv), ad, [out.subarray(0, len)], out.subarray(len));
  return out;
}

function encryptOwned(cipher: CipherName, key: Uint8Array, nonce: bigint, ad: Uint8Array, plaintext: readonly Uint8Array[]): Uint8Array[] {
  if (aead === null) return encryptParts(cipher, key, nonce, ad, plaintext);
  checkCipher(cipher);
  checkNonce(nonce);
  const tag = new Uint8Array(TAG_LEN);
  aead.aeadSeal(aeadContext(aead, cipher, key), writeNonce(cipher, nonce, iv), ad, plaintext as Uint8Array[], tag);
  const out: Uint8Array[] = [];
  for (const p of plaintext) if (p.length > 0) out.push(p);
  out.push(tag);
  return out;
}

function decryptOwned(cipher: CipherName, key: Uint8Array, nonce: bigint, ad: Uint8Array, ciphertext: Uint8Array): Uint8Array {
  if (aead === null) return nodePrimitives.decrypt(cipher, key, nonce, ad, ciphertext);
  checkCipher(cipher);
  checkCiphertextLength(ciphertext);
  checkNonce(nonce);
  if (!aead.aeadOpen(aeadContext(aead, cipher, key), writeNonce(cipher, nonce, iv), ad, ciphertext)) throw decryptFailed();
  return new Uint8Array(ciphertext.buffer, ciphertext.byteOffset, ciphertext.length - TAG_LEN);
}

export const nodePrimitives: NoisePrimitives & Required<Pick<NoisePrimitives, 'encryptParts' | 'encryptOwned' | 'decryptOwned'>> = {
  name: 'node',

  generatePrivateKey(): Uint8Array {
    // 32 random bytes imported as JWK (X25519 clamps the scalar itself) — NOT generateKeyPairSync + export:
    // on Node 20 a KeyObject's JWK export holds the key's mutex while it allocates, and a GC there that
    // collects the finished key-generation job (whose destructor takes the same mutex) deadlocks the whole
    // process (test/fuzz/handshake.fuzz.test.ts hung after a few thousand handshakes). This path is also
    // faster. The KeyObject and public key are cached for the ephemeral's x25519PublicKey / x25519 calls.
    const d = randomFillSync(new Uint8Array(DH_LEN));
    const entry = privateEntry(d);
    entry.pub = fromB64u(createPublicKey(entry.key).export({ format: 'jwk' }).x);
    if (entry.pub.length !== DH_LEN) throw new NoiseError('NOISE_BAD_KEY', `X25519 keygen: expected a 32-byte public key, found ${entry.pub.length}`);
    return d;
  },

  x25519PublicKey(privateKey: Uint8Array): Uint8Array {
    const entry = privateEntry(privateKey);
    entry.pub ??= fromB64u(createPublicKey(entry.key).export({ format: 'jwk' }).x);
    return entry.pub.slice();
  },

  x25519(privateKey: Uint8Array, publicKey: Uint8Array): Uint8Array {
    const priv = privateEntry(privateKey).key;
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
    if (aead !== null) {
      checkCipher(cipher);
      checkNonce(nonce);
      return sealCopy(aead, cipher, key, nonce, ad, [plaintext]);
    }
    const parts = encryptParts(cipher, key, nonce, ad, plaintext);
    const tag = parts[parts.length - 1]!;
    const body = parts.length === 2 ? parts[0]! : EMPTY; // one plaintext part (none when it is empty)
    const out = new Uint8Array(body.length + TAG_LEN);
    out.set(body, 0);
    out.set(tag, body.length);
    return out;
  },

  encryptParts,
  encryptOwned,
  decryptOwned,

  decrypt(cipher, key, nonce, ad, ciphertext): Uint8Array {
    if (aead !== null) return decryptOwned(cipher, key, nonce, ad, new Uint8Array(ciphertext)); // a copy, even of a Buffer
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
    // one-shot crypto.hash (Node ≥ 20.12): no Hash object, about twice as fast for short inputs
    return view(oneShotHash(opensslHash(hash), data, 'buffer'));
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
