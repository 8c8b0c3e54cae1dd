// The one error class of the credentials channel (the bridge's server and the enclave's provider).
import { AgentError } from '../errors.ts';

export type CredentialsErrorCode =
  | 'CREDENTIALS_BAD_FRAME'
  | 'CREDENTIALS_BAD_OPTIONS'
  | 'CREDENTIALS_FRAME_TOO_LARGE'
  | 'CREDENTIALS_TIMEOUT'
  | 'CREDENTIALS_UNAVAILABLE'
  | 'CREDENTIALS_UNREACHABLE';

export class CredentialsError extends AgentError {
  declare readonly code: CredentialsErrorCode;
  constructor(code: CredentialsErrorCode, message: string, options?: { cause?: unknown }) {
    super(code, message, options);
  }
}
