// Where ev: work (decrypting and encrypting request values) runs: on the event loop, in slices, under one
// global budget. Each value under its own ephemeral key costs an ECDH (~1 ms P-256, ~4 ms secp256k1 on a
// slow core); done in one go, a 514 KB body of such values held the event loop — every session, every
// request — for 5.2 s.
//
// A job is an iterator whose next() does one unit of work (one value: at most one ECDH per key generation,
// and a keyring holds at most MAX_KEY_GENERATIONS = 4 after `keys rotate`; one ECDH before any rotation). The scheduler
// runs the units of all queued jobs round-robin until `sliceMs` has passed, then yields with setImmediate,
// so the I/O callbacks of everything else run before the next slice. One slice per event-loop turn for all
// jobs together (not one per job): ten floods cost other requests the same slice per turn as one. The event
// loop is therefore never held for more than sliceMs plus one unit (≤ 5 + 4 ms by default).
//
// The budget: at most `maxConcurrent` jobs at once across the agent (HTTP mode and the local API share one
// scheduler); run() beyond it rejects at once with EvBusyError, before any work (429 / 503 to the client).
// With a DecryptPool (the runtime gives it one), whole JSON bodies go to worker threads instead, under the
// same budget (decryptJson), and so does the check that a large body is UTF-8 JSON at all (jsonText);
// header values, /encrypt and keyrings the pool does not hold stay sliced here.
// With session worker threads, each thread has its own scheduler and `slots` (SharedAdmission.decryptSlots)
// holds the budget across all of them.
// scripts/bench/decrypt-flood.ts measures both against the old one-go decryption (README, Reliability).
import type { DecryptPool } from './decrypt-pool.ts';
import { EvBusyError } from './errors.ts';
import { decryptJsonSteps } from './json-decrypt.ts';
import { jsonText } from './json-text.ts';
import type { EcdhBudget } from './ecdh-budget.ts';
import type { Keyring } from './keyring.ts';

export { drain } from './steps.ts';

/** Default of enclave.toml [limits] max_decrypt_fields: most ev: values decrypted for one request. */
export const DEFAULT_MAX_DECRYPT_FIELDS = 1024;
/** Default of enclave.toml [limits] max_concurrent_decrypts. */
export const DEFAULT_MAX_CONCURRENT_DECRYPTS = 16;
/** Default slice: the event loop runs other callbacks at least this often while values are decrypted. */
export const DEFAULT_SLICE_MS = 5;
/**
 * Smallest body whose JSON check (jsonText) goes to the pool. Below it the check runs here, at once and
 * without a budget slot. Measured on a 2-core VM (best of 20, a body of small objects): 4 KiB 0.02 ms,
 * 16 KiB 0.06 ms, 64 KiB 0.24 ms, 256 KiB 2.1 ms, 1 MiB 8.7 ms, 8 MiB 70–190 ms. Up to 64 KiB the check
 * holds the loop less than one decrypt step does, while the pool costs a round trip (its latency is about
 * the check's own at that size), a copy, a decode here and a slot of the global budget; past it the
 * check grows faster than the body and belongs in a worker.
 */
export const JSON_TEXT_POOL_MIN_BYTES = 64 * 1024;

/** What the scheduler uses of its pool (a DecryptPool, or a session worker's proxy to the main thread's). */
export type DecryptSchedulerPool = Pick<DecryptPool, 'keyring' | 'decryptJson' | 'isJsonText'>;

export interface DecryptSchedulerOptions {
  /** Most jobs queued or running at once; more are refused with EvBusyError. */
  maxConcurrent?: number;
  /** Time spent in units before yielding to the event loop (ms). */
  sliceMs?: number;
  /** Worker threads for whole JSON texts (decryptJson): off the event loop, under the same budget (a session worker: the main thread's, by port). */
  pool?: DecryptSchedulerPool;
  /**
   * The budget shared with other threads' schedulers (SharedAdmission.decryptSlots): each job takes a slot
   * there instead of counting against this scheduler's own jobs; its `max` is maxConcurrent.
   */
  slots?: DecryptSlots;
}

/** A budget of concurrent jobs that several schedulers draw on. */
export interface DecryptSlots {
  /** Takes a slot; false when `max` are taken. */
  tryAcquire(): boolean;
  release(): void;
  /** Slots taken now, by every scheduler. */
  readonly active: number;
  readonly max: number;
}

interface Job {
  steps: Iterator<unknown, unknown>;
  resolve(value: unknown): void;
  reject(err: unknown): void;
}

function positive(name: string, value: number, integer: boolean): number {
  if (!(value > 0) || !Number.isFinite(value) || (integer && !Number.isSafeInteger(value))) {
    throw new RangeError(`DecryptScheduler ${name}: expected a positive ${integer ? 'integer' : 'number'}, found ${String(value)}`);
  }
  return value;
}

export class DecryptScheduler {
  readonly maxConcurrent: number;
  readonly sliceMs: number;
  readonly pool: DecryptSchedulerPool | undefined;
  readonly #slots: DecryptSlots | undefined;
  readonly #jobs: Job[] = [];
  #pooled = 0;
  #next = 0;
  #scheduled = false;

  constructor(opts: DecryptSchedulerOptions = {}) {
    this.maxConcurrent = positive('maxConcurrent', opts.maxConcurrent ?? opts.slots?.max ?? DEFAULT_MAX_CONCURRENT_DECRYPTS, true);
    if (opts.slots !== undefined && opts.slots.max !== this.maxConcurrent) {
      throw new RangeError(`DecryptScheduler maxConcurrent: ${this.maxConcurrent} differs from the shared slots' max ${opts.slots.max}`);
    }
    this.sliceMs = positive('sliceMs', opts.sliceMs ?? DEFAULT_SLICE_MS, false);
    this.pool = opts.pool;
    this.#slots = opts.slots;
  }

  /** Jobs of this scheduler queued or running, here and in the pool. */
  get active(): number {
    return this.#jobs.length + this.#pooled;
  }

  /** Takes a slot for one job: against this scheduler's own jobs, or in the shared slots. */
  #acquire(): boolean {
    return this.#slots === undefined ? this.active < this.maxConcurrent : this.#slots.tryAcquire();
  }

  #release(): void {
    this.#slots?.release();
  }

  /**
   * decryptJsonTokens(text, keyring), under the budget: in the pool's workers when the pool serves this
   * keyring, else in slices here. `budget` caps the ECDHs (ecdh-budget.ts); a pool worker gets what is left of it.
   */
  decryptJson(text: string, keyring: Keyring, budget?: EcdhBudget): Promise<{ json: string; count: number }> {
    const pool = this.pool;
    if (pool === undefined || pool.keyring !== keyring) return this.run(decryptJsonSteps(text, keyring, budget));
    if (!this.#acquire()) return Promise.reject(new EvBusyError(this.maxConcurrent));
    this.#pooled++;
    let out: Promise<{ json: string; count: number }>;
    try {
      out = pool.decryptJson(text, budget?.remaining);
    } catch (err) {
      out = Promise.reject(err);
    }
    return out.finally(() => {
      this.#pooled--;
      this.#release();
    });
  }

  /**
   * jsonText(bytes): the text when `bytes` are valid UTF-8 JSON (BOM kept), else null. With a pool and a body
   * of JSON_TEXT_POOL_MIN_BYTES or more, the check runs in a pool worker as one job under the budget
   * (EvBusyError past it) and the valid bytes are decoded here (one native pass; same text as the strict
   * decode, which for valid UTF-8 cannot differ); otherwise here, at once, without a slot.
   */
  async jsonText(bytes: Uint8Array): Promise<string | null> {
    const pool = this.pool;
    if (pool === undefined || bytes.byteLength < JSON_TEXT_POOL_MIN_BYTES) return jsonText(bytes);
    if (!this.#acquire()) throw new EvBusyError(this.maxConcurrent);
    this.#pooled++;
    let valid: boolean;
    try {
      valid = await pool.isJsonText(bytes);
    } finally {
      this.#pooled--;
      this.#release();
    }
    // One native pass (35–45 ms for 8 MiB on this VM, mostly first touches of fresh memory). Decoding in
    // pieces across turns did not help: the joined text is flattened in one copy of the same cost.
    return valid ? Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('utf8') : null;
  }

  /** Runs `steps` to completion in slices; resolves with its return value, rejects with what a step throws. */
  run<T>(steps: Iterator<unknown, T>): Promise<T> {
    if (!this.#acquire()) return Promise.reject(new EvBusyError(this.maxConcurrent));
    return new Promise<T>((resolve, reject) => {
      this.#jobs.push({ steps, resolve: resolve as (v: unknown) => void, reject });
      if (!this.#scheduled) {
        this.#scheduled = true;
        setImmediate(this.#slice);
      }
    });
  }

  readonly #slice = (): void => {
    this.#scheduled = false;
    const jobs = this.#jobs;
    const end = performance.now() + this.sliceMs;
    while (jobs.length > 0) {
      if (this.#next >= jobs.length) this.#next = 0;
      const job = jobs[this.#next]!;
      let r: IteratorResult<unknown, unknown>;
      try {
        r = job.steps.next();
      } catch (err) {
        jobs.splice(this.#next, 1);
        this.#release();
        job.reject(err);
        continue;
      }
      if (r.done === true) {
        jobs.splice(this.#next, 1);
        this.#release();
        job.resolve(r.value);
      } else {
        this.#next++;
      }
      if (performance.now() >= end) break;
    }
    if (jobs.length > 0) {
      this.#scheduled = true;
      setImmediate(this.#slice);
    }
  };
}
