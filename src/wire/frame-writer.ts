// Writes hs2 and frames to a Node Writable under the vsock write discipline (WIRE.md §2): no single write()
// larger than `maxWrite`, and never more than one write outstanding, so the stream can never hand the kernel
// a writev() of queued chunks that adds up to more than the cap.
import type { Writable } from 'node:stream';
import { WireError } from './errors.ts';
import { encodeFrame, encodeFrameHeader, encodeFrameParts, MAX_WRITE } from './frames.ts';

interface Job {
  /** The job's bytes, in order (a frame: [length prefix, ciphertext]; raw bytes: one part). */
  parts: Uint8Array[];
  /** Next part / offset in it not yet handed to the sink. */
  part: number;
  off: number;
  /** Bytes not yet handed to the sink. */
  left: number;
  /** Raw bytes (hs2, a bridge's client record) are never merged with another job's bytes. */
  raw: boolean;
  resolve: () => void;
  reject: (err: WireError) => void;
}

export interface FrameWriterOptions {
  /** Largest single write (default and maximum sensible value: MAX_WRITE = 32768). */
  maxWrite?: number;
  /**
   * Merge queued frames into shared writes of up to `maxWrite` bytes (default false: one frame per write,
   * split at `maxWrite`). A sink with `_writev` (net.Socket) gets a merged write as corked views of the parts —
   * one writev syscall, no copy of large parts; other sinks get one buffer. The output is the same byte stream either way; merged writes cut across frame
   * boundaries where `maxWrite` falls, exactly like the split of a frame larger than `maxWrite`. Writes stay
   * one at a time, so nothing can coalesce past `maxWrite`; raw writes are never merged. With merging on, the
   * first write of a burst starts on the next tick, so the frames queued by one synchronous run share writes.
   */
  coalesce?: boolean;
}

/**
 * Serialises every write of one connection. Guarantees:
 * - no single write larger than `maxWrite` (default 32768): one `sink.write()`, or (merging into a sink with
 *   `_writev`) a corked run of chunks that add up to at most `maxWrite` — one writev syscall;
 * - writes are issued strictly one at a time: the next only after the previous write's callback, so Node's
 *   writev can never coalesce queued chunks into a larger syscall (this holds only if nothing else writes to
 *   the same sink — route every write of the connection through one FrameWriter);
 * - FIFO order across concurrent callers, and the pieces of one frame are never interleaved with another's;
 * - `writeRaw` bytes of ≤ maxWrite go out as exactly one write holding nothing else;
 * - with `coalesce`, consecutive queued frames are packed into writes of up to `maxWrite` bytes;
 * - once the sink errors, ends or closes, every pending and later call rejects with WIRE_SINK_CLOSED.
 *
 * Backpressure: each promise resolves when the sink has accepted the last byte of that call (for a net.Socket:
 * handed to the kernel). `queuedBytes` tells how much is waiting; callers that produce faster should await.
 *
 * The writer listens for the sink's 'error' and 'close' events (so a sink error also becomes a rejection
 * here); call `detach()` to remove those listeners if the sink outlives the writer.
 */
export class FrameWriter {
  readonly #sink: Writable;
  readonly #maxWrite: number;
  readonly #coalesce: boolean;
  /** The sink gathers corked chunks into one writev (net.Socket); otherwise merged writes are copied into one buffer. */
  readonly #gather: boolean;
  #jobs: Job[] = [];
  #active = false;
  #scheduled = false;
  #queuedBytes = 0;
  #failure: WireError | null = null;
  readonly #onError = (err: Error): void => {
    this.#failAll(new WireError('WIRE_SINK_CLOSED', `sink errored: ${err.message}`, { cause: err }));
  };
  readonly #onClose = (): void => {
    this.#failAll(new WireError('WIRE_SINK_CLOSED', 'sink closed'));
  };
  readonly #scheduledPump = (): void => {
    this.#scheduled = false;
    this.#pump();
  };

  constructor(sink: Writable, opts: FrameWriterOptions = {}) {
    const maxWrite = opts.maxWrite ?? MAX_WRITE;
    if (!Number.isSafeInteger(maxWrite) || maxWrite < 1) {
      throw new RangeError(`maxWrite must be a positive integer, got ${maxWrite}`);
    }
    this.#sink = sink;
    this.#maxWrite = maxWrite;
    this.#coalesce = opts.coalesce === true;
    this.#gather = typeof (sink as { _writev?: unknown })._writev === 'function';
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
    return this.#enqueue([bytes.slice()], true);
  }

  /**
   * `len:u32be ‖ ciphertext`, split into writes of ≤ maxWrite. Rejects with WIRE_FRAME_TOO_LARGE /
   * WIRE_FRAME_TOO_SMALL on a bad length (nothing is written then; the writer stays usable).
   * The writer keeps a reference to `ciphertext` until the promise settles: the caller must not modify it.
   */
  writeFrame(ciphertext: Uint8Array): Promise<void> {
    let parts: Uint8Array[];
    try {
      // With merging on, the prefix and the ciphertext are copied straight into the merged write buffer.
      parts = this.#coalesce ? [encodeFrameHeader(ciphertext.length), ciphertext] : [encodeFrame(ciphertext)];
    } catch (err) {
      return Promise.reject(err as Error);
    }
    return this.#enqueue(parts, false);
  }

  /**
   * Like `writeFrame` for a ciphertext given as consecutive parts (e.g. from CipherState.encryptParts): the
   * frame is their concatenation. With `coalesce`, the parts go to the sink as they are (or are copied straight
   * into a merged write buffer); without, they are copied once into the frame. The writer keeps the parts until
   * the promise settles.
   */
  writeFrameParts(ciphertext: readonly Uint8Array[]): Promise<void> {
    let parts: Uint8Array[];
    try {
      if (this.#coalesce) {
        let len = 0;
        for (const p of ciphertext) len += p.length;
        parts = [encodeFrameHeader(len)];
        for (const p of ciphertext) if (p.length > 0) parts.push(p);
      } else {
        parts = [encodeFrameParts(ciphertext)];
      }
    } catch (err) {
      return Promise.reject(err as Error);
    }
    return this.#enqueue(parts, false);
  }

  /** Removes the writer's 'error'/'close' listeners from the sink. Later writes still work until it fails. */
  detach(): void {
    this.#sink.off('error', this.#onError);
    this.#sink.off('close', this.#onClose);
  }

  #enqueue(parts: Uint8Array[], raw: boolean): Promise<void> {
    if (this.#failure !== null) return Promise.reject(this.#failure);
    let bytes = 0;
    for (const p of parts) bytes += p.length;
    return new Promise<void>((resolve, reject) => {
      this.#jobs.push({ parts, part: 0, off: 0, left: bytes, raw, resolve, reject });
      this.#queuedBytes += bytes;
      if (!this.#coalesce || this.#active) this.#pump();
      else if (!this.#scheduled) {
        this.#scheduled = true;
        process.nextTick(this.#scheduledPump);
      }
    });
  }

  /**
   * The next write, taken from the head job (and, when merging, the frame jobs after it): ≤ maxWrite bytes in
   * one or more chunks. Several chunks only go to a sink that gathers (writev), as one syscall.
   */
  #nextWrite(): { chunks: Uint8Array[]; bytes: number; jobs: number } {
    const jobs = this.#jobs;
    const head = jobs[0]!;
    const max = this.#maxWrite;
    const part = head.parts[head.part]!;
    const inPart = part.length - head.off;
    // One contiguous slice of one part: no copy. (Raw jobs always take this path: one part.)
    if (inPart >= max || (inPart === head.left && (head.raw || !this.#coalesce || jobs.length === 1 || jobs[1]!.raw))) {
      const n = Math.min(inPart, max);
      const chunk = part.subarray(head.off, head.off + n);
      this.#advance(head, n);
      return { chunks: [chunk], bytes: n, jobs: head.left === 0 ? 1 : 0 };
    }
    // Merge from the head job onwards (frame jobs only) up to max bytes, as views of the parts.
    const views: Uint8Array[] = [];
    let bytes = 0;
    let done = 0;
    for (let j = 0; j < jobs.length && bytes < max; j++) {
      const job = jobs[j]!;
      if (job.raw && j > 0) break;
      while (job.left > 0 && bytes < max) {
        const p = job.parts[job.part]!;
        const n = Math.min(p.length - job.off, max - bytes);
        views.push(p.subarray(job.off, job.off + n));
        bytes += n;
        this.#advance(job, n);
      }
      if (job.left > 0) break;
      done++;
    }
    return { chunks: this.#gather ? packSmall(views) : [concatParts(views, bytes)], bytes, jobs: done };
  }

  #advance(job: Job, n: number): void {
    job.left -= n;
    job.off += n;
    if (job.off === job.parts[job.part]!.length) {
      job.parts[job.part] = EMPTY; // drop the reference early
      job.part++;
      job.off = 0;
    }
  }

  #pump(): void {
    if (this.#active || this.#failure !== null) return;
    if (this.#jobs.length === 0) return;
    const sink = this.#sink;
    if (sink.destroyed || sink.writableEnded || !sink.writable) {
      this.#failAll(new WireError('WIRE_SINK_CLOSED', `sink is ${sink.destroyed ? 'destroyed' : 'ended'}`));
      return;
    }
    const { chunks, bytes, jobs: finished } = this.#nextWrite();
    this.#active = true;
    const done = (err?: Error | null): void => {
      this.#active = false;
      if (this.#failure !== null) return; // already rejected (e.g. 'close' fired first)
      if (err) {
        this.#failAll(new WireError('WIRE_SINK_CLOSED', `write failed: ${err.message}`, { cause: err }));
        return;
      }
      this.#queuedBytes -= bytes;
      if (finished > 0) {
        const settled = this.#jobs.splice(0, finished);
        for (const job of settled) job.resolve();
      }
      this.#pump();
    };
    if (chunks.length === 1) {
      sink.write(chunks[0], done);
      return;
    }
    // Corked, the chunks reach the sink's _writev together: one syscall of `bytes` ≤ maxWrite.
    sink.cork();
    const last = chunks.length - 1;
    for (let i = 0; i < last; i++) sink.write(chunks[i]);
    sink.write(chunks[last], done);
    sink.uncork();
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

const EMPTY = new Uint8Array(0);

/** Pieces shorter than this are copied together (a writev entry costs more than copying a few hundred bytes). */
const GATHER_MIN = 1024;

/** The views as writev chunks: runs of short views packed into one buffer each, long views as they are. */
function packSmall(views: Uint8Array[]): Uint8Array[] {
  const out: Uint8Array[] = [];
  let i = 0;
  while (i < views.length) {
    if (views[i]!.length >= GATHER_MIN) {
      out.push(views[i++]!);
      continue;
    }
    let j = i;
    let len = 0;
    while (j < views.length && views[j]!.length < GATHER_MIN) len += views[j++]!.length;
    out.push(j - i === 1 ? views[i]! : concatParts(views.slice(i, j), len));
    i = j;
  }
  return out;
}

// Not util/bytes concatBytes: on the write path, reuses the length the caller already summed and takes the array without a spread.
function concatParts(parts: readonly Uint8Array[], len: number): Uint8Array {
  const out = new Uint8Array(len);
  let off = 0;
  for (const p of parts) {
    out.set(p, off);
    off += p.length;
  }
  return out;
}
