// The response of one request on a keep-alive connection's fast path (keep-alive-connection.ts). Like the
// Data fast path's DataResponse it is what a ServerResponse would send (response-head.ts), without a server:
// the head and the body the app gave in one go leave in ONE socket write (one TLS record, one syscall) when
// the response ends in the tick its head was written — the usual case, as the lean app client hands over a
// small answer from one read. A response that streams is flushed at the end of each tick (and at once past
// 64 KiB). Responses leave in request order: until every earlier one is sent, a response is held here
// (`active` false) and its writer is told to wait past 64 KiB, then let go with 'drain'.
import { EventEmitter } from 'node:events';
import type { ResponseChannel } from './exchange.ts';
import type { HeaderList } from './headers.ts';
import { buildResponseHead } from './response-head.ts';

/** What a response needs of its connection (KeepAliveConnection). */
export interface ResponseQueue {
  /** `res` has bytes to send or has ended; returns false when the socket asks the writer to wait ('drain'). */
  progressed(res: KeepAliveResponse): boolean;
  /** `res` was cut before its end: the connection cannot carry another response. */
  aborted(res: KeepAliveResponse): void;
  /** Whether the connection closes after `res` (the request asked for it, a drain, a refusal). */
  closesAfter(res: KeepAliveResponse): boolean;
}

const FLUSH_BYTES = 64 * 1024;
const LAST_CHUNK = Buffer.from('0\r\n\r\n', 'latin1');
const CRLF = Buffer.from('\r\n', 'latin1');

export class KeepAliveResponse extends EventEmitter implements ResponseChannel {
  headersSent = false;
  destroyed = false;
  writableFinished = false;
  /** Every earlier response on the connection is sent: this one's bytes may go to the socket. */
  active = false;
  /** The head written says `Connection: close`. */
  closeAfter = false;
  /** Runs once, before the 'close' listeners, when the response is over either way. */
  onClose: (() => void) | null = null;
  readonly #queue: ResponseQueue;
  readonly #isHead: boolean;
  #noBody = false;
  #chunked = false;
  #head: string | null = null;
  #parts: Buffer[] = [];
  #partBytes = 0;
  #flushScheduled = false;
  #closed = false;

  constructor(queue: ResponseQueue, method: string) {
    super();
    this.#queue = queue;
    this.#isHead = method === 'HEAD';
  }

  writeHead(status: number, headers: HeaderList): this {
    if (this.headersSent) throw new Error('response head already sent');
    const head = buildResponseHead(status, headers, this.#isHead, this.#queue.closesAfter(this));
    this.#noBody = head.noBody;
    this.#chunked = head.chunked;
    this.closeAfter = head.close;
    this.headersSent = true;
    this.#head = head.text;
    this.#partBytes += head.text.length;
    this.#kick();
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
    return this.#kick();
  }

  end(chunk?: Buffer): this {
    if (this.destroyed || this.writableFinished) return this;
    if (chunk !== undefined) this.write(chunk);
    else if (!this.headersSent) this.writeHead(200, []);
    if (this.#chunked) this.#add(LAST_CHUNK);
    this.writableFinished = true;
    this.#queue.progressed(this);
    this.emit('finish');
    this.#emitClose();
    return this;
  }

  destroy(): this {
    // A complete answer is sent whatever happens next (as bytes already written to a socket are).
    if (this.destroyed || this.writableFinished) return this;
    this.destroyed = true;
    this.#queue.aborted(this);
    this.#emitClose();
    return this;
  }

  /** The connection went away: the request stops (the forward stage aborts the app request). */
  connectionClosed(): void {
    if (this.writableFinished || this.destroyed) return;
    this.destroyed = true;
    this.#emitClose();
  }

  /** The bytes not yet sent, as one buffer (head and body together), or null. */
  take(): Buffer | null {
    const head = this.#head;
    const parts = this.#parts;
    if (head === null && parts.length === 0) return null;
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
    return out;
  }

  /** There is room again (the socket drained, or this response became active): a waiting writer goes on. */
  readMore(): void {
    if (!this.writableFinished && !this.destroyed) this.emit('drain');
  }

  #add(b: Buffer): void {
    this.#parts.push(b);
    this.#partBytes += b.length;
  }

  /** New bytes: held until the response is active; then sent now (past 64 KiB) or at the end of the tick. */
  #kick(): boolean {
    if (!this.active) return this.#partBytes < FLUSH_BYTES;
    if (this.#partBytes >= FLUSH_BYTES) return this.#queue.progressed(this);
    if (!this.#flushScheduled) {
      this.#flushScheduled = true;
      process.nextTick(flushAtTickEnd, this);
    }
    return true;
  }

  /** @internal the end-of-tick flush of a response still being written. */
  flushScheduledBytes(): void {
    this.#flushScheduled = false;
    if (!this.writableFinished && !this.destroyed && this.active && (this.#head !== null || this.#parts.length > 0)) this.#queue.progressed(this);
  }

  #emitClose(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.onClose?.();
    this.emit('close');
  }
}

function flushAtTickEnd(res: KeepAliveResponse): void {
  res.flushScheduledBytes();
}
