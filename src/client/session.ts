// One verified session on one Channel (WIRE.md §5, §7): the attestation exchange, then requests multiplexed by id.
// Browser-safe.
//
// - Establishment: RequestAttestation is the first and only message sent until the document verified (nonce =
//   handshake hash, pinned PCRs, roots, age, debug policy). Nothing else leaves the client before that.
// - Ids: one counter from 1 shared by Data and OpenStream.
// - Window: at most `maxInFlight` Data requests + open streams at once (the agent's own per-session limit,
//   default 64, counts the same things); more wait in FIFO order before they get an id. A Data slot is held until
//   its reply arrived even when the caller gave up on it (the agent still counts it).
// - Death: in-flight requests and streams fail with CLIENT_RETRYABLE; requests still waiting for a slot were never
//   sent and fail with NotSentError, which the reconnect layer turns into a transparent retry.
import { verifyAttestation, type PcrPins } from '../attestation/verify.ts';
import type { AttestationDocument } from '../attestation/document.ts';
import { AttestationError } from '../attestation/errors.ts';
import { clientMessageSize, MAX_MESSAGE_LEN, type ByteEncoding, type ServerMessage } from '../wire/messages.ts';
import type { Channel } from './channel.ts';
import { abortError, ClientError } from './errors.ts';

export interface VerifyOptions {
  pcrs: PcrPins | PcrPins[];
  roots?: (Uint8Array | string)[];
  debug?: boolean;
  maxAgeMs?: number;
  allowDebugEnclave?: boolean;
  now?: () => number;
}

/** A request that never left the client (no id was assigned): safe to run on another session. */
export class NotSentError extends ClientError {
  constructor(cause: ClientError) {
    super(cause.code, cause.message, { cause, retryable: true });
  }
}

/** Bytes of one StreamData / Data payload that always fit a frame: worst case 2 bytes per byte with int arrays. */
export function chunkBudget(enc: ByteEncoding): number {
  return enc === 'bstr' ? 64_000 : 32_000;
}

/** Largest id we may use, for worst-case size computations. */
const WORST_ID = Number.MAX_SAFE_INTEGER;

/** Whether `payload` fits one Data message in encoding `enc`. */
export function fitsData(payload: Uint8Array, enc: ByteEncoding): boolean {
  return clientMessageSize({ type: 'Data', id: WORST_ID, payload }, enc) <= MAX_MESSAGE_LEN;
}

export interface StreamHandlers {
  data(bytes: Uint8Array): void;
  /** The agent's StreamClose: the app closed its side. */
  end(): void;
  /** Error{id} from the agent, or the session died. The stream is over. */
  error(err: ClientError): void;
}

interface DataEntry {
  kind: 'data';
  resolve(payload: Uint8Array): void;
  reject(err: ClientError): void;
  /** The caller gave up (abort/timeout); the slot stays held until the reply. */
  abandoned: boolean;
}

/** The session side of one OpenStream. */
export class SessionStream {
  readonly kind = 'stream' as const;
  readonly id: number;
  readonly #session: Session;
  handlers: StreamHandlers;
  /** We sent StreamClose{Write} (or Both). */
  writeClosed = false;
  /** The agent sent StreamClose. */
  remoteEnded = false;
  /** Released: StreamClose{Both} sent, Error received, or the session died. */
  finished = false;

  constructor(session: Session, id: number, handlers: StreamHandlers) {
    this.#session = session;
    this.id = id;
    this.handlers = handlers;
  }

  /** Sends `bytes` as StreamData messages (chunked to fit frames); waits while the socket is congested. */
  async write(bytes: Uint8Array, signal?: AbortSignal): Promise<void> {
    const budget = chunkBudget(this.#session.encoding);
    for (let off = 0; off < bytes.length; off += budget) {
      if (this.finished || this.writeClosed) throw new ClientError('CLIENT_CLOSED', `stream ${this.id} is closed for writing`);
      await this.#session.writable(signal);
      if (this.finished) throw new ClientError('CLIENT_CLOSED', `stream ${this.id} is closed`);
      this.#session.send({ type: 'StreamData', id: this.id, payload: bytes.subarray(off, Math.min(bytes.length, off + budget)) });
    }
  }

  /** StreamClose{Write}: the app sees EOF; its answer keeps coming. */
  closeWrite(): void {
    if (this.writeClosed || this.finished) return;
    this.writeClosed = true;
    this.#session.trySend({ type: 'StreamClose', id: this.id, half: 'Write' });
  }

  /** StreamClose{Both}: tear the stream down on the agent and release its slot. Idempotent. */
  close(): void {
    if (this.finished) return;
    this.writeClosed = true;
    this.#session.trySend({ type: 'StreamClose', id: this.id, half: 'Both' });
    this.#session.release(this);
  }
}

export class Session {
  readonly channel: Channel;
  readonly attestation: AttestationDocument;
  readonly features: readonly string[];
  readonly #maxInFlight: number;
  readonly #entries = new Map<number, DataEntry | SessionStream>();
  #nextId = 1;
  #inFlight = 0;
  #waiters: { resolve(): void; reject(err: ClientError): void }[] = [];
  #deathError: ClientError | null = null;
  readonly #onDeath: ((err: ClientError) => void)[] = [];

  private constructor(channel: Channel, attestation: AttestationDocument, features: readonly string[], maxInFlight: number) {
    this.channel = channel;
    this.attestation = attestation;
    this.features = features;
    this.#maxInFlight = maxInFlight;
    channel.encoding = features.includes('bstr') ? 'bstr' : 'array';
    channel.listen({ message: (m) => this.#route(m), closed: (err) => this.#die(err) });
  }

  /**
   * Requests and verifies the attestation on a fresh channel. Resolves to a live session; rejects (and closes the
   * channel) with CLIENT_ATTESTATION_FAILED, CLIENT_PROTOCOL, CLIENT_CONNECT_FAILED or an abort error.
   */
  static establish(channel: Channel, verify: VerifyOptions, opts: { maxInFlight: number; signal?: AbortSignal }): Promise<Session> {
    return new Promise<Session>((resolve, reject) => {
      let done = false;
      const finish = (err: ClientError | null, session?: Session): void => {
        if (done) return;
        done = true;
        opts.signal?.removeEventListener('abort', onAbort);
        if (err !== null) {
          channel.close(err);
          reject(err);
        } else resolve(session!);
      };
      const onAbort = (): void => finish(abortError(opts.signal!));
      if (opts.signal?.aborted) {
        onAbort();
        return;
      }
      opts.signal?.addEventListener('abort', onAbort, { once: true });
      let first = true;
      channel.listen({
        message: (m) => {
          if (!first || done) return;
          first = false;
          if (m.type !== 'Attestation') {
            finish(new ClientError('CLIENT_PROTOCOL', `expected Attestation as the agent's first message, found ${m.type}`));
            return;
          }
          const features = m.features ?? [];
          verifyAttestation(m.data, {
            nonce: channel.handshakeHash,
            userData: m.control_nonce,
            pcrs: verify.pcrs,
            ...(verify.roots === undefined ? {} : { roots: verify.roots }),
            ...(verify.debug === undefined ? {} : { debug: verify.debug }),
            ...(verify.maxAgeMs === undefined ? {} : { maxAgeMs: verify.maxAgeMs }),
            ...(verify.allowDebugEnclave === undefined ? {} : { allowDebugEnclave: verify.allowDebugEnclave }),
            ...(verify.now === undefined ? {} : { now: verify.now() }),
          }).then(
            (doc) => {
              if (done) return;
              if (channel.closed) {
                finish(new ClientError('CLIENT_CONNECT_FAILED', 'the connection closed during attestation'));
                return;
              }
              finish(null, new Session(channel, doc, features, opts.maxInFlight));
            },
            (err: unknown) => finish(attestationFailed(err)),
          );
        },
        closed: (err) => finish(err.code === 'CLIENT_RETRYABLE' ? new ClientError('CLIENT_CONNECT_FAILED', `${err.message} before the attestation arrived`, { cause: err }) : err),
      });
      try {
        channel.send({ type: 'RequestAttestation' });
      } catch (err) {
        finish(err as ClientError);
      }
    });
  }

  get encoding(): ByteEncoding {
    return this.channel.encoding;
  }

  get alive(): boolean {
    return this.#deathError === null;
  }

  get inFlight(): number {
    return this.#inFlight;
  }

  /** Called once when the session dies. */
  onDeath(cb: (err: ClientError) => void): void {
    if (this.#deathError !== null) cb(this.#deathError);
    else this.#onDeath.push(cb);
  }

  close(err?: ClientError): void {
    this.channel.close(err ?? new ClientError('CLIENT_CLOSED', 'the client was closed'));
  }

  /** One Data request: resolves to the raw response payload. */
  async request(payload: Uint8Array, signal?: AbortSignal): Promise<Uint8Array> {
    await this.#acquire(signal);
    const id = this.#nextId++;
    return new Promise<Uint8Array>((resolve, reject) => {
      const entry: DataEntry = {
        kind: 'data',
        abandoned: false,
        resolve: (p) => {
          signal?.removeEventListener('abort', onAbort);
          resolve(p);
        },
        reject: (e) => {
          signal?.removeEventListener('abort', onAbort);
          reject(e);
        },
      };
      const onAbort = (): void => {
        if (entry.abandoned) return;
        entry.abandoned = true;
        reject(abortError(signal!));
      };
      this.#entries.set(id, entry);
      signal?.addEventListener('abort', onAbort, { once: true });
      try {
        this.send({ type: 'Data', id, payload });
      } catch (err) {
        this.#entries.delete(id);
        this.#releaseSlot();
        entry.reject(notSent(err));
      }
      if (signal?.aborted) onAbort();
    });
  }

  /**
   * Sends OpenStream with `firstBytes` (at most chunkBudget(encoding) bytes; write the rest with stream.write) and
   * returns the stream; the agent's replies go to `handlers`.
   */
  async openStream(firstBytes: Uint8Array, handlers: StreamHandlers, signal?: AbortSignal): Promise<SessionStream> {
    if (firstBytes.length > chunkBudget(this.encoding)) {
      throw new ClientError('CLIENT_BAD_OPTIONS', `OpenStream payload of ${firstBytes.length} bytes exceeds ${chunkBudget(this.encoding)}; write the rest as StreamData`);
    }
    await this.#acquire(signal);
    const id = this.#nextId++;
    const stream = new SessionStream(this, id, handlers);
    this.#entries.set(id, stream);
    try {
      this.send({ type: 'OpenStream', id, payload: firstBytes });
    } catch (err) {
      this.#entries.delete(id);
      stream.finished = true;
      this.#releaseSlot();
      throw notSent(err);
    }
    return stream;
  }

  send(msg: Parameters<Channel['send']>[0]): void {
    if (this.#deathError !== null) throw this.#deathError;
    this.channel.send(msg);
  }

  /** Sends if the session is alive; best effort (close messages). */
  trySend(msg: Parameters<Channel['send']>[0]): void {
    if (this.#deathError !== null) return;
    try {
      this.channel.send(msg);
    } catch {
      // the session is dying; the stream is over anyway
    }
  }

  /** Resolves when the WebSocket's send queue is below the high-water mark. */
  async writable(signal?: AbortSignal): Promise<void> {
    for (let wait = 1; this.channel.bufferedAmount > SEND_HIGH_WATER; wait = Math.min(wait * 2, 50)) {
      if (this.#deathError !== null) throw this.#deathError;
      if (signal?.aborted) throw abortError(signal);
      await new Promise((r) => setTimeout(r, wait));
    }
    if (this.#deathError !== null) throw this.#deathError;
  }

  /** A stream is over on our side: forget it and free its slot. */
  release(stream: SessionStream): void {
    if (stream.finished) return;
    stream.finished = true;
    if (this.#entries.get(stream.id) === stream) this.#entries.delete(stream.id);
    this.#releaseSlot();
  }

  #acquire(signal?: AbortSignal): Promise<void> {
    if (this.#deathError !== null) return Promise.reject(new NotSentError(this.#deathError));
    if (signal?.aborted) return Promise.reject(abortError(signal));
    if (this.#inFlight < this.#maxInFlight && this.#waiters.length === 0) {
      this.#inFlight++;
      return Promise.resolve();
    }
    return new Promise<void>((resolve, reject) => {
      const w = {
        resolve: () => {
          signal?.removeEventListener('abort', onAbort);
          resolve();
        },
        reject: (err: ClientError) => {
          signal?.removeEventListener('abort', onAbort);
          reject(err);
        },
      };
      const onAbort = (): void => {
        const i = this.#waiters.indexOf(w);
        if (i >= 0) this.#waiters.splice(i, 1);
        reject(abortError(signal!));
      };
      signal?.addEventListener('abort', onAbort, { once: true });
      this.#waiters.push(w);
    });
  }

  #releaseSlot(): void {
    const next = this.#waiters.shift();
    if (next !== undefined) next.resolve(); // the slot passes on
    else this.#inFlight--;
  }

  #route(m: ServerMessage): void {
    switch (m.type) {
      case 'Data': {
        const e = this.#entries.get(m.id);
        if (e === undefined || e.kind !== 'data') return; // not ours (a stream id, or unknown): ignore
        this.#entries.delete(m.id);
        this.#releaseSlot();
        if (!e.abandoned) e.resolve(m.payload);
        return;
      }
      case 'Error': {
        const e = this.#entries.get(m.id);
        if (e === undefined) return;
        const err = new ClientError('CLIENT_REMOTE_ERROR', `the agent answered request ${m.id} with an error: ${m.message}`, { remoteMessage: m.message });
        if (e.kind === 'data') {
          this.#entries.delete(m.id);
          this.#releaseSlot();
          if (!e.abandoned) e.reject(err);
        } else {
          this.release(e);
          e.handlers.error(err);
        }
        return;
      }
      case 'StreamData': {
        const e = this.#entries.get(m.id);
        if (e instanceof SessionStream && !e.remoteEnded) e.handlers.data(m.payload);
        return;
      }
      case 'StreamClose': {
        const e = this.#entries.get(m.id);
        if (!(e instanceof SessionStream) || e.remoteEnded) return;
        e.remoteEnded = true;
        e.handlers.end();
        return;
      }
      case 'ControlResult':
        // The agent refuses a message on this channel and closes; the close follows.
        if (!m.success) this.channel.close(new ClientError('CLIENT_PROTOCOL', `the agent refused a message: ${m.message}`));
        return;
      default:
        return; // a later Attestation or a ControlNonce: nothing to do
    }
  }

  #die(err: ClientError): void {
    if (this.#deathError !== null) return;
    const lost = err.code === 'CLIENT_CLOSED' ? err : new ClientError('CLIENT_RETRYABLE', `the session ended while the request was in flight: ${err.message}`, { cause: err, retryable: true });
    this.#deathError = lost;
    const entries = [...this.#entries.values()];
    this.#entries.clear();
    for (const e of entries) {
      if (e.kind === 'data') {
        if (!e.abandoned) e.reject(lost);
      } else if (!e.finished) {
        e.finished = true;
        e.handlers.error(lost);
      }
    }
    const waiters = this.#waiters;
    this.#waiters = [];
    for (const w of waiters) w.reject(new NotSentError(err.code === 'CLIENT_CLOSED' ? err : lost));
    for (const cb of this.#onDeath.splice(0)) cb(lost);
  }
}

/** A send that failed because the channel is gone never left the client: mark it for a transparent retry. */
function notSent(err: unknown): ClientError {
  if (err instanceof ClientError && err.code !== 'CLIENT_PROTOCOL' && !(err instanceof NotSentError)) return new NotSentError(err);
  return err as ClientError;
}

/** Above this many bytes queued in the WebSocket, writers wait. */
const SEND_HIGH_WATER = 1 << 20;

function attestationFailed(err: unknown): ClientError {
  if (err instanceof AttestationError) {
    return new ClientError('CLIENT_ATTESTATION_FAILED', `attestation failed: ${err.message}`, { cause: err, attestationCode: err.code });
  }
  return new ClientError('CLIENT_ATTESTATION_FAILED', `attestation failed: ${(err as Error)?.message ?? String(err)}`, { cause: err });
}
