// worker_threads that decrypt the ev: values of JSON texts off the event loop (DecryptScheduler hands them
// bodies when it has a pool), and tell whether a large body is UTF-8 JSON at all (isJsonText). Measured against slicing on the event loop in scripts/bench/decrypt-flood.ts:
// the request beside a flood is served as if there were none, and the flood uses every core.
//
// Each worker holds its own Keyring, built from copies of the private scalars (same process, same memory:
// no new place the keys leave to), and the ids of the [secrets] ciphertexts it must refuse like the main thread. Workers start on first use, take jobs least-loaded first, are unref'd
// (they never keep the process alive) and are replaced when one dies (its jobs fail as EvPoolError).
// A worker's cache of key agreements lives in an arena this side holds too (ecdh-cache.ts): zeroed here once the
// worker has ended, whichever way (close, terminate, a crash), since an ended thread's heap is freed unzeroed.
// From a TypeScript checkout (tsx, vitest) a worker registers tsx before loading decrypt-worker.ts; from
// dist/ it loads decrypt-worker.js.
import os from 'node:os';
import type { Worker } from 'node:worker_threads';
import { spawnModuleWorker } from './module-worker.ts';
import { ecdhArenaBytes } from './ecdh-cache.ts';
import { EvBudgetError, EvDecryptError, EvPoolError } from './errors.ts';
import type { EvDecryptReason } from './errors.ts';
import { wipeScalars, type Keyring, type KeyScalars } from './keyring.ts';
import { transferableBytes } from './json-text.ts';
import { withheldCiphertextIds, withheldCount } from './secret-ciphertexts.ts';

type Reply = { id: number; json: string; count: number } | { id: number; valid: boolean } | { id: number; reason: EvDecryptReason; detail: string } | { id: number; budget: number } | { id: number; failed: string };

interface Slot {
  worker: Worker;
  load: number;
  /** How many of the keyring's [secrets] ciphertext ids the worker has been given (secret-ciphertexts.ts). */
  withheld: number;
  pending: Map<number, { resolve(v: never): void; reject(err: unknown): void }>;
}

/**
 * What a worker starts with: every key generation (newest first), the [secrets] ciphertext ids it must refuse,
 * and the arena its ECDH cache keeps its secrets in.
 */
export interface DecryptWorkerData {
  scalars: KeyScalars[];
  withheld: string[];
  ecdhArena: SharedArrayBuffer;
}

function spawn(data: DecryptWorkerData): Worker {
  return spawnModuleWorker(import.meta.url, 'decrypt-worker', { workerData: data });
}

export interface DecryptPoolOptions {
  /** Worker threads; default os.availableParallelism(). */
  size?: number;
}

export class DecryptPool {
  readonly size: number;
  readonly keyring: Keyring;
  readonly #slots: (Slot | undefined)[];
  #nextId = 0;
  #closed = false;

  constructor(keyring: Keyring, opts: DecryptPoolOptions = {}) {
    const size = opts.size ?? os.availableParallelism();
    if (!Number.isSafeInteger(size) || size < 1) throw new RangeError(`DecryptPool size: expected a positive integer, found ${String(opts.size)}`);
    this.size = size;
    this.keyring = keyring;
    this.#slots = new Array<Slot | undefined>(size).fill(undefined);
  }

  /** Live worker threads. */
  get workers(): number {
    return this.#slots.filter((s) => s !== undefined).length;
  }

  /**
   * decryptJsonTokens(text, keyring) in a worker: same result, same EvDecryptError (reason, detail); with
   * `maxEcdh`, the worker charges an EcdhBudget of that size (EvBudgetError past it).
   */
  decryptJson(text: string, maxEcdh?: number): Promise<{ json: string; count: number }> {
    return this.#send((id) => (maxEcdh === undefined ? { id, text } : { id, text, maxEcdh }));
  }

  /**
   * Whether `bytes` are valid UTF-8 JSON (jsonText(bytes) !== null), decided in a worker. The worker answers
   * yes or no, not the text: the caller, which holds the bytes, decodes valid ones itself (one native pass),
   * so an 8 MiB string never crosses threads twice (pool → main → session thread). The bytes are transferred:
   * one copy unless `owned` (the caller gives up a view that spans its own buffer), the caller's bytes untouched.
   */
  isJsonText(bytes: Uint8Array, owned = false): Promise<boolean> {
    const out = transferableBytes(bytes, owned);
    return this.#send((id) => ({ id, bytes: out }), [out.buffer]);
  }

  #send<T>(message: (id: number) => object, transfer?: ArrayBuffer[]): Promise<T> {
    if (this.#closed) return Promise.reject(new EvPoolError('EV_POOL_CLOSED', 'the decrypt pool is closed'));
    const slot = this.#pick();
    // [secrets] registered since the worker started (decryptSecrets at boot): sent before the job, in order.
    if (slot.withheld !== withheldCount(this.keyring)) {
      const ids = withheldCiphertextIds(this.keyring);
      slot.worker.postMessage({ withhold: ids.slice(slot.withheld) });
      slot.withheld = ids.length;
    }
    const id = this.#nextId++;
    const m = message(id);
    if (slot.load++ === 0) slot.worker.ref(); // busy workers keep the process alive; idle ones do not
    return new Promise<T>((resolve, reject) => {
      slot.pending.set(id, { resolve: resolve as (v: never) => void, reject });
      slot.worker.postMessage(m, transfer);
    });
  }

  async close(): Promise<void> {
    this.#closed = true;
    const slots = this.#slots.splice(0, this.#slots.length, ...new Array<undefined>(this.size).fill(undefined));
    await Promise.all(slots.flatMap((s) => (s === undefined ? [] : [s.worker.terminate()])));
  }

  #pick(): Slot {
    let best: Slot | undefined;
    for (let i = 0; i < this.size; i++) {
      const s = (this.#slots[i] ??= this.#start(i));
      if (best === undefined || s.load < best.load) best = s;
      if (best.load === 0) break;
    }
    return best!;
  }

  #start(index: number): Slot {
    const scalars = this.keyring.keyMaterial().scalars(); // every generation, newest first
    const withheld = withheldCiphertextIds(this.keyring);
    const ecdhArena = new SharedArrayBuffer(ecdhArenaBytes());
    const worker = spawn({ scalars, withheld, ecdhArena }); // workerData is cloned here (the arena shared): the scalars on this side are wiped at once
    wipeScalars(scalars);
    worker.unref();
    const slot: Slot = { worker, load: 0, withheld: withheld.length, pending: new Map() };
    const fail = (why: string): void => {
      if (this.#slots[index] === slot) this.#slots[index] = undefined;
      for (const p of slot.pending.values()) p.reject(new EvPoolError('EV_POOL_WORKER_FAILED', `a decrypt worker stopped (${why}); the request was not decrypted`));
      slot.pending.clear();
    };
    worker.on('message', (m: Reply | { ready: true }) => {
      if (!('id' in m)) return;
      const p = slot.pending.get(m.id);
      if (p === undefined) return;
      slot.pending.delete(m.id);
      if (--slot.load === 0) slot.worker.unref();
      if ('json' in m) p.resolve({ json: m.json, count: m.count } as never);
      else if ('valid' in m) p.resolve(m.valid as never);
      else if ('reason' in m) p.reject(new EvDecryptError(m.reason, m.detail));
      else if ('budget' in m) p.reject(new EvBudgetError(m.budget));
      else p.reject(new EvPoolError('EV_POOL_WORKER_FAILED', `a decrypt worker failed (${m.failed}); the request was not decrypted`));
    });
    worker.on('error', (err) => fail(err.name));
    worker.on('exit', (code) => {
      new Uint8Array(ecdhArena).fill(0); // the thread has stopped: nothing writes the arena any more
      fail(`exit ${code}`);
    });
    return slot;
  }
}
