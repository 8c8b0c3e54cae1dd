// The DecryptScheduler: ev: work in slices with the event loop serviced in between, one global budget.
// Steps here busy-wait a fixed time (standing in for an ECDH); assertions are on order and outcome only.
import { describe, expect, it } from 'vitest';
import { DecryptScheduler, drain } from '../../src/crypto/decrypt-scheduler.ts';
import { EvBusyError } from '../../src/crypto/errors.ts';

/** A job of `n` steps, each holding the thread ~`ms` (like one cold ECDH); returns `value`. */
function* busy<T>(n: number, ms: number, value: T, log?: string[], name?: string): Generator<void, T, void> {
  for (let i = 0; i < n; i++) {
    const end = performance.now() + ms;
    while (performance.now() < end);
    log?.push(name!);
    yield;
  }
  return value;
}

/** A job that holds its slot, doing nothing, until released. */
function held(): { steps: Generator<void, string, void>; release(): void } {
  let released = false;
  function* steps(): Generator<void, string, void> {
    while (!released) yield;
    return 'released';
  }
  return { steps: steps(), release: () => void (released = true) };
}

describe('DecryptScheduler', () => {
  it('returns what the steps return, as drain does', async () => {
    const s = new DecryptScheduler();
    expect(await s.run(busy(3, 0, 'done'))).toBe('done');
    expect(drain(busy(3, 0, 'done'))).toBe('done');
    expect(s.active).toBe(0);
  });

  it('services the event loop between slices: a timer and an I/O-free immediate run before a long job ends', async () => {
    const s = new DecryptScheduler({ sliceMs: 2 });
    const order: string[] = [];
    // 60 steps of 1 ms: at least 30 slices. Synchronously, the probes could only run after all 60.
    const job = s.run(busy(60, 1, 'job')).then(() => order.push('job'));
    const timer = new Promise<void>((r) => setTimeout(r, 0)).then(() => order.push('timer'));
    const immediate = new Promise<void>((r) => setImmediate(r)).then(() => order.push('immediate'));
    await Promise.all([job, timer, immediate]);
    expect(order.indexOf('job')).toBe(2);
  });

  it('interleaves jobs round-robin: a short job queued behind a long one finishes first', async () => {
    const s = new DecryptScheduler({ sliceMs: 1 });
    const log: string[] = [];
    const done: string[] = [];
    const long = s.run(busy(40, 0.5, 'long', log, 'L')).then((v) => done.push(v));
    const short = s.run(busy(2, 0.5, 'short', log, 'S')).then((v) => done.push(v));
    await Promise.all([long, short]);
    expect(done).toEqual(['short', 'long']);
    expect(log.slice(0, 4)).toEqual(['L', 'S', 'L', 'S']);
  });

  it('refuses work past maxConcurrent with EvBusyError before running any of it, and takes work again once a slot frees', async () => {
    const s = new DecryptScheduler({ maxConcurrent: 2 });
    const a = held();
    const b = held();
    const pa = s.run(a.steps);
    const pb = s.run(b.steps);
    let ran = false;
    function* refused(): Generator<void, void, void> {
      ran = true;
      yield;
    }
    await expect(s.run(refused())).rejects.toThrow(EvBusyError);
    await expect(s.run(refused())).rejects.toMatchObject({ code: 'EV_DECRYPT_BUSY', message: expect.stringContaining('limit 2') as unknown });
    expect(ran).toBe(false);
    a.release();
    expect(await pa).toBe('released');
    expect(await s.run(busy(1, 0, 'next'))).toBe('next');
    b.release();
    await pb;
    expect(s.active).toBe(0);
  });

  it('rejects only the job whose step throws; the others run to completion and the slot is freed', async () => {
    const s = new DecryptScheduler({ maxConcurrent: 2, sliceMs: 1 });
    function* failing(): Generator<void, never, void> {
      yield;
      throw new Error('bad value');
    }
    const ok = s.run(busy(10, 0.2, 'ok'));
    await expect(s.run(failing())).rejects.toThrow('bad value');
    expect(await ok).toBe('ok');
    expect(s.active).toBe(0);
  });

  it('validates its options', () => {
    for (const bad of [0, -1, 1.5, Number.NaN, Infinity]) expect(() => new DecryptScheduler({ maxConcurrent: bad }), String(bad)).toThrow(/maxConcurrent: expected a positive integer/);
    for (const bad of [0, -1, Number.NaN, Infinity]) expect(() => new DecryptScheduler({ sliceMs: bad }), String(bad)).toThrow(/sliceMs: expected a positive number/);
  });
});
