// The error class of src/http. A stage that refuses a request throws an HttpModeError carrying the HTTP
// status to answer with; the pipeline turns it into a JSON error response ({"error": code, "message": ...}).
// Messages are sent to the client: they say what was expected and what was found, never body bytes or
// header values.
import { AgentError } from '../errors.ts';

export type HttpModeErrorCode =
  | 'HTTP_BAD_OPTIONS'
  | 'HTTP_FORWARDER_CLOSED'
  | 'HTTP_BAD_REQUEST'
  /** A request head, or a gap in a request body, longer than the headers timeout (408). */
  | 'HTTP_REQUEST_TIMEOUT'
  | 'HTTP_BODY_TOO_LARGE'
  /** More header fields than the http.Server path takes (431, request-head-checks.ts). */
  | 'HTTP_TOO_MANY_HEADERS'
  | 'HTTP_METHOD_NOT_ALLOWED'
  /** A request Transfer-Encoding other than `chunked` alone (501). */
  | 'HTTP_UNSUPPORTED_TRANSFER_CODING'
  | 'HTTP_APP_UNREACHABLE'
  | 'HTTP_APP_TIMEOUT'
  | 'HTTP_APP_BAD_RESPONSE'
  | 'HTTP_ATTESTATION_UNAVAILABLE'
  /** /.well-known/attestation?nonce=: over the NSM budget for client nonces (429, Retry-After). */
  | 'HTTP_RATE_LIMITED'
  | 'HTTP_DECRYPT_FAILED'
  | 'HTTP_TOO_MANY_ENCRYPTED_FIELDS'
  | 'HTTP_DECRYPT_BUSY'
  /** api_key_auth: no api-key header (401). */
  | 'HTTP_API_KEY_MISSING'
  /** api_key_auth: an api-key header that is none of the configured keys (401). */
  | 'HTTP_API_KEY_INVALID'
  | 'HTTP_INTERNAL';

export class HttpModeError extends AgentError {
  declare readonly code: HttpModeErrorCode;
  /** HTTP status the client gets for this error. */
  readonly status: number;

  constructor(code: HttpModeErrorCode, status: number, message: string, options?: { cause?: unknown }) {
    super(code, message, options);
    this.status = status;
  }
}
