// A decrypt pool worker's cache of key agreements (Z and the KDF keys, ecdh-cache.ts) is zeroed however the worker
// ends: the pool's close, a terminate, a crash. Before, the main thread's cache was zeroed on eviction and close
// but a worker's was freed with its thread, unzeroed. The worker now keeps those secrets in an arena the pool
// shares (seen here through the workerData the pool hands spawnModuleWorker) and zeroes it when the thread exits.
import type { Worker, WorkerOptions } from 'node:worker_threads';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { DecryptPool, type DecryptWorkerData } from '../../src/crypto/decrypt-pool.ts';
import { decryptToken, encryptValue, parseEv } from '../../src/crypto/ev-format.ts';
import { decompressPoint, deriveEvKey } from '../../src/crypto/ev-kdf.ts';
import type * as ModuleWorker from '../../src/crypto/module-worker.ts';
import { watchedKeyring } from './watched-keyring.ts';

const spawned = vi.hoisted(() => [] as { worker: Worker; data: DecryptWorkerData }[]);

vi.mock('../../src/crypto/module-worker.ts', async (importOriginal) => {
  const real = await importOriginal<typeof ModuleWorker>();
  return {
    ...real,
    spawnModuleWorker: (base: string, name: string, options: WorkerOptions = {}): Worker => {
      const worker = real.spawnModuleWorker(base, name, options);
      spawned.push({ worker, data: options.workerData as DecryptWorkerData });
      return worker;
    },
  };
});

const zeroed = (b: Uint8Array): boolean => b.every((x) => x === 0);

/** A pool of one worker that has decrypted one P-256 value; its arena, and the Z and KDF key it cached. */
async function usedPool(): Promise<{ pool: DecryptPool; worker: Worker; arena: Buffer; z: Buffer; kdf: Buffer }> {
  const { keyring, agreed } = watchedKeyring();
  const token = encryptValue('card', keyring.publicKeys());
  expect(decryptToken(token, keyring)).toBe('card'); // the same agreement on this thread: the bytes to look for
  const z = Buffer.from(agreed[0]!);
  const kdf = deriveEvKey('p256', z, decompressPoint('p256', parseEv(token).ephemeralPublicKey));
  const pool = new DecryptPool(keyring, { size: 1 });
  spawned.length = 0;
  expect((await pool.decryptJson(JSON.stringify([token]))).json).toBe('["card"]');
  expect(spawned).toHaveLength(1);
  const { worker, data } = spawned[0]!;
  expect(data.ecdhArena).toBeInstanceOf(SharedArrayBuffer);
  const arena = Buffer.from(data.ecdhArena);
  expect(arena.indexOf(z)).toBeGreaterThanOrEqual(0); // the worker's cached Z is in the arena...
  expect(arena.indexOf(kdf)).toBeGreaterThanOrEqual(0); // ...and so is the key derived from it
  return { pool, worker, arena, z, kdf };
}

const pools: DecryptPool[] = [];
afterEach(async () => {
  await Promise.all(pools.splice(0).map((p) => p.close()));
});

describe('a decrypt pool worker\'s ECDH cache', () => {
  it('is zeroed when the pool closes', async () => {
    const { pool, arena } = await usedPool();
    await pool.close();
    expect(zeroed(arena)).toBe(true);
  });

  it('is zeroed when the worker is terminated, and the pool starts another that decrypts', async () => {
    const { pool, worker, arena } = await usedPool();
    pools.push(pool);
    await worker.terminate();
    expect(zeroed(arena)).toBe(true);
    const token = encryptValue(7, pool.keyring.publicKeys());
    expect((await pool.decryptJson(JSON.stringify([token]))).json).toBe('[7]');
  });

  it('is zeroed when the worker dies of an error', async () => {
    const { pool, worker, arena } = await usedPool();
    pools.push(pool);
    const exited = new Promise((resolve) => worker.once('exit', resolve)); // not events.once: it rejects on 'error'
    worker.postMessage({ withhold: 5 }); // not iterable: the worker's handler throws outside its try, uncaught
    await exited;
    expect(zeroed(arena)).toBe(true);
  });
});
