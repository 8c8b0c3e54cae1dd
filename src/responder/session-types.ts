// The types around one agent session (session.ts): its configuration, why it ended and what it did (the
// summary handed to the responder's onSessionClosed hook, and its log line), and SessionHost — what the
// modules a session delegates to (message-dispatch.ts, session-requests.ts, data-requests.ts,
// session-streams.ts) may see and do of it.
import type { Logger } from 'pino';
import type { Nsm } from '../attestation/nsm.ts';
import type { NoisePrimitives } from '../noise/primitives.ts';
import type { ByteEncoding, ServerMessage } from '../wire/messages.ts';
import type { ClientSessionsLike, HandshakeAdmission, ResponderCounters } from './admission.ts';
import type { ControlConfig } from './control.ts';
import { errorCode } from './error-text.ts';
import type { ForwardContext, Forwarder } from './forwarder.ts';
import type { Limits } from './limits.ts';
import type { OutputBudgetLike } from './output-budget.ts';

export type Channel = 'public' | 'control';

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
  | 'client-limit'
  | 'handshake-refused'
  | 'write-stall'
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

/** Completes `summary` with the code of the error behind its reason (if any) and logs 'session closed'. */
export function logSessionClosed(logger: Logger, summary: SessionSummary, err: unknown): void {
  const { id, remote, channel, reason, durationMs, stats } = summary;
  const code = err === undefined ? undefined : errorCode(err);
  if (code !== undefined) summary.errorCode = code;
  // A refused client is counted in the responder's rate-limited log line, never one line per connection.
  const level = reason === 'client-limit' || reason === 'handshake-refused' ? 'debug' : reason === 'client-closed' || reason === 'idle' || reason === 'drain' || reason === 'shutdown' ? 'info' : 'warn';
  logger[level]({ session: id, remote, channel, reason, errorCode: code, durationMs, ...stats }, 'session closed');
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
  /** What the sessions of one responder share (admission.ts, output-budget.ts). */
  shared: SessionShared;
}

export interface SessionShared {
  readonly budget: OutputBudgetLike;
  readonly counters: ResponderCounters;
  readonly clients: ClientSessionsLike;
  readonly handshakes: HandshakeAdmission;
  /** A refused connection, for the rate-limited log. */
  refused(reason: string): void;
}

export type SessionState = 'proxy' | 'handshake' | 'open' | 'closing' | 'closed';

/**
 * What a session's request handlers and stream table use of it. Session implements it with one private object
 * per session (no allocation per message); it is not part of the package's API.
 */
export interface SessionHost {
  readonly id: string;
  readonly cfg: SessionConfig;
  readonly stats: SessionStats;
  /** Aborted when the session closes (made on first call: an idle session has none). */
  signal(): AbortSignal;
  state(): SessionState;
  /** The Noise handshake hash (only once the session is open). */
  handshakeHash(): Uint8Array;
  /** Client address from the PROXY v2 header, when there was one. */
  client(): ForwardContext['client'];
  /** True while the client connection's write queue is over budget (app reads are paused). */
  clientQueueBlocked(): boolean;
  /** True while the session has stopped reading the client's frames for a budget of its own (any stream's). */
  inputPaused(): boolean;
  /** Refuses a Data/OpenStream beyond the limits; true if it may start — it then holds an in-flight slot. */
  admit(id: number, enc: ByteEncoding): boolean;
  /** Gives back an in-flight slot (a Data reply handed to the socket, a stream over). */
  release(): void;
  /** An Attestation / Control request starts / is answered. */
  sessionRequestStarted(): void;
  sessionRequestDone(): void;
  /**
   * Encrypts and queues one message; resolves when written (or when the session is gone). Never rejects.
   * `ownedPayload`: the payload is handed over (an app socket's read buffers) and may be encrypted in place;
   * `pooled`: the reused buffer (message-buffers.ts) it lies in, given back once written.
   */
  send(msg: ServerMessage, enc: ByteEncoding, ownedPayload?: boolean, pooled?: Uint8Array): Promise<void>;
  sendError(id: number, message: string, enc: ByteEncoding): Promise<void>;
  /** Re-evaluates every budget (a stream's queue toward the app changed). */
  updateFlow(): void;
  close(reason: CloseReason, err?: unknown): void;
  /** Stops reading, lets queued frames reach the socket, then ends it. */
  closeGracefully(reason: CloseReason): void;
}
