// KMS-sealed [secrets] (kms-secret-format.ts): sealed by the operator with a GenerateDataKey data key, opened in
// the enclave at boot with KMS Decrypt + Recipient — the keyring's attested path (kms-attested.ts), under the
// same key policy. Errors name the variable, never the value.
import { createAttestedKmsDecryptor, type AttestedKmsOptions } from './kms-attested.ts';
import { KmsKeyringError } from './kms-errors.ts';
import type { SealOptions } from './kms-seal.ts';
import { openKmsSecretValue, parseKmsSecretValue, sealKmsSecretValue } from './kms-secret-format.ts';
import { SecretsError } from './secrets.ts';

/** Seals `text` for variable `name` under a fresh data key of `o.keyId` (the operator's credentials). */
export async function sealKmsSecret(name: string, text: string, o: SealOptions): Promise<string> {
  // The operator's side (secrets seal): the AWS SDK is loaded here, never by an agent that only opens secrets.
  const { generateDataKey } = await import('./kms-seal.ts');
  const dk = await generateDataKey(o);
  try {
    return sealKmsSecretValue(name, text, dk.plaintext, { keyId: dk.keyId, ciphertextBlob: dk.ciphertextBlob });
  } finally {
    dk.plaintext.fill(0);
  }
}

/**
 * Opens every `kms:` secret (NAME → value) with one attested decryptor: one KMS Decrypt per value, each data
 * key wiped once its value is open. The first that does not open stops everything (SecretsError naming it).
 */
export async function openKmsSecrets(secrets: Readonly<Record<string, string>>, o: AttestedKmsOptions): Promise<Record<string, string>> {
  const names = Object.keys(secrets);
  if (names.length === 0) return {};
  const kms = await createAttestedKmsDecryptor(o);
  const out: Record<string, string> = {};
  try {
    for (const name of names) {
      const v = parseKmsSecretValue(secrets[name]!);
      if (v === null) throw new SecretsError('SECRET_BAD_VALUE', name, `secrets.${name}: not a well-formed kms: value (value not shown)`);
      let dataKey: Uint8Array;
      try {
        dataKey = await kms.decrypt(v.ciphertextBlob, `key ${v.keyId}`, v.keyId);
      } catch (err) {
        if (err instanceof KmsKeyringError) throw new SecretsError('SECRET_DOES_NOT_DECRYPT', name, `secrets.${name}: KMS did not release its data key: ${err.code}: ${err.message}`);
        throw err;
      }
      let text: string | null;
      try {
        text = dataKey.length === 32 ? openKmsSecretValue(name, v, dataKey) : null;
      } finally {
        dataKey.fill(0);
      }
      if (text === null) throw new SecretsError('SECRET_DOES_NOT_DECRYPT', name, `secrets.${name}: does not open with the data key KMS released (altered, or sealed for another variable name); seal it again with \`enclave-agent secrets seal ${name} --kms-key-id …\``);
      if (text.includes('\0')) throw new SecretsError('SECRET_BAD_VALUE', name, `secrets.${name}: decrypts to text holding a NUL character, which an environment variable cannot carry`);
      out[name] = text;
    }
    return out;
  } finally {
    kms.close();
  }
}
