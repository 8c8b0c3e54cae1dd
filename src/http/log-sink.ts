// Where transaction-log records leave the agent. Every sink writes one JSON line per record, the line pino
// would write (recordLine); they differ in where the line goes: stdout or a file in development, any byte stream (the vsock
// stream to the host bridge, which writes what it receives as JSON lines) in production, memory in tests.
// A sink never blocks and never grows without bound: the stream sink drops records while its stream is
// backed up and counts the drops.
import pino from 'pino';
import type { Writable } from 'node:stream';

export interface LogSink {
  write(record: object): void;
  /**
   * Several records at once (the transaction log hands over one batch per event-loop turn): sinks that
   * write to a file descriptor join the lines into one write.
   */
  writeBatch?(records: readonly object[]): void;
  /**
   * Lines already serialized (each exactly what recordLine gives for its record, '\n' included), one or
   * several concatenated: the transaction log builds its lines directly (trx-log.ts trxLine) instead of a
   * record object for JSON.stringify. Sinks without it get record objects.
   */
  writeLines?(lines: string): void;
  /** Flushes and releases the sink. */
  close(): Promise<void>;
}

/**
 * One record as the JSON line pino writes for `logger.info(record)` with `base: null`, no timestamp and
 * the level as a label: `{"level":"info",...record}`. Built with JSON.stringify directly: a record is a
 * plain object of strings, numbers, null and nested plain objects/arrays, and going through a logger per
 * record cost more than building the record.
 */
export function recordLine(record: object): string {
  const json = JSON.stringify(record);
  return json.length <= 2 ? '{"level":"info"}\n' : `{"level":"info",${json.slice(1)}\n`;
}

// Quotes, backslashes, control characters and surrogates (JSON.stringify escapes lone ones) take JSON.stringify.
// eslint-disable-next-line no-control-regex
const NEEDS_ESCAPE = /["\\\u0000-\u001f\ud800-\udfff]/;

/** `s` as JSON.stringify writes a string (the plain case without calling it). */
export function jsonString(s: string): string {
  return NEEDS_ESCAPE.test(s) ? JSON.stringify(s) : `"${s}"`;
}

/** The lines of `records`, concatenated. */
export function recordLines(records: readonly object[]): string {
  let out = '';
  for (const r of records) out += recordLine(r);
  return out;
}

/** A sink writing lines to a pino destination (a sonic-boom stream or anything with write(string)). */
export function destinationSink(dest: { write(line: string): unknown }, onClose: () => Promise<void>): LogSink {
  let closed = false;
  return {
    write(record) {
      if (!closed) dest.write(recordLine(record));
    },
    writeBatch(records) {
      if (!closed && records.length > 0) dest.write(recordLines(records));
    },
    writeLines(lines) {
      if (!closed && lines !== '') dest.write(lines);
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
  return destinationSink(dest, () => new Promise<void>((resolve) => dest.flush(() => resolve())));
}

/** JSON lines appended to `path` (development). */
export function createFileLogSink(path: string): LogSink {
  const dest = pino.destination({ dest: path, append: true, mkdir: true, sync: false });
  return destinationSink(
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
  writeBatch(records: readonly object[]): void;
  writeLines(lines: string): void;
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
  const dest = {
    write(line: string) {
      if (stream.destroyed || stream.writableEnded || stream.writableLength > max) {
        // A batch is dropped whole: count its records.
        for (let i = line.indexOf('\n'); i >= 0; i = line.indexOf('\n', i + 1)) dropped++;
        return;
      }
      stream.write(line);
    },
  };
  const sink = destinationSink(
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
    writeBatch: sink.writeBatch!,
    writeLines: sink.writeLines!,
    close: sink.close,
    get dropped() {
      return dropped;
    },
  };
}

export interface MemoryLogSink extends LogSink {
  writeBatch(records: readonly object[]): void;
  writeLines(lines: string): void;
  /** The records, parsed back from their JSON lines. */
  readonly records: Record<string, unknown>[];
}

/** Keeps the records in memory (tests, embedding). */
export function createMemoryLogSink(): MemoryLogSink {
  const records: Record<string, unknown>[] = [];
  const sink = destinationSink(
    {
      write: (lines: string) => {
        for (const line of lines.split('\n')) if (line !== '') records.push(JSON.parse(line) as Record<string, unknown>);
      },
    },
    async () => {},
  );
  return { write: sink.write, writeBatch: sink.writeBatch!, writeLines: sink.writeLines!, close: sink.close, records };
}
