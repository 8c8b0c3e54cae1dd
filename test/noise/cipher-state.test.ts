import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { CipherState, MAX_NONCE, type CipherName, type NoisePrimitives } from '../../src/noise/index.ts';
import { noblePrimitives } from '../../src/noise/suite-noble.ts';
import { nativeAead } from '../../src/noise/native-aead.ts';
import { nodePrimitives } from '../../src/noise/suite-node.ts';
import { concatBytes, equalBytes, toHex } from '../../src/util/bytes.ts';
import { code, suites } from './helpers.ts';

const ciphers: CipherName[] = ['ChaChaPoly', 'AESGCM'];
const key = Uint8Array.from({ length: 32 }, (_, i) => i + 1);

function pair(suite: NoisePrimitives, cipher: CipherName, nonce = 0n): [CipherState, CipherState] {
  return [new CipherState(suite, cipher, key, nonce), new CipherState(suite, cipher, key, nonce)];
}

for (const suite of suites) {
  for (const cipher of ciphers) {
    describe(`CipherState (${suite.name}, ${cipher})`, () => {
      it('rejects a tampered ciphertext without advancing, then still decrypts the genuine one', () => {
        const [tx, rx] = pair(suite, cipher);
        const ct = tx.encrypt(Uint8Array.of(1, 2, 3));
        for (const at of [0, 2, ct.length - 1]) {
          const bad = ct.slice();
          bad[at]! ^= 0x01;
          expect(code(() => rx.decrypt(bad))).toBe('NOISE_DECRYPT_FAILED');
          expect(rx.nonce).toBe(0n);
        }
        expect(Array.from(rx.decrypt(ct))).toEqual([1, 2, 3]);
        expect(rx.nonce).toBe(1n);
      });

      it('rejects a ciphertext shorter than the tag as a bad message without advancing', () => {
        const [, rx] = pair(suite, cipher);
        expect(code(() => rx.decrypt(new Uint8Array(15)))).toBe('NOISE_BAD_MESSAGE');
        expect(rx.nonce).toBe(0n);
      });

      it('binds the associated data', () => {
        const [tx, rx] = pair(suite, cipher);
        const ct = tx.encrypt(Uint8Array.of(9), Uint8Array.of(1));
        expect(code(() => rx.decrypt(ct, Uint8Array.of(2)))).toBe('NOISE_DECRYPT_FAILED');
        expect(Array.from(rx.decrypt(ct, Uint8Array.of(1)))).toEqual([9]);
      });

      it('rejects a replayed or reordered message (each direction has its own counter)', () => {
        const [tx, rx] = pair(suite, cipher);
        const first = tx.encrypt(Uint8Array.of(1));
        const second = tx.encrypt(Uint8Array.of(2));
        expect(code(() => rx.decrypt(second))).toBe('NOISE_DECRYPT_FAILED');
        rx.decrypt(first);
        expect(code(() => rx.decrypt(first))).toBe('NOISE_DECRYPT_FAILED');
        expect(Array.from(rx.decrypt(second))).toEqual([2]);
      });

      it('uses nonce 2^64−2 and then refuses the reserved 2^64−1 in both directions', () => {
        const [tx, rx] = pair(suite, cipher, MAX_NONCE - 1n);
        const ct = tx.encrypt(Uint8Array.of(7));
        // the high counter really reaches the AEAD: a receiver one step behind cannot open it
        expect(code(() => new CipherState(suite, cipher, key, MAX_NONCE - 2n).decrypt(ct))).toBe('NOISE_DECRYPT_FAILED');
        expect(Array.from(rx.decrypt(ct))).toEqual([7]);
        expect(tx.nonce).toBe(MAX_NONCE);
        expect(code(() => tx.encrypt(Uint8Array.of(8)))).toBe('NOISE_NONCE_EXHAUSTED');
        expect(code(() => rx.decrypt(ct))).toBe('NOISE_NONCE_EXHAUSTED');
        expect(tx.nonce).toBe(MAX_NONCE);
        expect(rx.nonce).toBe(MAX_NONCE);
      });

      it('encrypts 65519 bytes into one 65535-byte message and refuses one byte more', () => {
        const [tx, rx] = pair(suite, cipher);
        const pt = new Uint8Array(65519).fill(0x5a);
        const ct = tx.encrypt(pt);
        expect(ct.length).toBe(65535);
        expect(equalBytes(rx.decrypt(ct), pt)).toBe(true);
        expect(code(() => tx.encrypt(new Uint8Array(65520)))).toBe('NOISE_MESSAGE_TOO_LARGE');
        expect(tx.nonce).toBe(1n);
        expect(code(() => rx.decrypt(new Uint8Array(65536)))).toBe('NOISE_MESSAGE_TOO_LARGE');
        expect(rx.nonce).toBe(1n);
      });

      it('copies Buffer inputs it keeps or decrypts (a Buffer slice() is a view): the key and a ciphertext stay the caller\'s', () => {
        const bufKey = Buffer.from(key);
        const a = new CipherState(suite, cipher, bufKey);
        bufKey.fill(0); // the caller wipes its copy
        const b = new CipherState(suite, cipher, key);
        const ct = a.encrypt(Uint8Array.of(1, 2, 3));
        expect(toHex(ct)).toBe(toHex(b.encrypt(Uint8Array.of(1, 2, 3))));
        const rx = new CipherState(suite, cipher, key);
        const asBuffer = Buffer.from(ct);
        expect([...rx.decrypt(asBuffer)]).toEqual([1, 2, 3]);
        expect(toHex(asBuffer)).toBe(toHex(ct)); // decrypt() never works in the caller's bytes
      });

      it('encryptOwned / decryptOwned (in place where the suite can) give exactly the bytes encrypt / decrypt give', () => {
        const [a, b] = pair(suite, cipher);
        const rxOwned = new CipherState(suite, cipher, key);
        const rx = new CipherState(suite, cipher, key);
        for (const cuts of [[0], [1], [30, 0, 64_000], [5, 16_384], [100, 200, 300]]) {
          const pieces = cuts.map((n, k) => Uint8Array.from({ length: n }, (_, i) => (i * 13 + k) & 0xff));
          const plain = concatBytes(...pieces);
          const ad = cuts.length % 2 === 0 ? Uint8Array.of(1, 2, 3) : new Uint8Array(0);
          const whole = b.encrypt(plain, ad);
          // owned pieces as views at odd offsets inside a larger buffer (what socket reads look like)
          const host = new Uint8Array(plain.length + 7);
          host.set(plain, 3);
          let at = 3;
          const owned = pieces.map((p) => host.subarray(at, (at += p.length)));
          const ct = concatBytes(...a.encryptOwned(owned, ad));
          expect(toHex(ct)).toBe(toHex(whole));
          expect(host[0]).toBe(0); // nothing outside the views was touched
          const frame = new Uint8Array(ct.length + 5);
          frame.set(ct, 2);
          const view = frame.subarray(2, 2 + ct.length);
          expect(toHex(rxOwned.decryptOwned(view, ad))).toBe(toHex(plain));
          expect(toHex(rx.decrypt(whole, ad))).toBe(toHex(plain));
        }
        const bad = a.encrypt(Uint8Array.of(1, 2, 3));
        bad[0]! ^= 1;
        expect(code(() => rxOwned.decryptOwned(bad))).toBe('NOISE_DECRYPT_FAILED');
        expect(rxOwned.nonce).toBe(5n); // a failure does not advance the nonce
      });

      it('encryptParts yields exactly the bytes encrypt would, advances the nonce once and enforces the same limits', () => {
        const [a, b] = pair(suite, cipher);
        const rx = new CipherState(suite, cipher, key);
        for (const len of [0, 1, 100, 16 * 1024, 65519]) {
          const pt = Uint8Array.from({ length: len }, (_, i) => (i * 7 + len) & 0xff);
          const ad = len % 2 === 0 ? new Uint8Array(0) : Uint8Array.of(9, 9);
          const parts = a.encryptParts(pt, ad);
          const whole = b.encrypt(pt, ad);
          const joined = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
          parts.reduce((off, p) => (joined.set(p, off), off + p.length), 0);
          expect(toHex(joined)).toBe(toHex(whole));
          for (const p of parts) expect(Object.getPrototypeOf(p)).toBe(Uint8Array.prototype);
          expect(equalBytes(rx.decrypt(joined, ad), pt)).toBe(true);
          expect(a.nonce).toBe(b.nonce);
        }
        // a plaintext in parts (empty parts included) encrypts as its concatenation
        for (const cuts of [[0], [0, 0], [3, 0, 5], [1, 1, 1], [30, 64_000], [65_000, 503]]) {
          const pieces = cuts.map((n, k) => Uint8Array.from({ length: n }, (_, i) => (i * 11 + k) & 0xff));
          const whole = b.encrypt(concatBytes(...pieces));
          const parts = a.encryptParts(pieces);
          expect(toHex(concatBytes(...parts))).toBe(toHex(whole));
          expect(equalBytes(rx.decrypt(whole), concatBytes(...pieces))).toBe(true);
        }
        expect(code(() => a.encryptParts([new Uint8Array(65_000), new Uint8Array(520)]))).toBe('NOISE_MESSAGE_TOO_LARGE');
        expect(code(() => a.encryptParts(new Uint8Array(65520)))).toBe('NOISE_MESSAGE_TOO_LARGE');
        const spent = new CipherState(suite, cipher, key, MAX_NONCE);
        expect(code(() => spent.encryptParts(Uint8Array.of(1)))).toBe('NOISE_NONCE_EXHAUSTED');
        expect(a.nonce).toBe(11n);
      });

      it('returns plain Uint8Arrays that the caller owns', () => {
        const [tx, rx] = pair(suite, cipher);
        const ct = tx.encrypt(Uint8Array.of(1, 2));
        const pt = rx.decrypt(ct);
        expect(Object.getPrototypeOf(ct)).toBe(Uint8Array.prototype);
        expect(Object.getPrototypeOf(pt)).toBe(Uint8Array.prototype);
      });
    });
  }
}

describe('CipherState construction', () => {
  it('refuses a key that is not 32 bytes and an initial nonce outside 0..2^64−1', () => {
    expect(code(() => new CipherState(nodePrimitives, 'ChaChaPoly', new Uint8Array(31)))).toBe('NOISE_BAD_KEY');
    expect(code(() => new CipherState(nodePrimitives, 'ChaChaPoly', key, MAX_NONCE + 1n))).toBe('NOISE_BAD_STATE');
    expect(code(() => new CipherState(nodePrimitives, 'ChaChaPoly', key, -1n))).toBe('NOISE_BAD_STATE');
    expect(code(() => new CipherState(nodePrimitives, 'AES' as CipherName, key))).toBe('NOISE_UNSUPPORTED_PROTOCOL');
  });

  it('keeps its own copy of the key', () => {
    const k = key.slice();
    const tx = new CipherState(nodePrimitives, 'ChaChaPoly', k);
    const rx = new CipherState(noblePrimitives, 'ChaChaPoly', key);
    k.fill(0);
    expect(Array.from(rx.decrypt(tx.encrypt(Uint8Array.of(4))))).toEqual([4]);
  });
});

describe('the node and noble suites agree (oracle)', () => {
  it('on AEAD output for random keys, nonces, AD and plaintexts', () => {
    fc.assert(
      fc.property(
        fc.constantFrom<CipherName>('ChaChaPoly', 'AESGCM'),
        fc.uint8Array({ minLength: 32, maxLength: 32 }),
        fc.bigInt({ min: 0n, max: MAX_NONCE - 1n }),
        fc.uint8Array({ maxLength: 64 }),
        fc.uint8Array({ maxLength: 300 }),
        (cipher, k, n, ad, pt) => {
          const a = nodePrimitives.encrypt(cipher, k, n, ad, pt);
          expect(toHex(a)).toBe(toHex(noblePrimitives.encrypt(cipher, k, n, ad, pt)));
          expect(toHex(noblePrimitives.decrypt(cipher, k, n, ad, a))).toBe(toHex(pt));
          expect(toHex(nodePrimitives.decrypt(cipher, k, n, ad, a))).toBe(toHex(pt));
        },
      ),
      { numRuns: 200 },
    );
  });

  it('on hashes, HMACs and X25519', () => {
    fc.assert(
      fc.property(
        fc.constantFrom('BLAKE2s', 'BLAKE2b', 'SHA256', 'SHA512' as const),
        fc.uint8Array({ maxLength: 200 }),
        fc.uint8Array({ maxLength: 200 }),
        fc.uint8Array({ minLength: 32, maxLength: 32 }),
        fc.uint8Array({ minLength: 32, maxLength: 32 }),
        (hash, k, data, a, b) => {
          expect(toHex(nodePrimitives.hash(hash, data))).toBe(toHex(noblePrimitives.hash(hash, data)));
          expect(toHex(nodePrimitives.hmac(hash, k, data))).toBe(toHex(noblePrimitives.hmac(hash, k, data)));
          const pubB = noblePrimitives.x25519PublicKey(b);
          expect(toHex(nodePrimitives.x25519PublicKey(b))).toBe(toHex(pubB));
          expect(toHex(nodePrimitives.x25519(a, pubB))).toBe(toHex(noblePrimitives.x25519(a, pubB)));
        },
      ),
      { numRuns: 100 },
    );
  });
});

// The vitest project "no-addon" runs this folder with the addon path pointing nowhere: prove the fallback is what ran.
it.runIf(process.env.ENCLAVE_AGENT_NATIVE_ADDON === '/nonexistent/enclave_native.node')('runs on node:crypto when the addon is missing', () => {
  expect(nativeAead()).toBeNull();
});
