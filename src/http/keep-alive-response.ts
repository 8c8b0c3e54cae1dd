// The response of one request on a keep-alive connection's fast path (keep-alive-connection.ts). Like the
// Data fast path's DataResponse it is what a ServerResponse would send (response-head.ts), without a server:
// the head and the body the app gave in one go leave in ONE socket write (one TLS record, one syscall) when
// the response ends in the tick its head was written — the usual case, as the lean app client hands over a
// small answer from one read. A response that streams is flushed at the end of each tick (and at once past
// 64 KiB). Responses leave in request order: until every earlier one is sent, a response is held here
// (`active` false) and its writer is told to wait past 64 KiB, then let go with 'drain'.
import { BufferedResponse, FLUSH_BYTES } from './buffered-response.ts';

/** What a response needs of its connection (KeepAliveConnection). */
export interface ResponseQueue {
  /** `res` has bytes to send or has ended; returns false when the socket asks the writer to wait ('drain'). */
  progressed(res: KeepAliveResponse): boolean;
  /** `res` was cut before its end: the connection cannot carry another response. */
  aborted(res: KeepAliveResponse): void;
  /** Whether the connection closes after `res` (the request asked for it, a drain, a refusal). */
  closesAfter(res: KeepAliveResponse): boolean;
  /** The socket asks writers to wait (its 'drain' lets them go on, through readMore). */
  needsDrain(): boolean;
}

export class KeepAliveResponse extends BufferedResponse {
  /** Every earlier response on the connection is sent: this one's bytes may go to the socket. */
  active = false;
  /** Runs once, before the 'close' listeners, when the response is over either way. */
  onClose: (() => void) | null = null;
  readonly #queue: ResponseQueue;
  #flushScheduled = false;

  constructor(queue: ResponseQueue, method: string) {
    super(method);
    this.#queue = queue;
  }

  protected closesConnection(): boolean {
    return this.#queue.closesAfter(this);
  }

  protected override headWritten(): void {
    this.#kick();
  }

  protected bodyAdded(): boolean {
    return this.#kick();
  }

  protected ended(): void {
    this.#queue.progressed(this);
  }

  protected aborted(): void {
    this.#queue.aborted(this);
  }

  protected closing(): void {
    this.onClose?.();
  }

  /**
   * New bytes: held until the response is active; then sent now (past 64 KiB) or at the end of the tick. The
   * writer is told to wait while the socket is full, however small its writes: else an app writing in small
   * pieces would never be paused and the socket's buffer would grow as fast as the app writes.
   */
  #kick(): boolean {
    if (!this.active) return this.pendingBytes < FLUSH_BYTES;
    if (this.pendingBytes >= FLUSH_BYTES) return this.#queue.progressed(this);
    if (!this.#flushScheduled) {
      this.#flushScheduled = true;
      process.nextTick(flushAtTickEnd, this);
    }
    return !this.#queue.needsDrain();
  }

  /** @internal the end-of-tick flush of a response still being written. */
  flushScheduledBytes(): void {
    this.#flushScheduled = false;
    if (!this.writableFinished && !this.destroyed && this.active && this.pendingBytes > 0) this.#queue.progressed(this);
  }
}

function flushAtTickEnd(res: KeepAliveResponse): void {
  res.flushScheduledBytes();
}
