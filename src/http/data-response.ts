// The response of a fast-path request (see simple-request.ts for which requests take the fast path).
import { BufferedResponse, FLUSH_BYTES } from './buffered-response.ts';

/** Where a fast-path answer goes: a Data connection's readable side (data-connection.ts) or a one-shot collector (one-shot-answer.ts). */
export interface AnswerTarget {
  readonly destroyed: boolean;
  /** Bytes of the answer; null = the answer is complete. False asks the writer to wait for readMore(). */
  push(chunk: Buffer | null): boolean;
  destroy(): unknown;
  /** Set by the fast path once it answers (the target tells it when it goes away). */
  response: DataResponse | null;
  /**
   * Body bytes are handed over as soon as they are written (the target counts what it holds), not coalesced; the
   * head goes with the first of them (a head is the app's, at most 16 KiB, and usually far less).
   */
  readonly eager?: boolean;
}

/**
 * The response of a fast-path request, written onto its AnswerTarget as HTTP/1.1, always with
 * `Connection: close` (a Data connection carries one request). Small pieces are coalesced (the session
 * collects the whole answer into one Data reply anyway).
 */
export class DataResponse extends BufferedResponse {
  readonly #conn: AnswerTarget;
  readonly #onClose: () => void;

  /** `onClose` runs once, before the 'close' listeners, when the response is over either way. */
  constructor(conn: AnswerTarget, method: string, onClose: () => void) {
    super(method);
    this.#conn = conn;
    this.#onClose = onClose;
  }

  protected closesConnection(): boolean {
    return true;
  }

  protected bodyAdded(): boolean {
    return (this.#conn.eager !== true && this.pendingBytes < FLUSH_BYTES) || this.#flush();
  }

  protected ended(): void {
    // The rest of the answer and its end reach the session with those of every other Data response that
    // ended in this event-loop turn (see deliverEnded).
    if (ended.length === 0) setImmediate(deliverEnded);
    ended.push(this);
  }

  protected aborted(): void {
    this.#conn.destroy();
  }

  protected closing(): void {
    this.#onClose();
  }

  /** Hands what is left of the finished answer, and its end, to the session. */
  deliver(): void {
    if (this.#conn.destroyed) return;
    this.#flush();
    this.#conn.push(null);
  }

  #flush(): boolean {
    const out = this.take();
    if (out === null) return true;
    return this.#conn.destroyed ? false : this.#conn.push(out);
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
