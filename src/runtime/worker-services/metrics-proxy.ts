// The metrics of session worker threads: a worker records on a MetricsRecorder (the call surface the
// responder and the forwarders use on AgentMetrics: observeExchange, sessionClosed, rawRequest) that only
// adds plain numbers — counts by label, bytes, the request durations as bucket counts of the registry's own
// buckets plus their sum — and posts them as a delta every second (and when asked). The main thread adds
// each delta to its AgentMetrics (apply), so the exposition is the one registry it always was.
//
// A scrape is exact: requestFlush() asks the worker for what it holds and resolves once that is applied
// (or after a timeout, 250 ms by default, or when the port closes — a busy or gone worker must not hold
// /metrics; what it sends later is still applied, nothing is lost). Durations are measured in the worker,
// on the worker's clock (performance.now() is per thread). Each session's summary travels in the same
// message, in order, to the main thread's onSessionClosed hook. A flush a scrape asks for also carries the
// worker's V8 heap figures (its heap is its own: the main thread's default metrics cannot see it), its event-loop
// delay and GC (its loop is its own too: ops/thread-loop.ts; the lag measured with a setImmediate when the flush
// request arrives, as prom-client measures the main thread's), shown under the worker's `thread` label until its
// port closes. A worker whose loop is stalled cannot answer: its lag then shows at least how long the oldest
// flush request it has not answered has waited (a message not handled for that long means a loop held that long),
// so a stalled session thread shows while it is stalled, not only once it is over.
import { bucketIndex, decryptedFieldsOf, decryptRefusal, DURATION_BUCKETS, countRequests, handshakeResult, type AgentMetrics, type ExchangeFacts, type MetricsDelta } from '../../ops/metrics.ts';
import type { SessionSummary } from '../../responder/session.ts';
import { isThreadHeap, readThreadHeap, type ThreadHeap } from '../../ops/thread-heap.ts';
import { isThreadLoop, measureLag, mergeLoops, threadLoopMonitor, type ThreadLoop } from '../../ops/thread-loop.ts';
import { rpcEndpoint, type PortLike, type RpcEndpoint } from './rpc-port.ts';

/** What a worker posts: its delta (null when it counted nothing), the sessions that ended, and the flush request it answers. */
export interface WorkerMetricsBatch {
  delta: MetricsDelta | null;
  summaries: SessionSummary[];
  /** requestFlush's sequence number this batch answers (absent for periodic ones). */
  ack?: number;
  /** The worker's heap figures, read when it answers a requestFlush (absent in periodic batches). */
  heap?: ThreadHeap;
  /** The worker's event loop and GC, read when it answers a requestFlush (absent in periodic batches). */
  loop?: ThreadLoop;
}

const STATUS_CLASSES = 6;
const BUCKETS = DURATION_BUCKETS.length + 1; // the last: above the largest bound

function emptyDelta(): MetricsDelta {
  return {
    requests: new Array<number>(STATUS_CLASSES).fill(0),
    abandoned: 0,
    raw: { data: 0, stream: 0 },
    bytesIn: 0,
    bytesOut: 0,
    decrypt: { ok: 0, failed: 0, refused: 0 },
    duration: { counts: new Array<number>(BUCKETS).fill(0), sum: 0 },
    sessions: [],
    handshakes: { ok: 0, failed: 0, timeout: 0 },
  };
}

export interface MetricsRecorderOptions {
  /** Periodic flush (ms; default 1 000). The timer is unref'd. */
  intervalMs?: number;
}

/** Worker side: records like AgentMetrics, posts deltas to serveMetrics. */
export class MetricsRecorder {
  readonly #rpc: RpcEndpoint;
  readonly #timer: NodeJS.Timeout;
  #delta = emptyDelta();
  #dirty = false;
  #summaries: SessionSummary[] = [];
  /** A flush is due at the end of this turn (a session ended). */
  #soon = false;
  /** Sessions by channel and outcome, into #delta.sessions. */
  #sessions = new Map<string, { channel: SessionSummary['channel']; outcome: SessionSummary['reason']; n: number }>();

  constructor(port: PortLike, opts: MetricsRecorderOptions = {}) {
    this.#rpc = rpcEndpoint(port, {
      service: 'metrics',
      notes: {
        flush: (seq) => {
          if (typeof seq !== 'number') return;
          // How long a setImmediate took is this loop's lag (nodejs_eventloop_lag_seconds); the answer goes a timer
          // turn after it, once the loop-delay monitor has recorded any stall that kept this request waiting.
          void measureLag().then((lag) => this.#send({ seq, lag }));
        },
      },
    });
    this.#timer = setInterval(() => {
      if (this.#dirty) this.#send();
    }, opts.intervalMs ?? 1_000);
    this.#timer.unref();
    threadLoopMonitor(); // its GC counts start now
  }

  /** An HTTP exchange is over (AgentMetrics.observeExchange). */
  readonly observeExchange = (ex: ExchangeFacts): void => {
    const d = this.#delta;
    this.#dirty = true;
    const abandoned = countRequests(ex, this.#addRequests);
    d.bytesIn += ex.bytesIn;
    d.bytesOut += ex.bytesOut;
    if (abandoned === 0) {
      const seconds = (performance.now() - ex.started) / 1000;
      d.duration.counts[bucketIndex(DURATION_BUCKETS, seconds)]!++;
      d.duration.sum += seconds;
    } else d.abandoned += abandoned;
    const fields = decryptedFieldsOf(ex);
    if (fields > 0) d.decrypt.ok += fields;
    const refusal = decryptRefusal(ex.errorCode);
    if (refusal !== undefined) d.decrypt[refusal]++;
  };

  readonly #addRequests = (status: number, n: number): void => {
    this.#delta.requests[status]! += n;
  };

  /** Raw mode: one Data request or stream handed to the app (AgentMetrics.rawRequest). */
  rawRequest(kind: 'data' | 'stream'): void {
    this.#dirty = true;
    this.#delta.raw[kind]++;
  }

  /** A session ended (AgentMetrics.sessionClosed); its summary goes to the main thread's hook too. */
  readonly sessionClosed = (s: SessionSummary): void => {
    this.#dirty = true;
    const key = `${s.channel}\u0000${s.reason}`;
    let c = this.#sessions.get(key);
    if (c === undefined) {
      c = { channel: s.channel, outcome: s.reason, n: 0 };
      this.#sessions.set(key, c);
      this.#delta.sessions.push(c);
    }
    c.n++;
    const result = handshakeResult(s);
    if (result !== null) this.#delta.handshakes[result]++;
    this.#summaries.push(s);
    // Summaries go at the end of this turn, not with the next periodic flush: the main thread's session hook
    // (onSessionClosed) then hears of a session about when its slot is given back, as with one thread.
    if (!this.#soon) {
      this.#soon = true;
      setImmediate(this.#sendSoon);
    }
  };

  readonly #sendSoon = (): void => {
    this.#soon = false;
    if (this.#dirty) this.#send();
  };

  /** What was recorded since the last flush; clears it. */
  flush(): WorkerMetricsBatch {
    const batch: WorkerMetricsBatch = { delta: this.#dirty ? this.#delta : null, summaries: this.#summaries };
    if (this.#dirty) {
      this.#delta = emptyDelta();
      this.#sessions = new Map();
      this.#dirty = false;
    }
    this.#summaries = [];
    return batch;
  }

  /** Posts what it holds now (a worker about to end: the main thread has it before the worker's exit). */
  flushNow(): void {
    if (this.#dirty) this.#send();
  }

  /** Posts what is left and stops. */
  close(): void {
    clearInterval(this.#timer);
    if (this.#dirty) this.#send();
    this.#rpc.close();
  }

  #send(ack?: { seq: number; lag: number }): void {
    const batch = this.flush();
    if (ack !== undefined) {
      batch.ack = ack.seq;
      batch.heap = readThreadHeap();
      batch.loop = threadLoopMonitor().read(ack.lag);
    }
    this.#rpc.notify('batch', batch);
  }
}

export interface MetricsServer {
  /** Asks the worker for what it holds now; resolves once applied, after `timeoutMs` (default 250) or when the port closes. */
  requestFlush(timeoutMs?: number): Promise<void>;
  /** Batches refused as malformed. */
  readonly ignored: number;
  close(): void;
}

const count = (v: unknown): v is number => typeof v === 'number' && Number.isFinite(v) && v >= 0;
const counts = (v: unknown, length: number): v is number[] => Array.isArray(v) && v.length === length && v.every(count);
/** Outcomes are CloseReason words (lowercase, dashes): a label value, so nothing else is accepted. */
const OUTCOME = /^[a-z][a-z-]{0,31}$/;

function isDelta(v: unknown): v is MetricsDelta {
  if (typeof v !== 'object' || v === null) return false;
  const d = v as Record<string, unknown>;
  const raw = d.raw as Record<string, unknown> | null;
  const decrypt = d.decrypt as Record<string, unknown> | null;
  const duration = d.duration as Record<string, unknown> | null;
  const handshakes = d.handshakes as Record<string, unknown> | null;
  return (
    counts(d.requests, STATUS_CLASSES) && count(d.abandoned) &&
    typeof raw === 'object' && raw !== null && count(raw.data) && count(raw.stream) &&
    count(d.bytesIn) && count(d.bytesOut) &&
    typeof decrypt === 'object' && decrypt !== null && count(decrypt.ok) && count(decrypt.failed) && count(decrypt.refused) &&
    typeof duration === 'object' && duration !== null && counts(duration.counts, BUCKETS) && count(duration.sum) &&
    typeof handshakes === 'object' && handshakes !== null && count(handshakes.ok) && count(handshakes.failed) && count(handshakes.timeout) &&
    Array.isArray(d.sessions) &&
    d.sessions.every((s: unknown) => {
      const r = s as Record<string, unknown> | null;
      return typeof r === 'object' && r !== null && (r.channel === 'public' || r.channel === 'control') && typeof r.outcome === 'string' && OUTCOME.test(r.outcome) && count(r.n);
    })
  );
}

const isSummary = (v: unknown): v is SessionSummary => typeof v === 'object' && v !== null && typeof (v as SessionSummary).channel === 'string' && typeof (v as SessionSummary).reason === 'string';

/** Flush requests a worker has not answered whose posting times are kept (only the oldest counts). */
const MAX_UNANSWERED = 64;

/**
 * Main side: applies a worker's MetricsRecorder deltas to `metrics`, and hands `onSessionClosed` each
 * session summary the worker forwards, in the order its sessions ended. With `thread` (its label, session-N),
 * the worker's heap figures, event loop and GC are shown under it until the port closes.
 */
export function serveMetrics(port: PortLike, metrics: AgentMetrics, onSessionClosed?: (summary: SessionSummary) => void, thread?: string): MetricsServer {
  let seq = 0;
  let ignored = 0;
  let waiters: { seq: number; done(): void }[] = [];
  /** performance.now() when each flush request not answered yet was posted, in order. */
  const unanswered = new Map<number, number>();
  let loop: ThreadLoop | undefined;
  /** `loop` has been shown by a scrape: the next report replaces it (else the two are merged: mergeLoops). */
  let shown = false;
  if (thread !== undefined) {
    metrics.threadLoop(thread, () => {
      if (loop === undefined) return undefined;
      shown = true;
      const oldest = unanswered.values().next();
      if (oldest.done === true) return loop;
      return { ...loop, lag: Math.max(loop.lag, (performance.now() - oldest.value) / 1000) };
    });
  }
  const release = (upTo: number): void => {
    const still: typeof waiters = [];
    for (const w of waiters) {
      if (w.seq <= upTo) w.done();
      else still.push(w);
    }
    waiters = still;
  };
  const rpc = rpcEndpoint(port, {
    service: 'metrics',
    notes: {
      batch(v) {
        const b = v as Partial<WorkerMetricsBatch> | null;
        if (typeof b !== 'object' || b === null) return void ignored++;
        if (b.delta !== null && !isDelta(b.delta)) ignored++;
        else if (b.delta !== null) metrics.apply(b.delta);
        if (b.heap !== undefined && !isThreadHeap(b.heap)) ignored++;
        else if (b.heap !== undefined && thread !== undefined) metrics.threadHeap(thread, b.heap);
        if (b.loop !== undefined && !isThreadLoop(b.loop)) ignored++;
        else if (b.loop !== undefined) {
          loop = loop === undefined || shown ? b.loop : mergeLoops(loop, b.loop);
          shown = false;
        }
        if (Array.isArray(b.summaries)) {
          for (const s of b.summaries) {
            if (!isSummary(s)) continue;
            try {
              onSessionClosed?.(s);
            } catch {
              // the hook's failure is its own: the next summaries still go to it
            }
          }
        }
        if (typeof b.ack === 'number') {
          for (const seq of unanswered.keys()) {
            if (seq > b.ack) break;
            unanswered.delete(seq);
          }
          release(b.ack);
        }
      },
    },
    onClose: () => {
      if (thread !== undefined) {
        metrics.threadHeap(thread, null);
        metrics.threadLoop(thread, null);
      }
      unanswered.clear();
      release(Infinity);
    },
  });
  return {
    requestFlush(timeoutMs = 250) {
      if (rpc.closed) return Promise.resolve();
      const mine = ++seq;
      return new Promise<void>((resolve) => {
        const timer = setTimeout(() => {
          waiters = waiters.filter((w) => w !== waiter);
          resolve();
        }, timeoutMs);
        timer.unref();
        const waiter = {
          seq: mine,
          done: () => {
            clearTimeout(timer);
            resolve();
          },
        };
        waiters.push(waiter);
        if (unanswered.size < MAX_UNANSWERED) unanswered.set(mine, performance.now());
        if (!rpc.notify('flush', mine)) release(Infinity);
      });
    },
    get ignored() {
      return ignored;
    },
    close: () => rpc.close(),
  };
}
