// Counts in shared memory for SharedAdmission:
// - SharedCount: one Int32 word bounded by a maximum, taken and given back with Atomics (open sessions,
//   waiting handshakes, decrypt jobs): never past the maximum, whatever the number of threads;
// - counter regions: each thread's ResponderCounters (and refused count) in Float64 slots of its own. One
//   writer per region, so `counters.writeStalls++` stays a plain read and write; the main thread sums the
//   regions when it scrapes.
import type { ResponderCounters } from './admission.ts';
import type { OutputBudgetLike } from './output-budget.ts';

export class SharedCount {
  readonly max: number;
  readonly #a: Int32Array;
  readonly #i: number;
  readonly #what: string;

  constructor(words: Int32Array, index: number, max: number, what: string) {
    this.#a = words;
    this.#i = index;
    this.max = max;
    this.#what = what;
  }

  get value(): number {
    return Atomics.load(this.#a, this.#i);
  }

  /** Takes one; false when `max` are taken. */
  tryTake(): boolean {
    const a = this.#a;
    const i = this.#i;
    let n = Atomics.load(a, i);
    while (n < this.max) {
      const seen = Atomics.compareExchange(a, i, n, n + 1);
      if (seen === n) return true;
      n = seen;
    }
    return false;
  }

  /** Gives one back. Throws RangeError (a bug: more given back than taken), leaving the count at 0. */
  giveBack(): void {
    const a = this.#a;
    const i = this.#i;
    let n = Atomics.load(a, i);
    while (n > 0) {
      const seen = Atomics.compareExchange(a, i, n, n - 1);
      if (seen === n) return;
      n = seen;
    }
    throw new RangeError(`shared ${this.#what}: given back more than taken`);
  }
}

/** The counters of ResponderCounters that a thread writes, then its refused count, in slot order. */
export const COUNTER_NAMES = [
  'refusedSessions',
  'refusedPerClient',
  'refusedHandshakes',
  'queuedHandshakes',
  'handshakesWaiting',
  'writeStalls',
  'streamStalls',
  'overBudget',
  'acceptErrors',
  'refused',
] as const;

export type CounterName = (typeof COUNTER_NAMES)[number];
export type ThreadCounters = ResponderCounters & { refused: number };
export type CounterTotals = { [K in CounterName]: number };

/** Float64 slots per region: 16 × 8 = 128 bytes, so threads' regions do not share a cache line. */
export const COUNTER_REGION_SLOTS = 16;

/** The counters of region `index` of `slots`, over `budget` for queuedBytes/peakQueuedBytes. */
export function regionCounters(slots: Float64Array, index: number, budget: OutputBudgetLike): ThreadCounters {
  const base = index * COUNTER_REGION_SLOTS;
  const counters = {} as ThreadCounters;
  COUNTER_NAMES.forEach((name, k) => {
    Object.defineProperty(counters, name, {
      enumerable: true,
      get: () => slots[base + k]!,
      set: (v: number) => void (slots[base + k] = v),
    });
  });
  Object.defineProperties(counters, {
    queuedBytes: { enumerable: true, get: () => budget.queuedBytes },
    peakQueuedBytes: { enumerable: true, get: () => budget.peakQueuedBytes },
  });
  return counters;
}

/**
 * Every region summed. A region being written may be a moment behind; each aligned 8-byte slot is read whole
 * (V8 loads and stores it in one instruction on x64 and arm64; the language guarantees that only for integers).
 */
export function sumRegions(slots: Float64Array, regions: number): CounterTotals {
  const out = Object.fromEntries(COUNTER_NAMES.map((n) => [n, 0])) as CounterTotals;
  for (let r = 0; r < regions; r++) {
    const base = r * COUNTER_REGION_SLOTS;
    COUNTER_NAMES.forEach((name, k) => (out[name] += slots[base + k]!));
  }
  return out;
}
