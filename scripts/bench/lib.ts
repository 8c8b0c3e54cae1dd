// Shared benchmark helpers: every bench prints a table whose figures sit next to a baseline
// measured in the same run, so the ratio (not the absolute number) is what we compare.
import type { ChildProcess } from 'node:child_process';
import { execFileSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
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
/**
 * A closed loop: `concurrency` callers each run `one` back to back for `ms`. Returns how many completed; with
 * `latencies`, each one's duration (ms) is pushed there.
 */
export async function closedLoop(ms: number, concurrency: number, one: () => Promise<unknown>, latencies: number[] | null = null): Promise<number> {
  let done = 0;
  const end = performance.now() + ms;
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (performance.now() < end) {
        const t = performance.now();
        await one();
        latencies?.push(performance.now() - t);
        done++;
      }
    }),
  );
  return done;
}

export async function closedLoopPerSec(ms: number, concurrency: number, one: () => Promise<void>): Promise<number> {
  const t0 = performance.now();
  const done = await closedLoop(ms, concurrency, one);
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

/** `--json` on the command line (`npm run bench -- --json [name...]`): every table row is printed as one JSON object. */
export const jsonMode = (): boolean => process.argv.includes('--json');

/** "11.97 13.67 13.74": the 1/5/15-minute load averages, printed with every figure (the machine may be shared). */
export function loadAverage(): string {
  return os.loadavg().map((l) => l.toFixed(2)).join(' ');
}

/** One result row in the machine-readable form `--json` prints. */
export interface JsonRow {
  /** The table it belongs to. */
  bench: string;
  name: string;
  figure: number | null;
  unit: string;
  /** The baseline's figure in the same run and unit, when the row is compared with one. */
  baseline: number | null;
  /** figure / baseline (or the median of per-round ratios), when there is a baseline. */
  ratio: number | null;
  /** Rounds (or samples) the figure is the median of. */
  rounds: number | null;
  /** [min, max] over the rounds, of the ratio when there is one, else of the figure. */
  spread: [number, number] | null;
  /** 1-minute load average when the row was printed. */
  load: number;
  /** Every cell of the printed row, by header (printTable rows). */
  columns?: Record<string, string | number>;
}

/** A row for printRows: a figure, its unit, and optionally its baseline, ratio, rounds and spread. */
export interface BenchRow {
  name: string;
  figure: number;
  unit: string;
  baseline?: number;
  ratio?: number;
  rounds?: number;
  spread?: [number, number];
  target?: string;
  pass?: boolean;
}

export const spreadOf = (xs: number[]): [number, number] => [Math.min(...xs), Math.max(...xs)];
export const formatSpread = (s: [number, number], digits = 2): string => `${s[0].toFixed(digits)}–${s[1].toFixed(digits)}`;

function printJson(rows: JsonRow[]): void {
  for (const r of rows) console.log(JSON.stringify(r));
}

function benchRowsToJson(title: string, rows: BenchRow[]): JsonRow[] {
  const load = os.loadavg()[0]!;
  return rows.map((r) => ({ bench: title, name: r.name, figure: r.figure, unit: r.unit, baseline: r.baseline ?? null, ratio: r.ratio ?? null, rounds: r.rounds ?? null, spread: r.spread ?? null, load }));
}

/** Prints rows with explicit units and baselines: a table, or JSON lines with --json. */
export function printRows(title: string, rows: BenchRow[]): void {
  if (jsonMode()) {
    printJson(benchRowsToJson(title, rows));
    return;
  }
  const hasRatio = rows.some((r) => r.ratio !== undefined);
  const hasTarget = rows.some((r) => r.target !== undefined);
  printTable(title, [
    ['row', 'figure', 'unit', ...(hasRatio ? ['vs baseline'] : []), 'rounds', 'spread (min–max)', ...(hasTarget ? ['target'] : [])],
    ...rows.map((r) => [
      r.name,
      r.figure,
      r.unit,
      ...(hasRatio ? [r.ratio === undefined ? '' : `${r.ratio.toFixed(2)}×`] : []),
      r.rounds === undefined ? '' : String(r.rounds),
      r.spread === undefined ? '' : `${formatNumber(r.spread[0])}–${formatNumber(r.spread[1])}`,
      ...(hasTarget ? [r.target === undefined ? '' : `${r.target} ${r.pass ? '✓' : '✗'}`] : []),
    ]),
  ]);
}

const RANGE = /\(?(-?[\d.,]+)–(-?[\d.,]+)\)?/;
const num = (s: string): number => Number(s.replace(/,/g, ''));

/**
 * A printed table row as a JsonRow: the figure is the first numeric cell after the name (its header is the
 * unit), the baseline that column's value in the table's first data row, the ratio the first "N×" cell, the
 * spread the first "a–b" cell and the rounds the title's "median of N" — with every cell kept in `columns`.
 */
function tableRowToJson(title: string, header: string[], row: (string | number)[], first: (string | number)[]): JsonRow {
  const columns: Record<string, string | number> = {};
  header.forEach((h, i) => (columns[h] = row[i] ?? ''));
  const fi = row.findIndex((c, i) => i > 0 && typeof c === 'number');
  const figure = fi === -1 ? null : (row[fi] as number);
  const base = fi === -1 || typeof first[fi] !== 'number' ? null : (first[fi] as number);
  const ratioCell = row.find((c) => typeof c === 'string' && /^-?[\d.]+×/.test(c)) as string | undefined;
  const spreadCell = row.find((c) => typeof c === 'string' && RANGE.test(c)) as string | undefined;
  const m = spreadCell === undefined ? null : RANGE.exec(spreadCell);
  const rounds = /median of (\d+)/.exec(title);
  return {
    bench: title,
    name: String(row[0]),
    figure,
    unit: fi === -1 ? '' : header[fi]!,
    baseline: row === first ? null : base,
    ratio: ratioCell !== undefined ? parseFloat(ratioCell) : row !== first && figure !== null && base ? figure / base : null,
    rounds: rounds ? Number(rounds[1]) : null,
    spread: m ? [num(m[1]!), num(m[2]!)] : null,
    load: os.loadavg()[0]!,
    columns,
  };
}

/**
 * Prints a fixed-width table: first row is the header. With --json, one JsonRow per data row instead — or, when
 * the bench gives them, `json`: explicit rows (one per figure) for tables with several figures per line.
 */
export function printTable(title: string, rows: (string | number)[][], json?: BenchRow[]): void {
  if (jsonMode() && json !== undefined) {
    printJson(benchRowsToJson(title, json));
    return;
  }
  if (jsonMode()) {
    const [header, ...data] = rows;
    printJson(data.map((r) => tableRowToJson(title, header!.map(String), r, data[0]!)));
    return;
  }
  const cells = rows.map((r) => r.map((c) => (typeof c === 'number' ? formatNumber(c) : c)));
  const widths = cells[0]!.map((_, i) => Math.max(...cells.map((r) => (r[i] ?? '').length)));
  console.log(`\n## ${title}`);
  cells.forEach((r, idx) => {
    console.log('| ' + r.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join(' | ') + ' |');
    if (idx === 0) console.log('|' + widths.map((w, i) => (i === 0 ? '-'.repeat(w + 2) : '-'.repeat(w + 1) + ':')).join('|') + '|');
  });
}

/**
 * CPU time (user + system, all threads) of process `pid` so far, µs. From /proc/<pid>/task/<tid>/schedstat (the
 * scheduler's on-CPU time, ns) summed over the threads when the kernel has it; else /proc/<pid>/stat utime + stime,
 * whose clock ticks (10 ms) are too coarse for a row of a few hundred requests. The same source for every
 * process in a run (nginx and node children alike), so per-request figures compare.
 */
export function procCpuUs(pid: number): number {
  if (SCHEDSTAT) {
    let ns = 0;
    for (const tid of readdirSync(`/proc/${pid}/task`)) {
      try {
        ns += Number(readFileSync(`/proc/${pid}/task/${tid}/schedstat`, 'utf8').split(' ')[0]);
      } catch {
        // the thread ended meanwhile
      }
    }
    return ns / 1000;
  }
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  // Fields after "pid (comm) ": state ppid … utime (14th field overall) stime (15th).
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return ((Number(f[11]) + Number(f[12])) * 1e6) / CLOCK_TICKS;
}

const SCHEDSTAT = existsSync('/proc/self/schedstat');
/** Which source procCpuUs reads, for the tables' titles. */
export const procCpuSource = SCHEDSTAT ? '/proc/<pid>/task/*/schedstat' : '/proc/<pid>/stat utime+stime';

/** USER_HZ: what /proc/<pid>/stat counts in. */
const CLOCK_TICKS = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim());

/** Pids whose parent is `ppid` (e.g. nginx's worker under its master). */
export function childPids(ppid: number): number[] {
  const out: number[] = [];
  for (const d of readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    try {
      const stat = readFileSync(`/proc/${d}/stat`, 'utf8');
      if (Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]) === ppid) out.push(Number(d));
    } catch {
      // gone meanwhile
    }
  }
  return out;
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

/**
 * A forked bench child: answers `{cmd:'start', ...}` with what `start` returns, `{cmd:'cpu'}` with its own CPU
 * time (µs, and the system part), anything else by exiting; it exits with its parent too.
 */
export function serveChild<M extends object>(start: (m: M) => Promise<unknown>): void {
  const send = (m: unknown): void => void process.send!(m);
  process.on('message', (m: ({ cmd: 'start' } & M) | { cmd: 'cpu' } | { cmd: 'stop' }) => {
    void (async () => {
      if (m.cmd === 'start') send(await start(m as M));
      else if (m.cmd === 'cpu') {
        const u = process.cpuUsage();
        send({ cpuUs: u.user + u.system, sysUs: u.system });
      } else setImmediate(() => process.exit(0));
    })();
  });
  process.on('disconnect', () => process.exit(0));
  send({ ready: true });
}

/** The benches' app: every request gets the same small JSON body over keep-alive; resolves to its port. */
export async function startSmallJsonApp(): Promise<{ port: number }> {
  const body = Buffer.from('{"ok":true}');
  const app = http.createServer((_req, res) => {
    res.writeHead(200, { 'content-type': 'application/json', 'content-length': body.length });
    res.end(body);
  });
  app.keepAliveTimeout = 60_000;
  await new Promise<void>((r) => app.listen(0, '127.0.0.1', r));
  return { port: (app.address() as AddressInfo).port };
}
