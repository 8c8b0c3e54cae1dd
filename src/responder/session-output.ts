// A session's output toward its client, under two bounds a client cannot move:
// - the shared output budget (limits.maxQueuedBytes; OutputBudgetLike): a message is queued only if the total stays within it.
//   A Data reply that does not fit becomes a short `Error{id}` (its bytes are freed at once); anything else
//   that does not fit waits here, in order, until bytes drain somewhere (the session stops reading and pauses
//   its apps meanwhile, so what waits is bounded by what was already in progress);
// - the write-stall timeout (limits.writeStallTimeoutMs): while output is pending, some message must finish
//   writing within it, or the session is closed — a client that keeps its connection alive but never reads
//   cannot hold memory or a slot for longer. Messages that only wait for room in the budget (this session's
//   writer empty) are not its client's stall: the sessions holding the room answer for theirs.
import type { Duplex } from 'node:stream';
import type { CipherState } from '../noise/cipher-state.ts';
import { serverMessageSize, type ByteEncoding, type ServerMessage } from '../wire/messages.ts';
import type { ResponderCounters } from './admission.ts';
import { MessageSender } from './message-sender.ts';
import type { OutputBudgetLike } from './output-budget.ts';

/** Frame bytes beyond the message: 4-byte length prefix + 16-byte AEAD tag. */
const FRAME_OVERHEAD = 20;
/** Upper bound of a message's encoding beyond 2 bytes per payload byte (CBOR heads, id, type). */
const HEAD_BOUND = 256;

export const OVER_BUDGET_TEXT = 'agent overloaded: output queued to clients is over its budget; retry later';

interface Deferred {
  readonly msg: ServerMessage;
  readonly enc: ByteEncoding;
  readonly owned: boolean;
  readonly pooled: Uint8Array | undefined;
  readonly resolve: () => void;
}

export interface SessionOutputHooks {
  /** After each message written (the session re-evaluates its budgets). */
  onWritten(): void;
  onFailed(err: unknown): void;
  /** Pending output made no progress within the write-stall timeout. */
  onStall(): void;
}

/** One settled promise shared by every session that has nothing pending (promises are immutable). */
const SETTLED: Promise<void> = Promise.resolve();

export class SessionOutput {
  readonly #sender: MessageSender;
  readonly #budget: OutputBudgetLike;
  readonly #counters: ResponderCounters;
  readonly #stallMs: number;
  readonly #hooks: SessionOutputHooks;
  /** This session's queued bytes as last reported to the budget. */
  #reported = 0;
  /** A reservation (#reserve) not yet settled by sync(). */
  #reserved = false;
  #deferred: Deferred[] = [];
  #lastDeferred: Promise<void> = SETTLED;
  #waiting = false;
  #stallTimer: NodeJS.Timeout | null = null;
  #stallArmed = false;
  #closed = false;

  constructor(sock: Duplex, budget: OutputBudgetLike, counters: ResponderCounters, stallTimeoutMs: number, hooks: SessionOutputHooks) {
    this.#budget = budget;
    this.#counters = counters;
    this.#stallMs = stallTimeoutMs;
    this.#hooks = hooks;
    this.#sender = new MessageSender(sock, this.#onWritten, hooks.onFailed);
  }

  get ready(): boolean {
    return this.#sender.ready;
  }

  /** Bytes queued in this session's writer (deferred messages not included). */
  get queuedBytes(): number {
    return this.#sender.queuedBytes;
  }

  /** Messages waiting for room in the budget. */
  get deferred(): number {
    return this.#deferred.length;
  }

  /** Resolves when everything sent so far, deferred messages included, has been written. */
  get flushed(): Promise<void> {
    return this.#deferred.length === 0 ? this.#sender.flushed : this.#lastDeferred.then(() => this.#sender.flushed);
  }

  start(send: CipherState): void {
    this.#sender.start(send);
  }

  writeRaw(bytes: Uint8Array): Promise<void> {
    const p = this.#sender.writeRaw(bytes);
    this.sync();
    return p;
  }

  /**
   * Queues one message (or defers it, or replaces a Data reply that does not fit by an Error). Throws when it
   * cannot be sealed (nothing queued); the promise resolves when written or when the session is gone.
   */
  send(msg: ServerMessage, enc: ByteEncoding, owned: boolean, pooled?: Uint8Array): Promise<void> {
    let m = msg;
    if (m.type === 'Data' && !this.#fits(m, enc)) {
      this.#counters.overBudget++;
      m = { type: 'Error', id: m.id, message: OVER_BUDGET_TEXT };
    }
    const pool = m === msg ? pooled : undefined; // an Error in place of a Data reply carries no payload
    if (this.#deferred.length > 0 || !this.#reserve(m, enc)) return this.#defer(m, enc, owned, pool);
    try {
      return this.#sender.send(m, enc, owned, pool);
    } finally {
      this.sync(); // the reservation becomes the bytes really queued (none if sealing failed)
    }
  }

  /** Reports this session's queue to the budget and (dis)arms the stall timer. Call after anything changed. */
  sync(): void {
    if (this.#closed) return;
    const queued = this.#sender.queuedBytes;
    if (queued !== this.#reported || this.#reserved) {
      this.#budget.adjust(queued - this.#reported); // settles a reservation (and raises the peak) even at 0
      this.#reported = queued;
      this.#reserved = false;
    }
    if (queued > 0 || this.#deferred.length > 0) {
      if (!this.#stallArmed) {
        this.#stallArmed = true;
        if (this.#stallTimer === null) this.#stallTimer = setTimeout(this.#onStallTimer, this.#stallMs);
        else this.#stallTimer.refresh();
      }
    } else {
      this.#stallArmed = false; // the timer, if pending, finds nothing to do
    }
  }

  /** The session is over: gives its bytes back to the budget, settles deferred sends. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#budget.adjust(-this.#reported);
    this.#reported = 0;
    if (this.#stallTimer !== null) clearTimeout(this.#stallTimer);
    if (this.#waiting) this.#budget.cancelWait(this.#flushDeferred);
    const deferred = this.#deferred;
    this.#deferred = [];
    for (const d of deferred) d.resolve();
  }

  #fits(msg: ServerMessage, enc: ByteEncoding): boolean {
    const payload = (msg as { payload?: Uint8Array }).payload;
    // Cheap bound first (an int-array byte encodes in at most 2 bytes); the exact size only near the budget.
    if (payload !== undefined && this.#budget.fits(2 * payload.length + HEAD_BOUND + FRAME_OVERHEAD)) return true;
    return this.#budget.fits(serverMessageSize(msg, enc) + FRAME_OVERHEAD);
  }

  /**
   * Takes room for `msg` in the budget in one step (sessions of other threads draw on it too), by the cheap bound
   * or, near the limit, the exact size; counted as reported, so the next sync() settles it to the bytes queued.
   */
  #reserve(msg: ServerMessage, enc: ByteEncoding): boolean {
    const payload = (msg as { payload?: Uint8Array }).payload;
    let bytes = payload === undefined ? -1 : 2 * payload.length + HEAD_BOUND + FRAME_OVERHEAD;
    if (bytes < 0 || !this.#budget.tryReserve(bytes)) {
      bytes = serverMessageSize(msg, enc) + FRAME_OVERHEAD;
      if (!this.#budget.tryReserve(bytes)) return false;
    }
    this.#reported += bytes;
    this.#reserved = true;
    return true;
  }

  #defer(msg: ServerMessage, enc: ByteEncoding, owned: boolean, pooled: Uint8Array | undefined): Promise<void> {
    const p = new Promise<void>((resolve) => this.#deferred.push({ msg, enc, owned, pooled, resolve }));
    this.#lastDeferred = p;
    this.#wait();
    this.sync();
    return p;
  }

  #wait(): void {
    if (this.#waiting || this.#closed) return;
    this.#waiting = true;
    this.#budget.waitForRoom(this.#flushDeferred);
  }

  readonly #flushDeferred = (): void => {
    this.#waiting = false;
    if (this.#closed) return;
    let moved = false;
    try {
      while (this.#deferred.length > 0) {
        const d = this.#deferred[0]!;
        if (!this.#reserve(d.msg, d.enc)) break;
        this.#deferred.shift();
        let sent: Promise<void>;
        try {
          sent = this.#sender.send(d.msg, d.enc, d.owned, d.pooled);
        } catch (err) {
          d.resolve(); // its send() promise settles whatever happens (the session is failing)
          throw err;
        } finally {
          this.sync();
        }
        void sent.then(d.resolve);
        moved = true;
      }
    } catch (err) {
      this.#hooks.onFailed(err);
      return;
    }
    // Its client gets the whole timeout for what it was just given, however long the room took to come.
    if (moved && this.#stallArmed) this.#stallTimer!.refresh();
    if (this.#deferred.length > 0) this.#wait();
    this.#hooks.onWritten();
  };

  readonly #onWritten = (): void => {
    if (this.#stallArmed) this.#stallTimer!.refresh(); // progress
    this.#hooks.onWritten();
  };

  readonly #onStallTimer = (): void => {
    if (this.#closed) return;
    if (!this.#stallArmed || (this.#sender.queuedBytes === 0 && this.#deferred.length === 0)) {
      // Nothing pending: let go of the fired timer (an idle session holds none); sync() makes a new one if needed.
      this.#stallArmed = false;
      this.#stallTimer = null;
      return;
    }
    if (this.#sender.queuedBytes === 0) {
      // Only waiting for room others hold: not this client's stall.
      this.#stallTimer!.refresh();
      return;
    }
    this.#hooks.onStall();
  };
}
