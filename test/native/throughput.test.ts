// 1 GiB through one native connection in each direction at once, checked by a running SHA-256 on both ends.
import { createHash, randomBytes } from 'node:crypto';
import { afterAll, expect, it } from 'vitest';
import type { Duplex } from 'node:stream';
import type { NativeStream } from '../../src/transport/native-stream.ts';
import { loadNative, nativeStats } from '../../src/transport/native.ts';
import { connectUnixNative, listenUnixNative } from '../../src/transport/unix-native.ts';
import { available, closed, tempDir } from './helpers.ts';

const tmp = tempDir();
afterAll(() => tmp.cleanup());

const GiB = 1 << 30;
const CHUNK = 1 << 20;

/** Writes `total` bytes of varying data (windows of a random pool) with backpressure, then end(); returns the hash. */
function send(s: Duplex, total: number, pool: Buffer): Promise<string> {
  const h = createHash('sha256');
  let sent = 0;
  let i = 0;
  return new Promise((resolve, reject) => {
    s.once('error', reject);
    const pump = (): void => {
      while (sent < total) {
        const off = (i++ * 4099) % (pool.length - CHUNK);
        const chunk = pool.subarray(off, off + Math.min(CHUNK, total - sent));
        h.update(chunk);
        sent += chunk.length;
        if (!s.write(chunk)) {
          s.once('drain', pump);
          return;
        }
      }
      s.end(() => resolve(h.digest('hex')));
    };
    pump();
  });
}

function receive(s: Duplex): Promise<{ hash: string; bytes: number }> {
  const h = createHash('sha256');
  let bytes = 0;
  return new Promise((resolve, reject) => {
    s.on('data', (d: Buffer) => {
      h.update(d);
      bytes += d.length;
    });
    s.once('end', () => resolve({ hash: h.digest('hex'), bytes }));
    s.once('error', reject);
  });
}

it.skipIf(!available)('carries 1 GiB each way through one connection at once, byte-exact, every write() ≤ 32768', async () => {
  const pool = randomBytes(4 * CHUNK);
  let accept!: (s: NativeStream) => void;
  const accepted = new Promise<NativeStream>((r) => (accept = r));
  const listener = await listenUnixNative(tmp.sock(), { onConnection: (s) => accept(s as NativeStream) });
  const client = await connectUnixNative(listener.address);
  const conn = await accepted;
  loadNative().resetStats();
  const t0 = performance.now();
  const [sentUp, sentDown, gotUp, gotDown] = await Promise.all([send(client, GiB, pool), send(conn, GiB, randomBytes(4 * CHUNK)), receive(conn), receive(client)]);
  const seconds = (performance.now() - t0) / 1000;
  expect(gotUp.bytes).toBe(GiB);
  expect(gotDown.bytes).toBe(GiB);
  expect(gotUp.hash).toBe(sentUp);
  expect(gotDown.hash).toBe(sentDown);
  const stats = nativeStats();
  expect(stats.maxWrite).toBeLessThanOrEqual(32768);
  expect(stats.bytesWritten).toBe(2 * GiB);
  expect(stats.bytesRead).toBe(2 * GiB);
  console.log(`native AF_UNIX: 2 × 1 GiB in ${seconds.toFixed(1)} s (${((2 * GiB) / seconds / 2 ** 20).toFixed(0)} MiB/s total), ${stats.writes} writes, max ${stats.maxWrite} B`);
  await Promise.all([closed(client), closed(conn)]);
  await listener.close();
}, 120_000);
