// Shared benchmark helpers: every bench prints a table whose figures sit next to a baseline
// measured in the same run, so the ratio (not the absolute number) is what we compare.
import type { ChildProcess } from 'node:child_process';
import os from 'node:os';

export interface Measurement {
  /** Operations per second. */
  opsPerSec: number;
  /** Operations done. */
  ops: number;
  /** Wall time in ms. */
  ms: number;
}

/** Runs `fn` (sync or async) repeatedly for at least `minMs` after a warm-up; returns throughput. */
export async function measure(fn: () => unknown, opts: { minMs?: number; warmupMs?: number; batch?: number } = {}): Promise<Measurement> {
  const minMs = opts.minMs ?? 1000;
  const warmupMs = opts.warmupMs ?? 200;
  const batch = opts.batch ?? 1;
  const run = async (budget: number) => {
    let ops = 0;
    const start = performance.now();
    let now = start;
    while (now - start < budget) {
      for (let i = 0; i < batch; i++) {
        const r = fn();
        if (r instanceof Promise) await r;
      }
      ops += batch;
      now = performance.now();
    }
    return { ops, ms: now - start };
  };
  await run(warmupMs);
  const { ops, ms } = await run(minMs);
  return { ops, ms, opsPerSec: (ops * 1000) / ms };
}

/** Median of per-call latencies in ms over `n` calls after `warmup` calls. */
export async function medianMs(fn: () => unknown, n = 200, warmup = 20): Promise<number> {
  for (let i = 0; i < warmup; i++) await fn();
  const times: number[] = [];
  for (let i = 0; i < n; i++) {
    const t = performance.now();
    await fn();
    times.push(performance.now() - t);
  }
  times.sort((a, b) => a - b);
  return times[Math.floor(times.length / 2)]!;
}

/** Closed loop: `concurrency` workers each run `one` back to back until `ms` have passed; completions per second. */
export async function closedLoopPerSec(ms: number, concurrency: number, one: () => Promise<void>): Promise<number> {
  let done = 0;
  const end = performance.now() + ms;
  const t0 = performance.now();
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (performance.now() < end) {
        await one();
        done++;
      }
    }),
  );
  return (done * 1000) / (performance.now() - t0);
}

export function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}

export function machine(): string {
  const cpu = os.cpus()[0]?.model ?? 'unknown cpu';
  return `${cpu}, ${os.cpus().length} cores, ${(os.totalmem() / 2 ** 30).toFixed(0)} GiB, Node ${process.version}`;
}

/** Prints a fixed-width table: first row is the header. */
export function printTable(title: string, rows: (string | number)[][]): void {
  const cells = rows.map((r) => r.map((c) => (typeof c === 'number' ? formatNumber(c) : c)));
  const widths = cells[0]!.map((_, i) => Math.max(...cells.map((r) => (r[i] ?? '').length)));
  console.log(`\n## ${title}`);
  cells.forEach((r, idx) => {
    console.log('| ' + r.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join(' | ') + ' |');
    if (idx === 0) console.log('|' + widths.map((w, i) => (i === 0 ? '-'.repeat(w + 2) : '-'.repeat(w + 1) + ':')).join('|') + '|');
  });
}

export function formatNumber(n: number): string {
  if (!Number.isFinite(n)) return String(n);
  if (Math.abs(n) >= 100) return Math.round(n).toLocaleString('en-US');
  if (Math.abs(n) >= 1) return n.toFixed(2);
  return n.toPrecision(3);
}

/** "0.83×" with a pass/fail mark against a target ratio. */
export function ratio(value: number, baseline: number, target?: number): string {
  const r = value / baseline;
  const mark = target === undefined ? '' : r >= target ? ` (≥ ${target} ✓)` : ` (< ${target} ✗)`;
  return `${r.toFixed(2)}×${mark}`;
}

/** Sends one IPC message to a bench child process and resolves with its next message (the reply). */
export function askChild<T>(child: ChildProcess, msg: unknown): Promise<T> {
  return new Promise((resolve) => {
    child.once('message', (m) => resolve(m as T));
    child.send(msg as never);
  });
}
