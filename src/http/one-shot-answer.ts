// The one-shot path for a Data request (Forwarder.exchangeData): the fast path's answer is collected here
// and handed to the session as one buffer — no Duplex, no stream events, no listeners per request.
import type { OneShotData, OneShotResult } from '../responder/forwarder.ts';
import type { AnswerTarget, DataResponse } from './data-response.ts';

export class OneShotAnswer implements AnswerTarget, OneShotData {
  destroyed = false;
  response: DataResponse | null = null;
  readonly done: Promise<OneShotResult>;
  #settle!: (r: OneShotResult) => void;
  #chunks: Buffer[] = [];
  #total = 0;
  readonly #max: number;
  readonly #onSettled: (a: OneShotAnswer) => void;

  /** `max`: the largest answer taken; `onSettled` runs once, when the request is over either way. */
  constructor(max: number, onSettled: (a: OneShotAnswer) => void) {
    this.#max = max;
    this.#onSettled = onSettled;
    this.done = new Promise<OneShotResult>((resolve) => (this.#settle = resolve));
  }

  push(chunk: Buffer | null): boolean {
    if (this.destroyed) return false;
    if (chunk === null) {
      const chunks = this.#chunks;
      this.#finish({ bytes: chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks, this.#total) });
      return false;
    }
    this.#total += chunk.length;
    if (this.#total > this.#max) {
      this.#abort('too-large');
      return false;
    }
    this.#chunks.push(chunk);
    return true;
  }

  /** The answer was cut (the app failed after its head, or the forwarder closed). */
  destroy(): void {
    this.#abort('closed');
  }

  /** The session gave up: the request stops (the forward stage aborts the app request). */
  cancel(): void {
    this.#abort('closed');
  }

  #abort(failed: 'too-large' | 'closed'): void {
    if (this.destroyed) return;
    this.#finish({ failed });
    this.response?.connectionClosed();
  }

  #finish(r: OneShotResult): void {
    this.destroyed = true;
    this.#chunks = [];
    this.#settle(r);
    this.#onSettled(this);
  }
}
