// One OpenStream: a byte pipe between the client (through the session's frames) and one app connection.
//
// Client → app: StreamData payloads are written to the app socket (queued in `pending` until the
// forwarder has connected). The session reads `queuedBytes` (pending + the socket's own write buffer) and
// stops decoding frames while the sum over its streams is over budget — the protocol has no per-stream
// credit, so pausing the whole session (like TCP would) is the only lossless choice; it lasts only until
// the slow app drains below half the budget, or until the session's stall watch (session-streams.ts) resets
// a stream whose app takes none of its bytes (appIdleMs).
// App → client: app reads become StreamData frames of ≤ streamChunk(encoding): full pieces go out at once, and the
// tail of a read waits until the end of the current I/O phase (setImmediate) so that the small reads the app
// produced meanwhile share its frame — no timer, no added latency beyond one event-loop turn. The session
// pauses every stream's app socket while the client connection's write queue is over budget.
// App EOF → one StreamClose{id} (the client may keep writing: app sockets are half-open capable);
// app error → Error{id, message}; StreamClose{Write} → end() the app side; StreamClose{Both} → destroy.
import { Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { MAX_FRAME_LEN } from '../wire/frames.ts';
import type { ByteEncoding } from '../wire/messages.ts';
import { appBytesRead } from './app-progress.ts';
import { returnFrameBuffer, takeMessageBuffer } from './message-buffers.ts';

/** Largest StreamData payload we send on an int-array stream (WIRE.md §5: what the compat client expects, ≤ 16 KiB). */
export const STREAM_CHUNK = 16 * 1024;
/**
 * Largest StreamData payload on a bstr stream. Only our client speaks bstr ([ours]), and it reads any frame up to
 * the 65,535-byte limit; 64,000 bytes (our client's own write budget) fills a frame, so a bulk stream costs a
 * quarter of the messages — AEAD calls, CBOR heads, writes — of 16 KiB pieces.
 */
export const BSTR_STREAM_CHUNK = 64_000;

export function streamChunk(enc: ByteEncoding): number {
  return enc === 'bstr' ? BSTR_STREAM_CHUNK : STREAM_CHUNK;
}

/**
 * A byte-string payload is a view into the socket read or frame buffer it was decoded from (no copy). Queued —
 * before the app connects, or in its socket's write buffer — a view keeps that whole buffer (up to 64 KiB) alive
 * while the budgets count only its own bytes: a client padding 1-byte payloads into full frames would hold 64 KiB
 * per counted byte. A payload under half its buffer is copied, so what a stream holds stays within 2× what it counts.
 */
function ownBytes(bytes: Uint8Array): Uint8Array {
  return bytes.byteLength * 2 < bytes.buffer.byteLength ? bytes.slice() : bytes;
}

/**
 * Bytes a socket's handle has yet to write of the write in progress (0 for anything but a socket): the fallback when
 * appBytesRead cannot tell. A socket reports a write done only once all of it went out, and after a stall its whole
 * queue goes out as one write (writev), so a slow reader's progress shows only here: libuv writes such a write a piece
 * at a time as the kernel takes bytes — which it does in steps of its buffers (~1.4 MB on loopback), not byte by byte.
 * Node's own socket timeout reads it the same way (net.js, Socket.prototype._onTimeout).
 */
function handleWriteQueue(app: Duplex): number {
  const n = (app as { _handle?: { writeQueueSize?: unknown } | null })._handle?.writeQueueSize;
  return typeof n === 'number' ? n : 0;
}

/** What a stream needs from its session. */
export interface StreamOwner {
  /**
   * App bytes for the client (≤ streamChunk(stream.encoding)). `owned`: the payload is ours alone (a socket's read
   * buffer, or a concatenation) and may be encrypted in place.
   * `pooled`: the reused buffer (message-buffers.ts) the payload lies in, to give back once sent.
   */
  streamData(stream: AppStream, payload: Uint8Array, owned: boolean, pooled?: Uint8Array): void;
  /** The app closed its side (EOF), or went away without error. */
  streamClosed(stream: AppStream): void;
  /** The stream failed; `message` is safe to send to the client. */
  streamError(stream: AppStream, message: string): void;
  /** The stream is over: remove it, release its in-flight slot. Called exactly once. */
  streamFinished(stream: AppStream): void;
  /** The stream's queued bytes toward the app changed (a write, a drain). */
  queueChanged(): void;
}

export class AppStream {
  readonly id: number;
  /** Encoding of the OpenStream; every message the agent sends for this stream uses it. */
  readonly encoding: ByteEncoding;
  readonly #chunk: number;
  readonly #owner: StreamOwner;
  #app: Duplex | null = null;
  /**
   * The app's read chunks are fresh buffers nobody else holds: true for a socket. An in-process Duplex (HTTP mode)
   * may pass on a buffer its writer keeps (a constant body), which must never be encrypted in place.
   */
  #ownsReads = false;
  #pending: Uint8Array[] = [];
  #pendingBytes = 0;
  /** The client sent StreamClose{Write}. */
  #writeClosed = false;
  /** We told the client the stream is over on the app side (StreamClose or Error). */
  #closeSent = false;
  #finished = false;
  #appPaused: boolean;
  #failure: string | null = null;
  /** App bytes relayed to the client / client bytes written to the app (for logs). */
  bytesToClient = 0;
  bytesToApp = 0;
  /**
   * What appIdleMs saw of the app's progress at its last look, and when that last changed; #looked: a look started
   * the count. #readMark / #ackedMark: the most appBytesRead reported in each of its measures (null: none yet), else
   * node's figures in the two marks.
   */
  #looked = false;
  #readMark: number | null = null;
  #ackedMark: number | null = null;
  #doneMark = 0;
  #handleMark = 0;
  #tookAt = 0;

  constructor(owner: StreamOwner, id: number, encoding: ByteEncoding, firstBytes: Uint8Array, appPaused: boolean) {
    this.#owner = owner;
    this.id = id;
    this.encoding = encoding;
    this.#chunk = streamChunk(encoding);
    this.#appPaused = appPaused;
    if (firstBytes.length > 0) this.#queue(firstBytes);
  }

  get finished(): boolean {
    return this.#finished;
  }

  /** Client bytes waiting for the app (before connect) plus the app socket's unflushed write buffer. */
  get queuedBytes(): number {
    return this.#pendingBytes + (this.#app?.writableLength ?? 0);
  }

  /**
   * A look of the session's stall watch (session-streams.ts): ms since the app last took any of the bytes queued for
   * it, as far as successive looks can tell (a byte taken since the previous look counts as taken at `now`; the first
   * look starts the count). 0 while nothing is queued toward a connected app: before the connect, the forwarder's own
   * timeouts bound the wait.
   */
  appIdleMs(now: number): number {
    const app = this.#app;
    if (app === null || this.queuedBytes === 0) {
      this.#looked = false;
      return 0;
    }
    const took = this.#tookSinceLastLook(app);
    if (!this.#looked || took) {
      this.#looked = true;
      this.#tookAt = now;
      return 0;
    }
    return now - this.#tookAt;
  }

  /**
   * Whether the app took bytes since the previous look (marks updated). To the byte when appBytesRead can tell (it
   * may read low, never high: only a count above the highest seen of the same measure is progress; the first of a
   * measure only sets its mark, so a look that could not find the app's socket, its figure higher by the app's unread
   * queue, neither fakes progress nor hides the reads after it); else from node's figures, which move only as the
   * kernel takes more.
   */
  #tookSinceLastLook(app: Duplex): boolean {
    const p = appBytesRead(app);
    if (p !== null) {
      const mark = p.exact ? this.#readMark : this.#ackedMark;
      if (mark !== null && p.bytes <= mark) return false;
      if (p.exact) this.#readMark = p.bytes;
      else this.#ackedMark = p.bytes;
      return mark !== null;
    }
    const done = this.bytesToApp - app.writableLength; // written through: the writes the app's side reported done
    const inHandle = handleWriteQueue(app);
    const took = done !== this.#doneMark || inHandle !== this.#handleMark;
    this.#doneMark = done;
    this.#handleMark = inHandle;
    return took;
  }

  /** The stall watch starts over (the session's reading stopped again): the next look starts the count. */
  forgetLooks(): void {
    this.#looked = false;
  }

  /** The forwarder connected. */
  attach(app: Duplex): void {
    if (this.#finished) {
      app.destroy();
      return;
    }
    this.#app = app;
    this.#ownsReads = app instanceof Socket;
    app.on('data', this.#onData);
    app.on('end', this.#onEnd);
    app.on('error', this.#onError);
    app.on('close', this.#onClose);
    app.on('drain', this.#onDrain);
    if (this.#appPaused) app.pause();
    const pending = this.#pending;
    this.#pending = [];
    this.#pendingBytes = 0;
    for (const bytes of pending) this.#writeToApp(bytes);
    if (this.#writeClosed) app.end();
    this.#owner.queueChanged();
  }

  /** The forwarder failed; `message` is safe for the client. */
  connectFailed(message: string): void {
    if (this.#finished) return;
    this.#closeSent = true;
    this.#owner.streamError(this, message);
    this.#finish();
  }

  /**
   * Client StreamData. Returns false when the client already closed its write side. `frame`: the reused buffer
   * (message-buffers.ts) the payload is the only view of; it goes back once the app's socket has taken the bytes
   * (not reused after a failed write, nor when the payload is queued or held by an in-process app).
   */
  write(payload: Uint8Array, frame?: Uint8Array): boolean {
    if (this.#writeClosed) return false;
    if (payload.length === 0) return true;
    if (this.#app === null) this.#queue(payload);
    else this.#writeToApp(payload, this.#ownsReads ? frame : undefined);
    return true;
  }

  /** Client StreamClose{Write}: half-close the app socket once everything queued is written. */
  closeWrite(): void {
    if (this.#writeClosed) return;
    this.#writeClosed = true;
    if (this.#app !== null && !this.#app.destroyed) this.#app.end();
  }

  /** Client StreamClose{Both}, or the session is going away: tear down without telling the client. */
  destroy(): void {
    if (this.#finished) return;
    this.#closeSent = true;
    this.#app?.destroy();
    this.#finish();
  }

  pauseApp(): void {
    this.#appPaused = true;
    this.#app?.pause();
  }

  resumeApp(): void {
    this.#appPaused = false;
    this.#app?.resume();
  }

  #queue(bytes: Uint8Array): void {
    this.#pending.push(ownBytes(bytes));
    this.#pendingBytes += bytes.length;
  }

  #writeToApp(payload: Uint8Array, frame?: Uint8Array): void {
    const app = this.#app!;
    if (app.destroyed || app.writableEnded) return;
    const bytes = ownBytes(payload); // the app socket may keep it in its write buffer
    this.bytesToApp += bytes.length;
    // The frames of one read from the client usually carry several StreamData for this stream: cork until
    // the current tick ends so they reach the app in one writev (loopback; no vsock write limit here).
    if (!this.#corked) {
      this.#corked = true;
      app.cork();
      process.nextTick(this.#uncork);
    }
    if (frame === undefined || bytes !== payload) {
      if (frame !== undefined) returnFrameBuffer(frame); // the payload was copied out of it
      app.write(bytes);
      return;
    }
    app.write(bytes, (err) => {
      if (err == null) returnFrameBuffer(frame);
    });
  }

  #corked = false;
  readonly #uncork = (): void => {
    this.#corked = false;
    this.#app?.uncork();
  };

  /** App bytes read but not yet sent (< one chunk in total): views of the app's read buffers. */
  #tail: Uint8Array[] = [];
  #tailBytes = 0;
  #flushScheduled = false;

  readonly #onData = (chunk: Buffer): void => {
    if (this.#closeSent) return;
    this.bytesToClient += chunk.length;
    const max = this.#chunk;
    let off = 0;
    if (this.#tailBytes > 0) {
      const need = max - this.#tailBytes;
      if (chunk.length < need) {
        this.#tail.push(chunk);
        this.#tailBytes += chunk.length;
        return; // the scheduled flush sends it
      }
      this.#tail.push(chunk.subarray(0, need));
      this.#tailBytes = max;
      this.#flushTail();
      off = need;
    }
    for (; chunk.length - off >= max; off += max) {
      this.#owner.streamData(this, chunk.subarray(off, off + max), this.#ownsReads);
    }
    if (off < chunk.length) {
      this.#tail.push(off === 0 ? chunk : chunk.subarray(off));
      this.#tailBytes = chunk.length - off;
      if (!this.#flushScheduled) {
        this.#flushScheduled = true;
        setImmediate(this.#scheduledFlush);
      }
    }
  };

  readonly #scheduledFlush = (): void => {
    this.#flushScheduled = false;
    if (!this.#closeSent) this.#flushTail();
  };

  /** Sends the held bytes as one StreamData. */
  #flushTail(): void {
    const n = this.#tailBytes;
    if (n === 0) return;
    const parts = this.#tail;
    this.#tail = [];
    this.#tailBytes = 0;
    if (parts.length === 1) {
      this.#owner.streamData(this, parts[0]!, this.#ownsReads);
      return;
    }
    // A bulk stream's pieces are joined in a reused buffer (a fresh 64 KB one per frame is a full GC's worth of
    // external memory every ~64 MB); a small join gets its own array, so a message that waits for room never
    // holds more than twice the bytes the budgets count (as ownBytes).
    const pooled = n * 2 >= MAX_FRAME_LEN ? takeMessageBuffer() : undefined;
    const payload = pooled === undefined ? new Uint8Array(n) : pooled.subarray(0, n);
    let at = 0;
    for (const p of parts) {
      payload.set(p, at);
      at += p.length;
    }
    this.#owner.streamData(this, payload, true, pooled);
  }

  readonly #onEnd = (): void => {
    if (this.#closeSent) return;
    this.#flushTail();
    this.#closeSent = true;
    this.#owner.streamClosed(this);
  };

  readonly #onError = (err: NodeJS.ErrnoException): void => {
    this.#failure ??= err.code ?? 'error';
  };

  readonly #onClose = (): void => {
    if (!this.#closeSent) {
      this.#flushTail(); // bytes read before the failure still reach the client, then the Error
      this.#closeSent = true;
      if (this.#failure !== null) this.#owner.streamError(this, `stream to the app failed (${this.#failure})`);
      else this.#owner.streamClosed(this);
    }
    this.#finish();
  };

  readonly #onDrain = (): void => {
    this.#owner.queueChanged();
  };

  #finish(): void {
    if (this.#finished) return;
    this.#finished = true;
    this.#pending = [];
    this.#pendingBytes = 0;
    this.#tail = [];
    this.#tailBytes = 0;
    const app = this.#app;
    if (app !== null) {
      app.off('data', this.#onData);
      app.off('drain', this.#onDrain);
      // keep 'error' handled after teardown: a late ECONNRESET must not become an uncaught exception
    }
    this.#owner.streamFinished(this);
  }
}
