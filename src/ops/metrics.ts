// The agent's Prometheus metrics (prom-client), served on the ops port (ops-server.ts). On the request path
// only plain numbers move: a counter is a `Tally` bound once to its labels and incremented in place; prom-client
// reads the tallies when scraped (each metric's collect()). The request-duration histogram is a TallyHistogram
// (tally-histogram.ts: a bucket scan, no label handling per observation). Labels are closed sets (channel, close reason, status
// class, route among the known ones, ...): never a path, header, body, key or client address.
// Not from 'prom-client': its index loads node:https and node:tls (prom-client-classes.d.ts).
import Counter from 'prom-client/lib/counter.js';
import Gauge from 'prom-client/lib/gauge.js';
import Registry from 'prom-client/lib/registry.js';
import type { AbandonedSummary } from '../http/abandoned-records.ts';
import type { Channel, CloseReason, SessionSummary } from '../responder/session.ts';
import { TallyHistogram, type HistogramTally } from './tally-histogram.ts';
import { registerProcessMetrics } from './process-metrics.ts';
import { readThreadHeap, registerThreadHeapMetrics, THREAD_HEAP_METRICS, type ThreadHeap } from './thread-heap.ts';
import { measureLag, registerThreadLoopMetrics, threadLoopMonitor, type ThreadLoop } from './thread-loop.ts';

export { bucketIndex } from './tally-histogram.ts';

/** One counter value, bound to its labels once; the hot path does `tally.n++`. */
export interface Tally {
  n: number;
}

/** A counter family whose children are Tallies (created on first use, then kept). */
class TallyCounter<L extends string> {
  readonly #children = new Map<string, { labels: Record<L, string>; tally: Tally }>();

  constructor(registry: Registry, name: string, help: string, labelNames: readonly L[]) {
    const children = this.#children;
    new Counter<L>({
      name,
      help,
      labelNames,
      registers: [registry],
      collect() {
        this.reset();
        for (const { labels, tally } of children.values()) this.inc(labels as never, tally.n);
      },
    });
  }

  child(labels: Record<L, string>): Tally {
    const key = Object.values<string>(labels).join('\u0000');
    let c = this.#children.get(key);
    if (c === undefined) {
      c = { labels, tally: { n: 0 } };
      this.#children.set(key, c);
    }
    return c.tally;
  }
}

export type HandshakeResult = 'ok' | 'failed' | 'timeout' | 'refused';
export type EgressOutcome = 'allowed' | 'denied' | 'error' | 'busy';
export type ClockSampleResult = 'ok' | 'error';

/** What one finished HTTP exchange tells the metrics (src/http/exchange.ts Exchange has these fields). */
export interface ExchangeFacts {
  readonly started: number;
  readonly sentStatus: number;
  readonly bytesIn: number;
  readonly bytesOut: number;
  readonly decryptedFields: number | (() => number);
  readonly errorCode: string | undefined;
  /** Set on the record of requests taken in and never sent to the app: the ones it stands for, by outcome (src/http/abandoned-records.ts). */
  readonly abandoned?: AbandonedSummary | undefined;
}

/**
 * The requests one finished exchange stands for, as `add(statusIndex, n)` calls: one, with its status; or, for a
 * record of abandoned requests, each with the status its outcome says (a summary keeps them by outcome). Returns
 * how many were abandoned (0: the request ran; its duration is observed).
 *
 * Abandoned requests — taken in, never sent to the app (the client left or the agent drained before their turn,
 * or a parse error answered them while they waited) — count in requests_total like every request, but never in
 * request_duration_seconds: it times requests from their head to the end of their response, and these had no
 * turn at all. Their time is only how long they waited before the connection went, ~0 for requests read ahead
 * (their heads are parsed at the close): one client pipelining thousands and resetting would pile thousands of
 * zeros into the histogram and drag its quantiles toward 0 — counting a summary once instead was exact about
 * nothing. requests_abandoned_total counts them, so sum(requests_total{mode="http"}) =
 * request_duration_seconds_count + requests_abandoned_total.
 */
export function countRequests(ex: ExchangeFacts, add: (statusIndex: number, n: number) => void): number {
  const abandoned = ex.abandoned;
  if (abandoned === undefined) {
    add(statusIndex(ex.sentStatus), 1);
    return 0;
  }
  for (const o of abandoned.outcomes) add(statusIndex(o.status), o.requests);
  return abandoned.requests;
}

/**
 * What a session worker thread counted since its last flush (src/runtime/worker-services/metrics-proxy.ts),
 * added to the main thread's registry by AgentMetrics.apply.
 */
export interface MetricsDelta {
  /** HTTP requests by status class: none, 1xx, 2xx, 3xx, 4xx, 5xx (six entries). */
  requests: number[];
  /** Of those, requests taken in and never sent to the app (countRequests). */
  abandoned: number;
  /** Raw mode: Data requests and streams handed to the app. */
  raw: { data: number; stream: number };
  bytesIn: number;
  bytesOut: number;
  /** ev: values: decrypted, a request refused because one did not decrypt, a request over the per-request cap. */
  decrypt: { ok: number; failed: number; refused: number };
  /** request_duration_seconds: observations per bucket of DURATION_BUCKETS then above the last (not cumulative), and their sum. */
  duration: { counts: number[]; sum: number };
  /** Sessions ended, by channel and outcome. */
  sessions: { channel: Channel; outcome: CloseReason; n: number }[];
  /** Handshake results of those sessions (handshakeResult). */
  handshakes: Record<Exclude<HandshakeResult, 'refused'>, number>;
}

/** ev: values an exchange decrypted. */
export function decryptedFieldsOf(ex: ExchangeFacts): number {
  return typeof ex.decryptedFields === 'function' ? ex.decryptedFields() : ex.decryptedFields;
}

/** What an exchange's error code says of its ev: values: one did not decrypt, or too many; else undefined. */
export function decryptRefusal(code: string | undefined): 'failed' | 'refused' | undefined {
  return code === 'HTTP_DECRYPT_FAILED' ? 'failed' : code === 'HTTP_TOO_MANY_ENCRYPTED_FIELDS' ? 'refused' : undefined;
}

/** Values read at scrape time from the running parts (the runtime wires them). */
export interface MetricSources {
  sessionsOpen?: () => { public: number; control: number };
  /** Connections refused at admission (responders' refusedCount, summed). */
  refusedConnections?: () => number;
  /** The log stream's counters, when [log] sink = "vsock". */
  logStream?: () => { dropped: number; queuedBytes: number };
  /** Log and transaction lines session threads dropped over their in-flight bound (session-workers.ts). */
  workerLogDropped?: () => number;
  /** Handshakes waiting for a slot (handshake admission, src/responder/admission.ts). */
  handshakesQueued?: () => number;
  /** Encrypted bytes queued toward clients now (the responders' shared output budget). */
  outputQueuedBytes?: () => number;
  /** The app's last health-check result. */
  appUp?: () => 'up' | 'down' | 'unknown';
  /** Restarts by the supervisor so far (`run`). */
  appRestarts?: () => number;
  /** Streams the stall watch reset (their app took none of their queued bytes), both responders, every thread. */
  streamAppStalls?: () => number;
}

const STATUS_CLASSES = ['none', '1xx', '2xx', '3xx', '4xx', '5xx'] as const;
const API_ROUTES = new Set(['/encrypt', '/decrypt', '/attestation-doc', '/health']);
/** Seconds; the agent adds ~0.1 ms, apps take what they take. */
export const DURATION_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60];
/** prom-client's default process metrics that are gauges named *_total (promtool rejects those). */
const GAUGES_NAMED_TOTAL = ['nodejs_active_handles_total', 'nodejs_active_requests_total', 'nodejs_active_resources_total'];

/** An unlabelled gauge with no sample (prom-client would print 0, which would read as a measurement). */
function absent(g: Gauge): void {
  (g as unknown as { hashMap: Record<string, unknown> }).hashMap = {};
}

/** Index of `status`'s class in MetricsDelta.requests: 0 none, 1 1xx … 5 5xx. */
export function statusIndex(status: number): number {
  const i = Math.floor(status / 100);
  return i >= 1 && i <= 5 ? i : 0;
}

export interface AgentMetricsOptions {
  mode: 'http' | 'raw';
  version: string;
  /** Node's process metrics (event-loop lag, heap, RSS, GC; heap, loop and GC by thread: thread-heap.ts, thread-loop.ts). Default true. */
  processMetrics?: boolean;
}

export class AgentMetrics {
  readonly registry = new Registry();
  sources: MetricSources = {};

  readonly #sessions: TallyCounter<'channel' | 'outcome'>;
  readonly #handshakes: TallyCounter<'result'>;
  readonly #handshakeByResult: Record<Exclude<HandshakeResult, 'refused'>, Tally>;
  /** Brings handshakes_total{result="refused"} up to the responders' refused count. */
  readonly #syncRefused: () => void;
  readonly #requests: Tally[];
  readonly #abandoned: Tally;
  readonly #rawRequests: Record<'data' | 'stream', Tally>;
  readonly #bytesIn: Tally;
  readonly #bytesOut: Tally;
  readonly #decryptOk: Tally;
  readonly #decryptFailed: Tally;
  readonly #decryptRefused: Tally;
  readonly #duration: HistogramTally;
  readonly #api: TallyCounter<'route' | 'status_class'>;
  readonly #egress: Record<EgressOutcome, Tally>;
  readonly #clockSamples: Record<ClockSampleResult, Tally>;
  readonly #clockSteps: Record<'forward' | 'backward' | 'refused', Tally>;
  #draining = false;
  #drift: number | null = null;
  /** Each session worker's heap figures as it last reported them, by thread label (session-N). */
  readonly #threadHeaps = new Map<string, ThreadHeap>();
  /** Each session worker's event loop and GC, by thread label: its latest report, as its metrics server reads it. */
  readonly #threadLoops = new Map<string, () => ThreadLoop | undefined>();
  /** Every thread's loop and GC, read once per scrape (metrics()): the main thread's delay sampling restarts at each read. */
  #loops: (readonly [string, ThreadLoop])[] = [];
  readonly #processMetrics: boolean;

  constructor(opts: AgentMetricsOptions) {
    const r = this.registry;
    const p = 'enclave_agent_';
    this.#processMetrics = opts.processMetrics !== false;
    const sources = (): MetricSources => this.sources;
    new Gauge({ name: `${p}build_info`, help: 'Always 1; the agent version and mode as labels.', labelNames: ['version', 'mode'], registers: [r] }).set({ version: opts.version, mode: opts.mode }, 1);
    new Gauge({
      name: `${p}draining`,
      help: '1 while the agent drains (SIGTERM): it accepts no new connections.',
      registers: [r],
      collect: ((self: AgentMetrics) =>
        function (this: Gauge) {
          this.set(self.#draining ? 1 : 0);
        })(this),
    });
    new Gauge({
      name: `${p}sessions_open`,
      help: 'Sessions open now, by channel (public: clients; control: the operator).',
      labelNames: ['channel'],
      registers: [r],
      collect() {
        const open = sources().sessionsOpen?.() ?? { public: 0, control: 0 };
        this.set({ channel: 'public' }, open.public);
        this.set({ channel: 'control' }, open.control);
      },
    });
    this.#sessions = new TallyCounter(r, `${p}sessions_total`, 'Sessions ended, by channel and outcome (why they ended).', ['channel', 'outcome']);
    this.#handshakes = new TallyCounter(r, `${p}handshakes_total`, 'Noise handshakes by result: ok, failed, timeout (counted when the session ends), refused (at admission, before any crypto).', ['result']);
    this.#handshakeByResult = { ok: this.#handshakes.child({ result: 'ok' }), failed: this.#handshakes.child({ result: 'failed' }), timeout: this.#handshakes.child({ result: 'timeout' }) };
    const refused = this.#handshakes.child({ result: 'refused' });
    let refusedSeen = 0;
    const syncRefused = (): void => {
      const s = sources();
      const now = s.refusedConnections?.() ?? 0;
      if (now > refusedSeen) refused.n += now - refusedSeen;
      refusedSeen = Math.max(refusedSeen, now);
    };
    this.#syncRefused = syncRefused;
    new Gauge({
      name: `${p}handshakes_queued`,
      help: 'Handshakes waiting for an admission slot now.',
      registers: [r],
      collect() {
        syncRefused();
        this.set(sources().handshakesQueued?.() ?? 0);
      },
    });

    new Gauge({
      name: `${p}output_queued_bytes`,
      help: 'Encrypted bytes queued toward clients now, plus Data responses being read from the app, over every session (one budget: [limits] max_queued_bytes caps it).',
      registers: [r],
      collect() {
        this.set(sources().outputQueuedBytes?.() ?? 0);
      },
    });

    const requests = new TallyCounter(r, `${p}requests_total`, 'Requests forwarded to the app, by mode and the status class answered (none: no response, the client went away).', ['mode', 'status_class']);
    // Bound lazily on first use: a raw-mode agent shows no http series, and the other way round.
    const lazy = (labels: { mode: string; status_class: string }): Tally => {
      let t: Tally | undefined;
      return {
        get n() {
          return t?.n ?? 0;
        },
        set n(v: number) {
          (t ??= requests.child(labels)).n = v;
        },
      };
    };
    const bound = (labels: { mode: string; status_class: string }): Tally => (labels.mode.startsWith(opts.mode) ? requests.child(labels) : lazy(labels));
    this.#requests = STATUS_CLASSES.map((status_class) => bound({ mode: 'http', status_class }));
    this.#rawRequests = { data: bound({ mode: 'raw', status_class: 'none' }), stream: bound({ mode: 'raw-stream', status_class: 'none' }) };
    this.#abandoned = new TallyCounter(
      r,
      `${p}requests_abandoned_total`,
      'HTTP mode: requests taken in and never sent to the app (the client left, or the agent drained, before their turn; or a parse error answered them while they waited). Counted in requests_total (by the status class of their outcome), never in request_duration_seconds.',
      [],
    ).child({});
    const bytes = new TallyCounter(r, `${p}http_body_bytes_total`, 'HTTP mode: request body bytes from clients (in) and response body bytes to them (out).', ['direction']);
    this.#bytesIn = bytes.child({ direction: 'in' });
    this.#bytesOut = bytes.child({ direction: 'out' });
    this.#duration = new TallyHistogram(r, `${p}request_duration_seconds`, 'HTTP mode: from the request head to the end of the response, for every request that ran (not the abandoned ones: requests_abandoned_total).', DURATION_BUCKETS).child({});
    const decrypt = new TallyCounter(r, `${p}ev_decrypt_total`, 'ev: values in requests: decrypted (ok), one that did not decrypt (failed: 422, nothing forwarded), over the per-request cap (refused: 413).', ['result']);
    this.#decryptOk = decrypt.child({ result: 'ok' });
    this.#decryptFailed = decrypt.child({ result: 'failed' });
    this.#decryptRefused = decrypt.child({ result: 'refused' });
    this.#api = new TallyCounter(r, `${p}api_requests_total`, 'Local API (127.0.0.1:9999) calls by route and status class.', ['route', 'status_class']);

    new Gauge({
      name: `${p}app_up`,
      help: '1 when the app answered its last health check, 0 when not; absent until first known.',
      registers: [r],
      collect() {
        const state = sources().appUp?.() ?? 'unknown';
        if (state === 'unknown') absent(this);
        else this.set(state === 'up' ? 1 : 0);
      },
    });
    // Counters a running part keeps (the supervisor, the responders, the log sinks): read at each scrape.
    const sourced = (name: string, help: string, read: (s: MetricSources) => number): void => {
      new Counter({
        name: `${p}${name}`,
        help,
        registers: [r],
        collect() {
          this.reset();
          this.inc(read(sources()));
        },
      });
    };
    sourced('app_restarts_total', 'Times the supervisor restarted the app (enclave-agent run).', (s) => s.appRestarts?.() ?? 0);
    sourced(
      'stream_app_stalls_total',
      'Streams reset because their app took none of the bytes queued for it for [limits] write_stall_timeout_ms while that held the session (the session reads on).',
      (s) => s.streamAppStalls?.() ?? 0,
    );
    sourced(
      'log_records_dropped_total',
      'Log lines dropped because the host log sink was unreachable and the buffer was full, or because a session thread had more lines waiting for the main thread than its bound.',
      (s) => (s.logStream?.().dropped ?? 0) + (s.workerLogDropped?.() ?? 0),
    );
    new Gauge({
      name: `${p}log_queued_bytes`,
      help: 'Log bytes buffered for the host log sink, not yet sent.',
      registers: [r],
      collect() {
        this.set(sources().logStream?.().queuedBytes ?? 0);
      },
    });

    new Gauge({
      name: `${p}clock_drift_seconds`,
      help: "The enclave's clock minus the host's, at the last sample (positive: the enclave is ahead). The host supplies its time.",
      registers: [r],
      collect: ((self: AgentMetrics) =>
        function (this: Gauge) {
          if (self.#drift === null) absent(this);
          else this.set(self.#drift);
        })(this),
    });
    const samples = new TallyCounter(r, `${p}clock_samples_total`, 'Time samples asked of the host, by result.', ['result']);
    this.#clockSamples = { ok: samples.child({ result: 'ok' }), error: samples.child({ result: 'error' }) };
    const steps = new TallyCounter(r, `${p}clock_steps_total`, 'Clock corrections ([clock] correct = true): stepped forward, backward, or refused (out of bounds).', ['direction']);
    this.#clockSteps = { forward: steps.child({ direction: 'forward' }), backward: steps.child({ direction: 'backward' }), refused: steps.child({ direction: 'refused' }) };

    const egress = new TallyCounter(r, `${p}egress_decisions_total`, 'Outbound connections the egress policy decided, by outcome.', ['outcome']);
    this.#egress = { allowed: egress.child({ outcome: 'allowed' }), denied: egress.child({ outcome: 'denied' }), error: egress.child({ outcome: 'error' }), busy: egress.child({ outcome: 'busy' }) };

    if (this.#processMetrics) {
      registerProcessMetrics(r);
      for (const name of [...GAUGES_NAMED_TOTAL, ...THREAD_HEAP_METRICS]) r.removeSingleMetric(name);
      const workers = this.#threadHeaps;
      registerThreadHeapMetrics(r, () => [['main', readThreadHeap()], ...workers]);
      threadLoopMonitor();
      registerThreadLoopMetrics(r, () => this.#loops);
    }
  }

  /** An HTTP exchange is over (forwarder's observe hook): one request, its status class, bytes, time, ev: values. */
  readonly observeExchange = (ex: ExchangeFacts): void => {
    const abandoned = countRequests(ex, this.#addRequests);
    this.#bytesIn.n += ex.bytesIn;
    this.#bytesOut.n += ex.bytesOut;
    if (abandoned === 0) this.#duration.observe((performance.now() - ex.started) / 1000);
    else this.#abandoned.n += abandoned;
    const fields = decryptedFieldsOf(ex);
    if (fields > 0) this.#decryptOk.n += fields;
    const refusal = decryptRefusal(ex.errorCode);
    if (refusal === 'failed') this.#decryptFailed.n++;
    else if (refusal === 'refused') this.#decryptRefused.n++;
  };

  readonly #addRequests = (status: number, n: number): void => {
    this.#requests[status]!.n += n;
  };

  /** Raw mode: one Data request or stream handed to the app. */
  rawRequest(kind: 'data' | 'stream'): void {
    this.#rawRequests[kind].n++;
  }

  /** A session ended (responder's onSessionClosed hook). */
  readonly sessionClosed = (s: SessionSummary): void => {
    this.#sessions.child({ channel: s.channel, outcome: s.reason }).n++;
    const result = handshakeResult(s);
    if (result !== null) this.#handshakeByResult[result].n++;
  };

  /** Adds what a session worker thread counted (its MetricsRecorder's flush). */
  apply(d: MetricsDelta): void {
    for (let i = 0; i < this.#requests.length; i++) if ((d.requests[i] ?? 0) > 0) this.#requests[i]!.n += d.requests[i]!;
    this.#abandoned.n += d.abandoned;
    if (d.raw.data > 0) this.#rawRequests.data.n += d.raw.data;
    if (d.raw.stream > 0) this.#rawRequests.stream.n += d.raw.stream;
    this.#bytesIn.n += d.bytesIn;
    this.#bytesOut.n += d.bytesOut;
    this.#decryptOk.n += d.decrypt.ok;
    this.#decryptFailed.n += d.decrypt.failed;
    this.#decryptRefused.n += d.decrypt.refused;
    this.#duration.add(d.duration);
    for (const s of d.sessions) this.#sessions.child({ channel: s.channel, outcome: s.outcome }).n += s.n;
    for (const r of ['ok', 'failed', 'timeout'] as const) this.#handshakeByResult[r].n += d.handshakes[r];
  }

  /**
   * Session worker `thread`'s event loop and GC (session-N): `read` gives them at each scrape (its latest report,
   * the lag raised to how long an answer has been awaited: worker-services/metrics-proxy.ts); null: it has ended.
   */
  threadLoop(thread: string, read: (() => ThreadLoop | undefined) | null): void {
    if (read === null) this.#threadLoops.delete(thread);
    else this.#threadLoops.set(thread, read);
  }

  /** Session worker `thread`'s heap figures (session-N, its latest report); null: it has ended, its series go. */
  threadHeap(thread: string, heap: ThreadHeap | null): void {
    if (heap === null) this.#threadHeaps.delete(thread);
    else this.#threadHeaps.set(thread, heap);
  }

  apiRequest(path: string, status: number): void {
    this.#api.child({ route: API_ROUTES.has(path) ? path : 'other', status_class: STATUS_CLASSES[statusIndex(status)]! }).n++;
  }

  draining(on: boolean): void {
    this.#draining = on;
  }

  clockSample(result: ClockSampleResult, driftMs?: number): void {
    this.#clockSamples[result].n++;
    if (driftMs !== undefined) this.#drift = driftMs / 1000;
  }

  clockStep(direction: 'forward' | 'backward' | 'refused'): void {
    this.#clockSteps[direction].n++;
  }

  egressDecision(outcome: EgressOutcome): void {
    this.#egress[outcome].n++;
  }

  /** Runs before each exposition (the session workers' figures are brought in: a scrape is exact). */
  beforeScrape: (() => Promise<void>) | undefined;

  /** The exposition text (Prometheus text format 0.0.4). */
  async metrics(): Promise<string> {
    // The main thread's lag is measured while the session workers are asked for their figures.
    const lag = this.#processMetrics ? measureLag() : undefined;
    await this.beforeScrape?.();
    if (lag !== undefined) {
      const loops: (readonly [string, ThreadLoop])[] = [['main', threadLoopMonitor().read(await lag)]];
      for (const [thread, read] of this.#threadLoops) {
        const t = read();
        if (t !== undefined) loops.push([thread, t]);
      }
      this.#loops = loops;
    }
    // Before rendering: handshakes_total is serialised before the gauge whose collect also syncs it.
    this.#syncRefused();
    return this.registry.metrics();
  }

  get contentType(): string {
    return this.registry.contentType;
  }
}

/** Reasons a session can only end with once its handshake completed. */
const OPEN_ONLY: ReadonlySet<CloseReason> = new Set(['idle', 'receive-failed', 'send-failed', 'wrong-channel', 'attestation-failed', 'write-stall']);

/**
 * What a session's end says about its handshake: timeout/failed when that ended it; ok when the session got
 * past it (a reason only an open session ends with, or at least one transport frame read); null when the
 * client left before finishing (or finished and sent nothing: no client does that).
 */
export function handshakeResult(s: Pick<SessionSummary, 'reason' | 'stats'>): Exclude<HandshakeResult, 'refused'> | null {
  if (s.reason === 'handshake-timeout') return 'timeout';
  if (s.reason === 'handshake-failed' || s.reason === 'proxy-header') return 'failed';
  if (OPEN_ONLY.has(s.reason) || s.stats.framesIn > 0) return 'ok';
  return null;
}

// ---- the process's current metrics (one agent per process in production) ----------------------------------

let current: AgentMetrics | null = null;

/** Makes `m` the target of the module-level recorders below (the runtime calls this; null detaches). */
export function setCurrentMetrics(m: AgentMetrics | null): void {
  current = m;
}

/** Egress (src/egress/): one decision of the policy. A no-op when no agent runtime is running. */
export function recordEgressDecision(outcome: EgressOutcome): void {
  current?.egressDecision(outcome);
}
