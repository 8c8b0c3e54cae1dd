// One session per connection: [PROXY v2 header] → Noise NN responder handshake → the message loop of
// WIRE.md §5. Everything a client sends is untrusted: any receive failure (bad frame length, AEAD failure,
// undecodable CBOR, bad handshake) closes this connection without a reply and never throws out of here;
// other sessions are unaffected.
//
// Reading: the socket's 'data' chunks go into a FrameReader (a buffer; a frame is never lost half-read).
// Frames are decrypted, decoded and dispatched synchronously in arrival order; the loop stops (and the
// socket is paused) while the session is over one of its budgets (see limits.ts), and picks up from the
// buffered bytes when the budget frees.
// Writing: every byte toward the client goes through one FrameWriter (≤ 32 KiB per write, one write at a
// time); frames are encrypted when queued, so the nonce order is the write order. Replies go out in
// completion order.
//
// This file keeps the session's lifecycle, the frame loop, the send path and the budgets; it dispatches
// each message through message-dispatch.ts to session-requests.ts (RequestAttestation, Control),
// data-requests.ts (Data) and session-streams.ts (OpenStream, StreamData, StreamClose), which reach back
// through a SessionHost.
import { randomBytes } from 'node:crypto';
import { setMaxListeners } from 'node:events';
import { Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import type { CipherState } from '../noise/cipher-state.ts';
import { createHandshake } from '../noise/handshake.ts';
import { closeLingering } from '../transport/lingering-close.ts';
import { NativeStream } from '../transport/native-stream.ts';
import { parseProxyV2 } from '../transport/proxy-v2.ts';
import type { ConnectionInfo } from '../transport/types.ts';
import { concatBytes, toHex } from '../util/bytes.ts';
import { FrameReader } from '../wire/frames.ts';
import { returnFrameBuffer, takeFrameBuffer } from './message-buffers.ts';
import { decodeClientMessage, type ByteEncoding, type ServerMessage } from '../wire/messages.ts';
import { DataRequests } from './data-requests.ts';
import { truncate } from './error-text.ts';
import type { ForwardContext } from './forwarder.ts';
import type { Limits } from './limits.ts';
import { dispatchMessage } from './message-dispatch.ts';
import { SessionOutput, OVER_BUDGET_TEXT } from './session-output.ts';
import { SessionStreams } from './session-streams.ts';
import { logSessionClosed, type CloseReason, type SessionConfig, type SessionHost, type SessionState, type SessionStats, type SessionSummary } from './session-types.ts';
import { clientKey } from '../util/ip-bytes.ts';

export type { Channel, CloseReason, SessionConfig, SessionStats, SessionSummary } from './session-types.ts';

/** Noise message 1 (client ephemeral) and 2 (server ephemeral ‖ tag) sizes. */
const HS1_LEN = 32;

export class Session {
  readonly id = toHex(randomBytes(6));
  readonly info: ConnectionInfo;
  readonly #startedAt = performance.now();
  readonly #cfg: SessionConfig;
  readonly #limits: Limits;
  readonly #sock: Duplex;
  /** Read chunks are fresh buffers nobody else holds (a socket); another Duplex's writer may keep what it wrote. */
  readonly #ownsReads: boolean;
  readonly #reader = new FrameReader();
  readonly #out: SessionOutput;
  readonly #onClosed: (s: Session, summary: SessionSummary) => void;
  readonly #onReleased: (s: Session) => void;
  /** The connection is closed (not lingering any more): its slots were given back. */
  #released = false;
  /** Aborts what requests started (app connects) when the session ends; made on first use (an idle session needs none). */
  #abort: AbortController | null = null;
  readonly #stats: SessionStats = { framesIn: 0, framesOut: 0, data: 0, streams: 0, attestations: 0, controls: 0, refused: 0 };
  readonly #host: SessionHost;
  readonly #data: DataRequests;
  readonly #streams: SessionStreams;

  #state: SessionState;
  #proxyBuf: Uint8Array | null = null;
  #client: ForwardContext['client'];
  #recv: CipherState | null = null;
  #hash: Uint8Array | null = null;
  #hsTimer: NodeJS.Timeout | null = null;
  #idleTimer: NodeJS.Timeout | null = null;
  /** Handshake admission: may run its crypto now / waits for a later turn (see admission.ts). */
  #hsAdmitted = false;
  #hsWaiting = false;
  /** The PROXY v2 source address this session counts against (maxSessionsPerClient). */
  #clientKey: string | null = null;

  /** Data requests whose reply is not yet written + open streams. */
  #inFlight = 0;
  /** Attestation / Control requests being answered. */
  #pendingSession = 0;

  #driving = false;
  #sockPaused = false;
  #clientQueueBlocked = false;
  #inputEnded = false;
  #draining = false;

  /**
   * `onClosed`: the session ended (its summary); `onReleased`: its connection is closed too, after a lingering
   * close (see #close) — until then it holds its slot (maxSessions, maxSessionsPerClient).
   */
  constructor(
    sock: Duplex,
    info: ConnectionInfo,
    cfg: SessionConfig,
    onClosed: (s: Session, summary: SessionSummary) => void,
    onReleased: (s: Session) => void,
  ) {
    this.#sock = sock;
    this.#ownsReads = sock instanceof Socket || sock instanceof NativeStream;
    this.info = info;
    this.#cfg = cfg;
    this.#limits = cfg.limits;
    this.#onClosed = onClosed;
    this.#onReleased = onReleased;
    this.#host = new Session.#Host(this);
    this.#data = new DataRequests(this.#host);
    this.#streams = new SessionStreams(this.#host);
    this.#out = new SessionOutput(sock, cfg.shared.budget, cfg.shared.counters, cfg.limits.writeStallTimeoutMs, {
      onWritten: () => this.#updateFlow(),
      onFailed: (err: unknown) => this.#close('send-failed', err),
      onStall: () => {
        cfg.shared.counters.writeStalls++;
        this.#close('write-stall');
      },
    });
    this.#state = cfg.acceptProxyProtocol ? 'proxy' : 'handshake';
    this.#hsTimer = setTimeout(() => this.#close('handshake-timeout'), this.#limits.handshakeTimeoutMs);
    sock.on('data', this.#onSockData);
    sock.on('end', this.#onSockEnd);
    sock.on('error', this.#onSockError);
    sock.on('close', this.#onSockClose);
    cfg.logger.debug({ session: this.id, remote: info.remote, transport: info.transport, channel: cfg.channel }, 'session open');
  }

  get closed(): boolean {
    return this.#state === 'closed';
  }

  get inFlight(): number {
    return this.#inFlight;
  }

  /** Stop taking new requests; close as soon as nothing is in flight. */
  drain(): void {
    if (this.#state === 'closed') return;
    this.#draining = true;
    if (this.#state !== 'open') this.#close('drain');
    else this.#maybeFinish();
  }

  /** Immediate teardown (responder shutdown); cuts a lingering connection too. */
  destroy(): void {
    this.#close('shutdown');
    this.#sock.destroy();
    this.#release();
  }

  /**
   * The drain timeout hit: answers every Data request and stream still in flight with `Error{id, message}`
   * (a client must never be left waiting on a request the agent silently dropped), lets those frames reach
   * the socket, then closes. The responder destroys the session if the client does not take them in time.
   */
  expire(message: string): void {
    if (this.#state === 'closed' || this.#state === 'closing') return;
    if (this.#state !== 'open') {
      this.#close('drain');
      return;
    }
    this.#draining = true;
    this.#data.expire(message);
    this.#streams.expire(message);
    this.#closeGracefully('drain');
  }

  #signal(): AbortSignal {
    if (this.#abort === null) {
      this.#abort = new AbortController();
      // One abort listener per connect in flight (up to maxInFlight): not a leak.
      setMaxListeners(0, this.#abort.signal);
      if (this.#state === 'closed') this.#abort.abort();
    }
    return this.#abort.signal;
  }

  /**
   * What message-dispatch.ts, session-requests.ts, data-requests.ts and session-streams.ts may see and do of this
   * session: one small object whose methods live on a shared prototype (per-session closures would cost ~1 KiB
   * of every idle session). Inside the class body, so it reaches the session's private members.
   */
  static readonly #Host = class implements SessionHost {
    readonly id: string;
    readonly cfg: SessionConfig;
    readonly stats: SessionStats;
    readonly #s: Session;
    constructor(s: Session) {
      this.#s = s;
      this.id = s.id;
      this.cfg = s.#cfg;
      this.stats = s.#stats;
    }
    signal(): AbortSignal {
      return this.#s.#signal();
    }
    state(): SessionState {
      return this.#s.#state;
    }
    handshakeHash(): Uint8Array {
      return this.#s.#hash!;
    }
    client(): ForwardContext['client'] {
      return this.#s.#client;
    }
    clientQueueBlocked(): boolean {
      return this.#s.#clientQueueBlocked;
    }
    inputPaused(): boolean {
      return this.#s.#sockPaused;
    }
    admit(id: number, enc: ByteEncoding): boolean {
      return this.#s.#admit(id, enc);
    }
    release(): void {
      this.#s.#inFlight--;
      this.#s.#afterWork();
    }
    sessionRequestStarted(): void {
      this.#s.#pendingSession++;
    }
    sessionRequestDone(): void {
      this.#s.#pendingSession--;
      this.#s.#afterWork();
    }
    send(msg: ServerMessage, enc: ByteEncoding, ownedPayload?: boolean, pooled?: Uint8Array): Promise<void> {
      return this.#s.#sendMessage(msg, enc, ownedPayload, pooled);
    }
    sendError(id: number, message: string, enc: ByteEncoding): Promise<void> {
      return this.#s.#sendError(id, message, enc);
    }
    updateFlow(): void {
      this.#s.#updateFlow();
    }
    close(reason: CloseReason, err?: unknown): void {
      this.#s.#close(reason, err);
    }
    closeGracefully(reason: CloseReason): void {
      this.#s.#closeGracefully(reason);
    }
  };

  // ---------------------------------------------------------------------------------------------------------
  // Inbound

  readonly #onSockData = (chunk: Buffer): void => {
    if (this.#state === 'closed' || this.#state === 'closing') return;
    try {
      if (this.#state === 'proxy') {
        if (!this.#readProxyHeader(chunk)) return;
      } else {
        this.#reader.push(chunk);
      }
    } catch (err) {
      this.#close('receive-failed', err);
      return;
    }
    this.#drive();
  };

  readonly #onSockEnd = (): void => {
    if (this.#state === 'closed') return;
    this.#inputEnded = true;
    // A transport that is not half-open capable (net default) ends our side too: nothing can be answered.
    if (this.#state !== 'open' || (this.#sock as { allowHalfOpen?: boolean }).allowHalfOpen === false) {
      this.#close('client-closed');
      return;
    }
    try {
      this.#reader.end();
    } catch (err) {
      this.#close('receive-failed', err);
      return;
    }
    this.#drive();
    this.#maybeFinish();
  };

  readonly #onSockError = (err: Error): void => {
    this.#close('transport-error', err);
  };

  readonly #onSockClose = (): void => {
    this.#close(this.#inputEnded ? 'client-closed' : 'transport-error');
  };

  /** Accumulates the PROXY v2 header; true once it is complete and the rest went to the frame reader. */
  #readProxyHeader(chunk: Uint8Array): boolean {
    const buf = this.#proxyBuf === null ? chunk : concatBytes(this.#proxyBuf, chunk);
    let header;
    try {
      header = parseProxyV2(buf, { maxLength: this.#limits.maxProxyHeaderBytes });
    } catch (err) {
      this.#close('proxy-header', err);
      return false;
    }
    if (header === null) {
      this.#proxyBuf = buf;
      return false;
    }
    this.#proxyBuf = null;
    if (header.source !== undefined) {
      // Before any crypto: one client (an address; an IPv6 /64) holds at most maxSessionsPerClient sessions.
      const key = clientKey(header.source.address);
      if (!this.#cfg.shared.clients.claim(key)) {
        this.#cfg.shared.counters.refusedPerClient++;
        this.#cfg.shared.refused('sessions-per-client');
        this.#close('client-limit');
        return false;
      }
      this.#clientKey = key;
      this.#client = { ...header.source };
    }
    this.#state = 'handshake';
    const rest = buf.subarray(header.consumed);
    if (rest.length > 0) this.#reader.push(rest.slice());
    return true;
  }

  /** Runs the handshake and the frame loop over whatever is buffered, as far as the budgets allow. */
  #drive(): void {
    if (this.#driving) return;
    this.#driving = true;
    try {
      if (this.#state === 'handshake' && !this.#handshake()) return;
      while (this.#state === 'open' && !this.#readBlocked()) {
        const ct = this.#reader.nextFrame(takeFrameBuffer);
        if (ct === null) break;
        // The frame is ours alone when the reader copied it (it spanned reads) or when it is a socket's read
        // buffer: then it is decrypted in place.
        const copied = this.#reader.lastFrameCopied;
        const pt = copied || this.#ownsReads ? this.#recv!.decryptOwned(ct) : this.#recv!.decrypt(ct);
        const { message, encoding } = decodeClientMessage(pt);
        // An int-array message keeps no view of its frame (byte fields are decoded into new arrays); a bstr
        // StreamData payload is the only view of its copied frame, which the stream gives back once written.
        if (copied && encoding === 'array') returnFrameBuffer(ct);
        const frame = copied && encoding === 'bstr' && message.type === 'StreamData' ? ct : undefined;
        this.#stats.framesIn++;
        // Only frames that start or advance something count as activity (a no-op frame must not hold a slot).
        if (dispatchMessage(this.#host, this.#data, this.#streams, message, encoding, frame)) this.#idleTimer?.refresh();
      }
    } catch (err) {
      this.#close(this.#state === 'handshake' ? 'handshake-failed' : 'receive-failed', err);
    } finally {
      this.#driving = false;
    }
    this.#updateFlow();
    if (this.#inputEnded) this.#maybeFinish(); // the last frames the client sent before its EOF are decoded now
  }

  /** True once the handshake is done (hs2 queued as one 48-byte write). */
  #handshake(): boolean {
    if (this.#reader.buffered < HS1_LEN || !this.#admitHandshake()) return false;
    const hs1 = this.#reader.readExact(HS1_LEN)!;
    const hs = createHandshake({ role: 'responder', primitives: this.#cfg.primitives, ephemeralPrivateKey: this.#cfg.ephemeralKey?.() });
    hs.readMessage(hs1);
    const hs2 = hs.writeMessage();
    const transport = hs.split();
    this.#recv = transport.recv;
    this.#out.start(transport.send);
    this.#hash = transport.handshakeHash;
    this.#state = 'open';
    clearTimeout(this.#hsTimer!);
    this.#hsTimer = null;
    this.#idleTimer = setTimeout(this.#onIdle, this.#limits.idleTimeoutMs);
    void this.#out.writeRaw(hs2);
    if (this.#draining) this.#maybeFinish();
    return true;
  }

  /** A complete hs1 is here: may its crypto run now? Else it waits for a later turn (socket paused), or the session closes. */
  #admitHandshake(): boolean {
    if (this.#hsAdmitted) return true;
    if (this.#hsWaiting) return false;
    const shared = this.#cfg.shared;
    const r = shared.handshakes.request(this.#onHandshakeTurn);
    if (r === 'refused') {
      shared.refused('handshakes');
      this.#close('handshake-refused');
      return false;
    }
    if (r === 'queued') {
      this.#hsWaiting = true;
      this.#sockPaused = true;
      this.#sock.pause();
    }
    return this.#hsAdmitted;
  }

  readonly #onHandshakeTurn = (): void => {
    this.#hsAdmitted = true;
    if (!this.#hsWaiting || this.#state === 'closed') return;
    this.#hsWaiting = false;
    this.#sockPaused = false;
    this.#sock.resume();
    this.#drive();
  };

  /** Refuses a Data/OpenStream beyond the limits; true if it may start (it then holds an in-flight slot). */
  #admit(id: number, enc: ByteEncoding): boolean {
    if (this.#draining) {
      this.#stats.refused++;
      void this.#sendError(id, 'agent is shutting down', enc);
      return false;
    }
    if (this.#inFlight >= this.#limits.maxInFlight) {
      this.#stats.refused++;
      void this.#sendError(id, `too many in-flight requests (limit ${this.#limits.maxInFlight})`, enc);
      return false;
    }
    if (this.#cfg.shared.budget.over) {
      this.#stats.refused++;
      this.#cfg.shared.counters.overBudget++;
      void this.#sendError(id, OVER_BUDGET_TEXT, enc);
      return false;
    }
    this.#inFlight++;
    return true;
  }

  // ---------------------------------------------------------------------------------------------------------
  // Outbound

  #sendError(id: number, message: string, enc: ByteEncoding): Promise<void> {
    return this.#sendMessage({ type: 'Error', id, message: truncate(message) }, enc);
  }

  /**
   * Encrypts and queues one message; resolves when written (or when the session is gone). Never rejects.
   * `ownedPayload`: the payload is handed over (an app socket's read buffers) and may be encrypted in place;
   * `pooled`: the reused buffer it lies in (SessionHost.send).
   */
  #sendMessage(msg: ServerMessage, enc: ByteEncoding, ownedPayload = false, pooled?: Uint8Array): Promise<void> {
    if (this.#state === 'closed' || !this.#out.ready) return Promise.resolve();
    let written: Promise<void>;
    try {
      written = this.#out.send(msg, enc, ownedPayload, pooled);
    } catch (err) {
      this.#close('send-failed', err);
      return Promise.resolve();
    }
    this.#stats.framesOut++;
    this.#updateFlow();
    return written;
  }

  // ---------------------------------------------------------------------------------------------------------
  // Flow control, idle, close

  /** True while the session must not decode more frames. Hysteresis: a budget blocks above its limit and frees below half. */
  #readBlocked(): boolean {
    if (this.#clientQueueBlocked || this.#out.deferred > 0) return true;
    if (this.#pendingSession >= this.#limits.maxPendingSessionRequests) return true;
    return this.#streams.appQueueBlocked();
  }

  /** Re-evaluates every budget: pauses/resumes app reads and the client socket, resumes decoding buffered frames. */
  #updateFlow(): void {
    if (this.#state === 'closed') return;
    this.#out.sync();
    const queued = this.#out.queuedBytes;
    const max = this.#limits.maxClientQueuedBytes;
    // Over the shared budget, a session that holds output of its own waits until it drained; one whose output
    // waits for room (deferred) takes nothing more from its apps until it is sent, whatever its own queue holds.
    const waiting = this.#out.deferred > 0;
    const overShared = queued > 0 && this.#cfg.shared.budget.over;
    if (!this.#clientQueueBlocked && (queued > max || overShared || waiting)) {
      this.#clientQueueBlocked = true;
      this.#streams.pauseApps();
    } else if (this.#clientQueueBlocked && queued <= max / 2 && !overShared && !waiting) {
      this.#clientQueueBlocked = false;
      this.#streams.resumeApps();
    }
    if (this.#driving) return;
    const blocked = this.#hsWaiting || (this.#state === 'open' && this.#readBlocked());
    if (blocked && !this.#sockPaused) {
      this.#sockPaused = true;
      this.#sock.pause();
    } else if (!blocked && this.#sockPaused) {
      this.#sockPaused = false;
      this.#sock.resume();
      if (this.#reader.buffered > 0) this.#drive();
    }
  }

  #afterWork(): void {
    if (this.#state === 'closed') return;
    this.#updateFlow();
    this.#maybeFinish();
  }

  #busy(): boolean {
    return this.#inFlight > 0 || this.#pendingSession > 0;
  }

  /**
   * After the client's EOF or a drain: close once nothing is left to answer — after an EOF, frames still buffered
   * (decoding paused by a budget) are requests too.
   */
  #maybeFinish(): void {
    if (this.#state !== 'open' || this.#busy()) return;
    if (this.#inputEnded && this.#reader.buffered === 0) this.#closeGracefully('client-closed');
    else if (this.#draining) this.#closeGracefully('drain'); // buffered frames would only be refused
  }

  readonly #onIdle = (): void => {
    if (this.#state !== 'open') return;
    if (this.#busy() || this.#out.queuedBytes > 0 || this.#out.deferred > 0) {
      this.#idleTimer?.refresh();
      return;
    }
    this.#closeGracefully('idle');
  };

  /** Stops reading, lets queued frames reach the socket, then ends it. */
  #closeGracefully(reason: CloseReason): void {
    if (this.#state !== 'open') return;
    this.#state = 'closing';
    const flushed = this.#out.flushed;
    void flushed.then(() => {
      if (this.#state === 'closed') return;
      this.#close(reason, undefined, true);
    });
  }

  #close(reason: CloseReason, err?: unknown, graceful = false): void {
    if (this.#state === 'closed') return;
    this.#state = 'closed';
    if (this.#hsTimer !== null) clearTimeout(this.#hsTimer);
    if (this.#idleTimer !== null) clearTimeout(this.#idleTimer);
    this.#out.close();
    if (this.#hsWaiting) this.#cfg.shared.handshakes.cancel(this.#onHandshakeTurn);
    this.#abort?.abort();
    this.#streams.destroyAll();
    this.#data.destroyApps();
    this.#sock.off('data', this.#onSockData);
    if (graceful) {
      // The final frames are flushed: FIN, then read and drop what the client still sends until its FIN or a
      // bound, as the HTTP paths do (lingering-close.ts) — closed now, the client's bytes would make the kernel
      // answer RST and drop what of those frames it still holds. The slot is held until the socket closes.
      closeLingering(this.#sock, {
        flushTimeoutMs: this.#limits.writeStallTimeoutMs,
        lingerTimeoutMs: this.#limits.lingerTimeoutMs,
        lingerTimeMs: this.#limits.lingerTimeMs,
      });
    } else {
      this.#sock.destroy();
    }
    const summary: SessionSummary = {
      id: this.id,
      remote: this.info.remote,
      channel: this.#cfg.channel,
      reason,
      durationMs: Math.round(performance.now() - this.#startedAt),
      stats: { ...this.#stats },
    };
    logSessionClosed(this.#cfg.logger, summary, err);
    this.#onClosed(this, summary);
    // A destroyed socket's fd is closed already ('close' follows on a later tick).
    if (this.#sock.destroyed || this.#sock.closed) this.#release();
    else this.#sock.once('close', () => this.#release());
  }

  /** The connection is closed: its slots (the responder's, the client address's) are given back. */
  #release(): void {
    if (this.#released) return;
    this.#released = true;
    if (this.#clientKey !== null) this.#cfg.shared.clients.release(this.#clientKey);
    this.#clientKey = null;
    this.#onReleased(this);
  }
}
