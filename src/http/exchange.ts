// One request on its way through the stages: the request as received, what will be sent to the app
// (headers, body), what goes back to the client besides the app's answer, and the counters the transaction
// log reports. Stages are `(ex, next) => Promise<void>`; a stage answers by itself (and does not call
// `next`) or adjusts the exchange and calls `next`. Any error a stage throws becomes a JSON error response.
import { STATUS_CODES } from 'node:http';
import type { IncomingHttpHeaders } from 'node:http';
import type { Duplex, Readable } from 'node:stream';
import type { ForwardContext } from '../responder/forwarder.ts';
import type { HeaderList } from './headers.ts';
import { HttpModeError } from './errors.ts';
import { isAgentError } from '../errors.ts';
import type { BodyBytesHolder, BufferedBodiesLike } from './stages/decrypt.ts';
import type { AbandonedSummary } from './abandoned-records.ts';

export type RequestType = 'HTTP' | 'WebSocket';

/**
 * What the stages read of a request: an IncomingMessage from the http.Server path, or the parsed head of a
 * one-shot Data request on the fast path (simple-request.ts, data-connection.ts, data-response.ts).
 */
export interface RequestHead {
  readonly method?: string | undefined;
  readonly url?: string | undefined;
  /** `[name, value, ...]` as received. */
  readonly rawHeaders: string[];
  readonly headers: IncomingHttpHeaders;
  /** The whole request (head and body) has been received. */
  readonly complete: boolean;
}

/** What the stages use of a response: a ServerResponse, or the fast path's DataResponse. */
export interface ResponseChannel {
  readonly headersSent: boolean;
  readonly destroyed: boolean;
  readonly writableFinished: boolean;
  writeHead(status: number, headers: HeaderList): unknown;
  write(chunk: Buffer): boolean;
  end(chunk?: Buffer): unknown;
  destroy(): unknown;
  on(event: 'close' | 'drain' | 'error', listener: () => void): unknown;
  once(event: 'close' | 'drain', listener: () => void): unknown;
  removeListener(event: 'close' | 'drain', listener: () => void): unknown;
}

export class Exchange implements BodyBytesHolder {
  readonly req: RequestHead;
  /** The response, for ordinary requests; null on the upgrade path (which answers on `socket`). */
  readonly res: ResponseChannel | null;
  /** The server end of the connection the request came on (the upgrade path writes on it); null on the fast path. */
  readonly socket: Duplex | null;
  /** What the session knows: client address, handshake hash, attest(). */
  readonly conn: ForwardContext;
  readonly type: RequestType;
  /** performance.now() and wall clock when the request head was parsed. */
  readonly started = performance.now();
  readonly startedAt = Date.now();

  /** Set by the request-id stage. */
  requestId = '';
  /** Headers for the app (hop-by-hop already removed on the forward path; stages edit this list). */
  upstreamHeaders: HeaderList;
  /** The body for the app (null = no body) and its length when known (null = send chunked). */
  body: Readable | null;
  bodyLength: number | null;
  /** Upgrade path: bytes the client sent after the request head (Node's `head` argument). */
  upgradeHead: Buffer | null = null;
  /** Headers the agent adds to the client's response (request id, ...). */
  responseHeaders: HeaderList = [];
  /** The status and headers actually sent to the client (for the log). */
  sentStatus = 0;
  sentHeaders: HeaderList = [];
  /** Client IP as the app is told (from the PROXY header, or a trusted X-Forwarded-For). */
  remoteIp: string | undefined;
  /** Body bytes from the client / to the client. */
  bytesIn = 0;
  bytesOut = 0;
  /** Number of `ev:` fields the decrypt stage replaced (a function when counted while streaming). */
  decryptedFields: number | (() => number) = 0;
  /** Code of the error that ended the exchange, if any. */
  errorCode: string | undefined;
  /** A record for requests taken in and never sent to the app: the ones it stands for, by outcome (abandoned-records.ts). */
  abandoned: AbandonedSummary | undefined;
  /** The pipeline's budget for bodies held in memory (set by the decrypt stage), and what this request holds of it. */
  bodies: BufferedBodiesLike | null = null;
  heldBodyBytes = 0;

  private doneCallbacks: (() => void)[] = [];
  private isDone = false;

  constructor(init: { req: RequestHead; res: ResponseChannel | null; socket: Duplex | null; conn: ForwardContext; type: RequestType; upstreamHeaders: HeaderList; body: Readable | null; bodyLength: number | null }) {
    this.req = init.req;
    this.res = init.res;
    this.socket = init.socket;
    this.conn = init.conn;
    this.type = init.type;
    this.upstreamHeaders = init.upstreamHeaders;
    this.body = init.body;
    this.bodyLength = init.bodyLength;
  }

  holdBodyBytes(bytes: number): boolean {
    const bodies = this.bodies;
    if (bodies === null) return true;
    if (!bodies.tryTake(bytes)) return false;
    // Given back when the exchange is over (the body is held until it has gone to the app); at once if it is.
    const first = this.heldBodyBytes === 0;
    this.heldBodyBytes += bytes;
    if (first) {
      this.onDone(() => {
        bodies.give(this.heldBodyBytes);
        this.heldBodyBytes = 0;
      });
    }
    return true;
  }

  /** Registers `cb` for when the exchange is over (response sent or connection gone). */
  onDone(cb: () => void): void {
    if (this.isDone) cb();
    else this.doneCallbacks.push(cb);
  }

  /** Marks the exchange over; runs the callbacks once. */
  finish(): void {
    if (this.isDone) return;
    this.isDone = true;
    for (const cb of this.doneCallbacks.splice(0)) cb();
  }
}

export type Stage = (ex: Exchange, next: () => Promise<void>) => Promise<void>;

/**
 * Runs `stages` in order; each decides whether to call the next. A stage that throws instead of rejecting
 * (a plain function, not async) rejects the whole run the same way.
 */
export function compose(stages: readonly Stage[]): (ex: Exchange) => Promise<void> {
  return (ex) => {
    try {
      return dispatchStage(stages, ex, 0);
    } catch (err) {
      return Promise.reject(err as Error);
    }
  };
}

function dispatchStage(stages: readonly Stage[], ex: Exchange, i: number): Promise<void> {
  const stage = stages[i];
  return stage === undefined ? Promise.resolve() : stage(ex, () => dispatchStage(stages, ex, i + 1));
}

/** The JSON error body every agent-generated error uses. */
export function errorBody(code: string, message: string, requestId: string): string {
  const body: Record<string, string> = { error: code, message };
  if (requestId !== '') body.request_id = requestId;
  return JSON.stringify(body);
}

/** Status and code for an error thrown by a stage; unknown errors are 500 with a generic message. */
export function describeError(err: unknown): { status: number; code: string; message: string } {
  if (err instanceof HttpModeError) return { status: err.status, code: err.code, message: err.message };
  if (isAgentError(err) && typeof (err as { status?: unknown }).status === 'number') {
    return { status: (err as unknown as { status: number }).status, code: err.code, message: err.message };
  }
  return { status: 500, code: 'HTTP_INTERNAL', message: 'internal error in the agent' };
}

/**
 * Sends an agent-generated response (JSON or empty) on whichever channel the exchange has. The extra
 * response headers (request id) are included. `close` asks for the connection to be closed afterwards.
 */
export function respond(ex: Exchange, status: number, headers: HeaderList, body: string | null, opts: { close?: boolean } = {}): void {
  const all = [...headers, ...ex.responseHeaders];
  const payload = body === null ? null : Buffer.from(body, 'utf8');
  if (payload !== null) all.push('Content-Type', 'application/json', 'Content-Length', String(payload.length));
  else if (status !== 204 && status !== 304) all.push('Content-Length', '0');
  const res = ex.res;
  if (res !== null) {
    if (res.headersSent || res.destroyed) {
      res.destroy();
      return;
    }
    ex.sentStatus = status;
    ex.sentHeaders = all;
    // An answer of the agent's own reads no more of the request: with its body still arriving, the connection
    // closes after it (as respondError's). Else Node drained the rest for as long as the client sent it, and
    // /.well-known/* (answered before the API key is checked) held a connection past every head timeout.
    if (opts.close === true || (ex.body !== null && !ex.req.complete)) all.push('Connection', 'close');
    res.writeHead(status, all);
    if (payload !== null && ex.req.method !== 'HEAD') res.end(payload);
    else res.end();
    return;
  }
  // Upgrade path: the socket is ours; write a complete response and close.
  const sock = ex.socket as (Duplex & { destroySoon(): void }) | null;
  if (sock === null) throw new HttpModeError('HTTP_INTERNAL', 500, 'an exchange without a response or a connection');
  if (!sock.writable) {
    sock.destroy();
    return;
  }
  all.push('Connection', 'close');
  ex.sentStatus = status;
  ex.sentHeaders = all;
  let head = `HTTP/1.1 ${status} ${statusText(status)}\r\n`;
  for (let i = 0; i < all.length; i += 2) head += `${all[i]!}: ${all[i + 1]!}\r\n`;
  sock.write(head + '\r\n');
  if (payload !== null) sock.write(payload);
  sock.destroySoon();
  ex.finish();
}

/** Answers an error thrown by a stage (a JSON body with the code), or aborts if the answer has begun. */
export function respondError(ex: Exchange, err: unknown): void {
  const { status, code, message } = describeError(err);
  ex.errorCode ??= code;
  // A request whose body was not read to the end: close after the answer instead of draining it.
  const close = !ex.req.complete;
  respond(ex, status, [], errorBody(code, message, ex.requestId), { close });
}

export function statusText(status: number): string {
  return STATUS_CODES[status] ?? 'Unknown';
}
