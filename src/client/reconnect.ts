// Keeps one live, verified session and re-establishes it when it dies. Browser-safe.
//
// A dead session is replaced lazily: the next request runs a fresh WebSocket + handshake + attestation with the
// same pins (a PCR change after a redeploy makes that reconnect fail with the PCR error). Concurrent requests
// share one attempt. After a failed attempt the next one waits a bounded, growing delay (backoff). Requests that
// were in flight on the dead session are not re-sent (they fail CLIENT_RETRYABLE in session.ts); requests that
// never got an id (NotSentError) are run once more on the new session.
import { abortError, ClientError } from './errors.ts';
import { NotSentError, type Session } from './session.ts';

export interface ReconnectOptions {
  /** Default true. Off: once the first session dies, requests fail CLIENT_CLOSED. */
  enabled: boolean;
  /** First backoff delay after a failed attempt. Default 100 ms. */
  backoffBaseMs: number;
  /** Largest backoff delay. Default 5 000 ms. */
  backoffMaxMs: number;
  now: () => number;
}

export class SessionManager {
  readonly #establish: (signal?: AbortSignal) => Promise<Session>;
  readonly #opts: ReconnectOptions;
  #current: Session | null = null;
  #pending: Promise<Session> | null = null;
  #failures = 0;
  #nextAttemptAt = 0;
  #closed: ClientError | null = null;
  /** Aborts the attempt in flight (its backoff wait and its connect) on close(). */
  #attemptAbort: AbortController | null = null;
  #everConnected = false;
  readonly #onSession: ((s: Session) => void)[] = [];

  constructor(establish: (signal?: AbortSignal) => Promise<Session>, opts: ReconnectOptions) {
    this.#establish = establish;
    this.#opts = opts;
  }

  get current(): Session | null {
    return this.#current;
  }

  get closed(): boolean {
    return this.#closed !== null;
  }

  /** Installs the session connect() established. */
  adopt(session: Session): void {
    this.#current = session;
    this.#everConnected = true;
  }

  /** Called with every new session (the first one included). */
  onSession(cb: (s: Session) => void): void {
    this.#onSession.push(cb);
  }

  /** The live session, establishing one if needed. */
  get(signal?: AbortSignal): Promise<Session> {
    if (this.#closed !== null) return Promise.reject(this.#closed);
    const cur = this.#current;
    if (cur !== null && cur.alive) return Promise.resolve(cur);
    if (this.#everConnected && !this.#opts.enabled) {
      return Promise.reject(new ClientError('CLIENT_CLOSED', 'the session ended and reconnect is disabled'));
    }
    if (this.#pending === null) {
      const p = this.#attempt();
      this.#pending = p;
      const clear = (): void => {
        if (this.#pending === p) this.#pending = null;
      };
      p.then(clear, clear);
    }
    return withSignal(this.#pending, signal);
  }

  /**
   * Runs `fn` on the live session; when it fails because the session died before the request was sent
   * (NotSentError), runs it once more on a fresh session.
   */
  async run<T>(fn: (s: Session) => Promise<T>, signal?: AbortSignal): Promise<T> {
    for (let attempt = 0; ; attempt++) {
      const session = await this.get(signal);
      try {
        return await fn(session);
      } catch (err) {
        if (err instanceof NotSentError && attempt < 2 && this.#closed === null && err.code !== 'CLIENT_CLOSED') continue;
        if (err instanceof NotSentError) throw err.cause instanceof ClientError ? err.cause : err;
        throw err;
      }
    }
  }

  close(): void {
    if (this.#closed !== null) return;
    this.#closed = new ClientError('CLIENT_CLOSED', 'the client was closed');
    this.#current?.close(this.#closed);
    this.#current = null;
    this.#attemptAbort?.abort(this.#closed); // else a WebSocket keeps connecting (and the process running) up to its timeout
  }

  async #attempt(): Promise<Session> {
    const abort = new AbortController();
    this.#attemptAbort = abort;
    try {
      const delay = this.#nextAttemptAt - this.#opts.now();
      if (delay > 0) await sleep(delay, abort.signal);
      if (this.#closed !== null) throw this.#closed;
      const session = await this.#establish(abort.signal);
      if (this.#closed !== null) {
        session.close(this.#closed);
        throw this.#closed;
      }
      this.#failures = 0;
      this.#nextAttemptAt = 0;
      this.#current = session;
      this.#everConnected = true;
      for (const cb of this.#onSession) cb(session);
      return session;
    } catch (err) {
      if (this.#closed !== null) throw this.#closed;
      this.#failures++;
      const backoff = Math.min(this.#opts.backoffMaxMs, this.#opts.backoffBaseMs * 2 ** (this.#failures - 1));
      this.#nextAttemptAt = this.#opts.now() + backoff;
      throw err;
    } finally {
      if (this.#attemptAbort === abort) this.#attemptAbort = null;
    }
  }
}

/** Resolves after `ms`, or at once when `signal` aborts. */
function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const done = (): void => {
      clearTimeout(timer);
      signal.removeEventListener('abort', done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal.addEventListener('abort', done, { once: true });
  });
}

/** `p`, or a rejection as soon as `signal` aborts (p keeps running for whoever else waits on it). */
function withSignal<T>(p: Promise<T>, signal?: AbortSignal): Promise<T> {
  if (signal === undefined) return p;
  if (signal.aborted) return Promise.reject(abortError(signal));
  return new Promise<T>((resolve, reject) => {
    const onAbort = (): void => reject(abortError(signal));
    signal.addEventListener('abort', onAbort, { once: true });
    p.then(
      (v) => {
        signal.removeEventListener('abort', onAbort);
        resolve(v);
      },
      (e: unknown) => {
        signal.removeEventListener('abort', onAbort);
        reject(e);
      },
    );
  });
}
