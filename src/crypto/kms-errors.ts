import { AgentError } from '../errors.ts';

export type KmsKeyringCode =
  | 'KMS_BAD_ENVELOPE' // CiphertextForRecipient is not the CMS EnvelopedData KMS sends, or does not open
  | 'KMS_BAD_SEALED_FILE' // the sealed-keyring file is malformed or tampered (AES-GCM does not open)
  | 'KMS_ACCESS_DENIED' // KMS refused (the key policy's PCR conditions, the credentials)
  | 'KMS_UNREACHABLE' // KMS did not answer after the retries
  | 'KMS_REQUEST_FAILED' // KMS answered with another error
  | 'KMS_RESPONSE_TOO_LARGE' // KMS's answer is larger than any KMS answer (kms-response-cap.ts)
  | 'KMS_IO' // reading or writing the sealed-keyring file
  | 'KMS_CLOSED'; // the attested decryptor was used after close() (its RSA key is wiped)

/** The KMS keyring source, the sealed-keyring file and the CMS envelope. Messages never hold key bytes. */
export class KmsKeyringError extends AgentError {
  declare readonly code: KmsKeyringCode;

  constructor(code: KmsKeyringCode, message: string, options?: { cause?: unknown }) {
    super(code, message, options);
  }
}
