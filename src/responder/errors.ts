// The error classes of src/responder. ResponderError covers the session machinery (handshake timeout, bad
// options, PROXY header); ForwardError is what a Forwarder rejects with — its message is written so that it
// is safe to send to the client in `Error{id, message}` (no payload bytes, no secrets; addresses of the
// loopback app only).
import { AgentError } from '../errors.ts';

export type ResponderErrorCode =
  | 'RESPONDER_BAD_OPTIONS'
  | 'RESPONDER_HANDSHAKE_TIMEOUT'
  | 'RESPONDER_PROXY_HEADER'
  | 'RESPONDER_SESSION_CLOSED'
  | 'RESPONDER_CONTROL_KEY';

export class ResponderError extends AgentError {
  declare readonly code: ResponderErrorCode;

  constructor(code: ResponderErrorCode, message: string, options?: { cause?: unknown }) {
    super(code, message, options);
  }
}

export type ForwardErrorCode =
  | 'FORWARD_APP_UNREACHABLE'
  | 'FORWARD_CONNECT_TIMEOUT'
  | 'FORWARD_ABORTED'
  | 'FORWARD_PROXY_HEADER';

/** Rejections of `Forwarder.connect`; `message` is safe to send to the client. */
export class ForwardError extends AgentError {
  declare readonly code: ForwardErrorCode;

  constructor(code: ForwardErrorCode, message: string, options?: { cause?: unknown }) {
    super(code, message, options);
  }
}
