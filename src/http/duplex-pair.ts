// Two connected in-memory Duplex streams, the in-process stand-in for a socket pair: what one end writes,
// the other end reads. Node 20 has no `stream.duplexPair` (22.6+), and the HTTP server needs a few
// net.Socket extras (setTimeout with 'timeout', destroySoon, setNoDelay), so this is our own.
//
// Semantics, chosen to match a TCP connection as seen by each side:
// - Backpressure: a write completes when the peer's readable buffer has room (the peer read), so a slow
//   reader stalls the writer, never an unbounded buffer.
// - Half-close: `end()` on one end is EOF on the other; each direction closes independently.
// - Destroy: the peer still reads everything already delivered, then EOF (a destroyed end never discards
//   bytes the peer was sent); `peerAborted` tells that EOF from an end() (a reset from a FIN). Writes the
//   peer makes afterwards are discarded, as bytes sent to a closed socket are. A caller that wants "the other side is gone, abort" links the ends itself
//   (`a.once('close', () => b.destroy())`): which side may abort the other is a policy, not the pair's.
// - holdInput(): the reading end takes no more bytes (the peer's writes wait, as on a socket that stopped
//   reading) until released, whoever resumes its Readable side meanwhile (the HTTP server resumes it on its own).
// - setSendTimeout(): a write that waits for the peer to read longer than that calls back (nginx's
//   send_timeout: a reader that stops reading must not hold the writer forever).
import { Duplex } from 'node:stream';

export interface DuplexPairOptions {
  /** Readable/writable high-water mark of each end in bytes (default 64 KiB). */
  highWaterMark?: number;
}

export class PairEnd extends Duplex {
  /** The other end. */
  peer!: PairEnd;
  /** Filled in by whoever knows (the HTTP forwarder sets the client's address); informational. */
  remoteAddress: string | undefined;
  remotePort: number | undefined;
  remoteFamily: string | undefined;
  /** Bytes written to / read from this end so far. */
  bytesWritten = 0;
  bytesRead = 0;

  /**
   * The peer was destroyed before it ended its writable side: the EOF this end reads is a cut, not the end
   * of what the peer meant to send (a socket reset rather than a FIN). Readers that must tell a complete
   * answer from a truncated one check it on 'end'.
   */
  peerAborted = false;

  private pendingWrite: ((err?: Error | null) => void) | null = null;
  /** A chunk written while the peer held its input: not delivered yet (pendingWrite is its callback). */
  private heldChunk: Buffer | null = null;
  private inputHeld = false;
  /** Largest piece delivered to this end's readable side at once (0: a write goes in one piece). */
  private readSlice = 0;
  private sendTimeoutMs = 0;
  private onSendTimeout: (() => void) | null = null;
  private sendTimer: NodeJS.Timeout | null = null;
  private peerGone = false;
  private timeoutMs = 0;
  private timer: NodeJS.Timeout | null = null;
  private lastActivity = 0;

  constructor(opts: DuplexPairOptions) {
    super({ allowHalfOpen: true, highWaterMark: opts.highWaterMark ?? 64 * 1024 });
  }

  override _write(chunk: Buffer, _enc: BufferEncoding, cb: (err?: Error | null) => void): void {
    if (this.peerGone) {
      cb();
      return;
    }
    this.bytesWritten += chunk.length;
    this.touch();
    if (this.peer.inputHeld) {
      this.heldChunk = chunk;
      this.pendingWrite = cb;
      return;
    }
    this.deliver(chunk, cb);
  }

  private deliver(chunk: Buffer, cb: (err?: Error | null) => void): void {
    const peer = this.peer;
    const slice = peer.readSlice;
    // In slices when the peer asks for them: each one is a 'data' event of its own, so a reader that pauses
    // (or holds its input) on one event is not handed the rest of the write with it. The rest waits as a held
    // chunk, delivered on the next read (releaseWrite) or when the hold ends.
    while (slice > 0 && chunk.length > slice) {
      peer.delivered(slice);
      const room = peer.push(chunk.subarray(0, slice));
      chunk = chunk.subarray(slice);
      if (!room || peer.inputHeld || peer.isPaused()) {
        this.heldChunk = chunk;
        this.pendingWrite = cb;
        if (!room) this.armSendTimer();
        return;
      }
    }
    peer.delivered(chunk.length);
    if (peer.push(chunk)) {
      cb();
      return;
    }
    this.pendingWrite = cb;
    this.armSendTimer();
  }

  private armSendTimer(): void {
    if (this.sendTimeoutMs > 0 && this.sendTimer === null) {
      this.sendTimer = setTimeout(() => {
        this.sendTimer = null;
        if (this.pendingWrite !== null && !this.destroyed) this.onSendTimeout?.();
      }, this.sendTimeoutMs);
      this.sendTimer.unref();
    }
  }

  /** The write waiting for the peer to read goes on (the rest of a sliced one first). */
  private releaseWrite(): void {
    const cb = this.pendingWrite;
    if (cb === null) return;
    this.pendingWrite = null;
    this.clearSendTimer();
    const rest = this.heldChunk;
    if (rest !== null) {
      this.heldChunk = null;
      this.deliver(rest, cb);
    } else cb();
  }

  /**
   * While the input is held the end stays paused, whoever asks it to resume (the holder resumes it when the
   * hold ends). Node's server resumes its socket whenever a request body is read, and a resume takes effect at
   * once: the chunks already delivered would flow on to the parser in the same turn, before a 'resume'
   * listener could pause the end again.
   */
  override resume(): this {
    if (this.inputHeld) return this;
    return super.resume();
  }

  /**
   * Bytes written by the peer reach this end at most `bytes` at a time (0: as written). For a reader that stops
   * taking input between 'data' events (the HTTP server, server-connection.ts).
   */
  setReadSlice(bytes: number): void {
    this.readSlice = bytes;
  }

  private clearSendTimer(): void {
    if (this.sendTimer !== null) {
      clearTimeout(this.sendTimer);
      this.sendTimer = null;
    }
  }

  override _final(cb: (err?: Error | null) => void): void {
    if (!this.peerGone) this.peer.push(null);
    cb();
  }

  override _read(): void {
    if (this.inputHeld) return;
    // The reader wants more: release the peer's write that was waiting for room.
    this.peer.releaseWrite();
  }

  override _destroy(err: Error | null, cb: (err?: Error | null) => void): void {
    this.clearTimer();
    this.clearSendTimer();
    const peer = this.peer;
    peer.peerGone = true;
    // Writes held back by a holdInput() are dropped with the connection (ours and the peer's alike).
    this.heldChunk = null;
    peer.heldChunk = null;
    if (!this.writableEnded) peer.peerAborted = true;
    // EOF for the peer after what it already has; a write of the peer waiting for us to read is released
    // (its bytes go nowhere, like bytes sent to a closed socket).
    if (!peer.destroyed) peer.push(null);
    const waiting = peer.pendingWrite;
    peer.pendingWrite = null;
    peer.clearSendTimer();
    if (waiting !== null) waiting();
    // Our own pending write: the peer may still read it; nothing more to do for it.
    const own = this.pendingWrite;
    this.pendingWrite = null;
    if (own !== null) own();
    cb(err);
  }

  /**
   * Stops (true) or restarts (false) taking bytes from the peer: while held, nothing more is delivered to this
   * end's readable side, so the peer's writes wait (backpressure up to whoever feeds it).
   */
  holdInput(hold: boolean): void {
    if (this.inputHeld === hold) return;
    this.inputHeld = hold;
    if (hold || this.destroyed) return;
    const peer = this.peer;
    const cb = peer.pendingWrite;
    if (cb === null) return;
    peer.pendingWrite = null;
    const chunk = peer.heldChunk;
    peer.heldChunk = null;
    if (chunk !== null) peer.deliver(chunk, cb);
    else if (this.readableLength < this.readableHighWaterMark) {
      peer.clearSendTimer();
      cb();
    } else peer.pendingWrite = cb;
  }

  /**
   * `onTimeout` runs when a write of this end has waited `ms` for the peer to read (0 = never). Any read by
   * the peer starts the wait again: a slow reader is not cut, one that stopped is.
   */
  setSendTimeout(ms: number, onTimeout: () => void): void {
    this.sendTimeoutMs = ms;
    this.onSendTimeout = onTimeout;
  }

  /** net.Socket compatibility: idle timeout; emits 'timeout' after `ms` without reads or writes (0 = off). */
  setTimeout(ms: number, callback?: () => void): this {
    if (callback !== undefined) {
      if (ms === 0) this.removeListener('timeout', callback);
      else this.once('timeout', callback);
    }
    this.timeoutMs = ms;
    this.clearTimer();
    if (ms > 0 && !this.destroyed) {
      this.lastActivity = performance.now();
      this.arm(ms);
    }
    return this;
  }

  /** net.Socket compatibility: ends the writable side, destroys once it has been flushed. */
  destroySoon(): void {
    if (this.writable) this.end();
    if (this.writableFinished) this.destroy();
    else this.once('finish', () => this.destroy());
  }

  setNoDelay(_noDelay?: boolean): this {
    return this;
  }

  setKeepAlive(_enable?: boolean, _delay?: number): this {
    return this;
  }

  ref(): this {
    return this;
  }

  unref(): this {
    return this;
  }

  private delivered(n: number): void {
    this.bytesRead += n;
    this.touch();
  }

  private touch(): void {
    if (this.timeoutMs > 0) this.lastActivity = performance.now();
  }

  private arm(ms: number): void {
    this.timer = setTimeout(() => {
      this.timer = null;
      if (this.destroyed || this.timeoutMs === 0) return;
      const idle = performance.now() - this.lastActivity;
      if (idle + 1 >= this.timeoutMs) this.emit('timeout');
      else this.arm(this.timeoutMs - idle);
    }, ms);
    this.timer.unref();
  }

  private clearTimer(): void {
    if (this.timer !== null) {
      clearTimeout(this.timer);
      this.timer = null;
    }
  }
}

/** Two connected ends: `a` writes are `b` reads and the other way round. */
export function createDuplexPair(opts: DuplexPairOptions = {}): [PairEnd, PairEnd] {
  const a = new PairEnd(opts);
  const b = new PairEnd(opts);
  a.peer = b;
  b.peer = a;
  return [a, b];
}
