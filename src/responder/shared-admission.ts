// The process-wide admission state of a responder sharded over worker threads ([limits] workers), in one
// SharedArrayBuffer that the main thread allocates (create) and posts to each worker (attach): the queued-
// output budget, open public sessions, sessions per client address, waiting handshakes, decrypt jobs, the
// control nonce, one region of counters per thread, and the TLS ingress's connections, handshakes and refusals. Every limit that is process-wide with one thread
// stays exact with several: counts change with Atomics (or under SharedLock), never past their maximum.
//
// Layout (byte offsets): Int32 header words (0), the budget's BigInt64 total and peak (128), the counter
// regions (192, 128 bytes per thread), the client table (Int32 words, after the regions).
import { randomBytes } from 'node:crypto';
import type { ResponderCounters } from './admission.ts';
import type { ControlNonceState } from './control.ts';
import { ResponderError } from './errors.ts';
import type { Limits } from './limits.ts';
import { SharedOutputBudget } from './shared-budget.ts';
import { CLIENT_SLOT_WORDS, SharedClientSessions } from './shared-clients.ts';
import { COUNTER_REGION_SLOTS, regionCounters, SharedCount, sumRegions, type ThreadCounters } from './shared-counters.ts';
import { SharedLock } from './shared-lock.ts';
import { NONCE_WORDS, SharedControlNonce } from './shared-nonce.ts';
import type { TlsConnectionSlots } from '../ingress/tls-ingress.ts';
import type { BufferedBodiesLike } from '../http/stages/decrypt.ts';

/** Plain data to postMessage to a worker: the shared memory and the sizes it was laid out with. */
export interface SharedAdmissionInit {
  readonly buffer: SharedArrayBuffer;
  /** Writer regions: index 0 = the main thread, 1..workers = the workers. */
  readonly threads: number;
  /** Slots of the client table (a power of two ≥ 2 × maxSessions). */
  readonly clientSlots: number;
  /** Slots of the TLS ingress's client table (a power of two ≥ 2 × maxTlsConnections, at least 8). */
  readonly tlsClientSlots: number;
  readonly maxSessions: number;
  readonly maxSessionsPerClient: number;
  readonly maxQueuedBytes: number;
  readonly maxQueuedHandshakes: number;
  readonly maxConcurrentDecrypts: number;
  /** TLS ingress on the workers: its maxConnections and maxPendingHandshakes (0 when TLS ingress is off). */
  readonly maxTlsConnections: number;
  readonly maxTlsHandshakes: number;
  /** HTTP mode: request body bytes buffered at once over every thread's forwarder ([limits] max_buffered_bodies_bytes). */
  readonly maxBufferedBodies: number;
}

/**
 * The TLS ingress's limits, process-wide: the main thread takes a connection's two slots before it hands the
 * connection to a worker, the worker gives them back (the handshake slot when the handshake ends, the
 * connection slot when it closes). `refused` counts every thread's refusals.
 */
export interface SharedTlsSlots extends TlsConnectionSlots {
  readonly connections: number;
  readonly handshakes: number;
}

export type SharedCounterTotals = { counters: Omit<ResponderCounters, 'queuedBytes' | 'peakQueuedBytes'>; refused: number };

/** Int32 header words. */
const W = {
  epoch: 0,
  budgetWaiters: 1,
  sessions: 2,
  handshakesWaiting: 3,
  decrypts: 4,
  clientsLock: 5,
  clientsUsed: 6,
  nonceSeq: 7,
  nonce: 8, // .. 8 + NONCE_WORDS
  salt: 8 + NONCE_WORDS, // 4 words
  tlsConnections: 12 + NONCE_WORDS,
  tlsHandshakes: 13 + NONCE_WORDS,
  tlsRefused: 14 + NONCE_WORDS, // read as unsigned: 2^32 refusals before it wraps
  tlsClientsLock: 15 + NONCE_WORDS,
  tlsClientsUsed: 16 + NONCE_WORDS,
} as const;
const SALT_BYTES = 16;
/** BigInt64 words: the output budget's total and peak, then the buffered bodies' total. */
const TOTALS_OFFSET = 128;
const BODIES_TOTAL = 2;
/** maxBufferedBodies when not given: the config's default (a forwarder's own default too). */
const DEFAULT_BUFFERED_BODIES = 256 * 1024 * 1024;
const REGIONS_OFFSET = 192;

function layout(threads: number, clientSlots: number, tlsClientSlots: number): { regions: number; table: number; tlsTable: number; bytes: number } {
  const table = REGIONS_OFFSET + threads * COUNTER_REGION_SLOTS * 8;
  const tlsTable = table + clientSlots * CLIENT_SLOT_WORDS * 4;
  return { regions: REGIONS_OFFSET, table, tlsTable, bytes: tlsTable + tlsClientSlots * CLIENT_SLOT_WORDS * 4 };
}

/** Slots of a client table for `entries` counted at once: a power of two, at least twice as many (shared-clients.ts). */
function tableSlots(entries: number): number {
  let slots = 8;
  while (slots < 2 * entries) slots *= 2;
  return slots;
}

function positiveInt(name: string, v: unknown, min = 1): number {
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < min) {
    throw new ResponderError('RESPONDER_BAD_OPTIONS', `shared admission: ${name}: expected an integer ≥ ${min}, found ${String(v)}`);
  }
  return v;
}

export class SharedAdmission {
  readonly init: SharedAdmissionInit;
  /** Process-wide queued-output budget (limits.maxQueuedBytes): the control responder's and every worker's public one. */
  readonly budget: SharedOutputBudget;
  /** Public-channel sessions per client address (the PROXY v2 source), exact across threads. */
  readonly clients: SharedClientSessions;
  /** TLS ingress connections per client address (limits.maxSessionsPerClient too, counted apart), exact across threads. */
  readonly tlsClients: SharedClientSessions;
  /** Open public sessions: tryOpen() before a connection is handed over, closed() when its session ends or never started. */
  readonly sessions: { tryOpen(): boolean; closed(): void; readonly count: number };
  /** Handshakes waiting for a later turn, process-wide (maxQueuedHandshakes). */
  readonly handshakeQueue: { tryEnter(): boolean; leave(): void; readonly waiting: number };
  /** max_concurrent_decrypts across every thread's DecryptScheduler. */
  readonly decryptSlots: { tryAcquire(): boolean; release(): void; readonly active: number; readonly max: number };
  /** The per-process control nonce, the same in every thread. */
  readonly controlNonce: ControlNonceState;
  /** TLS ingress connections and handshakes across threads (tls-ingress.ts on the workers). */
  readonly tls: SharedTlsSlots;
  /** HTTP mode: request bodies the forwarders of every thread buffer (stages/decrypt.ts), one process-wide total. */
  readonly bufferedBodies: BufferedBodiesLike;
  readonly #regions: Float64Array;
  readonly #counters = new Map<number, ThreadCounters>();

  /** Main thread: allocates the state for the main thread (index 0) and `workers` workers (1..workers). */
  static create(opts: { limits: Limits; workers: number; maxConcurrentDecrypts: number; tls?: { maxConnections: number; maxPendingHandshakes: number }; maxBufferedBodies?: number }): SharedAdmission {
    const { limits } = opts;
    const threads = positiveInt('workers', opts.workers, 0) + 1;
    const maxSessions = positiveInt('limits.maxSessions', limits.maxSessions);
    const clientSlots = tableSlots(maxSessions);
    const maxTlsConnections = opts.tls === undefined ? 0 : positiveInt('tls.maxConnections', opts.tls.maxConnections);
    const tlsClientSlots = tableSlots(maxTlsConnections);
    const buffer = new SharedArrayBuffer(layout(threads, clientSlots, tlsClientSlots).bytes);
    new Uint8Array(buffer, W.salt * 4, SALT_BYTES).set(randomBytes(SALT_BYTES));
    const shared = new SharedAdmission({
      buffer,
      threads,
      clientSlots,
      tlsClientSlots,
      maxSessions,
      maxSessionsPerClient: positiveInt('limits.maxSessionsPerClient', limits.maxSessionsPerClient),
      maxQueuedBytes: positiveInt('limits.maxQueuedBytes', limits.maxQueuedBytes),
      maxQueuedHandshakes: positiveInt('limits.maxQueuedHandshakes', limits.maxQueuedHandshakes, 0),
      maxConcurrentDecrypts: positiveInt('maxConcurrentDecrypts', opts.maxConcurrentDecrypts),
      maxTlsConnections,
      maxTlsHandshakes: opts.tls === undefined ? 0 : positiveInt('tls.maxPendingHandshakes', opts.tls.maxPendingHandshakes),
      maxBufferedBodies: positiveInt('maxBufferedBodies', opts.maxBufferedBodies ?? DEFAULT_BUFFERED_BODIES),
    });
    shared.controlNonce.consume(); // the first nonce (the zeros it replaces go nowhere)
    return shared;
  }

  /** A worker: the same state, from the init the main thread posted. Throws RESPONDER_BAD_OPTIONS if it does not fit. */
  static attach(init: SharedAdmissionInit): SharedAdmission {
    if (typeof init !== 'object' || init === null || !(init.buffer instanceof SharedArrayBuffer)) {
      throw new ResponderError('RESPONDER_BAD_OPTIONS', 'shared admission: expected the init of SharedAdmission.create (with its SharedArrayBuffer)');
    }
    const threads = positiveInt('threads', init.threads);
    const slots = positiveInt('clientSlots', init.clientSlots);
    const tlsSlots = positiveInt('tlsClientSlots', init.tlsClientSlots);
    if ((slots & (slots - 1)) !== 0 || (tlsSlots & (tlsSlots - 1)) !== 0 || init.buffer.byteLength !== layout(threads, slots, tlsSlots).bytes) {
      throw new ResponderError(
        'RESPONDER_BAD_OPTIONS',
        `shared admission: a buffer of ${init.buffer.byteLength} bytes does not fit ${threads} threads, ${slots} client slots and ${tlsSlots} TLS client slots`,
      );
    }
    for (const k of ['maxSessions', 'maxSessionsPerClient', 'maxQueuedBytes', 'maxConcurrentDecrypts'] as const) positiveInt(k, init[k]);
    for (const k of ['maxQueuedHandshakes', 'maxTlsConnections', 'maxTlsHandshakes'] as const) positiveInt(k, init[k], 0);
    positiveInt('maxBufferedBodies', init.maxBufferedBodies);
    return new SharedAdmission(init);
  }

  private constructor(init: SharedAdmissionInit) {
    this.init = init;
    const { buffer } = init;
    const words = new Int32Array(buffer);
    const at = layout(init.threads, init.clientSlots, init.tlsClientSlots);
    this.#regions = new Float64Array(buffer, at.regions, init.threads * COUNTER_REGION_SLOTS);
    this.budget = new SharedOutputBudget(init.maxQueuedBytes, {
      words,
      epoch: W.epoch,
      waiters: W.budgetWaiters,
      totals: new BigInt64Array(buffer, TOTALS_OFFSET, 2),
      queued: 0,
      peak: 1,
    });
    const salt = new Uint8Array(buffer, W.salt * 4, SALT_BYTES).slice();
    /** A per-client table at byte `offset` of `capacity` slots, its used count and lock at those words. */
    const clientTable = (offset: number, capacity: number, used: number, lock: number): SharedClientSessions =>
      new SharedClientSessions(init.maxSessionsPerClient, { words, base: offset / 4, capacity, used, lock: new SharedLock(words, lock), salt });
    this.clients = clientTable(at.table, init.clientSlots, W.clientsUsed, W.clientsLock);
    this.tlsClients = clientTable(at.tlsTable, init.tlsClientSlots, W.tlsClientsUsed, W.tlsClientsLock);
    const sessions = new SharedCount(words, W.sessions, init.maxSessions, 'sessions');
    this.sessions = {
      tryOpen: () => sessions.tryTake(),
      closed: () => sessions.giveBack(),
      get count() {
        return sessions.value;
      },
    };
    const waiting = new SharedCount(words, W.handshakesWaiting, init.maxQueuedHandshakes, 'handshake queue');
    this.handshakeQueue = {
      tryEnter: () => waiting.tryTake(),
      leave: () => waiting.giveBack(),
      get waiting() {
        return waiting.value;
      },
    };
    const decrypts = new SharedCount(words, W.decrypts, init.maxConcurrentDecrypts, 'decrypt slots');
    this.decryptSlots = {
      tryAcquire: () => decrypts.tryTake(),
      release: () => decrypts.giveBack(),
      get active() {
        return decrypts.value;
      },
      max: init.maxConcurrentDecrypts,
    };
    this.controlNonce = new SharedControlNonce(words, W.nonceSeq, W.nonce);
    this.bufferedBodies = sharedBodies(new BigInt64Array(buffer, TOTALS_OFFSET, BODIES_TOTAL + 1), init.maxBufferedBodies);
    const tlsConnections = new SharedCount(words, W.tlsConnections, init.maxTlsConnections, 'TLS connections');
    const tlsHandshakes = new SharedCount(words, W.tlsHandshakes, init.maxTlsHandshakes, 'TLS handshakes');
    this.tls = {
      tryOpen: () => {
        if (!tlsConnections.tryTake()) return false;
        if (tlsHandshakes.tryTake()) return true;
        tlsConnections.giveBack();
        return false;
      },
      handshakeEnded: () => tlsHandshakes.giveBack(),
      closed: () => tlsConnections.giveBack(),
      refused: () => void Atomics.add(words, W.tlsRefused, 1),
      get connections() {
        return tlsConnections.value;
      },
      get handshakes() {
        return tlsHandshakes.value;
      },
      get refusedCount() {
        return Atomics.load(words, W.tlsRefused) >>> 0;
      },
    };
  }

  /**
   * The counters of the thread that owns region `index` (0 = main, 1..workers): its own slots, written by it
   * alone (`counters.writeStalls++` is a plain read and write), plus its refused count. queuedBytes and
   * peakQueuedBytes read the shared budget. The same object for the same index.
   */
  counters(index: number): ThreadCounters {
    if (!Number.isSafeInteger(index) || index < 0 || index >= this.init.threads) {
      throw new ResponderError('RESPONDER_BAD_OPTIONS', `shared admission: counters(${String(index)}): expected 0..${this.init.threads - 1}`);
    }
    let c = this.#counters.get(index);
    if (c === undefined) this.#counters.set(index, (c = regionCounters(this.#regions, index, this.budget)));
    return c;
  }

  /** Every thread's counters summed (the main thread reads these at scrape time). */
  totals(): SharedCounterTotals {
    const { refused, ...counters } = sumRegions(this.#regions, this.init.threads);
    return { counters, refused };
  }
}

/** A byte total in shared memory, taken with compare-and-swap so no thread passes `maxBytes`. */
function sharedBodies(totals: BigInt64Array, maxBytes: number): BufferedBodiesLike {
  const max = BigInt(maxBytes);
  return {
    maxBytes,
    get held() {
      return Number(Atomics.load(totals, BODIES_TOTAL));
    },
    tryTake(bytes) {
      const add = BigInt(bytes);
      let held = Atomics.load(totals, BODIES_TOTAL);
      for (;;) {
        if (held + add > max) return false;
        const seen = Atomics.compareExchange(totals, BODIES_TOTAL, held, held + add);
        if (seen === held) return true;
        held = seen;
      }
    },
    give(bytes) {
      Atomics.sub(totals, BODIES_TOTAL, BigInt(bytes));
    },
  };
}
