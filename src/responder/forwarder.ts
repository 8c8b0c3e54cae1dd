import type { Duplex } from 'node:stream';

/**
 * What the session knows about the connection a request came in on. Raw mode uses `client` for the
 * PROXY v2 header it may write to the app; HTTP mode uses all of it (client IP, attestation endpoint).
 */
export interface ForwardContext {
  /** Short random id of the session, for logs. */
  readonly sessionId: string;
  /** 'data' = one-shot Data request (read the app's reply to EOF); 'stream' = OpenStream. */
  readonly kind: 'data' | 'stream';
  /** Client address from the bridge's PROXY v2 header, when accepted. */
  readonly client?: { address: string; port: number; family: 'IPv4' | 'IPv6' };
  /** This session's Noise handshake hash (the attestation nonce). */
  readonly handshakeHash: Uint8Array;
  /** Produces a fresh attestation document bound to this session (nonce = handshake hash). */
  attest(extra?: { userData?: Uint8Array; publicKey?: Uint8Array }): Promise<Uint8Array>;
  /**
   * TLS ingress connections only: a fresh document for a client's own nonce (`/.well-known/attestation?nonce=`),
   * bound to the key this connection was served. Absent on Noise sessions, whose nonce is the handshake hash.
   */
  attestWithNonce?(nonce: Uint8Array): Promise<Uint8Array>;
  /** Aborted when the session closes: a forwarder still connecting (e.g. retrying during the app's start-up grace) should give up. */
  readonly signal?: AbortSignal;
  /**
   * True while the session has stopped taking this client's bytes for a reason of its own (another stream's
   * queue toward the app, its write budget): a gap in a request body then is not the client's.
   */
  inputBlocked?(): boolean;
}

/**
 * The session hands every `Data` and every stream to a Forwarder. It returns one Duplex per request:
 * the session writes the client's bytes into it (and ends it for StreamClose{Write}, and for Data unless
 * `halfCloseData` is false) and reads the answer back. Raw mode connects to 127.0.0.1:<app port>; HTTP mode returns one end of an in-process
 * pair whose other end is a connection on the agent's http.Server. Rejects with a typed error whose
 * message is safe to send to the client in `Error{id, message}`.
 */
export interface Forwarder {
  connect(ctx: ForwardContext): Promise<Duplex>;
  /**
   * Whether the session calls end() on a Data request's Duplex after writing the payload (default true).
   * The raw forwarder sets false: some HTTP servers (uvicorn) abort a request whose connection is
   * half-closed, so, like the Enclavia server, it relies on the client's `Connection: close` instead.
   */
  readonly halfCloseData?: boolean;
  /**
   * Optional one-shot path for a Data request (HTTP mode's fast path): answers `payload` without a Duplex,
   * or returns null to leave the request to `connect`. The answer is capped at `maxResponseBytes`.
   */
  exchangeData?(ctx: ForwardContext, payload: Uint8Array, maxResponseBytes: number, budget?: ResponseBudget): OneShotData | null;
  /** Releases pools and timers. */
  close?(): Promise<void>;
}

/** How a one-shot Data request ended: the whole answer, or why there is none. */
export type OneShotResult = { readonly bytes: Uint8Array } | { readonly failed: 'too-large' | 'closed' | 'over-budget' };

/**
 * Where a one-shot answer's bytes are counted while it is being read (the shared output budget): a read that does
 * not fit ends the request ('over-budget'); what was reserved is given back when the request settles.
 */
export interface ResponseBudget {
  tryReserve(bytes: number): boolean;
  adjust(delta: number): void;
}

/** What one response being read holds of a ResponseBudget: taken a piece at a time, given back at once. */
export class HeldResponseBytes {
  #held = 0;
  constructor(private readonly budget: ResponseBudget) {}

  /** Takes `bytes`; false (nothing taken) when they do not fit. */
  take(bytes: number): boolean {
    if (!this.budget.tryReserve(bytes)) return false;
    this.#held += bytes;
    return true;
  }

  /** Gives back everything taken (the reply, if any, is counted again when the session queues it). */
  release(): void {
    if (this.#held > 0) this.budget.adjust(-this.#held);
    this.#held = 0;
  }
}

/** A Data request in flight on a forwarder's one-shot path. */
export interface OneShotData {
  /** Settles exactly once and never rejects. */
  readonly done: Promise<OneShotResult>;
  /** The session gave up on the request (closed, timed out): stop it and release what it holds. */
  cancel(): void;
}
