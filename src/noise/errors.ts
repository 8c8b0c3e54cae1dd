import { AgentError } from '../errors.ts';

/** Stable codes of every error the Noise layer raises. */
export type NoiseErrorCode =
  | 'NOISE_DECRYPT_FAILED'
  | 'NOISE_NONCE_EXHAUSTED'
  | 'NOISE_MESSAGE_TOO_LARGE'
  | 'NOISE_BAD_MESSAGE'
  | 'NOISE_BAD_STATE'
  | 'NOISE_UNSUPPORTED_PROTOCOL'
  | 'NOISE_BAD_KEY';

/** The one error class of `src/noise`. Messages never carry key or plaintext bytes. */
export class NoiseError extends AgentError {
  declare readonly code: NoiseErrorCode;

  constructor(code: NoiseErrorCode, message: string, options?: { cause?: unknown }) {
    super(code, message, options);
  }
}
