// The ev: codec caches Z (and the KDF key) per ephemeral key, per keyring: secret material. An entry the bounded
// cache evicts is zeroed, and wipeEcdhCache zeroes a keyring's whole cache (the local API's close and the agent's
// call it); before, an evicted Z stayed in the heap until the collector reused it, and nothing ever wiped the rest.
import { describe, expect, it } from 'vitest';
import { ECDH_CACHE_MAX, EcdhCache, ecdhArenaBytes, wipeEcdhCache, type EcdhCacheEntry } from '../../src/crypto/ecdh-cache.ts';
import { decryptToken, encryptValue } from '../../src/crypto/ev-format.ts';
import { watchedKeyring } from './watched-keyring.ts';

const zeroed = (b: Buffer): boolean => b.every((x) => x === 0);


describe('the ev: codec key-agreement cache', () => {
  it('zeroes the entry it evicts, and every entry on wipe()', () => {
    const cache = new EcdhCache(2);
    const entry = (n: number): EcdhCacheEntry => ({ z: Buffer.alloc(32, n), point: Buffer.alloc(65, 4), kdf: Buffer.alloc(32, n + 100) });
    const [a, b, c] = [entry(1), entry(2), entry(3)];
    cache.set('a', a);
    cache.set('b', b);
    cache.set('c', c);
    expect(cache.get('a')).toBeUndefined();
    expect(zeroed(a.z) && zeroed(a.kdf!)).toBe(true);
    expect(zeroed(a.point)).toBe(false); // public
    expect(zeroed(b.z) || zeroed(c.z)).toBe(false);
    cache.wipe();
    expect(cache.size).toBe(0);
    expect([b.z, b.kdf!, c.z, c.kdf!].every(zeroed)).toBe(true);
  });

  it('with an arena, keeps Z and the KDF key there (the given buffers zeroed), and zeroes a slot before reusing it', () => {
    const shared = new SharedArrayBuffer(ecdhArenaBytes(2));
    const arena = Buffer.from(shared);
    const cache = new EcdhCache(2, shared);
    const given = (n: number): EcdhCacheEntry => ({ z: Buffer.alloc(32, n), point: Buffer.alloc(65, 4) });
    const [a, b] = [given(1), given(2)];
    const [za, zb] = [a.z, b.z];
    cache.set('a', a);
    cache.set('b', b);
    expect(zeroed(za) && zeroed(zb)).toBe(true); // moved, not copied
    expect(arena.indexOf(Buffer.alloc(32, 1))).toBeGreaterThanOrEqual(0);
    const derived = Buffer.alloc(32, 101);
    expect(cache.kdf(a, () => derived)).toEqual(Buffer.alloc(32, 101));
    expect(zeroed(derived)).toBe(true);
    expect(arena.indexOf(Buffer.alloc(32, 101))).toBeGreaterThanOrEqual(0);
    cache.set('c', given(3)); // evicts a: its slot (Z and KDF key) is zeroed, then holds c's Z
    expect(arena.indexOf(Buffer.alloc(32, 1))).toBe(-1);
    expect(arena.indexOf(Buffer.alloc(32, 101))).toBe(-1);
    expect(cache.get('c')!.z).toEqual(Buffer.alloc(32, 3));
    expect(cache.get('b')!.z).toEqual(Buffer.alloc(32, 2));
    cache.wipe();
    expect(zeroed(arena)).toBe(true);
    cache.set('d', given(4)); // usable again after a wipe
    expect(cache.get('d')!.z).toEqual(Buffer.alloc(32, 4));
  });

  it('the codec zeroes the Z it evicts once past the cap of ephemeral keys', { timeout: 60_000 }, () => {
    const { keyring, agreed } = watchedKeyring();
    const pub = keyring.publicKeys();
    expect(decryptToken(encryptValue('first', pub), keyring)).toBe('first');
    const first = agreed[0]!;
    expect(zeroed(first)).toBe(false);
    for (let i = 0; i < ECDH_CACHE_MAX - 1; i++) decryptToken(encryptValue('v', pub), keyring);
    expect(zeroed(first)).toBe(false); // still cached: the cap is not passed
    decryptToken(encryptValue('v', pub), keyring);
    expect(zeroed(first)).toBe(true);
  });

  it('wipeEcdhCache zeroes a keyring\'s cached agreements; values still decrypt after it', () => {
    const { keyring, agreed } = watchedKeyring();
    const token = encryptValue(42, keyring.publicKeys());
    expect(decryptToken(token, keyring)).toBe(42);
    expect(decryptToken(token, keyring)).toBe(42);
    expect(agreed).toHaveLength(1); // the second came from the cache
    wipeEcdhCache(keyring);
    expect(zeroed(agreed[0]!)).toBe(true);
    expect(decryptToken(token, keyring)).toBe(42);
    expect(agreed).toHaveLength(2);
    expect(zeroed(agreed[1]!)).toBe(false);
  });
});
