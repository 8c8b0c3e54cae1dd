// The process-wide queued-output budget (limits.maxQueuedBytes) in shared memory: the same contract as
// OutputBudget (output-budget.ts), with the sessions of every thread drawing on one total.
// - The total and its peak are BigInt64 words changed with Atomics (exact; a total past 2 GiB is fine).
// - A session that waits for room registers in its own thread; the thread then sleeps on a drain epoch with
//   Atomics.waitAsync (one pending wait per thread, whatever its number of waiters). A drain anywhere bumps
//   the epoch and calls Atomics.notify — only when some thread is waiting (a shared count), so the hot path
//   of an idle budget is two atomic adds.
// - No drain is missed: fits()/over remember the epoch they saw before reading the total, and the wait is
//   on that value — a drain after the check changed the epoch, so the wait returns at once.
import { MAX_FRAME_LEN } from '../wire/frames.ts';
import type { OutputBudgetLike } from './output-budget.ts';

type WaitAsync = (a: Int32Array, index: number, value: number) => { async: false; value: string } | { async: true; value: Promise<string> };
// Node 20 has it; TypeScript's ES2022 lib does not declare it.
const waitAsync = (Atomics as unknown as { waitAsync: WaitAsync }).waitAsync;

/** Where the budget's words are: `words[epoch]`, `words[waiters]`; `totals[queued]`, `totals[peak]`. */
export interface SharedBudgetSlots {
  readonly words: Int32Array;
  readonly epoch: number;
  readonly waiters: number;
  readonly totals: BigInt64Array;
  readonly queued: number;
  readonly peak: number;
}

export class SharedOutputBudget implements OutputBudgetLike {
  readonly limit: number;
  readonly #s: SharedBudgetSlots;
  readonly #waiters = new Set<() => void>();
  /** The drain epoch read by the last fits()/over in this thread. */
  #seen = 0;
  /** This thread has a pending Atomics.waitAsync (counted in words[waiters]). */
  #armed = false;

  constructor(limit: number, slots: SharedBudgetSlots) {
    this.limit = limit;
    this.#s = slots;
  }

  get queuedBytes(): number {
    return Number(Atomics.load(this.#s.totals, this.#s.queued));
  }

  get peakQueuedBytes(): number {
    return Number(Atomics.load(this.#s.totals, this.#s.peak));
  }

  get over(): boolean {
    this.#seen = Atomics.load(this.#s.words, this.#s.epoch);
    return this.queuedBytes + MAX_FRAME_LEN > this.limit;
  }

  fits(bytes: number): boolean {
    this.#seen = Atomics.load(this.#s.words, this.#s.epoch);
    return this.queuedBytes + bytes <= this.limit;
  }

  tryReserve(bytes: number): boolean {
    const s = this.#s;
    this.#seen = Atomics.load(s.words, s.epoch);
    const add = BigInt(bytes);
    const limit = BigInt(this.limit);
    let q = Atomics.load(s.totals, s.queued);
    for (;;) {
      if (q + add > limit) return false;
      const seen = Atomics.compareExchange(s.totals, s.queued, q, q + add);
      if (seen === q) return true;
      q = seen;
    }
  }

  /** `delta`: a whole number of bytes (sessions report MessageSender.queuedBytes changes). */
  adjust(delta: number): void {
    const s = this.#s;
    const now = Atomics.add(s.totals, s.queued, BigInt(delta)) + BigInt(delta);
    // Also after a settling (zero or negative) adjust: a reservation never raises the peak, the bytes queued do.
    this.#raisePeak(now);
    if (delta >= 0) return;
    Atomics.add(s.words, s.epoch, 1);
    if (Atomics.load(s.words, s.waiters) > 0) Atomics.notify(s.words, s.epoch);
  }

  #raisePeak(now: bigint): void {
    const s = this.#s;
    let peak = Atomics.load(s.totals, s.peak);
    while (now > peak) {
      const seen = Atomics.compareExchange(s.totals, s.peak, peak, now);
      if (seen === peak) break;
      peak = seen;
    }
  }

  waitForRoom(cb: () => void): void {
    this.#waiters.add(cb);
    if (this.#armed) return;
    const s = this.#s;
    this.#armed = true;
    Atomics.add(s.words, s.waiters, 1);
    const r = waitAsync(s.words, s.epoch, this.#seen);
    if (r.async) void r.value.then(this.#woken);
    else setImmediate(this.#woken); // bytes drained since this thread last looked
  }

  cancelWait(cb: () => void): void {
    this.#waiters.delete(cb);
  }

  readonly #woken = (): void => {
    this.#armed = false;
    Atomics.sub(this.#s.words, this.#s.waiters, 1);
    const waiters = [...this.#waiters];
    this.#waiters.clear();
    for (const cb of waiters) cb();
  };
}
