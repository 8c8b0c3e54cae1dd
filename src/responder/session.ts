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
import { randomBytes } from 'node:crypto';
import { setMaxListeners } from 'node:events';
import { Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import type { Logger } from 'pino';
import type { Nsm } from '../attestation/nsm.ts';
import type { CipherState } from '../noise/cipher-state.ts';
import { createHandshake } from '../noise/handshake.ts';
import type { NoisePrimitives } from '../noise/primitives.ts';
import { NativeStream } from '../transport/native-stream.ts';
import { parseProxyV2 } from '../transport/proxy-v2.ts';
import type { ConnectionInfo } from '../transport/types.ts';
import { concatBytes, toHex } from '../util/bytes.ts';
import { FrameWriter } from '../wire/frame-writer.ts';
import { FrameReader } from '../wire/frames.ts';
import {
  decodeClientMessage,
  encodeServerMessageParts,
  MAX_MESSAGE_LEN,
  serverMessageSize,
  type ByteEncoding,
  type ClientMessage,
  type ServerMessage,
} from '../wire/messages.ts';
import { handleControl, type ControlConfig } from './control.ts';
import type { ForwardContext, Forwarder } from './forwarder.ts';
import type { Limits } from './limits.ts';
import { AppStream, type StreamOwner } from './streams.ts';

export type Channel = 'public' | 'control';

/** Noise message 1 (client ephemeral) and 2 (server ephemeral ‖ tag) sizes. */
const HS1_LEN = 32;
/** Longest `Error.message` we send (forwarder messages are bounded here, whatever they say). */
const MAX_ERROR_TEXT = 1024;

const PUBLIC_TYPES: ReadonlySet<ClientMessage['type']> = new Set(['RequestAttestation', 'Data', 'OpenStream', 'StreamData', 'StreamClose']);
const CONTROL_TYPES: ReadonlySet<ClientMessage['type']> = new Set(['RequestAttestation', 'GetControlNonce', 'Control']);

/** Why a session ended (logged; tests read it through the responder's onSessionClosed hook). */
export type CloseReason =
  | 'client-closed'
  | 'transport-error'
  | 'proxy-header'
  | 'handshake-timeout'
  | 'handshake-failed'
  | 'receive-failed'
  | 'send-failed'
  | 'wrong-channel'
  | 'attestation-failed'
  | 'idle'
  | 'drain'
  | 'shutdown';

export interface SessionStats {
  framesIn: number;
  framesOut: number;
  data: number;
  streams: number;
  attestations: number;
  controls: number;
  /** Requests answered with Error because of a limit (in-flight, draining). */
  refused: number;
}

export interface SessionSummary {
  id: string;
  remote: string;
  channel: Channel;
  reason: CloseReason;
  /** Stable code of the error behind the reason, if any. */
  errorCode?: string;
  durationMs: number;
  stats: SessionStats;
}

export interface SessionConfig {
  channel: Channel;
  nsm: Nsm;
  forwarder: Forwarder;
  primitives: NoisePrimitives;
  limits: Limits;
  acceptProxyProtocol: boolean;
  features: readonly string[];
  attestationPublicKey?: () => Uint8Array | undefined;
  control: ControlConfig;
  logger: Logger;
  /** Fixed ephemeral private key per session (tests and transcript vectors only). */
  ephemeralKey?: () => Uint8Array;
}

type State = 'proxy' | 'handshake' | 'open' | 'closing' | 'closed';

interface DataRequest {
  readonly id: number;
  readonly enc: ByteEncoding;
  answered: boolean;
}

export class Session implements StreamOwner {
  readonly id = toHex(randomBytes(6));
  readonly info: ConnectionInfo;
  readonly #startedAt = performance.now();
  readonly #cfg: SessionConfig;
  readonly #limits: Limits;
  readonly #sock: Duplex;
  /** Read chunks are fresh buffers nobody else holds (a socket); another Duplex's writer may keep what it wrote. */
  readonly #ownsReads: boolean;
  readonly #reader = new FrameReader();
  readonly #writer: FrameWriter;
  readonly #onClosed: (s: Session, summary: SessionSummary) => void;
  readonly #abort = new AbortController();
  readonly #stats: SessionStats = { framesIn: 0, framesOut: 0, data: 0, streams: 0, attestations: 0, controls: 0, refused: 0 };

  #state: State;
  #proxyBuf: Uint8Array | null = null;
  #client: ForwardContext['client'];
  #recv: CipherState | null = null;
  #send: CipherState | null = null;
  #hash: Uint8Array | null = null;
  #hsTimer: NodeJS.Timeout | null = null;
  #idleTimer: NodeJS.Timeout | null = null;

  /** Data requests whose reply is not yet written + open streams. */
  #inFlight = 0;
  /** Attestation / Control requests being answered. */
  #pendingSession = 0;
  readonly #streams = new Map<number, AppStream>();
  /** Data requests not yet answered (expire() answers them when the drain timeout hits). */
  readonly #dataRequests = new Set<DataRequest>();
  /** App connections of Data requests (destroyed on close). */
  readonly #dataApps = new Set<Duplex>();

  #driving = false;
  #sockPaused = false;
  #appQueueBlocked = false;
  #clientQueueBlocked = false;
  #inputEnded = false;
  #draining = false;
  /** Resolves when everything queued so far has been written. */
  #lastWrite: Promise<void> = Promise.resolve();

  constructor(sock: Duplex, info: ConnectionInfo, cfg: SessionConfig, onClosed: (s: Session, summary: SessionSummary) => void) {
    this.#sock = sock;
    this.#ownsReads = sock instanceof Socket || sock instanceof NativeStream;
    this.info = info;
    this.#cfg = cfg;
    this.#limits = cfg.limits;
    this.#onClosed = onClosed;
    // Frames queued together share writes (≤ 32768 bytes each, one at a time: WIRE.md §2).
    this.#writer = new FrameWriter(sock, { coalesce: true });
    // One abort listener per connect in flight (up to maxInFlight): not a leak.
    setMaxListeners(0, this.#abort.signal);
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

  /** Immediate teardown (responder shutdown). */
  destroy(): void {
    this.#close('shutdown');
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
    for (const req of this.#dataRequests) {
      req.answered = true;
      void this.#sendError(req.id, message, req.enc);
    }
    this.#dataRequests.clear();
    for (const stream of [...this.#streams.values()]) {
      void this.#sendError(stream.id, message, stream.encoding);
      stream.destroy();
    }
    this.#closeGracefully('drain');
  }

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
    if (header.source !== undefined) this.#client = { ...header.source };
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
        const ct = this.#reader.nextFrame();
        if (ct === null) break;
        // From a socket the frame is ours alone (its read buffers, or the reader's own copy): decrypted in place.
        const pt = this.#ownsReads ? this.#recv!.decryptOwned(ct) : this.#recv!.decrypt(ct);
        const { message, encoding } = decodeClientMessage(pt);
        this.#stats.framesIn++;
        this.#idleTimer?.refresh();
        this.#dispatch(message, encoding);
      }
    } catch (err) {
      this.#close(this.#state === 'handshake' ? 'handshake-failed' : 'receive-failed', err);
    } finally {
      this.#driving = false;
    }
    this.#updateFlow();
  }

  /** True once the handshake is done (hs2 queued as one 48-byte write). */
  #handshake(): boolean {
    const hs1 = this.#reader.readExact(HS1_LEN);
    if (hs1 === null) return false;
    const hs = createHandshake({ role: 'responder', primitives: this.#cfg.primitives, ephemeralPrivateKey: this.#cfg.ephemeralKey?.() });
    hs.readMessage(hs1);
    const hs2 = hs.writeMessage();
    const transport = hs.split();
    this.#recv = transport.recv;
    this.#send = transport.send;
    this.#hash = transport.handshakeHash;
    this.#state = 'open';
    clearTimeout(this.#hsTimer!);
    this.#hsTimer = null;
    this.#idleTimer = setTimeout(this.#onIdle, this.#limits.idleTimeoutMs);
    this.#track(this.#writer.writeRaw(hs2));
    if (this.#draining) this.#maybeFinish();
    return true;
  }

  #dispatch(msg: ClientMessage, enc: ByteEncoding): void {
    const allowed = this.#cfg.channel === 'public' ? PUBLIC_TYPES : CONTROL_TYPES;
    if (!allowed.has(msg.type)) {
      this.#refuseWrongChannel(msg.type);
      return;
    }
    switch (msg.type) {
      case 'RequestAttestation':
        void this.#attest(enc);
        return;
      case 'GetControlNonce':
        this.#sendMessage({ type: 'ControlNonce', nonce: this.#cfg.control.nonce.current() }, enc);
        return;
      case 'Control':
        void this.#controlCommand(msg.payload, msg.signature, enc);
        return;
      case 'Data':
        this.#startData(msg.id, msg.payload, enc);
        return;
      case 'OpenStream':
        this.#openStream(msg.id, msg.payload, enc);
        return;
      case 'StreamData': {
        const stream = this.#streams.get(msg.id);
        if (stream === undefined) this.#sendError(msg.id, 'unknown stream id', enc);
        else if (!stream.write(msg.payload)) this.#sendError(msg.id, 'stream write side already closed', enc);
        return;
      }
      case 'StreamClose': {
        const stream = this.#streams.get(msg.id);
        if (stream === undefined) return; // already over (e.g. the app closed first): nothing to do
        if (msg.half === 'Write') stream.closeWrite();
        else stream.destroy();
        return;
      }
    }
  }

  #refuseWrongChannel(type: string): void {
    this.#cfg.logger.warn({ session: this.id, channel: this.#cfg.channel, type }, 'message not accepted on this channel; closing');
    this.#sendMessage({ type: 'ControlResult', success: false, message: `message not accepted on the ${this.#cfg.channel} channel` }, 'array');
    this.#closeGracefully('wrong-channel');
  }

  // ---------------------------------------------------------------------------------------------------------
  // Session-level requests

  #context(kind: 'data' | 'stream'): ForwardContext {
    const hash = this.#hash!;
    const ctx: ForwardContext = {
      sessionId: this.id,
      kind,
      handshakeHash: hash,
      signal: this.#abort.signal,
      attest: (extra) => this.#attestDocument(extra?.userData, extra?.publicKey),
    };
    return this.#client === undefined ? ctx : { ...ctx, client: this.#client };
  }

  #attestDocument(userData?: Uint8Array, publicKey?: Uint8Array): Promise<Uint8Array> {
    return this.#cfg.nsm.attest({
      nonce: this.#hash!,
      userData: userData ?? this.#cfg.control.nonce.current(),
      publicKey: publicKey ?? this.#cfg.attestationPublicKey?.() ?? null,
    });
  }

  async #attest(enc: ByteEncoding): Promise<void> {
    this.#pendingSession++;
    try {
      const controlNonce = this.#cfg.control.nonce.current();
      const data = await this.#attestDocument(controlNonce);
      if (this.#state !== 'open') return;
      const features = this.#cfg.features;
      const msg: ServerMessage =
        features.length > 0
          ? { type: 'Attestation', data, control_nonce: controlNonce, features: [...features] }
          : { type: 'Attestation', data, control_nonce: controlNonce };
      const size = serverMessageSize(msg, enc);
      if (size > MAX_MESSAGE_LEN) throw new RangeError(`attestation reply of ${size} bytes exceeds one frame (${MAX_MESSAGE_LEN})`);
      this.#stats.attestations++;
      await this.#sendMessage(msg, enc);
    } catch (err) {
      this.#cfg.logger.error({ session: this.id, err: errorCode(err) }, 'attestation failed; closing the session');
      this.#close('attestation-failed', err);
    } finally {
      this.#pendingSession--;
      this.#afterWork();
    }
  }

  async #controlCommand(payload: Uint8Array, signature: Uint8Array, enc: ByteEncoding): Promise<void> {
    this.#pendingSession++;
    this.#stats.controls++;
    try {
      const result = await handleControl(payload, signature, this.#cfg.control);
      const log = result.success ? this.#cfg.logger.info.bind(this.#cfg.logger) : this.#cfg.logger.warn.bind(this.#cfg.logger);
      log({ session: this.id, success: result.success, result: result.message }, 'control command');
      await this.#sendMessage({ type: 'ControlResult', success: result.success, message: truncate(result.message) }, enc);
    } finally {
      this.#pendingSession--;
      this.#afterWork();
    }
  }

  // ---------------------------------------------------------------------------------------------------------
  // Data

  /** Refuses a Data/OpenStream beyond the limits; true if it may start. */
  #admit(id: number, enc: ByteEncoding): boolean {
    if (this.#draining) {
      this.#stats.refused++;
      this.#sendError(id, 'agent is shutting down', enc);
      return false;
    }
    if (this.#inFlight >= this.#limits.maxInFlight) {
      this.#stats.refused++;
      this.#sendError(id, `too many in-flight requests (limit ${this.#limits.maxInFlight})`, enc);
      return false;
    }
    return true;
  }

  #startData(id: number, payload: Uint8Array, enc: ByteEncoding): void {
    if (!this.#admit(id, enc)) return;
    this.#inFlight++;
    this.#stats.data++;
    const req: DataRequest = { id, enc, answered: false };
    this.#dataRequests.add(req);
    void this.#runData(req, payload);
  }

  async #runData(req: DataRequest, payload: Uint8Array): Promise<void> {
    const { id, enc } = req;
    try {
      let reply = await this.#forwardData(id, payload);
      this.#dataRequests.delete(req);
      if (req.answered || (this.#state !== 'open' && this.#state !== 'closing')) return;
      req.answered = true;
      if (reply.type === 'Data') {
        const size = serverMessageSize(reply, enc);
        if (size > MAX_MESSAGE_LEN) reply = { type: 'Error', id, message: `response too large for one frame (${size} bytes; max ${MAX_MESSAGE_LEN})` };
      }
      // The slot is held until the reply is handed to the socket: a client that stops reading cannot pile up replies.
      await this.#sendMessage(reply, enc);
    } finally {
      this.#inFlight--;
      this.#afterWork();
    }
  }

  /** Connects, writes the request, reads the app's response to EOF. Never rejects. */
  async #forwardData(id: number, payload: Uint8Array): Promise<ServerMessage> {
    let app: Duplex;
    try {
      app = await this.#cfg.forwarder.connect(this.#context('data'));
    } catch (err) {
      return { type: 'Error', id, message: forwardErrorMessage(err) };
    }
    if (this.#state === 'closed') {
      app.destroy();
      return { type: 'Error', id, message: 'session closed' };
    }
    this.#dataApps.add(app);
    const max = this.#limits.maxResponseBytes;
    return new Promise<ServerMessage>((resolve) => {
      const chunks: Uint8Array[] = [];
      let total = 0;
      let done = false;
      const finish = (msg: ServerMessage): void => {
        if (done) return;
        done = true;
        clearTimeout(timer);
        app.off('data', onData);
        app.destroy();
        this.#dataApps.delete(app);
        resolve(msg);
      };
      const onData = (chunk: Buffer): void => {
        total += chunk.length;
        if (total > max) {
          finish({ type: 'Error', id, message: `response too large for one frame (more than ${max} bytes; max ${MAX_MESSAGE_LEN})` });
        } else chunks.push(chunk);
      };
      const timer = setTimeout(
        () => finish({ type: 'Error', id, message: `the app did not finish its response within ${Math.round(this.#limits.dataResponseTimeoutMs / 1000)} s` }),
        this.#limits.dataResponseTimeoutMs,
      );
      app.on('data', onData);
      app.once('end', () => finish({ type: 'Data', id, payload: chunks.length === 1 ? chunks[0]! : concatBytes(...chunks) }));
      app.on('error', (err: NodeJS.ErrnoException) => finish({ type: 'Error', id, message: `app connection failed (${err.code ?? 'error'})` }));
      app.once('close', () => finish({ type: 'Error', id, message: 'the app closed the connection before the end of its response' }));
      app.write(payload);
      if (this.#cfg.forwarder.halfCloseData !== false) app.end();
    });
  }

  // ---------------------------------------------------------------------------------------------------------
  // Streams

  #openStream(id: number, payload: Uint8Array, enc: ByteEncoding): void {
    if (this.#streams.has(id)) {
      this.#sendError(id, 'stream id already in use', enc);
      return;
    }
    if (!this.#admit(id, enc)) return;
    this.#inFlight++;
    this.#stats.streams++;
    const stream = new AppStream(this, id, enc, payload, this.#clientQueueBlocked);
    this.#streams.set(id, stream);
    const ctx = this.#context('stream');
    const attach = (app: Duplex): void => {
      if (this.#state === 'closed') app.destroy();
      else stream.attach(app);
    };
    Promise.resolve()
      .then(() => this.#cfg.forwarder.connect(ctx))
      .then(attach, (err: unknown) => stream.connectFailed(forwardErrorMessage(err)));
  }

  streamData(stream: AppStream, payload: Uint8Array, owned: boolean): void {
    this.#sendMessage({ type: 'StreamData', id: stream.id, payload }, stream.encoding, owned);
  }

  streamClosed(stream: AppStream): void {
    this.#sendMessage({ type: 'StreamClose', id: stream.id }, stream.encoding);
  }

  streamError(stream: AppStream, message: string): void {
    this.#sendError(stream.id, message, stream.encoding);
  }

  streamFinished(stream: AppStream): void {
    if (this.#streams.get(stream.id) === stream) this.#streams.delete(stream.id);
    this.#inFlight--;
    this.#afterWork();
  }

  queueChanged(): void {
    this.#updateFlow();
  }

  // ---------------------------------------------------------------------------------------------------------
  // Outbound

  #sendError(id: number, message: string, enc: ByteEncoding): Promise<void> {
    return this.#sendMessage({ type: 'Error', id, message: truncate(message) }, enc);
  }

  /**
   * Encrypts and queues one message; resolves when written (or when the session is gone). Never rejects.
   * `ownedPayload`: the payload is handed over (an app socket's read buffers) and may be encrypted in place.
   */
  #sendMessage(msg: ServerMessage, enc: ByteEncoding, ownedPayload = false): Promise<void> {
    if (this.#state === 'closed' || this.#send === null) return Promise.resolve();
    let ct: Uint8Array[];
    try {
      // In parts (a large bstr payload uncopied; ciphertext parts and tag): the writer hands them to the sink as
      // they are. One part is a fresh encoding, ours to encrypt in place; a separate payload part only if owned.
      const pt = encodeServerMessageParts(msg, enc);
      ct = pt.length === 1 || ownedPayload ? this.#send.encryptOwned(pt) : this.#send.encryptParts(pt);
    } catch (err) {
      this.#close('send-failed', err);
      return Promise.resolve();
    }
    this.#stats.framesOut++;
    const written = this.#track(this.#writer.writeFrameParts(ct));
    this.#updateFlow();
    return written;
  }

  #track(write: Promise<void>): Promise<void> {
    const done = write.then(
      () => this.#updateFlow(),
      (err: unknown) => this.#close('send-failed', err),
    );
    this.#lastWrite = done;
    return done;
  }

  // ---------------------------------------------------------------------------------------------------------
  // Flow control, idle, close

  /** True while the session must not decode more frames. Hysteresis: a budget blocks above its limit and frees below half. */
  #readBlocked(): boolean {
    const l = this.#limits;
    if (this.#clientQueueBlocked) return true;
    if (this.#pendingSession >= l.maxPendingSessionRequests) return true;
    if (this.#streams.size === 0) {
      this.#appQueueBlocked = false;
      return false;
    }
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

  /** Re-evaluates every budget: pauses/resumes app reads and the client socket, resumes decoding buffered frames. */
  #updateFlow(): void {
    if (this.#state === 'closed') return;
    const queued = this.#writer.queuedBytes;
    const max = this.#limits.maxClientQueuedBytes;
    if (!this.#clientQueueBlocked && queued > max) {
      this.#clientQueueBlocked = true;
      for (const s of this.#streams.values()) s.pauseApp();
    } else if (this.#clientQueueBlocked && queued <= max / 2) {
      this.#clientQueueBlocked = false;
      for (const s of this.#streams.values()) s.resumeApp();
    }
    if (this.#driving) return;
    const blocked = this.#state === 'open' && this.#readBlocked();
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

  /** After the client's EOF or a drain: close once nothing is left to answer. */
  #maybeFinish(): void {
    if (this.#state !== 'open' || this.#busy()) return;
    if (this.#inputEnded) this.#closeGracefully('client-closed');
    else if (this.#draining) this.#closeGracefully('drain');
  }

  readonly #onIdle = (): void => {
    if (this.#state !== 'open') return;
    if (this.#busy() || this.#writer.queuedBytes > 0) {
      this.#idleTimer?.refresh();
      return;
    }
    this.#closeGracefully('idle');
  };

  /** Stops reading, lets queued frames reach the socket, then ends it. */
  #closeGracefully(reason: CloseReason): void {
    if (this.#state !== 'open') return;
    this.#state = 'closing';
    const flushed = this.#lastWrite;
    void flushed.then(() => {
      if (this.#state === 'closed') return;
      if (!this.#sock.destroyed && !this.#sock.writableEnded) this.#sock.end();
      this.#close(reason, undefined, true);
    });
  }

  #close(reason: CloseReason, err?: unknown, graceful = false): void {
    if (this.#state === 'closed') return;
    this.#state = 'closed';
    if (this.#hsTimer !== null) clearTimeout(this.#hsTimer);
    if (this.#idleTimer !== null) clearTimeout(this.#idleTimer);
    this.#abort.abort();
    for (const s of [...this.#streams.values()]) s.destroy();
    for (const app of this.#dataApps) app.destroy();
    this.#dataApps.clear();
    this.#sock.off('data', this.#onSockData);
    if (graceful) {
      // end() was called: give the FIN a moment to go out, then free the handle whatever the peer does.
      const timer = setTimeout(() => this.#sock.destroy(), 2000);
      timer.unref();
      this.#sock.once('close', () => clearTimeout(timer));
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
    const code = err === undefined ? undefined : errorCode(err);
    if (code !== undefined) summary.errorCode = code;
    const level = reason === 'client-closed' || reason === 'idle' || reason === 'drain' || reason === 'shutdown' ? 'info' : 'warn';
    this.#cfg.logger[level]({ session: this.id, remote: this.info.remote, channel: this.#cfg.channel, reason, errorCode: code, durationMs: summary.durationMs, ...this.#stats }, 'session closed');
    this.#onClosed(this, summary);
  }
}

/** The stable code of an error (AgentError code, errno code) or its class name; never its message. */
function errorCode(err: unknown): string {
  if (err !== null && typeof err === 'object') {
    const code = (err as { code?: unknown }).code;
    if (typeof code === 'string') return code;
    const name = (err as { name?: unknown }).name;
    if (typeof name === 'string') return name;
  }
  return 'unknown';
}

/** ForwardError messages are written to be sent to the client; anything else is reduced to its code. */
function forwardErrorMessage(err: unknown): string {
  if (err !== null && typeof err === 'object' && typeof (err as { code?: unknown }).code === 'string') {
    const e = err as { code: string; message?: unknown };
    if (e.code.startsWith('FORWARD_') && typeof e.message === 'string') return truncate(e.message);
    return `cannot reach the app (${e.code})`;
  }
  return 'cannot reach the app';
}

function truncate(text: string): string {
  return text.length <= MAX_ERROR_TEXT ? text : `${text.slice(0, MAX_ERROR_TEXT - 1)}…`;
}
