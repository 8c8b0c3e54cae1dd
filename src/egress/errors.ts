// The error class of the egress boundary: policy parsing, the flow protocol, the proxy and transparent mode.
import { AgentError } from '../errors.ts';

export type EgressErrorCode =
  | 'EGRESS_BAD_DESTINATION'
  | 'EGRESS_DENIED'
  | 'EGRESS_BAD_FRAME'
  | 'EGRESS_FRAME_TIMEOUT'
  | 'EGRESS_CONNECT_FAILED'
  | 'EGRESS_TIMEOUT'
  | 'EGRESS_RESOLVER_ERROR'
  | 'EGRESS_DIALER_UNREACHABLE'
  | 'EGRESS_DIALER_BUSY'
  | 'EGRESS_PROXY_BUSY'
  | 'EGRESS_BAD_DNS_MESSAGE'
  | 'EGRESS_SETUP_FAILED'
  | 'EGRESS_ORIGINAL_DST_UNAVAILABLE';

export class EgressError extends AgentError {
  declare readonly code: EgressErrorCode;
  constructor(code: EgressErrorCode, message: string, options?: { cause?: unknown }) {
    super(code, message, options);
  }
}
