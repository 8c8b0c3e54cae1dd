// The enclave's long-lived ECDH key pairs for `ev:` values: P-256 (Tk9D/QkTC) and secp256k1 (RFVC/S0lS) —
// the current pair, and after `keys rotate` up to three retired pairs kept for decryption. Private keys live
// only inside Keyring/KeyMaterial instances; both redact themselves in JSON.stringify and util.inspect, and no
// error message ever includes key bytes.
//
// Key sources:
//   devKeySource(stateDir)          generated once into <stateDir>/keys.json (mode 0600), reused afterwards
//   encryptedFileKeySource(path, k) a blob sealed with AES-256-GCM under a 32-byte unseal key handed in by
//                                   the host (format below; development only)
//   kmsKeySource (kms-keyring.ts)   the sealed-keyring file, opened with data keys KMS releases to this
//                                   attested enclave; the only source with several generations
import { createECDH, createHash, randomBytes } from 'node:crypto';
import { gcmOpen, gcmSeal } from './aes-gcm.ts';
import type { ECDH } from 'node:crypto';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { inspect } from 'node:util';
import { concatBytes, fromHex, toHex, utf8 } from '../util/bytes.ts';
import { currentUid, unsafeDirReason, unsafeSecretFileReason } from '../util/private-files.ts';
import { KeyringError } from './errors.ts';
import { NODE_CURVE } from './ev-kdf.ts';
import type { EvCurve } from './ev-kdf.ts';

const REDACTED = '[redacted]';
const CURVES: readonly EvCurve[] = ['p256', 'secp256k1'];

/** One generation's private scalars (32 bytes each). */
export interface KeyScalars {
  p256: Uint8Array;
  secp256k1: Uint8Array;
}

/** Zeroes copies of private scalars (those cloned into a worker thread's start-up data, once it has them). */
export function wipeScalars(scalars: readonly KeyScalars[]): void {
  for (const g of scalars) {
    g.p256.fill(0);
    g.secp256k1.fill(0);
  }
}

/**
 * Most key generations a keyring holds: the current pair and up to three retired ones (`keys rotate`). A value
 * is opened by trying the generations newest first (an `ev:` string does not name its key), so each one beyond
 * the first can cost one more ECDH per value; this bounds it, and the per-request budget counts each try.
 */
export const MAX_KEY_GENERATIONS = 4;

function checkScalars(keys: KeyScalars, label: string): void {
  for (const c of CURVES) {
    if (!(keys[c] instanceof Uint8Array) || keys[c].length !== 32) {
      throw new KeyringError('KEYRING_BAD_KEY', `${label}${c} private key: expected 32 bytes, found ${keys[c] instanceof Uint8Array ? keys[c].length : typeof keys[c]}`);
    }
  }
}

/**
 * Private scalars (32 bytes each), one pair per generation, newest (current) first. Redacted in logs; copy out
 * with `privateKey(curve, generation)`.
 */
export class KeyMaterial {
  readonly #gens: Record<EvCurve, Uint8Array>[];

  /** One generation (dev keys, sealed files, a fresh keyring). */
  constructor(keys: KeyScalars) {
    checkScalars(keys, '');
    this.#gens = [{ p256: Uint8Array.from(keys.p256), secp256k1: Uint8Array.from(keys.secp256k1) }];
  }

  /** Several generations, newest first: the first encrypts, all decrypt. 1..MAX_KEY_GENERATIONS. */
  static fromGenerations(gens: readonly KeyScalars[]): KeyMaterial {
    if (gens.length < 1 || gens.length > MAX_KEY_GENERATIONS) {
      throw new KeyringError('KEYRING_BAD_KEY', `key generations: expected 1 to ${MAX_KEY_GENERATIONS}, found ${gens.length}`);
    }
    gens.forEach((g, i) => checkScalars(g, `generation ${i}: `));
    const m = new KeyMaterial(gens[0]!);
    for (const g of gens.slice(1)) m.#gens.push({ p256: Uint8Array.from(g.p256), secp256k1: Uint8Array.from(g.secp256k1) });
    return m;
  }

  static generate(): KeyMaterial {
    const gen = (c: EvCurve): Uint8Array => {
      const e = createECDH(NODE_CURVE[c]);
      e.generateKeys();
      // getPrivateKey() drops leading zero bytes (1 key in 256 is 31 bytes): left-pad to 32.
      const k = e.getPrivateKey();
      const out = new Uint8Array(32);
      out.set(k, 32 - k.length);
      k.fill(0);
      return out;
    };
    return new KeyMaterial({ p256: gen('p256'), secp256k1: gen('secp256k1') });
  }

  /** How many generations (1 = never rotated). */
  get generations(): number {
    return this.#gens.length;
  }

  privateKey(curve: EvCurve, generation = 0): Uint8Array {
    const g = this.#gens[generation];
    if (g === undefined) throw new KeyringError('KEYRING_BAD_KEY', `no key generation ${generation} (this keyring holds ${this.#gens.length})`);
    return Uint8Array.from(g[curve]);
  }

  /** Copies of every generation's scalars, newest first (DecryptPool's workers; sealing). The caller wipes them. */
  scalars(): KeyScalars[] {
    return this.#gens.map((g) => ({ p256: Uint8Array.from(g.p256), secp256k1: Uint8Array.from(g.secp256k1) }));
  }

  /** Zeroes this object's copies of the scalars; it holds no generation afterwards (a temporary's last step). */
  wipe(): void {
    for (const g of this.#gens.splice(0)) {
      g.p256.fill(0);
      g.secp256k1.fill(0);
    }
  }

  toJSON(): string {
    return REDACTED;
  }

  [inspect.custom](): string {
    return `KeyMaterial ${REDACTED}`;
  }

  toString(): string {
    return `KeyMaterial ${REDACTED}`;
  }
}

export interface KeySource {
  load(): Promise<KeyMaterial>;
}

export interface PublicKeys {
  /** Compressed points (33 bytes). */
  p256: Uint8Array;
  secp256k1: Uint8Array;
}

/** Key id: the first 8 bytes of SHA-256(compressed public key), hex. */
function keyId(pub: Uint8Array): string {
  return createHash('sha256').update(pub).digest('hex').slice(0, 16);
}

interface Generation {
  ecdh: Record<EvCurve, ECDH>;
  pub: Record<EvCurve, Uint8Array>;
}

function openGeneration(material: KeyMaterial, g: number): Generation {
  const ecdh = {} as Record<EvCurve, ECDH>;
  const pub = {} as Record<EvCurve, Uint8Array>;
  for (const c of CURVES) {
    const e = createECDH(NODE_CURVE[c]);
    const k = material.privateKey(c, g);
    try {
      e.setPrivateKey(k);
    } catch {
      throw new KeyringError('KEYRING_BAD_KEY', `${g === 0 ? '' : `generation ${g}: `}${c} private key is not a valid scalar for the curve`);
    } finally {
      k.fill(0);
    }
    ecdh[c] = e;
    pub[c] = new Uint8Array(e.getPublicKey(null, 'compressed'));
  }
  return { ecdh, pub };
}

/**
 * The enclave's ev: keys: the current pair (encrypts; published; bound into attestation documents) and, after
 * `keys rotate`, the retired pairs (decrypt only), newest first.
 */
export class Keyring {
  readonly #gens: Generation[];
  /** The current pair's key ids. */
  readonly keyIds: Readonly<{ p256: string; secp256k1: string }>;

  /** Kept for DecryptPool's workers (each builds its own Keyring); redacted like everything here. */
  readonly #material: KeyMaterial;

  private constructor(material: KeyMaterial) {
    this.#material = material;
    this.#gens = Array.from({ length: material.generations }, (_, g) => openGeneration(material, g));
    const pub = this.#gens[0]!.pub;
    this.keyIds = Object.freeze({ p256: keyId(pub.p256), secp256k1: keyId(pub.secp256k1) });
  }

  static fromMaterial(material: KeyMaterial): Keyring {
    return new Keyring(material);
  }

  /** A fresh in-memory keyring (tests, ephemeral dev runs). */
  static generate(): Keyring {
    return new Keyring(KeyMaterial.generate());
  }

  /** How many key generations this keyring decrypts with (1 = never rotated). */
  get generations(): number {
    return this.#gens.length;
  }

  /** The private scalars, for DecryptPool's worker threads only (they decrypt with their own Keyring). */
  keyMaterial(): KeyMaterial {
    return this.#material;
  }

  /** The current compressed public points (what clients encrypt to), fresh copies. */
  publicKeys(): PublicKeys {
    const pub = this.#gens[0]!.pub;
    return { p256: Uint8Array.from(pub.p256), secp256k1: Uint8Array.from(pub.secp256k1) };
  }

  /** The retired pairs' public points, newest first (decrypt only: nobody should encrypt to them any more). */
  retiredPublicKeys(): PublicKeys[] {
    return this.#gens.slice(1).map((g) => ({ p256: Uint8Array.from(g.pub.p256), secp256k1: Uint8Array.from(g.pub.secp256k1) }));
  }

  /** The retired pairs' key ids, newest first. */
  retiredKeyIds(): { p256: string; secp256k1: string }[] {
    return this.#gens.slice(1).map((g) => ({ p256: keyId(g.pub.p256), secp256k1: keyId(g.pub.secp256k1) }));
  }

  /** The compressed public point of one curve and generation (0 = current; a view; do not mutate). */
  publicKey(curve: EvCurve, generation = 0): Uint8Array {
    return this.#gens[generation]!.pub[curve];
  }

  /**
   * The bytes bound into the attestation document's `public_key`: deterministic CBOR
   *   { "p256": bstr(33), "secp256k1": bstr(33) }   (86 bytes, keys in canonical length-first order)
   * so a client verifying the document learns which ev: keys this enclave holds (the current pair).
   */
  attestationPublicKey(): Uint8Array {
    return encodeAttestationPublicKey(this.#gens[0]!.pub);
  }

  /**
   * ECDH with a peer's (ephemeral) public point and one generation's key: returns the shared x-coordinate Z —
   * secret material, for the ev: codec only. Throws a plain Error when the point is not on the curve.
   */
  sharedSecret(curve: EvCurve, peerPublicKey: Uint8Array, generation = 0): Buffer {
    return this.#gens[generation]!.ecdh[curve].computeSecret(peerPublicKey);
  }

  toJSON(): object {
    return { keyIds: this.keyIds, generations: this.#gens.length, privateKeys: REDACTED };
  }

  [inspect.custom](): string {
    return `Keyring { keyIds: ${JSON.stringify(this.keyIds)}, generations: ${this.#gens.length}, privateKeys: ${REDACTED} }`;
  }
}

function cborText(s: string): number[] {
  return [0x60 | s.length, ...utf8.encode(s)];
}
function cborBytes(b: Uint8Array): number[] {
  return b.length < 24 ? [0x40 | b.length, ...b] : [0x58, b.length, ...b];
}

/** CBOR map { "p256": bstr, "secp256k1": bstr } (see Keyring.attestationPublicKey). */
export function encodeAttestationPublicKey(keys: PublicKeys): Uint8Array {
  return Uint8Array.from([0xa2, ...cborText('p256'), ...cborBytes(keys.p256), ...cborText('secp256k1'), ...cborBytes(keys.secp256k1)]);
}

export async function loadKeyring(source: KeySource): Promise<Keyring> {
  return Keyring.fromMaterial(await source.load());
}

// --- development source: <stateDir>/keys.json ----------------------------------------------------

export const DEV_KEY_FILE = 'keys.json';

interface DevKeyFile {
  version: 1;
  p256: string;
  secp256k1: string;
  createdAt: string;
}

function ioError(what: string, err: unknown): KeyringError {
  const code = (err as NodeJS.ErrnoException | undefined)?.code ?? 'unknown error';
  return new KeyringError('KEYRING_IO', `${what}: ${code}`);
}

/**
 * Reads keys.json, or null when it (or its directory) does not exist yet. Refused before a byte is read: a state
 * directory others can write (KEYRING_INSECURE_DIR: they could swap the file), a key file others can read or
 * write, that is not a regular file, or that another user owns (KEYRING_INSECURE_FILE).
 */
async function readDevFile(file: string): Promise<KeyMaterial | null> {
  const dir = path.dirname(file);
  const uid = currentUid();
  try {
    const problem = unsafeDirReason(await fs.stat(dir), uid);
    if (problem) throw new KeyringError('KEYRING_INSECURE_DIR', `state directory ${dir} is ${problem}`);
  } catch (err) {
    if (err instanceof KeyringError) throw err;
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw ioError(`cannot stat ${dir}`, err);
  }
  let handle: fs.FileHandle;
  try {
    handle = await fs.open(file, 'r');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw ioError(`cannot open ${file}`, err);
  }
  try {
    const problem = unsafeSecretFileReason(await handle.stat(), uid);
    if (problem) throw new KeyringError('KEYRING_INSECURE_FILE', `key file ${file} is ${problem}`);
    const text = await handle.readFile('utf8');
    let parsed: Partial<DevKeyFile>;
    try {
      parsed = JSON.parse(text) as Partial<DevKeyFile>;
    } catch {
      throw new KeyringError('KEYRING_BAD_FILE', `${file}: expected JSON, found unparseable text`);
    }
    if (parsed.version !== 1 || typeof parsed.p256 !== 'string' || typeof parsed.secp256k1 !== 'string' || !/^[0-9a-f]{64}$/.test(parsed.p256) || !/^[0-9a-f]{64}$/.test(parsed.secp256k1)) {
      throw new KeyringError('KEYRING_BAD_FILE', `${file}: expected {"version":1,"p256":<64 hex>,"secp256k1":<64 hex>}`);
    }
    return new KeyMaterial({ p256: fromHex(parsed.p256), secp256k1: fromHex(parsed.secp256k1) });
  } finally {
    await handle.close();
  }
}

/**
 * Development keys: `<stateDir>/keys.json` ({"version":1,"p256":hex,"secp256k1":hex,"createdAt":iso}),
 * created on first use with mode 0600 (directory 0700) and reused on every later start. A file readable
 * by group/others or owned by another user is refused (KEYRING_INSECURE_FILE), and so is a group- or
 * world-writable state directory (KEYRING_INSECURE_DIR). Creation is atomic (temp file + link), so two
 * processes starting together end up with the same keys.
 */
export function devKeySource(stateDir: string): KeySource {
  const file = path.join(stateDir, DEV_KEY_FILE);
  return {
    async load(): Promise<KeyMaterial> {
      const existing = await readDevFile(file);
      if (existing) return existing;
      try {
        await fs.mkdir(stateDir, { recursive: true, mode: 0o700 });
      } catch (err) {
        throw ioError(`cannot create ${stateDir}`, err);
      }
      const material = KeyMaterial.generate();
      const body: DevKeyFile = {
        version: 1,
        p256: toHex(material.privateKey('p256')),
        secp256k1: toHex(material.privateKey('secp256k1')),
        createdAt: new Date().toISOString(),
      };
      const tmp = path.join(stateDir, `.${DEV_KEY_FILE}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`);
      try {
        await fs.writeFile(tmp, JSON.stringify(body) + '\n', { mode: 0o600, flag: 'wx' });
        try {
          await fs.link(tmp, file);
        } catch (err) {
          if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
          // Another process won the race: use its keys.
          const theirs = await readDevFile(file);
          if (theirs) return theirs;
          throw err;
        }
      } catch (err) {
        if (err instanceof KeyringError) throw err;
        throw ioError(`cannot write ${file}`, err);
      } finally {
        await fs.rm(tmp, { force: true });
      }
      return material;
    },
  };
}

// --- sealed blob: encryptedFileKeySource --------------------------------------------------------
//
// Sealed key file format (97 bytes):
//   0   4  magic "EAKS"
//   4   1  format version 0x01
//   5  12  IV
//  17  80  AES-256-GCM(unsealKey, IV, AAD = bytes 0..4) of (p256 scalar 32 ‖ secp256k1 scalar 32) ‖ tag 16

const SEAL_MAGIC = Uint8Array.of(0x45, 0x41, 0x4b, 0x53, 0x01);
const SEALED_LENGTH = 5 + 12 + 64 + 16;

function checkUnsealKey(key: Uint8Array): void {
  if (!(key instanceof Uint8Array) || key.length !== 32) {
    throw new KeyringError('KEYRING_BAD_UNSEAL_KEY', `unseal key: expected 32 bytes, found ${key instanceof Uint8Array ? key.length : typeof key}`);
  }
}

/** Seals key material for `encryptedFileKeySource` (used by the host-side tooling and tests). */
export function sealKeyMaterial(material: KeyMaterial, unsealKey: Uint8Array): Uint8Array {
  checkUnsealKey(unsealKey);
  const iv = randomBytes(12);
  const pt = concatBytes(material.privateKey('p256'), material.privateKey('secp256k1'));
  const ct = gcmSeal(unsealKey, iv, SEAL_MAGIC, pt);
  pt.fill(0);
  return concatBytes(SEAL_MAGIC, iv, ct);
}

/** Opens a sealed blob (format above). Throws KEYRING_BAD_FILE / KEYRING_UNSEAL_FAILED. */
export function unsealKeyMaterial(blob: Uint8Array, unsealKey: Uint8Array): KeyMaterial {
  checkUnsealKey(unsealKey);
  if (blob.length !== SEALED_LENGTH || !SEAL_MAGIC.every((b, i) => blob[i] === b)) {
    throw new KeyringError('KEYRING_BAD_FILE', `sealed key file: expected ${SEALED_LENGTH} bytes starting "EAKS" v1, found ${blob.length} bytes`);
  }
  const pt = gcmOpen(unsealKey, blob.subarray(5, 17), SEAL_MAGIC, blob.subarray(17));
  if (pt === null) throw new KeyringError('KEYRING_UNSEAL_FAILED', 'sealed key file does not open with this unseal key (wrong key or tampered file)');
  try {
    return new KeyMaterial({ p256: pt.subarray(0, 32), secp256k1: pt.subarray(32, 64) });
  } finally {
    pt.fill(0);
  }
}

/** Keys from a sealed blob handed in by the host, opened with `unsealKey` (32 bytes). */
export function encryptedFileKeySource(file: string, unsealKey: Uint8Array): KeySource {
  checkUnsealKey(unsealKey);
  const key = Uint8Array.from(unsealKey);
  return {
    async load(): Promise<KeyMaterial> {
      let blob: Uint8Array;
      try {
        blob = await fs.readFile(file);
      } catch (err) {
        throw ioError(`cannot read ${file}`, err);
      }
      return unsealKeyMaterial(blob, key);
    },
  };
}
