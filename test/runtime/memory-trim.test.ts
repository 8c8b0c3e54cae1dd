import { spawnSync } from 'node:child_process';
import { afterEach, describe, expect, it, vi } from 'vitest';
import type { EventLoopUtilization } from 'node:perf_hooks';
import { nativeMallocTrim, startMemoryTrim } from '../../src/runtime/memory-trim.ts';
import { addonPath } from '../../src/transport/native.ts';

/** A utilisation source that reports the given fractions, one per interval. */
function scripted(fractions: number[]): (current?: EventLoopUtilization, previous?: EventLoopUtilization) => EventLoopUtilization {
  let i = 0;
  return (current) => (current === undefined ? { idle: 0, active: 0, utilization: 0 } : { idle: 0, active: 0, utilization: fractions[i++] ?? 0 });
}

/**
 * A worker's loop as Node reports it: cumulative active/idle time since the thread started (no argument), or the
 * change between two readings; `busy`/`rest` advance it.
 */
function workerLoop(): { elu: (current?: EventLoopUtilization, previous?: EventLoopUtilization) => EventLoopUtilization; busy: (ms: number) => void; rest: (ms: number) => void } {
  let active = 0;
  let idle = 0;
  return {
    elu: (c, p) => {
      const a = (c ?? { active }).active - (p?.active ?? 0);
      const i = (c ?? { idle }).idle - (p?.idle ?? 0);
      return { active: a, idle: i, utilization: a + i === 0 ? 0 : a / (a + i) };
    },
    busy: (ms) => (active += ms),
    rest: (ms) => (idle += ms),
  };
}

describe('memory trim', () => {
  afterEach(() => vi.useRealTimers());

  it('trims once on each edge from a busy interval to an idle one, never while busy or steadily idle', () => {
    vi.useFakeTimers();
    const trim = vi.fn((done: (released: boolean) => void) => done(true));
    const t = startMemoryTrim({ intervalMs: 1000, trim, utilization: scripted([0, 0.5, 0.3, 0.01, 0, 0, 0.9, 0.001, 0.02, 0.5]) })!;
    const calls: number[] = [];
    for (let tick = 1; tick <= 10; tick++) {
      vi.advanceTimersByTime(1000);
      calls.push(trim.mock.calls.length);
    }
    // busy at ticks 2–3, idle at 4 → trim; busy at 7, idle at 8 → trim; 9 (2 %) counts as busy, 10 still busy.
    expect(calls).toEqual([0, 0, 0, 1, 1, 1, 1, 2, 2, 2]);
    expect(t.released).toBe(2);
    t.stop();
    vi.advanceTimersByTime(10_000);
    expect(trim).toHaveBeenCalledTimes(2);
  });

  it('never starts a trim while one is still running on the thread pool', () => {
    vi.useFakeTimers();
    const pending: ((released: boolean) => void)[] = [];
    const t = startMemoryTrim({ intervalMs: 10, trim: (done) => void pending.push(done), utilization: scripted([1, 0, 1, 0, 1, 0]) })!;
    vi.advanceTimersByTime(40); // busy, idle → a trim starts; busy, idle → none, the first is still running
    expect(pending).toHaveLength(1);
    pending[0]!(true);
    vi.advanceTimersByTime(20); // busy, idle → the next trim
    expect(pending).toHaveLength(2);
    expect(t.released).toBe(1);
    t.stop();
  });

  it('counts an interval busy when any thread was (session workers share the heap), and reads each thread every interval', () => {
    vi.useFakeTimers();
    const trim = vi.fn((done: (released: boolean) => void) => done(true));
    const worker = scripted([0.5, 0.5, 0, 0]);
    const t = startMemoryTrim({ intervalMs: 10, trim, utilization: scripted([0, 0, 0, 0]), threads: () => [worker] })!;
    vi.advanceTimersByTime(20); // the main thread idle, the worker busy: no trim
    expect(trim).not.toHaveBeenCalled();
    vi.advanceTimersByTime(10); // every thread idle after a busy interval: the trim
    expect(trim).toHaveBeenCalledTimes(1);
    vi.advanceTimersByTime(10);
    expect(trim).toHaveBeenCalledTimes(1);
    t.stop();
  });

  it('reads the other threads from the start: a worker busy in the first interval counts', () => {
    vi.useFakeTimers();
    const trim = vi.fn((done: (released: boolean) => void) => done(true));
    const worker = workerLoop();
    const t = startMemoryTrim({ intervalMs: 10, trim, utilization: scripted([0, 0]), threads: () => [worker.elu] })!;
    worker.busy(5); // busy during the first interval
    vi.advanceTimersByTime(10);
    worker.rest(10); // idle during the second
    vi.advanceTimersByTime(10);
    expect(trim).toHaveBeenCalledTimes(1);
    t.stop();
  });

  it('reads a thread started later from its own start: busy only before the first tick that lists it, it counts', () => {
    vi.useFakeTimers();
    const trim = vi.fn((done: (released: boolean) => void) => done(true));
    const worker = workerLoop();
    // Session threads start on demand (session-workers.ts): none when the trim starts.
    let threads: (typeof worker.elu)[] = [];
    const t = startMemoryTrim({ intervalMs: 10, trim, utilization: scripted([0, 0, 0]), threads: () => threads })!;
    // During the first interval a thread starts (loading its modules) and serves a burst, then goes idle.
    worker.busy(5);
    threads = [worker.elu];
    vi.advanceTimersByTime(10);
    worker.rest(10); // idle during the second
    vi.advanceTimersByTime(10);
    expect(trim).toHaveBeenCalledTimes(1);
    t.stop();
  });

  it('counts only trims that released memory', () => {
    vi.useFakeTimers();
    const t = startMemoryTrim({ intervalMs: 10, trim: (done) => done(false), utilization: scripted([1, 0]) })!;
    vi.advanceTimersByTime(20);
    expect(t.released).toBe(0);
    t.stop();
  });

  it.skipIf(nativeMallocTrim() === undefined)('the addon returns the free pages inside a fragmented heap to the system, off the JS thread', () => {
    // 48 MiB in 64 KiB native buffers (below glibc's mmap threshold: on the heap), every 16th kept: the freed
    // ones sit between live chunks, so free() alone cannot shrink the heap; malloc_trim can.
    const js = `
      const trim = require(process.env.ADDON).mallocTrim;
      const rss = () => Number(require('fs').readFileSync('/proc/self/statm', 'utf8').split(' ')[1]) * 4096;
      const all = []; for (let i = 0; i < 768; i++) { const b = Buffer.allocUnsafeSlow(65536); b.fill(1); all.push(b); }
      const kept = all.filter((_, i) => i % 16 === 0); all.length = 0;
      for (let i = 0; i < 3; i++) gc();
      const before = rss();
      trim((released) => process.stdout.write(JSON.stringify({ released, freedMiB: (before - rss()) / 2 ** 20, kept: kept.length })));`;
    const r = spawnSync(process.execPath, ['--expose-gc', '-e', js], { encoding: 'utf8', env: { ...process.env, ADDON: addonPath() } });
    expect(r.stderr).toBe('');
    const out = JSON.parse(r.stdout) as { released: boolean; freedMiB: number; kept: number };
    expect(out.kept).toBe(48);
    expect(out.released).toBe(true);
    expect(out.freedMiB).toBeGreaterThan(24);
  });
});
