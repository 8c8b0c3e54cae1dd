// Well-formed ev: values that fail in each of the ways EvDecryptError distinguishes (its `reason`), for the
// tests that the client sees the same error whatever the reason. Sealed here with node:crypto and the
// format's own KDF, so each reaches exactly the check it is meant for.
import { createCipheriv, createECDH, randomBytes } from 'node:crypto';
import type { EvDecryptReason } from '../../src/crypto/errors.ts';
import { encryptValue, formatEv, parseEv } from '../../src/crypto/ev-format.ts';
import { decompressPoint, deriveEvKey } from '../../src/crypto/ev-kdf.ts';
import { Keyring } from '../../src/crypto/keyring.ts';
import { SECRET_ROLE } from '../../src/crypto/secret-ciphertexts.ts';

/** A P-256 value whose AES-GCM opens with `keyring` and yields exactly `plaintext` (Tk9D, or QkTC when `withMetadata`). */
function sealP256(keyring: Keyring, plaintext: Uint8Array, opts: { type?: 'string' | 'number' | 'boolean'; withMetadata?: boolean } = {}): string {
  const type = opts.type ?? 'string';
  const enclave = keyring.publicKey('p256');
  const eph = createECDH('prime256v1');
  eph.generateKeys();
  const ephemeral = eph.getPublicKey(null, 'compressed');
  const key = deriveEvKey('p256', eph.computeSecret(enclave), eph.getPublicKey(null, 'uncompressed'));
  const iv = randomBytes(12);
  const c = createCipheriv('aes-256-gcm', key, iv, { authTagLength: 16 });
  const cfg = ({ string: 0, number: 1, boolean: 2 }[type] << 4) | 1;
  c.setAAD(opts.withMetadata ? Buffer.concat([Uint8Array.of(cfg), ephemeral, enclave]) : enclave);
  const ciphertext = Buffer.concat([c.update(plaintext), c.final(), c.getAuthTag()]);
  return formatEv({ version: opts.withMetadata ? 'QkTC' : 'Tk9D', type, iv, ephemeralPublicKey: ephemeral, ciphertext });
}

/** A compressed P-256 point encoding whose x has no y on the curve. */
function offCurvePoint(): Uint8Array {
  for (let x = 1; ; x++) {
    const p = new Uint8Array(33);
    p[0] = 0x02;
    p[32] = x;
    try {
      decompressPoint('p256', p);
    } catch {
      return p;
    }
  }
}

/** One well-formed value per reason a value in a JSON body can be refused for (headers add UNSAFE_HEADER_VALUE). */
export function failingValues(keyring: Keyring): Record<Exclude<EvDecryptReason, 'UNSAFE_HEADER_VALUE'>, string> {
  const pub = keyring.publicKeys();
  const text = parseEv(encryptValue('not a number', pub));
  return {
    EPHEMERAL_KEY_NOT_ON_CURVE: formatEv({ ...text, ephemeralPublicKey: offCurvePoint() }),
    AUTHENTICATION_FAILED: encryptValue('for someone else', Keyring.generate().publicKeys()),
    // A Tk9D value's type segment is not authenticated: relabelled, it opens and then fails its type check.
    NOT_A_JSON_NUMBER: formatEv({ ...text, type: 'number' }),
    NOT_A_BOOLEAN: formatEv({ ...text, type: 'boolean' }),
    PLAINTEXT_NOT_UTF8: sealP256(keyring, Uint8Array.of(0x61, 0xff, 0x62)),
    MALFORMED_METADATA: sealP256(keyring, Uint8Array.of(0xff, 0xff, 0x00), { withMetadata: true }),
    // Sealed for [secrets] (`secrets seal`): opens, and is refused to every client like the rest.
    RESERVED_FOR_SECRETS: encryptValue('for the app only', pub, { role: SECRET_ROLE }),
  };
}

/** A value that decrypts, to a text no header may carry. */
export function headerUnsafeValue(keyring: Keyring): string {
  return encryptValue('a\r\nX-Admin: yes', keyring.publicKeys());
}

/** `token` with one base64 character flipped mid-ciphertext: still well-formed, no longer decrypts. */
export function tamperEv(token: string): string {
  const parts = token.split(':');
  const ct = parts[parts.length - 2]!;
  const i = Math.floor(ct.length / 2);
  parts[parts.length - 2] = ct.slice(0, i) + (ct[i] === 'A' ? 'B' : 'A') + ct.slice(i + 1);
  return parts.join(':');
}
