// The activity page's login sessions (a token is set): each has an idle lifetime (no API call with its cookie for
// that long) and an absolute one (from login, whatever its use), so a cookie copied off a machine, or a tab left
// open on a shared one, stops opening the page. An expired session is forgotten and refused as an unknown one is.
// The page polls /api/status every 5 s, so an open page never idles out; the absolute lifetime asks it to log in
// again. Bounded: at `max`, the expired go first, then the oldest.
import { randomBytes } from 'node:crypto';

/** No API call for this long ends a session: 30 minutes. */
export const DEFAULT_SESSION_IDLE_MS = 30 * 60_000;
/** A session ends this long after its login, however used: 12 hours. */
export const DEFAULT_SESSION_LIFETIME_MS = 12 * 3_600_000;
const DEFAULT_MAX_SESSIONS = 1000;

/** The caller checks the lifetimes (positive integers): activity-server.ts refuses others with a typed error. */
export interface PageSessionsOptions {
  idleMs?: number;
  lifetimeMs?: number;
  max?: number;
  /** Milliseconds on any monotonic-enough clock (default Date.now; tests give a fake). */
  now?: () => number;
}

interface Entry {
  created: number;
  lastUsed: number;
}

export class PageSessions {
  readonly idleMs: number;
  readonly lifetimeMs: number;
  readonly #max: number;
  readonly #now: () => number;
  /** In login order: the first is the oldest. */
  readonly #sessions = new Map<string, Entry>();

  constructor(opts: PageSessionsOptions = {}) {
    this.idleMs = opts.idleMs ?? DEFAULT_SESSION_IDLE_MS;
    this.lifetimeMs = opts.lifetimeMs ?? DEFAULT_SESSION_LIFETIME_MS;
    this.#max = Math.max(1, opts.max ?? DEFAULT_MAX_SESSIONS);
    this.#now = opts.now ?? Date.now;
  }

  get size(): number {
    return this.#sessions.size;
  }

  /** A new session's id (256 random bits, for the cookie). */
  create(): string {
    if (this.#sessions.size >= this.#max) this.sweep();
    if (this.#sessions.size >= this.#max) this.#sessions.delete(this.#sessions.keys().next().value!);
    const id = randomBytes(32).toString('base64url');
    const now = this.#now();
    this.#sessions.set(id, { created: now, lastUsed: now });
    return id;
  }

  /** True when `id` is a live session, whose idle time then starts over; an expired one is forgotten. */
  use(id: string): boolean {
    if (!this.alive(id)) return false;
    this.#sessions.get(id)!.lastUsed = this.#now();
    return true;
  }

  /** True when `id` is a live session (its idle time left as it is); an expired one is forgotten. */
  alive(id: string): boolean {
    const e = this.#sessions.get(id);
    if (e === undefined) return false;
    if (this.#expired(e, this.#now())) {
      this.#sessions.delete(id);
      return false;
    }
    return true;
  }

  /** Forgets every session (the page's token changed: everyone signs in again). */
  clear(): void {
    this.#sessions.clear();
  }

  /** Forgets every expired session. */
  sweep(): void {
    const now = this.#now();
    for (const [id, e] of this.#sessions) if (this.#expired(e, now)) this.#sessions.delete(id);
  }

  #expired(e: Entry, now: number): boolean {
    return now - e.lastUsed >= this.idleMs || now - e.created >= this.lifetimeMs;
  }
}
