import { AgentError } from '../errors.ts';

/**
 * Stable codes of every attestation failure. One code per check, so callers (and tests) can tell a stale
 * certificate from a wrong PCR without parsing messages.
 */
export type AttestationErrorCode =
  /** Not CBOR, truncated, trailing bytes, indefinite lengths, over the size limits, not a COSE_Sign1. */
  | 'ATTESTATION_MALFORMED'
  /** Well-formed CBOR that breaks the document rules (WIRE.md §6 / AWS syntactic validation). */
  | 'ATTESTATION_STRUCTURE'
  /** A certificate does not parse, does not chain to the next, lacks CA rights, or uses an unsupported algorithm. */
  | 'ATTESTATION_CHAIN'
  /** A certificate of the chain is not valid at the verification time (expired or not yet valid). */
  | 'ATTESTATION_CERT_EXPIRED'
  /** The chain is sound but does not end at one of the trusted roots. */
  | 'ATTESTATION_UNTRUSTED_ROOT'
  /** The COSE_Sign1 ES384 signature does not verify with the leaf certificate's key. */
  | 'ATTESTATION_SIGNATURE'
  | 'ATTESTATION_NONCE_MISMATCH'
  /** `user_data` differs from the expected bytes (a Noise session: the Attestation message's control nonce). */
  | 'ATTESTATION_USER_DATA_MISMATCH'
  /** PCR 0, 1, 2 or 8 is absent, or (one pinned set) a pinned PCR is. */
  | 'ATTESTATION_PCR_MISSING'
  | 'ATTESTATION_PCR_MISMATCH'
  /** PCR0/1/2 all zero: a debug-mode enclave, whose memory the host can read; refused unless allowed. */
  | 'ATTESTATION_DEBUG_ENCLAVE'
  /** The document's timestamp is older than `maxAgeMs`. */
  | 'ATTESTATION_TOO_OLD'
  /** With `maxAgeMs`: the document's timestamp is later than now + the allowed clock skew. */
  | 'ATTESTATION_FROM_FUTURE'
  /** The caller's expectations are unusable (bad PCR hex, bad root PEM, ...). */
  | 'ATTESTATION_BAD_EXPECTATIONS'
  /** The simulator's state directory or CA files could be swapped or read by others (loose modes, other owner). */
  | 'NSM_SIMULATOR_INSECURE'
  /** The NSM (device or simulator) answered `{"Error": "<code>"}` or something that is not a valid reply. */
  | 'NSM_ERROR';

export class AttestationError extends AgentError {
  declare readonly code: AttestationErrorCode;

  constructor(code: AttestationErrorCode, message: string, options?: { cause?: unknown }) {
    super(code, message, options);
  }
}

/** The NSM replied `{"Error": nsmCode}`; `nsmCode` is the device's own ErrorCode name (e.g. "InputTooLarge"). */
export class NsmError extends AttestationError {
  readonly nsmCode: string;

  constructor(nsmCode: string, message: string) {
    super('NSM_ERROR', message);
    this.nsmCode = nsmCode;
  }
}
