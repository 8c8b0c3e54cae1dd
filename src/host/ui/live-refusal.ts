// Why the live tail was refused. EventSource gives up on an answer other than 200 with a bare 'error' event (no
// status, no body), so the page would say "reconnecting" for ever while the server said 429 or 401. On that
// event the page asks the same URL with fetch, which reads the status, Retry-After and the error's code, and
// tells the user the reason: too many live views (retrying in N s), or a session that has ended.

/** What the probe found: the tail opens now, the session ended, or a refusal to show and retry after. */
export type LiveProbe = { kind: 'open' } | { kind: 'unauthorized' } | { kind: 'refused'; reason: string; retryS: number };

const REASONS: Record<string, string> = {
  LIVE_TAIL_CLIENT_FULL: 'too many live views from this address',
  LIVE_TAIL_FULL: 'too many live views of this page',
  ACTIVITY_TOO_MANY_CONNECTIONS: 'too many connections to this page',
};
const DEFAULT_RETRY_S = 10;
const MAX_RETRY_S = 300;

export async function probeLive(url: string): Promise<LiveProbe> {
  const abort = new AbortController();
  let res: Response;
  try {
    res = await fetch(url, { credentials: 'same-origin', cache: 'no-store', signal: abort.signal });
  } catch {
    return { kind: 'refused', reason: 'the page\'s server does not answer', retryS: DEFAULT_RETRY_S };
  }
  if (res.ok) {
    // A place came free since: this probe would hold it as a tail of its own.
    abort.abort();
    return { kind: 'open' };
  }
  if (res.status === 401) return { kind: 'unauthorized' };
  const retryAfter = Number(res.headers.get('retry-after'));
  const retryS = Number.isInteger(retryAfter) && retryAfter > 0 ? Math.min(retryAfter, MAX_RETRY_S) : DEFAULT_RETRY_S;
  let code = '';
  let message = '';
  try {
    const body = (await res.json()) as { error?: { code?: unknown; message?: unknown } };
    code = typeof body.error?.code === 'string' ? body.error.code : '';
    message = typeof body.error?.message === 'string' ? body.error.message : '';
  } catch {
    // Not the server's JSON (a proxy's page): the status says enough.
  }
  return { kind: 'refused', reason: REASONS[code] ?? (message || `HTTP ${res.status}`), retryS };
}
