// The sealed-keyring file `keys seal` writes and `[keyring] source = "kms"` opens. It holds nothing usable
// without KMS: the keyring is AES-256-GCM under a KMS data key, and only the data key's CiphertextBlob is
// stored (KMS releases its plaintext to an attested enclave the key policy names).
//
//   {"format":"enclave-agent/sealed-keyring","version":1,"kms":{"keyId":ARN,"region":R},
//    "ciphertextBlob":b64,"publicKeys":{"p256":b64,"secp256k1":b64},"iv":b64,"keyring":b64}
//
// keyring = AES-256-GCM(dataKey, iv, AAD) of (p256 scalar 32 ‖ secp256k1 scalar 32) ‖ tag 16, where AAD is
// the canonical JSON of every other field: editing the key id, region, blob or the printed public keys makes
// the file refuse to open (KMS_BAD_SEALED_FILE) instead of loading something else.
import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto';
import { concatBytes, equalBytes, fromBase64, toBase64, utf8 } from '../util/bytes.ts';
import { Keyring, KeyMaterial } from './keyring.ts';
import { KmsKeyringError } from './kms-errors.ts';

export const SEALED_KEYRING_FORMAT = 'enclave-agent/sealed-keyring';
export const SEALED_KEYRING_VERSION = 1;
const MAX_FILE_BYTES = 64 * 1024;

export interface SealedKeyring {
  kms: { keyId: string; region: string };
  ciphertextBlob: Uint8Array;
  publicKeys: { p256: Uint8Array; secp256k1: Uint8Array };
  iv: Uint8Array;
  /** The encrypted scalars and the GCM tag (80 bytes). */
  keyring: Uint8Array;
}

function bad(what: string): KmsKeyringError {
  return new KmsKeyringError('KMS_BAD_SEALED_FILE', `sealed keyring: ${what}`);
}

function aad(s: Omit<SealedKeyring, 'iv' | 'keyring'>): Uint8Array {
  return utf8.encode(
    JSON.stringify([SEALED_KEYRING_FORMAT, SEALED_KEYRING_VERSION, s.kms.keyId, s.kms.region, toBase64(s.ciphertextBlob), toBase64(s.publicKeys.p256), toBase64(s.publicKeys.secp256k1)]),
  );
}

/** Encrypts `material` under the 32-byte data key (the caller wipes it) and returns the file's text. */
export function sealKeyring(material: KeyMaterial, dataKey: Uint8Array, kms: { keyId: string; region: string; ciphertextBlob: Uint8Array }): string {
  if (dataKey.length !== 32) throw bad(`data key: expected 32 bytes, found ${dataKey.length}`);
  const publicKeys = Keyring.fromMaterial(material).publicKeys();
  const head = { kms: { keyId: kms.keyId, region: kms.region }, ciphertextBlob: kms.ciphertextBlob, publicKeys };
  const iv = randomBytes(12);
  const c = createCipheriv('aes-256-gcm', dataKey, iv, { authTagLength: 16 });
  c.setAAD(aad(head));
  const pt = concatBytes(material.privateKey('p256'), material.privateKey('secp256k1'));
  const ct = concatBytes(c.update(pt), c.final(), c.getAuthTag());
  pt.fill(0);
  return (
    JSON.stringify(
      {
        format: SEALED_KEYRING_FORMAT,
        version: SEALED_KEYRING_VERSION,
        kms: head.kms,
        ciphertextBlob: toBase64(kms.ciphertextBlob),
        publicKeys: { p256: toBase64(publicKeys.p256), secp256k1: toBase64(publicKeys.secp256k1) },
        iv: toBase64(iv),
        keyring: toBase64(ct),
      },
      null,
      2,
    ) + '\n'
  );
}

function b64(v: unknown, field: string, len?: number): Uint8Array {
  if (typeof v !== 'string') throw bad(`${field}: expected base64 text`);
  let out: Uint8Array;
  try {
    out = fromBase64(v);
  } catch {
    throw bad(`${field}: expected base64 text`);
  }
  if (len !== undefined && out.length !== len) throw bad(`${field}: expected ${len} bytes, found ${out.length}`);
  return out;
}

/** Parses the file's text; checks the shape, not the seal (see openSealedKeyring). */
export function parseSealedKeyring(text: string | Uint8Array): SealedKeyring {
  if (text.length > MAX_FILE_BYTES) throw bad(`expected at most ${MAX_FILE_BYTES} bytes, found ${text.length}`);
  let j: Record<string, unknown>;
  try {
    j = JSON.parse(typeof text === 'string' ? text : utf8.decode(text)) as Record<string, unknown>;
  } catch {
    throw bad('expected JSON');
  }
  if (j === null || typeof j !== 'object' || j.format !== SEALED_KEYRING_FORMAT) throw bad(`expected "format": "${SEALED_KEYRING_FORMAT}"`);
  if (j.version !== SEALED_KEYRING_VERSION) throw bad(`expected "version": ${SEALED_KEYRING_VERSION}, found ${JSON.stringify(j.version)}`);
  const kms = j.kms as Record<string, unknown> | undefined;
  if (!kms || typeof kms.keyId !== 'string' || kms.keyId === '' || typeof kms.region !== 'string' || !/^[a-z0-9-]{1,32}$/.test(kms.region)) {
    throw bad('"kms" must be {"keyId": <key ARN>, "region": <AWS region>}');
  }
  const pk = (j.publicKeys ?? {}) as Record<string, unknown>;
  return {
    kms: { keyId: kms.keyId, region: kms.region },
    ciphertextBlob: b64(j.ciphertextBlob, 'ciphertextBlob'),
    publicKeys: { p256: b64(pk.p256, 'publicKeys.p256', 33), secp256k1: b64(pk.secp256k1, 'publicKeys.secp256k1', 33) },
    iv: b64(j.iv, 'iv', 12),
    keyring: b64(j.keyring, 'keyring', 80),
  };
}

/** Opens the keyring with the data key KMS released (the caller wipes it). */
export function openSealedKeyring(s: SealedKeyring, dataKey: Uint8Array): KeyMaterial {
  if (dataKey.length !== 32) throw bad(`data key: expected 32 bytes, found ${dataKey.length}`);
  let pt: Buffer;
  try {
    const d = createDecipheriv('aes-256-gcm', dataKey, s.iv, { authTagLength: 16 });
    d.setAAD(aad(s));
    d.setAuthTag(s.keyring.subarray(64));
    pt = Buffer.concat([d.update(s.keyring.subarray(0, 64)), d.final()]);
  } catch {
    throw bad('does not open with the data key KMS released (the file was altered, or sealed under another data key)');
  }
  try {
    const material = new KeyMaterial({ p256: pt.subarray(0, 32), secp256k1: pt.subarray(32, 64) });
    const pub = Keyring.fromMaterial(material).publicKeys();
    if (!equalBytes(pub.p256, s.publicKeys.p256) || !equalBytes(pub.secp256k1, s.publicKeys.secp256k1)) throw bad('the keys inside do not match its publicKeys');
    return material;
  } finally {
    pt.fill(0);
  }
}
