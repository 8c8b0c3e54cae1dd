// V8 heap figures per JavaScript thread. With [limits] workers ≥ 2 the sessions run on worker threads, each with
// a V8 heap of its own, and prom-client's default heap metrics (process.memoryUsage(), v8.getHeapSpaceStatistics)
// only ever describe the thread that asks: the main one. So those families are replaced by the same names with a
// `thread` label — "main", or "session-N" for session worker N — the workers' figures being the last each reported
// (worker-services/metrics-proxy.ts: read in the worker when a scrape asks for its metrics).
import v8 from 'node:v8';
import type { Registry } from 'prom-client';
// Not from 'prom-client': its index loads node:https and node:tls (prom-client-classes.d.ts).
import Gauge from 'prom-client/lib/gauge.js';

/** One thread's heap: what prom-client's default heap metrics show for the main thread. */
export interface ThreadHeap {
  /** V8 heap size (heapTotal), used (heapUsed), and external memory, bytes. */
  total: number;
  used: number;
  external: number;
  /** By heap space, named as prom-client names them (V8's name without `_space`). */
  spaces: { space: string; total: number; used: number; available: number }[];
}

/** The calling thread's heap figures. */
export function readThreadHeap(): ThreadHeap {
  const h = v8.getHeapStatistics();
  return {
    total: h.total_heap_size,
    used: h.used_heap_size,
    external: h.external_memory,
    spaces: v8.getHeapSpaceStatistics().map((s) => ({
      space: s.space_name.endsWith('_space') ? s.space_name.slice(0, -'_space'.length) : s.space_name,
      total: s.space_size,
      used: s.space_used_size,
      available: s.space_available_size,
    })),
  };
}

/** A space name is a label value: V8's few (about ten) short lower-case names, nothing else. */
const SPACE = /^[a-z][a-z_]{0,39}$/;
const MAX_SPACES = 32;
const bytes = (v: unknown): v is number => typeof v === 'number' && Number.isFinite(v) && v >= 0;

/** Whether `v` (from another thread) is a ThreadHeap with figures and space names fit for a scrape. */
export function isThreadHeap(v: unknown): v is ThreadHeap {
  if (typeof v !== 'object' || v === null) return false;
  const h = v as Record<string, unknown>;
  return (
    bytes(h.total) && bytes(h.used) && bytes(h.external) &&
    Array.isArray(h.spaces) && h.spaces.length <= MAX_SPACES &&
    h.spaces.every((s: unknown) => {
      const r = s as Record<string, unknown> | null;
      return typeof r === 'object' && r !== null && typeof r.space === 'string' && SPACE.test(r.space) && bytes(r.total) && bytes(r.used) && bytes(r.available);
    })
  );
}

/** prom-client's default metrics that describe one thread's heap: replaced by registerThreadHeapMetrics. */
export const THREAD_HEAP_METRICS = [
  'nodejs_heap_size_total_bytes',
  'nodejs_heap_size_used_bytes',
  'nodejs_external_memory_bytes',
  'nodejs_heap_space_size_total_bytes',
  'nodejs_heap_space_size_used_bytes',
  'nodejs_heap_space_size_available_bytes',
] as const;

const THREADS = 'by thread (main; session-N: session worker N, [limits] workers)';

/**
 * Registers the THREAD_HEAP_METRICS families on `registry` with a `thread` label: one series per thread
 * `threads()` gives at each scrape (their names are label values: a closed set, never anything a client sent).
 */
export function registerThreadHeapMetrics(registry: Registry, threads: () => Iterable<readonly [string, ThreadHeap]>): void {
  const registers = [registry];
  const size = (name: string, help: string, collect?: () => void): Gauge<'thread'> => new Gauge({ name, help, labelNames: ['thread'], registers, ...(collect === undefined ? {} : { collect }) });
  const space = (name: string, help: string): Gauge<'thread' | 'space'> => new Gauge({ name, help, labelNames: ['thread', 'space'], registers });
  // The first family rendered sets every family's values, once per scrape (as prom-client's own heap metrics
  // do): a thread gone since the last scrape leaves no series behind.
  const total = size('nodejs_heap_size_total_bytes', `V8 heap size in bytes, ${THREADS}.`, setAll);
  const used = size('nodejs_heap_size_used_bytes', `V8 heap size used in bytes, ${THREADS}.`);
  const external = size('nodejs_external_memory_bytes', `V8 external memory in bytes, ${THREADS}.`);
  const spaceTotal = space('nodejs_heap_space_size_total_bytes', `V8 heap space size in bytes, by space and ${THREADS}.`);
  const spaceUsed = space('nodejs_heap_space_size_used_bytes', `V8 heap space size used in bytes, by space and ${THREADS}.`);
  const spaceAvailable = space('nodejs_heap_space_size_available_bytes', `V8 heap space size available in bytes, by space and ${THREADS}.`);

  function setAll(): void {
    for (const g of [total, used, external, spaceTotal, spaceUsed, spaceAvailable]) g.reset();
    for (const [thread, h] of threads()) {
      total.set({ thread }, h.total);
      used.set({ thread }, h.used);
      external.set({ thread }, h.external);
      for (const s of h.spaces) {
        spaceTotal.set({ thread, space: s.space }, s.total);
        spaceUsed.set({ thread, space: s.space }, s.used);
        spaceAvailable.set({ thread, space: s.space }, s.available);
      }
    }
  }
}
