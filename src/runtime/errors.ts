import { AgentError } from '../errors.ts';

export type RuntimeErrorCode =
  | 'RUNTIME_BAD_OPTIONS'
  | 'RUNTIME_VSOCK_UNAVAILABLE'
  | 'RUNTIME_NSM_UNAVAILABLE'
  | 'RUNTIME_NO_COMMAND'
  | 'RUNTIME_NO_SANDBOX'
  | 'RUNTIME_KEYRING'
  /** api_key_auth = true with no key configured: `run` refuses to boot. */
  | 'RUNTIME_NO_API_KEY'
  | 'RUNTIME_ABORTED'
  /** A session worker ([limits] workers) failed to start, or stopped: the agent cannot keep its sessions. */
  | 'RUNTIME_WORKER_FAILED'
  | 'LOG_SINK_BAD_OPTIONS';

/** The error class of src/runtime (the in-enclave runtime: supervision, drain, wiring). */
export class RuntimeError extends AgentError {
  declare readonly code: RuntimeErrorCode;
  constructor(code: RuntimeErrorCode, message: string, options?: { cause?: unknown }) {
    super(code, message, options);
  }
}

/** RUNTIME_NO_SANDBOX because the agent's code and dependencies lie in more directories than the wrapper can make read-only. */
export class SandboxDirsError extends RuntimeError {
  constructor(message: string) {
    super('RUNTIME_NO_SANDBOX', message);
  }
}
