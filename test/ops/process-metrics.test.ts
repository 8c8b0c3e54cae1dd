// Node's process metrics on the main thread: prom-client's event-loop histogram (monitorEventLoopDelay) and its
// GC PerformanceObserver are not started, since thread-loop.ts reports both by thread; the exposition keeps
// the same families and passes promtool.
import { createRequire } from 'node:module';
import type * as PerfHooks from 'node:perf_hooks';
import { PerformanceObserver } from 'node:perf_hooks';
import { collectDefaultMetrics } from 'prom-client';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { AgentMetrics } from '../../src/ops/metrics.ts';
import { PROCESS_COLLECTORS, SKIPPED_COLLECTORS } from '../../src/ops/process-metrics.ts';
import { promtoolCheck } from './promtool.ts';

// The CommonJS perf_hooks object prom-client calls through (it reads monitorEventLoopDelay off it at each call).
const perfHooks = createRequire(import.meta.url)('node:perf_hooks') as typeof PerfHooks;

afterEach(() => {
  vi.restoreAllMocks();
});

/** The families of Node's process metrics as they were when prom-client's collectDefaultMetrics made them. */
const PROCESS_FAMILIES = [
  'process_cpu_user_seconds_total counter', 'process_cpu_system_seconds_total counter', 'process_cpu_seconds_total counter',
  'process_start_time_seconds gauge', 'process_resident_memory_bytes gauge', 'process_virtual_memory_bytes gauge', 'process_heap_bytes gauge',
  'process_open_fds gauge', 'process_max_fds gauge', 'nodejs_active_resources gauge', 'nodejs_active_handles gauge', 'nodejs_active_requests gauge',
  'nodejs_version_info gauge', 'nodejs_heap_size_total_bytes gauge', 'nodejs_heap_size_used_bytes gauge', 'nodejs_external_memory_bytes gauge',
  'nodejs_heap_space_size_total_bytes gauge', 'nodejs_heap_space_size_used_bytes gauge', 'nodejs_heap_space_size_available_bytes gauge',
  'nodejs_eventloop_lag_seconds gauge', 'nodejs_eventloop_lag_min_seconds gauge', 'nodejs_eventloop_lag_max_seconds gauge',
  'nodejs_eventloop_lag_mean_seconds gauge', 'nodejs_eventloop_lag_stddev_seconds gauge', 'nodejs_eventloop_lag_p50_seconds gauge',
  'nodejs_eventloop_lag_p90_seconds gauge', 'nodejs_eventloop_lag_p99_seconds gauge', 'nodejs_gc_duration_seconds histogram',
];

describe('process metrics', () => {
  it("starts none of prom-client's event-loop or GC monitors on the main thread", () => {
    // The agent's own per-thread monitor is one per thread, started by the first AgentMetrics: started here,
    // so what the next AgentMetrics starts is only what prom-client's collectors start.
    new AgentMetrics({ mode: 'http', version: 't' });
    const delay = vi.spyOn(perfHooks, 'monitorEventLoopDelay');
    const observe = vi.spyOn(PerformanceObserver.prototype, 'observe');
    new AgentMetrics({ mode: 'http', version: 't' });
    const gc = observe.mock.calls.filter(([o]) => o !== undefined && ((o as { entryTypes?: string[] }).entryTypes?.includes('gc') || (o as { type?: string }).type === 'gc'));
    expect({ eventLoopDelayMonitors: delay.mock.calls.length, gcObservers: gc.length }).toEqual({ eventLoopDelayMonitors: 0, gcObservers: 0 });
  });

  it('keeps the same families, and promtool passes', async () => {
    const text = await new AgentMetrics({ mode: 'http', version: 't' }).metrics();
    const families = text.split('\n').filter((l) => l.startsWith('# TYPE ')).map((l) => l.split(' ').slice(2, 4).join(' '));
    expect(families.filter((f) => !f.startsWith('enclave_agent_')).sort()).toEqual([...PROCESS_FAMILIES].sort());
    expect(promtoolCheck(text)).toEqual({ output: '', status: 0 });
  });

  it("calls or skips, by name, every collector of the installed prom-client's collectDefaultMetrics", () => {
    // A prom-client that adds a default collector shows here, to be called or skipped on purpose.
    expect([...Object.keys(PROCESS_COLLECTORS), ...SKIPPED_COLLECTORS].sort()).toEqual([...collectDefaultMetrics.metricsList].sort());
  });
});
