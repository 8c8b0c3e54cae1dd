// The error class of src/ingress (TLS termination in the enclave). Messages never carry key material.
import { AgentError } from '../errors.ts';

export type IngressErrorCode =
  /** The SNI asks for a nonce (`<nonce>.attest.<host>`) but label[0] is not 1–64 bytes of base64. */
  | 'INGRESS_BAD_NONCE'
  /** Too many fresh-nonce certificates asked for: each costs an NSM call. */
  | 'INGRESS_NONCE_RATE_LIMITED'
  /** The NSM could not produce the document the certificate must carry. */
  | 'INGRESS_ATTESTATION_FAILED'
  /** Bad options handed to the ingress (programming or configuration error). */
  | 'INGRESS_BAD_OPTIONS';

export class IngressError extends AgentError {
  declare readonly code: IngressErrorCode;
  constructor(code: IngressErrorCode, message: string, options?: { cause?: unknown }) {
    super(code, message, options);
  }
}
