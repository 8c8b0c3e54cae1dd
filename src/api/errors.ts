import { AgentError } from '../errors.ts';

/**
 * The local API (127.0.0.1:9999). Codes: API_BAD_HOST (asked to bind anything but 127.0.0.1),
 * API_LISTEN_FAILED, and the request-level codes answered to clients (API_BAD_JSON, API_BAD_INPUT,
 * API_BODY_TOO_LARGE, API_NOT_FOUND, API_METHOD_NOT_ALLOWED, API_ATTESTATION_FAILED; and before any route
 * API_FORBIDDEN_HOST, API_FORBIDDEN_ORIGIN, API_UNSUPPORTED_MEDIA_TYPE from request-guards.ts) with their `status`;
 * API_TOO_MANY_CONNECTIONS (503) is written by connection-cap.ts on a connection past the bound.
 */
export class ApiError extends AgentError {
  readonly status: number;

  constructor(code: string, status: number, message: string, options?: { cause?: unknown }) {
    super(code, message, options);
    this.status = status;
  }
}
