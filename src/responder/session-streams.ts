// A session's open streams (WIRE.md §5: OpenStream / StreamData / StreamClose), each an AppStream (streams.ts)
// whose owner this table is: it turns the streams' events into frames toward the client and gives their
// in-flight slots back. It also holds the app-side budget of the session's flow control: the bytes the
// streams queue toward their apps (see limits.ts; the session stops decoding frames while it is over).
import type { Duplex } from 'node:stream';
import type { ByteEncoding } from '../wire/messages.ts';
import { forwardErrorMessage } from './error-text.ts';
import { forwardContext } from './session-requests.ts';
import type { SessionHost } from './session-types.ts';
import { AppStream, type StreamOwner } from './streams.ts';

/** Shared by every session that has opened no stream (never written to): an idle session holds no table. */
const NO_STREAMS: ReadonlyMap<number, AppStream> = new Map();

export class SessionStreams implements StreamOwner {
  readonly #host: SessionHost;
  #streams = NO_STREAMS as Map<number, AppStream>;
  #appQueueBlocked = false;

  constructor(host: SessionHost) {
    this.#host = host;
  }

  get size(): number {
    return this.#streams.size;
  }

  has(id: number): boolean {
    return this.#streams.has(id);
  }

  /** OpenStream: admitted (or refused by the session's limits), then connected by the forwarder. True if admitted. */
  open(id: number, payload: Uint8Array, enc: ByteEncoding): boolean {
    const host = this.#host;
    if (this.#streams.has(id)) {
      void host.sendError(id, 'stream id already in use', enc);
      return false;
    }
    if (!host.admit(id, enc)) return false;
    host.stats.streams++;
    const stream = new AppStream(this, id, enc, payload, host.clientQueueBlocked());
    if (this.#streams === NO_STREAMS) this.#streams = new Map();
    this.#streams.set(id, stream);
    const ctx = forwardContext(host, 'stream');
    const attach = (app: Duplex): void => {
      if (host.state() === 'closed') app.destroy();
      else stream.attach(app);
    };
    Promise.resolve()
      .then(() => host.cfg.forwarder.connect(ctx))
      .then(attach, (err: unknown) => stream.connectFailed(forwardErrorMessage(err)));
    return true;
  }

  /** StreamData from the client. True if it carried bytes to an open stream. */
  write(id: number, payload: Uint8Array, enc: ByteEncoding): boolean {
    const stream = this.#streams.get(id);
    if (stream === undefined) void this.#host.sendError(id, 'unknown stream id', enc);
    else if (!stream.write(payload)) void this.#host.sendError(id, 'stream write side already closed', enc);
    else return payload.length > 0;
    return false;
  }

  /** StreamClose from the client. True if it closed (part of) an open stream. */
  close(id: number, half: 'Write' | 'Both'): boolean {
    const stream = this.#streams.get(id);
    if (stream === undefined) return false; // already over (e.g. the app closed first): nothing to do
    if (half === 'Write') stream.closeWrite();
    else stream.destroy();
    return true;
  }

  /**
   * True while the streams queue too much toward their apps (in total, or one of them). Hysteresis: blocks above
   * the limit and frees below half.
   */
  appQueueBlocked(): boolean {
    if (this.#streams.size === 0) {
      this.#appQueueBlocked = false;
      return false;
    }
    const l = this.#host.cfg.limits;
    let total = 0;
    let worst = 0;
    for (const s of this.#streams.values()) {
      const q = s.queuedBytes;
      total += q;
      if (q > worst) worst = q;
    }
    if (this.#appQueueBlocked) {
      if (total <= l.maxSessionQueuedBytes / 2 && worst <= l.maxStreamQueuedBytes / 2) this.#appQueueBlocked = false;
    } else if (total > l.maxSessionQueuedBytes || worst > l.maxStreamQueuedBytes) {
      this.#appQueueBlocked = true;
    }
    return this.#appQueueBlocked;
  }

  /** The client connection's write queue went over budget: stop reading from the apps. */
  pauseApps(): void {
    for (const s of this.#streams.values()) s.pauseApp();
  }

  resumeApps(): void {
    for (const s of this.#streams.values()) s.resumeApp();
  }

  /** Answers every open stream with `Error{id, message}` and tears it down (the drain timeout hit). */
  expire(message: string): void {
    for (const stream of [...this.#streams.values()]) {
      void this.#host.sendError(stream.id, message, stream.encoding);
      stream.destroy();
    }
  }

  /** The session closed: tears every stream down without telling the client. */
  destroyAll(): void {
    for (const s of [...this.#streams.values()]) s.destroy();
  }

  // StreamOwner

  streamData(stream: AppStream, payload: Uint8Array, owned: boolean): void {
    void this.#host.send({ type: 'StreamData', id: stream.id, payload }, stream.encoding, owned);
  }

  streamClosed(stream: AppStream): void {
    void this.#host.send({ type: 'StreamClose', id: stream.id }, stream.encoding);
  }

  streamError(stream: AppStream, message: string): void {
    void this.#host.sendError(stream.id, message, stream.encoding);
  }

  streamFinished(stream: AppStream): void {
    if (this.#streams.get(stream.id) === stream) this.#streams.delete(stream.id);
    this.#host.release();
  }

  queueChanged(): void {
    this.#host.updateFlow();
  }
}
