// Node's process metrics (CPU, memory, fds, handles, version...) from prom-client's own collectors, minus the
// ones thread-loop.ts reports by thread. prom-client 15's collectDefaultMetrics starts every collector, with no
// switch for one: its event-loop histogram (monitorEventLoopDelay, sampling every 10 ms) and its GC
// PerformanceObserver would keep running on the main thread for series removed as soon as registered. So the
// collectors are called one by one, from the modules collectDefaultMetrics itself calls.
import type { Registry } from 'prom-client';
import heapSizeAndUsed from 'prom-client/lib/metrics/heapSizeAndUsed.js';
import osMemoryHeap from 'prom-client/lib/metrics/osMemoryHeap.js';
import processCpuTotal from 'prom-client/lib/metrics/processCpuTotal.js';
import processHandles from 'prom-client/lib/metrics/processHandles.js';
import processMaxFileDescriptors from 'prom-client/lib/metrics/processMaxFileDescriptors.js';
import processOpenFileDescriptors from 'prom-client/lib/metrics/processOpenFileDescriptors.js';
import processRequests from 'prom-client/lib/metrics/processRequests.js';
import processResources from 'prom-client/lib/metrics/processResources.js';
import processStartTime from 'prom-client/lib/metrics/processStartTime.js';
import version from 'prom-client/lib/metrics/version.js';

/** The collectors called, by their name in collectDefaultMetrics.metricsList. */
export const PROCESS_COLLECTORS = {
  processCpuTotal,
  processStartTime,
  osMemoryHeap,
  processOpenFileDescriptors,
  processMaxFileDescriptors,
  processResources,
  processHandles,
  processRequests,
  // nodejs_external_memory_bytes; its heap size families are replaced by thread-heap.ts's.
  heapSizeAndUsed,
  version,
} as const;

/** Not called: thread-loop.ts (event-loop lag, GC) and thread-heap.ts (heap spaces) report these by thread. */
export const SKIPPED_COLLECTORS = ['eventLoopLag', 'gc', 'heapSpacesSizeAndUsed'] as const;

/** Registers Node's process metrics on `registry` (each collector checks that its Node API exists). */
export function registerProcessMetrics(registry: Registry): void {
  for (const collect of Object.values(PROCESS_COLLECTORS)) collect(registry, {});
}
