// Secrets for the app ([secrets] in enclave.toml): environment variable names mapped to `ev:` values or KMS-sealed
// `kms:` values (kms-secret-format.ts; opened by kms-secrets.ts). `run` decrypts them once the keyring is open and hands the plaintext to the app's environment
// only — never to the agent's own process.env, its log, or a file. Errors name the variable, never the value.
// Never to a client either: `secrets seal` writes the data role SECRET_ROLE, and decryptSecrets registers the
// configured values with the keyring; every other decryption refuses both (secret-ciphertexts.ts).
import { AgentError } from '../errors.ts';
import { EvDecryptError, EvFormatError } from './errors.ts';
import { decryptSecretToken, EvEncryptor, isEvToken, looksLikeEv, type EncryptionPublicKey, type EvCurve } from './ev-format.ts';
import type { Keyring } from './keyring.ts';
import { arnRegion, isKmsSecret, parseKmsSecretValue } from './kms-secret-format.ts';
import { SECRET_ROLE, withholdSecretValues } from './secret-ciphertexts.ts';

/** What a POSIX shell accepts as a variable name, upper case only (so a typo'd lower-case key stands out). */
export const SECRET_NAME = /^[A-Z_][A-Z0-9_]*$/;
/** Variables the agent itself sets for the app (egress); a secret may not replace them. */
export const RESERVED_NAMES: ReadonlySet<string> = new Set(['HTTP_PROXY', 'HTTPS_PROXY', 'NO_PROXY', 'http_proxy', 'https_proxy', 'no_proxy']);
/** An environment variable larger than this is not a secret but a file. */
export const MAX_SECRET_BYTES = 64 * 1024;

export type SecretsErrorCode = 'SECRET_BAD_NAME' | 'SECRET_BAD_VALUE' | 'SECRET_DOES_NOT_DECRYPT' | 'SECRET_RESERVED_NAME';

export class SecretsError extends AgentError {
  declare readonly code: SecretsErrorCode;
  /** The variable concerned (its name only). */
  readonly variable: string;
  constructor(code: SecretsErrorCode, variable: string, message: string) {
    super(code, message);
    this.variable = variable;
  }
}

/**
 * Checks one [secrets] entry without decrypting it. The message never quotes the value: a plaintext pasted
 * here by mistake must not reach a log through the error meant to catch it.
 */
export function checkSecretEntry(name: string, value: unknown): string {
  if (!SECRET_NAME.test(name)) throw new SecretsError('SECRET_BAD_NAME', name.slice(0, 64), `secrets: "${name.slice(0, 64)}" is not an environment variable name ([A-Z_][A-Z0-9_]*)`);
  if (RESERVED_NAMES.has(name)) throw new SecretsError('SECRET_RESERVED_NAME', name, `secrets.${name}: the agent sets ${name} for the app itself ([egress]); pick another name`);
  if (typeof value !== 'string') throw new SecretsError('SECRET_BAD_VALUE', name, `secrets.${name}: expected an ev: or kms: string (from \`enclave-agent secrets seal ${name}\`), found ${Array.isArray(value) ? 'an array' : typeof value}`);
  if (/^kms:/i.test(value)) {
    if (parseKmsSecretValue(value) === null) {
      throw new SecretsError('SECRET_BAD_VALUE', name, `secrets.${name}: not a well-formed kms: value (from \`enclave-agent secrets seal ${name} --kms-key-id …\`; value not shown)`);
    }
    return value;
  }
  if (!looksLikeEv(value) || !isEvToken(value)) {
    throw new SecretsError('SECRET_BAD_VALUE', name, `secrets.${name}: expected an ev: value (from \`enclave-agent secrets seal ${name}\`); plaintext does not belong in enclave.toml (value not shown)`);
  }
  return value;
}

/** The [secrets] entries by kind: `ev:` values (the keyring opens them) and `kms:` values (KMS Decrypt). */
export function splitSecrets(secrets: Readonly<Record<string, string>>): { ev: Record<string, string>; kms: Record<string, string> } {
  const ev: Record<string, string> = {};
  const kms: Record<string, string> = {};
  for (const [name, value] of Object.entries(secrets)) (isKmsSecret(value) ? kms : ev)[name] = value;
  return { ev, kms };
}

/**
 * KMS-sealed values are opened with [keyring] source = "kms"'s region, endpoint and credentials: refused
 * otherwise, and when the value's KMS key is in another region (names the variable, never the value).
 */
export function checkKmsSecrets(secrets: Readonly<Record<string, string>>, keyring: { source: string; region: string | null }): void {
  for (const [name, value] of Object.entries(splitSecrets(secrets).kms)) {
    if (keyring.source !== 'kms') {
      throw new SecretsError('SECRET_BAD_VALUE', name, `secrets.${name}: a KMS-sealed value needs [keyring] source = "kms" (the agent reaches KMS with its region, endpoint and credentials); source is "${keyring.source}"`);
    }
    const region = arnRegion(parseKmsSecretValue(value)!.keyId);
    if (region !== null && region !== keyring.region) {
      throw new SecretsError('SECRET_BAD_VALUE', name, `secrets.${name}: sealed under a KMS key in ${region}; [keyring] region is ${keyring.region ?? '(none)'}`);
    }
  }
}

/** A [secrets] value that opened but is not marked as a secret (secret-ciphertexts.ts); names the variable only. */
export interface SecretWarning {
  readonly code: 'SECRET_WITHOUT_ROLE';
  readonly variable: string;
  readonly message: string;
}

export interface DecryptSecretsOptions {
  /** Called once per value sealed without the SECRET_ROLE data role, after every value has opened. */
  warn?: (w: SecretWarning) => void;
}

/**
 * Decrypts every ev: secret; the first one that does not open stops everything (its name in the error).
 * Registers the values with the keyring (withholdSecretValues): from now on no request or local API call
 * decrypts them. Values with the SECRET_ROLE data role open silently; others (sealed before `secrets seal`
 * wrote the role, or by another tool) open too, with a warning each, since they are ordinary client values.
 */
export function decryptSecrets(secrets: Readonly<Record<string, string>>, keyring: Keyring, opts: DecryptSecretsOptions = {}): Record<string, string> {
  withholdSecretValues(keyring, Object.values(secrets));
  const out: Record<string, string> = {};
  const roleless: string[] = [];
  for (const [name, token] of Object.entries(secrets)) {
    try {
      // Numbers keep their exact text (no float round trip); booleans become "true"/"false".
      const d = decryptSecretToken(token, keyring);
      if (d.text.includes('\0')) throw new SecretsError('SECRET_BAD_VALUE', name, `secrets.${name}: decrypts to text holding a NUL character, which an environment variable cannot carry`);
      out[name] = d.text;
      if (d.metadata?.role !== SECRET_ROLE) roleless.push(name);
    } catch (err) {
      if (err instanceof EvDecryptError || err instanceof EvFormatError) {
        const why = err instanceof EvDecryptError ? `${err.reason}${err.detail === '' ? '' : `, ${err.detail}`}` : err.code;
        throw new SecretsError('SECRET_DOES_NOT_DECRYPT', name, `secrets.${name}: does not decrypt with this enclave's keys (${why}); seal it again for this keyring with \`enclave-agent secrets seal ${name}\``);
      }
      throw err;
    }
  }
  for (const name of roleless) {
    opts.warn?.({
      code: 'SECRET_WITHOUT_ROLE',
      variable: name,
      message:
        `secrets.${name}: sealed without the ${SECRET_ROLE} data role: an ordinary ev: value, the kind the request pipeline and /decrypt ` +
        `decrypt for clients. This agent refuses this exact value to them, but an agent older than this one with the same keyring decrypts ` +
        `it for any client that sends it: seal it again with \`enclave-agent secrets seal ${name}\` and replace its line in enclave.toml`,
    });
  }
  return out;
}

/** The app's environment: what the agent inherited, the agent's own variables for the app, then the secrets. */
export function appEnvironment(inherited: NodeJS.ProcessEnv, agentVars: Readonly<Record<string, string>>, secrets: Readonly<Record<string, string>>): NodeJS.ProcessEnv {
  return { ...inherited, ...agentVars, ...secrets };
}

/** A secret's value: a string (sealed as given, never trimmed), a boolean, or a number as its JSON text. */
export type SecretInput = string | boolean | { jsonNumber: string };

/**
 * Encrypts one secret for [secrets] (a fresh ephemeral key each time), with the SECRET_ROLE data role (QkTC on
 * P-256, S0lS on secp256k1): only `run` decrypts it, never a request or the local API. The app gets exactly the
 * text sealed: strings keep their spaces, numbers their digits (no float round trip).
 */
export function sealSecret(value: SecretInput, key: EncryptionPublicKey, curve: EvCurve = 'p256'): string {
  const enc = new EvEncryptor(key, { curve, role: SECRET_ROLE });
  if (typeof value === 'string') return enc.encryptStringExact(value);
  if (typeof value === 'boolean') return enc.encrypt(value);
  return enc.encryptJsonNumber(value.jsonNumber);
}
