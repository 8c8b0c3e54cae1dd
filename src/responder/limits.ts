// Per-responder and per-session limits. Every number bounds memory or time that a client (or a slow app)
// could otherwise grow without bound; the defaults are sized for a 2-vCPU enclave with a few GiB of memory.
import { availableParallelism } from 'node:os';
import { DEFAULT_LINGER_TIME_MS, DEFAULT_LINGER_TIMEOUT_MS } from '../transport/lingering-close.ts';
import { ResponderError } from './errors.ts';

export interface Limits {
  /**
   * Concurrent sessions per responder. A connection beyond it is destroyed on accept, before any crypto.
   * An idle session costs ~10–30 KiB (socket, reader, cipher states). Default 1024.
   */
  maxSessions: number;
  /**
   * Per session: Data requests whose reply is not yet written + open streams. One more gets
   * `Error{id, "too many in-flight requests (limit N)"}` at once; the session keeps reading and writing.
   * A Data slot is released only when its reply has been handed to the client socket, so a client that
   * does not read cannot pile up replies. Default 64 (the Enclavia client's own window).
   */
  maxInFlight: number;
  /** From accept to a complete hs1 (PROXY header included). Default 10 000 ms. */
  handshakeTimeoutMs: number;
  /**
   * Closes a session that received no frame for this long — but never while a request, a stream or a
   * session request (attestation, control) is in flight. Default 60 000 ms.
   */
  idleTimeoutMs: number;
  /**
   * Data: bytes of the app's response read before giving up on it (the reply must fit one frame:
   * 65535 − 16 bytes of CBOR, so nothing larger can be delivered). Default 65519.
   */
  maxResponseBytes: number;
  /** Data: the app must send its whole response (EOF) within this. Default 60 000 ms. */
  dataResponseTimeoutMs: number;
  /**
   * Client bytes queued toward ONE stream's app (written, not yet accepted by its socket). Above it the
   * session stops decoding frames (and pauses its socket) until the queue drains below half — or until a stream
   * whose app takes none of its bytes is reset (writeStallTimeoutMs). Default 1 MiB.
   */
  maxStreamQueuedBytes: number;
  /**
   * The same, summed over every stream of the session. Default 4 MiB. (Data requests are not counted: each one's
   * payload, at most one frame, goes to its own app connection, so they hold at most maxInFlight × 64 KiB.)
   */
  maxSessionQueuedBytes: number;
  /**
   * Encrypted bytes queued toward the client (the client reads slower than apps answer). Above it the
   * session stops reading from its apps and from the client until the queue drains below half.
   * Default 1 MiB.
   */
  maxClientQueuedBytes: number;
  /**
   * RequestAttestation / GetControlNonce / Control being answered at once per session; the session stops
   * decoding frames while this many are pending (each attestation is an NSM call). Default 4.
   */
  maxPendingSessionRequests: number;
  /**
   * Per session: RequestAttestation calls that reach the NSM at once before the pace applies. Default 3 (the
   * client's one at the start of a session, and room for a few re-checks).
   */
  attestationBurst: number;
  /**
   * Per session: past the burst, one RequestAttestation reaches the NSM per this many ms; later ones wait their
   * turn (a pending session request each, see attestation-pace.ts). Default 1 000 ms.
   */
  attestationIntervalMs: number;
  /** Largest PROXY v2 header accepted (signature to last TLV byte). Default 4096. */
  maxProxyHeaderBytes: number;
  /**
   * Sessions per client address (the PROXY v2 source address; connections without one are not counted). One
   * more is closed right after its PROXY header, before any crypto. Default 64.
   */
  maxSessionsPerClient: number;
  /**
   * Output queued toward a client that finishes writing no message for this long closes the session (a client
   * that keeps its connection alive but never reads). Toward apps too: while the session has stopped reading
   * because of its streams' queues (maxStreamQueuedBytes, maxSessionQueuedBytes), a stream whose app takes none of
   * its queued bytes for this long is reset (`Error{id}`, app connection destroyed; checked every quarter of it),
   * and the session reads on — not counted while the session holds its apps' output (the client's queue over its
   * budget). Default 30 000 ms.
   */
  writeStallTimeoutMs: number;
  /**
   * Encrypted output queued toward clients, summed over every session sharing the budget (startAgent: both
   * channels), plus the Data responses being read from apps for them. Past it new Data/OpenStream get `Error`,
   * Data replies (and responses being read) that would not fit become `Error`, and sessions holding queued
   * output stop reading until it drains. Default 256 MiB.
   */
  maxQueuedBytes: number;
  /**
   * Connections between accept and a completed handshake. More wait in a queue (not read, no crypto) until one
   * finishes; beyond the queue they are closed at once. Default 4 × CPUs.
   */
  maxConcurrentHandshakes: number;
  /** Connections waiting for a handshake slot; 0 = none wait. Default 256. */
  maxQueuedHandshakes: number;
  /**
   * Lingering close of a session's connection after its final frame (src/transport/lingering-close.ts): closed
   * once no client byte came for this long. Default 5 000 ms ([limits] linger_timeout_ms).
   */
  lingerTimeoutMs: number;
  /** The same: closed this long after the final frame went out at the latest. Default 30 000 ms ([limits] linger_time_ms). */
  lingerTimeMs: number;
}

export const DEFAULT_LIMITS: Readonly<Limits> = Object.freeze({
  maxSessions: 1024,
  maxInFlight: 64,
  handshakeTimeoutMs: 10_000,
  idleTimeoutMs: 60_000,
  maxResponseBytes: 65_519,
  dataResponseTimeoutMs: 60_000,
  maxStreamQueuedBytes: 1 << 20,
  maxSessionQueuedBytes: 4 << 20,
  maxClientQueuedBytes: 1 << 20,
  maxPendingSessionRequests: 4,
  attestationBurst: 3,
  attestationIntervalMs: 1000,
  maxProxyHeaderBytes: 4096,
  maxSessionsPerClient: 64,
  writeStallTimeoutMs: 30_000,
  maxQueuedBytes: 256 << 20,
  maxConcurrentHandshakes: 4 * availableParallelism(),
  maxQueuedHandshakes: 256,
  lingerTimeoutMs: DEFAULT_LINGER_TIMEOUT_MS,
  lingerTimeMs: DEFAULT_LINGER_TIME_MS,
});

/** Limits where 0 is meaningful. */
const ZERO_ALLOWED: ReadonlySet<keyof Limits> = new Set(['maxQueuedHandshakes']);
/** Largest delay a Node timer takes: above it, setTimeout warns and fires after 1 ms — a long timeout would become none. */
const MAX_TIMER_MS = 2 ** 31 - 1;

/**
 * DEFAULT_LIMITS overridden by `partial`; throws RESPONDER_BAD_OPTIONS on a non-positive or non-integer value, or
 * a timeout (…Ms) above MAX_TIMER_MS.
 */
export function resolveLimits(partial: Partial<Limits> = {}): Limits {
  const out: Limits = { ...DEFAULT_LIMITS };
  for (const [key, value] of Object.entries(partial) as [keyof Limits, unknown][]) {
    if (value === undefined) continue;
    if (!(key in DEFAULT_LIMITS)) {
      throw new ResponderError('RESPONDER_BAD_OPTIONS', `limits: unknown limit "${String(key)}" (known: ${Object.keys(DEFAULT_LIMITS).join(', ')})`);
    }
    const min = ZERO_ALLOWED.has(key) ? 0 : 1;
    if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < min) {
      throw new ResponderError('RESPONDER_BAD_OPTIONS', `limits.${key}: expected an integer ≥ ${min}, found ${String(value)}`);
    }
    if (key.endsWith('Ms') && value > MAX_TIMER_MS) {
      throw new ResponderError('RESPONDER_BAD_OPTIONS', `limits.${key}: expected an integer in ${min}..${MAX_TIMER_MS} (a timer's range), found ${value}`);
    }
    out[key] = value;
  }
  return out;
}
