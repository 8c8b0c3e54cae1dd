// The one-shot path for a Data request (Forwarder.exchangeData): the fast path's answer is collected here
// and handed to the session as one buffer — no Duplex, no stream events, no listeners per request. The bytes
// collected count against the session's output budget while they wait (`budget`; DataResponse hands them over as
// they come, `eager`, the head with the first of them): an app that answers slowly or never ends must not have every in-flight request of every
// session hold up to maxResponseBytes uncounted.
import { HeldResponseBytes, type OneShotData, type OneShotResult, type ResponseBudget } from '../responder/forwarder.ts';
import type { AnswerTarget, DataResponse } from './data-response.ts';

export class OneShotAnswer implements AnswerTarget, OneShotData {
  destroyed = false;
  readonly eager = true;
  response: DataResponse | null = null;
  readonly done: Promise<OneShotResult>;
  #settle!: (r: OneShotResult) => void;
  #chunks: Buffer[] = [];
  #total = 0;
  readonly #max: number;
  readonly #onSettled: (a: OneShotAnswer) => void;
  /** The bytes of #chunks, held in the budget (when given) until the request settles. */
  readonly #held: HeldResponseBytes | null;

  /** `max`: the largest answer taken; `onSettled` runs once, when the request is over either way. */
  constructor(max: number, onSettled: (a: OneShotAnswer) => void, budget?: ResponseBudget) {
    this.#max = max;
    this.#onSettled = onSettled;
    this.#held = budget === undefined ? null : new HeldResponseBytes(budget);
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
    if (this.#held !== null && !this.#held.take(chunk.length)) {
      this.#abort('over-budget');
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

  #abort(failed: 'too-large' | 'closed' | 'over-budget'): void {
    if (this.destroyed) return;
    this.#finish({ failed });
    this.response?.connectionClosed();
  }

  #finish(r: OneShotResult): void {
    this.destroyed = true;
    // The reply (if any) is counted again when the session queues it, in the same turn.
    this.#held?.release();
    this.#chunks = [];
    this.#settle(r);
    this.#onSettled(this);
  }
}
