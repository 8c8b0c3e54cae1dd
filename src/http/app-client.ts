// The lean upstream client for fast-path requests (simple-request.ts): a keep-alive pool of plain TCP
// connections to the app for requests whose body is already in memory. It exists for speed — per request it
// writes one head (one syscall, body corked with it) and parses the answer with response-parser.ts, where
// undici's general machinery (dispatcher layers, request validation objects, a WebAssembly parser calling
// back into JS per header) cost the agent about as much CPU as the rest of the request. Everything else
// (streamed bodies, the http.Server path) still goes through undici.
//
// Behaviour, as the forward stage expects of undici: one request per connection at a time (no pipelining:
// a slow answer never holds up another request); at most `maxConnections`, further requests wait FIFO;
// idle connections are reused most-recent first while idle for less than `keepAliveTimeoutMs` (or the app's
// `Keep-Alive: timeout` less a second, whichever is shorter); a connection the app closes while idle is
// dropped, and none is reused after a response to HEAD or a 204/304 declaring a body (response-parser.ts: a
// body sent anyway, in a later read, would be taken for the next request's answer). A request that fails on a reused connection before any response byte (the app closed it as the
// request went out) is sent once more, on a new connection that takes the old one's place (ahead of the
// queue, within the cap), when its method is idempotent. Timeouts: no
// response head within `headersTimeoutMs` → APP_HEADERS_TIMEOUT; a gap longer than `bodyTimeoutMs` between
// body bytes → APP_BODY_TIMEOUT, not counted while the caller holds the response paused; a pause longer than
// `pausedTimeoutMs` → APP_PAUSED_TIMEOUT (the caller's client stopped reading: the app connection must not be
// held forever). Checked by one sweep per pool, not a timer per request.
import net from 'node:net';
import type { HeaderList } from './headers.ts';
import { HttpModeError } from './errors.ts';
import { ResponseParser } from './response-parser.ts';
import type { ResponseEvents } from './response-parser.ts';

export interface AppRequest {
  method: string;
  /** Origin-form target (validated by the caller's parser). */
  path: string;
  /** Everything but the framing (no Content-Length, Transfer-Encoding or Connection): the client writes Content-Length for a body. */
  headers: HeaderList;
  body: Buffer | null;
}

/** What the caller learns about its request; nothing is called after onComplete or onError. */
export interface AppResponseHandler {
  onAppHead(status: number, headers: HeaderList, resume: () => void): void;
  /** False pauses the connection until `resume` (from onAppHead) is called. */
  onAppData(chunk: Buffer): boolean;
  onAppComplete(): void;
  onAppError(err: Error & { code?: string }): void;
}

export interface AppClientOptions {
  host: string;
  port: number;
  maxConnections: number;
  keepAliveTimeoutMs: number;
  headersTimeoutMs: number;
  bodyTimeoutMs: number;
  /** Longest time the caller may hold a response paused (default bodyTimeoutMs) → APP_PAUSED_TIMEOUT. */
  pausedTimeoutMs?: number;
  /** Largest response head (default 16 KiB, as undici and Node). */
  maxHeadBytes?: number;
}

const IDEMPOTENT = new Set(['GET', 'HEAD', 'PUT', 'DELETE', 'OPTIONS', 'TRACE']);
const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;
/** A header value the app can be sent: no CR, LF, NUL or other controls, nothing above U+00FF. */
const BAD_VALUE = /[^\t\x20-\x7e\x80-\xff]/;
const TARGET = /^\/[\x21-\x7e]*$/;

/** An error with a code the forward stage maps to a status. */
function codeError(code: string, message: string): Error & { code: string } {
  return Object.assign(new Error(message), { code });
}

class Pending {
  attempts = 0;
  /** performance.now() deadline of the current wait (head, the next body bytes, or the caller's resume). */
  deadline = 0;
  /** The caller holds the response paused (the deadline is the pause's). */
  paused = false;
  conn: AppConnection | null = null;
  constructor(
    readonly req: AppRequest,
    readonly wire: string,
    readonly handler: AppResponseHandler,
  ) {}
}

class AppConnection implements ResponseEvents {
  readonly socket: net.Socket;
  current: Pending | null = null;
  parser: ResponseParser | null = null;
  served = 0;
  idleSince = 0;
  keepAliveMs: number;
  closed = false;
  readonly #pool: AppClient;
  readonly #resume: () => void;

  constructor(pool: AppClient, opts: AppClientOptions) {
    this.#pool = pool;
    this.keepAliveMs = opts.keepAliveTimeoutMs;
    this.#resume = () => {
      if (this.closed) return;
      // The body timeout starts again from the resume (a paused response is the caller's wait, not the app's).
      const p = this.current;
      if (p !== null && p.paused) {
        p.paused = false;
        p.deadline = this.#pool.bodyDeadline();
      }
      this.socket.resume();
    };
    this.socket = net.connect({ host: opts.host, port: opts.port, noDelay: true });
    this.socket.on('data', (chunk: Buffer) => this.#data(chunk));
    this.socket.on('end', () => this.#ended());
    this.socket.on('error', (err: Error) => this.#failed(err));
    this.socket.on('close', () => this.#ended());
  }

  send(p: Pending, maxHead: number): void {
    this.current = p;
    p.conn = this;
    p.deadline = this.#pool.headDeadline();
    this.parser = new ResponseParser(p.req.method === 'HEAD', maxHead, this);
    const body = p.req.body;
    if (body === null) this.socket.write(p.wire, 'latin1');
    else {
      this.socket.cork();
      this.socket.write(p.wire, 'latin1');
      this.socket.write(body);
      this.socket.uncork();
    }
  }

  head(status: number, headers: HeaderList): void {
    const p = this.current;
    if (p === null) return;
    p.deadline = this.#pool.bodyDeadline();
    p.handler.onAppHead(status, headers, this.#resume);
  }

  body(chunk: Buffer): void {
    const p = this.current;
    if (p === null) return;
    p.paused = false;
    p.deadline = this.#pool.bodyDeadline();
    if (!p.handler.onAppData(chunk)) {
      // No body timeout while the caller holds the response (as undici), but a bounded pause; resume() restarts it.
      if (this.current === p) {
        p.paused = true;
        p.deadline = this.#pool.pausedDeadline();
      }
      this.socket.pause();
    }
  }

  complete(): void {
    // Handled once the parser has returned (#data, #ended): the connection must not be handed to the next
    // request in the middle of parsing this one.
  }

  #data(chunk: Buffer): void {
    const p = this.current;
    const parser = this.parser;
    if (p === null || parser === null) {
      // Bytes from the app with no request outstanding: the connection cannot be trusted any more.
      this.destroy();
      return;
    }
    let used: number;
    try {
      used = parser.execute(chunk);
    } catch (err) {
      if (this.current === p) this.#fail(err as Error);
      return;
    }
    // The handler may have aborted the request from a callback.
    if (this.current === p && parser.done) this.#completed(p, parser, used < chunk.length);
  }

  /** The response is complete; bytes after it (`extra`) make the connection unusable. */
  #completed(p: Pending, parser: ResponseParser, extra: boolean): void {
    this.current = null;
    this.served++;
    if (parser.keepAliveHintMs !== null) this.keepAliveMs = Math.min(this.keepAliveMs, Math.max(0, parser.keepAliveHintMs - 1000));
    // A pause asked for by the caller ends with its response: nobody would resume the next request's reads.
    if (this.socket.isPaused()) this.socket.resume();
    p.handler.onAppComplete();
    this.#pool.released(this, !extra && parser.keepAlive && this.keepAliveMs > 0);
  }

  #ended(): void {
    if (this.closed) return;
    const p = this.current;
    const parser = this.parser;
    if (p !== null && parser !== null) {
      try {
        parser.finish();
      } catch (err) {
        this.#fail(parser.started ? (err as Error) : codeError('APP_CONNECTION_CLOSED', 'the app closed the connection without answering'));
        return;
      }
      if (this.current === p) this.#completed(p, parser, false);
    }
    this.destroy();
  }

  #failed(err: Error): void {
    if (this.current !== null) this.#fail(err);
    else this.destroy();
  }

  /** The request in flight failed: sent again on a new connection when that is safe, else reported. */
  #fail(err: Error): void {
    const p = this.current;
    const started = this.parser?.started ?? false;
    this.current = null;
    if (p !== null && !started && this.served > 0 && p.attempts === 0 && IDEMPOTENT.has(p.req.method)) {
      // The retry takes this connection's place (ahead of queued requests, within the cap).
      this.destroy(false);
      p.attempts++;
      this.#pool.retry(p);
      return;
    }
    this.destroy();
    if (p === null) return;
    p.conn = null;
    p.handler.onAppError(err);
  }

  /**
   * Closes the connection; a request still on it is not reported (the caller did that, or aborted).
   * `handOn`: its place in the pool goes to a queued request (false: the caller reuses the place).
   */
  destroy(handOn = true): void {
    if (this.closed) return;
    this.closed = true;
    this.socket.destroy();
    this.#pool.removed(this, handOn);
  }

  /** The request on this connection timed out. */
  timedOut(p: Pending): void {
    const headSeen = this.parser?.started ?? false;
    this.current = null;
    this.destroy();
    p.conn = null;
    p.handler.onAppError(
      p.paused
        ? codeError('APP_PAUSED_TIMEOUT', 'the response was held paused too long (its reader stopped reading)')
        : headSeen
          ? codeError('APP_BODY_TIMEOUT', 'the app stopped sending its response')
          : codeError('APP_HEADERS_TIMEOUT', 'the app did not answer in time'),
    );
  }
}

export class AppClient {
  readonly #opts: AppClientOptions;
  readonly #maxHead: number;
  readonly #pausedMs: number;
  readonly #all = new Set<AppConnection>();
  /** Idle connections, most recently used last. */
  #idle: AppConnection[] = [];
  #queue: Pending[] = [];
  #sweep: NodeJS.Timeout | null = null;
  #closed = false;

  constructor(opts: AppClientOptions) {
    this.#opts = opts;
    this.#maxHead = opts.maxHeadBytes ?? 16 * 1024;
    this.#pausedMs = opts.pausedTimeoutMs ?? opts.bodyTimeoutMs;
  }

  /** Open connections (busy and idle). */
  get connections(): number {
    return this.#all.size;
  }

  /**
   * Sends `req`; the handler hears how it ends. Throws an HttpModeError (400) for a request that cannot be
   * written safely (a header the app would read differently). Returns the abort function: after it, the
   * handler gets onAppError(reason) and the connection is closed.
   */
  request(req: AppRequest, handler: AppResponseHandler): (reason?: Error) => void {
    if (this.#closed) throw new HttpModeError('HTTP_FORWARDER_CLOSED', 503, 'the HTTP forwarder is closed');
    const p = new Pending(req, serialize(req), handler);
    // Also the longest wait in the queue for a connection.
    p.deadline = this.headDeadline();
    this.#start();
    const conn = this.#take();
    if (conn !== null) conn.send(p, this.#maxHead);
    else this.#queue.push(p);
    return (reason) => this.#abort(p, reason ?? codeError('APP_REQUEST_ABORTED', 'request aborted'));
  }

  #abort(p: Pending, reason: Error): void {
    const conn = p.conn;
    if (conn !== null) {
      if (conn.current !== p) return;
      conn.current = null;
      conn.destroy();
    } else {
      const i = this.#queue.indexOf(p);
      if (i < 0) return;
      this.#queue.splice(i, 1);
    }
    p.conn = null;
    p.handler.onAppError(reason);
  }

  /** An idle connection, or a new one while under the cap; null when every connection is busy. */
  #take(): AppConnection | null {
    const now = performance.now();
    for (let idle = this.#idle.pop(); idle !== undefined; idle = this.#idle.pop()) {
      // Expiry is exact here (the sweep only reclaims): a connection the app is about to close is not reused.
      if (now - idle.idleSince < idle.keepAliveMs) return idle;
      idle.destroy(false);
    }
    if (this.#all.size >= this.#opts.maxConnections) return null;
    const conn = new AppConnection(this, this.#opts);
    this.#all.add(conn);
    return conn;
  }

  headDeadline(): number {
    return performance.now() + this.#opts.headersTimeoutMs;
  }

  bodyDeadline(): number {
    return performance.now() + this.#opts.bodyTimeoutMs;
  }

  pausedDeadline(): number {
    return performance.now() + this.#pausedMs;
  }

  /** A connection finished its request: the next queued request goes on it, or it waits idle. */
  released(conn: AppConnection, reusable: boolean): void {
    if (!reusable) {
      conn.destroy();
      return;
    }
    const next = this.#queue.shift();
    if (next !== undefined) {
      conn.send(next, this.#maxHead);
      return;
    }
    conn.idleSince = performance.now();
    this.#idle.push(conn);
  }

  /** A request sent again on a new connection (see the file comment). */
  retry(p: Pending): void {
    p.conn = null;
    const conn = new AppConnection(this, this.#opts);
    this.#all.add(conn);
    conn.send(p, this.#maxHead);
  }

  removed(conn: AppConnection, handOn: boolean): void {
    if (!this.#all.delete(conn)) return;
    const i = this.#idle.indexOf(conn);
    if (i >= 0) this.#idle.splice(i, 1);
    // Room for a waiting request.
    if (handOn && this.#queue.length > 0 && !this.#closed) {
      const next = this.#queue.shift()!;
      const fresh = this.#take();
      if (fresh !== null) fresh.send(next, this.#maxHead);
      else this.#queue.unshift(next);
    }
  }

  /** One timer per pool: request deadlines and idle expiry, checked at a fraction of the shortest timeout. */
  #start(): void {
    if (this.#sweep !== null) return;
    const every = Math.max(10, Math.min(1000, Math.floor(Math.min(this.#opts.headersTimeoutMs, this.#opts.bodyTimeoutMs, this.#pausedMs) / 8)));
    this.#sweep = setInterval(() => this.#check(), every);
    this.#sweep.unref();
  }

  #check(): void {
    const now = performance.now();
    // The queue first: a place freed by a timed-out request below must not go to an expired one.
    for (let i = 0; i < this.#queue.length; ) {
      const p = this.#queue[i]!;
      if (now >= p.deadline) {
        this.#queue.splice(i, 1);
        p.handler.onAppError(codeError('APP_HEADERS_TIMEOUT', 'no connection to the app became free in time'));
      } else i++;
    }
    for (const conn of [...this.#all]) {
      const p = conn.current;
      if (p !== null && now >= p.deadline) conn.timedOut(p);
    }
    for (const conn of [...this.#idle]) if (now - conn.idleSince >= conn.keepAliveMs) conn.destroy();
    if (this.#all.size === 0 && this.#queue.length === 0 && this.#sweep !== null) {
      clearInterval(this.#sweep);
      this.#sweep = null;
    }
  }

  /** Closes every connection; requests in flight or waiting fail with APP_CLIENT_CLOSED. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    if (this.#sweep !== null) clearInterval(this.#sweep);
    this.#sweep = null;
    const err = codeError('APP_CLIENT_CLOSED', 'the agent is shutting down');
    for (const p of this.#queue.splice(0)) p.handler.onAppError(err);
    for (const conn of [...this.#all]) {
      const p = conn.current;
      conn.current = null;
      conn.destroy();
      p?.handler.onAppError(err);
    }
    this.#idle = [];
  }
}

/** Methods whose requests carry a Content-Length even when the body is empty (as undici sends them). */
const EXPECTS_PAYLOAD = new Set(['PUT', 'POST', 'PATCH']);

/**
 * The request head (and nothing of the body) as it goes on the wire, laid out as undici lays it out — host
 * first, then `connection: keep-alive`, the headers in order, content-length last — so the app sees the same
 * bytes whichever client sent them. Throws 400 for what cannot be sent.
 */
function serialize(req: AppRequest): string {
  if (!TOKEN.test(req.method)) throw new HttpModeError('HTTP_BAD_REQUEST', 400, 'request not forwardable: invalid method');
  if (!TARGET.test(req.path)) throw new HttpModeError('HTTP_BAD_REQUEST', 400, 'request not forwardable: invalid request target');
  const h = req.headers;
  let host: string | null = null;
  let rest = '';
  for (let i = 0; i < h.length; i += 2) {
    const name = h[i]!;
    const value = h[i + 1]!;
    if (!TOKEN.test(name)) throw new HttpModeError('HTTP_BAD_REQUEST', 400, 'request not forwardable: invalid header name');
    if (BAD_VALUE.test(value)) throw new HttpModeError('HTTP_BAD_REQUEST', 400, `request not forwardable: invalid value in header ${name}`);
    if (host === null && name.length === 4 && name.toLowerCase() === 'host') host = value;
    else rest += `${name}: ${value}\r\n`;
  }
  if (host === null) throw new HttpModeError('HTTP_BAD_REQUEST', 400, 'request not forwardable: no Host header');
  const length = req.body?.length ?? 0;
  const framing = length > 0 || EXPECTS_PAYLOAD.has(req.method) ? `content-length: ${length}\r\n` : '';
  return `${req.method} ${req.path} HTTP/1.1\r\nhost: ${host}\r\nconnection: keep-alive\r\n${rest}${framing}\r\n`;
}
