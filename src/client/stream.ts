// Raw byte streams to the app (OpenStream) and HTTP upgrades on top of them (WebSocket and friends), as a Web
// ReadableStream / WritableStream pair. Browser-safe (node.ts wraps them into a Node Duplex).
//
// - readable: the app's bytes (StreamData) until its EOF (the agent's StreamClose) → the readable closes.
//   An agent Error or a dead session errors it (CLIENT_REMOTE_ERROR / CLIENT_RETRYABLE; streams are not
//   reconnected). Cancelling the readable tears the stream down (StreamClose{Both}). Unread bytes are bounded as
//   a fetch body's are (buffer-cap.ts): past maxBufferedBytes the stream fails CLIENT_BUFFER_FULL, or, with
//   onBufferFull 'pause', the connection stops being read from half of it until a read takes it below half.
// - writable: each chunk becomes StreamData (split to fit frames; waits while the WebSocket is congested).
//   close() = closeWrite() = StreamClose{Write} (the app sees EOF, its answer keeps coming); abort() = close().
// - The stream's slot (the session's in-flight window) is released when both directions are over, with a
//   StreamClose{Both} so the agent releases it at the same moment.
// upgrade(): sends the request head (Host added, no Connection: close) as the OpenStream payload, reads the
// response head (≤ 64 KiB), requires 101 (else CLIENT_UPGRADE_FAILED with the status, stream torn down) and
// keeps any bytes after the head as the first bytes of `readable`.
import { bufferFull, byteQueue, DEFAULT_MAX_BUFFERED_BYTES, onBufferFullOption, overCap, ReadPause, type OnBufferFull } from './buffer-cap.ts';
import { utf8 } from '../util/bytes.ts';
import { abortError, ClientError } from './errors.ts';
import { Deadline } from './fetch.ts';
import { encodeRequestHead, HeadParser, type HeaderList, type ResponseHead } from './http-codec.ts';
import type { SessionManager } from './reconnect.ts';
import { headerList, requestTarget, type HeadersLike } from './request.ts';
import { chunkBudget, type Session, type SessionStream } from './session.ts';

export interface ClientStream {
  /** The stream id on this session. */
  readonly id: number;
  readonly readable: ReadableStream<Uint8Array>;
  readonly writable: WritableStream<Uint8Array>;
  /** StreamClose{Write}: the app reads EOF; `readable` keeps delivering its answer. */
  closeWrite(): void;
  /** StreamClose{Both}: tears the stream down now (both directions). */
  close(): void;
}

export interface UpgradedStream extends ClientStream {
  /** 101. */
  readonly status: number;
  readonly statusText: string;
  readonly headers: Headers;
  /** The raw response head, as parsed. */
  readonly head: ResponseHead;
}

export interface OpenStreamOptions {
  signal?: AbortSignal | null;
  /** For opening only (the stream itself has no deadline). */
  timeoutMs?: number;
  /** Unread bytes the stream may hold before it is closed with CLIENT_BUFFER_FULL (default: the client's, 64 MiB). */
  maxBufferedBytes?: number;
  /**
   * 'pause': from half of maxBufferedBytes unread the connection stops being read until a read takes the stream
   * below half (every request and stream of the session waits meanwhile), as ConnectOptions.onBufferFull does for
   * fetch. Default: the client's onBufferFull ('error').
   */
  onBufferFull?: OnBufferFull;
}

export interface UpgradeOptions extends OpenStreamOptions {
  /** Default GET. */
  method?: string;
  /** Sent verbatim (Upgrade, Connection, Sec-WebSocket-Key, ...); Host is added first when missing. */
  headers?: HeadersLike;
}

/** Stream state shared by the readable and the writable. */
class StreamState {
  readonly stream: SessionStream;
  #controller: ReadableStreamDefaultController<Uint8Array> | null = null;
  #readDone = false;
  #writeDone = false;
  /** Bytes that arrived before the readable existed (upgrade head parsing) or before start(). */
  #early: Uint8Array[] = [];
  #earlyBytes = 0;
  readonly #max: number;
  /** onBufferFull 'pause': holds the connection unread while half of #max waits here (a no-op otherwise). */
  readonly #pause: ReadPause;
  #earlyEnd: ClientError | 'eof' | null = null;
  /** While set, app bytes go here instead of the readable (upgrade head parsing). */
  interceptor: ((bytes: Uint8Array) => void) | null = null;
  onEnd: (() => void) | null = null;
  onError: ((err: ClientError) => void) | null = null;

  constructor(stream: SessionStream, maxBufferedBytes: number, pause: ReadPause) {
    this.stream = stream;
    this.#max = maxBufferedBytes;
    this.#pause = pause;
  }

  /** Handlers for Session.openStream; they route to this state once it exists. */
  static handlers(get: () => StreamState | null, early: { bytes: Uint8Array[]; end: ClientError | 'eof' | null }): Parameters<Session['openStream']>[1] {
    return {
      data: (bytes) => {
        const s = get();
        if (s === null) early.bytes.push(bytes);
        else s.#data(bytes);
      },
      end: () => {
        const s = get();
        if (s === null) early.end ??= 'eof';
        else s.#end();
      },
      error: (err) => {
        const s = get();
        if (s === null) early.end ??= err;
        else s.#error(err);
      },
    };
  }

  adoptEarly(early: { bytes: Uint8Array[]; end: ClientError | 'eof' | null }): void {
    for (const b of early.bytes) this.#data(b);
    if (early.end === 'eof') this.#end();
    else if (early.end !== null) this.#error(early.end);
  }

  #data(bytes: Uint8Array): void {
    if (this.interceptor !== null) this.interceptor(bytes);
    else if (this.#controller !== null) {
      this.#controller.enqueue(bytes);
      if (overCap(this.#controller)) this.#overflow();
      else this.#pause.update(this.#controller);
    } else if (!this.#readDone) {
      this.#early.push(bytes);
      this.#earlyBytes += bytes.length;
      if (this.#earlyBytes > this.#max) this.#overflow();
      else this.#pause.updateUnread(this.#earlyBytes);
    }
  }

  /** More unread bytes than allowed: the stream is given up, what was not read dropped (see buffer-cap.ts). */
  #overflow(): void {
    this.#early = [];
    this.#earlyBytes = 0;
    this.#error(bufferFull(`stream ${this.stream.id}`, this.#max));
    this.stream.close();
  }

  #end(): void {
    if (this.interceptor !== null) {
      this.onEnd?.();
      return;
    }
    this.#finishRead('eof');
  }

  #error(err: ClientError): void {
    this.onError?.(err);
    this.#finishRead(err);
    this.#writeDone = true;
  }

  #finishRead(how: ClientError | 'eof'): void {
    if (this.#readDone) return;
    this.#pause.release(); // nothing more arrives for this stream: the connection reads on
    if (this.#controller === null) {
      this.#earlyEnd ??= how;
      return;
    }
    this.#readDone = true;
    if (how === 'eof') this.#controller.close();
    else this.#controller.error(how);
    this.#maybeRelease();
  }

  /** Bytes to deliver first (upgrade: what followed the response head). */
  unshift(bytes: Uint8Array): void {
    if (bytes.length > 0) this.#early.unshift(bytes);
  }

  readable(): ReadableStream<Uint8Array> {
    return new ReadableStream<Uint8Array>(
      {
        start: (c) => {
          this.#controller = c;
          for (const b of this.#early.splice(0)) c.enqueue(b);
          this.#earlyBytes = 0;
          if (this.#earlyEnd !== null) this.#finishRead(this.#earlyEnd);
        },
        // read down: the connection may be read on
        pull: (c) => this.#pause.update(c),
        cancel: () => {
          this.#readDone = true;
          this.#controller = null;
          this.close();
        },
      },
      byteQueue(this.#max),
    );
  }

  writable(): WritableStream<Uint8Array> {
    return new WritableStream<Uint8Array>({
      write: async (chunk) => {
        if (this.#writeDone) throw new ClientError('CLIENT_CLOSED', `stream ${this.stream.id} is closed for writing`);
        await this.stream.write(toBytes(chunk));
      },
      close: () => this.closeWrite(),
      abort: () => this.close(),
    });
  }

  closeWrite(): void {
    if (this.#writeDone) return;
    this.#writeDone = true;
    this.stream.closeWrite();
    this.#maybeRelease();
  }

  close(): void {
    this.#writeDone = true;
    this.#pause.release();
    if (!this.#readDone) {
      this.#readDone = true;
      try {
        this.#controller?.error(new ClientError('CLIENT_CLOSED', `stream ${this.stream.id} was closed`));
      } catch {
        // already closed
      }
    }
    this.stream.close();
  }

  /** Both directions over: StreamClose{Both} releases the agent's stream and our slot at once. */
  #maybeRelease(): void {
    if (this.#readDone && this.#writeDone) this.stream.close();
  }
}

function toBytes(chunk: unknown): Uint8Array {
  if (chunk instanceof Uint8Array) return chunk;
  if (typeof chunk === 'string') return utf8.encode(chunk);
  if (chunk instanceof ArrayBuffer) return new Uint8Array(chunk);
  if (ArrayBuffer.isView(chunk)) return new Uint8Array(chunk.buffer, chunk.byteOffset, chunk.byteLength);
  throw new ClientError('CLIENT_BAD_OPTIONS', `stream write: expected bytes, found ${typeof chunk}`);
}

function publicStream(state: StreamState): ClientStream {
  return {
    id: state.stream.id,
    readable: state.readable(),
    writable: state.writable(),
    closeWrite: () => state.closeWrite(),
    close: () => state.close(),
  };
}

interface BufferBound {
  maxBufferedBytes: number;
  onBufferFull: OnBufferFull;
}

/** The stream options' buffer bound, checked (the client passes its own as defaults). */
function bufferBound(opts: OpenStreamOptions): BufferBound {
  return { maxBufferedBytes: opts.maxBufferedBytes ?? DEFAULT_MAX_BUFFERED_BYTES, onBufferFull: onBufferFullOption(opts.onBufferFull, 'error') };
}

async function open(session: Session, payload: Uint8Array, signal: AbortSignal, bound: BufferBound): Promise<StreamState> {
  const budget = chunkBudget(session.encoding);
  const early = { bytes: [] as Uint8Array[], end: null as ClientError | 'eof' | null };
  let state: StreamState | null = null;
  const stream = await session.openStream(payload.subarray(0, budget), StreamState.handlers(() => state, early), signal);
  const channel = session.channel;
  const hold = bound.onBufferFull === 'pause' && channel.canPause ? () => channel.holdReading() : null;
  state = new StreamState(stream, bound.maxBufferedBytes, new ReadPause(hold, bound.maxBufferedBytes));
  state.adoptEarly(early);
  try {
    if (payload.length > budget) await stream.write(payload.subarray(budget), signal);
  } catch (err) {
    state.close(); // nobody gets this stream: released here, and any hold of the connection with it
    throw err;
  }
  return state;
}

/** openStream(): a raw byte pipe to the app; `payload` is written first (may be empty). */
export async function clientOpenStream(manager: SessionManager, payload: Uint8Array | string = new Uint8Array(0), opts: OpenStreamOptions = {}): Promise<ClientStream> {
  const bytes = typeof payload === 'string' ? utf8.encode(payload) : payload;
  const bound = bufferBound(opts);
  const deadline = new Deadline(opts.signal, opts.timeoutMs ?? 0);
  try {
    const state = await manager.run((session) => open(session, bytes, deadline.signal, bound), deadline.signal);
    return publicStream(state);
  } finally {
    deadline.done();
  }
}

/** upgrade(): an HTTP/1.1 upgrade through a stream; resolves on 101 with the upgraded byte pipe. */
export async function clientUpgrade(manager: SessionManager, host: string, path: string | URL, opts: UpgradeOptions = {}): Promise<UpgradedStream> {
  const headers: HeaderList = headerList(opts.headers);
  const head = encodeRequestHead({ method: opts.method ?? 'GET', path: requestTarget(path), host, headers, connectionClose: false });
  const bound = bufferBound(opts);
  const deadline = new Deadline(opts.signal, opts.timeoutMs ?? 0);
  try {
    return await manager.run(async (session) => {
      const state = await open(session, head, deadline.signal, bound);
      const parser = new HeadParser({ skipInterim: false });
      const result = await new Promise<{ head: ResponseHead; rest: Uint8Array }>((resolve, reject) => {
        const fail = (err: ClientError): void => {
          state.interceptor = null;
          state.onEnd = state.onError = null;
          deadline.signal.removeEventListener('abort', onAbort);
          state.close();
          reject(err);
        };
        const onAbort = (): void => fail(abortError(deadline.signal));
        deadline.signal.addEventListener('abort', onAbort, { once: true });
        state.onEnd = () => fail(new ClientError('CLIENT_PROTOCOL', 'the app closed the stream before a complete response head'));
        state.onError = fail;
        state.interceptor = (bytes) => {
          try {
            const r = parser.push(bytes);
            if (r === null) return;
            state.interceptor = null;
            state.onEnd = state.onError = null;
            deadline.signal.removeEventListener('abort', onAbort);
            resolve(r);
          } catch (err) {
            fail(err instanceof ClientError ? err : new ClientError('CLIENT_PROTOCOL', String(err)));
          }
        };
        if (deadline.signal.aborted) onAbort();
      });
      if (result.head.status !== 101) {
        state.close();
        // The status only: the reason phrase is the app's decrypted bytes, the path may carry a token
        // (?access_token=...), and callers log this message.
        throw new ClientError('CLIENT_UPGRADE_FAILED', `upgrade: expected status 101, found ${result.head.status}`, {
          status: result.head.status,
        });
      }
      state.unshift(result.rest.slice());
      const h = new Headers();
      for (const [k, v] of result.head.headers) {
        try {
          h.append(k, v);
        } catch {
          // a header value Headers refuses: still in `head`
        }
      }
      return { ...publicStream(state), status: result.head.status, statusText: result.head.statusText, headers: h, head: result.head };
    }, deadline.signal);
  } finally {
    deadline.done();
  }
}
