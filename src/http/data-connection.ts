// The fast path's connection (see simple-request.ts for which requests take it). `DataConnection` is the Duplex
// the session gets for a Data request. It holds what the session writes until
// it knows whether the request is complete (the session writes the payload and ends in the same tick): if
// the connection was ended and the bytes are a simple request, the fast path answers; otherwise (more to
// come, e.g. a test or a client keeping the connection open, or a request the fast path refuses) the bytes
// go into a duplex pair on the http.Server and the DataConnection relays both ways.
import { Duplex } from 'node:stream';
import type { ForwardContext } from '../responder/forwarder.ts';
import type { PairEnd } from './duplex-pair.ts';
import type { DataResponse } from './data-response.ts';

/** Held before deciding; a Data payload is at most one frame (64 KiB). */
const MAX_PENDING_BYTES = 64 * 1024;

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
    // The server cut the connection (the app's response failed after its head was relayed): what was read
    // is a truncated answer, and the session must answer Error, as on the fast path — not a Data reply
    // that looks complete.
    outer.once('end', () => (outer.peerAborted ? this.destroy() : this.push(null)));
    outer.once('error', (err) => this.destroy(err));
    // Cut by the server's side (the client stopped reading: send timeout) before its end was read.
    outer.once('close', () => {
      if (!outer.readableEnded) this.destroy();
    });
    if (bytes.length > 0) outer.write(bytes);
    if (this.writableEnded) {
      this.#outerEnded = true;
      outer.end();
    }
  }
}
