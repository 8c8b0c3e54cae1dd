// Sessions per client address (limits.maxSessionsPerClient), exact across the threads of the process: one
// open-addressing table (linear probing) in shared memory, guarded by SharedLock.
// - A key is 128 bits of SHA-256(per-process salt ‖ address): two addresses never share a count (a collision
//   is as likely as guessing the hash), and a client cannot choose addresses that pile up in one probe run
//   (it does not know the salt). The digest is computed before taking the lock.
// - Entries with a count are at most the sessions open (maxSessions, held by SharedAdmission.sessions), and
//   the table has at least twice as many slots, so probe runs stay short. Removal shifts the run back (no
//   tombstones), so the table never fills with dead entries. Past `maxEntries` distinct addresses, claim()
//   refuses (it can only happen when something claims without holding a session slot).
import { createHash } from 'node:crypto';
import type { ClientSessionsLike } from './admission.ts';
import type { SharedLock } from './shared-lock.ts';

/** Int32 words per slot: 4 key words, then the count (0 = empty slot). */
export const CLIENT_SLOT_WORDS = 5;

export interface SharedClientTable {
  /** The table: `capacity` slots of CLIENT_SLOT_WORDS words from `base`. */
  readonly words: Int32Array;
  readonly base: number;
  /** A power of two. */
  readonly capacity: number;
  /** Index of the word holding how many slots are in use. */
  readonly used: number;
  readonly lock: SharedLock;
  /** The per-process salt of the digests (16 random bytes, the same in every thread). */
  readonly salt: Uint8Array;
}

export class SharedClientSessions implements ClientSessionsLike {
  readonly max: number;
  readonly #t: SharedClientTable;
  readonly #mask: number;
  readonly #maxEntries: number;
  readonly #key = new Int32Array(4);

  constructor(max: number, table: SharedClientTable) {
    this.max = max;
    this.#t = table;
    this.#mask = table.capacity - 1;
    this.#maxEntries = table.capacity >>> 1;
  }

  claim(address: string): boolean {
    this.#digest(address);
    const t = this.#t;
    const w = t.words;
    t.lock.lock();
    try {
      const i = this.#find();
      const at = t.base + (i < 0 ? ~i : i) * CLIENT_SLOT_WORDS;
      if (i >= 0) {
        if (w[at + 4]! >= this.max) return false;
        w[at + 4]!++;
        return true;
      }
      if (Atomics.load(w, t.used) >= this.#maxEntries) return false;
      w.set(this.#key, at);
      w[at + 4] = 1;
      Atomics.add(w, t.used, 1);
      return true;
    } finally {
      t.lock.unlock();
    }
  }

  release(address: string): void {
    this.#digest(address);
    const t = this.#t;
    const w = t.words;
    t.lock.lock();
    try {
      const i = this.#find();
      if (i < 0) return;
      const at = t.base + i * CLIENT_SLOT_WORDS;
      if (--w[at + 4]! === 0) this.#remove(i);
    } finally {
      t.lock.unlock();
    }
  }

  /** Sessions `address` holds now. */
  count(address: string): number {
    this.#digest(address);
    this.#t.lock.lock();
    try {
      const i = this.#find();
      return i < 0 ? 0 : this.#t.words[this.#t.base + i * CLIENT_SLOT_WORDS + 4]!;
    } finally {
      this.#t.lock.unlock();
    }
  }

  /** Addresses holding at least one session now. */
  get addresses(): number {
    return Atomics.load(this.#t.words, this.#t.used);
  }

  #digest(address: string): void {
    const d = createHash('sha256').update(this.#t.salt).update(address).digest();
    for (let k = 0; k < 4; k++) this.#key[k] = d.readInt32LE(4 * k);
  }

  /** Under the lock: the slot holding #key, or ~(the empty slot where it would go). */
  #find(): number {
    const { words: w, base } = this.#t;
    const key = this.#key;
    for (let i = key[0]! & this.#mask; ; i = (i + 1) & this.#mask) {
      const at = base + i * CLIENT_SLOT_WORDS;
      if (w[at + 4] === 0) return ~i;
      if (w[at] === key[0] && w[at + 1] === key[1] && w[at + 2] === key[2] && w[at + 3] === key[3]) return i;
    }
  }

  /** Under the lock: empties slot `i`, moving later entries of its probe run back so that lookups still find them. */
  #remove(i: number): void {
    const { words: w, base } = this.#t;
    const mask = this.#mask;
    let hole = i;
    for (let j = (i + 1) & mask; ; j = (j + 1) & mask) {
      const at = base + j * CLIENT_SLOT_WORDS;
      if (w[at + 4] === 0) break;
      const home = w[at]! & mask;
      // The entry at j may fill the hole unless its home lies cyclically in (hole, j].
      const stays = hole <= j ? hole < home && home <= j : hole < home || home <= j;
      if (stays) continue;
      w.copyWithin(base + hole * CLIENT_SLOT_WORDS, at, at + CLIENT_SLOT_WORDS);
      hole = j;
    }
    w.fill(0, base + hole * CLIENT_SLOT_WORDS, base + (hole + 1) * CLIENT_SLOT_WORDS);
    Atomics.sub(w, this.#t.used, 1);
  }
}
