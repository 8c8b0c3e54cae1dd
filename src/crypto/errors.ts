import { AgentError } from '../errors.ts';

/**
 * A string is not a well-formed `ev:` value, or a value/role cannot be encrypted.
 * Codes: EV_MALFORMED, EV_UNSUPPORTED_VERSION, EV_BAD_ROLE, EV_BAD_VALUE, EV_BAD_KEY.
 */
export class EvFormatError extends AgentError {}

/**
 * A well-formed `ev:` value does not decrypt with this keyring (tampered, truncated ciphertext,
 * produced for another key) or its authenticated content is not what its type segment says.
 * Codes: EV_DECRYPT_FAILED, EV_WRONG_KEY (the keyring holds no key for the token's curve),
 * EV_UNSAFE_HEADER_VALUE (decrypted text cannot be placed in an HTTP header).
 * Messages never contain plaintext, key bytes or ciphertext.
 */
export class EvDecryptError extends AgentError {
  /** HTTP status the request pipeline and the local API answer with (Unprocessable Content). */
  readonly status = 422;
}

/** Loading, generating or unsealing the enclave's key pairs. Codes: KEYRING_*. */
export class KeyringError extends AgentError {}
