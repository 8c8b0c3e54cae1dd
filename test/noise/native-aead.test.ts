// native/src/aead.c through src/noise/native-aead.ts: in-place ChaCha20-Poly1305 / AES-256-GCM byte-identical to
// node:crypto, authentication failures that leave no plaintext behind, argument checks in C, context lifetime.
import { spawnSync } from 'node:child_process';
import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { nativeAead, type NativeAead, type NativeAeadCipher, type NativeAeadContext } from '../../src/noise/native-aead.ts';
import { addonPath, nativeAvailable } from '../../src/transport/native.ts';

const available = nativeAead() !== null;
const aead = (): NativeAead => nativeAead()!;
const CIPHERS: NativeAeadCipher[] = ['chacha20-poly1305', 'aes-256-gcm'];
const LENGTHS = [0, 1, 15, 16, 17, 63, 64, 65, 1000, 16384, 65519];

function ref(cipher: NativeAeadCipher, key: Uint8Array, nonce: Uint8Array, ad: Uint8Array, pt: Uint8Array): { ct: Buffer; tag: Buffer } {
  // (typed as GCM: @types/node has one overload per AEAD family; both take the same options here)
  const c = createCipheriv(cipher as 'aes-256-gcm', key, nonce, { authTagLength: 16 });
  c.setAAD(ad);
  const ct = Buffer.concat([c.update(pt), c.final()]);
  return { ct, tag: c.getAuthTag() };
}

function refOpen(cipher: NativeAeadCipher, key: Uint8Array, nonce: Uint8Array, ad: Uint8Array, ct: Uint8Array, tag: Uint8Array): Buffer {
  const d = createDecipheriv(cipher as 'aes-256-gcm', key, nonce, { authTagLength: 16 });
  d.setAAD(ad);
  d.setAuthTag(tag);
  return Buffer.concat([d.update(ct), d.final()]);
}

/** The Noise nonce: 4 zero bytes ‖ u64 counter (LE for ChaChaPoly, BE for AESGCM). */
function noiseNonce(cipher: NativeAeadCipher, n: number): Uint8Array {
  const b = Buffer.alloc(12);
  if (cipher === 'chacha20-poly1305') b.writeBigUInt64LE(BigInt(n), 4);
  else b.writeBigUInt64BE(BigInt(n), 4);
  return b;
}

/** Split points of a message of `len` bytes, including empty parts. */
function splits(len: number): number[][] {
  const out: number[][] = [[len], [0, len], [len, 0], [0, 0, len, 0]];
  if (len >= 2) out.push([1, len - 1], [len - 1, 1], [Math.floor(len / 3), 0, Math.floor(len / 3), len - 2 * Math.floor(len / 3)]);
  if (len >= 32) out.push([15, 1, 16, 0, len - 32]);
  if (len > 0 && len <= 65) out.push(Array.from({ length: len }, () => 1));
  if (len === 0) out.push([]);
  return out;
}

/** `bytes` copied into a larger buffer at an odd offset, with guard bytes around it. */
function placed(bytes: Uint8Array, offset = 3): { view: Uint8Array; backing: Uint8Array; guardsIntact: () => boolean } {
  const backing = new Uint8Array(bytes.length + offset + 5).fill(0xa5);
  backing.set(bytes, offset);
  const view = backing.subarray(offset, offset + bytes.length);
  const guardsIntact = () => backing.subarray(0, offset).every((x) => x === 0xa5) && backing.subarray(offset + bytes.length).every((x) => x === 0xa5);
  return { view, backing, guardsIntact };
}

function thrown(fn: () => unknown): { name: string; code: unknown; message: string } {
  try {
    fn();
  } catch (err) {
    const e = err as Error & { code?: unknown };
    return { name: e.name, code: e.code, message: e.message };
  }
  throw new Error('expected a throw');
}

it('is available whenever the addon is (it is built here and in CI)', () => {
  expect(available).toBe(nativeAvailable());
});

// ENCLAVE_AGENT_REQUIRE_ADDON=1 (CI): run, and fail, rather than skip when the addon is missing
describe.skipIf(!available && process.env.ENCLAVE_AGENT_REQUIRE_ADDON !== '1')('native in-place AEAD', () => {
  for (const cipher of CIPHERS) {
    it(`${cipher}: seal in place over any split into views equals node:crypto, and open restores the plaintext`, () => {
      const a = aead();
      const key = randomBytes(32);
      const ctx = a.aeadNew(cipher, key);
      let counter = 0;
      for (const len of LENGTHS) {
        const pt = randomBytes(len);
        for (const ad of [new Uint8Array(0), randomBytes(len % 50 === 0 ? 32 : 7)]) {
          for (const split of splits(len)) {
            const nonce = noiseNonce(cipher, counter++);
            const want = ref(cipher, key, nonce, ad, pt);
            let at = 0;
            const parts = split.map((n, i) => {
              const p = placed(pt.subarray(at, at + n), 1 + (i % 4));
              at += n;
              return p;
            });
            const tag = placed(new Uint8Array(16), 5);
            const adv = placed(ad, 7);
            a.aeadSeal(ctx, placed(nonce).view, adv.view, parts.map((p) => p.view), tag.view);
            expect(Buffer.concat(parts.map((p) => p.view)).equals(want.ct), `${len} B split ${split.join('+')}`).toBe(true);
            expect(Buffer.from(tag.view).equals(want.tag)).toBe(true);
            expect(parts.every((p) => p.guardsIntact()) && tag.guardsIntact() && adv.guardsIntact()).toBe(true);

            const data = placed(Buffer.concat([want.ct, want.tag]), 1 + (len % 7));
            expect(a.aeadOpen(ctx, nonce, ad, data.view)).toBe(true);
            expect(Buffer.from(data.view.subarray(0, len)).equals(pt)).toBe(true);
            expect(Buffer.from(data.view.subarray(len)).equals(want.tag)).toBe(true);
            expect(data.guardsIntact()).toBe(true);
          }
        }
      }
    });

    it(`${cipher}: an empty parts array seals the empty message`, () => {
      const a = aead();
      const key = randomBytes(32);
      const nonce = noiseNonce(cipher, 9);
      const ad = randomBytes(32);
      const tag = new Uint8Array(16);
      a.aeadSeal(a.aeadNew(cipher, key), nonce, ad, [], tag);
      expect(Buffer.from(tag).equals(ref(cipher, key, nonce, ad, new Uint8Array(0)).tag)).toBe(true);
    });

    it(`${cipher}: a message of 1 MiB is not capped`, () => {
      const a = aead();
      const key = randomBytes(32);
      const nonce = noiseNonce(cipher, 1);
      const pt = randomBytes(1 << 20);
      const buf = Buffer.from(pt);
      const tag = new Uint8Array(16);
      const ctx = a.aeadNew(cipher, key);
      a.aeadSeal(ctx, nonce, new Uint8Array(0), [buf], tag);
      const want = ref(cipher, key, nonce, new Uint8Array(0), pt);
      expect(buf.equals(want.ct) && Buffer.from(tag).equals(want.tag)).toBe(true);
      const data = Buffer.concat([buf, tag]);
      expect(a.aeadOpen(ctx, nonce, new Uint8Array(0), data)).toBe(true);
      expect(data.subarray(0, pt.length).equals(pt)).toBe(true);
    });

    it(`${cipher}: open of a tampered body, tag, AD or nonce returns false and zeroes the body`, () => {
      const a = aead();
      const key = randomBytes(32);
      const ctx = a.aeadNew(cipher, key);
      for (const len of [0, 1, 16, 17, 1000, 65519]) {
        const pt = randomBytes(len);
        const ad = randomBytes(12);
        const nonce = noiseNonce(cipher, len);
        const { ct, tag } = ref(cipher, key, nonce, ad, pt);
        const cases: { what: string; data: Buffer; ad: Uint8Array; nonce: Uint8Array }[] = [];
        if (len > 0) {
          const body = Buffer.concat([ct, tag]);
          body[len >> 1]! ^= 0x01;
          cases.push({ what: 'body', data: body, ad, nonce });
        }
        const badTag = Buffer.concat([ct, tag]);
        badTag[len + 15]! ^= 0x80;
        cases.push({ what: 'tag', data: badTag, ad, nonce });
        const badAd = Buffer.from(ad);
        badAd[0]! ^= 1;
        cases.push({ what: 'ad', data: Buffer.concat([ct, tag]), ad: badAd, nonce });
        cases.push({ what: 'empty ad', data: Buffer.concat([ct, tag]), ad: new Uint8Array(0), nonce });
        cases.push({ what: 'nonce', data: Buffer.concat([ct, tag]), ad, nonce: noiseNonce(cipher, len + 1) });
        for (const c of cases) {
          const tagBefore = Buffer.from(c.data.subarray(len));
          expect(a.aeadOpen(ctx, c.nonce, c.ad, c.data), `${len} B, ${c.what}`).toBe(false);
          expect(c.data.subarray(0, len).every((x) => x === 0), `${len} B, ${c.what}: body zeroed`).toBe(true);
          expect(c.data.subarray(len).equals(tagBefore)).toBe(true);
        }
        // the context still works after failures
        const good = Buffer.concat([ct, tag]);
        expect(a.aeadOpen(ctx, nonce, ad, good)).toBe(true);
        expect(good.subarray(0, len).equals(pt)).toBe(true);
      }
    });

    it(`${cipher}: one context sealing and opening 10,000 messages with increasing nonces matches node:crypto throughout`, () => {
      const a = aead();
      const key = randomBytes(32);
      const tx = a.aeadNew(cipher, key);
      const rx = a.aeadNew(cipher, key);
      const tag = new Uint8Array(16);
      const ad = new Uint8Array(0);
      let mismatches = 0;
      for (let n = 0; n < 10_000; n++) {
        const len = (n * 37) % 300;
        const pt = randomBytes(len);
        const nonce = noiseNonce(cipher, n);
        const buf = Buffer.from(pt);
        a.aeadSeal(tx, nonce, ad, [buf], tag);
        if (n % 100 === 0 || n > 9_990) {
          const want = ref(cipher, key, nonce, ad, pt);
          if (!buf.equals(want.ct) || !Buffer.from(tag).equals(want.tag)) mismatches++;
          if (!refOpen(cipher, key, nonce, ad, buf, tag).equals(pt)) mismatches++;
        }
        // the same context switched to decrypting and back, every other message
        const data = Buffer.concat([buf, tag]);
        if (!a.aeadOpen(n % 2 === 0 ? rx : tx, nonce, ad, data) || !data.subarray(0, len).equals(pt)) mismatches++;
      }
      expect(mismatches).toBe(0);
    });
  }

  it('ChaChaPoly and AESGCM contexts with the same key differ, and each matches its own cipher', () => {
    const a = aead();
    const key = randomBytes(32);
    const nonce = new Uint8Array(12);
    const out: Buffer[] = [];
    for (const cipher of CIPHERS) {
      const buf = Buffer.from('the same plaintext');
      const tag = new Uint8Array(16);
      a.aeadSeal(a.aeadNew(cipher, key), nonce, new Uint8Array(0), [buf], tag);
      out.push(Buffer.concat([buf, tag]));
    }
    expect(out[0]!.equals(out[1]!)).toBe(false);
  });

  it('keeps each context to its own key when many of both ciphers are used interleaved (one OpenSSL context per cipher is shared)', () => {
    const a = aead();
    const ctxs = Array.from({ length: 8 }, (_, i) => ({ cipher: CIPHERS[i % 2]!, key: new Uint8Array(randomBytes(32)) })).map((c) => ({ ...c, ctx: a.aeadNew(c.cipher, c.key) }));
    const sealed: { i: number; n: number; pt: Buffer; ct: Uint8Array }[] = [];
    for (let n = 0; n < 3; n++) {
      for (const [i, c] of ctxs.entries()) {
        const pt = randomBytes(100 + i);
        const data = new Uint8Array(pt.length + 16);
        data.set(pt);
        a.aeadSeal(c.ctx, noiseNonce(c.cipher, n), Buffer.from([i]), [data.subarray(0, pt.length)], data.subarray(pt.length));
        const want = ref(c.cipher, c.key, noiseNonce(c.cipher, n), Buffer.from([i]), pt);
        expect(Buffer.from(data)).toEqual(Buffer.concat([want.ct, want.tag]));
        sealed.push({ i, n, pt, ct: data });
      }
    }
    // Opened in another order, each by its own context (and refused by a neighbour's), after other seals ran.
    for (const { i, n, pt, ct } of sealed.reverse()) {
      const c = ctxs[i]!;
      const other = ctxs[(i + 2) % ctxs.length]!; // same cipher, another key
      expect(a.aeadOpen(other.ctx, noiseNonce(c.cipher, n), Buffer.from([i]), new Uint8Array(ct))).toBe(false);
      const copy = new Uint8Array(ct);
      expect(a.aeadOpen(c.ctx, noiseNonce(c.cipher, n), Buffer.from([i]), copy)).toBe(true);
      expect(Buffer.from(copy.subarray(0, pt.length))).toEqual(pt);
    }
  });

  it('matches the RFC 8439 §2.8.2 ChaCha20-Poly1305 test vector', () => {
    const a = aead();
    const key = Buffer.from('808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9f', 'hex');
    const nonce = Buffer.from('070000004041424344454647', 'hex');
    const ad = Buffer.from('50515253c0c1c2c3c4c5c6c7', 'hex');
    const pt = Buffer.from("Ladies and Gentlemen of the class of '99: If I could offer you only one tip for the future, sunscreen would be it.");
    const tag = new Uint8Array(16);
    a.aeadSeal(a.aeadNew('chacha20-poly1305', key), nonce, ad, [pt.subarray(0, 50), pt.subarray(50)], tag);
    expect(pt.subarray(0, 16).toString('hex')).toBe('d31a8d34648e60db7b86afbc53ef7ec2');
    expect(Buffer.from(tag).toString('hex')).toBe('1ae10b594f09e26a7e902ecbd0600691');
  });

  it('refuses bad arguments with typed errors and touches nothing', () => {
    const a = aead();
    const key = randomBytes(32);
    const ctx = a.aeadNew('chacha20-poly1305', key);
    const nonce = new Uint8Array(12);
    const ad = new Uint8Array(0);
    const tag = new Uint8Array(16);
    const call = (fn: () => unknown) => thrown(fn);

    for (const cipher of ['aes-128-gcm', 'CHACHA20-POLY1305', 'chacha20-poly1305\0', '', 'x'.repeat(100)]) {
      expect(call(() => a.aeadNew(cipher as NativeAeadCipher, key))).toMatchObject({ name: 'TypeError', code: 'ERR_INVALID_ARG_VALUE' });
    }
    for (const cipher of [42, undefined, null, {}]) {
      expect(call(() => a.aeadNew(cipher as unknown as NativeAeadCipher, key))).toMatchObject({ name: 'TypeError', code: 'ERR_INVALID_ARG_TYPE' });
    }
    for (const len of [0, 16, 31, 33, 64]) {
      expect(call(() => a.aeadNew('aes-256-gcm', new Uint8Array(len)))).toMatchObject({ name: 'RangeError', code: 'ERR_OUT_OF_RANGE' });
    }
    for (const k of [new Uint16Array(16), new Uint8ClampedArray(32), new ArrayBuffer(32), 'k'.repeat(32), null, [...key]]) {
      expect(call(() => a.aeadNew('aes-256-gcm', k as unknown as Uint8Array))).toMatchObject({ name: 'TypeError', code: 'ERR_INVALID_ARG_TYPE' });
    }
    expect(call(() => (a.aeadNew as unknown as (c: string) => unknown)('aes-256-gcm'))).toMatchObject({ name: 'TypeError' });

    const part = Buffer.from('plaintext that must stay plaintext');
    const copy = Buffer.from(part);
    const seal = (over: Partial<{ ctx: unknown; nonce: unknown; ad: unknown; parts: unknown; tag: unknown }>) => () =>
      a.aeadSeal(
        ('ctx' in over ? over.ctx : ctx) as NativeAeadContext,
        ('nonce' in over ? over.nonce : nonce) as Uint8Array,
        ('ad' in over ? over.ad : ad) as Uint8Array,
        ('parts' in over ? over.parts : [part]) as Uint8Array[],
        ('tag' in over ? over.tag : tag) as Uint8Array,
      );
    for (const n of [11, 13, 0, 24]) expect(call(seal({ nonce: new Uint8Array(n) }))).toMatchObject({ name: 'RangeError', code: 'ERR_OUT_OF_RANGE' });
    for (const n of [15, 17, 0]) expect(call(seal({ tag: new Uint8Array(n) }))).toMatchObject({ name: 'RangeError', code: 'ERR_OUT_OF_RANGE' });
    expect(call(seal({ nonce: new Uint32Array(3) }))).toMatchObject({ name: 'TypeError', code: 'ERR_INVALID_ARG_TYPE' });
    expect(call(seal({ ad: 'ad' }))).toMatchObject({ name: 'TypeError', code: 'ERR_INVALID_ARG_TYPE' });
    for (const parts of [part, 'abc', null, { length: 1, 0: part }]) {
      expect(call(seal({ parts }))).toMatchObject({ name: 'TypeError', code: 'ERR_INVALID_ARG_TYPE' });
    }
    // a bad element after a good one: refused before the good one is touched
    for (const bad of ['abc', 7, null, undefined, new ArrayBuffer(8), new Uint16Array(4), new DataView(new ArrayBuffer(8)), [1, 2]]) {
      expect(call(seal({ parts: [part, bad] }))).toMatchObject({ name: 'TypeError', code: 'ERR_INVALID_ARG_TYPE' });
    }
    for (const bad of [{}, null, 1, part, new (class {})(), Object.create(ctx as object)]) {
      expect(call(seal({ ctx: bad }))).toMatchObject({ name: 'TypeError', code: 'ERR_INVALID_ARG_TYPE' });
      expect(call(() => a.aeadOpen(bad as NativeAeadContext, nonce, ad, new Uint8Array(16)))).toMatchObject({ name: 'TypeError', code: 'ERR_INVALID_ARG_TYPE' });
    }
    expect(call(() => (a.aeadSeal as unknown as (...x: unknown[]) => unknown)(ctx, nonce, ad, [part]))).toMatchObject({ name: 'TypeError' });
    expect(part.equals(copy)).toBe(true);

    for (const n of [0, 1, 15]) {
      expect(call(() => a.aeadOpen(ctx, nonce, ad, new Uint8Array(n)))).toMatchObject({ name: 'RangeError', code: 'ERR_OUT_OF_RANGE' });
    }
    expect(call(() => a.aeadOpen(ctx, new Uint8Array(8), ad, new Uint8Array(32)))).toMatchObject({ name: 'RangeError', code: 'ERR_OUT_OF_RANGE' });
    expect(call(() => a.aeadOpen(ctx, nonce, ad, [1, 2, 3] as unknown as Uint8Array))).toMatchObject({ name: 'TypeError', code: 'ERR_INVALID_ARG_TYPE' });
    // a NativeSocket-like wrapped object of the same addon is not a context (type-tagged)
    expect(call(() => a.aeadFree({} as NativeAeadContext))).toMatchObject({ name: 'TypeError', code: 'ERR_INVALID_ARG_TYPE' });
  });

  it('reads a parts array whose accessor detaches an earlier part without touching freed memory', () => {
    const a = aead();
    const key = randomBytes(32);
    const ctx = a.aeadNew('aes-256-gcm', key);
    const nonce = new Uint8Array(12);
    const first = new Uint8Array(new ArrayBuffer(4096)).fill(1);
    const second = new Uint8Array(100).fill(2);
    const parts: Uint8Array[] = [first];
    Object.defineProperty(parts, 1, {
      enumerable: true,
      get: () => {
        structuredClone(first.buffer, { transfer: [first.buffer] }); // detaches `first`
        return second;
      },
    });
    const tag = new Uint8Array(16);
    a.aeadSeal(ctx, nonce, new Uint8Array(0), parts, tag);
    expect(first.length).toBe(0); // detached: read as empty
    const want = ref('aes-256-gcm', key, nonce, new Uint8Array(0), new Uint8Array(100).fill(2));
    expect(Buffer.from(second).equals(want.ct) && Buffer.from(tag).equals(want.tag)).toBe(true);
  });

  it('seals detached and zero-length views as empty parts', () => {
    const a = aead();
    const key = randomBytes(32);
    const detached = new Uint8Array(new ArrayBuffer(16));
    structuredClone(detached.buffer, { transfer: [detached.buffer] });
    const body = Buffer.from('x'.repeat(40));
    const tag = new Uint8Array(16);
    const nonce = new Uint8Array(12);
    a.aeadSeal(a.aeadNew('chacha20-poly1305', key), nonce, detached, [detached, body.subarray(40), body, new Uint8Array(0)], tag);
    const want = ref('chacha20-poly1305', key, nonce, new Uint8Array(0), Buffer.from('x'.repeat(40)));
    expect(body.equals(want.ct) && Buffer.from(tag).equals(want.tag)).toBe(true);
  });

  it('aeadFree frees a context at once: later use throws ERR_NATIVE_AEAD_FREED, a second free is a no-op', () => {
    const a = aead();
    const before = a.aeadStats();
    const ctx = a.aeadNew('aes-256-gcm', randomBytes(32));
    expect(a.aeadStats().created - before.created).toBe(1);
    a.aeadFree(ctx);
    a.aeadFree(ctx);
    expect(a.aeadStats().freed - before.freed).toBe(1);
    const t = new Uint8Array(16);
    expect(thrown(() => a.aeadSeal(ctx, new Uint8Array(12), new Uint8Array(0), [], t))).toMatchObject({ code: 'ERR_NATIVE_AEAD_FREED' });
    expect(thrown(() => a.aeadOpen(ctx, new Uint8Array(12), new Uint8Array(0), new Uint8Array(16)))).toMatchObject({ code: 'ERR_NATIVE_AEAD_FREED' });
  });

  it.each(CIPHERS)('%s: aeadFree leaves no copy of the key in the process (the shared OpenSSL context included)', (cipher) => {
    // A child scans its own memory for the key (the needle is kept as hex, so it never matches itself). One small
    // buffer, made before the scans and zeroed after each read, in windows overlapping by 32 bytes: reading a
    // range into a fresh 1 MiB buffer that lay in the same range copied the needle into itself (a phantom copy).
    const js = `
      const fs = require('fs'), a = require(process.env.ADDON), key = require('crypto').randomBytes(32), hex = key.toString('hex');
      const W = 4096, win = Buffer.allocUnsafeSlow(W);
      const copies = () => {
        const needle = Buffer.from(hex, 'hex'), fd = fs.openSync('/proc/self/mem', 'r'); let n = -1; // -1: the needle itself
        for (const line of fs.readFileSync('/proc/self/maps', 'utf8').split('\\n')) {
          const m = /^([0-9a-f]+)-([0-9a-f]+) r/.exec(line);
          if (!m || line.includes('[vvar]') || line.includes('[vsyscall]')) continue;
          for (let p = Number('0x' + m[1]), end = Number('0x' + m[2]); p < end; p += W - 32) {
            let got = 0; try { got = fs.readSync(fd, win, 0, Math.min(W, end - p), p); } catch { continue; }
            const seen = win.subarray(0, got);
            for (let at = seen.indexOf(needle); at >= 0 && at < W - 32; at = seen.indexOf(needle, at + 1)) n++;
            win.fill(0);
          }
        }
        fs.closeSync(fd); needle.fill(0); return n;
      };
      const ctx = a.aeadNew(process.env.CIPHER, key); key.fill(0);
      a.aeadSeal(ctx, Buffer.alloc(12), Buffer.alloc(0), [Buffer.from('hello')], Buffer.alloc(16));
      const live = copies(); a.aeadFree(ctx);
      process.stdout.write(JSON.stringify({ live, freed: copies() }));`;
    const r = spawnSync(process.execPath, ['-e', js], { encoding: 'utf8', timeout: 60_000, env: { ...process.env, ADDON: addonPath(), CIPHER: cipher } });
    expect(r.stderr).toBe('');
    const out = JSON.parse(r.stdout) as { live: number; freed: number };
    expect(out.live).toBeGreaterThan(0); // the scan finds the key while the context lives
    expect(out.freed).toBe(0);
  });

  it('frees contexts that are collected: 100,000 dropped contexts, all freed, RSS bounded', () => {
    const child = path.join(path.dirname(fileURLToPath(import.meta.url)), 'native-aead-gc-child.ts');
    const r = spawnSync(process.execPath, ['--expose-gc', '--import', 'tsx', child], { encoding: 'utf8', timeout: 60_000 });
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    const out = JSON.parse(r.stdout.trim()) as { created: number; freed: number; rssGrowthMax: number };
    expect(out.created).toBe(100_000);
    expect(out.freed).toBe(100_000);
    // Each context holds its key and the wrapper's bookkeeping (the OpenSSL context is shared): bounded if freed
    expect(out.rssGrowthMax).toBeLessThan(64 * 2 ** 20);
  });
});
