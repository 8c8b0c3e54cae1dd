// The agent's log stream to the host (enclave.toml `log.sink = "vsock"`): JSON lines over a byte stream that
// reconnects. Inside an enclave stdout goes nowhere useful (the console exists only in debug mode), so
// operational logs and transaction records both travel over vsock to `src/host/log-sink-server.ts`.
//
// Bounded everywhere: lines wait in a queue of at most `maxQueuedBytes` while the stream is down or backed
// up; past it the OLDEST lines are dropped (recent logs matter most after an outage) and counted, and the
// first line after a loss is a warning record with the count. A line longer than `maxLineBytes` is replaced
// by a warning record (the host would refuse it). Writes never block and never throw.
// Lines queued in one tick leave together, joined into writes of up to WRITE_BYTES: the transaction log hands
// over a line per request, and one stream write (a syscall, the stream's own work) per line cost every request.
import type { Duplex } from 'node:stream';
import type { LogSink } from '../http/log-sink.ts';
import { RuntimeError } from './errors.ts';

export interface ReconnectingLogSinkOptions {
  /** Opens the stream (e.g. `() => connectStream({ kind: 'vsock', cid: 3, port: 5008 })`). */
  connect: () => Promise<Duplex>;
  /** Default 1 MiB. */
  maxQueuedBytes?: number;
  /** Default 64 KiB (newline included). */
  maxLineBytes?: number;
  /** Reconnect delay: starts here, doubles up to reconnectMaxMs. Default 100 ms … 5 000 ms. */
  reconnectInitialMs?: number;
  reconnectMaxMs?: number;
  /** Diagnostics about the stream itself (connect failures); never called per record. */
  onStatus?: (event: { connected: boolean; error?: string }) => void;
}

export interface ReconnectingLogSink extends LogSink {
  /** Writes one record serialized as a JSON line, `{"level":"info",...record}` like the other sinks. */
  write(record: object): void;
  /** Queues one already-serialized JSON line (a pino destination calls this). */
  writeLine(line: string): void;
  /** A pino destination over this sink: `pino(opts, sink.destination)`. */
  readonly destination: { write(line: string): void };
  readonly connected: boolean;
  /** Lines dropped (queue overflow, unserializable records, lines still queued at close). */
  readonly dropped: number;
  /** Bytes waiting in the queue. */
  readonly queuedBytes: number;
  /** Sends what is queued (up to `timeoutMs`, default 2 000 ms), ends the stream, stops reconnecting. */
  close(timeoutMs?: number): Promise<void>;
}

/** Lines are joined into writes of at most this many bytes (the vsock write limit; a longer line goes alone). */
const WRITE_BYTES = 32 * 1024;

export function createReconnectingLogSink(opts: ReconnectingLogSinkOptions): ReconnectingLogSink {
  const maxQueued = opts.maxQueuedBytes ?? 1024 * 1024;
  const maxLine = opts.maxLineBytes ?? 64 * 1024;
  const initialMs = opts.reconnectInitialMs ?? 100;
  const maxMs = Math.max(opts.reconnectMaxMs ?? 5_000, initialMs);
  if (!(maxQueued >= maxLine && maxLine >= 256)) {
    throw new RuntimeError('LOG_SINK_BAD_OPTIONS', `expected maxLineBytes ≥ 256 and maxQueuedBytes ≥ maxLineBytes, found ${maxLine} and ${maxQueued}`);
  }

  const queue: string[] = [];
  /** The UTF-8 size of each queued line (measured once). */
  const sizes: number[] = [];
  let head = 0;
  let pumpScheduled = false;
  let queuedBytes = 0;
  let dropped = 0;
  let unreported = 0;
  let stream: Duplex | undefined;
  let waitingDrain = false;
  let connecting = false;
  let closed = false;
  let delay = initialMs;
  let retryTimer: NodeJS.Timeout | undefined;
  let idleWaiters: (() => void)[] = [];

  const notify = (event: { connected: boolean; error?: string }): void => {
    try {
      opts.onStatus?.(event);
    } catch {
      // diagnostics must not break logging
    }
  };

  const byteLength = (s: string): number => Buffer.byteLength(s, 'utf8');

  const drop = (n: number): void => {
    dropped += n;
    unreported += n;
  };

  const enqueue = (line: string, size: number): void => {
    queue.push(line);
    sizes.push(size);
    queuedBytes += size;
    while (queuedBytes > maxQueued && head < queue.length) {
      queuedBytes -= sizes[head]!;
      queue[head++] = '';
      drop(1);
    }
    if (head > 1024 && head * 2 > queue.length) {
      queue.splice(0, head);
      sizes.splice(0, head);
      head = 0;
    }
  };

  const flushWaiters = (): void => {
    if (head < queue.length || waitingDrain) return;
    const w = idleWaiters;
    idleWaiters = [];
    for (const f of w) f();
  };

  const pump = (): void => {
    const s = stream;
    if (s === undefined || waitingDrain) return;
    if (unreported > 0) {
      const notice = JSON.stringify({ level: 'warn', msg: 'log records dropped (log stream down or backed up)', dropped: unreported }) + '\n';
      unreported = 0;
      if (!s.write(notice)) {
        waitingDrain = true;
        return;
      }
    }
    while (head < queue.length) {
      let chunk = queue[head]!;
      let bytes = sizes[head]!;
      queue[head++] = '';
      while (head < queue.length && bytes + sizes[head]! <= WRITE_BYTES) {
        chunk += queue[head]!;
        bytes += sizes[head]!;
        queue[head++] = '';
      }
      queuedBytes -= bytes;
      if (!s.write(chunk)) {
        waitingDrain = true;
        break;
      }
    }
    if (head === queue.length) {
      queue.length = 0;
      sizes.length = 0;
      head = 0;
    }
    flushWaiters();
  };

  /** One pump at the end of the tick for every line queued in it. */
  const schedulePump = (): void => {
    if (pumpScheduled) return;
    pumpScheduled = true;
    process.nextTick(() => {
      pumpScheduled = false;
      pump();
    });
  };

  const scheduleReconnect = (): void => {
    if (closed || retryTimer !== undefined) return;
    retryTimer = setTimeout(() => {
      retryTimer = undefined;
      void open();
    }, delay);
    retryTimer.unref();
    delay = Math.min(delay * 2, maxMs);
  };

  const open = async (): Promise<void> => {
    if (closed || connecting || stream !== undefined) return;
    connecting = true;
    let s: Duplex;
    try {
      s = await opts.connect();
    } catch (err) {
      connecting = false;
      notify({ connected: false, error: (err as { code?: string }).code ?? String(err) });
      scheduleReconnect();
      return;
    }
    connecting = false;
    if (closed) {
      s.destroy();
      return;
    }
    delay = initialMs;
    stream = s;
    waitingDrain = false;
    s.on('error', () => {});
    s.on('data', () => {}); // the host sends nothing; keep the stream flowing so EOF is seen
    s.on('drain', () => {
      waitingDrain = false;
      pump();
    });
    s.once('close', () => {
      if (stream !== s) return;
      stream = undefined;
      waitingDrain = false;
      notify({ connected: false, error: 'closed' });
      scheduleReconnect();
      flushWaiters();
    });
    notify({ connected: true });
    pump();
  };

  const writeLine = (line: string): void => {
    if (closed) {
      drop(1);
      return;
    }
    let l = line.endsWith('\n') ? line : line + '\n';
    let size = byteLength(l);
    if (size > maxLine) {
      l = JSON.stringify({ level: 'warn', msg: 'log record too large; replaced', bytes: size, limit: maxLine }) + '\n';
      size = byteLength(l);
    }
    enqueue(l, size);
    schedulePump();
  };

  const destination = { write: writeLine };

  void open();

  return {
    destination,
    writeLine,
    write(record) {
      let line: string;
      try {
        line = JSON.stringify({ level: 'info', ...record });
      } catch {
        drop(1);
        return;
      }
      writeLine(line);
    },
    get connected() {
      return stream !== undefined;
    },
    get dropped() {
      return dropped;
    },
    get queuedBytes() {
      return queuedBytes;
    },
    async close(timeoutMs = 2_000) {
      if (closed) return;
      closed = true;
      clearTimeout(retryTimer);
      const s = stream;
      if (s !== undefined) {
        let timer: NodeJS.Timeout | undefined;
        const flushed = new Promise<void>((resolve) => {
          idleWaiters.push(resolve);
          flushWaiters();
        });
        await Promise.race([flushed, new Promise<void>((resolve) => (timer = setTimeout(resolve, timeoutMs)))]);
        clearTimeout(timer);
        await new Promise<void>((resolve) => {
          const t = setTimeout(() => {
            s.destroy();
            resolve();
          }, timeoutMs);
          s.once('close', () => {
            clearTimeout(t);
            resolve();
          });
          s.end();
        });
      }
      const left = queue.length - head;
      if (left > 0) drop(left);
      queue.length = 0;
      sizes.length = 0;
      head = 0;
      queuedBytes = 0;
    },
  };
}
