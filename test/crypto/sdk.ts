// Helpers around the real @evervault/sdk (offline mode: `pk:` + base64 compressed key) and an independent
// decryptor (noble curves/hashes/ciphers + the SDK's own asn1js SPKI encoder) used as the oracle for our output.
import { createRequire } from 'node:module';
import Evervault from '@evervault/sdk';
import { gcm } from '@noble/ciphers/aes.js';
import { p256 } from '@noble/curves/nist.js';
import { secp256k1 } from '@noble/curves/secp256k1.js';
import { sha256 } from '@noble/hashes/sha2.js';
import { concatBytes, fromBase64 } from '../../src/util/bytes.ts';
import type { Keyring, KeyMaterial } from '../../src/crypto/keyring.ts';

const require = createRequire(import.meta.url);
const { Encoding } = require('@evervault/sdk/lib/curves') as { Encoding: { encodePublicKey(curve: string, compressedB64: string): Buffer } };

export type SdkCurve = 'prime256v1' | 'secp256k1';

/** A fresh SDK instance (its key-cycle state is per instance) for `keyring`'s key on `curve`. */
export function sdkFor(keyring: Keyring, curve: SdkCurve): Evervault {
  const key = curve === 'prime256v1' ? keyring.publicKeys().p256 : keyring.publicKeys().secp256k1;
  const pk = 'pk:' + Buffer.from(key).toString('base64');
  return curve === 'prime256v1' ? new Evervault('app_0123456789abcdef', pk, { curve: 'prime256v1' }) : new Evervault('app_0123456789abcdef', pk);
}

/** The SDK's own DER SPKI (explicit parameters) for a compressed point. */
export function sdkSpki(curve: SdkCurve, compressed: Uint8Array): Uint8Array {
  return new Uint8Array(Encoding.encodePublicKey(curve, Buffer.from(compressed).toString('base64')));
}

/** Independent decryption of an ev: string (no node:crypto), returning the raw plaintext bytes. */
export function oracleDecrypt(token: string, material: KeyMaterial): { version: string; type: string; plaintext: Uint8Array } {
  const parts = token.slice(3, -2).split(':');
  const version = parts[0]!;
  const type = parts.length === 5 ? parts[1]! : 'string';
  const [ivB64, epkB64, ctB64] = parts.slice(-3) as [string, string, string];
  const iv = fromBase64(ivB64);
  const epk = fromBase64(epkB64);
  const ct = fromBase64(ctB64);
  const isP256 = version === 'Tk9D' || version === 'QkTC';
  const curve = isP256 ? p256 : secp256k1;
  const sdkCurve: SdkCurve = isP256 ? 'prime256v1' : 'secp256k1';
  const priv = material.privateKey(isP256 ? 'p256' : 'secp256k1');
  const z = curve.getSharedSecret(priv, epk).subarray(1);
  const enclavePub = curve.getPublicKey(priv, true);
  const withMeta = version === 'QkTC' || version === 'S0lS';
  const key = version === 'RFVC' ? z : sha256(concatBytes(z, Uint8Array.of(0, 0, 0, 1), sdkSpki(sdkCurve, epk)));
  let aad: Uint8Array | undefined;
  if (withMeta) {
    const dt = type === 'number' ? 1 : type === 'boolean' ? 2 : 0;
    aad = concatBytes(Uint8Array.of((dt << 4) | (version === 'QkTC' ? 1 : 0)), epk, enclavePub);
  } else if (version === 'Tk9D') aad = enclavePub;
  const plaintext = gcm(key, iv, aad).decrypt(ct);
  return { version, type, plaintext };
}

/** The shape every SDK-produced value has. */
export const SDK_TOKEN_SHAPE = /^ev:(Tk9D|QkTC|RFVC|S0lS)(:number|:boolean)?:[A-Za-z0-9+/]{16}:[A-Za-z0-9+/]{44}:[A-Za-z0-9+/]+:\$$/;

/** The sample document the SDK interop tests encrypt: strings (unicode, escapes, empty), numbers, booleans, null, nesting. */
export const SDK_SAMPLE = {
  name: 'Ada Lovelace',
  unicode: 'zürich — 東京 🚀',
  quote: 'she said "hi" \\ bye',
  empty: '',
  n: 42,
  neg: -7.25,
  big: 1e21,
  t: true,
  f: false,
  none: null,
  nested: { card: { number: '4242424242424242', cvc: 123, ok: true }, list: [1, 'two', false, [3.5, 'deep']] },
};

/** The SDK's four ev: versions: curve × role (a role adds the metadata, QkTC / S0lS). */
export const SDK_CASES: { curve: SdkCurve; role: string | null; version: string }[] = [
  { curve: 'prime256v1', role: null, version: 'Tk9D' },
  { curve: 'prime256v1', role: 'pii', version: 'QkTC' },
  { curve: 'secp256k1', role: null, version: 'RFVC' },
  { curve: 'secp256k1', role: 'card-data-2', version: 'S0lS' },
];

/** The string leaves of a JSON value, depth first (the ev: tokens of an encrypted document). */
export function leaves(v: unknown): string[] {
  if (typeof v === 'string') return [v];
  if (Array.isArray(v)) return v.flatMap(leaves);
  if (v && typeof v === 'object') return Object.values(v).flatMap(leaves);
  return [];
}
