// The response of a fast-path request (see simple-request.ts for which requests take the fast path).
import { EventEmitter } from 'node:events';
import type { ResponseChannel } from './exchange.ts';
import type { HeaderList } from './headers.ts';
import { buildResponseHead } from './response-head.ts';

/** Where a fast-path answer goes: a Data connection's readable side (data-connection.ts) or a one-shot collector (one-shot-answer.ts). */
export interface AnswerTarget {
  readonly destroyed: boolean;
  /** Bytes of the answer; null = the answer is complete. False asks the writer to wait for readMore(). */
  push(chunk: Buffer | null): boolean;
  destroy(): unknown;
  /** Set by the fast path once it answers (the target tells it when it goes away). */
  response: DataResponse | null;
}

const FLUSH_BYTES = 64 * 1024;
const LAST_CHUNK = Buffer.from('0\r\n\r\n', 'latin1');
const CRLF = Buffer.from('\r\n', 'latin1');

/**
 * The response of a fast-path request, written onto its AnswerTarget as HTTP/1.1 — what a ServerResponse
 * would have sent: the status line, the headers as given (validated as Node validates them), a Date unless
 * present, `Connection: close` (a Data connection carries one request), and the body with a Content-Length
 * when the headers have one, chunked otherwise; no body for HEAD, 1xx, 204 and 304. Small pieces are
 * coalesced (the session collects the whole answer into one Data reply anyway).
 */
export class DataResponse extends EventEmitter implements ResponseChannel {
  headersSent = false;
  destroyed = false;
  writableFinished = false;
  readonly #conn: AnswerTarget;
  readonly #isHead: boolean;
  #noBody = false;
  #chunked = false;
  /** The head not yet handed on (a string until then: it goes out in one buffer with the first body bytes). */
  #head: string | null = null;
  #parts: Buffer[] = [];
  #partBytes = 0;
  #closed = false;
  readonly #onClose: () => void;

  /** `onClose` runs once, before the 'close' listeners, when the response is over either way. */
  constructor(conn: AnswerTarget, method: string, onClose: () => void) {
    super();
    this.#conn = conn;
    this.#isHead = method === 'HEAD';
    this.#onClose = onClose;
  }

  writeHead(status: number, headers: HeaderList): this {
    if (this.headersSent) throw new Error('response head already sent');
    // A Data connection carries one request: always `Connection: close`.
    const head = buildResponseHead(status, headers, this.#isHead, true);
    this.#noBody = head.noBody;
    this.#chunked = head.chunked;
    this.headersSent = true;
    this.#head = head.text;
    this.#partBytes += head.text.length;
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
    const head = this.#head;
    const parts = this.#parts;
    if (head === null && parts.length === 0) return true;
    let out: Buffer;
    if (head === null) out = parts.length === 1 ? parts[0]! : Buffer.concat(parts, this.#partBytes);
    else {
      out = Buffer.allocUnsafe(this.#partBytes);
      let at = out.write(head, 0, 'latin1');
      for (const p of parts) at += p.copy(out, at);
      this.#head = null;
    }
    this.#parts = [];
    this.#partBytes = 0;
    return this.#conn.destroyed ? false : this.#conn.push(out);
  }

  #emitClose(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#onClose();
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
