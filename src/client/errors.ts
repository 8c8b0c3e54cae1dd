// The one error class of the client SDK. Browser-safe.
import type { AttestationErrorCode } from '../attestation/errors.ts';
import type { AttestedCertErrorCode } from './attested-cert-errors.ts';
import { AgentError } from '../errors.ts';

/**
 * Stable codes of the client SDK.
 * - CLIENT_BAD_OPTIONS: connect() options or a request are unusable (no WebSocket implementation, bad path,
 *   header with CR/LF, Content-Length that contradicts the body, ...). Nothing was sent.
 * - CLIENT_CONNECT_FAILED: the WebSocket did not open, or closed before the Noise handshake and the attestation
 *   finished. `retryable: true`.
 * - CLIENT_ATTESTATION_FAILED: the enclave's attestation did not verify; `attestationCode` (and `cause`) hold the
 *   AttestationError and its code (ATTESTATION_PCR_MISMATCH, ATTESTATION_UNTRUSTED_ROOT, ...). Nothing was sent.
 * - CLIENT_CLOSED: the client was closed (or reconnect is off and the session is gone).
 * - CLIENT_RETRYABLE: the session died while this request was in flight. It was sent at most once and may or may
 *   not have reached the app; it is NOT re-sent automatically. `retryable: true`.
 * - CLIENT_TIMEOUT / CLIENT_ABORTED: the request's timeout fired / its AbortSignal aborted (`cause` = reason).
 * - CLIENT_PROTOCOL: the agent or the app broke the protocol (undecodable frame, malformed HTTP response, ...).
 * - CLIENT_REMOTE_ERROR: the agent answered `Error{id, message}` (`remoteMessage`).
 * - CLIENT_UPGRADE_FAILED: upgrade() got a status other than 101 (`status`).
 * - CLIENT_BUFFER_FULL: more than `maxBufferedBytes` of a response body or stream arrived and were not read (the
 *   protocol has no per-stream flow control: the agent cannot be told to wait). The stream was closed.
 */
export type ClientErrorCode =
  | 'CLIENT_BAD_OPTIONS'
  | 'CLIENT_CONNECT_FAILED'
  | 'CLIENT_ATTESTATION_FAILED'
  | 'CLIENT_CLOSED'
  | 'CLIENT_RETRYABLE'
  | 'CLIENT_TIMEOUT'
  | 'CLIENT_ABORTED'
  | 'CLIENT_PROTOCOL'
  | 'CLIENT_REMOTE_ERROR'
  | 'CLIENT_UPGRADE_FAILED'
  | 'CLIENT_BUFFER_FULL';

export interface ClientErrorOptions {
  cause?: unknown;
  retryable?: boolean;
  attestationCode?: AttestationErrorCode | AttestedCertErrorCode;
  remoteMessage?: string;
  status?: number;
}

export class ClientError extends AgentError {
  declare readonly code: ClientErrorCode;
  /** True when repeating the call may succeed (the session is re-established on the next request). */
  readonly retryable: boolean;
  /** CLIENT_ATTESTATION_FAILED: the verifier's code (https: also ATTESTED_CERT_*). */
  readonly attestationCode: AttestationErrorCode | AttestedCertErrorCode | undefined;
  /** CLIENT_REMOTE_ERROR: the agent's `Error.message`. */
  readonly remoteMessage: string | undefined;
  /** CLIENT_UPGRADE_FAILED: the status the app answered. */
  readonly status: number | undefined;

  constructor(code: ClientErrorCode, message: string, options: ClientErrorOptions = {}) {
    super(code, message, options.cause === undefined ? undefined : { cause: options.cause });
    this.retryable = options.retryable ?? (code === 'CLIENT_RETRYABLE' || code === 'CLIENT_CONNECT_FAILED');
    this.attestationCode = options.attestationCode;
    this.remoteMessage = options.remoteMessage;
    this.status = options.status;
  }
}

/** The error a request rejects with when its signal aborts: CLIENT_TIMEOUT for our own timeout, else CLIENT_ABORTED. */
export function abortError(signal: AbortSignal): ClientError {
  const reason: unknown = signal.reason;
  if (reason instanceof ClientError) return reason;
  return new ClientError('CLIENT_ABORTED', 'the request was aborted', { cause: reason });
}

/** A socket error's code (e.g. ERR_SSL_DECRYPTION_FAILED_OR_BAD_RECORD_MAC), not OpenSSL's message with its paths. */
export function transportErrorName(err: Error): string {
  const code = (err as { code?: unknown }).code;
  return typeof code === 'string' && /^[A-Z0-9_]{1,80}$/.test(code) ? code : err.name;
}
