// Requests a connection took in and never sent to the app (it closed first, or drained) each get a transaction
// record — but one client can pipeline thousands of small requests, and a record each would let it flood the log
// sink (a backed-up sink drops lines: other clients' records). So, on both HTTP paths (the keep-alive fast path's
// requests read ahead, the http.Server's requests waiting their turn): the first MAX_ABANDONED_RECORDS get a
// record each, then one record — the first of the rest's — stands for all the rest, with their count
// (`abandoned_requests`, stages/trx-log.ts) and how many came to each outcome (`abandoned_outcomes`: a request
// answered with a parse error while it waited keeps its status and code there, and in the metrics).

/** Requests abandoned together that get a record each; the ones after them get one record together. */
export const MAX_ABANDONED_RECORDS = 8;
/**
 * Distinct outcomes a summary lists one by one; past them, the rest are counted by status class (status 0, 100,
 * …, 500 with error OTHER): at most MAX_ABANDONED_OUTCOMES + 6 entries, however many requests. In practice there
 * are one or two (CLIENT_GONE or DRAINING; the last request's parse error).
 */
export const MAX_ABANDONED_OUTCOMES = 8;

/** What one abandoned request came to, as its record would say: the status (0: nothing sent) and error code. */
export interface AbandonedOutcome {
  readonly status: number;
  readonly error: string | undefined;
}

/** A record standing for `requests` requests taken in and never sent to the app, by outcome (their sum). */
export interface AbandonedSummary {
  readonly requests: number;
  readonly outcomes: readonly (AbandonedOutcome & { readonly requests: number })[];
}

/** One request's own summary (a record of its own). */
export function abandonedAlone(outcome: AbandonedOutcome): AbandonedSummary {
  return { requests: 1, outcomes: [{ status: outcome.status, error: outcome.error, requests: 1 }] };
}

/** Counts outcomes by status and error code, bounded (MAX_ABANDONED_OUTCOMES). */
class OutcomeCounts {
  readonly #byKey = new Map<string, { status: number; error: string | undefined; requests: number }>();
  #distinct = 0;
  #requests = 0;

  add(o: AbandonedOutcome): void {
    let key = `${o.status}\u0000${o.error ?? ''}`;
    let entry = this.#byKey.get(key);
    if (entry === undefined && this.#distinct >= MAX_ABANDONED_OUTCOMES) {
      const status = o.status >= 100 && o.status < 600 ? Math.floor(o.status / 100) * 100 : 0;
      key = `${status}\u0000\u0000OTHER`;
      entry = this.#byKey.get(key);
      if (entry === undefined) this.#byKey.set(key, (entry = { status, error: 'OTHER', requests: 0 }));
    } else if (entry === undefined) {
      this.#distinct++;
      this.#byKey.set(key, (entry = { status: o.status, error: o.error, requests: 0 }));
    }
    entry.requests++;
    this.#requests++;
  }

  summary(): AbandonedSummary {
    return { requests: this.#requests, outcomes: [...this.#byKey.values()] };
  }
}

/**
 * `record(request, its own summary)` for each of the first MAX_ABANDONED_RECORDS `requests` (in order), then, if
 * more came, `record(the first of the rest, the summary of the rest)` once. `outcomeOf` tells what a request came to.
 */
export function recordAbandonedRequests<T>(requests: Iterable<T>, outcomeOf: (request: T) => AbandonedOutcome, record: (request: T, summary: AbandonedSummary) => void): void {
  let recorded = 0;
  let rest: { first: T; counts: OutcomeCounts } | null = null;
  for (const request of requests) {
    if (recorded < MAX_ABANDONED_RECORDS) {
      recorded++;
      record(request, abandonedAlone(outcomeOf(request)));
    } else {
      rest ??= { first: request, counts: new OutcomeCounts() };
      rest.counts.add(outcomeOf(request));
    }
  }
  if (rest !== null) record(rest.first, rest.counts.summary());
}
