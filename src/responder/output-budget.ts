// The process-wide budget for encrypted output queued toward clients (limits.maxQueuedBytes). Each session
// reports the change of its own queue (MessageSender.queuedBytes) here; the budget never refuses bytes
// already queued, it tells sessions what they may queue next:
// - `fits(n)`: a message of n bytes can be queued without the total passing the budget (a session defers or
//   replaces what does not fit, see session.ts);
// - `over`: less than one full frame of room is left (new requests are refused, sessions with output of
//   their own stop reading).
// Sessions whose deferred messages wait for room register with `waitForRoom` and are called back (on a later
// tick) once bytes drain.
import { MAX_FRAME_LEN } from '../wire/frames.ts';

/**
 * What sessions and counters use of a queued-output budget: OutputBudget (one thread) and SharedAdmission's
 * budget (every worker thread of the process) implement it.
 */
export interface OutputBudgetLike {
  readonly limit: number;
  /** Bytes queued toward clients right now, over every session. */
  readonly queuedBytes: number;
  /** The highest `queuedBytes` seen. */
  readonly peakQueuedBytes: number;
  /** Less than one full frame of room is left. */
  readonly over: boolean;
  /** A message of `bytes` can be queued without the total passing the limit. */
  fits(bytes: number): boolean;
  /** A session's queue grew (delta > 0) or drained (delta < 0). */
  adjust(delta: number): void;
  /**
   * Adds `bytes` only if the total stays within the limit, in one step (fits + adjust could pass the limit when
   * sessions of other threads check between the two); false, and nothing added, when it would not fit. A
   * reservation is an estimate: it does not raise the peak; the adjust that settles it to the bytes queued does.
   */
  tryReserve(bytes: number): boolean;
  /** `cb` is called once, on a later tick, after some bytes drained. */
  waitForRoom(cb: () => void): void;
  cancelWait(cb: () => void): void;
}

export class OutputBudget implements OutputBudgetLike {
  readonly limit: number;
  #queued = 0;
  #peak = 0;
  readonly #waiters = new Set<() => void>();
  #wakeScheduled = false;

  constructor(limit: number) {
    this.limit = limit;
  }

  /** Bytes queued toward clients right now, over every session. */
  get queuedBytes(): number {
    return this.#queued;
  }

  /** The highest `queuedBytes` seen (tests and metrics). */
  get peakQueuedBytes(): number {
    return this.#peak;
  }

  get over(): boolean {
    return this.#queued + MAX_FRAME_LEN > this.limit;
  }

  fits(bytes: number): boolean {
    return this.#queued + bytes <= this.limit;
  }

  tryReserve(bytes: number): boolean {
    if (!this.fits(bytes)) return false;
    this.#queued += bytes; // the peak follows the bytes really queued (the settling adjust), not the estimate
    return true;
  }

  /** A session's queue grew (delta > 0) or drained (delta < 0). */
  adjust(delta: number): void {
    this.#queued += delta;
    if (this.#queued > this.#peak) this.#peak = this.#queued;
    if (delta < 0 && this.#waiters.size > 0 && !this.#wakeScheduled) {
      this.#wakeScheduled = true;
      setImmediate(this.#wake);
    }
  }

  /** `cb` is called once, on a later tick, after some bytes drained. */
  waitForRoom(cb: () => void): void {
    this.#waiters.add(cb);
  }

  cancelWait(cb: () => void): void {
    this.#waiters.delete(cb);
  }

  readonly #wake = (): void => {
    this.#wakeScheduled = false;
    const waiters = [...this.#waiters];
    this.#waiters.clear();
    for (const cb of waiters) cb();
  };
}
