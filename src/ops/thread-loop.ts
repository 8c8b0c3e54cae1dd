// Event-loop delay and garbage collection per JavaScript thread. With [limits] workers ≥ 2 the sessions run on
// worker threads, each with an event loop and a V8 heap of its own, and prom-client's default
// nodejs_eventloop_lag_* and nodejs_gc_duration_seconds only ever describe the thread that registered them: the
// main one (a stalled session thread was invisible). So those families are replaced by the same names with a
// `thread` label — "main", or "session-N" for session worker N — as the heap families are (thread-heap.ts). Each
// thread watches itself (perf_hooks.monitorEventLoopDelay, a PerformanceObserver on 'gc': threadLoopMonitor) and a
// worker reports when a scrape asks (worker-services/metrics-proxy.ts). Unlike prom-client's observer, which took
// the first entry of each batch the observer was handed, every GC is counted.
import { constants, monitorEventLoopDelay, PerformanceObserver } from 'node:perf_hooks';
import type { Registry } from 'prom-client';
// Not from 'prom-client': its index loads node:https and node:tls (prom-client-classes.d.ts).
import Gauge from 'prom-client/lib/gauge.js';
import { TallyHistogram, bucketIndex, type BucketCounts } from './tally-histogram.ts';

/** GC duration buckets, seconds: prom-client's. */
export const GC_BUCKETS = [0.001, 0.01, 0.1, 1, 2, 5];
/** GC kinds, named as prom-client names them. */
export const GC_KINDS = ['major', 'minor', 'incremental', 'weakcb'] as const;
export type GcKind = (typeof GC_KINDS)[number];
const KIND_OF: Record<number, GcKind> = {
  [constants.NODE_PERFORMANCE_GC_MAJOR]: 'major',
  [constants.NODE_PERFORMANCE_GC_MINOR]: 'minor',
  [constants.NODE_PERFORMANCE_GC_INCREMENTAL]: 'incremental',
  [constants.NODE_PERFORMANCE_GC_WEAKCB]: 'weakcb',
};

/** Event-loop delay figures, seconds (prom-client's nodejs_eventloop_lag_{min,max,…}_seconds). */
export interface LoopDelay {
  /** Samples they are of (not shown: for mergeLoops). */
  count: number;
  min: number;
  max: number;
  mean: number;
  stddev: number;
  p50: number;
  p90: number;
  p99: number;
}

/** One thread's event loop and GC, as a scrape shows them. */
export interface ThreadLoop {
  /** How long a setImmediate took when the scrape asked, seconds (nodejs_eventloop_lag_seconds). */
  lag: number;
  /** The loop's delays sampled since the previous scrape (monitorEventLoopDelay, 10 ms resolution). */
  delay: LoopDelay;
  /** Every GC since the thread started, by kind: durations (seconds) in GC_BUCKETS. */
  gc: Partial<Record<GcKind, BucketCounts>>;
}

/** The calling thread's watch of its event loop and its GCs (started on first use). */
class LoopMonitor {
  readonly #delay = monitorEventLoopDelay({ resolution: 10 });
  readonly #gc: Partial<Record<GcKind, BucketCounts>> = {};
  #last: LoopDelay = { count: 0, min: 0, max: 0, mean: 0, stddev: 0, p50: 0, p90: 0, p99: 0 };

  constructor() {
    this.#delay.enable();
    new PerformanceObserver((list) => {
      for (const e of list.getEntries()) {
        const kind = KIND_OF[(e as { detail?: { kind?: number } | null }).detail?.kind ?? -1];
        if (kind === undefined) continue;
        const seconds = e.duration / 1000;
        const b = (this.#gc[kind] ??= { counts: new Array<number>(GC_BUCKETS.length + 1).fill(0), sum: 0 });
        b.counts[bucketIndex(GC_BUCKETS, seconds)]!++;
        b.sum += seconds;
      }
    }).observe({ entryTypes: ['gc'] });
  }

  /**
   * The figures now, with `lag` measured by the caller (measureLag); the delay sampling starts over (its first
   * tick then only notes the time: a hold that begins within 10 ms of a read shows in `lag`, not here). With no
   * sample since the last read (under 10 ms ago), the last figures again (an empty histogram reads as NaN, 9e18).
   */
  read(lag: number): ThreadLoop {
    const h = this.#delay;
    if (h.count > 0) {
      const s = (ns: number): number => ns / 1e9;
      this.#last = { count: h.count, min: s(h.min), max: s(h.max), mean: s(h.mean), stddev: s(h.stddev), p50: s(h.percentile(50)), p90: s(h.percentile(90)), p99: s(h.percentile(99)) };
      h.reset();
    }
    const gc: Partial<Record<GcKind, BucketCounts>> = {};
    for (const k of GC_KINDS) {
      const b = this.#gc[k];
      if (b !== undefined) gc[k] = { counts: b.counts.slice(), sum: b.sum };
    }
    return { lag, delay: { ...this.#last }, gc };
  }
}

let monitor: LoopMonitor | undefined;

/** The calling thread's LoopMonitor: one per thread, whoever asks (its GC counts are since it started). */
export function threadLoopMonitor(): LoopMonitor {
  return (monitor ??= new LoopMonitor());
}

/**
 * How long a setImmediate takes now on the calling thread, seconds (as prom-client measures the lag) — resolved
 * only after one timers phase more, so that LoopMonitor.read can follow: monitorEventLoopDelay records a held
 * loop's delay at its next tick, and a read (which resets the histogram, and with it the time of the last tick)
 * before that tick drops the hold's delay — the very figure a scrape right after a stall must show. A worker
 * answers the scrape that waited through its stall right after the stall, before that tick.
 */
export async function measureLag(): Promise<number> {
  const start = performance.now();
  const lag = await new Promise<number>((resolve) => setImmediate(() => resolve((performance.now() - start) / 1000)));
  await new Promise((resolve) => setTimeout(resolve, 0));
  return lag;
}

const seconds = (v: unknown): v is number => typeof v === 'number' && Number.isFinite(v) && v >= 0;

/** Whether `v` (from another thread) is a ThreadLoop with figures fit for a scrape. */
export function isThreadLoop(v: unknown): v is ThreadLoop {
  if (typeof v !== 'object' || v === null) return false;
  const t = v as Record<string, unknown>;
  const d = t.delay as Record<string, unknown> | null;
  const gc = t.gc as Record<string, unknown> | null;
  return (
    seconds(t.lag) &&
    typeof d === 'object' && d !== null && seconds(d.count) && seconds(d.min) && seconds(d.max) && seconds(d.mean) && seconds(d.stddev) && seconds(d.p50) && seconds(d.p90) && seconds(d.p99) &&
    typeof gc === 'object' && gc !== null &&
    Object.entries(gc).every(([k, b]) => {
      const r = b as Record<string, unknown> | null;
      return (GC_KINDS as readonly string[]).includes(k) && typeof r === 'object' && r !== null && seconds(r.sum) && Array.isArray(r.counts) && r.counts.length === GC_BUCKETS.length + 1 && r.counts.every(seconds);
    })
  );
}

/**
 * One report for two a worker sent between two scrapes (the first answered a flush request after its scrape gave
 * up waiting: a stalled loop's late answer). Each read restarts the worker's delay sampling, so the second alone
 * would lose what the first saw — the stall. The lag and GC are the newer's (GC counts are totals); the delays are
 * both intervals': min and max exact, mean and standard deviation pooled by sample count, the percentiles the
 * larger of the two (an upper bound).
 */
export function mergeLoops(older: ThreadLoop, newer: ThreadLoop): ThreadLoop {
  const a = older.delay;
  const b = newer.delay;
  const n = a.count + b.count;
  if (a.count === 0 || b.count === 0) return { ...newer, delay: a.count === 0 ? b : { ...a, count: n } };
  const mean = (a.count * a.mean + b.count * b.mean) / n;
  const square = (a.count * (a.stddev ** 2 + a.mean ** 2) + b.count * (b.stddev ** 2 + b.mean ** 2)) / n;
  return {
    ...newer,
    delay: {
      count: n,
      min: Math.min(a.min, b.min),
      max: Math.max(a.max, b.max),
      mean,
      stddev: Math.sqrt(Math.max(0, square - mean ** 2)),
      p50: Math.max(a.p50, b.p50),
      p90: Math.max(a.p90, b.p90),
      p99: Math.max(a.p99, b.p99),
    },
  };
}

const THREADS = 'by thread (main; session-N: session worker N, [limits] workers)';

/**
 * Registers the event-loop lag and GC families (prom-client's names; process-metrics.ts leaves its own out) on
 * `registry` with a `thread` label: one series per thread `threads()` gives at each scrape (their names are
 * label values: a closed set, never anything a client sent).
 */
export function registerThreadLoopMetrics(registry: Registry, threads: () => Iterable<readonly [string, ThreadLoop]>): void {
  const registers = [registry];
  const gauge = (name: string, help: string, collect?: () => void): Gauge<'thread'> => new Gauge({ name, help, labelNames: ['thread'], registers, ...(collect === undefined ? {} : { collect }) });
  // The first family rendered sets every gauge, once per scrape: a thread gone since the last one leaves no series.
  const lag = gauge('nodejs_eventloop_lag_seconds', `Lag of the event loop in seconds: how long a setImmediate took when the scrape asked, ${THREADS}. A worker that did not answer shows at least how long its answer has been awaited.`, setAll);
  const stat = (name: Exclude<keyof LoopDelay, 'count'>, what: string): Gauge<'thread'> => gauge(`nodejs_eventloop_lag_${name}_seconds`, `The ${what} of the event loop delays recorded since the previous scrape, ${THREADS}.`);
  const delay: Record<Exclude<keyof LoopDelay, 'count'>, Gauge<'thread'>> = {
    min: stat('min', 'minimum'),
    max: stat('max', 'maximum'),
    mean: stat('mean', 'mean'),
    stddev: stat('stddev', 'standard deviation'),
    p50: stat('p50', '50th percentile'),
    p90: stat('p90', '90th percentile'),
    p99: stat('p99', '99th percentile'),
  };
  const gc = new TallyHistogram<'kind' | 'thread'>(registry, 'nodejs_gc_duration_seconds', `Garbage collection duration by kind (major, minor, incremental, weakcb) and ${THREADS}, since the thread started.`, GC_BUCKETS, () => {
    const seen = new Set<string>();
    for (const [thread, t] of threads()) {
      seen.add(thread);
      for (const kind of GC_KINDS) {
        const b = t.gc[kind];
        if (b !== undefined) gc.child({ kind, thread }).set(b);
      }
    }
    gc.retain((l) => seen.has(l.thread));
  });

  function setAll(): void {
    lag.reset();
    for (const g of Object.values(delay)) g.reset();
    for (const [thread, t] of threads()) {
      lag.set({ thread }, t.lag);
      for (const k of Object.keys(delay) as (keyof typeof delay)[]) delay[k].set({ thread }, t.delay[k]);
    }
  }
}
