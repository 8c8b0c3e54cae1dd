// thread-loop.ts on its own: two reports of a worker between scrapes merge without losing what the first saw (a
// stalled loop's late answer), and figures from another thread are checked before they reach a label or a value.
import { describe, expect, it } from 'vitest';
import { GC_BUCKETS, isThreadLoop, measureLag, mergeLoops, threadLoopMonitor, type LoopDelay, type ThreadLoop } from '../../src/ops/thread-loop.ts';

const delay = (over: Partial<LoopDelay>): LoopDelay => ({ count: 100, min: 0.01, max: 0.012, mean: 0.0105, stddev: 0.0005, p50: 0.0104, p90: 0.011, p99: 0.012, ...over });
const loop = (lag: number, d: LoopDelay, minor = 1): ThreadLoop => ({ lag, delay: d, gc: { minor: { counts: [minor, 0, 0, 0, 0, 0, 0], sum: minor * 0.0005 } } });

describe('mergeLoops', () => {
  it('keeps the stall the first report saw: max, mean and spread over both, lag and GC totals the newer', () => {
    const stalled = loop(0.001, delay({ count: 1, min: 2, max: 2, mean: 2, stddev: 0, p50: 2, p90: 2, p99: 2 }), 3);
    const next = loop(0.0002, delay({ count: 99, min: 0.01, max: 0.011, mean: 0.01, stddev: 0 }), 5);
    const m = mergeLoops(stalled, next);
    expect(m.lag).toBe(0.0002);
    expect(m.gc).toEqual(next.gc);
    expect(m.delay.count).toBe(100);
    expect(m.delay.min).toBe(0.01);
    expect(m.delay.max).toBe(2);
    expect(m.delay.mean).toBeCloseTo((2 + 99 * 0.01) / 100, 12);
    // Population standard deviation of 99 × 0.01 and one 2.
    const mean = (2 + 99 * 0.01) / 100;
    expect(m.delay.stddev).toBeCloseTo(Math.sqrt((99 * (0.01 - mean) ** 2 + (2 - mean) ** 2) / 100), 12);
    expect(m.delay.p99).toBe(2);
  });

  it('a report of no samples adds nothing', () => {
    const a = loop(0.1, delay({ count: 0 }));
    const b = loop(0.2, delay({ count: 7, max: 0.5 }));
    expect(mergeLoops(a, b)).toEqual(b);
    expect(mergeLoops(b, a).delay).toEqual({ ...b.delay, count: 7 });
  });
});

describe('isThreadLoop', () => {
  it('accepts what a thread reads of itself, and refuses what could not be a figure or a kind', () => {
    const own = threadLoopMonitor().read(0.001);
    expect(isThreadLoop(own)).toBe(true);
    const ok = loop(0.001, delay({}));
    expect(isThreadLoop(ok)).toBe(true);
    for (const bad of [
      null,
      { ...ok, lag: -1 },
      { ...ok, lag: Number.NaN },
      { ...ok, delay: { ...ok.delay, max: 'x' } },
      { ...ok, gc: { 'kind="x"': ok.gc.minor } },
      { ...ok, gc: { minor: { counts: [1], sum: 0 } } },
      { ...ok, gc: { minor: { counts: new Array<number>(GC_BUCKETS.length + 1).fill(Infinity), sum: 0 } } },
    ]) {
      expect(isThreadLoop(bad), JSON.stringify(bad)).toBe(false);
    }
  });
});

describe('measureLag, then a read', () => {
  it('a read right after the loop was held shows the hold (the delay monitor ticks before it)', async () => {
    const monitor = threadLoopMonitor();
    monitor.read(0); // the window starts here
    // The loop held 300 ms inside a timer callback, then the scrape's own steps at once, as a worker answers the
    // request that waited through its stall. Before: the read came a setImmediate after the hold, before the
    // monitor's next tick, and its reset dropped the 300 ms (max ~0.01 s).
    const seen = await new Promise<ThreadLoop>((resolve) => {
      setTimeout(() => {
        const until = performance.now() + 300;
        while (performance.now() < until) {
          // held
        }
        void measureLag().then((lag) => resolve(monitor.read(lag)));
      }, 20);
    });
    expect(seen.delay.max).toBeGreaterThanOrEqual(0.25);
  });
});
