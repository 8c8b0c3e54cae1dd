// Where the runtime's logs go, from enclave.toml [log]: the operational log (pino, JSON) and the
// transaction records (LogSink) share one destination per process, so their lines never interleave
// mid-line:
//   stdout  JSON lines on fd 1 (development; inside an enclave only the debug console sees them)
//   file    JSON lines appended to log.path
//   vsock   JSON lines over a reconnecting stream to the host's log sink (src/host/log-sink-server.ts),
//           vsock CID 3 (the parent instance) port log.vsock_port unless a target is given
import pino, { type Logger } from 'pino';
import type { Config } from '../config.ts';
import { destinationSink, type LogSink } from '../http/log-sink.ts';
import { connectStream, describeTarget, type StreamTarget } from '../transport/connect.ts';
import { NITRO_PARENT_CID } from '../transport/vsock.ts';
import { createReconnectingLogSink } from './stream-log-sink.ts';

export interface RuntimeLogs {
  /** The operational log. */
  readonly logger: Logger;
  /** Transaction records (HTTP mode). */
  readonly trxSink: LogSink;
  /** Where lines go, for the first log line: "stdout", a path, "vsock:2:5008". */
  readonly where: string;
  /** Flushes and releases the destination. */
  close(): Promise<void>;
  /** [log] sink = "vsock": lines dropped so far and bytes waiting (ops metrics); absent for stdout/file. */
  stream?: () => { dropped: number; queuedBytes: number };
}

export interface RuntimeLogsOptions {
  /** For log.sink = "vsock": connect here instead of vsock:2:<vsock_port> (development, tests). */
  target?: StreamTarget;
  /** Extra base fields of the operational log (default { name: 'enclave-agent' }). */
  base?: Record<string, unknown>;
}

/**
 * Transaction records on the shared destination, as the JSON lines pino writes (recordLine). On a file
 * descriptor (`batch`) a batch goes in one write: the trx stage hands over one batch per event-loop turn,
 * so the synchronous destination makes one write(2) per turn instead of one per request. Whole lines per
 * write, so they never interleave with the operational log's lines. The vsock sink takes one line per
 * call (it bounds each line and queues them itself, and joins the lines of a tick into one stream write).
 */
function trxSinkOver(dest: { write(line: string): unknown }, batch: boolean): LogSink {
  const sink = destinationSink(dest, async () => {});
  if (batch) return sink;
  // No writeBatch: the transaction log hands writeLines one line per call.
  return { write: sink.write, writeLines: sink.writeLines!, close: sink.close };
}

/** Where `sink = "vsock"` sends the log stream by default: the parent instance. */
export function defaultLogTarget(log: Config['log']): StreamTarget {
  return { kind: 'vsock', cid: NITRO_PARENT_CID, port: log.vsock_port };
}

export function createRuntimeLogs(log: Config['log'], opts: RuntimeLogsOptions = {}): RuntimeLogs {
  const loggerOptions: pino.LoggerOptions = { level: log.level, base: opts.base ?? { name: 'enclave-agent' } };
  if (log.sink === 'vsock') {
    const target: StreamTarget = opts.target ?? defaultLogTarget(log);
    let lastError: string | undefined;
    const sink = createReconnectingLogSink({
      connect: () => connectStream(target, { timeoutMs: 5_000 }),
      onStatus: (e) => {
        // The stream itself cannot report that it is down: say it once on stderr.
        if (!e.connected && e.error !== undefined && e.error !== lastError) process.stderr.write(`enclave-agent: log stream ${describeTarget(target)} down (${e.error}); buffering\n`);
        lastError = e.connected ? undefined : e.error;
      },
    });
    return {
      logger: pino(loggerOptions, sink.destination),
      trxSink: trxSinkOver(sink.destination, false),
      where: describeTarget(target),
      close: () => sink.close(),
      stream: () => ({ dropped: sink.dropped, queuedBytes: sink.queuedBytes }),
    };
  }
  // Synchronous writes: low volume, and nothing is lost when the process exits right after a line.
  const dest = log.sink === 'file' && log.path !== null ? pino.destination({ dest: log.path, append: true, mkdir: true, sync: true }) : pino.destination({ dest: 1, sync: true });
  return {
    logger: pino(loggerOptions, dest),
    trxSink: trxSinkOver(dest, true),
    where: log.sink === 'file' && log.path !== null ? log.path : 'stdout',
    close: () =>
      new Promise<void>((resolve) => {
        try {
          dest.flushSync();
        } catch {
          // nothing buffered, or the fd is gone
        }
        if (log.sink === 'file') dest.end();
        resolve();
      }),
  };
}
