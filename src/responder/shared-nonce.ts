// The per-process control nonce (control.ts) in shared memory, for the sessions of every thread: eight Int32
// words under a sequence lock. The writer (consume: the main thread's control channel) makes the sequence odd,
// writes, makes it even again; a reader retries until it read the same even sequence before and after —
// so a reader never returns half of an old nonce and half of a new one. Every access is an Atomics one.
import { randomBytes } from 'node:crypto';
import { CONTROL_NONCE_LEN, type ControlNonceState } from './control.ts';

export const NONCE_WORDS = CONTROL_NONCE_LEN / 4;

export class SharedControlNonce implements ControlNonceState {
  readonly #a: Int32Array;
  readonly #seq: number;
  readonly #at: number;
  readonly #random: (n: number) => Uint8Array;

  /** `words[seq]` is the sequence, the nonce is words[at .. at + 8). */
  constructor(words: Int32Array, seq: number, at: number, random: (n: number) => Uint8Array = (n) => new Uint8Array(randomBytes(n))) {
    this.#a = words;
    this.#seq = seq;
    this.#at = at;
    this.#random = random;
  }

  current(): Uint8Array {
    const a = this.#a;
    const out = new Int32Array(NONCE_WORDS);
    for (;;) {
      const before = Atomics.load(a, this.#seq);
      if ((before & 1) !== 0) continue; // being written
      for (let k = 0; k < NONCE_WORDS; k++) out[k] = Atomics.load(a, this.#at + k);
      if (Atomics.load(a, this.#seq) === before) return new Uint8Array(out.buffer);
    }
  }

  consume(): Uint8Array {
    const words = new Int32Array(NONCE_WORDS);
    const fresh = this.#random(CONTROL_NONCE_LEN);
    new Uint8Array(words.buffer).set(fresh.subarray(0, CONTROL_NONCE_LEN));
    fresh.fill(0);
    const a = this.#a;
    let seq = Atomics.load(a, this.#seq);
    // Writers exclude each other by taking the sequence from even to odd.
    while ((seq & 1) !== 0 || Atomics.compareExchange(a, this.#seq, seq, seq + 1) !== seq) seq = Atomics.load(a, this.#seq);
    const previous = new Int32Array(NONCE_WORDS);
    for (let k = 0; k < NONCE_WORDS; k++) {
      previous[k] = Atomics.load(a, this.#at + k);
      Atomics.store(a, this.#at + k, words[k]!);
    }
    Atomics.store(a, this.#seq, seq + 2);
    return new Uint8Array(previous.buffer);
  }
}
