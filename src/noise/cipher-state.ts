// A Noise transport CipherState (spec rev 34 §5.1): one key, one 64-bit counter, one direction.
import { concatBytes } from '../util/bytes.ts';
import { NoiseError } from './errors.ts';
import { KEY_LEN, MAX_MESSAGE_LEN, MAX_NONCE, TAG_LEN, checkKeyLength, type CipherName, type NoisePrimitives } from './primitives.ts';

const EMPTY = new Uint8Array(0);

export class CipherState {
  readonly #primitives: NoisePrimitives;
  readonly #cipher: CipherName;
  readonly #key: Uint8Array;
  #nonce: bigint;

  /**
   * Usually obtained from `Handshake.split()`. `initialNonce` exists so a state can be resumed at a
   * known counter (and so tests can start next to the reserved 2^64−1); it must be < 2^64.
   */
  constructor(primitives: NoisePrimitives, cipher: CipherName, key: Uint8Array, initialNonce = 0n) {
    if (cipher !== 'ChaChaPoly' && cipher !== 'AESGCM') {
      throw new NoiseError('NOISE_UNSUPPORTED_PROTOCOL', `cipher: expected ChaChaPoly or AESGCM, found ${String(cipher)}`);
    }
    checkKeyLength('cipher key', key, KEY_LEN);
    if (typeof initialNonce !== 'bigint' || initialNonce < 0n || initialNonce > MAX_NONCE) {
      throw new NoiseError('NOISE_BAD_STATE', `initial nonce: expected 0 ≤ n ≤ 2^64−1, found ${String(initialNonce)}`);
    }
    this.#primitives = primitives;
    this.#cipher = cipher;
    this.#key = new Uint8Array(key); // a copy even of a Buffer (whose slice() is a view)
    this.#nonce = initialNonce;
  }

  /** The counter the next message will use. */
  get nonce(): bigint {
    return this.#nonce;
  }

  get cipher(): CipherName {
    return this.#cipher;
  }

  /** ciphertext ‖ 16-byte tag. Advances the nonce only on success. */
  encrypt(plaintext: Uint8Array, ad: Uint8Array = EMPTY): Uint8Array {
    if (plaintext.length + TAG_LEN > MAX_MESSAGE_LEN) {
      throw new NoiseError('NOISE_MESSAGE_TOO_LARGE', `transport message: expected at most ${MAX_MESSAGE_LEN - TAG_LEN} bytes of plaintext, found ${plaintext.length}`);
    }
    const n = this.#checkedNonce();
    const out = this.#primitives.encrypt(this.#cipher, this.#key, n, ad, plaintext);
    this.#nonce = n + 1n;
    return out;
  }

  /**
   * Like `encrypt` for a plaintext given as consecutive parts (their concatenation is the message); the
   * ciphertext may come back in consecutive parts (the node suite: one per plaintext part, then the tag) whose
   * concatenation is exactly what `encrypt` returns for the concatenated plaintext. For callers that copy the
   * bytes onward anyway (FrameWriter.writeFrameParts): no plaintext or ciphertext concatenation.
   */
  encryptParts(plaintext: Uint8Array | readonly Uint8Array[], ad: Uint8Array = EMPTY): Uint8Array[] {
    return this.#encryptParts(plaintext, ad, false);
  }

  /**
   * `encryptParts` for a plaintext the caller hands over: its parts may be encrypted in place and come back as
   * the ciphertext parts (the node suite with the native addon), so nothing is allocated for the body. The
   * caller must not use the parts afterwards except as this ciphertext.
   */
  encryptOwned(plaintext: Uint8Array | readonly Uint8Array[], ad: Uint8Array = EMPTY): Uint8Array[] {
    return this.#encryptParts(plaintext, ad, true);
  }

  #encryptParts(plaintext: Uint8Array | readonly Uint8Array[], ad: Uint8Array, owned: boolean): Uint8Array[] {
    const parts = plaintext instanceof Uint8Array ? [plaintext] : plaintext;
    let len = 0;
    for (const p of parts) len += p.length;
    if (len + TAG_LEN > MAX_MESSAGE_LEN) {
      throw new NoiseError('NOISE_MESSAGE_TOO_LARGE', `transport message: expected at most ${MAX_MESSAGE_LEN - TAG_LEN} bytes of plaintext, found ${len}`);
    }
    const p = this.#primitives;
    const encrypt = (owned ? p.encryptOwned : undefined) ?? p.encryptParts;
    if (encrypt === undefined) return [this.encrypt(parts.length === 1 ? parts[0]! : concatBytes(...parts), ad)];
    const n = this.#checkedNonce();
    const out = encrypt.call(p, this.#cipher, this.#key, n, ad, parts);
    this.#nonce = n + 1n;
    return out;
  }

  /** Authenticates and decrypts ciphertext ‖ tag. A failure never advances the nonce. */
  decrypt(ciphertext: Uint8Array, ad: Uint8Array = EMPTY): Uint8Array {
    return this.#decrypt(ciphertext, ad, false);
  }

  /**
   * `decrypt` of a ciphertext the caller hands over: it may be decrypted in place and the plaintext returned as a
   * view of it (the node suite with the native addon). After a failure its contents are unspecified (zeroed).
   */
  decryptOwned(ciphertext: Uint8Array, ad: Uint8Array = EMPTY): Uint8Array {
    return this.#decrypt(ciphertext, ad, true);
  }

  #decrypt(ciphertext: Uint8Array, ad: Uint8Array, owned: boolean): Uint8Array {
    if (ciphertext.length > MAX_MESSAGE_LEN) {
      throw new NoiseError('NOISE_MESSAGE_TOO_LARGE', `transport message: expected at most ${MAX_MESSAGE_LEN} bytes, found ${ciphertext.length}`);
    }
    if (ciphertext.length < TAG_LEN) {
      throw new NoiseError('NOISE_BAD_MESSAGE', `transport message: expected at least ${TAG_LEN} bytes (the tag), found ${ciphertext.length}`);
    }
    const n = this.#checkedNonce();
    const p = this.#primitives;
    const out = owned && p.decryptOwned !== undefined ? p.decryptOwned(this.#cipher, this.#key, n, ad, ciphertext) : p.decrypt(this.#cipher, this.#key, n, ad, ciphertext);
    this.#nonce = n + 1n;
    return out;
  }

  #checkedNonce(): bigint {
    const n = this.#nonce;
    if (n >= MAX_NONCE) throw new NoiseError('NOISE_NONCE_EXHAUSTED', 'transport nonce: expected < 2^64−1, found 2^64−1 (reserved); the session must end');
    return n;
  }
}
