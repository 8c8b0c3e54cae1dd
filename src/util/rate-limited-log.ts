// Refused connections and listener accept errors are logged at most once per interval, as one line with a
// count per reason: a flood must never become one log line per connection (the log is itself a resource).
import type { Logger } from 'pino';

export const REFUSAL_LOG_INTERVAL_MS = 10_000;

export class RateLimitedLog {
  readonly #logger: Logger;
  readonly #message: string;
  readonly #intervalMs: number;
  readonly #level: 'warn' | 'error';
  #counts = new Map<string, number>();
  #timer: NodeJS.Timeout | null = null;

  /** `level`: 'error' for failures of the agent's own (counted all the same), else refusals' 'warn'. */
  constructor(logger: Logger, message: string, intervalMs = REFUSAL_LOG_INTERVAL_MS, level: 'warn' | 'error' = 'warn') {
    this.#logger = logger;
    this.#message = message;
    this.#intervalMs = intervalMs;
    this.#level = level;
  }

  /** Counts one event; the first after a quiet interval starts the interval, whose end logs the counts. */
  note(reason: string): void {
    this.#counts.set(reason, (this.#counts.get(reason) ?? 0) + 1);
    if (this.#timer === null) {
      this.#timer = setTimeout(this.flush, this.#intervalMs);
      this.#timer.unref();
    }
  }

  /** Logs what was counted since the last line (if anything) and starts over. */
  readonly flush = (): void => {
    if (this.#timer !== null) clearTimeout(this.#timer);
    this.#timer = null;
    if (this.#counts.size === 0) return;
    const counts = Object.fromEntries(this.#counts);
    this.#counts = new Map();
    let total = 0;
    for (const n of Object.values(counts)) total += n;
    this.#logger[this.#level]({ total, counts, intervalMs: this.#intervalMs }, this.#message);
  };
}
