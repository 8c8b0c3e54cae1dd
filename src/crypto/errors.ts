import { AgentError } from '../errors.ts';

/**
 * A string is not a well-formed `ev:` value, or a value/role cannot be encrypted.
 * Codes: EV_MALFORMED, EV_UNSUPPORTED_VERSION, EV_BAD_ROLE, EV_BAD_VALUE, EV_BAD_KEY.
 */
export class EvFormatError extends AgentError {}

/**
 * Why a well-formed `ev:` value was refused. For the operator log only: never sent to a client, because
 * telling causes apart is an oracle (Tk9D/RFVC do not authenticate the type segment, so relabelling a
 * captured string value `number` and reading "not a JSON number" tells whether its plaintext is numeric).
 */
export type EvDecryptReason =
  | 'EPHEMERAL_KEY_NOT_ON_CURVE'
  | 'AUTHENTICATION_FAILED' // wrong key, tampered or truncated: AES-GCM does not open
  | 'MALFORMED_METADATA'
  | 'PLAINTEXT_NOT_UTF8'
  | 'NOT_A_JSON_NUMBER'
  | 'NOT_A_BOOLEAN'
  | 'UNSAFE_HEADER_VALUE' // plaintext holds CR/LF/controls or characters above U+00FF
  | 'RESERVED_FOR_SECRETS'; // an app's [secrets] value (secret-ciphertexts.ts): opened for `run` only, never for a request

/** The one message every refused `ev:` value gets, whatever the reason. */
export const EV_DECRYPT_MESSAGE = "ev: value does not decrypt with this enclave's keys";

/**
 * A well-formed `ev:` value does not decrypt with this keyring (tampered, truncated ciphertext, produced for
 * another key), its authenticated content is not what its type segment says, or its plaintext cannot be
 * placed where it was found (a header). Code EV_DECRYPT_FAILED; `message` is EV_DECRYPT_MESSAGE for every
 * cause. `reason` and `detail` (version, curve, key id) are for the operator log; neither ever holds
 * plaintext, key bytes or ciphertext.
 */
export class EvDecryptError extends AgentError {
  declare readonly code: 'EV_DECRYPT_FAILED';
  /** HTTP status the request pipeline and the local API answer with (Unprocessable Content). */
  readonly status = 422;
  readonly reason: EvDecryptReason;
  readonly detail: string;

  constructor(reason: EvDecryptReason, detail = '') {
    super('EV_DECRYPT_FAILED', EV_DECRYPT_MESSAGE);
    this.reason = reason;
    this.detail = detail;
  }

  /** The fields to log for an operator (no secrets). */
  toLog(): { code: 'EV_DECRYPT_FAILED'; reason: EvDecryptReason; detail: string } {
    return { code: this.code, reason: this.reason, detail: this.detail };
  }
}

/**
 * Decryption work refused because the agent's global decryption budget is spent (too many requests
 * decrypting at once). Code EV_DECRYPT_BUSY; the local API answers 429, HTTP mode 503.
 */
export class EvBusyError extends AgentError {
  declare readonly code: 'EV_DECRYPT_BUSY';

  constructor(limit: number) {
    super('EV_DECRYPT_BUSY', `too many requests are decrypting or encrypting ev: values at once (limit ${limit}); retry later`);
  }
}

/**
 * A request's ECDH budget is spent (ecdh-budget.ts): its values needed more key agreements than [limits]
 * max_decrypt_fields allows — after `keys rotate`, values under retired keys cost one ECDH per generation tried.
 * Code EV_DECRYPT_BUDGET; answered 413 like too many fields, and nothing is forwarded.
 */
export class EvBudgetError extends AgentError {
  declare readonly code: 'EV_DECRYPT_BUDGET';
  readonly limit: number;

  constructor(limit: number) {
    super('EV_DECRYPT_BUDGET', `the values in this request need more than ${limit} key agreements to decrypt (the most the agent does per request)`);
    this.limit = limit;
  }
}

/**
 * The decrypt worker pool could not do a job: it was closed (EV_POOL_CLOSED) or a worker stopped or failed
 * outside decryption (EV_POOL_WORKER_FAILED). Answered as an internal error; nothing was forwarded.
 */
export class EvPoolError extends AgentError {
  declare readonly code: 'EV_POOL_CLOSED' | 'EV_POOL_WORKER_FAILED';

  constructor(code: 'EV_POOL_CLOSED' | 'EV_POOL_WORKER_FAILED', message: string) {
    super(code, message);
  }
}

/** Loading, generating or unsealing the enclave's key pairs. Codes: KEYRING_*. */
export class KeyringError extends AgentError {}
