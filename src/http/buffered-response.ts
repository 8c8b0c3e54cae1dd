// What a ServerResponse would send, without a server, for the two fast paths (Data requests: data-response.ts;
// keep-alive connections: keep-alive-response.ts): the head (response-head.ts) and the body with its framing
// (Content-Length as given, chunked otherwise, none for HEAD/1xx/204/304) are collected here, and each
// subclass decides when the collected bytes leave and where to.
import { EventEmitter } from 'node:events';
import type { ResponseChannel } from './exchange.ts';
import type { HeaderList } from './headers.ts';
import { buildResponseHead } from './response-head.ts';

/** Past this many collected bytes a writer hands them on at once instead of waiting. */
export const FLUSH_BYTES = 64 * 1024;
const LAST_CHUNK = Buffer.from('0\r\n\r\n', 'latin1');
const CRLF = Buffer.from('\r\n', 'latin1');

export abstract class BufferedResponse extends EventEmitter implements ResponseChannel {
  headersSent = false;
  destroyed = false;
  writableFinished = false;
  /** The head written says `Connection: close`. */
  closeAfter = false;
  readonly #isHead: boolean;
  #noBody = false;
  #chunked = false;
  /** The head not yet taken (a string until then: it leaves in one buffer with the first body bytes). */
  #head: string | null = null;
  #parts: Buffer[] = [];
  #partBytes = 0;
  #closed = false;

  constructor(method: string) {
    super();
    this.#isHead = method === 'HEAD';
  }

  /** Whether the head must say `Connection: close`. */
  protected abstract closesConnection(): boolean;
  /** Body bytes were added; returns what write() returns (false: wait for 'drain'). */
  protected abstract bodyAdded(): boolean;
  /** The response ended (everything is collected). */
  protected abstract ended(): void;
  /** The response was cut before its end. */
  protected abstract aborted(): void;
  /** Runs once, before the 'close' listeners, when the response is over either way. */
  protected abstract closing(): void;

  writeHead(status: number, headers: HeaderList): this {
    if (this.headersSent) throw new Error('response head already sent');
    const head = buildResponseHead(status, headers, this.#isHead, this.closesConnection());
    this.#noBody = head.noBody;
    this.#chunked = head.chunked;
    this.closeAfter = head.close;
    this.headersSent = true;
    this.#head = head.text;
    this.#partBytes += head.text.length;
    this.headWritten();
    return this;
  }

  /** The head was collected (a subclass may send it on its own). */
  protected headWritten(): void {}

  write(chunk: Buffer): boolean {
    if (this.destroyed || this.writableFinished) return false;
    if (!this.headersSent) this.writeHead(200, []);
    if (this.#noBody || chunk.length === 0) return true;
    if (this.#chunked) {
      this.#add(Buffer.from(`${chunk.length.toString(16)}\r\n`, 'latin1'));
      this.#add(chunk);
      this.#add(CRLF);
    } else this.#add(chunk);
    return this.bodyAdded();
  }

  end(chunk?: Buffer): this {
    if (this.destroyed || this.writableFinished) return this;
    if (chunk !== undefined) this.write(chunk);
    else if (!this.headersSent) this.writeHead(200, []);
    if (this.#chunked) this.#add(LAST_CHUNK);
    this.writableFinished = true;
    this.ended();
    this.emit('finish');
    this.#emitClose();
    return this;
  }

  destroy(): this {
    // A complete answer is delivered whatever happens next (as bytes already written to a socket are).
    if (this.destroyed || this.writableFinished) return this;
    this.destroyed = true;
    this.aborted();
    this.#emitClose();
    return this;
  }

  /** The connection went away: the request stops (the forward stage aborts the app request). */
  connectionClosed(): void {
    if (this.writableFinished || this.destroyed) return;
    this.destroyed = true;
    this.#emitClose();
  }

  /** There is room again: a writer waiting for 'drain' goes on. */
  readMore(): void {
    if (!this.writableFinished && !this.destroyed) this.emit('drain');
  }

  /** Collected bytes not yet taken. */
  protected get pendingBytes(): number {
    return this.#partBytes;
  }

  /** The bytes not yet taken, as one buffer (head and body together), or null. */
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

  #add(b: Buffer): void {
    this.#parts.push(b);
    this.#partBytes += b.length;
  }

  #emitClose(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.closing();
    this.emit('close');
  }
}
