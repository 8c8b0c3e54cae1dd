// A short mutual-exclusion lock in one Int32 word of a SharedArrayBuffer, for critical sections of a few
// hundred nanoseconds shared by the main thread and worker threads (shared-clients.ts). States: 0 free,
// 1 held, 2 held and a worker may sleep on it. The main thread only spins (blocking its event loop in
// Atomics.wait is not allowed here); a worker spins briefly, then sleeps until the holder wakes it — with
// more threads than cores, a preempted holder then costs the waiters no CPU.
// A thread terminated while it holds the lock leaves it held: Worker.terminate lands inside a synchronous
// critical section (at any loop or call) and runs no finally. Nothing is left waiting on it only because session
// workers are terminated all together (SessionWorkers.stopAll; a waiter's own terminate ends its wait), one that
// stops on its own ends the process, and the main thread never takes the client-table lock (it would spin for
// good). Restarting one worker alone would need an owner id in the word, released on that worker's exit
// (test/responder/shared-lock-terminate.test.ts).
import { isMainThread } from 'node:worker_threads';

const SPINS = 100;

export class SharedLock {
  readonly #a: Int32Array;
  readonly #i: number;
  readonly #mayWait: boolean;

  constructor(words: Int32Array, index: number, mayWait = !isMainThread) {
    this.#a = words;
    this.#i = index;
    this.#mayWait = mayWait;
  }

  lock(): void {
    if (Atomics.compareExchange(this.#a, this.#i, 0, 1) !== 0) this.#contended();
  }

  unlock(): void {
    if (Atomics.exchange(this.#a, this.#i, 0) === 2) Atomics.notify(this.#a, this.#i, 1);
  }

  #contended(): void {
    const a = this.#a;
    const i = this.#i;
    // Spin while it is held without sleepers, taking it the moment it is free.
    for (let n = 0; n < SPINS; n++) {
      const s = Atomics.load(a, i);
      if (s === 0 && Atomics.compareExchange(a, i, 0, 1) === 0) return;
      if (s === 2) break;
    }
    // From here on take it as 2, so that our unlock wakes whoever else went to sleep meanwhile.
    for (;;) {
      if (Atomics.load(a, i) !== 2 && Atomics.exchange(a, i, 2) === 0) return;
      if (this.#mayWait) Atomics.wait(a, i, 2);
      else while (Atomics.load(a, i) === 2); // main thread: spin until released
    }
  }
}
