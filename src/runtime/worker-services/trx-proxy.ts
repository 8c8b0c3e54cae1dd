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
// Nothing is lost on the way: close() posts what is gathered and resolves once the main thread has handed
// it to the sink (the answer to a call that follows the lines on the same ordered port). It does not close
// the main sink, which the main thread and the other workers share.
import { recordLine, recordLines, type LogSink } from '../../http/log-sink.ts';
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
  /** Records that could not cross (not cloneable; records mode only). */
  readonly dropped: number;
}

/** Worker side: a LogSink posting to the main thread's sink (serveLogSink), one message per event-loop turn. */
export function remoteLogSink(port: PortLike, caps: LogSinkCapabilities = { lines: true }): RemoteLogSink {
  const rpc = rpcEndpoint(port, { service: 'trx' });
  let lines = '';
  let records: object[] = [];
  let scheduled = false;
  let closed = false;
  let dropped = 0;

  const flush = (): void => {
    scheduled = false;
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
      for (const r of batch) if (!rpc.notify('records', [r])) dropped++;
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
      if (caps.lines) lines += recordLine(record);
      else records.push(record);
      soon();
    },
    writeBatch(batch) {
      if (closed || batch.length === 0) return;
      if (caps.lines) lines += recordLines(batch);
      else for (const r of batch) records.push(r);
      soon();
    },
    async close() {
      if (closed) return;
      closed = true;
      flush();
      await rpc.call('sync').catch(() => {}); // a closed port: the main thread is gone, nothing to wait for
      rpc.close();
    },
    get dropped() {
      return dropped;
    },
  };
  if (caps.lines) {
    sink.writeLines = (text: string): void => {
      if (closed || text === '') return;
      lines += text;
      soon();
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

/** Main side: writes what a worker's remoteLogSink posts to `sink`. Returns a handle that closes the port. */
export function serveLogSink(port: PortLike, sink: LogSink): { close(): void } {
  const writeLines = sink.writeLines?.bind(sink);
  const batched = sink.writeBatch !== undefined;
  const rpc = rpcEndpoint(port, {
    service: 'trx',
    methods: { sync: () => true },
    notes: {
      lines(v) {
        if (typeof v !== 'string') throw new TypeError('trx lines: expected a string');
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
      },
      records(v) {
        if (!Array.isArray(v) || !v.every((r) => typeof r === 'object' && r !== null)) throw new TypeError('trx records: expected an array of objects');
        if (sink.writeBatch !== undefined) sink.writeBatch(v as object[]);
        else for (const r of v as object[]) sink.write(r);
      },
    },
  });
  return { close: () => rpc.close() };
}
