// The transaction log for session worker threads: the main thread keeps the one LogSink (stdout, file, the
// vsock stream); a worker's HTTP pipeline writes to remoteLogSink, which gathers what it is handed during an
// event-loop turn and posts it in ONE message the next turn; serveLogSink writes it to the real sink.
//
// Lines or records, decided once by the main sink's capabilities (logSinkCapabilities, given to the worker
// with its port; default: lines): when the main sink has writeLines (every sink the runtime builds), the
// proxy has writeLines too, the worker builds the lines (trx-log.ts trxLine) and one string of lines
// crosses; the main thread parses nothing. When it has not, the proxy has no writeLines either, and the
// record objects cross (structured clone) to the sink's writeBatch or write. (Lines sent to a sink without
// writeLines — the worker was not given its capabilities — are parsed back into records: slower, not lost.)
// A main sink with writeLines but no writeBatch takes one line per call (runtime/logs.ts: the vsock stream
// bounds and queues lines itself): the batch is split.
//
// Bounded like the main thread's own sinks (in-flight.ts): while 1 MiB of lines (or 4 096 records) written
// here has not been handed to the main sink yet — the main thread is stalled or slower than this worker —
// new records are dropped and counted; the count crosses with the next batch (or at close) and the main
// thread logs it as a warning (one line per interval). Otherwise nothing is lost on the way: close() posts
// what is gathered and resolves once the main thread has handed it to the sink (the answer to a call that
// follows the lines on the same ordered port). It does not close the main sink, which the main thread and
// the other workers share.
import type { Logger } from 'pino';
import { recordLine, recordLines, type LogSink } from '../../http/log-sink.ts';
import { InFlightReceiver, InFlightSender, lineCount, MAX_IN_FLIGHT_BYTES, MAX_IN_FLIGHT_RECORDS } from './in-flight.ts';
import { rpcEndpoint, type PortLike } from './rpc-port.ts';

export interface LogSinkCapabilities {
  /** The main sink takes serialized lines (LogSink.writeLines). */
  lines: boolean;
}

/** Main side: what to give remoteLogSink for `sink`. */
export function logSinkCapabilities(sink: LogSink): LogSinkCapabilities {
  return { lines: sink.writeLines !== undefined };
}

export interface RemoteLogSink extends LogSink {
  writeBatch(records: readonly object[]): void;
  /** Records dropped: over the in-flight bound (the main thread did not keep up), or not cloneable (records mode). */
  readonly dropped: number;
  /** Written here and not handed to the main sink yet: characters of lines, or records (records mode). */
  readonly outstanding: number;
}

export interface RemoteLogSinkOptions {
  /** The in-flight bound: characters of lines (default MAX_IN_FLIGHT_BYTES), records in records mode (MAX_IN_FLIGHT_RECORDS). */
  maxInFlight?: number;
}

/** Worker side: a LogSink posting to the main thread's sink (serveLogSink), one message per event-loop turn. */
export function remoteLogSink(port: PortLike, caps: LogSinkCapabilities = { lines: true }, opts: RemoteLogSinkOptions = {}): RemoteLogSink {
  const rpc = rpcEndpoint(port, { service: 'trx' });
  const inFlight = new InFlightSender(rpc.notify, opts.maxInFlight ?? (caps.lines ? MAX_IN_FLIGHT_BYTES : MAX_IN_FLIGHT_RECORDS));
  let lines = '';
  let records: object[] = [];
  let scheduled = false;
  let closed = false;
  /** Records that could not be cloned (records mode): dropped, beside those over the bound. */
  let uncloneable = 0;

  /** Gathers `text` (whole lines, `count` of them) if it fits in flight. */
  const take = (text: string, count: () => number): void => {
    if (!inFlight.take(text.length, count)) return;
    lines += text;
    soon();
  };
  const takeRecord = (record: object): void => {
    if (!inFlight.take(1)) return;
    records.push(record);
    soon();
  };

  const flush = (): void => {
    scheduled = false;
    // The count rides with a batch (there is room again) or goes at close.
    if (lines !== '' || records.length > 0 || closed) inFlight.reportDrops();
    if (lines !== '') {
      const batch = lines;
      lines = '';
      rpc.notify('lines', batch);
    }
    if (records.length > 0) {
      const batch = records;
      records = [];
      if (rpc.notify('records', batch) || rpc.closed) return;
      // One record could not be cloned: send the others one by one.
      for (const r of batch) {
        if (rpc.notify('records', [r])) continue;
        inFlight.release(1);
        uncloneable++;
      }
    }
  };
  const soon = (): void => {
    if (scheduled) return;
    scheduled = true;
    setImmediate(flush);
  };

  const sink: RemoteLogSink = {
    write(record) {
      if (closed) return;
      if (caps.lines) take(recordLine(record), () => 1);
      else takeRecord(record);
    },
    writeBatch(batch) {
      if (closed || batch.length === 0) return;
      if (caps.lines) take(recordLines(batch), () => batch.length);
      else for (const r of batch) takeRecord(r);
    },
    async close() {
      if (closed) return;
      closed = true;
      flush();
      await rpc.call('sync').catch(() => {}); // a closed port: the main thread is gone, nothing to wait for
      rpc.close();
    },
    get dropped() {
      return inFlight.dropped + uncloneable;
    },
    get outstanding() {
      return inFlight.outstanding;
    },
  };
  if (caps.lines) {
    sink.writeLines = (text: string): void => {
      if (closed || text === '') return;
      take(text, () => lineCount(text));
    };
  }
  return sink;
}

/** A line back into its record (recordLine adds the level: the sink adds it again). */
function recordOf(line: string): object | undefined {
  try {
    const r = JSON.parse(line) as unknown;
    if (typeof r !== 'object' || r === null) return undefined;
    delete (r as Record<string, unknown>).level;
    return r;
  } catch {
    return undefined;
  }
}

export interface LogSinkServer {
  /** Records the worker reported dropped (over its in-flight bound). */
  readonly dropped: number;
  close(): void;
}

export const TRX_DROPPED_MESSAGE = 'transaction records dropped in a session worker: the main thread did not keep up';

/**
 * Main side: writes what a worker's remoteLogSink posts to `sink`; the drops it reports are logged on
 * `logger` (one warning per interval). Returns a handle that closes the port.
 */
export function serveLogSink(port: PortLike, sink: LogSink, logger?: Logger): LogSinkServer {
  const writeLines = sink.writeLines?.bind(sink);
  const batched = sink.writeBatch !== undefined;
  const inFlight = new InFlightReceiver(logger, TRX_DROPPED_MESSAGE);
  const writeText = (v: string): void => {
    if (writeLines !== undefined && batched) return writeLines(v);
    for (let start = 0; start < v.length; ) {
      const end = v.indexOf('\n', start);
      const stop = end < 0 ? v.length : end + 1;
      if (writeLines !== undefined) writeLines(v.slice(start, stop));
      else if (stop - start > 1) {
        const record = recordOf(v.slice(start, end < 0 ? stop : end));
        if (record !== undefined) sink.write(record);
      }
      start = stop;
    }
  };
  const rpc = rpcEndpoint(port, {
    service: 'trx',
    methods: { sync: () => true },
    onClose: inFlight.notices.flush,
    notes: {
      ...inFlight.notes,
      lines(v) {
        if (typeof v !== 'string') throw new TypeError('trx lines: expected a string');
        try {
          writeText(v);
        } finally {
          inFlight.release(v.length);
        }
      },
      records(v) {
        if (!Array.isArray(v)) throw new TypeError('trx records: expected an array of objects');
        try {
          if (!v.every((r) => typeof r === 'object' && r !== null)) throw new TypeError('trx records: expected an array of objects');
          if (sink.writeBatch !== undefined) sink.writeBatch(v as object[]);
          else for (const r of v as object[]) sink.write(r);
        } finally {
          inFlight.release(v.length);
        }
      },
    },
  });
  return {
    get dropped() {
      return inFlight.notices.total;
    },
    close: () => rpc.close(),
  };
}
