// The ev: codec's cache of key agreements: values from one SDK key cycle share their ephemeral key, so Z (and the
// KDF output) is remembered per ephemeral key, per keyring. Bounded FIFO. Entries are secret material: an evicted
// entry is zeroed, and wipeEcdhCache zeroes and drops a keyring's whole cache (the local API's close, the agent's).
// Nothing else holds an entry's buffers past the synchronous decryption that fetched it, so zeroing one never
// changes a decryption in progress.
//
// A cache may keep its secrets in an arena, a SharedArrayBuffer another thread holds too: a decrypt pool worker's
// cache does (decrypt-pool.ts), so the pool zeroes it once the worker has ended, however it ended — a terminated
// or crashed thread runs no code of its own to wipe with, and its heap is freed as it is.

export interface EcdhCacheEntry {
  z: Buffer;
  /** The ephemeral point uncompressed: decompressed once, used for Z and for the KDF's SPKI (public). */
  point: Buffer;
  kdf?: Buffer;
}

/** Most entries per keyring. */
export const ECDH_CACHE_MAX = 4096;

/** Z and the KDF key: 32 bytes each on both curves (P-256, secp256k1) and for SHA-256. */
const SECRET_BYTES = 32;
const SLOT_BYTES = 2 * SECRET_BYTES;

/** The arena size a cache of `max` entries needs. */
export function ecdhArenaBytes(max = ECDH_CACHE_MAX): number {
  return max * SLOT_BYTES;
}

function wipeEntry(e: EcdhCacheEntry): void {
  e.z.fill(0);
  e.kdf?.fill(0);
}

/** `secret` copied into `home`, and zeroed where it was. */
function moveInto(home: Buffer, secret: Buffer): Buffer {
  if (secret.length !== SECRET_BYTES) throw new RangeError(`an ECDH cache secret is ${SECRET_BYTES} bytes, found ${secret.length}`);
  secret.copy(home);
  secret.fill(0);
  return home;
}

/** One keyring's entries, oldest first; past `max`, the oldest is zeroed and dropped. */
export class EcdhCache {
  readonly #entries = new Map<string, EcdhCacheEntry>();
  readonly #max: number;
  readonly #arena: Buffer | undefined;
  /** Arena only: free slot offsets, and where each entry's KDF key goes (the second half of its slot). */
  readonly #free: number[] = [];
  readonly #kdfHomes = new WeakMap<EcdhCacheEntry, Buffer>();

  constructor(max = ECDH_CACHE_MAX, arena?: SharedArrayBuffer) {
    this.#max = max;
    if (arena !== undefined) {
      if (arena.byteLength < ecdhArenaBytes(max)) throw new RangeError(`an ECDH cache of ${max} entries needs a ${ecdhArenaBytes(max)}-byte arena, found ${arena.byteLength}`);
      this.#arena = Buffer.from(arena, 0, ecdhArenaBytes(max));
      this.#freeAll();
    }
  }

  get size(): number {
    return this.#entries.size;
  }

  get(id: string): EcdhCacheEntry | undefined {
    return this.#entries.get(id);
  }

  /** Keeps `entry`; with an arena, its Z is moved there (the buffer given is zeroed). */
  set(id: string, entry: EcdhCacheEntry): void {
    while (this.#entries.size >= this.#max) {
      const [oldest, evicted] = this.#entries.entries().next().value!;
      this.#entries.delete(oldest);
      wipeEntry(evicted);
      if (this.#arena !== undefined) this.#free.push(evicted.z.byteOffset - this.#arena.byteOffset);
    }
    if (this.#arena !== undefined) {
      const at = this.#free.pop()!;
      entry.z = moveInto(this.#arena.subarray(at, at + SECRET_BYTES), entry.z);
      if (entry.kdf !== undefined) entry.kdf = moveInto(this.#arena.subarray(at + SECRET_BYTES, at + SLOT_BYTES), entry.kdf);
      else this.#kdfHomes.set(entry, this.#arena.subarray(at + SECRET_BYTES, at + SLOT_BYTES));
    }
    this.#entries.set(id, entry);
  }

  /** `entry`'s KDF key, derived on first use and kept with the entry (moved into the arena, if there is one). */
  kdf(entry: EcdhCacheEntry, derive: () => Buffer): Buffer {
    if (entry.kdf !== undefined) return entry.kdf;
    const home = this.#kdfHomes.get(entry);
    this.#kdfHomes.delete(entry);
    return (entry.kdf = home === undefined ? derive() : moveInto(home, derive()));
  }

  /** Zeroes every entry and drops them all. */
  wipe(): void {
    for (const e of this.#entries.values()) wipeEntry(e);
    this.#entries.clear();
    if (this.#arena !== undefined) {
      this.#arena.fill(0);
      this.#freeAll();
    }
  }

  #freeAll(): void {
    this.#free.length = 0;
    for (let at = ecdhArenaBytes(this.#max) - SLOT_BYTES; at >= 0; at -= SLOT_BYTES) this.#free.push(at);
  }
}

const caches = new WeakMap<object, EcdhCache>();

/** `keyring`'s cache, made on first use. */
export function ecdhCacheFor(keyring: object): EcdhCache {
  let cache = caches.get(keyring);
  if (cache === undefined) caches.set(keyring, (cache = new EcdhCache()));
  return cache;
}

/** Makes `cache` `keyring`'s cache (a decrypt worker's, in its arena), before its first decryption. */
export function setEcdhCache(keyring: object, cache: EcdhCache): void {
  caches.set(keyring, cache);
}

/** Zeroes and drops `keyring`'s cached key agreements (a later decryption computes them again). */
export function wipeEcdhCache(keyring: object): void {
  caches.get(keyring)?.wipe();
}
