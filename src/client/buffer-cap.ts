// The bound on bytes a response body or stream holds for a caller who does not read them. The protocol has no
// per-stream flow control (the agent cannot be told to wait, and a browser WebSocket cannot be paused), so by
// default the only bound the client can keep is to give up on the stream: its readable errors with
// CLIENT_BUFFER_FULL. With onBufferFull 'pause' and a WebSocket that can stop reading (Node's), a response body
// or a stream's readable instead stops the whole connection being read (ReadPause): TCP holds the bridge back, the
// bridge the agent, the agent the app, until it is read down again. Browser-safe.
import { ClientError } from './errors.ts';
import { textShape } from '../util/text-shape.ts';

/** What a body or stream holding unread bytes does (ConnectOptions.onBufferFull, OpenStreamOptions.onBufferFull). */
export type OnBufferFull = 'error' | 'pause';

/** `value` checked as an onBufferFull option (undefined: `fallback`); CLIENT_BAD_OPTIONS otherwise. */
export function onBufferFullOption(value: unknown, fallback: OnBufferFull): OnBufferFull {
  const v = value ?? fallback;
  if (v !== 'error' && v !== 'pause') throw new ClientError('CLIENT_BAD_OPTIONS', `onBufferFull: expected error or pause, found ${textShape(String(v))}`);
  return v;
}

/** Default of ConnectOptions.maxBufferedBytes. */
export const DEFAULT_MAX_BUFFERED_BYTES = 64 * 1024 * 1024;

/** A queuing strategy counting bytes, so a controller's desiredSize goes negative past `max` unread bytes. */
export function byteQueue(max: number): QueuingStrategy<Uint8Array> {
  return { highWaterMark: max, size: (chunk) => chunk.byteLength };
}

/** True once more than the strategy's `max` bytes wait unread in `controller`. */
export function overCap(controller: ReadableStreamDefaultController<Uint8Array>): boolean {
  const room = controller.desiredSize;
  return room !== null && room < 0;
}

export function bufferFull(what: string, max: number): ClientError {
  return new ClientError('CLIENT_BUFFER_FULL', `${what}: more than ${max} bytes arrived unread (maxBufferedBytes); the stream was closed`);
}

/**
 * Pauses reading the connection (`hold`, Channel.holdReading) while a body holds half its cap unread, and reads on
 * as soon as the reader has taken it below half: while paused, the bridge's sends to this client complete none,
 * and the bridge cuts a connection on which none completes for its write-stall timeout (30 s by default), so a
 * pause must last one read of a steady reader, not the time it takes to read a quarter of the cap (16 MiB at the
 * default: every reader under ~0.5 MB/s was cut). A pause stops what is read next, not what is already on its way
 * (one socket read, a message being assembled), so the cap stays as the bound behind it.
 */
export class ReadPause {
  #release: (() => void) | null = null;
  constructor(
    /** null: the connection cannot be paused, the cap alone applies. */
    private readonly hold: (() => () => void) | null,
    private readonly max: number,
  ) {}

  /** Call after each enqueue and each pull: holds or releases by the bytes `controller` has unread. */
  update(controller: ReadableStreamDefaultController<Uint8Array>): void {
    this.updateUnread(this.max - (controller.desiredSize ?? this.max));
  }

  /** The same, for `unread` bytes held outside a controller (a stream's bytes before its readable exists). */
  updateUnread(unread: number): void {
    if (this.hold === null) return;
    if (this.#release === null && unread >= this.max / 2) this.#release = this.hold();
    else if (this.#release !== null && unread < this.max / 2) this.release();
  }

  /** Reads on (the body ended, failed or was cancelled). Idempotent. */
  release(): void {
    const r = this.#release;
    this.#release = null;
    r?.();
  }
}
