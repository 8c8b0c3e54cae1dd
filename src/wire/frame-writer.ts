// Writes hs2 and frames to a Node Writable under the vsock write discipline (WIRE.md §2): no single write()
// larger than `maxWrite`, and never more than one write outstanding, so the stream can never hand the kernel
// a writev() of queued chunks that adds up to more than the cap.
import type { Writable } from 'node:stream';
import { WireError } from './errors.ts';
import { encodeFrame, MAX_WRITE } from './frames.ts';

interface Job {
  pieces: Uint8Array[];
  next: number;
  bytes: number;
  resolve: () => void;
  reject: (err: WireError) => void;
}

/**
 * Serialises every write of one connection. Guarantees:
 * - no single `sink.write()` larger than `maxWrite` (default 32768);
 * - writes are issued strictly one at a time: the next only after the previous write's callback, so Node's
 *   writev can never coalesce queued chunks into a larger syscall (this holds only if nothing else writes to
 *   the same sink — route every write of the connection through one FrameWriter);
 * - FIFO order across concurrent callers, and the pieces of one frame are never interleaved with another's;
 * - once the sink errors, ends or closes, every pending and later call rejects with WIRE_SINK_CLOSED.
 *
 * Backpressure: each promise resolves when the sink has accepted the last piece (for a net.Socket: handed to
 * the kernel). `queuedBytes` tells how much is waiting; callers that produce faster should await.
 *
 * The writer listens for the sink's 'error' and 'close' events (so a sink error also becomes a rejection
 * here); call `detach()` to remove those listeners if the sink outlives the writer.
 */
export class FrameWriter {
  readonly #sink: Writable;
  readonly #maxWrite: number;
  #jobs: Job[] = [];
  #active = false;
  #queuedBytes = 0;
  #failure: WireError | null = null;
  readonly #onError = (err: Error): void => {
    this.#failAll(new WireError('WIRE_SINK_CLOSED', `sink errored: ${err.message}`, { cause: err }));
  };
  readonly #onClose = (): void => {
    this.#failAll(new WireError('WIRE_SINK_CLOSED', 'sink closed'));
  };

  constructor(sink: Writable, opts: { maxWrite?: number } = {}) {
    const maxWrite = opts.maxWrite ?? MAX_WRITE;
    if (!Number.isSafeInteger(maxWrite) || maxWrite < 1) {
      throw new RangeError(`maxWrite must be a positive integer, got ${maxWrite}`);
    }
    this.#sink = sink;
    this.#maxWrite = maxWrite;
    sink.on('error', this.#onError);
    sink.on('close', this.#onClose);
  }

  /** Bytes accepted by writeRaw/writeFrame and not yet written to the sink. */
  get queuedBytes(): number {
    return this.#queuedBytes;
  }

  /** Raw bytes (e.g. the 48-byte hs2): ONE write when bytes.length ≤ maxWrite, else split at maxWrite. */
  writeRaw(bytes: Uint8Array): Promise<void> {
    if (bytes.length === 0) return this.#failure === null ? Promise.resolve() : Promise.reject(this.#failure);
    // Copy: the caller may reuse its buffer as soon as this returns.
    return this.#enqueue(bytes.slice());
  }

  /**
   * `len:u32be ‖ ciphertext`, split into writes of ≤ maxWrite. Rejects with WIRE_FRAME_TOO_LARGE /
   * WIRE_FRAME_TOO_SMALL on a bad length (nothing is written then; the writer stays usable).
   */
  writeFrame(ciphertext: Uint8Array): Promise<void> {
    let framed: Uint8Array;
    try {
      framed = encodeFrame(ciphertext);
    } catch (err) {
      return Promise.reject(err as Error);
    }
    return this.#enqueue(framed);
  }

  /** Removes the writer's 'error'/'close' listeners from the sink. Later writes still work until it fails. */
  detach(): void {
    this.#sink.off('error', this.#onError);
    this.#sink.off('close', this.#onClose);
  }

  #enqueue(buf: Uint8Array): Promise<void> {
    if (this.#failure !== null) return Promise.reject(this.#failure);
    const pieces: Uint8Array[] = [];
    for (let off = 0; off < buf.length; off += this.#maxWrite) {
      pieces.push(buf.subarray(off, Math.min(buf.length, off + this.#maxWrite)));
    }
    return new Promise<void>((resolve, reject) => {
      this.#jobs.push({ pieces, next: 0, bytes: buf.length, resolve, reject });
      this.#queuedBytes += buf.length;
      this.#pump();
    });
  }

  #pump(): void {
    if (this.#active || this.#failure !== null) return;
    const job = this.#jobs[0];
    if (job === undefined) return;
    const sink = this.#sink;
    if (sink.destroyed || sink.writableEnded || !sink.writable) {
      this.#failAll(new WireError('WIRE_SINK_CLOSED', `sink is ${sink.destroyed ? 'destroyed' : 'ended'}`));
      return;
    }
    const piece = job.pieces[job.next]!;
    this.#active = true;
    sink.write(piece, (err?: Error | null) => {
      this.#active = false;
      if (this.#failure !== null) return; // already rejected (e.g. 'close' fired first)
      if (err) {
        this.#failAll(new WireError('WIRE_SINK_CLOSED', `write failed: ${err.message}`, { cause: err }));
        return;
      }
      this.#queuedBytes -= piece.length;
      job.next++;
      if (job.next === job.pieces.length) {
        this.#jobs.shift();
        job.resolve();
      }
      this.#pump();
    });
  }

  #failAll(err: WireError): void {
    if (this.#failure !== null) return;
    this.#failure = err;
    const jobs = this.#jobs;
    this.#jobs = [];
    this.#queuedBytes = 0;
    for (const job of jobs) job.reject(err);
  }
}
