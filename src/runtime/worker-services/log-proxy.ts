// The operational log for session worker threads: a worker logs through an ordinary pino logger whose
// destination gathers its JSON lines for an event-loop turn and posts them in one message; the main thread
// re-emits each line through its own logger at the same level with the same fields, so every [log] sink
// (stdout, file, the vsock stream) and the main logger's base fields apply unchanged. pino's own fields of
// the worker's line (level, time, pid, hostname) are dropped: the main logger writes its own (the time is
// the re-emission's, a turn later at most). A line that is not a JSON object at a known level is dropped and
// counted, never thrown.
import pino, { type Logger } from 'pino';
import { rpcEndpoint, type PortLike } from './rpc-port.ts';

export interface WorkerLoggerOptions {
  /** The level the main logger has (config [log] level). */
  level: string;
  /** Fields on every line of this worker (e.g. { worker: 1 }). */
  bindings?: Record<string, unknown>;
}

/**
 * Worker side: a pino logger whose lines go to the main thread (serveWorkerLogs), one message per turn.
 * `logger.flush()` posts what is gathered at once (before the worker ends).
 */
export function workerLogger(port: PortLike, opts: WorkerLoggerOptions): Logger {
  const rpc = rpcEndpoint(port, { service: 'log' });
  let lines = '';
  let scheduled = false;
  const flush = (): void => {
    scheduled = false;
    if (lines === '') return;
    const batch = lines;
    lines = '';
    rpc.notify('lines', batch);
  };
  const destination = {
    write(line: string): void {
      lines += line;
      if (!scheduled) {
        scheduled = true;
        setImmediate(flush);
      }
    },
    flush(cb?: (err?: Error) => void): void {
      flush();
      cb?.();
    },
  };
  return pino({ level: opts.level, base: opts.bindings ?? null }, destination);
}

/** pino's own fields of a line: the main logger writes its own. */
const OWN_FIELDS = ['level', 'time', 'pid', 'hostname'] as const;

export interface WorkerLogsServer {
  /** Lines dropped: not JSON, not an object, or at a level the main logger does not know. */
  readonly dropped: number;
  close(): void;
}

/** Main side: re-emits a worker's lines (workerLogger) through `logger`. */
export function serveWorkerLogs(port: PortLike, logger: Logger): WorkerLogsServer {
  // The fields arrive serialized already: `err` must not go through pino's error serializer a second time.
  const relay = logger.child({}, { serializers: { err: (v: unknown) => v } });
  const labels = logger.levels.labels;
  let dropped = 0;
  const emit = (line: string): void => {
    let rec: unknown;
    try {
      rec = JSON.parse(line);
    } catch {
      return void dropped++;
    }
    if (typeof rec !== 'object' || rec === null || Array.isArray(rec)) return void dropped++;
    const fields = rec as Record<string, unknown>;
    const level = fields.level;
    const label = typeof level === 'number' ? labels[level] : typeof level === 'string' && Object.hasOwn(logger.levels.values, level) ? level : undefined;
    if (label === undefined || label === 'silent') return void dropped++;
    for (const f of OWN_FIELDS) delete fields[f];
    const msg = fields.msg;
    const log = (relay as unknown as Record<string, (obj: object, msg?: string) => void>)[label]!;
    if (typeof msg !== 'string') return log.call(relay, fields);
    delete fields.msg;
    log.call(relay, fields, msg);
  };
  const rpc = rpcEndpoint(port, {
    service: 'log',
    notes: {
      lines(v) {
        if (typeof v !== 'string') return void dropped++;
        for (let start = 0; start < v.length; ) {
          const end = v.indexOf('\n', start);
          const stop = end < 0 ? v.length : end + 1;
          if (stop - start > 1) emit(v.slice(start, end < 0 ? stop : end));
          start = stop;
        }
      },
    },
  });
  return {
    get dropped() {
      return dropped;
    },
    close: () => rpc.close(),
  };
}
