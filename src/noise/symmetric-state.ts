// The Noise SymmetricState (spec rev 34 §5.2) with its embedded handshake CipherState (k, n).
// Internal to src/noise: the handshake drives it; transport traffic goes through CipherState.
import { NoiseError } from './errors.ts';
import { HASH_LEN, KEY_LEN, MAX_NONCE, type CipherName, type HashName, type NoisePrimitives } from './primitives.ts';

const EMPTY = new Uint8Array(0);
const BYTE_1 = Uint8Array.of(1);
const encoder = new TextEncoder();

interface InitialHashes {
  /** h = ck after InitializeSymmetric. */
  h0: Uint8Array;
  /** h after MixHash(empty prologue): the production case, so it is computed once per suite and name. */
  hEmptyPrologue: Uint8Array;
}
// Public values (derived from the protocol name only); names are validated before they get here,
// so each suite's map holds at most the 32 supported names.
const initialCache = new WeakMap<NoisePrimitives, Map<string, InitialHashes>>();

function initialHashes(p: NoisePrimitives, protocolName: string, hash: HashName, hashLen: number): InitialHashes {
  let bySuite = initialCache.get(p);
  if (bySuite === undefined) initialCache.set(p, (bySuite = new Map()));
  let hit = bySuite.get(protocolName);
  if (hit === undefined) {
    const name = encoder.encode(protocolName);
    let h0: Uint8Array;
    if (name.length <= hashLen) {
      h0 = new Uint8Array(hashLen);
      h0.set(name);
    } else {
      h0 = p.hash(hash, name);
    }
    hit = { h0, hEmptyPrologue: p.hash(hash, h0) };
    bySuite.set(protocolName, hit);
  }
  return hit;
}

export class SymmetricState {
  readonly #p: NoisePrimitives;
  readonly #cipher: CipherName;
  readonly #hash: HashName;
  readonly #hashLen: number;
  #h: Uint8Array;
  #ck: Uint8Array;
  #k: Uint8Array | null = null;
  #n = 0n;

  /** InitializeSymmetric(protocolName) followed by MixHash(prologue). */
  constructor(primitives: NoisePrimitives, protocolName: string, cipher: CipherName, hash: HashName, prologue: Uint8Array) {
    this.#p = primitives;
    this.#cipher = cipher;
    this.#hash = hash;
    this.#hashLen = HASH_LEN[hash];
    const start = initialHashes(primitives, protocolName, hash, this.#hashLen);
    this.#ck = start.h0.slice();
    if (prologue.length === 0) {
      this.#h = start.hEmptyPrologue.slice();
    } else {
      this.#h = start.h0.slice();
      this.mixHash(prologue);
    }
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
