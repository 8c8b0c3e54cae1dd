/**
 * A Node Duplex over one addon socket (AF_VSOCK or AF_UNIX: same code). The addon only does syscalls and
 * reports readiness; this class is the stream:
 *  - _read pulls chunks until push() says stop, a short read drains the socket or the kernel says EAGAIN
 *    (then waits for readable), or EOF (push(null) → 'end'). Readable polling is on only while the stream
 *    wants data; while it is on, the next bytes come with the readable event, not from a read() that would
 *    only say EAGAIN (two such calls per message otherwise: one after the push, one when the stream asks again).
 *  - _write issues one send() of ≤ MAX_WRITE (32768) bytes at a time, from one chunk only: chunks are never
 *    merged (no _writev), so no syscall can exceed the vsock limit. On EAGAIN it waits for writable; the
 *    Writable's own buffering gives write() === false, i.e. backpressure.
 *  - _final = shutdown(SHUT_WR): the peer reads EOF and can still answer (allowHalfOpen).
 *  - _destroy closes the fd exactly once (the addon stops the poll handle first).
 *  - detach() gives the fd away untouched (to a worker thread: handoff.ts) while nothing was read or written.
 *    Nothing reads before that on its own: the constructor does not read, and _read runs only once someone
 *    consumes the stream (read(), 'data', pipe, resume), so the native listener needs no pause for a handoff.
 */
import { Duplex } from 'node:stream';
import { getSystemErrorName } from 'node:util';
import type { ConnectionInfo } from './types.ts';
import { NativeError, POLL_READABLE, POLL_WRITABLE, toNativeError } from './native.ts';
import type { NativeSocket } from './native.ts';

/** Reads per readiness event before yielding to the event loop (64 KiB each). */
const READS_PER_EVENT = 16;
/** The addon's read() buffer (EN_READ_SIZE): a read returning less found the socket drained. */
const READ_SIZE = 64 * 1024;
const HIGH_WATER_MARK = 64 * 1024;

type WriteCallback = (err?: Error | null) => void;

/** A poll status < 0 is a libuv error code (-errno). */
export function pollError(status: number, syscall: string): NativeError {
  let name = 'EUNKNOWN';
  try {
    name = getSystemErrorName(status);
  } catch {
    // not an errno
  }
  return new NativeError(name, `${syscall} ${name} (reported by the event loop's poll, status ${status})`, { errno: name, syscall });
}

export class NativeStream extends Duplex {
  /** Peer description and transport, as given to the connection handler. */
  readonly info: ConnectionInfo;
  #sock: NativeSocket | null;
  #events = 0;
  #wantRead = false;
  #pending: { chunk: Uint8Array; offset: number; cb: WriteCallback } | null = null;
  /** Reading handed to someone else (the native splice relay): _read only notes that it was asked. */
  #readPaused = false;
  #readAsked = false;
  /** A read or write reached the socket (or was asked of it): the fd can no longer be handed off intact. */
  #used = false;

  constructor(sock: NativeSocket, info: ConnectionInfo) {
    super({ allowHalfOpen: true, readableHighWaterMark: HIGH_WATER_MARK, writableHighWaterMark: HIGH_WATER_MARK });
    this.info = info;
    this.#sock = sock;
    sock.setCallback(this.#onEvent);
  }

  /** The socket's fd, or -1 once closed (diagnostics). */
  get fd(): number {
    return this.#sock?.fd ?? -1;
  }

  #updatePoll(): void {
    const sock = this.#sock;
    if (sock === null) return;
    const events = (this.#wantRead ? POLL_READABLE : 0) | (this.#pending !== null ? POLL_WRITABLE : 0);
    if (events !== this.#events) {
      this.#events = events;
      sock.poll(events);
    }
  }

  readonly #onEvent = (status: number, events: number): void => {
    if (this.#sock === null) return;
    if (status < 0) {
      this.destroy(pollError(status, 'poll'));
      return;
    }
    if ((events & POLL_WRITABLE) !== 0 && this.#pending !== null) {
      const p = this.#pending;
      this.#writeFrom(p.chunk, p.offset, p.cb);
    }
    if ((events & POLL_READABLE) !== 0 && this.#wantRead && !this.#readPaused && this.#sock !== null) this.#readSome(READS_PER_EVENT);
  };

  /**
   * Takes the fd out of a stream nothing has read or written yet, and destroys the stream (without closing the
   * fd: the caller owns it). Throws NativeError NATIVE_STREAM_IN_USE once it was read, written or ended, and
   * EBADF once closed.
   */
  detach(): number {
    const sock = this.#sock;
    if (sock === null || this.destroyed) throw new NativeError('EBADF', 'detach: the native stream is closed', { errno: 'EBADF', syscall: 'detach' });
    if (this.#used || this.readableFlowing === true || this.readableLength > 0 || this.writableLength > 0 || this.writableEnded) {
      throw new NativeError('NATIVE_STREAM_IN_USE', 'detach: the native stream was already read, written or ended');
    }
    let fd: number;
    try {
      fd = sock.detach(); // stops and releases the poll handle; the fd stays open
    } catch (err) {
      throw toNativeError(err);
    }
    this.#sock = null;
    this.destroy();
    return fd;
  }

  override _read(): void {
    this.#used = true;
    if (this.#readPaused) {
      this.#readAsked = true;
      return;
    }
    if (this.#wantRead) return; // polling for readable already: the event brings the next bytes
    this.#readSome(Infinity);
  }

  /**
   * Stops reading the socket (and polling it for readable) until resumeReading(): the fd's input is left in
   * the kernel for another reader, the native splice relay (src/egress/native-splice.ts). Writes still work.
   */
  pauseReading(): void {
    this.#used = true;
    this.#readPaused = true;
    this.#readAsked = this.#wantRead; // a read outstanding: the stream will not ask again until it gets data
    this.#wantRead = false;
    this.#updatePoll();
  }

  /** Takes the input back after pauseReading(), serving a read the stream asked for before or meanwhile. */
  resumeReading(): void {
    if (!this.#readPaused) return;
    this.#readPaused = false;
    if (this.#readAsked) {
      this.#readAsked = false;
      this.#readSome(Infinity);
    }
  }

  #readSome(budget: number): void {
    for (let i = 0; i < budget; i++) {
      const sock = this.#sock;
      if (sock === null) return;
      let chunk: Buffer | null | undefined;
      try {
        chunk = sock.read();
      } catch (err) {
        this.destroy(toNativeError(err));
        return;
      }
      if (chunk === undefined) {
        this.#wantRead = true; // wait for readable
        this.#updatePoll();
        return;
      }
      if (chunk === null) {
        this.#wantRead = false; // EOF: a level-triggered poll would fire forever
        this.#updatePoll();
        this.push(null);
        return;
      }
      if (!this.push(chunk)) {
        this.#wantRead = false; // the consumer is full: _read() will be called again
        this.#updatePoll();
        return;
      }
      if (chunk.length < READ_SIZE) break; // drained: wait for readable (level-triggered, so nothing is missed)
    }
    // Drained, or budget spent with data still flowing: continue on readable (poll is level-triggered).
    this.#wantRead = true;
    this.#updatePoll();
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, cb: WriteCallback): void {
    this.#used = true;
    this.#writeFrom(chunk, 0, cb);
  }

  #writeFrom(chunk: Uint8Array, offset: number, cb: WriteCallback): void {
    const sock = this.#sock;
    if (sock === null) {
      this.#pending = null;
      cb(new NativeError('ERR_STREAM_DESTROYED', 'write after the native socket was closed'));
      return;
    }
    while (offset < chunk.length) {
      let n: number;
      try {
        n = sock.write(chunk, offset); // one send() of ≤ MAX_WRITE bytes
      } catch (err) {
        this.#pending = null;
        this.#updatePoll();
        cb(toNativeError(err));
        return;
      }
      if (n < 0) {
        this.#pending = { chunk, offset, cb }; // EAGAIN: wait for writable
        this.#updatePoll();
        return;
      }
      offset += n;
    }
    if (this.#pending !== null) {
      this.#pending = null;
      this.#updatePoll();
    }
    cb();
  }

  override _final(cb: (err?: Error | null) => void): void {
    this.#used = true;
    const sock = this.#sock;
    if (sock === null) {
      cb();
      return;
    }
    try {
      sock.shutdown();
    } catch (err) {
      const e = toNativeError(err);
      cb(e.code === 'ENOTCONN' ? null : e); // the peer is already gone: nothing left to half-close
      return;
    }
    cb();
  }

  override _destroy(err: Error | null, cb: (err?: Error | null) => void): void {
    const sock = this.#sock;
    this.#sock = null;
    this.#wantRead = false;
    const pending = this.#pending;
    this.#pending = null;
    sock?.close(); // stops polling, then closes the fd; idempotent in the addon as well
    if (pending !== null) {
      pending.cb(err ?? new NativeError('ERR_STREAM_DESTROYED', 'the stream was destroyed with a write in progress'));
    }
    cb(err);
  }
}
