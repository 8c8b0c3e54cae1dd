// A session's open streams (WIRE.md §5: OpenStream / StreamData / StreamClose), each an AppStream (streams.ts)
// whose owner this table is: it turns the streams' events into frames toward the client and gives their
// in-flight slots back. It also holds the app-side budget of the session's flow control: the bytes the
// streams queue toward their apps (see limits.ts; the session stops decoding frames while it is over).
//
// The stall watch: while that budget keeps the session from reading, nothing else the client does is seen (not
// even its leaving), so the wait must end. Every quarter of writeStallTimeoutMs the watch looks at each stream's
// progress (AppStream.appIdleMs; the first look, a quarter after the session stopped, starts the count); a stream
// whose app has taken none of its queued bytes for writeStallTimeoutMs is reset — `Error{id, appStallText}` to the
// client, its app connection destroyed, its slot and queue released — and the session reads on. An app that reads
// slowly keeps its stream: any byte taken starts the count over (counted to the byte from the kernel's queues with
// the native addon, app-progress.ts; a look costs a few syscalls per stream, so none is taken when the session
// stops, which a fast app makes it do often). Nor does the watch count while the session holds its apps' output
// (pauseApps): then the app may be waiting on us.
import type { Duplex } from 'node:stream';
import type { ByteEncoding } from '../wire/messages.ts';
import { forwardErrorMessage } from './error-text.ts';
import { forwardContext } from './session-requests.ts';
import type { SessionHost } from './session-types.ts';
import { AppStream, type StreamOwner } from './streams.ts';

/** Shared by every session that has opened no stream (never written to): an idle session holds no table. */
const NO_STREAMS: ReadonlyMap<number, AppStream> = new Map();

/** The `Error.message` of a stream the stall watch reset. */
export const appStallText = (ms: number): string => `stream reset: the app took none of the bytes sent to it for ${ms} ms`;

export class SessionStreams implements StreamOwner {
  readonly #host: SessionHost;
  #streams = NO_STREAMS as Map<number, AppStream>;
  #appQueueBlocked = false;
  /** The stall watch runs (while #appQueueBlocked); its timer is kept between watches (refresh() re-arms it). */
  #watching = false;
  #stallTimer: NodeJS.Timeout | null = null;

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

  /**
   * StreamData from the client. True if it carried bytes to an open stream. `frame`: the reused buffer the payload
   * lies in (AppStream.write).
   */
  write(id: number, payload: Uint8Array, enc: ByteEncoding, frame?: Uint8Array): boolean {
    const stream = this.#streams.get(id);
    if (stream === undefined) void this.#host.sendError(id, 'unknown stream id', enc);
    else if (!stream.write(payload, frame)) void this.#host.sendError(id, 'stream write side already closed', enc);
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
      this.#watching = false;
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
      if (total <= l.maxSessionQueuedBytes / 2 && worst <= l.maxStreamQueuedBytes / 2) {
        this.#appQueueBlocked = false;
        this.#watching = false; // a pending tick finds nothing to do
      }
    } else if (total > l.maxSessionQueuedBytes || worst > l.maxStreamQueuedBytes) {
      this.#appQueueBlocked = true;
      this.#startWatch();
    }
    return this.#appQueueBlocked;
  }

  #startWatch(): void {
    this.#watching = true;
    for (const s of this.#streams.values()) s.forgetLooks(); // the first tick's look starts the count
    if (this.#stallTimer === null) this.#stallTimer = setTimeout(this.#onStallTick, this.#tickMs());
    else this.#stallTimer.refresh();
  }

  #tickMs(): number {
    return Math.max(1, Math.ceil(this.#host.cfg.limits.writeStallTimeoutMs / 4));
  }

  /** Looks at every stream; returns those whose app took nothing for writeStallTimeoutMs. */
  #look(now: number): AppStream[] {
    const limit = this.#host.cfg.limits.writeStallTimeoutMs;
    const stalled: AppStream[] = [];
    for (const s of this.#streams.values()) if (s.appIdleMs(now) >= limit) stalled.push(s);
    return stalled;
  }

  readonly #onStallTick = (): void => {
    if (!this.#watching || this.#host.state() === 'closed') {
      this.#watching = false;
      this.#stallTimer = null; // let go of the fired timer: a watch that starts again makes a new one
      return;
    }
    // Still waiting on the apps? Re-evaluated here: while the client's own queue blocks the session, nothing else asks.
    if (!this.appQueueBlocked()) {
      this.#stallTimer = null;
      this.#host.updateFlow(); // the session reads on if nothing else holds it
      return;
    }
    // The session holds its apps' output (pauseApps: the client's queue or the shared budget is over): an app that
    // cannot write (an echo, a proxy) stops reading too, and the stall is the session's, watched by its own
    // write-stall timeout. The count starts over once the apps are read again.
    if (this.#host.clientQueueBlocked()) {
      for (const s of this.#streams.values()) s.forgetLooks();
      this.#stallTimer?.refresh();
      return;
    }
    // Decided before any reset: a reset lets the session read on, which may stop it again and start a new watch.
    const stalled = this.#look(performance.now());
    for (const s of stalled) if (!s.finished) this.#reset(s);
    if (this.#watching) this.#stallTimer?.refresh(); // else it stays spent, or a new watch re-armed it
  };

  #reset(stream: AppStream): void {
    const host = this.#host;
    const ms = host.cfg.limits.writeStallTimeoutMs;
    host.cfg.shared.counters.streamStalls++;
    host.cfg.logger.debug({ session: host.id, stream: stream.id, queuedBytes: stream.queuedBytes }, 'stream reset: its app took none of the bytes queued for it');
    void host.sendError(stream.id, appStallText(ms), stream.encoding);
    stream.destroy(); // its slot and its queue are released: the session re-evaluates its budgets and reads on
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
    this.#watching = false;
    if (this.#stallTimer !== null) clearTimeout(this.#stallTimer);
    this.#stallTimer = null;
    for (const s of [...this.#streams.values()]) s.destroy();
  }

  // StreamOwner

  streamData(stream: AppStream, payload: Uint8Array, owned: boolean, pooled?: Uint8Array): void {
    void this.#host.send({ type: 'StreamData', id: stream.id, payload }, stream.encoding, owned, pooled);
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
