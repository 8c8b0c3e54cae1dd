/**
 * The base of every typed error the agent raises. Each module boundary has one subclass
 * (NoiseError, WireError, AttestationError, ...) and every instance carries a stable `code`
 * (`NOISE_DECRYPT_FAILED`, `ATTESTATION_PCR_MISMATCH`, ...) that callers and tests match on.
 * Messages say what was expected and what was found — never secret bytes.
 */
export class AgentError extends Error {
  readonly code: string;

  constructor(code: string, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
    this.name = new.target.name;
  }
}

/** True when `err` is an AgentError, optionally with the given code. */
export function isAgentError(err: unknown, code?: string): err is AgentError {
  return err instanceof AgentError && (code === undefined || err.code === code);
}
