// The one error class of the host bridge.
import { AgentError } from '../errors.ts';

export type BridgeErrorCode = 'BRIDGE_BAD_OPTIONS' | 'BRIDGE_LISTEN_FAILED' | 'BRIDGE_OPS_TIMEOUT' | 'BRIDGE_OPS_TOO_LARGE' | 'BRIDGE_OPS_FAILED';

export class BridgeError extends AgentError {
  declare readonly code: BridgeErrorCode;
  constructor(code: BridgeErrorCode, message: string, options?: { cause?: unknown }) {
    super(code, message, options);
  }
}
