// Noise: full NN handshakes per second and transport encrypt+decrypt throughput, for the node
// (node:crypto) and noble (pure JS) suites, each next to a raw baseline measured in the same run:
// raw X25519 (2 keygens + 2 DH = the key work of one NN handshake, both sides) and raw node:crypto
// ChaCha20-Poly1305 (createCipheriv/createDecipheriv, Buffer key, no framing).
import { createCipheriv, createDecipheriv, diffieHellman, generateKeyPairSync, randomBytes } from 'node:crypto';
import { x25519 as nobleX25519 } from '@noble/curves/ed25519.js';
import { CipherState, createHandshake, type NoisePrimitives } from '../../src/noise/index.ts';
import { noblePrimitives } from '../../src/noise/suite-noble.ts';
import { nativeAead, type NativeAead, type NativeAeadCipher } from '../../src/noise/native-aead.ts';
import { nodePrimitives } from '../../src/noise/suite-node.ts';
import { measure, printTable, ratio } from './lib.ts';

// The machine is shared: each pair (baseline, candidate) is measured in alternating short windows
// and the best window of each is kept, so a burst of load elsewhere hits both sides alike.
const WINDOW_MS = 250;
const ROUNDS = 3;
const TARGET_64K = 0.6;
const SIZES: [string, number][] = [
  ['1 KiB', 1024],
  ['16 KiB', 16384],
  ['64 KiB (65519 B)', 65519],
];

function fullHandshake(p: NoisePrimitives): void {
  const init = createHandshake({ role: 'initiator', primitives: p });
  const resp = createHandshake({ role: 'responder', primitives: p });
  resp.readMessage(init.writeMessage());
  init.readMessage(resp.writeMessage());
  init.split();
  resp.split();
}

function rawNodeX25519(): void {
  const a = generateKeyPairSync('x25519');
  const b = generateKeyPairSync('x25519');
  diffieHellman({ privateKey: a.privateKey, publicKey: b.publicKey });
  diffieHellman({ privateKey: b.privateKey, publicKey: a.publicKey });
}

function rawNobleX25519(): void {
  const a = nobleX25519.utils.randomSecretKey();
  const b = nobleX25519.utils.randomSecretKey();
  const pa = nobleX25519.getPublicKey(a);
  const pb = nobleX25519.getPublicKey(b);
  nobleX25519.getSharedSecret(a, pb);
  nobleX25519.getSharedSecret(b, pa);
}

function rawChaChaRoundTrip(key: Buffer, plaintext: Buffer): () => void {
  const nonce = Buffer.alloc(12);
  let n = 0;
  return () => {
    nonce.writeUInt32LE(n++, 4);
    const c = createCipheriv('chacha20-poly1305', key, nonce, { authTagLength: 16 });
    const ct = c.update(plaintext);
    c.final();
    const tag = c.getAuthTag();
    const d = createDecipheriv('chacha20-poly1305', key, nonce, { authTagLength: 16 });
    d.setAuthTag(tag);
    d.update(ct);
    d.final();
  };
}

/** node:crypto seal + open of one message, a fresh Cipher/Decipher per message (what suite-node does today). */
function rawAeadRoundTrip(cipher: NativeAeadCipher, key: Buffer, plaintext: Buffer): () => void {
  const nonce = Buffer.alloc(12);
  let n = 0;
  return () => {
    nonce.writeUInt32LE(n++, 4);
    const c = createCipheriv(cipher as 'aes-256-gcm', key, nonce, { authTagLength: 16 });
    const ct = c.update(plaintext);
    c.final();
    const tag = c.getAuthTag();
    const d = createDecipheriv(cipher as 'aes-256-gcm', key, nonce, { authTagLength: 16 });
    d.setAuthTag(tag);
    d.update(ct);
    d.final();
  };
}

/** The addon's in-place seal + open of one message in one buffer (ciphertext ‖ tag), one context per direction. */
function nativeAeadRoundTrip(a: NativeAead, cipher: NativeAeadCipher, key: Buffer, plaintext: Buffer): () => void {
  const tx = a.aeadNew(cipher, key);
  const rx = a.aeadNew(cipher, key);
  const nonce = Buffer.alloc(12);
  const ad = new Uint8Array(0);
  const buf = Buffer.alloc(plaintext.length + 16);
  plaintext.copy(buf);
  const body = buf.subarray(0, plaintext.length);
  const tag = buf.subarray(plaintext.length);
  const parts = [body];
  let n = 0;
  return () => {
    nonce.writeUInt32LE(n++, 4);
    a.aeadSeal(tx, nonce, ad, parts, tag);
    if (!a.aeadOpen(rx, nonce, ad, buf)) throw new Error('native open failed');
  };
}

function noiseRoundTrip(p: NoisePrimitives, key: Uint8Array, plaintext: Uint8Array): () => void {
  const tx = new CipherState(p, 'ChaChaPoly', key);
  const rx = new CipherState(p, 'ChaChaPoly', key);
  return () => {
    rx.decrypt(tx.encrypt(plaintext));
  };
}

/** Best ops/s of each function over alternating windows. */
async function bestOf(fns: (() => unknown)[], windowMs = WINDOW_MS): Promise<number[]> {
  const best = fns.map(() => 0);
  for (let r = 0; r < ROUNDS; r++) {
    for (let i = 0; i < fns.length; i++) {
      const m = await measure(fns[i]!, { minMs: windowMs, warmupMs: r === 0 ? 100 : 20 });
      best[i] = Math.max(best[i]!, m.opsPerSec);
    }
  }
  return best;
}

export default async function bench(): Promise<void> {
  const hsRows: (string | number)[][] = [['suite (Noise_NN_25519_ChaChaPoly_BLAKE2s)', 'handshakes/s', 'raw X25519 baseline /s', 'ratio']];
  const [rawNode, node] = (await bestOf([rawNodeX25519, () => fullHandshake(nodePrimitives)])) as [number, number];
  hsRows.push(['node (vs node:crypto X25519, KeyObjects)', node, rawNode, ratio(node, rawNode)]);
  const [rawNoble, noble] = (await bestOf([rawNobleX25519, () => fullHandshake(noblePrimitives)], WINDOW_MS / 2)) as [number, number];
  hsRows.push(['noble (vs @noble/curves X25519)', noble, rawNoble, ratio(noble, rawNoble)]);
  hsRows.push(['noble vs raw node:crypto X25519', noble, rawNode, ratio(noble, rawNode)]);
  printTable('Noise NN handshakes, both sides in-process (raw = 2 keygens + 2 DH)', hsRows);

  const rows: (string | number)[][] = [['transport encrypt+decrypt, ChaChaPoly', 'MB/s', 'raw node:crypto MB/s', 'ratio']];
  const key = randomBytes(32);
  for (const [label, size] of SIZES) {
    const pt = randomBytes(size);
    const mbps = (ops: number) => (ops * size) / 1e6;
    const [raw, ours] = (await bestOf([rawChaChaRoundTrip(key, pt), noiseRoundTrip(nodePrimitives, key, pt)])) as [number, number];
    const [nob] = (await bestOf([noiseRoundTrip(noblePrimitives, key, pt)], WINDOW_MS / 2)) as [number];
    const target = size === 65519 ? TARGET_64K : undefined;
    rows.push([`node  ${label}`, mbps(ours), mbps(raw), ratio(ours, raw, target)]);
    rows.push([`noble ${label}`, mbps(nob), mbps(raw), ratio(nob, raw)]);
  }
  printTable('Noise transport (CipherState pair, one Noise message per op)', rows);

  const a = nativeAead();
  if (a === null) {
    console.log('\n(native in-place AEAD: addon unavailable, rows skipped)');
    return;
  }
  const aeadRows: (string | number)[][] = [
    ['seal+open one message', 'native MB/s', 'native ns/msg', 'node:crypto MB/s', 'node:crypto ns/msg', 'ratio'],
  ];
  for (const cipher of ['chacha20-poly1305', 'aes-256-gcm'] as const) {
    for (const [label, size] of [['16 KiB', 16384], ['64 KiB (65519 B)', 65519]] as [string, number][]) {
      const pt = randomBytes(size);
      const [raw, nat] = (await bestOf([rawAeadRoundTrip(cipher, key, pt), nativeAeadRoundTrip(a, cipher, key, pt)])) as [number, number];
      aeadRows.push([`${cipher} ${label}`, (nat * size) / 1e6, 1e9 / nat, (raw * size) / 1e6, 1e9 / raw, ratio(nat, raw)]);
    }
  }
  printTable('AEAD: native in-place (one EVP context per key) vs node:crypto createCipheriv/createDecipheriv per message', aeadRows);
}
