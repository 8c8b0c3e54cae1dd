// The error class of the attested-certificate verifier (attested-cert.ts). Browser-safe.
// Failures of the document itself keep their AttestationError (ATTESTATION_PCR_MISMATCH, ...); these codes are
// the ones only a certificate can have.
import { AgentError } from '../errors.ts';

export type AttestedCertErrorCode =
  /** The bytes are not one DER X.509 certificate (or PEM of one). */
  | 'ATTESTED_CERT_MALFORMED'
  /** The certificate has no subjectAltName dNSName whose first label is hex of a document. */
  | 'ATTESTED_CERT_NO_DOCUMENT'
  /** The document's user_data is not the certificate's SubjectPublicKeyInfo DER: it attests another key. */
  | 'ATTESTED_CERT_KEY_MISMATCH';

export class AttestedCertError extends AgentError {
  declare readonly code: AttestedCertErrorCode;
  constructor(code: AttestedCertErrorCode, message: string, options?: { cause?: unknown }) {
    super(code, message, options);
  }
}
