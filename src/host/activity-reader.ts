// The page's side of the activity database: queries run in a worker thread (activity-reader-worker.ts) on a
// read-only connection, so the event loop that receives the agent's records only posts and receives messages.
// From the compiled package the worker is the sibling .js file; from a git checkout (TypeScript sources) the
// worker registers tsx first, as bin/enclave-agent.js does for the main thread. A worker that dies is started
// again on the next query; the queries it held fail with ACTIVITY_READER_FAILED. It answers one query at a time:
// at most `maxPending` wait (each holds its promise and, in the worker's queue, its message), more fail at once
// with ACTIVITY_READER_BUSY — a page reloaded in a loop, or many open at once, must not queue without bound.
import { createRequire } from 'node:module';
import { pathToFileURL } from 'node:url';
import { Worker } from 'node:worker_threads';
import { AgentError } from '../errors.ts';
import type { ActivityDetail, ListQuery, ListResult, TrafficQuery, TrafficResult } from './activity-queries.ts';
import type { ReaderReply, ReaderRequest } from './activity-reader-worker.ts';

export type ActivityReaderErrorCode = 'ACTIVITY_READER_FAILED' | 'ACTIVITY_READER_CLOSED' | 'ACTIVITY_READER_BUSY';

export class ActivityReaderError extends AgentError {
  declare readonly code: ActivityReaderErrorCode;
  constructor(code: ActivityReaderErrorCode, message: string, options?: { cause?: unknown }) {
    super(code, message, options);
  }
}

export interface ActivityReader {
  list(q: ListQuery): Promise<ListResult>;
  get(id: number): Promise<ActivityDetail | null>;
  traffic(q: TrafficQuery): Promise<TrafficResult>;
  close(): Promise<void>;
}

type Pending = { resolve: (v: unknown) => void; reject: (e: Error) => void };

/** Queries waiting for the worker, default cap. */
export const DEFAULT_MAX_PENDING_QUERIES = 64;

function spawn(file: string): Worker {
  const entry = new URL(import.meta.url.endsWith('.ts') ? './activity-reader-worker.ts' : './activity-reader-worker.js', import.meta.url);
  if (!entry.pathname.endsWith('.ts')) return new Worker(entry, { workerData: { file } });
  // tsx's ESM entry (its CommonJS one registers the hooks by a path that does not resolve inside a worker).
  const tsx = pathToFileURL(createRequire(import.meta.url).resolve('tsx/esm/api').replace(/\.cjs$/, '.mjs')).href;
  const boot = `import(${JSON.stringify(tsx)}).then((m) => { m.register(); return import(${JSON.stringify(entry.href)}); })`;
  return new Worker(boot, { eval: true, workerData: { file } });
}

export function openActivityReader(file: string, opts: { maxPending?: number } = {}): ActivityReader {
  const maxPending = opts.maxPending ?? DEFAULT_MAX_PENDING_QUERIES;
  let worker: Worker | null = null;
  let nextId = 1;
  let closed = false;
  const pending = new Map<number, Pending>();

  const failAll = (err: Error): void => {
    for (const p of pending.values()) p.reject(err);
    pending.clear();
  };
  const start = (): Worker => {
    const w = spawn(file);
    w.unref();
    w.on('message', (m: ReaderReply) => {
      const p = pending.get(m.id);
      if (p === undefined) return;
      pending.delete(m.id);
      if ('error' in m) p.reject(new ActivityReaderError('ACTIVITY_READER_FAILED', `activity query failed: ${m.error}`));
      else p.resolve(m.result);
    });
    w.on('error', (err) => {
      if (worker === w) worker = null;
      failAll(new ActivityReaderError('ACTIVITY_READER_FAILED', `activity reader stopped: ${err.message}`, { cause: err }));
    });
    w.on('exit', () => {
      if (worker === w) worker = null;
      failAll(new ActivityReaderError('ACTIVITY_READER_FAILED', 'activity reader exited'));
    });
    return w;
  };
  const ask = <T,>(req: Omit<ReaderRequest, 'id'>): Promise<T> => {
    if (closed) return Promise.reject(new ActivityReaderError('ACTIVITY_READER_CLOSED', 'the activity reader is closed'));
    if (pending.size >= maxPending) return Promise.reject(new ActivityReaderError('ACTIVITY_READER_BUSY', `the activity reader has ${maxPending} queries waiting; try again`));
    worker ??= start();
    const id = nextId++;
    return new Promise<T>((resolve, reject) => {
      pending.set(id, { resolve: resolve as (v: unknown) => void, reject });
      // While a query is out the worker keeps the process alive; idle, it does not.
      worker!.ref();
      worker!.postMessage({ ...req, id });
    }).finally(() => {
      if (pending.size === 0) worker?.unref();
    });
  };

  return {
    list: (q) => ask<ListResult>({ op: 'list', arg: q }),
    get: (id) => ask<ActivityDetail | null>({ op: 'get', arg: id }),
    traffic: (q) => ask<TrafficResult>({ op: 'traffic', arg: q }),
    async close() {
      closed = true;
      const w = worker;
      worker = null;
      failAll(new ActivityReaderError('ACTIVITY_READER_CLOSED', 'the activity reader is closed'));
      if (w !== null) await w.terminate();
    },
  };
}
