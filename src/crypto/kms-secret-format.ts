// The `kms:` value of a KMS-sealed secret ([secrets] NAME = "kms:…"), made by `secrets seal NAME --kms-key-id`:
//
//   "kms:" + standard base64 of
//     0      1  format version 0x01
//     1      2  k = length of the KMS key ARN (u16 big-endian), then k bytes: the ARN (UTF-8)
//     .      2  n = length of the CiphertextBlob (u16 big-endian), then n bytes: KMS's CiphertextBlob of a
//               256-bit data key (GenerateDataKey: the operator needs no kms:Encrypt or kms:Decrypt)
//     .     12  IV
//     .      …  AES-256-GCM(dataKey, IV, AAD) of the value's UTF-8 text ‖ 16-byte tag
//   AAD = "enclave-agent/kms-secret/v1\n" ‖ NAME ‖ "\n" ‖ every byte before the ciphertext
//
// An envelope rather than KMS Encrypt: values up to 64 KiB (Encrypt stops at 4 KiB) and the same operator
// permission as `keys seal`. The AAD binds the variable's name: a value moved to another variable (one the
// app might log) does not open. The enclave opens it with KMS Decrypt + Recipient (kms-attested.ts), exactly as
// the keyring's data keys. This module has no AWS SDK in it: config loading checks the shape with it.
import { randomBytes } from 'node:crypto';
import { gcmOpen, gcmSeal } from './aes-gcm.ts';
import { concatBytes, fromBase64, toBase64, utf8 } from '../util/bytes.ts';

export const KMS_SECRET_PREFIX = 'kms:';
const VERSION = 1;
const LABEL = 'enclave-agent/kms-secret/v1\n';
const MAX_ARN = 2048;
const MAX_BLOB = 6144;

export interface KmsSecretValue {
  keyId: string;
  ciphertextBlob: Uint8Array;
  iv: Uint8Array;
  /** Ciphertext ‖ tag. */
  ciphertext: Uint8Array;
  /** Bytes 0 up to the ciphertext (authenticated). */
  header: Uint8Array;
}

export function isKmsSecret(value: string): boolean {
  return value.startsWith(KMS_SECRET_PREFIX);
}

function aad(name: string, header: Uint8Array): Uint8Array {
  return concatBytes(utf8.encode(`${LABEL}${name}\n`), header);
}

function u16(n: number): Uint8Array {
  return Uint8Array.of(n >> 8, n & 0xff);
}

/** The `kms:` value of `text` for variable `name`, under `dataKey` (32 bytes; the caller wipes it). */
export function sealKmsSecretValue(name: string, text: string, dataKey: Uint8Array, kms: { keyId: string; ciphertextBlob: Uint8Array }): string {
  const arn = utf8.encode(kms.keyId);
  if (dataKey.length !== 32) throw new RangeError('data key: expected 32 bytes');
  if (arn.length === 0 || arn.length > MAX_ARN || kms.ciphertextBlob.length === 0 || kms.ciphertextBlob.length > MAX_BLOB) throw new RangeError('KMS key id or CiphertextBlob out of range');
  const iv = randomBytes(12);
  const header = concatBytes(Uint8Array.of(VERSION), u16(arn.length), arn, u16(kms.ciphertextBlob.length), kms.ciphertextBlob, iv);
  const pt = Buffer.from(text, 'utf8');
  const ct = gcmSeal(dataKey, iv, aad(name, header), pt);
  pt.fill(0);
  return KMS_SECRET_PREFIX + toBase64(concatBytes(header, ct));
}

/** Parses a `kms:` value; null when it is not one (the caller's error names the variable, never the value). */
export function parseKmsSecretValue(value: string): KmsSecretValue | null {
  if (!isKmsSecret(value)) return null;
  let b: Uint8Array;
  try {
    b = fromBase64(value.slice(KMS_SECRET_PREFIX.length));
  } catch {
    return null;
  }
  if (b.length < 1 + 2 || b[0] !== VERSION) return null;
  const k = (b[1]! << 8) | b[2]!;
  let at = 3 + k;
  if (k === 0 || k > MAX_ARN || b.length < at + 2) return null;
  let keyId: string;
  try {
    keyId = new TextDecoder('utf-8', { fatal: true }).decode(b.subarray(3, at));
  } catch {
    return null;
  }
  const n = (b[at]! << 8) | b[at + 1]!;
  at += 2;
  if (n === 0 || n > MAX_BLOB || b.length < at + n + 12 + 16) return null;
  const ciphertextBlob = b.subarray(at, at + n);
  at += n;
  const iv = b.subarray(at, at + 12);
  at += 12;
  return { keyId, ciphertextBlob, iv, ciphertext: b.subarray(at), header: b.subarray(0, at) };
}

/** The value's text, or null when AES-GCM does not open it with `dataKey` for variable `name`. */
export function openKmsSecretValue(name: string, v: KmsSecretValue, dataKey: Uint8Array): string | null {
  const pt = gcmOpen(dataKey, v.iv, aad(name, v.header), v.ciphertext);
  if (pt === null) return null;
  try {
    return new TextDecoder('utf-8', { fatal: true }).decode(pt);
  } catch {
    return null;
  } finally {
    pt.fill(0);
  }
}

/** The region in a KMS key ARN (arn:aws:kms:REGION:ACCOUNT:key/…), or null for a bare key id or alias. */
export function arnRegion(keyId: string): string | null {
  return /^arn:aws[a-z-]*:kms:([a-z0-9-]+):/.exec(keyId)?.[1] ?? null;
}
