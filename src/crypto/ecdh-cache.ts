// The ev: codec's cache of key agreements: values from one SDK key cycle share their ephemeral key, so Z (and the
// KDF output) is remembered per ephemeral key, per keyring. Bounded FIFO. Entries are secret material: an evicted
// entry is zeroed, and wipeEcdhCache zeroes and drops a keyring's whole cache (the local API's close, the agent's).
// Nothing else holds an entry's buffers past the synchronous decryption that fetched it, so zeroing one never
// changes a decryption in progress.

export interface EcdhCacheEntry {
  z: Buffer;
  /** The ephemeral point uncompressed: decompressed once, used for Z and for the KDF's SPKI (public). */
  point: Buffer;
  kdf?: Buffer;
}

/** Most entries per keyring. */
export const ECDH_CACHE_MAX = 4096;

function wipeEntry(e: EcdhCacheEntry): void {
  e.z.fill(0);
  e.kdf?.fill(0);
}

/** One keyring's entries, oldest first; past `max`, the oldest is zeroed and dropped. */
export class EcdhCache {
  readonly #entries = new Map<string, EcdhCacheEntry>();
  readonly #max: number;

  constructor(max = ECDH_CACHE_MAX) {
    this.#max = max;
  }

  get size(): number {
    return this.#entries.size;
  }

  get(id: string): EcdhCacheEntry | undefined {
    return this.#entries.get(id);
  }

  set(id: string, entry: EcdhCacheEntry): void {
    while (this.#entries.size >= this.#max) {
      const [oldest, evicted] = this.#entries.entries().next().value!;
      this.#entries.delete(oldest);
      wipeEntry(evicted);
    }
    this.#entries.set(id, entry);
  }

  /** Zeroes every entry and drops them all. */
  wipe(): void {
    for (const e of this.#entries.values()) wipeEntry(e);
    this.#entries.clear();
  }
}

const caches = new WeakMap<object, EcdhCache>();

/** `keyring`'s cache, made on first use. */
export function ecdhCacheFor(keyring: object): EcdhCache {
  let cache = caches.get(keyring);
  if (cache === undefined) caches.set(keyring, (cache = new EcdhCache()));
  return cache;
}

/** Zeroes and drops `keyring`'s cached key agreements (a later decryption computes them again). */
export function wipeEcdhCache(keyring: object): void {
  caches.get(keyring)?.wipe();
}
