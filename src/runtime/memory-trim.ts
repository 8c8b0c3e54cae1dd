// Gives freed native memory back to the system once a burst is over. A burst of handshakes or connections
// leaves glibc's heap at its high-water mark: Node's 64 KiB read buffers and OpenSSL's scratch are freed, but
// between chunks still in use, so the pages stay resident (RSS) and only a later malloc_trim returns them
// (scripts/bench/responder.ts measures 1,000 sessions: ~3 MiB with the sessions open, ~6 MiB more after they
// close). malloc_trim walks every arena under its lock (3–8 ms for a 12 MiB heap here, ~80 ms after a 512 MiB
// burst), so it runs on the libuv thread pool, and only on the edge from busy to idle: after an interval in which
// the event loop was busy, at the end of the first interval in which it was not. A steadily loaded process reuses
// that memory and is never trimmed. V8 shrinks its own young generation the same way (its memory reducer); this
// is the native side.
import { performance, type EventLoopUtilization } from 'node:perf_hooks';
import { loadNative } from '../transport/native.ts';

/** Event-loop utilisation at or above which an interval counts as busy. */
const BUSY = 0.02;
const INTERVAL_MS = 5_000;

type Utilization = (current?: EventLoopUtilization, previous?: EventLoopUtilization) => EventLoopUtilization;

export interface MemoryTrimOptions {
  intervalMs?: number;
  /** Trims, then calls `done(released)` (tests inject one). Default: the addon's malloc_trim(0), off the JS thread. */
  trim?: Trim;
  /** Default: performance.eventLoopUtilization. */
  utilization?: Utilization;
  /**
   * The other threads whose event loops count (session workers: `worker.performance.eventLoopUtilization`):
   * the heap is the process's, so an interval is busy when any thread was.
   */
  threads?: () => readonly Utilization[];
}

/** Nothing yet: a reading relative to it covers the whole life of the thread (elu() alone is cumulative). */
const THREAD_START: EventLoopUtilization = { idle: 0, active: 0, utilization: 0 };

/** Says, at each call, whether the event loop behind `elu` was busy since the previous call (the first: since `from`). */
function busyReader(elu: Utilization, from: EventLoopUtilization = elu()): () => boolean {
  let last = from;
  return () => {
    const now = elu();
    const busy = elu(now, last).utilization >= BUSY;
    last = now;
    return busy;
  };
}

export interface MemoryTrim {
  /** Trims done so far (those that released memory). */
  readonly released: number;
  stop(): void;
}

type Trim = (done: (released: boolean) => void) => void;

/** The addon's malloc_trim(0) on the thread pool; undefined without the addon (the caller then does nothing). */
export function nativeMallocTrim(): Trim | undefined {
  let fn: ((cb: (released: boolean) => void) => void) | undefined;
  try {
    fn = (loadNative() as unknown as { mallocTrim?: (cb: (released: boolean) => void) => void }).mallocTrim;
  } catch {
    return undefined;
  }
  return fn === undefined ? undefined : (done) => fn(done);
}

export function startMemoryTrim(opts: MemoryTrimOptions = {}): MemoryTrim | undefined {
  const trim = opts.trim ?? nativeMallocTrim();
  if (trim === undefined) return undefined;
  const readers = new Map<Utilization, () => boolean>();
  const reader = (elu: Utilization, from?: EventLoopUtilization): (() => boolean) => {
    let r = readers.get(elu);
    if (r === undefined) readers.set(elu, (r = busyReader(elu, from)));
    return r;
  };
  const main = reader(opts.utilization ?? performance.eventLoopUtilization);
  for (const t of opts.threads?.() ?? []) reader(t); // from now, not from the first tick: that interval counts too
  // A thread listed later (session threads start on demand) is read from its own start: its start and the burst
  // that started it fall before the first tick that lists it.
  const later = (t: Utilization): (() => boolean) => reader(t, THREAD_START);
  // Every reader is read each interval (no short cut), so each one's next interval starts now.
  const anyBusy = (): boolean => [main, ...(opts.threads?.() ?? []).map(later)].map((r) => r()).includes(true);
  let busySince = false;
  let released = 0;
  let trimming = false;
  const timer = setInterval(() => {
    if (anyBusy()) {
      busySince = true;
    } else if (busySince && !trimming) {
      busySince = false;
      trimming = true;
      trim((r) => {
        trimming = false;
        if (r) released++;
      });
    }
  }, opts.intervalMs ?? INTERVAL_MS);
  timer.unref();
  return {
    get released() {
      return released;
    },
    stop: () => clearInterval(timer),
  };
}
