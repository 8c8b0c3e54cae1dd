// Stage: forward to the app. One undici keep-alive Pool to 127.0.0.1:<port>: requests reuse idle
// connections (no TCP connect per request). Bodies stream both ways with backpressure (chunked in, chunked
// out when there is no length). Hop-by-hop headers (and those the Connection header names) were removed
// from the request when the exchange was built; they are removed from the response here. The app
// unreachable → 502 JSON; no response head within the timeout → 504 JSON; a failure after the response
// head was sent can only cut the connection.
// undici is imported on the first request that needs the pool (not the fast path's): an agent whose requests
// all take the fast path never loads it (~0.7 MB of source and its heap, in every enclave).
import type * as UndiciModule from 'undici';
import type { Dispatcher, Pool } from 'undici';
import { PassThrough } from 'node:stream';
import type { Readable } from 'node:stream';
import type { Exchange, ResponseChannel, Stage } from '../exchange.ts';
import { BufferBody } from '../simple-request.ts';
import { endToEndHeaders, removeHeader } from '../headers.ts';
import { HttpModeError } from '../errors.ts';
import { AppClient } from '../app-client.ts';
import type { AppRequest, AppResponseHandler } from '../app-client.ts';
import type { HeaderList } from '../headers.ts';
import type { RateLimitedLog } from '../../util/rate-limited-log.ts';

export interface UpstreamOptions {
  host: string;
  port: number;
  /** Time to wait for the response head, and the longest gap between body chunks (ms). */
  timeoutMs: number;
  /** Idle keep-alive connections are kept this long (ms). */
  keepAliveTimeoutMs?: number;
  /** Upper bound on concurrent connections to the app (default 256; more requests queue). */
  connections?: number;
  /** While the app has never answered, refused connections are retried for this long (ms, default 0). */
  startupGraceMs?: number;
}

type Undici = typeof UndiciModule;
/** undici once imported (one import per process, shared by every Upstream). */
let undici: Undici | null = null;
let undiciLoad: Promise<Undici> | null = null;

/**
 * The keep-alive pools to the app: undici for everything (made on first use), and the lean client
 * (app-client.ts) for fast-path requests, whose bodies are in memory. Each pool holds at most `connections`.
 */
export class Upstream {
  #pool: Pool | null = null;
  #poolOpening: Promise<Pool> | null = null;
  #closed = false;
  readonly #poolOptions: Pool.Options;
  readonly lean: AppClient;
  readonly origin: string;
  readonly timeoutMs: number;
  readonly startupGraceMs: number;
  /** Set once the app has sent any response: from then on a refused connection is an outage, not a start-up. */
  answered = false;

  constructor(opts: UpstreamOptions) {
    this.origin = `http://${opts.host.includes(':') ? `[${opts.host}]` : opts.host}:${opts.port}`;
    this.timeoutMs = opts.timeoutMs;
    this.startupGraceMs = opts.startupGraceMs ?? 0;
    this.#poolOptions = {
      connections: opts.connections ?? 256,
      pipelining: 1,
      keepAliveTimeout: opts.keepAliveTimeoutMs ?? 30_000,
      keepAliveMaxTimeout: Math.max(opts.keepAliveTimeoutMs ?? 30_000, 60_000),
      headersTimeout: opts.timeoutMs,
      bodyTimeout: opts.timeoutMs,
      connect: { timeout: Math.min(opts.timeoutMs, 10_000) },
    };
    this.lean = new AppClient({
      host: opts.host,
      port: opts.port,
      maxConnections: opts.connections ?? 256,
      keepAliveTimeoutMs: opts.keepAliveTimeoutMs ?? 30_000,
      headersTimeoutMs: opts.timeoutMs,
      bodyTimeoutMs: opts.timeoutMs,
    });
  }

  /**
   * The undici pool: at once when it is open, else a promise (undici imported, the pool made). Rejects with
   * HTTP_FORWARDER_CLOSED after close().
   */
  pool(): Pool | Promise<Pool> {
    if (this.#pool !== null) return this.#pool;
    undiciLoad ??= import('undici').then((m) => (undici = m));
    this.#poolOpening ??= undiciLoad.then((m) => {
      if (this.#closed) throw new HttpModeError('HTTP_FORWARDER_CLOSED', 503, 'the HTTP forwarder is closed');
      return (this.#pool = new m.Pool(this.origin, this.#poolOptions));
    });
    return this.#poolOpening;
  }

  async close(): Promise<void> {
    this.#closed = true;
    this.lean.close();
    await this.#pool?.destroy().catch(() => {});
  }
}

const REFUSED = new Set(['ECONNREFUSED', 'ECONNRESET', 'EPIPE', 'UND_ERR_SOCKET', 'UND_ERR_CLOSED', 'UND_ERR_CONNECT_TIMEOUT', 'ENOTFOUND', 'EADDRNOTAVAIL', 'APP_CONNECTION_CLOSED']);
const TIMEOUTS = new Set(['UND_ERR_HEADERS_TIMEOUT', 'UND_ERR_BODY_TIMEOUT', 'APP_HEADERS_TIMEOUT', 'APP_BODY_TIMEOUT']);

/** Maps an upstream failure before the response head to the client's status. */
export function upstreamError(err: unknown): HttpModeError {
  const code = (err as { code?: unknown } | null)?.code;
  if (typeof code === 'string' && TIMEOUTS.has(code)) {
    return new HttpModeError('HTTP_APP_TIMEOUT', 504, 'the app did not answer in time', { cause: err });
  }
  // undici's InvalidArgumentError and NotSupportedError (by code: undici may not be loaded).
  if (code === 'UND_ERR_INVALID_ARG' || code === 'UND_ERR_NOT_SUPPORTED') {
    return new HttpModeError('HTTP_BAD_REQUEST', 400, `request not forwardable: ${(err as Error).message}`, { cause: err });
  }
  if (typeof code === 'string' && REFUSED.has(code)) {
    return new HttpModeError('HTTP_APP_UNREACHABLE', 502, 'the app is unreachable', { cause: err });
  }
  return new HttpModeError('HTTP_APP_UNREACHABLE', 502, 'the app did not answer', { cause: err });
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** The operator-log line counting failed app requests (forwardStage's failureLog). */
export const UPSTREAM_FAILURES_MESSAGE = 'upstream requests failed';

export interface ForwardStageOptions {
  /**
   * Counts app requests that failed before the app's answer, by code and cause, into one line per interval: a
   * client can make one fail per request (a chunked body whose framing breaks off), so never a line each. The
   * request's transaction record has its request id and error code.
   */
  failureLog?: RateLimitedLog;
  dropResponseHeaders?: ReadonlySet<string>;
}

export function forwardStage(upstream: Upstream, opts: ForwardStageOptions = {}): Stage {
  return async (ex) => {
    const res = ex.res;
    if (res === null) throw new HttpModeError('HTTP_INTERNAL', 500, 'forward stage reached without a response');

    const body = ex.body;
    const method = ex.req.method ?? 'GET';
    // The client's body reaches undici through a PassThrough it may destroy without touching the request:
    // the client connection must survive an app failure to receive the 502, and once the exchange is over
    // the forwarder drains whatever the app did not read (a keep-alive stream goes on).
    // It is handed over as an async iterable so the framing stays what the client chose: undici would
    // otherwise turn a chunked body that happens to be fully buffered into a Content-Length one.
    // A fast-path body in memory goes as the buffer itself (undici sends it with its length, and can send
    // it again on a retry).
    let requestBody: Readable | Buffer | undefined;
    /** What a retry checks: once the app may have read part of the body, it cannot be sent again. */
    let sent: Readable | null = body;
    const whole = body instanceof BufferBody ? body.takeBuffer() : null;
    if (whole !== null) {
      requestBody = whole;
      sent = null;
    } else if (body !== null && (body as unknown) === ex.req) {
      const pass = new PassThrough({ highWaterMark: 64 * 1024 });
      pass.on('error', () => {});
      body.pipe(pass);
      res.once('close', () => {
        body.unpipe(pass);
        pass.destroy();
      });
      requestBody = iterate(pass) as unknown as Readable;
      sent = pass;
    } else {
      requestBody = body ?? undefined;
    }

    // A fast-path request (no connection of its own) whose body is in memory goes through the lean client.
    const lean = ex.socket === null && (body === null || whole !== null);
    // The length the app is told is the length of the body it gets (a decrypt stage may have changed it);
    // without one, undici sends the body chunked. The lean client writes it from the buffer.
    removeHeader(ex.upstreamHeaders, 'content-length');
    if (!lean && body !== null && ex.bodyLength !== null) ex.upstreamHeaders.push('content-length', String(ex.bodyLength));

    const started = performance.now();
    for (;;) {
      const exchange = new UpstreamExchange(ex, res, upstream, opts.dropResponseHeaders);
      const path = ex.req.url ?? '/';
      const failure = await (lean
        ? exchange.runLean({ method, path, headers: ex.upstreamHeaders, body: whole })
        : exchange.run({ origin: upstream.origin, path, method: method as Dispatcher.HttpMethod, headers: ex.upstreamHeaders, body: requestBody }));
      if (failure === null) return;
      if (failure instanceof HttpModeError) throw failure;
      const code = (failure as { code?: unknown }).code;
      const canRetry = code === 'ECONNREFUSED' && !upstream.answered && performance.now() - started < upstream.startupGraceMs && !(sent?.readableDidRead ?? false);
      if (canRetry) {
        await sleep(100);
        if (res.destroyed) {
          ex.errorCode ??= 'CLIENT_GONE';
          return;
        }
        continue;
      }
      const mapped = upstreamError(failure);
      const cause = (failure as { code?: unknown }).code;
      // A client body that never completed (its framing broke off, or the client left mid-body: its connection is
      // gone) fails the app request too: the client's doing, and the operator's count must not read as an app outage.
      const clientCut = body !== null && whole === null && !body.readableEnded && ex.socket?.destroyed === true;
      opts.failureLog?.note(`${clientCut ? 'CLIENT_BODY_INCOMPLETE' : mapped.code} ${typeof cause === 'string' ? cause : 'no code'}`);
      throw mapped;
    }
  };
}

async function* iterate(stream: Readable): AsyncGenerator<Buffer> {
  for await (const chunk of stream) yield chunk as Buffer;
}

/**
 * One request to the app through undici's dispatcher API (no AbortController, no intermediate body stream):
 * the response head goes to the client as soon as it is in, body chunks are written straight into the
 * client's response with backpressure (undici's socket pauses while the client is not reading). `run`
 * resolves with null once the exchange is over (answered, the client gone, or cut after the head), or with
 * the error that happened before any response head (the caller maps it to 502/504 or retries).
 */
class UpstreamExchange implements Dispatcher.DispatchHandler, AppResponseHandler {
  #abort: ((err?: Error) => void) | null = null;
  #resume: (() => void) | null = null;
  #clientGone = false;
  #headSent = false;
  #settle: ((failure: unknown) => void) | null = null;
  /** Set while the exchange runs through undici: its abort functions are given its RequestAbortedError. */
  #undici: Undici | null = null;

  // Listeners on the client's response, made in the constructor (plain assignments: no per-request
  // function naming under a keepNames transpiler such as tsx).
  readonly #onResClose: () => void;
  readonly #onDrain: () => void;

  #resClosed(): void {
    if (this.#res.writableFinished) return;
    this.#clientGone = true;
    this.#cancel();
    if (this.#headSent) this.#done(null);
  }

  readonly ex: Exchange;
  readonly #res: ResponseChannel;
  readonly #upstream: Upstream;
  readonly #drop: ReadonlySet<string> | undefined;

  constructor(ex: Exchange, res: ResponseChannel, upstream: Upstream, drop: ReadonlySet<string> | undefined) {
    this.ex = ex;
    this.#res = res;
    this.#upstream = upstream;
    this.#drop = drop;
    this.#onResClose = () => this.#resClosed();
    this.#onDrain = () => this.#resume?.();
  }

  /** Through undici (imported and its pool made first, by the first request that gets here). */
  run(opts: Dispatcher.DispatchOptions): Promise<unknown> {
    const pool = this.#upstream.pool();
    if (!(pool instanceof Promise)) return this.#startUndici(pool, opts);
    return pool.then(
      (p) => this.#startUndici(p, opts),
      (err: unknown) => (err instanceof HttpModeError ? err : new HttpModeError('HTTP_INTERNAL', 500, 'the upstream client could not be loaded', { cause: err })),
    );
  }

  #startUndici(pool: Pool, opts: Dispatcher.DispatchOptions): Promise<unknown> {
    this.#undici = undici;
    return this.#start(() => pool.dispatch(opts, this));
  }

  /** Aborts the request in flight, if any: undici's way or the lean client's. */
  #cancel(): void {
    this.#abort?.(this.#undici === null ? undefined : new this.#undici.errors.RequestAbortedError());
  }

  /** Through the lean client (a body in memory). */
  runLean(req: AppRequest): Promise<unknown> {
    return this.#start(() => {
      try {
        this.#abort = this.#upstream.lean.request(req, this);
      } catch (err) {
        this.#done(err);
      }
    });
  }

  #start(send: () => void): Promise<unknown> {
    if (this.#res.destroyed) {
      this.ex.errorCode ??= 'CLIENT_GONE';
      return Promise.resolve(null);
    }
    return new Promise<unknown>((resolve) => {
      this.#settle = resolve;
      // `on`, not `once` (no wrapper per request): #done removes it, and 'close' comes once.
      this.#res.on('close', this.#onResClose);
      send();
    });
  }

  #done(failure: unknown): void {
    const settle = this.#settle;
    if (settle === null) return;
    this.#settle = null;
    this.#res.removeListener('close', this.#onResClose);
    this.#res.removeListener('drain', this.#onDrain);
    settle(failure);
  }

  onConnect(abort: (err?: Error) => void): void {
    this.#abort = abort;
    if (this.#clientGone) this.#cancel();
  }

  onHeaders(statusCode: number, rawHeaders: Buffer[], resume: () => void): boolean {
    // Interim responses (100 Continue, 103 Early Hints) are not relayed.
    if (statusCode < 200) return true;
    const list: string[] = new Array<string>(rawHeaders.length);
    for (let i = 0; i < rawHeaders.length; i += 2) {
      // Names are tokens (ASCII): latin1 decodes them as utf8 would, and faster.
      list[i] = rawHeaders[i]!.toString('latin1');
      list[i + 1] = rawHeaders[i + 1]!.toString('latin1');
    }
    return this.#head(statusCode, list, resume);
  }

  onAppHead(status: number, headers: HeaderList, resume: () => void): void {
    this.#head(status, headers, resume);
  }

  onAppData(chunk: Buffer): boolean {
    return this.onData(chunk);
  }

  onAppComplete(): void {
    this.onComplete();
  }

  onAppError(err: Error & { code?: string }): void {
    this.onError(err);
  }

  /** The app's response head, relayed to the client (false: it could not be, the request is aborted). */
  #head(statusCode: number, list: HeaderList, resume: () => void): boolean {
    this.#upstream.answered = true;
    const res = this.#res;
    const ex = this.ex;
    if (res.destroyed) {
      this.#clientGone = true;
      this.#cancel();
      return false;
    }
    const headers = endToEndHeaders(list, { drop: this.#drop });
    for (let i = 0; i < ex.responseHeaders.length; i++) headers.push(ex.responseHeaders[i]!);
    ex.sentStatus = statusCode;
    ex.sentHeaders = headers;
    try {
      res.writeHead(statusCode, headers);
    } catch (err) {
      ex.sentStatus = 0;
      ex.sentHeaders = [];
      // Settled first: an abort may report back at once (the lean client does).
      this.#done(new HttpModeError('HTTP_APP_BAD_RESPONSE', 502, 'the app sent a response the agent cannot relay', { cause: err }));
      this.#cancel();
      return false;
    }
    this.#headSent = true;
    this.#resume = resume;
    res.on('drain', this.#onDrain);
    return true;
  }

  onData(chunk: Buffer): boolean {
    if (this.#settle === null) return false;
    this.ex.bytesOut += chunk.length;
    return this.#res.write(chunk);
  }

  onComplete(): void {
    if (this.#settle === null) return;
    this.#res.end();
    this.#done(null);
  }

  onError(err: Error & { code?: string }): void {
    if (this.#settle === null) return;
    if (this.#clientGone) {
      this.ex.errorCode ??= 'CLIENT_GONE';
      this.#done(null);
      return;
    }
    if (!this.#headSent) {
      this.#done(err);
      return;
    }
    // The head is out; all we can do is cut the connection so the client sees a truncated response. A response
    // held paused past its limit is the client's doing (it stopped reading), not the app's.
    this.ex.errorCode ??=
      err.code === 'APP_PAUSED_TIMEOUT' ? 'CLIENT_NOT_READING' : err.code === 'UND_ERR_BODY_TIMEOUT' || err.code === 'APP_BODY_TIMEOUT' ? 'HTTP_APP_TIMEOUT' : 'HTTP_APP_BODY_FAILED';
    this.#res.destroy();
    this.#done(null);
  }
}
