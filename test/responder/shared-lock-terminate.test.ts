// What becomes of the session workers' shared client-table lock (SharedLock) when a worker is terminated while
// it holds it. Worker.terminate lands inside a synchronous critical section and runs no finally, so the lock
// stays held; the threads waiting for it are released only by their own terminate. That is enough because
// session workers are only ever terminated all together (SessionWorkers.stopAll), a worker that stops on its own
// ends the process (session-workers.ts), and the main thread never takes this lock (shared-lock.ts).
import { createRequire } from 'node:module';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { Worker } from 'node:worker_threads';
import { describe, expect, it } from 'vitest';

function spawn(workerData: { words: Int32Array; flags: Int32Array; index: number; role: 'hold' | 'wait' }): Worker {
  const here = import.meta.url;
  const api = path.join(path.dirname(createRequire(here).resolve('tsx/esm/api')), 'index.mjs');
  const entry = new URL('./fixtures/shared-lock-thread.ts', here).href;
  const boot = `import(${JSON.stringify(pathToFileURL(api).href)}).then((t) => { t.register(); return import(${JSON.stringify(entry)}); })`;
  return new Worker(boot, { eval: true, workerData });
}

const until = async (cond: () => boolean): Promise<void> => {
  while (!cond()) await new Promise((r) => setTimeout(r, 5));
};

describe('SharedLock and Worker.terminate', () => {
  it('a holder terminated inside its critical section leaves the lock held; terminating the waiters as well leaves none waiting', { timeout: 30_000 }, async () => {
    const words = new Int32Array(new SharedArrayBuffer(4));
    const flags = new Int32Array(new SharedArrayBuffer(32));
    const holder = spawn({ words, flags, index: 0, role: 'hold' });
    await until(() => Atomics.load(flags, 0) === 2);
    const waiters = [1, 2].map((index) => spawn({ words, flags, index, role: 'wait' }));
    // Both waiters are inside lock(), and one went to sleep on it (state 2: held, sleepers).
    await until(() => Atomics.load(flags, 1) === 1 && Atomics.load(flags, 2) === 1 && Atomics.load(words, 0) === 2);

    await holder.terminate();
    expect(Atomics.load(flags, 0)).toBe(2); // its finally never ran...
    expect(Atomics.load(words, 0)).toBe(2); // ...so the lock is still held, by a thread that is gone
    expect([Atomics.load(flags, 1), Atomics.load(flags, 2)]).toEqual([1, 1]); // and the waiters still wait

    // What stopAll does next: terminate them too. Their terminate interrupts Atomics.wait and the spin alike.
    expect(await Promise.all(waiters.map((w) => w.terminate()))).toEqual([1, 1]);
    expect([Atomics.load(flags, 1), Atomics.load(flags, 2)]).toEqual([1, 1]); // none ever got the lock
  });
});
