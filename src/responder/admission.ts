// What a responder admits, before and around the handshake:
// - handshakes: at most maxConcurrentHandshakes run per turn of the event loop, maxQueuedHandshakes wait,
//   any more are closed before any crypto;
// - client addresses: at most maxSessionsPerClient sessions per PROXY v2 source address.
// It also owns the responder's counters (ResponderCounters), which the ops metrics read.
// With worker threads, the process-wide parts (the wait queue's size, the per-client counts) are shared
// through the interfaces below (SharedAdmission implements them over one SharedArrayBuffer).
import type { OutputBudgetLike } from './output-budget.ts';

/**
 * Live counters of one responder, for metrics: a plain object updated in place (no events); read it whenever
 * you scrape. Totals only grow; gauges (`handshakesWaiting`, `queuedBytes`) go both ways.
 */
export interface ResponderCounters {
  /** Connections closed at accept: over maxSessions, or the responder was draining/closed. */
  refusedSessions: number;
  /** Sessions closed right after their PROXY header: that client address already had maxSessionsPerClient. */
  refusedPerClient: number;
  /** Connections closed with a complete hs1 but no crypto: this turn's handshakes and the whole wait queue were taken. */
  refusedHandshakes: number;
  /** Handshakes that had to wait for a later turn of the event loop. */
  queuedHandshakes: number;
  /** Handshakes waiting now (in this responder). */
  handshakesWaiting: number;
  /** Sessions closed because their queued output did not drain within writeStallTimeoutMs. */
  writeStalls: number;
  /** Streams reset because, while the session waited on its apps' queues, their app took none of their bytes within writeStallTimeoutMs. */
  streamStalls: number;
  /** Requests answered `Error` (and Data replies replaced by `Error`) because queued output was over budget. */
  overBudget: number;
  /** Accept errors of the listeners feeding this responder (EMFILE, ENFILE, ...). */
  acceptErrors: number;
  /** Encrypted bytes queued toward clients, over every session sharing the budget. */
  readonly queuedBytes: number;
  readonly peakQueuedBytes: number;
}

export function createCounters(budget: OutputBudgetLike): ResponderCounters {
  return {
    refusedSessions: 0,
    refusedPerClient: 0,
    refusedHandshakes: 0,
    queuedHandshakes: 0,
    handshakesWaiting: 0,
    writeStalls: 0,
    streamStalls: 0,
    overBudget: 0,
    acceptErrors: 0,
    get queuedBytes() {
      return budget.queuedBytes;
    },
    get peakQueuedBytes() {
      return budget.peakQueuedBytes;
    },
  };
}

/**
 * Handshake admission. The Noise handshake's crypto (two X25519 operations) runs synchronously when a complete
 * hs1 has arrived; a flood of them in one I/O phase would run back to back and starve established sessions'
 * frames. So at most `maxConcurrentHandshakes` handshakes run per turn of the event loop; the next
 * `maxQueuedHandshakes` wait (their sockets paused, their handshake timeout running) for the following turns,
 * after the I/O of established sessions; any more are closed before any crypto. Connections that have not
 * sent a whole hs1 hold no slot (maxSessions, maxSessionsPerClient and the handshake timeout bound those).
 */
/**
 * The process-wide count of waiting handshakes, when several threads (each with its own HandshakeAdmission
 * and event loop) share maxQueuedHandshakes.
 */
export interface HandshakeQueueLike {
  /** Takes a place in the queue; false when maxQueuedHandshakes are already waiting. */
  tryEnter(): boolean;
  leave(): void;
  readonly waiting: number;
}

export class HandshakeAdmission {
  readonly #perTurn: number;
  readonly #maxQueued: number;
  readonly #counters: ResponderCounters;
  readonly #shared: HandshakeQueueLike | undefined;
  #queue: (() => void)[] = [];
  #ranThisTurn = 0;
  #scheduled = false;

  /** `sharedQueue`: places in the queue are also taken there (the per-turn budget stays this thread's). */
  constructor(limits: { maxConcurrentHandshakes: number; maxQueuedHandshakes: number }, counters: ResponderCounters, sharedQueue?: HandshakeQueueLike) {
    this.#perTurn = limits.maxConcurrentHandshakes;
    this.#maxQueued = limits.maxQueuedHandshakes;
    this.#counters = counters;
    this.#shared = sharedQueue;
  }

  /**
   * A session has a complete hs1 and asks to run its handshake: `run` is called now (synchronously: 'ran'),
   * on a later turn ('queued'; cancel() if the session goes away first), or never ('refused': close it).
   */
  request(run: () => void): 'ran' | 'queued' | 'refused' {
    const c = this.#counters;
    if (this.#ranThisTurn < this.#perTurn && this.#queue.length === 0) {
      this.#ranThisTurn++;
      this.#schedule();
      run();
      return 'ran';
    }
    if (this.#queue.length >= this.#maxQueued || (this.#shared !== undefined && !this.#shared.tryEnter())) {
      c.refusedHandshakes++;
      return 'refused';
    }
    this.#queue.push(run);
    c.queuedHandshakes++;
    c.handshakesWaiting = this.#queue.length;
    this.#schedule();
    return 'queued';
  }

  cancel(run: () => void): void {
    const i = this.#queue.indexOf(run);
    if (i < 0) return;
    this.#queue.splice(i, 1);
    this.#shared?.leave();
    this.#counters.handshakesWaiting = this.#queue.length;
  }

  #schedule(): void {
    if (this.#scheduled) return;
    this.#scheduled = true;
    setImmediate(this.#turn);
  }

  /** A new turn (after this turn's I/O): the budget starts over and the queue's head runs. */
  readonly #turn = (): void => {
    this.#scheduled = false;
    this.#ranThisTurn = 0;
    const n = Math.min(this.#perTurn, this.#queue.length);
    if (n === 0) return;
    const batch = this.#queue.splice(0, n);
    if (this.#shared !== undefined) for (let i = 0; i < n; i++) this.#shared.leave();
    this.#counters.handshakesWaiting = this.#queue.length;
    this.#ranThisTurn = n;
    this.#schedule();
    for (const run of batch) run();
  };
}

/** Sessions per client address: ClientSessions (one thread) or SharedAdmission's (every thread). */
export interface ClientSessionsLike {
  /** Takes a slot for `address`; false when it already holds the maximum. */
  claim(address: string): boolean;
  release(address: string): void;
}

/** Sessions per client address (the PROXY v2 source). */
export class ClientSessions implements ClientSessionsLike {
  readonly #max: number;
  readonly #counts = new Map<string, number>();

  constructor(max: number) {
    this.#max = max;
  }

  /** Takes a slot for `address`; false when it already holds the maximum. */
  claim(address: string): boolean {
    const n = this.#counts.get(address) ?? 0;
    if (n >= this.#max) return false;
    this.#counts.set(address, n + 1);
    return true;
  }

  release(address: string): void {
    const n = this.#counts.get(address) ?? 0;
    if (n <= 1) this.#counts.delete(address);
    else this.#counts.set(address, n - 1);
  }
}
