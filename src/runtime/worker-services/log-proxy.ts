// The operational log for session worker threads: a worker logs through an ordinary pino logger whose
// destination gathers its JSON lines for an event-loop turn and posts them in one message; the main thread
// re-emits each line through its own logger at the same level with the same fields, so every [log] sink
// (stdout, file, the vsock stream) and the main logger's base fields apply unchanged. pino's own fields of
// the worker's line (level, time, pid, hostname) are dropped: the main logger writes its own (the time is
// the re-emission's, a turn later at most). A line that is not a JSON object at a known level is dropped and
// counted, never thrown.
// Bounded like the main thread's own sinks (in-flight.ts): while 1 MiB of this worker's lines has not been
// re-emitted yet (the main thread is stalled or slower), new lines are dropped and counted; the count crosses
// with the next batch (or at flush) and the main thread logs it as one warning per interval.
import pino, { type Logger } from 'pino';
import { InFlightReceiver, InFlightSender, MAX_IN_FLIGHT_BYTES } from './in-flight.ts';
import { rpcEndpoint, type PortLike } from './rpc-port.ts';

export interface WorkerLoggerOptions {
  /** The level the main logger has (config [log] level). */
  level: string;
  /** Fields on every line of this worker (e.g. { worker: 1 }). */
  bindings?: Record<string, unknown>;
  /** Characters of lines not yet re-emitted by the main thread past which lines are dropped (default 1 MiB). */
  maxInFlight?: number;
}

/** The worker's pino logger, and what its bound did. */
export type WorkerLogger = Logger & {
  /** Lines dropped over the in-flight bound (the main thread did not keep up). */
  readonly linesDropped: () => number;
  /** Characters of lines written and not yet re-emitted by the main thread. */
  readonly linesOutstanding: () => number;
};

/**
 * Worker side: a pino logger whose lines go to the main thread (serveWorkerLogs), one message per turn.
 * `logger.flush()` posts what is gathered at once (before the worker ends).
 */
export function workerLogger(port: PortLike, opts: WorkerLoggerOptions): WorkerLogger {
  const rpc = rpcEndpoint(port, { service: 'log' });
  const inFlight = new InFlightSender(rpc.notify, opts.maxInFlight ?? MAX_IN_FLIGHT_BYTES);
  let lines = '';
  let scheduled = false;
  const flush = (): void => {
    scheduled = false;
    inFlight.reportDrops();
    if (lines === '') return;
    const batch = lines;
    lines = '';
    rpc.notify('lines', batch);
  };
  const destination = {
    write(line: string): void {
      if (!inFlight.take(line.length)) return;
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
  const logger = pino({ level: opts.level, base: opts.bindings ?? null }, destination) as WorkerLogger;
  Object.defineProperties(logger, {
    linesDropped: { value: () => inFlight.dropped },
    linesOutstanding: { value: () => inFlight.outstanding },
  });
  return logger;
}

/** pino's own fields of a line: the main logger writes its own. */
const OWN_FIELDS = ['level', 'time', 'pid', 'hostname'] as const;

export interface WorkerLogsServer {
  /** Lines dropped: not JSON, not an object, or at a level the main logger does not know. */
  readonly dropped: number;
  /** Lines the worker reported dropped over its in-flight bound. */
  readonly droppedInWorker: number;
  close(): void;
}

export const LOG_DROPPED_MESSAGE = 'log lines dropped in a session worker: the main thread did not keep up';

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
  const inFlight = new InFlightReceiver(logger, LOG_DROPPED_MESSAGE);
  const rpc = rpcEndpoint(port, {
    service: 'log',
    onClose: inFlight.notices.flush,
    notes: {
      ...inFlight.notes,
      lines(v) {
        if (typeof v !== 'string') return void dropped++;
        try {
          for (let start = 0; start < v.length; ) {
            const end = v.indexOf('\n', start);
            const stop = end < 0 ? v.length : end + 1;
            if (stop - start > 1) emit(v.slice(start, end < 0 ? stop : end));
            start = stop;
          }
        } finally {
          inFlight.release(v.length);
        }
      },
    },
  });
  return {
    get dropped() {
      return dropped;
    },
    get droppedInWorker() {
      return inFlight.notices.total;
    },
    close: () => rpc.close(),
  };
}
