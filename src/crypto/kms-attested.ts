// KMS Decrypt with an attested Recipient: the one path by which the enclave obtains plaintext from KMS (the
// keyring's data keys, KMS-sealed [secrets]).
//   1. an RSA-2048 key pair made here; the private half never leaves this module, is kept as PKCS#8 bytes
//      (never a KeyObject, which no API can wipe) and is wiped by close()
//   2. per call, a fresh NSM attestation document whose public_key is its SPKI (our own NSM call: no API lets
//      a caller choose public_key — KMS would release the key to whoever holds that key)
//   3. KMS Decrypt(CiphertextBlob, Recipient{RSAES_OAEP_SHA_256, document}) → CiphertextForRecipient
//   4. the CMS envelope opened with the RSA key → the plaintext (the caller wipes it)
// The plaintext is NOT authenticated: KMS's envelope is AES-256-CBC, so a host that alters the envelope can make
// it open to other bytes. Every caller must authenticate what it gets (the sealed keyring and kms: secrets open
// AES-GCM with it, which fails on any other key); a new caller must do the same.
// KMS evaluates the key policy's kms:RecipientAttestation:PCR<n> conditions against the document.
import { generateKeyPair } from 'node:crypto';
import type { Nsm } from '../attestation/nsm.ts';
import { parseAttestationDocument, pcrHex } from '../attestation/document.ts';
import { openRecipientEnvelope } from './cms-envelope.ts';
import type { KmsClientOptions } from './kms-client.ts';
import { withinDeadline } from './kms-deadline.ts';
import { KmsKeyringError } from './kms-errors.ts';

export interface AttestedKmsOptions {
  region: string;
  endpoint?: string | null;
  nsm: Nsm;
  proxy?: KmsClientOptions['proxy'];
  extraCa?: string[];
  credentials?: KmsClientOptions['credentials'];
  /** Attempts when KMS is unreachable, throttles or fails internally (default 6), backoff doubling from `backoffMs` (500). */
  attempts?: number;
  /**
   * One Decrypt attempt, whole (signing, the CONNECT tunnel, TLS, the answer), within this (default
   * DEFAULT_KMS_REQUEST_TIMEOUT_MS); past it the attempt counts as unanswered and is retried like one.
   */
  requestTimeoutMs?: number;
  backoffMs?: number;
  /** Called before each retry (logging; tests). */
  onRetry?: (attempt: number, reason: string) => void;
}

export interface AttestedKmsDecryptor {
  /**
   * The plaintext of `blob`, released to this enclave only. `what` names the blob in errors ("key <ARN>",
   * "secrets.NAME"); `keyId`, when known, is sent as Decrypt's KeyId (KMS then refuses a blob of another key).
   */
  decrypt(blob: Uint8Array, what: string, keyId?: string): Promise<Uint8Array>;
  /** Wipes the RSA private key (decrypt refuses from now on) and closes the KMS client. */
  close(): void;
}

/** [keyring] source = "kms": how long one Decrypt attempt may take, all of it. */
export const DEFAULT_KMS_REQUEST_TIMEOUT_MS = 10_000;

/** KMS errors worth another attempt: no answer, 5xx, throttling. Everything else is final. */
function retryable(err: unknown): boolean {
  const e = err as { name?: string; $metadata?: { httpStatusCode?: number }; $fault?: string };
  if (e.name === 'ThrottlingException' || e.name === 'KMSInternalException' || e.name === 'DependencyTimeoutException') return true;
  const status = e.$metadata?.httpStatusCode;
  return status === undefined || status >= 500;
}

/**
 * A TLS handshake that failed verification (OpenSSL's X509_V_ERR_* names, Node's altname check): whoever answered
 * was not KMS by its certificate. Retried like no answer (a DNS answer may be wrong for a moment), but named.
 */
function untrustedCertificate(err: unknown): string | null {
  const code = (err as { code?: unknown }).code;
  return typeof code === 'string' && /CERT|SELF_SIGNED|UNABLE_TO_(GET_ISSUER|VERIFY)/.test(code) ? code : null;
}

function reasonOf(err: unknown): string {
  const e = err as { name?: string; code?: string; message?: string; $metadata?: { httpStatusCode?: number } };
  if (e.$metadata?.httpStatusCode !== undefined) return `${e.name ?? 'error'} (HTTP ${e.$metadata.httpStatusCode})`;
  const cert = untrustedCertificate(err);
  if (cert !== null) return `a TLS certificate this enclave does not trust (${cert})`;
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

function closedError(what: string): KmsKeyringError {
  return new KmsKeyringError('KMS_CLOSED', `the attested KMS decryptor is closed (its RSA key is wiped): ${what} was not decrypted`);
}

export async function createAttestedKmsDecryptor(o: AttestedKmsOptions): Promise<AttestedKmsDecryptor> {
  // Off the event loop (libuv's pool): ~100–500 ms of CPU here, while the egress proxy already serves.
  const { spki, pkcs8Der } = await new Promise<{ spki: Uint8Array; pkcs8Der: Buffer }>((resolve, reject) => {
    generateKeyPair('rsa', { modulusLength: 2048, publicKeyEncoding: { type: 'spki', format: 'der' }, privateKeyEncoding: { type: 'pkcs8', format: 'der' } }, (err, publicKey, privateKey) => {
      if (err) reject(err);
      else resolve({ spki: new Uint8Array(publicKey), pkcs8Der: privateKey });
    });
  });
  let closed = false;
  // The AWS SDK is loaded here, when KMS is configured, not at boot: an agent without KMS never pays for it.
  const [{ createKmsClient }, { DecryptCommand }] = await Promise.all([import('./kms-client.ts'), import('@aws-sdk/client-kms')]);
  const requestTimeoutMs = o.requestTimeoutMs ?? DEFAULT_KMS_REQUEST_TIMEOUT_MS;
  const kms = createKmsClient({
    region: o.region,
    ...(o.endpoint ? { endpoint: o.endpoint } : {}),
    ...(o.proxy ? { proxy: o.proxy } : {}),
    ...(o.extraCa ? { extraCa: o.extraCa } : {}),
    ...(o.credentials === undefined ? {} : { credentials: o.credentials }),
    requestTimeoutMs,
  });
  const attempts = o.attempts ?? 6;

  async function decrypt(blob: Uint8Array, what: string, keyId?: string): Promise<Uint8Array> {
    let delay = o.backoffMs ?? 500;
    for (let attempt = 1; ; attempt++) {
      if (closed) throw closedError(what);
      // A fresh document per attempt: KMS refuses stale ones.
      const doc = await o.nsm.attest({ publicKey: spki });
      if (closed) throw closedError(what); // no Decrypt for a key that can no longer open its answer
      let envelope: Uint8Array;
      try {
        const command = new DecryptCommand({
          CiphertextBlob: blob,
          ...(keyId === undefined ? {} : { KeyId: keyId }),
          Recipient: { KeyEncryptionAlgorithm: 'RSAES_OAEP_SHA_256', AttestationDocument: doc },
        });
        const out = await withinDeadline(requestTimeoutMs, (abortSignal) => kms.client.send(command, { abortSignal }));
        if (!out.CiphertextForRecipient) throw new KmsKeyringError('KMS_BAD_ENVELOPE', `KMS Decrypt answered without CiphertextForRecipient for ${what}`);
        envelope = out.CiphertextForRecipient;
      } catch (err) {
        if (err instanceof KmsKeyringError) throw err;
        if (closed) throw closedError(what); // its client was closed under it: nothing to retry
        const name = (err as { name?: string }).name ?? 'error';
        if (name === 'AccessDeniedException') {
          throw new KmsKeyringError('KMS_ACCESS_DENIED', `KMS Decrypt refused: AccessDeniedException for ${what}; compare the key policy's kms:RecipientAttestation conditions with this enclave's ${pcrLine(doc)}`);
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
          throw new KmsKeyringError('KMS_REQUEST_FAILED', `KMS Decrypt failed: ${reasonOf(err)} for ${what}`);
        }
        if (attempt >= attempts) {
          const where = `KMS in ${o.region}${o.endpoint ? ` (${o.endpoint})` : ''}`;
          const cert = untrustedCertificate(err);
          if (cert !== null) {
            // Under the enclave's threat model this is the host (its relay, its DNS) or its network posing as KMS.
            const clock = /EXPIRED|NOT_YET_VALID/.test(cert) ? "this enclave's clock is off, or " : '';
            throw new KmsKeyringError('KMS_UNREACHABLE', `${where} was not reached for Decrypt after ${attempts} attempts: the last was answered with ${reasonOf(err)}; ${clock}something between the enclave and KMS answered in its place (the host's relay or DNS, a TLS-intercepting proxy), or the endpoint's CA is not among Node's roots`);
          }
          throw new KmsKeyringError('KMS_UNREACHABLE', `${where} did not answer Decrypt after ${attempts} attempts: ${reasonOf(err)}`);
        }
        o.onRetry?.(attempt, reasonOf(err));
        await new Promise((r) => setTimeout(r, delay));
        delay = Math.min(delay * 2, 30_000);
        continue;
      }
      if (closed) throw closedError(what);
      return openRecipientEnvelope(envelope, { pkcs8Der });
    }
  }

  return {
    decrypt,
    close() {
      closed = true;
      pkcs8Der.fill(0);
      kms.close();
    },
  };
}
