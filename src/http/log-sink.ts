// Where transaction-log records leave the agent. Every sink serializes through pino (one JSON line per
// record); they differ in where the line goes: stdout or a file in development, any byte stream (the vsock
// stream to the host bridge, which writes what it receives as JSON lines) in production, memory in tests.
// A sink never blocks and never grows without bound: the stream sink drops records while its stream is
// backed up and counts the drops.
import pino from 'pino';
import type { Writable } from 'node:stream';

export interface LogSink {
  write(record: object): void;
  /** Flushes and releases the sink. */
  close(): Promise<void>;
}

const PINO_OPTIONS: pino.LoggerOptions = {
  base: null,
  timestamp: false,
  formatters: { level: (label) => ({ level: label }) },
};

function pinoSink(dest: pino.DestinationStream, onClose: () => Promise<void>): LogSink {
  const logger = pino(PINO_OPTIONS, dest);
  let closed = false;
  return {
    write(record) {
      if (!closed) logger.info(record);
    },
    async close() {
      if (closed) return;
      closed = true;
      await onClose();
    },
  };
}

/** JSON lines on stdout (development). */
export function createStdoutLogSink(): LogSink {
  const dest = pino.destination({ dest: 1, sync: false });
  return pinoSink(dest, () => new Promise<void>((resolve) => dest.flush(() => resolve())));
}

/** JSON lines appended to `path` (development). */
export function createFileLogSink(path: string): LogSink {
  const dest = pino.destination({ dest: path, append: true, mkdir: true, sync: false });
  return pinoSink(
    dest,
    () =>
      new Promise<void>((resolve) => {
        const done = (): void => resolve();
        dest.once('close', done);
        dest.once('error', done);
        dest.end();
      }),
  );
}

export interface StreamLogSink extends LogSink {
  /** Records dropped because the stream was backed up or gone. */
  readonly dropped: number;
}

/**
 * JSON lines written to any byte stream (the vsock stream to the host later). While more than
 * `maxQueuedBytes` (default 1 MiB) wait in the stream's buffer, new records are dropped and counted.
 * `close()` ends the stream after what is queued.
 */
export function createStreamLogSink(stream: Writable, opts: { maxQueuedBytes?: number } = {}): StreamLogSink {
  const max = opts.maxQueuedBytes ?? 1024 * 1024;
  let dropped = 0;
  stream.on('error', () => {
    // A dead log stream must not take the agent down; records are dropped from now on.
  });
  const dest: pino.DestinationStream = {
    write(line: string) {
      if (stream.destroyed || stream.writableEnded || stream.writableLength > max) {
        dropped++;
        return;
      }
      stream.write(line);
    },
  };
  const sink = pinoSink(
    dest,
    () =>
      new Promise<void>((resolve) => {
        if (stream.destroyed || stream.writableFinished) return resolve();
        stream.once('finish', () => resolve());
        stream.once('close', () => resolve());
        stream.end();
      }),
  );
  return {
    write: sink.write,
    close: sink.close,
    get dropped() {
      return dropped;
    },
  };
}

export interface MemoryLogSink extends LogSink {
  /** The records, parsed back from their JSON lines. */
  readonly records: Record<string, unknown>[];
}

/** Keeps the records in memory (tests, embedding). */
export function createMemoryLogSink(): MemoryLogSink {
  const records: Record<string, unknown>[] = [];
  const sink = pinoSink({ write: (line: string) => void records.push(JSON.parse(line) as Record<string, unknown>) }, async () => {});
  return { write: sink.write, close: sink.close, records };
}
