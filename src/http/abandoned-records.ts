// Requests a connection took in and never sent to the app (it closed first, or drained) each get a transaction
// record — but one client can pipeline thousands of small requests, and a record each would let it flood the log
// sink (a backed-up sink drops lines: other clients' records). So, on both HTTP paths (the keep-alive fast path's
// requests read ahead, the http.Server's requests waiting their turn): the first MAX_ABANDONED_RECORDS get a
// record each, then one record — the first of the rest's — stands for all the rest, with their count
// (`abandoned_requests`, stages/trx-log.ts).

/** Requests abandoned together that get a record each; the ones after them get one record together. */
export const MAX_ABANDONED_RECORDS = 8;

/**
 * `record(request, 1)` for each of the first MAX_ABANDONED_RECORDS `requests` (in order), then, if more came,
 * `record(the first of the rest, how many the rest are)` once.
 */
export function recordAbandonedRequests<T>(requests: Iterable<T>, record: (request: T, count: number) => void): void {
  let recorded = 0;
  let rest: { first: T } | null = null;
  let restCount = 0;
  for (const request of requests) {
    if (recorded < MAX_ABANDONED_RECORDS) {
      recorded++;
      record(request, 1);
    } else {
      rest ??= { first: request };
      restCount++;
    }
  }
  if (rest !== null) record(rest.first, restCount);
}
