// Producing and opening Evervault-compatible `ev:` values (ENCRYPTION.md §1), byte-compatible with
// @evervault/sdk 6.x. Hot path: node:crypto ECDH, SHA-256 and AES-256-GCM only.
//
// Cipher, per version (K = AES-256-GCM key, Z = ECDH shared x, KDF = ev-kdf.ts):
//   Tk9D  P-256      K = KDF(Z)  AAD = enclave public key (33-byte compressed, as published)
//   QkTC  P-256      K = KDF(Z)  AAD = cfg ‖ ephemeral key (33) ‖ enclave key (33); plaintext has metadata
//   RFVC  secp256k1  K = Z       no AAD
//   S0lS  secp256k1  K = KDF(Z)  AAD = cfg ‖ ephemeral key ‖ enclave key; plaintext has metadata
//   cfg = (datatype << 4) | v   datatype 0 string, 1 number, 2 boolean; v = 1 for QkTC, 0 for S0lS.
//
// Compatibility notes:
// - @evervault/sdk picks the secp256k1 AES key once per 15-second key cycle from the role of the FIRST
//   encrypt call of that cycle, so an SDK instance mixing calls with and without a role emits RFVC values
//   keyed with KDF(Z) and S0lS values keyed with Z. We try the canonical key first and the other one
//   second (secp256k1 only), so those values open too; the forgery bound stays 2^-127.
// - `debug:` values: the SDK never emits them. For metadata versions we set bit 7 of cfg when writing
//   (inferred from the SDK's "always start with 0x00" comment) and accept cfg with or without it when
//   reading. Non-metadata debug values use the same cipher as their version.
// - The SDK encrypts NaN/Infinity as a number value whose text is "null"; we refuse such numbers when
//   encrypting and treat them as undecryptable when reading (a number value must hold a JSON number).
import { createCipheriv, createECDH, randomBytes } from 'node:crypto';
import { gcmOpen } from './aes-gcm.ts';
import { EvDecryptError, EvFormatError } from './errors.ts';
import { NODE_CURVE, decompressPoint, deriveEvKey } from './ev-kdf.ts';
import type { EvCurve } from './ev-kdf.ts';
import { TAG_LENGTH, formatEv, parseEv, versionFor } from './ev-parse.ts';
import type { EvToken, EvType } from './ev-parse.ts';
import type { EcdhBudget } from './ecdh-budget.ts';
import { ecdhCacheFor, type EcdhCache, type EcdhCacheEntry } from './ecdh-cache.ts';
import type { Keyring } from './keyring.ts';
import { encodeMetadata, unwrapMetadata, wrapWithMetadata } from './msgpack-meta.ts';
import { isSecretOnly } from './secret-ciphertexts.ts';
import type { EvMetadata } from './msgpack-meta.ts';

export { parseEv, formatEv, isEvToken, looksLikeEv } from './ev-parse.ts';
export type { EvToken, EvType, EvVersion } from './ev-parse.ts';
export type { EvCurve } from './ev-kdf.ts';
export type { EvMetadata } from './msgpack-meta.ts';

export type EvValue = string | number | boolean;

/** A recipient key: one compressed (33-byte) or uncompressed (65-byte) point, or one per curve (as `Keyring.publicKeys()`). */
export type EncryptionPublicKey = Uint8Array | { p256?: Uint8Array; secp256k1?: Uint8Array };

export interface EncryptOptions {
  /** Data role (`^[a-z0-9-]{1,20}$`): produces QkTC / S0lS with the metadata block. */
  role?: string;
  /** Default 'p256'. */
  curve?: EvCurve;
  debug?: boolean;
}

export const ROLE_PATTERN = /^[a-z0-9-]{1,20}$/;

function validateRole(role: string | undefined | null): string | undefined {
  if (role === undefined || role === null) return undefined;
  if (typeof role !== 'string' || !ROLE_PATTERN.test(role)) {
    throw new EvFormatError('EV_BAD_ROLE', `data role must match ^[a-z0-9-]{1,20}$, found ${typeof role === 'string' ? `${role.length} chars` : typeof role}`);
  }
  return role;
}

const UTF8 = new TextDecoder('utf-8', { fatal: true });
const DATATYPE: Record<EvType, number> = { string: 0, number: 1, boolean: 2 };
const JSON_NUMBER = /^-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?$/;

function configByte(type: EvType, curve: EvCurve, debug: boolean): number {
  return (debug ? 0x80 : 0) | (DATATYPE[type] << 4) | (curve === 'p256' ? 1 : 0);
}

function metadataAad(cfg: number, ephemeral: Uint8Array, recipient: Uint8Array): Buffer {
  const aad = Buffer.allocUnsafe(1 + ephemeral.length + recipient.length);
  aad[0] = cfg;
  aad.set(ephemeral, 1);
  aad.set(recipient, 1 + ephemeral.length);
  return aad;
}

/** The value's type segment and plaintext text, as the SDK writes them (strings trimmed). */
function toPlaintext(value: EvValue): { type: EvType; text: string } {
  switch (typeof value) {
    case 'string':
      return { type: 'string', text: value.trim() };
    case 'number':
      if (!Number.isFinite(value)) throw new EvFormatError('EV_BAD_VALUE', 'cannot encrypt a non-finite number (NaN/Infinity has no JSON form)');
      return { type: 'number', text: JSON.stringify(value) };
    case 'boolean':
      return { type: 'boolean', text: value ? 'true' : 'false' };
    default:
      throw new EvFormatError('EV_BAD_VALUE', `only strings, numbers and booleans are encrypted, found ${value === null ? 'null' : typeof value}`);
  }
}

function recipientKey(key: EncryptionPublicKey, curve: EvCurve): Uint8Array {
  const k = key instanceof Uint8Array ? key : key[curve];
  if (!(k instanceof Uint8Array) || (k.length !== 33 && k.length !== 65)) {
    throw new EvFormatError('EV_BAD_KEY', `recipient ${curve} public key: expected a 33- or 65-byte point, found ${k instanceof Uint8Array ? `${k.length} bytes` : 'none'}`);
  }
  return k;
}

/**
 * Encrypts many values for one recipient with one ephemeral key pair (as the SDK does within a key
 * cycle): one ECDH per encryptor, one AES-GCM per value, a fresh random IV each time.
 */
export class EvEncryptor {
  readonly curve: EvCurve;
  readonly #recipient: Uint8Array;
  readonly #ephemeral: Buffer;
  readonly #key: Buffer;
  readonly #role: string | undefined;
  readonly #debug: boolean;

  constructor(key: EncryptionPublicKey, opts: EncryptOptions = {}) {
    this.curve = opts.curve ?? 'p256';
    if (this.curve !== 'p256' && this.curve !== 'secp256k1') throw new EvFormatError('EV_BAD_KEY', `curve must be p256 or secp256k1, found ${String(this.curve)}`);
    this.#role = validateRole(opts.role);
    this.#debug = opts.debug === true;
    this.#recipient = recipientKey(key, this.curve);
    const eph = createECDH(NODE_CURVE[this.curve]);
    eph.generateKeys();
    this.#ephemeral = eph.getPublicKey(null, 'compressed');
    let z: Buffer;
    try {
      z = eph.computeSecret(this.#recipient);
    } catch {
      throw new EvFormatError('EV_BAD_KEY', `recipient ${this.curve} public key is not a point on the curve`);
    }
    this.#key = this.curve === 'secp256k1' && this.#role === undefined ? z : deriveEvKey(this.curve, z, eph.getPublicKey(null, 'uncompressed'));
  }

  encrypt(value: EvValue): string {
    const { type, text } = toPlaintext(value);
    return this.#seal(type, text);
  }

  /**
   * Encrypts a number given as its JSON text, keeping that exact text as the plaintext (no float
   * rounding: `12345678901234567890` stays those digits). Throws EV_BAD_VALUE if it is not a JSON number.
   */
  encryptJsonNumber(text: string): string {
    if (!JSON_NUMBER.test(text)) throw new EvFormatError('EV_BAD_VALUE', 'expected a JSON number text');
    return this.#seal('number', text);
  }

  /** Encrypts a string as given. encrypt() trims, as the SDK does; a [secret] must reach the app byte for byte. */
  encryptStringExact(text: string): string {
    return this.#seal('string', text);
  }

  #seal(type: EvType, text: string): string {
    const iv = randomBytes(12);
    const c = createCipheriv('aes-256-gcm', this.#key, iv, { authTagLength: TAG_LENGTH });
    let data: Uint8Array = Buffer.from(text, 'utf8');
    if (this.#role !== undefined) {
      c.setAAD(metadataAad(configByte(type, this.curve, this.#debug), this.#ephemeral, this.#recipient));
      data = wrapWithMetadata(encodeMetadata(this.#role, Math.floor(Date.now() / 1000)), data);
    } else if (this.curve === 'p256') {
      c.setAAD(this.#recipient);
    }
    const ciphertext = Buffer.concat([c.update(data), c.final(), c.getAuthTag()]);
    return formatEv({ debug: this.#debug, version: versionFor(this.curve, this.#role !== undefined), type, iv, ephemeralPublicKey: this.#ephemeral, ciphertext });
  }
}

/** Encrypts one value into an `ev:` string (fresh ephemeral key). */
export function encryptValue(value: EvValue, key: EncryptionPublicKey, opts: EncryptOptions = {}): string {
  return new EvEncryptor(key, opts).encrypt(value);
}

// --- decryption -------------------------------------------------------------------------------

export interface DecryptedValue {
  value: EvValue;
  type: EvType;
  /** The plaintext text (for numbers: the exact JSON number text, useful to avoid float rounding). */
  text: string;
  /** Metadata of QkTC / S0lS values. */
  metadata?: EvMetadata;
}

/** What an operator needs to place a refusal (EvDecryptError.detail): public facts only. */
function describe(t: EvToken, keyring: Keyring): string {
  const retired = keyring.generations - 1;
  return `${t.debug ? 'debug ' : ''}${t.version}${t.type === 'string' ? '' : `:${t.type}`} value, ${t.curve} key ${keyring.keyIds[t.curve]}${retired > 0 ? ` and ${retired} retired` : ''}`;
}

/** Z for `t` under one key generation: from the keyring's cache (ecdh-cache.ts), else one ECDH, cached. */
function sharedFor(cache: EcdhCache, keyring: Keyring, t: EvToken, generation: number, budget: EcdhBudget | undefined): EcdhCacheEntry {
  const id = generation + (t.curve === 'p256' ? 'P' : 'K') + t.ephemeralSegment;
  let entry = cache.get(id);
  if (!entry) {
    budget?.spend();
    // Decompress once: handing OpenSSL the compressed point would decompress it a second time inside ECDH.
    let z: Buffer;
    let point: Buffer;
    try {
      point = decompressPoint(t.curve, t.ephemeralPublicKey);
      z = keyring.sharedSecret(t.curve, point, generation);
    } catch {
      throw new EvDecryptError('EPHEMERAL_KEY_NOT_ON_CURVE', describe(t, keyring));
    }
    entry = { z, point };
    cache.set(id, entry);
  }
  return entry;
}

function kdfKey(cache: EcdhCache, entry: EcdhCacheEntry, t: EvToken): Buffer {
  return cache.kdf(entry, () => deriveEvKey(t.curve, entry.z, entry.point));
}

/** Opens `t` with one key generation, or null when AES-GCM does not authenticate under it. */
function openWith(t: EvToken, keyring: Keyring, generation: number, budget: EcdhBudget | undefined): Buffer | null {
  const cache = ecdhCacheFor(keyring);
  const entry = sharedFor(cache, keyring, t, generation, budget);
  const enclaveKey = keyring.publicKey(t.curve, generation);
  const aads: (Uint8Array | null)[] = [];
  if (t.hasMetadata) {
    const cfg = configByte(t.type, t.curve, false);
    if (t.debug) aads.push(metadataAad(cfg | 0x80, t.ephemeralPublicKey, enclaveKey));
    aads.push(metadataAad(cfg, t.ephemeralPublicKey, enclaveKey));
  } else {
    aads.push(t.curve === 'p256' ? enclaveKey : null);
  }
  const keys: (() => Buffer)[] =
    t.curve === 'p256' ? [() => kdfKey(cache, entry, t)] : t.hasMetadata ? [() => kdfKey(cache, entry, t), () => entry.z] : [() => entry.z, () => kdfKey(cache, entry, t)];
  for (const key of keys) {
    for (const aad of aads) {
      const pt = gcmOpen(key(), t.iv, aad, t.ciphertext);
      if (pt) return pt;
    }
  }
  return null;
}

/**
 * An `ev:` string names no key (the enclave key is only in the AAD of some versions), so after `keys rotate`
 * the generations are tried newest first and AES-GCM's tag says which one it was made for: one ECDH per
 * generation tried, each charged to `budget`. Forgery bound: 2^-127 per key tried.
 */
function openToken(t: EvToken, keyring: Keyring, budget: EcdhBudget | undefined): Buffer {
  for (let g = 0; g < keyring.generations; g++) {
    const pt = openWith(t, keyring, g, budget);
    if (pt) return pt;
  }
  throw new EvDecryptError('AUTHENTICATION_FAILED', describe(t, keyring));
}

function typed(t: EvToken, text: string, keyring: Keyring): EvValue {
  if (t.type === 'string') return text;
  if (t.type === 'boolean') {
    if (text === 'true') return true;
    if (text === 'false') return false;
    throw new EvDecryptError('NOT_A_BOOLEAN', describe(t, keyring));
  }
  if (!JSON_NUMBER.test(text)) throw new EvDecryptError('NOT_A_JSON_NUMBER', describe(t, keyring));
  return Number(text);
}

/**
 * Decrypts a token (string or parsed) with full detail. Throws EvFormatError for a malformed string,
 * EvBudgetError when `budget` is spent before the right key generation was found, EvDecryptError otherwise —
 * reason RESERVED_FOR_SECRETS, with the message every refusal gets, for an app's [secrets] value
 * (secret-ciphertexts.ts): this is what every request path and the local API decrypt through.
 */
export function decryptTokenDetailed(token: string | EvToken, keyring: Keyring, budget?: EcdhBudget): DecryptedValue {
  return open(typeof token === 'string' ? parseEv(token) : token, keyring, budget, false);
}

/** decryptTokenDetailed for decryptSecrets (secrets.ts) alone: also opens [secrets] values. Never for a request's values. */
export function decryptSecretToken(token: string, keyring: Keyring): DecryptedValue {
  return open(parseEv(token), keyring, undefined, true);
}

function open(t: EvToken, keyring: Keyring, budget: EcdhBudget | undefined, forSecrets: boolean): DecryptedValue {
  const pt = openToken(t, keyring, budget);
  let data: Uint8Array = pt;
  let metadata: EvMetadata | undefined;
  let text: string;
  try {
    if (t.hasMetadata) {
      const unwrapped = unwrapMetadata(pt);
      if (!unwrapped) throw new EvDecryptError('MALFORMED_METADATA', describe(t, keyring));
      data = unwrapped.data;
      metadata = unwrapped.metadata;
    }
    // Checked once the value has opened: a secret costs a client the same work as any value, and gets the same answer.
    if (!forSecrets && isSecretOnly(keyring, t, metadata?.role)) throw new EvDecryptError('RESERVED_FOR_SECRETS', describe(t, keyring));
    try {
      text = UTF8.decode(data);
    } catch {
      throw new EvDecryptError('PLAINTEXT_NOT_UTF8', describe(t, keyring));
    }
  } finally {
    pt.fill(0);
  }
  const value = typed(t, text, keyring);
  return metadata ? { value, type: t.type, text, metadata } : { value, type: t.type, text };
}

/** Decrypts one `ev:` string to its original type. */
export function decryptToken(token: string, keyring: Keyring): EvValue {
  return decryptTokenDetailed(token, keyring).value;
}
