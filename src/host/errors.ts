// The one error class of the host bridge.
import { AgentError } from '../errors.ts';

export type BridgeErrorCode = 'BRIDGE_BAD_OPTIONS' | 'BRIDGE_LISTEN_FAILED';

export class BridgeError extends AgentError {
  declare readonly code: BridgeErrorCode;
  constructor(code: BridgeErrorCode, message: string, options?: { cause?: unknown }) {
    super(code, message, options);
  }
}
