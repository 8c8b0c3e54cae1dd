// The operator side of the KMS keyring: `keys seal` (a fresh keyring) and `keys rotate` (a new current key pair
// on top of an existing file). Both seal under a data key from KMS GenerateDataKey, with the operator's own
// credentials: GenerateDataKey returns the data key and its CiphertextBlob together, so the operator's role needs
// no kms:Decrypt at all — `keys rotate` carries the older generations over still sealed (it never opens them),
// and only the attested enclave decrypts.
import { GenerateDataKeyCommand } from '@aws-sdk/client-kms';
import { KeyMaterial, Keyring, MAX_KEY_GENERATIONS, type PublicKeys } from './keyring.ts';
import { createKmsClient, type KmsClientOptions } from './kms-client.ts';
import { DEFAULT_KMS_CALL_TIMEOUT_MS, KmsDeadlineError, withinDeadline } from './kms-deadline.ts';
import { KmsKeyringError } from './kms-errors.ts';
import { arnRegion } from './kms-secret-format.ts';
import { parseSealedKeyring, sealKeyring, sealRotated, type SealedGeneration } from './sealed-keyring.ts';

export interface SealOptions extends Omit<KmsClientOptions, 'proxy' | 'maxAttempts'> {
  keyId: string;
  /** The whole GenerateDataKey call, the SDK's attempts included (default DEFAULT_KMS_CALL_TIMEOUT_MS). */
  requestTimeoutMs?: number;
}

/** A 32-byte data key and its CiphertextBlob from KMS GenerateDataKey (the caller wipes `plaintext`). */
export async function generateDataKey(o: SealOptions): Promise<{ keyId: string; plaintext: Uint8Array; ciphertextBlob: Uint8Array }> {
  const { keyId, ...clientOpts } = o;
  const timeoutMs = o.requestTimeoutMs ?? DEFAULT_KMS_CALL_TIMEOUT_MS;
  const kms = createKmsClient({ ...clientOpts, requestTimeoutMs: timeoutMs, maxAttempts: 3 });
  let out;
  try {
    const command = new GenerateDataKeyCommand({ KeyId: keyId, KeySpec: 'AES_256' });
    out = await withinDeadline(timeoutMs, (abortSignal) => kms.client.send(command, { abortSignal }));
  } catch (err) {
    if (err instanceof KmsKeyringError) throw err; // already typed (an answer over the size cap)
    if (err instanceof KmsDeadlineError) {
      throw new KmsKeyringError('KMS_UNREACHABLE', `KMS GenerateDataKey for ${keyId} in ${o.region}${o.endpoint ? ` (${o.endpoint})` : ''}: ${err.message}`, { cause: err });
    }
    const e = err as { name?: string; message?: string; code?: string };
    const code = e.name === 'AccessDeniedException' ? 'KMS_ACCESS_DENIED' : e.name && (err as { $metadata?: unknown }).$metadata ? 'KMS_REQUEST_FAILED' : 'KMS_UNREACHABLE';
    throw new KmsKeyringError(code, `KMS GenerateDataKey for ${keyId} in ${o.region} failed: ${e.name ?? 'error'}${e.message ? `: ${e.message.slice(0, 300)}` : ''}`);
  } finally {
    kms.close();
  }
  if (!out.Plaintext || out.Plaintext.length !== 32 || !out.CiphertextBlob) {
    out.Plaintext?.fill(0);
    throw new KmsKeyringError('KMS_REQUEST_FAILED', 'KMS GenerateDataKey answered without a 32-byte Plaintext and a CiphertextBlob');
  }
  return { keyId: out.KeyId ?? keyId, plaintext: out.Plaintext, ciphertextBlob: out.CiphertextBlob };
}

export async function sealNewKeyring(o: SealOptions): Promise<{ text: string; publicKeys: PublicKeys; keyIds: Keyring['keyIds'] }> {
  const dk = await generateDataKey(o);
  const material = KeyMaterial.generate();
  try {
    const text = sealKeyring(material, dk.plaintext, { keyId: dk.keyId, region: o.region, ciphertextBlob: dk.ciphertextBlob });
    const ring = Keyring.fromMaterial(material);
    return { text, publicKeys: ring.publicKeys(), keyIds: ring.keyIds };
  } finally {
    dk.plaintext.fill(0);
  }
}

export interface RotateOptions extends Omit<SealOptions, 'keyId' | 'region'> {
  /** The current sealed-keyring file's text (version 1 or 2). */
  previous: string;
  /** The KMS key for the new generation; default the file's current one. */
  keyId?: string;
  /** Leave the oldest generation out (needed once the file holds MAX_KEY_GENERATIONS). */
  dropOldest?: boolean;
}

/**
 * `keys rotate`: a fresh key pair becomes the current generation; the file's generations are kept, sealed as
 * they are, for decryption. The region stays the file's ([keyring] region names it).
 */
export async function rotateSealedKeyring(o: RotateOptions): Promise<{ text: string; publicKeys: PublicKeys; keyIds: Keyring['keyIds']; retired: PublicKeys[]; dropped: SealedGeneration | null }> {
  const { previous: text, dropOldest, keyId, ...clientOpts } = o;
  const previous = parseSealedKeyring(text);
  // Checked before KMS is asked: a full file without --drop-oldest is refused without a GenerateDataKey.
  const kept = previous.generations.length - (dropOldest ? 1 : 0);
  if (kept + 1 > MAX_KEY_GENERATIONS) {
    throw new KmsKeyringError('KMS_BAD_SEALED_FILE', `sealed keyring: holds ${previous.generations.length} key generations, the most a keyring keeps is ${MAX_KEY_GENERATIONS}: retire the oldest (--drop-oldest; values encrypted to it stop decrypting)`);
  }
  const inArn = keyId === undefined ? null : arnRegion(keyId);
  if (inArn !== null && inArn !== previous.kms.region) {
    throw new KmsKeyringError('KMS_BAD_SEALED_FILE', `sealed keyring: sealed in region ${previous.kms.region}; the new pair's KMS key is in ${inArn} (one file, one region: [keyring] region names it)`);
  }
  const dk = await generateDataKey({ ...clientOpts, keyId: keyId ?? previous.kms.keyId, region: previous.kms.region });
  const material = KeyMaterial.generate();
  try {
    const out = sealRotated(previous, material, dk.plaintext, { keyId: dk.keyId, ciphertextBlob: dk.ciphertextBlob }, dropOldest === true);
    const ring = Keyring.fromMaterial(material);
    const retired = previous.generations.slice(0, dropOldest ? -1 : undefined).map((g) => g.publicKeys);
    return { text: out.text, publicKeys: ring.publicKeys(), keyIds: ring.keyIds, retired, dropped: out.dropped };
  } finally {
    dk.plaintext.fill(0);
  }
}
