// [limits] workers > 1: the public channel's sessions run in worker threads. The main thread keeps the listener
// and admits each connection against the process-wide session limit (shared memory, exact across threads),
// then hands its descriptor — before a byte is read — to the worker with the fewest sessions
// (src/transport/handoff.ts). It serves the workers the NSM, the transaction log, the operational log, the
// metrics and the decrypt pool (src/runtime/worker-services/). Seen from startAgent this is the public
// channel's Responder: drain and close reach every worker, counters sum every thread.
// With `tls` the workers serve TLS ingress connections too: tls-handoff.ts admits and hands them (handTls)
// and serves each worker's identity port.
// Threads start on demand, as libuv's thread pool does: none at boot (each costs ~10 MiB RSS at rest), the
// first with the first connection, the next one (index by index, up to `count`) when a connection arrives and
// every thread already holds one — a starting thread counting the connections waiting for it, so a burst before
// any is ready (every client reconnecting after a restart) starts them all and waits spread over them. Once a
// thread is ready, connections go to a ready thread while the next one starts; none waits. Once started a
// thread stays. At boot only the module the threads run is checked (a layer without it does not boot): proving
// more would mean starting a thread, which is what this saves. A thread that cannot start later is a bug, as one
// that dies is, and ends the agent the same way; the connections waiting for it are closed and their slots freed.
// A worker that dies takes its sessions' shared state with it (slots, queued-output bytes): that is a bug, and
// it ends the agent as an uncaught error on the main thread would (the supervisor or the enclave restarts it).
import { performance, type EventLoopUtilization } from 'node:perf_hooks';
import type { Duplex } from 'node:stream';
import { MessageChannel, type MessagePort, type Worker } from 'node:worker_threads';
import type { Logger } from 'pino';
import type { Nsm } from '../attestation/nsm.ts';
import type { Config } from '../config.ts';
import type { DecryptPool } from '../crypto/decrypt-pool.ts';
import { wipeScalars, type Keyring } from '../crypto/keyring.ts';
import type { LogSink } from '../http/log-sink.ts';
import type { AgentMetrics } from '../ops/metrics.ts';
import type { ResponderCounters } from '../responder/admission.ts';
import { resolveLimits } from '../responder/limits.ts';
import type { Responder } from '../responder/server.ts';
import type { SessionSummary } from '../responder/session.ts';
import type { SharedAdmission } from '../responder/shared-admission.ts';
import { detachConnection, discardHandedConnection, HandoffLedger } from '../transport/handoff.ts';
import type { HandedConnection } from '../transport/handoff.ts';
import type { ConnectionInfo } from '../transport/types.ts';
import { moduleWorkerExists, spawnModuleWorker } from '../crypto/module-worker.ts';
import { RateLimitedLog, REFUSAL_LOG_INTERVAL_MS } from '../util/rate-limited-log.ts';
import { RuntimeError } from './errors.ts';
import { limitsFrom } from './forwarder-setup.ts';
import type { FromWorker, SessionWorkerData, ToWorker } from './session-worker-protocol.ts';
import { serveDecryptPool } from './worker-services/decrypt-proxy.ts';
import { serveWorkerLogs } from './worker-services/log-proxy.ts';
import { serveMetrics, type MetricsServer } from './worker-services/metrics-proxy.ts';
import { serveNsm } from './worker-services/nsm-proxy.ts';
import { logSinkCapabilities, serveLogSink } from './worker-services/trx-proxy.ts';

export interface SessionWorkersOptions {
  /** Worker threads at most (≥ 2; one thread is the main thread's own responder), started on demand. */
  count: number;
  config: Config;
  keyring: Keyring;
  nsm: Nsm;
  logger: Logger;
  trxSink?: LogSink;
  metrics: AgentMetrics;
  /** After each public session, besides the metrics (tests, embedders). */
  onSessionClosed?: (summary: SessionSummary) => void;
  admission: SharedAdmission;
  decryptPool: DecryptPool;
  attestationKey: Uint8Array | undefined;
  features?: string[];
  apiKeyHashes?: string[];
  /** How long a worker may take to start (load its modules, build its keyring). Default 30 s. */
  startTimeoutMs?: number;
  /** TLS ingress connections run on the workers too (tls-handoff.ts). */
  tls?: boolean;
}

export interface SessionWorkers extends Responder {
  /** Its listener hands connections over untouched (startAgent). */
  readonly handoff: true;
  /** Brings every worker's metrics up to date (before a scrape). */
  flushMetrics(): Promise<void>;
  /** Each started worker's event-loop utilisation, read from this thread (the memory trim asks whether any was busy). */
  readonly loopUtilization: readonly LoopUtilization[];
  /** Threads started so far (reported ready). */
  readonly started: number;
  /** The connections each thread started or starting holds, as this thread counts them to choose where the next goes. */
  readonly connectionsByThread: readonly number[];
  /** Started with `tls`. */
  readonly tls: boolean;
  /**
   * With `tls`: calls `serve` with each worker's identity port, main side (tls-handoff.ts serves it), at once for
   * the threads started or starting and as each later one starts; returns the unsubscribe.
   */
  onIdentityPort(serve: (port: MessagePort) => void): () => void;
  /** Log and transaction lines the workers dropped over their in-flight bound (worker-services/in-flight.ts). */
  readonly droppedLogLines: number;
  /** With `tls`: posts a TLS connection (admitted, detached) to the least-loaded worker; false once draining (the caller still owns it). */
  handTls(connection: HandedConnection, generation: number): boolean;
}

type LoopUtilization = (current?: EventLoopUtilization, previous?: EventLoopUtilization) => EventLoopUtilization;

/** After the drain timeout, a worker's sessions get this long to hand over their Error frames (server.ts). */
const DRAIN_GRACE_MS = 2_000 + 3_000;
const CLOSE_TIMEOUT_MS = 5_000;

type Connection = ToWorker & { type: 'connection' };

interface Slot {
  readonly index: number;
  readonly worker: Worker;
  readonly metrics: MetricsServer;
  readonly ports: MessagePort[];
  readonly identity: MessagePort | undefined;
  /** Lines it dropped over its in-flight bound, as its log and trx ports report them. */
  readonly droppedLines: () => number;
  /** Sessions it holds as this thread counts them (handed, minus summaries and `unused`): where the next goes. */
  live: number;
  stopped: ((error?: string) => void) | null;
  /** Connections posted to it and not confirmed taken: their fds are closed here if it exits without them. */
  readonly handoffs: HandoffLedger;
  /** Reported ready: until then it takes no connection, those for it wait in `queue`. */
  ready: boolean;
  /** Its start failed: it takes nothing. */
  failed: boolean;
  readonly queue: Connection[];
  /** True once ready, false if it never starts. */
  readonly started: Promise<boolean>;
  readonly loopUtilization: LoopUtilization;
}

export async function startSessionWorkers(opts: SessionWorkersOptions): Promise<SessionWorkers> {
  const { admission, logger } = opts;
  const limits = resolveLimits(limitsFrom(opts.config));
  const refusals = new RateLimitedLog(logger, 'connections refused (public channel)', REFUSAL_LOG_INTERVAL_MS);
  const acceptErrors = new RateLimitedLog(logger, 'listener accept errors (public channel)', REFUSAL_LOG_INTERVAL_MS);
  // What only the main thread sees: refusals at admission (before a worker has the connection), accept errors.
  let refusedHere = 0;
  let acceptErrorCount = 0;
  let state: 'running' | 'draining' | 'closed' = 'running';
  let stopping = false;
  /** Started or starting, index i + 1 at i (the shared admission regions are numbered so). */
  const slots: Slot[] = [];
  const identityListeners = new Set<(port: MessagePort) => void>();
  const startTimeoutMs = opts.startTimeoutMs ?? 30_000;

  if (!(await moduleWorkerExists(import.meta.url, 'session-worker'))) {
    throw new RuntimeError('RUNTIME_WORKER_FAILED', 'the session thread module (session-worker) is not beside the agent: the session threads cannot start');
  }

  /** A worker lost, or one that never started, while running: the agent cannot keep (or take) its sessions. */
  const fail = (index: number, why: string, message: string): void => {
    if (stopping) return;
    logger.fatal({ worker: index, why }, message);
    setImmediate(() => {
      throw new RuntimeError('RUNTIME_WORKER_FAILED', `session worker ${index} ${why}`);
    });
  };

  /** A connection admitted (and detached) that no worker will take: its fd closed, its slots back, counted refused. */
  const drop = (m: Connection, reason: string): void => {
    discardHandedConnection(m.connection);
    if (m.channel === 'tls') {
      admission.tls.handshakeEnded();
      admission.tls.closed();
      admission.tls.refused();
      return;
    }
    admission.sessions.closed();
    refusedHere++;
    refusals.note(reason);
  };
  const dropQueued = (slot: Slot, reason: string): void => {
    const queued = slot.queue.splice(0);
    slot.live -= queued.length; // counted when queued: the thread will never hold them
    for (const m of queued) drop(m, reason);
    if (queued.length > 0) logger.warn({ worker: slot.index, connections: queued.length, reason }, 'closed connections that waited for a session thread to start');
  };

  /** Starts thread `index`; it takes connections once it reports ready. Throws if the Worker cannot be created. */
  const spawn = (index: number): Slot => {
    const t0 = performance.now();
    const channels = { nsm: new MessageChannel(), log: new MessageChannel(), metrics: new MessageChannel(), decrypt: new MessageChannel(), trx: opts.trxSink === undefined ? undefined : new MessageChannel(), identity: opts.tls === true ? new MessageChannel() : undefined };
    const scalars = opts.keyring.keyMaterial().scalars();
    const data: SessionWorkerData = {
      index,
      config: opts.config,
      scalars,
      attestationKey: opts.attestationKey,
      ...(opts.features === undefined ? {} : { features: opts.features }),
      ...(opts.apiKeyHashes === undefined ? {} : { apiKeyHashes: opts.apiKeyHashes }),
      logLevel: logger.level,
      admission: admission.init,
      ...(opts.trxSink === undefined ? {} : { trxCapabilities: logSinkCapabilities(opts.trxSink) }),
      ports: { nsm: channels.nsm.port2, log: channels.log.port2, metrics: channels.metrics.port2, decrypt: channels.decrypt.port2, ...(channels.trx === undefined ? {} : { trx: channels.trx.port2 }), ...(channels.identity === undefined ? {} : { identity: channels.identity.port2 }) },
      ...(opts.tls === true ? { tls: true } : {}),
    };
    const transfer = Object.values(data.ports);
    let worker: Worker;
    try {
      worker = spawnModuleWorker(import.meta.url, 'session-worker', { workerData: data, transferList: transfer });
    } catch (err) {
      for (const c of Object.values(channels)) {
        c?.port1.close();
        c?.port2.close();
      }
      throw err;
    } finally {
      wipeScalars(scalars); // workerData was cloned by now: the copies on this side go at once
    }
    serveNsm(channels.nsm.port1, opts.nsm);
    const logs = serveWorkerLogs(channels.log.port1, logger);
    serveDecryptPool(channels.decrypt.port1, opts.decryptPool);
    const trx = channels.trx !== undefined && opts.trxSink !== undefined ? serveLogSink(channels.trx.port1, opts.trxSink, logger) : undefined;
    let settle!: (ready: boolean) => void;
    const perf = worker.performance;
    const slot: Slot = {
      index,
      worker,
      // Under the `thread` label session-N, its heap figures (ops/thread-heap.ts): one per worker, a closed set.
      metrics: serveMetrics(
        channels.metrics.port1,
        opts.metrics,
        (summary) => {
          slot.live--;
          try {
            opts.onSessionClosed?.(summary);
          } catch {
            // a metrics hook must not break the responder
          }
        },
        `session-${index}`,
      ),
      ports: [channels.nsm.port1, channels.log.port1, channels.metrics.port1, channels.decrypt.port1, ...(channels.trx === undefined ? [] : [channels.trx.port1]), ...(channels.identity === undefined ? [] : [channels.identity.port1])],
      identity: channels.identity?.port1,
      droppedLines: () => logs.droppedInWorker + (trx?.dropped ?? 0),
      live: 0,
      stopped: null,
      handoffs: new HandoffLedger(),
      ready: false,
      failed: false,
      queue: [],
      started: new Promise<boolean>((resolve) => (settle = resolve)),
      loopUtilization: (current, previous) => perf.eventLoopUtilization(current, previous),
    };
    slots.push(slot);
    let settled = false;
    const startFailed = (why: string): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      slot.failed = true;
      dropQueued(slot, 'thread-failed');
      settle(false);
      void worker.terminate();
      // While draining or closing it was to stop anyway: nothing is lost.
      if (state === 'running') fail(index, why, 'a session thread did not start; the agent cannot serve its sessions');
      else logger.warn({ worker: index, why }, 'a session thread did not start before the agent stopped');
    };
    const timer = setTimeout(() => startFailed(`did not start within ${startTimeoutMs} ms`), startTimeoutMs);
    worker.on('message', (m: FromWorker) => {
      if (m.type === 'ready') {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        slot.ready = true;
        logger.info({ worker: index, ms: Math.round(performance.now() - t0) }, 'session thread started');
        for (const c of slot.queue.splice(0)) handTo(slot, c);
        settle(true);
      } else if (m.type === 'taken') {
        slot.handoffs.confirm(m.ids);
      } else if (m.type === 'unused' || m.type === 'tls-closed') {
        slot.live--;
      } else if (m.type === 'stopped') {
        const done = slot.stopped;
        slot.stopped = null;
        done?.(m.error);
      }
    });
    worker.on('error', (err) => {
      const why = `${err.name}: ${(err as { code?: string }).code ?? err.message}`;
      if (!slot.ready) startFailed(`failed to start (${why})`);
      else fail(index, `stopped (${why})`, 'a session worker stopped; the agent cannot keep its sessions');
    });
    worker.on('exit', (code) => {
      // Its thread has ended (receipts posted before are delivered first): what it never took is closed here.
      const swept = slot.handoffs.sweep();
      if (swept > 0) logger.warn({ worker: index, connections: swept }, 'closed connections handed to a session worker that stopped before taking them');
      if (!slot.ready) startFailed(`exited with code ${code} while starting`);
      else fail(index, `stopped (exit ${code})`, 'a session worker stopped; the agent cannot keep its sessions');
    });
    if (slot.identity !== undefined) for (const serve of identityListeners) serve(slot.identity);
    return slot;
  };

  const stopAll = async (): Promise<void> => {
    stopping = true;
    await Promise.all(
      slots.map(async (s) => {
        for (const p of s.ports) p.close();
        await s.worker.terminate();
      }),
    );
  };

  /**
   * A worker stops its sessions (drain or close) and answers `stopped`; one still starting is waited for first
   * (it has no connection: those that waited for it were closed). Bounded, then it is terminated (stopAll).
   */
  const stopWorker = (s: Slot, msg: ToWorker, boundMs: number): Promise<void> =>
    new Promise<void>((resolve) => {
      let done = false;
      const finish = (): void => {
        done = true;
        clearTimeout(timer);
        s.stopped = null;
        resolve();
      };
      const timer = setTimeout(() => {
        logger.warn({ worker: s.index }, 'a session worker did not stop in time; terminating it');
        finish();
      }, boundMs);
      s.stopped = (error) => {
        if (error !== undefined) logger.warn({ worker: s.index, err: error }, 'a session worker stopped with an error');
        finish();
      };
      void s.started.then((ready) => {
        if (!ready) finish();
        else if (!done) s.worker.postMessage(msg);
      });
    });

  const stopWorkers = async (msg: ToWorker, boundMs: number): Promise<void> => {
    for (const s of slots) dropQueued(s, state);
    await Promise.all(slots.map((s) => stopWorker(s, msg, boundMs)));
    await flushMetrics();
    refusals.flush();
    acceptErrors.flush();
    await stopAll();
  };

  const flushMetrics = async (): Promise<void> => {
    await Promise.all(slots.filter((s) => s.ready).map((s) => s.metrics.requestFlush()));
  };

  const refuse = (stream: Duplex, reason: string): void => {
    refusedHere++;
    refusals.note(reason);
    stream.on('error', () => {});
    stream.destroy();
  };

  const counters: ResponderCounters = {
    get refusedSessions() {
      return refusedHere + admission.totals().counters.refusedSessions;
    },
    get refusedPerClient() {
      return admission.totals().counters.refusedPerClient;
    },
    get refusedHandshakes() {
      return admission.totals().counters.refusedHandshakes;
    },
    get queuedHandshakes() {
      return admission.totals().counters.queuedHandshakes;
    },
    get handshakesWaiting() {
      return admission.handshakeQueue.waiting;
    },
    get writeStalls() {
      return admission.totals().counters.writeStalls;
    },
    get streamStalls() {
      return admission.totals().counters.streamStalls;
    },
    get overBudget() {
      return admission.totals().counters.overBudget;
    },
    get acceptErrors() {
      return acceptErrorCount;
    },
    get queuedBytes() {
      return admission.budget.queuedBytes;
    },
    get peakQueuedBytes() {
      return admission.budget.peakQueuedBytes;
    },
  } as ResponderCounters;

  /** Posts a detached connection; the slot's ledger answers for its fd until the worker confirms taking it. */
  const handTo = (slot: Slot, message: Connection): void => {
    slot.handoffs.record(message.connection);
    slot.worker.postMessage(message);
  };
  /**
   * To the started worker with the fewest connections (sessions and TLS), counted as taking one more. The next
   * thread starts when every thread holds a connection, a starting one counting those waiting for it: one client
   * starts one thread; a burst before any is ready (every client reconnecting after a restart) starts them all and
   * waits spread over them, rather than all landing on the first. With none ready, a connection waits for the
   * starting thread with the fewest waiting.
   */
  const dispatch = (message: Connection): void => {
    let best: Slot | undefined;
    let waitOn: Slot | undefined;
    for (const s of slots) {
      if (s.ready) {
        if (best === undefined || s.live < best.live) best = s;
      } else if (!s.failed && (waitOn === undefined || s.live < waitOn.live)) waitOn = s;
    }
    if ((best === undefined || best.live > 0) && (waitOn === undefined || waitOn.live > 0) && slots.length < opts.count) {
      try {
        waitOn = spawn(slots.length + 1);
      } catch (err) {
        fail(slots.length + 1, `failed to start (${(err as { code?: string }).code ?? String(err)})`, 'a session thread did not start; the agent cannot serve its sessions');
      }
    }
    const to = best ?? waitOn;
    if (to === undefined) return drop(message, 'no-thread'); // a start failed: the agent is ending
    to.live++;
    if (to.ready) handTo(to, message);
    else to.queue.push(message);
  };

  let drained: Promise<void> | undefined;
  let closed: Promise<void> | undefined;
  return {
    channel: 'public',
    limits,
    controlNonce: admission.controlNonce,
    handoff: true,
    get sessionCount() {
      return admission.sessions.count;
    },
    get refusedCount() {
      return refusedHere + admission.totals().refused;
    },
    counters,
    flushMetrics,
    get droppedLogLines() {
      return slots.reduce((n, s) => n + s.droppedLines(), 0);
    },
    get loopUtilization() {
      return slots.filter((s) => s.ready).map((s) => s.loopUtilization);
    },
    get started() {
      return slots.filter((s) => s.ready).length;
    },
    get connectionsByThread() {
      return slots.map((s) => s.live);
    },
    tls: opts.tls === true,
    acceptError(err) {
      acceptErrorCount++;
      acceptErrors.note((err as NodeJS.ErrnoException).code ?? 'error');
    },
    handle(stream: Duplex, info: ConnectionInfo) {
      if (state !== 'running') return refuse(stream, state);
      if (!admission.sessions.tryOpen()) return refuse(stream, 'max-sessions');
      let connection;
      try {
        connection = detachConnection(stream, info);
      } catch (err) {
        // Counted and logged with the other refusals (rate-limited), never one line per connection.
        admission.sessions.closed();
        const cause = (err as { cause?: { code?: unknown } }).cause?.code;
        return refuse(stream, typeof cause === 'string' ? `handoff-failed:${cause}` : 'handoff-failed');
      }
      dispatch({ type: 'connection', connection });
    },
    onIdentityPort(serve) {
      identityListeners.add(serve);
      for (const s of slots) if (s.identity !== undefined) serve(s.identity);
      return () => void identityListeners.delete(serve);
    },
    handTls(connection, generation) {
      if (state !== 'running') return false;
      dispatch({ type: 'connection', channel: 'tls', connection, generation });
      return true;
    },
    drain(timeoutMs) {
      if (state === 'closed') return closed ?? Promise.resolve();
      state = 'draining';
      drained ??= stopWorkers({ type: 'drain', timeoutMs }, timeoutMs + DRAIN_GRACE_MS);
      return drained;
    },
    close() {
      state = 'closed';
      closed ??= (drained ?? Promise.resolve()).then(() => (stopping ? undefined : stopWorkers({ type: 'close' }, CLOSE_TIMEOUT_MS)));
      return closed;
    },
  };
}
