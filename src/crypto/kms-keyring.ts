// `[keyring] source = "kms"`: the keyring sealed by `keys seal`, opened at boot with a data key KMS releases
// only to this attested enclave.
//   1. an RSA-2048 key pair made here; the private half never leaves this function
//   2. an NSM attestation document whose public_key is its SPKI (our own NSM call: no API lets a caller
//      choose public_key — KMS would release the key to whoever holds that key)
//   3. KMS Decrypt(CiphertextBlob, Recipient{RSAES_OAEP_SHA_256, document}) → CiphertextForRecipient
//   4. the CMS envelope opened with the RSA key → the data key → the keyring; the data key is wiped
// KMS evaluates the key policy's kms:RecipientAttestation:PCR<n> conditions against the document.
import { generateKeyPair } from 'node:crypto';
import { promisify } from 'node:util';
import { promises as fs } from 'node:fs';
import { DecryptCommand } from '@aws-sdk/client-kms';
import type { Nsm } from '../attestation/nsm.ts';
import { parseAttestationDocument, pcrHex } from '../attestation/document.ts';
import { openRecipientEnvelope } from './cms-envelope.ts';
import type { KeyMaterial, KeySource } from './keyring.ts';
import { createKmsClient, type KmsClientOptions } from './kms-client.ts';
import { KmsKeyringError } from './kms-errors.ts';
import { openSealedKeyring, parseSealedKeyring } from './sealed-keyring.ts';

export interface KmsKeySourceOptions {
  /** The sealed-keyring file. */
  file: string;
  /** [keyring] region; must equal the file's (a replica in another region needs its own sealed file). */
  region: string;
  endpoint?: string | null;
  nsm: Nsm;
  proxy?: KmsClientOptions['proxy'];
  extraCa?: string[];
  credentials?: KmsClientOptions['credentials'];
  /** Attempts when KMS is unreachable, throttles or fails internally (default 6), backoff doubling from `backoffMs` (500). */
  attempts?: number;
  backoffMs?: number;
  /** Called before each retry (logging; tests). */
  onRetry?: (attempt: number, reason: string) => void;
}

/** KMS errors worth another attempt: no answer, 5xx, throttling. Everything else is final. */
function retryable(err: unknown): boolean {
  const e = err as { name?: string; $metadata?: { httpStatusCode?: number }; $fault?: string };
  if (e.name === 'ThrottlingException' || e.name === 'KMSInternalException' || e.name === 'DependencyTimeoutException') return true;
  const status = e.$metadata?.httpStatusCode;
  return status === undefined || status >= 500;
}

function reasonOf(err: unknown): string {
  const e = err as { name?: string; code?: string; message?: string; $metadata?: { httpStatusCode?: number } };
  if (e.$metadata?.httpStatusCode !== undefined) return `${e.name ?? 'error'} (HTTP ${e.$metadata.httpStatusCode})`;
  return e.code ?? (e.message ? e.message.slice(0, 200) : String(err));
}

function pcrLine(doc: Uint8Array): string {
  try {
    const { document } = parseAttestationDocument(doc);
    return [0, 1, 2].map((i) => `PCR${i}=${pcrHex(document, i) ?? '?'}`).join(' ');
  } catch {
    return '(this enclave\'s PCRs could not be read from its document)';
  }
}

export function kmsKeySource(o: KmsKeySourceOptions): KeySource {
  return {
    async load(): Promise<KeyMaterial> {
      let text: Buffer;
      try {
        text = await fs.readFile(o.file);
      } catch (err) {
        throw new KmsKeyringError('KMS_IO', `cannot read the sealed keyring ${o.file}: ${(err as NodeJS.ErrnoException).code ?? 'error'}`);
      }
      const sealed = parseSealedKeyring(text);
      if (sealed.kms.region !== o.region) {
        throw new KmsKeyringError('KMS_BAD_SEALED_FILE', `sealed keyring ${o.file} was sealed in region ${sealed.kms.region}; [keyring] region is ${o.region}`);
      }
      // Off the event loop (libuv's pool): ~100–500 ms of CPU here, while the egress proxy already serves.
      const { privateKey, publicKey } = await promisify(generateKeyPair)('rsa', { modulusLength: 2048 });
      const spki = new Uint8Array(publicKey.export({ type: 'spki', format: 'der' }));
      const kms = createKmsClient({
        region: o.region,
        ...(o.endpoint ? { endpoint: o.endpoint } : {}),
        ...(o.proxy ? { proxy: o.proxy } : {}),
        ...(o.extraCa ? { extraCa: o.extraCa } : {}),
        ...(o.credentials === undefined ? {} : { credentials: o.credentials }),
      });
      const attempts = o.attempts ?? 6;
      let delay = o.backoffMs ?? 500;
      try {
        for (let attempt = 1; ; attempt++) {
          // A fresh document per attempt: KMS refuses stale ones.
          const doc = await o.nsm.attest({ publicKey: spki });
          let envelope: Uint8Array;
          try {
            const out = await kms.client.send(
              new DecryptCommand({
                CiphertextBlob: sealed.ciphertextBlob,
                KeyId: sealed.kms.keyId,
                Recipient: { KeyEncryptionAlgorithm: 'RSAES_OAEP_SHA_256', AttestationDocument: doc },
              }),
            );
            if (!out.CiphertextForRecipient) throw new KmsKeyringError('KMS_BAD_ENVELOPE', 'KMS Decrypt answered without CiphertextForRecipient');
            envelope = out.CiphertextForRecipient;
          } catch (err) {
            if (err instanceof KmsKeyringError) throw err;
            const name = (err as { name?: string }).name ?? 'error';
            if (name === 'AccessDeniedException') {
              throw new KmsKeyringError('KMS_ACCESS_DENIED', `KMS Decrypt refused: AccessDeniedException for key ${sealed.kms.keyId}; compare the key policy's kms:RecipientAttestation conditions with this enclave's ${pcrLine(doc)}`);
            }
            // The bridge's credential channel: reachable but without credentials is final; not reachable (yet) is
            // retried like KMS, and the last error says it was the bridge, not KMS, that did not answer.
            const code = (err as { code?: unknown }).code;
            const fromBridge = typeof code === 'string' && code.startsWith('CREDENTIALS_');
            if (name === 'CredentialsProviderError' || code === 'CREDENTIALS_UNAVAILABLE' || code === 'CREDENTIALS_BAD_FRAME' || code === 'CREDENTIALS_FRAME_TOO_LARGE') {
              throw new KmsKeyringError('KMS_REQUEST_FAILED', `no AWS credentials for KMS Decrypt: ${reasonOf(err)}`);
            }
            if (fromBridge && attempt >= attempts) {
              throw new KmsKeyringError('KMS_REQUEST_FAILED', `no AWS credentials for KMS Decrypt: the bridge's credentials port did not answer after ${attempts} attempts: ${reasonOf(err)}`);
            }
            if (!retryable(err)) {
              throw new KmsKeyringError('KMS_REQUEST_FAILED', `KMS Decrypt failed: ${reasonOf(err)} for key ${sealed.kms.keyId}`);
            }
            if (attempt >= attempts) {
              throw new KmsKeyringError('KMS_UNREACHABLE', `KMS in ${o.region}${o.endpoint ? ` (${o.endpoint})` : ''} did not answer Decrypt after ${attempts} attempts: ${reasonOf(err)}`);
            }
            o.onRetry?.(attempt, reasonOf(err));
            await new Promise((r) => setTimeout(r, delay));
            delay = Math.min(delay * 2, 30_000);
            continue;
          }
          const dataKey = openRecipientEnvelope(envelope, privateKey);
          try {
            return openSealedKeyring(sealed, dataKey);
          } finally {
            dataKey.fill(0);
          }
        }
      } finally {
        kms.close();
      }
    },
  };
}
