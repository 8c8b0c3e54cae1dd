// The fast path for one-shot `Data` requests. A Data message carries one complete HTTP request and the
// session ends the connection right after writing it, so for the common case there is nothing for an
// http.Server to do but parse one head: this file takes those requests past the in-process server (no
// duplex pair, no per-connection parser, IncomingMessage or ServerResponse) and runs them through the same
// stages with a small response writer.
//
// Only requests that are plainly simple take it. `parseSimpleRequest` accepts a strict subset of what Node's
// parser accepts, and answers null — "let the http.Server decide" — for anything else:
//   - request line `METHOD SP /origin-form SP HTTP/1.1` with a common method and a target of visible ASCII;
//   - header lines `token ":" OWS value OWS`, value bytes HTAB / SP / VCHAR only (no obs-text, no obs-fold,
//     no bare CR or LF anywhere), at most MAX_FAST_HEADERS of them, the head no larger than the server's cap;
//   - exactly one Host; no Transfer-Encoding, Upgrade or Expect; at most one Content-Length of plain digits,
//     and exactly that many bytes after the head (nothing pipelined, nothing missing);
//   - not under /.well-known/ (the agent's own endpoints stay on the full path).
// Everything refused here (smuggling attempts, malformed or unusual heads, pipelined requests, chunked
// bodies, upgrades, HTTP/1.0) goes to the http.Server exactly as before, which gives its own answer (400 and
// a closed connection for a malformed request). So the fast path never accepts something the server would
// refuse, and never decides what a malformed request means.
//
// `DataConnection` is the Duplex the session gets for a Data request. It holds what the session writes until
// it knows whether the request is complete (the session writes the payload and ends in the same tick): if
// the connection was ended and the bytes are a simple request, the fast path answers; otherwise (more to
// come, e.g. a test or a client keeping the connection open, or a request the fast path refuses) the bytes
// go into a duplex pair on the http.Server and the DataConnection relays both ways.
import { EventEmitter } from 'node:events';
import { STATUS_CODES, validateHeaderName, validateHeaderValue } from 'node:http';
import type { IncomingHttpHeaders } from 'node:http';
import { Duplex, Readable } from 'node:stream';
import type { ForwardContext } from '../responder/forwarder.ts';
import type { PairEnd } from './duplex-pair.ts';
import type { RequestHead, ResponseChannel } from './exchange.ts';
import type { HeaderList } from './headers.ts';

/** More header lines than this → the full path. */
export const MAX_FAST_HEADERS = 64;

const HEAD_END = Buffer.from('\r\n\r\n', 'latin1');
const REQUEST_LINE = /^(GET|HEAD|POST|PUT|DELETE|OPTIONS|PATCH) (\/[\x21-\x7e]*) HTTP\/1\.1$/;
/** Name, colon, optional whitespace, value (no leading/trailing whitespace), optional whitespace. */
const HEADER_LINE = /^([!#$%&'*+\-.^_`|~0-9A-Za-z]+):[\t ]*((?:[\x21-\x7e](?:[\t\x20-\x7e]*[\x21-\x7e])?)?)[\t ]*$/;
/** Any byte outside HTAB, CR, LF, SP..~ (controls, DEL, obs-text). */
const UNUSUAL_BYTE = /[^\t\r\n\x20-\x7e]/;
/** A Content-Length the fast path takes: no sign, no leading zeros, at most 15 digits. */
const DIGITS = /^(?:0|[1-9][0-9]{0,14})$/;

export interface SimpleRequest {
  method: string;
  url: string;
  rawHeaders: string[];
  /** Declared body length (null: no Content-Length header). */
  contentLength: number | null;
  /** The body bytes (exactly contentLength of them), or null when there is none. */
  body: Buffer | null;
}

/**
 * The request in `bytes` if it is one plainly simple HTTP/1.1 request (see the file comment), else null.
 * `maxHeadBytes` is the server's head cap: a larger head is left to the server (431).
 */
export function parseSimpleRequest(bytes: Buffer, maxHeadBytes: number): SimpleRequest | null {
  const end = bytes.indexOf(HEAD_END);
  if (end < 0 || end + HEAD_END.length > maxHeadBytes) return null;
  const head = bytes.toString('latin1', 0, end);
  if (UNUSUAL_BYTE.test(head)) return null;
  const lines = head.split('\r\n');
  if (lines.length - 1 > MAX_FAST_HEADERS) return null;
  const first = REQUEST_LINE.exec(lines[0]!);
  if (first === null) return null;
  const url = first[2]!;
  if (url.startsWith('/.well-known')) return null;
  const rawHeaders: string[] = new Array<string>((lines.length - 1) * 2);
  let hosts = 0;
  let contentLength: number | null = null;
  for (let i = 1; i < lines.length; i++) {
    // A bare CR or LF left inside a line fails the pattern (neither is in its character classes).
    const m = HEADER_LINE.exec(lines[i]!);
    if (m === null) return null;
    const name = m[1]!;
    const value = m[2]!;
    rawHeaders[2 * i - 2] = name;
    rawHeaders[2 * i - 1] = value;
    switch (name.length) {
      case 4:
        if (name.toLowerCase() === 'host') hosts++;
        break;
      case 6:
        if (name.toLowerCase() === 'expect') return null;
        break;
      case 7:
        if (name.toLowerCase() === 'upgrade') return null;
        break;
      case 14:
        if (name.toLowerCase() === 'content-length') {
          if (contentLength !== null || !DIGITS.test(value)) return null;
          contentLength = Number(value);
        }
        break;
      case 17:
        if (name.toLowerCase() === 'transfer-encoding') return null;
        break;
      default:
        break;
    }
  }
  if (hosts !== 1) return null;
  const bodyStart = end + HEAD_END.length;
  if (bytes.length - bodyStart !== (contentLength ?? 0)) return null;
  return {
    method: first[1]!,
    url,
    rawHeaders,
    contentLength,
    body: contentLength !== null && contentLength > 0 ? bytes.subarray(bodyStart) : null,
  };
}

/** The request as the stages see it on the fast path. */
export class FastRequest implements RequestHead {
  readonly method: string;
  readonly url: string;
  readonly rawHeaders: string[];
  readonly complete = true;
  #headers: IncomingHttpHeaders | null = null;

  constructor(r: SimpleRequest) {
    this.method = r.method;
    this.url = r.url;
    this.rawHeaders = r.rawHeaders;
  }

  /** Lower-cased names, repeated fields joined with ", " (set-cookie as a list), built on first use. */
  get headers(): IncomingHttpHeaders {
    if (this.#headers !== null) return this.#headers;
    const out: Record<string, string | string[]> = {};
    for (let i = 0; i < this.rawHeaders.length; i += 2) {
      const name = this.rawHeaders[i]!.toLowerCase();
      const value = this.rawHeaders[i + 1]!;
      const prev = out[name];
      if (name === 'set-cookie') out[name] = prev === undefined ? [value] : [...(prev as string[]), value];
      else out[name] = prev === undefined ? value : `${prev as string}, ${value}`;
    }
    this.#headers = out as IncomingHttpHeaders;
    return this.#headers;
  }
}

/**
 * A request body already in memory, as a Readable for the stages that read bodies; the forward stage sends
 * `buffer` directly when nothing read it (`takeBuffer()`). `onConsumed` learns the byte count once, either way.
 */
export class BufferBody extends Readable {
  readonly buffer: Buffer;
  #taken = false;
  readonly #onConsumed: (bytes: number) => void;

  constructor(buffer: Buffer, onConsumed: (bytes: number) => void) {
    super();
    this.buffer = buffer;
    this.#onConsumed = onConsumed;
  }

  /** The bytes, if no one has started reading the stream (then the stream is spent); else null. */
  takeBuffer(): Buffer | null {
    if (this.#taken || this.readableDidRead) return null;
    this.#taken = true;
    this.#onConsumed(this.buffer.length);
    this.push(null);
    return this.buffer;
  }

  override _read(): void {
    if (!this.#taken) {
      this.#taken = true;
      this.#onConsumed(this.buffer.length);
      this.push(this.buffer);
    }
    this.push(null);
  }
}

let dateCache = '';
let dateSecond = -1;

/** The IMF-fixdate for now, computed once a second (as Node's server does for its Date header). */
function utcDate(): string {
  const now = Date.now();
  const second = Math.floor(now / 1000);
  if (second !== dateSecond) {
    dateSecond = second;
    dateCache = new Date(now).toUTCString();
  }
  return dateCache;
}

const FLUSH_BYTES = 64 * 1024;
/** Held before deciding; a Data payload is at most one frame (64 KiB). */
const MAX_PENDING_BYTES = 64 * 1024;
const LAST_CHUNK = Buffer.from('0\r\n\r\n', 'latin1');
const CRLF = Buffer.from('\r\n', 'latin1');

/**
 * The response of a fast-path request, written onto its DataConnection as HTTP/1.1 — what a ServerResponse
 * would have sent: the status line, the headers as given (validated as Node validates them), a Date unless
 * present, `Connection: close` (a Data connection carries one request), and the body with a Content-Length
 * when the headers have one, chunked otherwise; no body for HEAD, 1xx, 204 and 304. Small pieces are
 * coalesced (the session collects the whole answer into one Data reply anyway).
 */
export class DataResponse extends EventEmitter implements ResponseChannel {
  headersSent = false;
  destroyed = false;
  writableFinished = false;
  readonly #conn: DataConnection;
  readonly #isHead: boolean;
  #noBody = false;
  #chunked = false;
  #parts: Buffer[] = [];
  #partBytes = 0;
  #closed = false;

  constructor(conn: DataConnection, method: string) {
    super();
    this.#conn = conn;
    this.#isHead = method === 'HEAD';
  }

  writeHead(status: number, headers: HeaderList): this {
    if (this.headersSent) throw new Error('response head already sent');
    if (!Number.isInteger(status) || status < 100 || status > 999) throw new RangeError(`status: expected 100..999, found ${status}`);
    let head = `HTTP/1.1 ${status} ${STATUS_CODES[status] ?? 'unknown'}\r\n`;
    let hasDate = false;
    let hasLength = false;
    for (let i = 0; i < headers.length; i += 2) {
      const name = headers[i]!;
      const value = headers[i + 1]!;
      validateHeaderName(name);
      validateHeaderValue(name, value);
      const n = name.length;
      if (n === 4 || n === 10 || n === 14 || n === 17) {
        const lower = name.toLowerCase();
        if (lower === 'date') hasDate = true;
        else if (lower === 'connection') continue;
        else if (lower === 'content-length') hasLength = true;
        else if (lower === 'transfer-encoding') throw new Error('transfer-encoding is set by the agent');
      }
      head += `${name}: ${value}\r\n`;
    }
    this.#noBody = this.#isHead || status === 204 || status === 304 || status < 200;
    if (!hasDate) head += `Date: ${utcDate()}\r\n`;
    head += 'Connection: close\r\n';
    if (!this.#noBody && !hasLength) {
      head += 'Transfer-Encoding: chunked\r\n';
      this.#chunked = true;
    }
    this.headersSent = true;
    this.#add(Buffer.from(head + '\r\n', 'latin1'));
    return this;
  }

  write(chunk: Buffer): boolean {
    if (this.destroyed || this.writableFinished) return false;
    if (!this.headersSent) this.writeHead(200, []);
    if (this.#noBody || chunk.length === 0) return true;
    if (this.#chunked) {
      this.#add(Buffer.from(`${chunk.length.toString(16)}\r\n`, 'latin1'));
      this.#add(chunk);
      this.#add(CRLF);
    } else this.#add(chunk);
    return this.#partBytes < FLUSH_BYTES || this.#flush();
  }

  end(chunk?: Buffer): this {
    if (this.destroyed || this.writableFinished) return this;
    if (chunk !== undefined) this.write(chunk);
    else if (!this.headersSent) this.writeHead(200, []);
    if (this.#chunked) this.#add(LAST_CHUNK);
    this.writableFinished = true;
    // The rest of the answer and its end reach the session with those of every other Data response that
    // ended in this event-loop turn (see deliverEnded).
    if (ended.length === 0) setImmediate(deliverEnded);
    ended.push(this);
    this.emit('finish');
    this.#emitClose();
    return this;
  }

  /** Hands what is left of the finished answer, and its end, to the session. */
  deliver(): void {
    if (this.#conn.destroyed) return;
    this.#flush();
    this.#conn.push(null);
  }

  destroy(): this {
    // A complete answer is delivered whatever happens next (as bytes already written to a socket are).
    if (this.destroyed || this.writableFinished) return this;
    this.destroyed = true;
    this.#conn.destroy();
    this.#emitClose();
    return this;
  }

  /** The connection went away (the session gave up on the request). */
  connectionClosed(): void {
    if (this.writableFinished) return;
    this.destroyed = true;
    this.#emitClose();
  }

  /** The session read what was pushed: a writer waiting for room may go on. */
  readMore(): void {
    if (!this.writableFinished && !this.destroyed) this.emit('drain');
  }

  #add(b: Buffer): void {
    this.#parts.push(b);
    this.#partBytes += b.length;
  }

  #flush(): boolean {
    if (this.#parts.length === 0) return true;
    const out = this.#parts.length === 1 ? this.#parts[0]! : Buffer.concat(this.#parts, this.#partBytes);
    this.#parts = [];
    this.#partBytes = 0;
    return this.#conn.destroyed ? false : this.#conn.push(out);
  }

  #emitClose(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.emit('close');
  }
}

/**
 * Responses that ended in this event-loop turn. Under load many Data answers complete in one poll phase
 * (one app socket callback each); handing them to their sessions together, from one setImmediate, lets a
 * session's frame writer (which merges what is queued by the end of the tick) send them in one socket
 * write instead of one write per answer. The cost is the rest of the turn: the check phase follows the
 * poll phase directly.
 */
let ended: DataResponse[] = [];

function deliverEnded(): void {
  const list = ended;
  ended = [];
  for (const res of list) res.deliver();
}

export interface DataConnectionHandlers {
  /** The session ended the connection after `bytes`: answer on the fast path (true) or decline (false). */
  fast(conn: DataConnection, bytes: Buffer): boolean;
  /** A connection on the http.Server; returns the session's end of the pair. */
  full(conn: DataConnection): PairEnd;
}

/**
 * The Duplex the session gets for a Data request (see the file comment). Holds the written bytes until the
 * end of the tick they were written in, then either answers them on the fast path (the session ended the
 * connection and `fast` accepted them) or becomes a relay to a connection on the http.Server.
 */
export class DataConnection extends Duplex {
  #mode: 'pending' | 'fast' | 'full' = 'pending';
  #chunks: Buffer[] = [];
  #pendingBytes = 0;
  #outer: PairEnd | null = null;
  #outerEnded = false;
  /** Set by the fast path once it answers. */
  response: DataResponse | null = null;
  readonly #handlers: DataConnectionHandlers;
  /** What the session knows about the connection. */
  readonly ctx: ForwardContext;

  constructor(ctx: ForwardContext, handlers: DataConnectionHandlers) {
    super({ allowHalfOpen: true, highWaterMark: 64 * 1024 });
    this.ctx = ctx;
    this.#handlers = handlers;
  }

  override _write(chunk: Buffer, _enc: BufferEncoding, cb: (err?: Error | null) => void): void {
    if (this.#mode === 'full') {
      this.#outer!.write(chunk, () => cb());
      return;
    }
    if (this.#mode === 'fast') {
      // The request was complete and ended; nothing more can be written.
      cb();
      return;
    }
    if (this.#chunks.length === 0) process.nextTick(() => this.#decide());
    this.#chunks.push(chunk);
    this.#pendingBytes += chunk.length;
    // More than one Data payload can carry: a stream of writes, not a one-shot request (and never buffered).
    if (this.#pendingBytes > MAX_PENDING_BYTES) this.#decide();
    cb();
  }

  override _final(cb: (err?: Error | null) => void): void {
    if (this.#mode === 'pending') this.#decide();
    if (this.#mode === 'full' && !this.#outerEnded) {
      this.#outerEnded = true;
      this.#outer!.end();
    }
    cb();
  }

  override _read(): void {
    if (this.#mode === 'full') this.#outer!.resume();
    else this.response?.readMore();
  }

  override _destroy(err: Error | null, cb: (err?: Error | null) => void): void {
    this.#outer?.destroy();
    this.response?.connectionClosed();
    cb(err);
  }

  #decide(): void {
    if (this.#mode !== 'pending' || this.destroyed) return;
    const chunks = this.#chunks;
    this.#chunks = [];
    const bytes = chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks);
    if (this.writableEnded && this.#handlers.fast(this, bytes)) {
      this.#mode = 'fast';
      return;
    }
    this.#mode = 'full';
    const outer = this.#handlers.full(this);
    this.#outer = outer;
    outer.on('data', (c: Buffer) => {
      if (!this.push(c)) outer.pause();
    });
    outer.once('end', () => this.push(null));
    outer.once('error', (err) => this.destroy(err));
    if (bytes.length > 0) outer.write(bytes);
    if (this.writableEnded) {
      this.#outerEnded = true;
      outer.end();
    }
  }
}
