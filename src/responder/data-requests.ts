// A session's Data requests (WIRE.md §5): each one gets its own app connection from the forwarder, the
// payload is written (and the connection half-closed unless the forwarder says otherwise), the app's response
// is read to EOF and goes back as one `Data{id}` — or `Error{id, message}` when the app cannot be reached,
// fails, is too slow or answers more than one frame can carry. Replies go out in completion order.
// The response bytes read so far count against the shared output budget (limits.maxQueuedBytes) like the
// output they become: an app that answers without ending its response (keep-alive) would otherwise have every
// in-flight request of every session hold up to one frame until dataResponseTimeoutMs, uncounted.
import type { Duplex } from 'node:stream';
import { concatBytes } from '../util/bytes.ts';
import { MAX_MESSAGE_LEN, serverMessageSize, type ByteEncoding, type ServerMessage } from '../wire/messages.ts';
import type { ResponderCounters } from './admission.ts';
import { forwardErrorMessage } from './error-text.ts';
import type { OutputBudgetLike } from './output-budget.ts';
import { OVER_BUDGET_TEXT } from './session-output.ts';
import { forwardContext } from './session-requests.ts';
import type { SessionHost } from './session-types.ts';
import { HeldResponseBytes, type OneShotData } from './forwarder.ts';

const tooLargeText = (max: number): string => `response too large for one frame (more than ${max} bytes; max ${MAX_MESSAGE_LEN})`;
const timeoutText = (ms: number): string => `the app did not finish its response within ${Math.round(ms / 1000)} s`;
const CLOSED_EARLY = 'the app closed the connection before the end of its response';

interface DataRequest {
  readonly id: number;
  readonly enc: ByteEncoding;
  answered: boolean;
}

export class DataRequests {
  readonly #host: SessionHost;
  // Made on a session's first Data request: an idle session holds none of them.
  /** Data requests not yet answered (expire() answers them when the drain timeout hits). */
  #unanswered: Set<DataRequest> | null = null;
  /** App connections of Data requests (destroyed on close). */
  #apps: Set<Duplex> | null = null;
  /** Data requests on the forwarder's one-shot path (cancelled on close). */
  #oneShots: Set<OneShotData> | null = null;

  constructor(host: SessionHost) {
    this.#host = host;
  }

  /** A Data request from the client: admitted (or refused by the session's limits), then forwarded. True if admitted. */
  start(id: number, payload: Uint8Array, enc: ByteEncoding): boolean {
    if (!this.#host.admit(id, enc)) return false;
    this.#host.stats.data++;
    const req: DataRequest = { id, enc, answered: false };
    (this.#unanswered ??= new Set()).add(req);
    const { forwarder, limits } = this.#host.cfg;
    let oneShot: OneShotData | null;
    try {
      oneShot = forwarder.exchangeData?.(forwardContext(this.#host, 'data'), payload, limits.maxResponseBytes, this.#host.cfg.shared.budget) ?? null;
    } catch (err) {
      void this.#reply(req, { type: 'Error', id, message: forwardErrorMessage(err) });
      return true;
    }
    if (oneShot !== null) this.#awaitOneShot(req, oneShot, limits.maxResponseBytes, limits.dataResponseTimeoutMs);
    else {
      void this.#forward(id, payload).then(
        (reply) => this.#reply(req, reply),
        (err: unknown) => this.#reply(req, { type: 'Error', id, message: forwardErrorMessage(err) }),
      );
    }
    return true;
  }

  /** Answers every request not yet answered with `Error{id, message}` (the drain timeout hit). */
  expire(message: string): void {
    if (this.#unanswered === null) return;
    for (const req of this.#unanswered) {
      req.answered = true;
      void this.#host.sendError(req.id, message, req.enc);
    }
    this.#unanswered.clear();
  }

  /** The session closed: destroys the app connections still open. */
  destroyApps(): void {
    if (this.#apps !== null) for (const app of this.#apps) app.destroy();
    this.#apps?.clear();
    if (this.#oneShots !== null) for (const one of this.#oneShots) one.cancel();
    this.#oneShots?.clear();
  }

  /** Sends the request's reply (unless it was answered meanwhile) and frees its slot. */
  async #reply(req: DataRequest, answer: ServerMessage): Promise<void> {
    const { id, enc } = req;
    let reply = answer;
    try {
      this.#unanswered?.delete(req);
      const state = this.#host.state();
      if (req.answered || (state !== 'open' && state !== 'closing')) return;
      req.answered = true;
      if (reply.type === 'Data') {
        const size = serverMessageSize(reply, enc);
        if (size > MAX_MESSAGE_LEN) reply = { type: 'Error', id, message: `response too large for one frame (${size} bytes; max ${MAX_MESSAGE_LEN})` };
      }
      // The slot is held until the reply is handed to the socket: a client that stops reading cannot pile up replies.
      await this.#host.send(reply, enc);
    } finally {
      this.#host.release();
    }
  }

  /** Connects, writes the request, reads the app's response to EOF. Never rejects. */
  async #forward(id: number, payload: Uint8Array): Promise<ServerMessage> {
    const { forwarder, limits } = this.#host.cfg;
    let app: Duplex;
    try {
      app = await forwarder.connect(forwardContext(this.#host, 'data'));
    } catch (err) {
      return { type: 'Error', id, message: forwardErrorMessage(err) };
    }
    if (this.#host.state() === 'closed') {
      app.destroy();
      return { type: 'Error', id, message: 'session closed' };
    }
    const apps = (this.#apps ??= new Set());
    apps.add(app);
    const { budget, counters } = this.#host.cfg.shared;
    return new Promise<ServerMessage>((resolve) => {
      new DataReply(id, app, apps, limits.maxResponseBytes, limits.dataResponseTimeoutMs, budget, counters, resolve);
      app.write(payload);
      if (forwarder.halfCloseData !== false) app.end();
    });
  }

  /** Replies to a one-shot request when it is done, or when the response timeout (a connection's) passes. */
  #awaitOneShot(req: DataRequest, one: OneShotData, max: number, timeoutMs: number): void {
    const id = req.id;
    const oneShots = (this.#oneShots ??= new Set());
    oneShots.add(one);
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      void this.#reply(req, { type: 'Error', id, message: timeoutText(timeoutMs) });
      one.cancel();
    }, timeoutMs);
    void one.done.then((r) => {
      clearTimeout(timer);
      oneShots.delete(one);
      if (timedOut) return;
      if ('bytes' in r) return this.#reply(req, { type: 'Data', id, payload: r.bytes });
      if (r.failed === 'over-budget') this.#host.cfg.shared.counters.overBudget++;
      return this.#reply(req, { type: 'Error', id, message: r.failed === 'too-large' ? tooLargeText(max) : r.failed === 'over-budget' ? OVER_BUDGET_TEXT : CLOSED_EARLY });
    });
  }
}

/**
 * Reads one Data request's app connection to EOF and resolves with the reply (or the Error that ended it).
 * Its listeners are made once per request as plain member assignments (no per-request function naming
 * under a keepNames transpiler such as tsx).
 */
class DataReply {
  readonly #id: number;
  readonly #app: Duplex;
  readonly #apps: Set<Duplex>;
  readonly #max: number;
  /** The bytes of #chunks, held in the output budget until the reply is settled. */
  readonly #held: HeldResponseBytes;
  readonly #counters: ResponderCounters;
  readonly #resolve: (msg: ServerMessage) => void;
  readonly #timer: NodeJS.Timeout;
  readonly #onData: (chunk: Buffer) => void;
  #chunks: Uint8Array[] = [];
  #total = 0;
  #done = false;

  constructor(
    id: number,
    app: Duplex,
    apps: Set<Duplex>,
    max: number,
    timeoutMs: number,
    budget: OutputBudgetLike,
    counters: ResponderCounters,
    resolve: (msg: ServerMessage) => void,
  ) {
    this.#id = id;
    this.#app = app;
    this.#apps = apps;
    this.#max = max;
    this.#held = new HeldResponseBytes(budget);
    this.#counters = counters;
    this.#resolve = resolve;
    this.#onData = (chunk) => this.#data(chunk);
    this.#timer = setTimeout(() => this.#finish({ type: 'Error', id, message: timeoutText(timeoutMs) }), timeoutMs);
    app.on('data', this.#onData);
    app.once('end', () => {
      const chunks = this.#chunks;
      this.#finish({ type: 'Data', id, payload: chunks.length === 1 ? chunks[0]! : concatBytes(...chunks) });
    });
    app.on('error', (err: NodeJS.ErrnoException) => this.#finish({ type: 'Error', id, message: `app connection failed (${err.code ?? 'error'})` }));
    app.once('close', () => this.#finish({ type: 'Error', id, message: CLOSED_EARLY }));
  }

  #data(chunk: Buffer): void {
    this.#total += chunk.length;
    if (this.#total > this.#max) {
      this.#finish({ type: 'Error', id: this.#id, message: tooLargeText(this.#max) });
    } else if (!this.#held.take(chunk.length)) {
      this.#counters.overBudget++;
      this.#finish({ type: 'Error', id: this.#id, message: OVER_BUDGET_TEXT });
    } else {
      this.#chunks.push(chunk);
    }
  }

  #finish(msg: ServerMessage): void {
    if (this.#done) return;
    this.#done = true;
    // The reply (if Data) is counted again when it is queued, in the same turn.
    this.#held.release();
    if (msg.type !== 'Data') this.#chunks = [];
    clearTimeout(this.#timer);
    this.#app.off('data', this.#onData);
    this.#app.destroy();
    this.#apps.delete(this.#app);
    this.#resolve(msg);
  }
}
