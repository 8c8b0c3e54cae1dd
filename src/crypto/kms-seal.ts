// The operator side of the KMS keyring (`enclave-agent keys seal`): a fresh keyring sealed under a data key
// from KMS GenerateDataKey, with the operator's own credentials. GenerateDataKey returns the data key and its
// CiphertextBlob together, so the operator's role needs no kms:Decrypt at all; only the enclave decrypts.
import { GenerateDataKeyCommand } from '@aws-sdk/client-kms';
import { KeyMaterial, Keyring, type PublicKeys } from './keyring.ts';
import { createKmsClient, type KmsClientOptions } from './kms-client.ts';
import { KmsKeyringError } from './kms-errors.ts';
import { sealKeyring } from './sealed-keyring.ts';

export interface SealOptions extends Omit<KmsClientOptions, 'proxy' | 'maxAttempts'> {
  keyId: string;
}

export async function sealNewKeyring(o: SealOptions): Promise<{ text: string; publicKeys: PublicKeys; keyIds: Keyring['keyIds'] }> {
  const { keyId, ...clientOpts } = o;
  const kms = createKmsClient({ ...clientOpts, maxAttempts: 3 });
  let out;
  try {
    out = await kms.client.send(new GenerateDataKeyCommand({ KeyId: keyId, KeySpec: 'AES_256' }));
  } catch (err) {
    const e = err as { name?: string; message?: string; code?: string };
    const code = e.name === 'AccessDeniedException' ? 'KMS_ACCESS_DENIED' : e.name && (err as { $metadata?: unknown }).$metadata ? 'KMS_REQUEST_FAILED' : 'KMS_UNREACHABLE';
    throw new KmsKeyringError(code, `KMS GenerateDataKey for ${keyId} in ${o.region} failed: ${e.name ?? 'error'}${e.message ? `: ${e.message.slice(0, 300)}` : ''}`);
  } finally {
    kms.close();
  }
  if (!out.Plaintext || out.Plaintext.length !== 32 || !out.CiphertextBlob) throw new KmsKeyringError('KMS_REQUEST_FAILED', 'KMS GenerateDataKey answered without a 32-byte Plaintext and a CiphertextBlob');
  const material = KeyMaterial.generate();
  try {
    const text = sealKeyring(material, out.Plaintext, { keyId: out.KeyId ?? keyId, region: o.region, ciphertextBlob: out.CiphertextBlob });
    const ring = Keyring.fromMaterial(material);
    return { text, publicKeys: ring.publicKeys(), keyIds: ring.keyIds };
  } finally {
    out.Plaintext.fill(0);
  }
}
