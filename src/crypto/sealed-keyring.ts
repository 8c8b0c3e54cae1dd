// The sealed-keyring file `keys seal` writes, `keys rotate` extends and `[keyring] source = "kms"` opens. It
// holds nothing usable without KMS: each key generation is AES-256-GCM under its own KMS data key, and only
// the data key's CiphertextBlob is stored (KMS releases its plaintext to an attested enclave the key policy
// names). Version 2 (written now):
//
//   {"format":"enclave-agent/sealed-keyring","version":2,"kms":{"keyId":ARN,"region":R},"createdAt":ISO,
//    "ciphertextBlob":b64,"publicKeys":{"p256":b64,"secp256k1":b64},"chain":hex,"iv":b64,"keyring":b64,
//    "retired":[{"version":1|2,"keyId","createdAt","ciphertextBlob","publicKeys","chain","iv","keyring"},…]}
//
// The top level is the current generation (it encrypts; its public keys are the ones clients get); `retired`
// holds the older generations, newest first, for decryption only (at most MAX_KEY_GENERATIONS in all).
// keyring = AES-256-GCM(dataKey, iv, AAD) of (p256 scalar 32 ‖ secp256k1 scalar 32) ‖ tag 16, where AAD is
//   v2: JSON [format, 2, keyId, region, ciphertextBlob, p256, secp256k1, createdAt, chain]
//   v1: JSON [format, 1, keyId, region, ciphertextBlob, p256, secp256k1]  (a generation first sealed in a v1 file)
// and `chain` is SHA-256 over every field of the retired generations below it, so the current generation
// authenticates the whole file: editing, dropping or reordering any generation, the key id, region or a
// printed public key makes the file refuse to open (KMS_BAD_SEALED_FILE). `keys rotate` needs no kms:Decrypt:
// it seals only the new generation (GenerateDataKey) and carries the older ones over byte for byte; the
// enclave Decrypts one CiphertextBlob per generation at boot. What a chain cannot stop: replacing the whole
// file by an earlier, complete version of it (that is a rollback to keys the policy still releases).
//
// Version 1 (one generation, no chain, no retired) is still read.
import { createHash, randomBytes } from 'node:crypto';
import { gcmOpen, gcmSeal } from './aes-gcm.ts';
import { concatBytes, equalBytes, fromBase64, toBase64, utf8 } from '../util/bytes.ts';
import { Keyring, KeyMaterial, MAX_KEY_GENERATIONS, type KeyScalars, type PublicKeys } from './keyring.ts';
import { KmsKeyringError } from './kms-errors.ts';

export const SEALED_KEYRING_FORMAT = 'enclave-agent/sealed-keyring';
export const SEALED_KEYRING_VERSION = 2;
const MAX_FILE_BYTES = 64 * 1024;

/** One key generation as stored: its KMS-wrapped data key and its scalars encrypted under that data key. */
export interface SealedGeneration {
  /** The file version that sealed it: 1 (AAD without createdAt and chain) or 2. */
  version: 1 | 2;
  keyId: string;
  ciphertextBlob: Uint8Array;
  publicKeys: PublicKeys;
  /** ISO time of sealing (null for a generation sealed by a version-1 file). */
  createdAt: string | null;
  /** SHA-256 hex of the generations older than this one when it was sealed ('' for version 1). */
  chain: string;
  iv: Uint8Array;
  /** The encrypted scalars and the GCM tag (80 bytes). */
  keyring: Uint8Array;
}

export interface SealedKeyring {
  /** The version the file was read as. */
  version: 1 | 2;
  /** keyId: the current generation's KMS key. */
  kms: { keyId: string; region: string };
  /** The current generation's public keys. */
  publicKeys: PublicKeys;
  /** Every generation, newest (current) first. */
  generations: SealedGeneration[];
}

function bad(what: string): KmsKeyringError {
  return new KmsKeyringError('KMS_BAD_SEALED_FILE', `sealed keyring: ${what}`);
}

function aad(g: SealedGeneration, region: string): Uint8Array {
  const common = [SEALED_KEYRING_FORMAT, g.version, g.keyId, region, toBase64(g.ciphertextBlob), toBase64(g.publicKeys.p256), toBase64(g.publicKeys.secp256k1)];
  return utf8.encode(JSON.stringify(g.version === 1 ? common : [...common, g.createdAt, g.chain]));
}

/** SHA-256 hex over every field of `gens` (in order): what a newer generation's AAD binds. */
export function chainOf(gens: readonly SealedGeneration[]): string {
  const rows = gens.map((g) => [g.version, g.keyId, g.createdAt, toBase64(g.ciphertextBlob), toBase64(g.publicKeys.p256), toBase64(g.publicKeys.secp256k1), g.chain, toBase64(g.iv), toBase64(g.keyring)]);
  return createHash('sha256').update(JSON.stringify(rows)).digest('hex');
}

function seal(material: KeyMaterial, dataKey: Uint8Array, region: string, head: Omit<SealedGeneration, 'iv' | 'keyring' | 'publicKeys'>): SealedGeneration {
  if (dataKey.length !== 32) throw bad(`data key: expected 32 bytes, found ${dataKey.length}`);
  if (material.generations !== 1) throw bad('a new generation is one key pair');
  const g: SealedGeneration = { ...head, publicKeys: Keyring.fromMaterial(material).publicKeys(), iv: randomBytes(12), keyring: new Uint8Array(0) };
  const pt = concatBytes(material.privateKey('p256'), material.privateKey('secp256k1'));
  g.keyring = gcmSeal(dataKey, g.iv, aad(g, region), pt);
  pt.fill(0);
  return g;
}

const pk = (k: PublicKeys) => ({ p256: toBase64(k.p256), secp256k1: toBase64(k.secp256k1) });

function serialize(region: string, gens: readonly SealedGeneration[]): string {
  const [top, ...retired] = gens as [SealedGeneration, ...SealedGeneration[]];
  return (
    JSON.stringify(
      {
        format: SEALED_KEYRING_FORMAT,
        version: SEALED_KEYRING_VERSION,
        kms: { keyId: top.keyId, region },
        createdAt: top.createdAt,
        ciphertextBlob: toBase64(top.ciphertextBlob),
        publicKeys: pk(top.publicKeys),
        chain: top.chain,
        iv: toBase64(top.iv),
        keyring: toBase64(top.keyring),
        retired: retired.map((g) => ({ version: g.version, keyId: g.keyId, createdAt: g.createdAt, ciphertextBlob: toBase64(g.ciphertextBlob), publicKeys: pk(g.publicKeys), chain: g.chain, iv: toBase64(g.iv), keyring: toBase64(g.keyring) })),
      },
      null,
      2,
    ) + '\n'
  );
}

/** A new file holding `material` (one generation) under the 32-byte data key (the caller wipes it). */
export function sealKeyring(material: KeyMaterial, dataKey: Uint8Array, kms: { keyId: string; region: string; ciphertextBlob: Uint8Array }): string {
  const top = seal(material, dataKey, kms.region, { version: 2, keyId: kms.keyId, ciphertextBlob: kms.ciphertextBlob, createdAt: new Date().toISOString(), chain: chainOf([]) });
  return serialize(kms.region, [top]);
}

/**
 * `keys rotate`: `material` (one fresh pair) becomes the current generation of a new file, sealed under a new
 * data key; the previous file's generations follow as retired, unchanged (nothing of theirs is decrypted here).
 * With `dropOldest`, the oldest is left out first. Throws KMS_BAD_SEALED_FILE when the result would hold more
 * than MAX_KEY_GENERATIONS.
 */
export function sealRotated(previous: SealedKeyring, material: KeyMaterial, dataKey: Uint8Array, kms: { keyId: string; ciphertextBlob: Uint8Array }, dropOldest = false): { text: string; dropped: SealedGeneration | null } {
  const kept = dropOldest ? previous.generations.slice(0, -1) : previous.generations.slice();
  const dropped = dropOldest ? previous.generations.at(-1)! : null;
  if (kept.length + 1 > MAX_KEY_GENERATIONS) {
    throw bad(`holds ${previous.generations.length} key generations, the most a keyring keeps is ${MAX_KEY_GENERATIONS}: retire the oldest (--drop-oldest; values encrypted to it stop decrypting)`);
  }
  const top = seal(material, dataKey, previous.kms.region, { version: 2, keyId: kms.keyId, ciphertextBlob: kms.ciphertextBlob, createdAt: new Date().toISOString(), chain: chainOf(kept) });
  return { text: serialize(previous.kms.region, [top, ...kept]), dropped };
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

function parseGeneration(j: Record<string, unknown>, field: string, version: 1 | 2, keyId: unknown): SealedGeneration {
  if (typeof keyId !== 'string' || keyId === '') throw bad(`${field}keyId: expected a KMS key ARN`);
  const pkj = (j.publicKeys ?? {}) as Record<string, unknown>;
  const createdAt = version === 1 ? null : j.createdAt;
  if (version === 2 && (typeof createdAt !== 'string' || createdAt.length > 64)) throw bad(`${field}createdAt: expected an ISO time`);
  const chain = version === 1 ? '' : j.chain;
  if (typeof chain !== 'string' || (version === 2 && !/^[0-9a-f]{64}$/.test(chain))) throw bad(`${field}chain: expected 64 hex digits`);
  return {
    version,
    keyId,
    ciphertextBlob: b64(j.ciphertextBlob, `${field}ciphertextBlob`),
    publicKeys: { p256: b64(pkj.p256, `${field}publicKeys.p256`, 33), secp256k1: b64(pkj.secp256k1, `${field}publicKeys.secp256k1`, 33) },
    createdAt: createdAt as string | null,
    chain,
    iv: b64(j.iv, `${field}iv`, 12),
    keyring: b64(j.keyring, `${field}keyring`, 80),
  };
}

/** Parses the file's text (version 1 or 2); checks the shape and the chain, not the seals (see openSealedGeneration). */
export function parseSealedKeyring(text: string | Uint8Array): SealedKeyring {
  if (text.length > MAX_FILE_BYTES) throw bad(`expected at most ${MAX_FILE_BYTES} bytes, found ${text.length}`);
  let j: Record<string, unknown>;
  try {
    j = JSON.parse(typeof text === 'string' ? text : utf8.decode(text)) as Record<string, unknown>;
  } catch {
    throw bad('expected JSON');
  }
  if (j === null || typeof j !== 'object' || j.format !== SEALED_KEYRING_FORMAT) throw bad(`expected "format": "${SEALED_KEYRING_FORMAT}"`);
  if (j.version !== 1 && j.version !== 2) throw bad(`expected "version": 1 or 2, found ${JSON.stringify(j.version)}`);
  const version = j.version;
  const kms = j.kms as Record<string, unknown> | undefined;
  if (!kms || typeof kms.keyId !== 'string' || kms.keyId === '' || typeof kms.region !== 'string' || !/^[a-z0-9-]{1,32}$/.test(kms.region)) {
    throw bad('"kms" must be {"keyId": <key ARN>, "region": <AWS region>}');
  }
  const top = parseGeneration(j, '', version, kms.keyId);
  const generations = [top];
  if (version === 2) {
    if (!Array.isArray(j.retired)) throw bad('retired: expected an array (the older key generations, newest first)');
    if (j.retired.length + 1 > MAX_KEY_GENERATIONS) throw bad(`holds ${j.retired.length + 1} key generations, at most ${MAX_KEY_GENERATIONS} allowed`);
    j.retired.forEach((r: unknown, i) => {
      const rj = (r ?? {}) as Record<string, unknown>;
      if (rj.version !== 1 && rj.version !== 2) throw bad(`retired[${i}].version: expected 1 or 2`);
      generations.push(parseGeneration(rj, `retired[${i}].`, rj.version, rj.keyId));
    });
    // Checked again by AES-GCM when the current generation opens (chain is in its AAD); here it fails early.
    if (top.chain !== chainOf(generations.slice(1))) throw bad('its retired key generations are not the ones it was sealed with (edited, dropped or reordered)');
  }
  return { version, kms: { keyId: kms.keyId, region: kms.region }, publicKeys: top.publicKeys, generations };
}

/** Opens generation `g` (0 = current) with the data key KMS released for it (the caller wipes both). */
export function openSealedGeneration(s: SealedKeyring, g: number, dataKey: Uint8Array): KeyScalars {
  const gen = s.generations[g];
  if (gen === undefined) throw bad(`no key generation ${g}`);
  const where = g === 0 ? '' : `retired key generation ${g}: `;
  if (dataKey.length !== 32) throw bad(`data key: expected 32 bytes, found ${dataKey.length}`);
  const pt = gcmOpen(dataKey, gen.iv, aad(gen, s.kms.region), gen.keyring);
  if (pt === null || pt.length !== 64) {
    pt?.fill(0);
    throw bad(`${where}does not open with the data key KMS released (the file was altered, or sealed under another data key)`);
  }
  try {
    const scalars = { p256: Uint8Array.from(pt.subarray(0, 32)), secp256k1: Uint8Array.from(pt.subarray(32, 64)) };
    // A temporary copy of the scalars, only to derive the public points: wiped at once.
    const material = new KeyMaterial(scalars);
    let pub: ReturnType<Keyring['publicKeys']>;
    try {
      pub = Keyring.fromMaterial(material).publicKeys();
    } finally {
      material.wipe();
    }
    if (!equalBytes(pub.p256, gen.publicKeys.p256) || !equalBytes(pub.secp256k1, gen.publicKeys.secp256k1)) {
      scalars.p256.fill(0);
      scalars.secp256k1.fill(0);
      throw bad(`${where}the keys inside do not match its publicKeys`);
    }
    return scalars;
  } finally {
    pt.fill(0);
  }
}
