// What a session worker has written to a main-thread log service (the transaction log, the operational log)
// and the main thread has not handed on yet, counted in shared memory: the worker adds as it gathers lines,
// the main thread subtracts once it has written a batch — no message back. Past the bound the worker drops
// new lines and counts them instead of posting: a stalled main thread never makes a worker's messages pile up
// without limit. The same policy as the main thread's own sinks (http/log-sink.ts createStreamLogSink,
// runtime/stream-log-sink.ts): at most 1 MiB waits, what does not fit is dropped and counted, and the count
// is reported as a warning line (DropNotices), never lost silently.
import type { Logger } from 'pino';
import { REFUSAL_LOG_INTERVAL_MS } from '../../util/rate-limited-log.ts';

/** Characters of JSON lines (one byte each for the ASCII lines the logs write) a worker may have in flight. */
export const MAX_IN_FLIGHT_BYTES = 1024 * 1024;
/** Record objects in flight when the main sink takes records rather than lines (~1 MiB of typical records). */
export const MAX_IN_FLIGHT_RECORDS = 4096;

export class InFlight {
  readonly buffer: SharedArrayBuffer;
  readonly #a: Int32Array;

  /** Worker side: a new counter; post `buffer` to the main thread (InFlight.attach) before the first batch. */
  constructor(buffer: SharedArrayBuffer = new SharedArrayBuffer(4)) {
    this.buffer = buffer;
    this.#a = new Int32Array(buffer, 0, 1);
  }

  /** Main side: the worker's counter; undefined when `v` is not one. */
  static attach(v: unknown): InFlight | undefined {
    return v instanceof SharedArrayBuffer && v.byteLength >= 4 ? new InFlight(v) : undefined;
  }

  /** Worker side (the only thread that adds, so check-then-add is exact): takes `n` if the total stays ≤ `max`. */
  tryTake(n: number, max: number): boolean {
    if (Atomics.load(this.#a, 0) + n > max) return false;
    Atomics.add(this.#a, 0, n);
    return true;
  }

  /** `n` taken earlier is handled (main side), or will never be sent (worker side). */
  release(n: number): void {
    Atomics.sub(this.#a, 0, n);
  }

  get value(): number {
    return Atomics.load(this.#a, 0);
  }
}

/** Lines (records) in `text`: the number a dropped batch of JSON lines counts for. */
export function lineCount(text: string): number {
  let n = 0;
  for (let i = text.indexOf('\n'); i >= 0; i = text.indexOf('\n', i + 1)) n++;
  return n === 0 && text !== '' ? 1 : n;
}

/**
 * Main side: the drops workers report, as one warning line per interval with the count (the first report
 * after a quiet interval starts it; close() says what is left) — a flood of drops is never a flood of lines.
 */
export class DropNotices {
  readonly #logger: Logger | undefined;
  readonly #message: string;
  readonly #intervalMs: number;
  #pending = 0;
  #total = 0;
  #timer: NodeJS.Timeout | null = null;

  constructor(logger: Logger | undefined, message: string, intervalMs = REFUSAL_LOG_INTERVAL_MS) {
    this.#logger = logger;
    this.#message = message;
    this.#intervalMs = intervalMs;
  }

  /** Drops reported so far. */
  get total(): number {
    return this.#total;
  }

  note(n: number): void {
    this.#pending += n;
    this.#total += n;
    if (this.#timer === null && this.#logger !== undefined) {
      this.#timer = setTimeout(this.flush, this.#intervalMs);
      this.#timer.unref();
    }
  }

  /** Logs what was reported since the last line (if anything). */
  readonly flush = (): void => {
    if (this.#timer !== null) clearTimeout(this.#timer);
    this.#timer = null;
    if (this.#pending === 0) return;
    const dropped = this.#pending;
    this.#pending = 0;
    this.#logger?.warn({ dropped, total: this.#total, intervalMs: this.#intervalMs }, this.#message);
  };
}

/**
 * Worker side of one bounded log service (trx-proxy.ts, log-proxy.ts): posts its counter to the main thread
 * (the 'inflight' note), takes what fits, counts what does not, and tells the main thread the count ('dropped')
 * when the service says so — with a batch or at close, never a message per drop.
 */
export class InFlightSender {
  readonly #counter = new InFlight();
  readonly #notify: (note: string, payload: unknown) => boolean;
  readonly #max: number;
  #dropped = 0;
  #unreported = 0;

  constructor(notify: (note: string, payload: unknown) => boolean, max: number) {
    this.#notify = notify;
    this.#max = max;
    notify('inflight', this.#counter.buffer);
  }

  /**
   * Takes `n` (characters, or records) if the total stays within the bound; otherwise counts `lost` lines
   * (records) dropped — a function when counting them costs a scan, done only on a drop.
   */
  take(n: number, lost: number | (() => number) = 1): boolean {
    if (this.#counter.tryTake(n, this.#max)) return true;
    const count = typeof lost === 'number' ? lost : lost();
    this.#dropped += count;
    this.#unreported += count;
    return false;
  }

  /** `n` taken earlier that will never be sent. */
  release(n: number): void {
    this.#counter.release(n);
  }

  /** Sends the drops not yet told to the main thread (kept for the next try if the port refuses). */
  reportDrops(): void {
    if (this.#unreported > 0 && this.#notify('dropped', this.#unreported)) this.#unreported = 0;
  }

  /** Dropped over the bound so far. */
  get dropped(): number {
    return this.#dropped;
  }

  /** Taken and not yet released by the main thread. */
  get outstanding(): number {
    return this.#counter.value;
  }
}

/**
 * Main side of one bounded log service: the worker's counter (released once a batch is handed on) and its
 * drop reports, logged as one warning per interval (DropNotices). Serve `notes` beside the service's own.
 */
export class InFlightReceiver {
  readonly notices: DropNotices;
  #counter: InFlight | undefined;

  constructor(logger: Logger | undefined, message: string) {
    this.notices = new DropNotices(logger, message);
  }

  readonly notes = {
    inflight: (v: unknown): void => {
      this.#counter = InFlight.attach(v);
      if (this.#counter === undefined) throw new TypeError('inflight: expected a SharedArrayBuffer');
    },
    dropped: (v: unknown): void => {
      if (typeof v !== 'number' || !Number.isSafeInteger(v) || v <= 0) throw new TypeError('dropped: expected a count');
      this.notices.note(v);
    },
  };

  /** `n` handed on (or refused by the sink): room for the worker again. */
  release(n: number): void {
    this.#counter?.release(n);
  }
}
