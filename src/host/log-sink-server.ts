/**
 * The host side of the agent's log stream (runs on the parent instance): accepts the agent's connection(s)
 * over vsock (production), a Unix socket or TCP (development), and writes each JSON line it receives to an
 * output (stdout or a file). The enclave is not trusted to be well-behaved here: every line must parse as a
 * JSON object or it is dropped and counted, a line longer than `maxLineBytes` is dropped (up to its
 * newline) without being buffered, connections are capped (silent ones give way: see onConnection), and a
 * slow output pauses the sockets instead of buffering without bound. Every enclave on the instance reaches the
 * parent's vsock port, and the lines feed the activity store: over vsock only the enclave whose CID is given is
 * read; any other peer, or one whose CID cannot be read, is closed unanswered and counted. Without that CID it
 * does not start.
 */
import type { Duplex, Writable } from 'node:stream';
import pino, { type Logger } from 'pino';
import { AgentError } from '../errors.ts';
import { RateLimitedLog } from '../util/rate-limited-log.ts';
import { opensHttpRequest } from './http-request-start.ts';
import { listenTcp } from '../transport/tcp.ts';
import type { ConnectionInfo, Listener, ListenOptions } from '../transport/types.ts';
import { listenUnix } from '../transport/unix.ts';
import { ForeignPeers, servedCid } from './vsock-peer.ts';

export type LogSinkServerErrorCode = 'LOG_SINK_SERVER_BAD_OPTIONS';

export class LogSinkServerError extends AgentError {
  declare readonly code: LogSinkServerErrorCode;
  constructor(code: LogSinkServerErrorCode, message: string, options?: { cause?: unknown }) {
    super(code, message, options);
  }
}

export type LogSinkListen =
  | { kind: 'tcp'; host?: string; port: number }
  | { kind: 'unix'; path: string; mode?: number }
  /**
   * Production: the host listens on this vsock port (on its own CID `cid`, any by default) for the connection
   * of the enclave `enclaveCid`, the only peer read.
   */
  | { kind: 'vsock'; port: number; cid?: number; enclaveCid: number };

export interface LogSinkServerOptions {
  listen: LogSinkListen;
  /** Where the JSON lines go (process.stdout, a file stream). Not ended by close(). */
  output: Writable;
  /** Longest accepted line, newline excluded. Default 64 KiB. */
  maxLineBytes?: number;
  /** Concurrent agent connections (the agent keeps one; reconnects replace it). Default 16. */
  maxConnections?: number;
  /**
   * At the connection cap, a connection open this long without one complete line is closed to make room.
   * Default 5 000 ms: the agent writes what it has queued as soon as it connects.
   */
  silentAfterMs?: number;
  /** Diagnostics (dropped lines, connections) — never the lines themselves. */
  logger?: Logger;
  /**
   * Sees every accepted line first (the activity store: `logs --db`); returning true keeps the line out of
   * `output`. Must not block: it queues.
   */
  onLine?: (text: string, value: Record<string, unknown>) => boolean;
  /** Opens the listener for `listen` (default: the tcp, unix or vsock listener). Tests stand in one that reports vsock peers. */
  listenWith?: (where: LogSinkListen, opts: ListenOptions) => Promise<Listener>;
}

export interface LogSinkServerStats {
  /** Lines accepted: written to the output, or taken by onLine. */
  lines: number;
  /** Lines dropped because they were not a JSON object. */
  invalid: number;
  /** Lines dropped because they were longer than maxLineBytes. */
  oversized: number;
  /** Connections accepted so far / refused over maxConnections. */
  connections: number;
  refused: number;
  /** vsock connections closed unread because the peer is not the enclave's CID (or its CID could not be read). */
  foreignPeers: number;
  /** Connections closed unread because they opened with an HTTP request (a web page's, to the TCP port). */
  webRequests: number;
  /** Connections closed at the cap to make room: open silentAfterMs without one complete line. */
  silent: number;
}

export interface LogSinkServer {
  /** The listener's address ("127.0.0.1:5008", "/run/logs.sock", "vsock:*:5008"). */
  readonly address: string;
  /** TCP/vsock: the bound port. */
  readonly port: number | undefined;
  readonly stats: Readonly<LogSinkServerStats>;
  /** Stops listening and closes the connections (a partial last line is dropped). */
  close(): Promise<void>;
}

const NEWLINE = 0x0a;
/** The only peer CID read over vsock; refuses options that would leave it unknown (every enclave read). */
function enclaveCidOf(where: LogSinkListen): number | undefined {
  if (where.kind !== 'vsock') return undefined;
  return servedCid((where as { enclaveCid?: unknown }).enclaveCid, (reason) => new LogSinkServerError('LOG_SINK_SERVER_BAD_OPTIONS', `over vsock the log sink reads only the enclave's CID, ${reason}`));
}

async function listenOn(l: LogSinkListen, opts: ListenOptions): Promise<Listener> {
  if (l.kind === 'tcp') return listenTcp({ host: l.host ?? '127.0.0.1', port: l.port }, opts);
  if (l.kind === 'unix') return listenUnix({ path: l.path, ...(l.mode === undefined ? {} : { mode: l.mode }) }, opts);
  // Loaded only here: it wraps the native addon, which development machines may lack.
  const { listenVsock } = await import('../transport/vsock.ts');
  return listenVsock({ port: l.port, ...(l.cid === undefined ? {} : { cid: l.cid }) }, opts);
}

/**
 * Splits a byte stream into lines, refusing to buffer more than `max` bytes of one line. A line that spans
 * chunks is copied into one buffer as it arrives (grown by doubling, up to `max`): keeping each chunk instead
 * let a peer that trickles a byte per read make the splitter hold a Buffer object per byte (measured: 65,000
 * one-byte chunks on each of 16 connections kept 200 MB of heap for 1 MB of line).
 */
export class LineSplitter {
  #buf: Buffer | null = null;
  #size = 0;
  #discarding = false;

  constructor(
    private readonly max: number,
    private readonly onLine: (line: Buffer) => void,
    private readonly onOversized: () => void,
  ) {}

  #append(piece: Buffer): void {
    const need = this.#size + piece.length;
    if (this.#buf === null || need > this.#buf.length) {
      const grown = Buffer.allocUnsafe(Math.min(this.max, Math.max(need, 2 * (this.#buf?.length ?? 0), 4096)));
      this.#buf?.copy(grown, 0, 0, this.#size);
      this.#buf = grown;
    }
    piece.copy(this.#buf, this.#size);
    this.#size = need;
  }

  push(chunk: Buffer): void {
    let start = 0;
    for (;;) {
      const nl = chunk.indexOf(NEWLINE, start);
      const end = nl < 0 ? chunk.length : nl;
      const piece = chunk.subarray(start, end);
      if (!this.#discarding) {
        if (this.#size + piece.length > this.max) {
          this.#discarding = true;
          this.#buf = null;
          this.#size = 0;
          this.onOversized();
        } else if (nl >= 0 && this.#size === 0) {
          // The whole line is in this chunk: handed on as a view, no copy.
          if (piece.length > 0) this.onLine(piece);
        } else if (piece.length > 0) {
          this.#append(piece);
        }
      }
      if (nl < 0) return;
      if (!this.#discarding && this.#size > 0) {
        // The buffer goes with the line (the consumer may keep it); the next line starts a new one.
        const line = this.#buf!.subarray(0, this.#size);
        this.#buf = null;
        this.#size = 0;
        this.onLine(line);
      }
      this.#discarding = false;
      start = nl + 1;
    }
  }
}

const decoder = new TextDecoder('utf-8', { fatal: false });
const C1 = /[\u0080-\u009f]/;
const C1_ALL = /[\u0080-\u009f]/g;

/**
 * The line as text and as the object it parses to, when it is one JSON object (trailing \r tolerated), else null.
 * A CR inside can only be whitespace between tokens (JSON strings hold none raw): it becomes a space, so the
 * agent cannot send the carriage back over what a terminal showing the output has printed of the line. C1
 * controls are legal raw in JSON strings (JSON.stringify and pino leave them so) and reach them from a client's
 * header bytes (Node reads 0x9b in a User-Agent as U+009B); a terminal may act on them (U+009B is CSI, U+009D
 * OSC): they become \u escapes once the line parsed (in valid JSON each is a whole character of a string), the same
 * JSON value.
 */
export function parseJsonLine(line: Buffer): { text: string; value: Record<string, unknown> } | null {
  let text = decoder.decode(line);
  if (text.endsWith('\r')) text = text.slice(0, -1);
  if (text.includes('\r')) text = text.replaceAll('\r', ' ');
  if (text.length === 0 || text.charCodeAt(0) !== 0x7b /* { */) return null;
  try {
    const value: unknown = JSON.parse(text);
    if (typeof value !== 'object' || value === null || Array.isArray(value)) return null;
    if (C1.test(text)) text = text.replace(C1_ALL, (c) => `\\u00${c.charCodeAt(0).toString(16)}`);
    return { text, value: value as Record<string, unknown> };
  } catch {
    return null;
  }
}

/** The line as text when it is one JSON object (trailing \r tolerated), else null. */
export function validJsonLine(line: Buffer): string | null {
  return parseJsonLine(line)?.text ?? null;
}

export async function startLogSinkServer(opts: LogSinkServerOptions): Promise<LogSinkServer> {
  const maxLine = opts.maxLineBytes ?? 64 * 1024;
  const maxConnections = opts.maxConnections ?? 16;
  const silentAfterMs = opts.silentAfterMs ?? 5_000;
  if (!Number.isInteger(maxLine) || maxLine < 2 || maxLine > 64 * 1024 * 1024) {
    throw new LogSinkServerError('LOG_SINK_SERVER_BAD_OPTIONS', `maxLineBytes: expected an integer in 2..67108864, found ${String(maxLine)}`);
  }
  if (!Number.isInteger(maxConnections) || maxConnections < 1) {
    throw new LogSinkServerError('LOG_SINK_SERVER_BAD_OPTIONS', `maxConnections: expected a positive integer, found ${String(maxConnections)}`);
  }
  if (!Number.isInteger(silentAfterMs) || silentAfterMs < 0) {
    throw new LogSinkServerError('LOG_SINK_SERVER_BAD_OPTIONS', `silentAfterMs: expected a non-negative integer, found ${String(silentAfterMs)}`);
  }
  const enclaveCid = enclaveCidOf(opts.listen);
  const logger = opts.logger ?? pino({ enabled: false });
  const output = opts.output;
  const stats: LogSinkServerStats = { lines: 0, invalid: 0, oversized: 0, connections: 0, refused: 0, foreignPeers: 0, webRequests: 0, silent: 0 };
  const webRequests = new RateLimitedLog(logger, 'log connections closed unread: they opened with an HTTP request (a web page?), not a log line');
  const foreign = new ForeignPeers(enclaveCid, logger, "log connection from a CID other than the enclave's; closed unread");
  const silentClosed = new RateLimitedLog(logger, 'log connections closed to make room: open without one complete line (not the agent?)');
  // A peer writing garbage as fast as it can must not become one warning per line: counted, one line per interval.
  const droppedLines = new RateLimitedLog(logger, 'log lines dropped: not a JSON object, or too long');
  /** Open connections, oldest first, each with when it opened; `opened` becomes null at its first newline. */
  const open = new Map<Duplex, { opened: number | null }>();
  let outputBlocked = false;

  output.on('error', (err: NodeJS.ErrnoException) => logger.error({ err: err.code ?? err.message }, 'log output failed'));
  output.on('drain', () => {
    outputBlocked = false;
    for (const s of open.keys()) s.resume();
  });

  /** Closes the oldest connection silent for silentAfterMs, if any: true when one was closed. */
  const closeSilent = (): boolean => {
    const now = performance.now();
    for (const [s, { opened }] of open) {
      if (opened === null || now - opened < silentAfterMs) continue;
      open.delete(s); // its slot is free now, not when 'close' comes
      stats.silent++;
      silentClosed.note('silent');
      s.destroy();
      return true;
    }
    return false;
  };

  const onConnection = (stream: Duplex, info: ConnectionInfo): void => {
    // Before the connection cap: another enclave must neither inject lines nor take the agent's slots.
    if (foreign.refuse(stream, info)) {
      stats.foreignPeers = foreign.count;
      return;
    }
    // At the cap, the oldest connection that has been silent silentAfterMs gives way: a browser's preconnects or
    // a stray local process could otherwise hold every slot, sending nothing, and keep the agent out. One that
    // has sent a line (the agent) is never closed for a newcomer; with none to close, the newcomer is refused
    // (the agent retries within seconds, by when the squatters are old enough to give way).
    if (open.size >= maxConnections && !closeSilent()) {
      stats.refused++;
      logger.warn({ remote: info.remote, limit: maxConnections }, 'log connection refused: too many');
      stream.destroy();
      return;
    }
    stats.connections++;
    const state = { opened: performance.now() as number | null };
    open.set(stream, state);
    logger.info({ remote: info.remote }, 'agent log stream connected');
    const splitter = new LineSplitter(
      maxLine,
      (line) => {
        const parsed = parseJsonLine(line);
        if (parsed === null) {
          stats.invalid++;
          droppedLines.note('not-json');
          return;
        }
        stats.lines++;
        const text = parsed.text;
        if (opts.onLine?.(text, parsed.value) === true) return;
        if (!output.write(text + '\n') && !outputBlocked) {
          outputBlocked = true;
          for (const s of open.keys()) s.pause();
        }
      },
      () => {
        stats.oversized++;
        droppedLines.note('too-long');
      },
    );
    // The connection's first bytes, held until they tell an HTTP request (closed unread) from the agent's lines.
    let opening: Buffer | null = Buffer.alloc(0);
    stream.on('error', () => {});
    stream.on('data', (data: Buffer) => {
      if (state.opened !== null && data.includes(NEWLINE)) state.opened = null;
      let chunk = data;
      if (opening !== null) {
        const head = opening.length === 0 ? chunk : Buffer.concat([opening, chunk]);
        const http = opensHttpRequest(head);
        if (http === null) {
          opening = head;
          return;
        }
        opening = null;
        if (http) {
          stats.webRequests++;
          webRequests.note('http-request');
          stream.destroy();
          return;
        }
        chunk = head;
      }
      splitter.push(chunk);
      if (outputBlocked) stream.pause();
    });
    stream.on('end', () => stream.end());
    stream.once('close', () => {
      open.delete(stream);
      logger.info({ remote: info.remote }, 'agent log stream closed');
    });
  };

  const listener = await (opts.listenWith ?? listenOn)(opts.listen, { onConnection });

  return {
    address: listener.address,
    port: listener.port,
    stats,
    async close() {
      await listener.close();
      for (const s of [...open.keys()]) s.destroy();
      webRequests.flush();
      silentClosed.flush();
      droppedLines.flush();
    },
  };
}
