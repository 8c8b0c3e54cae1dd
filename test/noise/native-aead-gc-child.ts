// Run by native-aead.test.ts with --expose-gc: 100,000 contexts created and dropped are freed by the addon's
// finalizer (aeadStats), and RSS stays bounded while they are.
import { nativeAead } from '../../src/noise/native-aead.ts';

const gc = (globalThis as { gc?: () => void }).gc;
if (gc === undefined) throw new Error('run with --expose-gc');
const aead = nativeAead();
if (aead === null) throw new Error('the addon has no aead part');
const tick = (): Promise<void> => new Promise((r) => setTimeout(r, 10));

const N = 100_000;
const key = new Uint8Array(32).fill(7);
const nonce = new Uint8Array(12);
const tag = new Uint8Array(16);
const body = new Uint8Array(64);
const start = aead.aeadStats();
gc();
await tick();
const rssBefore = process.memoryUsage().rss;
let rssMax = rssBefore;
for (let i = 0; i < N; i++) {
  const ctx = aead.aeadNew(i % 2 === 0 ? 'chacha20-poly1305' : 'aes-256-gcm', key);
  aead.aeadSeal(ctx, nonce, nonce, [body], tag);
  if (i % 10_000 === 0) {
    await tick(); // lets queued finalizers run, as an event loop would
    rssMax = Math.max(rssMax, process.memoryUsage().rss);
  }
}
for (let i = 0; i < 10; i++) {
  gc();
  await tick();
}
const end = aead.aeadStats();
console.log(
  JSON.stringify({
    created: end.created - start.created,
    freed: end.freed - start.freed,
    rssGrowthMax: Math.max(rssMax, process.memoryUsage().rss) - rssBefore,
  }),
);
