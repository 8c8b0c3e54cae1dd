// The Noise SymmetricState (spec rev 34 §5.2) with its embedded handshake CipherState (k, n).
// Internal to src/noise: the handshake drives it; transport traffic goes through CipherState.
import { NoiseError } from './errors.ts';
import { HASH_LEN, KEY_LEN, MAX_NONCE, type CipherName, type HashName, type NoisePrimitives } from './primitives.ts';

const EMPTY = new Uint8Array(0);
const BYTE_1 = Uint8Array.of(1);

export class SymmetricState {
  readonly #p: NoisePrimitives;
  readonly #cipher: CipherName;
  readonly #hash: HashName;
  readonly #hashLen: number;
  #h: Uint8Array;
  #ck: Uint8Array;
  #k: Uint8Array | null = null;
  #n = 0n;

  constructor(primitives: NoisePrimitives, protocolName: Uint8Array, cipher: CipherName, hash: HashName) {
    this.#p = primitives;
    this.#cipher = cipher;
    this.#hash = hash;
    this.#hashLen = HASH_LEN[hash];
    if (protocolName.length <= this.#hashLen) {
      this.#h = new Uint8Array(this.#hashLen);
      this.#h.set(protocolName);
    } else {
      this.#h = primitives.hash(hash, protocolName);
    }
    this.#ck = this.#h.slice();
  }

  get handshakeHash(): Uint8Array {
    return this.#h.slice();
  }

  get hasKey(): boolean {
    return this.#k !== null;
  }

  mixHash(data: Uint8Array): void {
    const buf = new Uint8Array(this.#h.length + data.length);
    buf.set(this.#h, 0);
    buf.set(data, this.#h.length);
    this.#h = this.#p.hash(this.#hash, buf);
  }

  mixKey(ikm: Uint8Array): void {
    const [ck, tempK] = this.#hkdf(ikm, 2);
    this.#setChainingKey(ck);
    this.#setKey(tempK);
  }

  mixKeyAndHash(ikm: Uint8Array): void {
    const [ck, tempH, tempK] = this.#hkdf(ikm, 3);
    this.#setChainingKey(ck);
    this.mixHash(tempH);
    this.#setKey(tempK);
    tempH.fill(0);
  }

  encryptAndHash(plaintext: Uint8Array): Uint8Array {
    let out = plaintext;
    if (this.#k !== null) {
      out = this.#p.encrypt(this.#cipher, this.#k, this.#nextNonce(), this.#h, plaintext);
      this.#n++;
    }
    this.mixHash(out);
    return out;
  }

  decryptAndHash(ciphertext: Uint8Array): Uint8Array {
    let out = ciphertext;
    if (this.#k !== null) {
      out = this.#p.decrypt(this.#cipher, this.#k, this.#nextNonce(), this.#h, ciphertext);
      this.#n++;
    }
    this.mixHash(ciphertext);
    return out;
  }

  /** The two transport keys (initiator→responder, responder→initiator), each truncated to 32 bytes. */
  split(): [Uint8Array, Uint8Array] {
    const [k1, k2] = this.#hkdf(EMPTY, 2);
    const out: [Uint8Array, Uint8Array] = [k1.slice(0, KEY_LEN), k2.slice(0, KEY_LEN)];
    k1.fill(0);
    k2.fill(0);
    return out;
  }

  /** Zeroes the chaining key and the handshake cipher key. */
  wipe(): void {
    this.#ck.fill(0);
    this.#k?.fill(0);
    this.#k = null;
  }

  #nextNonce(): bigint {
    // Unreachable in a two-message handshake; kept so the state is correct on its own.
    if (this.#n >= MAX_NONCE) throw new NoiseError('NOISE_NONCE_EXHAUSTED', 'handshake nonce: expected < 2^64−1, found 2^64−1');
    return this.#n;
  }

  #setChainingKey(ck: Uint8Array): void {
    this.#ck.fill(0);
    this.#ck = ck;
  }

  #setKey(tempK: Uint8Array): void {
    this.#k?.fill(0);
    this.#k = tempK.slice(0, KEY_LEN);
    tempK.fill(0);
    this.#n = 0n;
  }

  /** HKDF(ck, ikm, n) of spec §4.3: HMAC-HASH outputs T1..Tn with T_i = HMAC(temp, T_{i−1} ‖ i). */
  #hkdf(ikm: Uint8Array, count: 2): [Uint8Array, Uint8Array];
  #hkdf(ikm: Uint8Array, count: 3): [Uint8Array, Uint8Array, Uint8Array];
  #hkdf(ikm: Uint8Array, count: 2 | 3): Uint8Array[] {
    const temp = this.#p.hmac(this.#hash, this.#ck, ikm);
    const out: Uint8Array[] = [];
    let prev = this.#p.hmac(this.#hash, temp, BYTE_1);
    out.push(prev);
    for (let i = 2; i <= count; i++) {
      const input = new Uint8Array(prev.length + 1);
      input.set(prev, 0);
      input[prev.length] = i;
      prev = this.#p.hmac(this.#hash, temp, input);
      input.fill(0);
      out.push(prev);
    }
    temp.fill(0);
    return out;
  }
}
