import { AgentError } from '../errors.ts';

export type OpsErrorCode =
  | 'OPS_BAD_OPTIONS'
  | 'OPS_LISTEN_FAILED'
  | 'OPS_CLOCK_NO_CHANNEL'
  | 'OPS_CLOCK_TIMEOUT'
  | 'OPS_CLOCK_PROTOCOL'
  | 'OPS_CLOCK_CLOSED'
  | 'OPS_CLOCK_BAD_STEP';

/** Errors of the ops channel (metrics, health, clock). */
export class OpsError extends AgentError {
  declare readonly code: OpsErrorCode;

  constructor(code: OpsErrorCode, message: string, options?: { cause?: unknown }) {
    super(code, message, options);
  }
}
