// The fuzz contract shared by every parser: a call either returns (and the caller checks an invariant on the
// result) or throws an instance of that module's typed error class with a code of the expected family.
// Anything else — TypeError, RangeError, a dependency's own error — is rethrown so fast-check reports it
// (with its seed and the shrunk counterexample) as a failure.
import v8 from 'node:v8';
import vm from 'node:vm';
import { expect } from 'vitest';
import type { AgentError } from '../../src/errors.ts';

export type Outcome<T, E> = { ok: true; value: T } | { ok: false; error: E };

type ErrorClass<E> = abstract new (...args: never[]) => E;

/**
 * Runs `fn`; returns its value, or the error when it is an `errorClass` whose code matches `codes`.
 * Any other exception is rethrown untouched (the fuzz failure).
 */
export function outcome<T, E extends AgentError>(fn: () => T, errorClass: ErrorClass<E>, codes: RegExp): Outcome<T, E> {
  try {
    return { ok: true, value: fn() };
  } catch (err) {
    if (!(err instanceof errorClass)) throw err;
    if (!codes.test(err.code)) {
      throw new Error(`expected an error code matching ${codes}, found ${err.code}: ${err.message}`, { cause: err });
    }
    return { ok: false, error: err };
  }
}

/** Like outcome() for a promise. */
export async function outcomeAsync<T, E extends AgentError>(fn: () => Promise<T>, errorClass: ErrorClass<E>, codes: RegExp): Promise<Outcome<T, E>> {
  try {
    return { ok: true, value: await fn() };
  } catch (err) {
    if (!(err instanceof errorClass)) throw err;
    if (!codes.test(err.code)) {
      throw new Error(`expected an error code matching ${codes}, found ${err.code}: ${err.message}`, { cause: err });
    }
    return { ok: false, error: err };
  }
}

// --- heap ----------------------------------------------------------------------------------------------------

function findGc(): (() => void) | null {
  const g = (globalThis as { gc?: () => void }).gc;
  if (typeof g === 'function') return g;
  try {
    // The forks pool starts workers without --expose-gc; V8 lets a running isolate turn the flag on, and a
    // fresh context created afterwards carries the `gc` global.
    v8.setFlagsFromString('--expose-gc');
    const fromContext = vm.runInNewContext('gc') as unknown;
    if (typeof fromContext === 'function') return fromContext as () => void;
  } catch {
    // fall through
  }
  return null;
}

const gc = findGc();
/** True when a full GC can be forced (heap figures are then exact, not allocation noise). */
export const HEAP_GC_AVAILABLE = gc !== null;

function settledHeap(): number {
  if (gc !== null) {
    gc();
    gc();
  }
  return process.memoryUsage().heapUsed;
}

/**
 * Runs `run` twice (a warm-up, which fills caches and compiles code, then the measured run) and asserts that
 * the heap retained across the measured run stays under `limitBytes`. A per-case leak shows up as growth
 * proportional to the cases of the measured run; bounded caches and JIT code do not.
 * Without a forcible GC (never expected: see findGc) the bound is multiplied by 8.
 */
export async function expectBoundedHeap(run: (pass: 0 | 1) => void | Promise<void>, limitBytes = 4 * 1024 * 1024): Promise<void> {
  await run(0);
  const before = settledHeap();
  await run(1);
  const after = settledHeap();
  const limit = gc !== null ? limitBytes : limitBytes * 8;
  expect(after - before, `heap retained over the measured run (${gc !== null ? 'forced GC' : 'no forced GC'})`).toBeLessThan(limit);
}
