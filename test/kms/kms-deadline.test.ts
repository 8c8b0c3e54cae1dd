// withinDeadline (src/crypto/kms-deadline.ts), the deadline every KMS call goes through: it settles with the call,
// or with KmsDeadlineError at the deadline (the call's signal aborted). A call that throws before it returns a
// promise must reject the same way and leave no timer behind: before the fix the throw escaped synchronously and
// the armed deadline later rejected a promise nobody held (an unhandled rejection, which ends a Node process).
import { afterEach, describe, expect, it, vi } from 'vitest';
import { KmsDeadlineError, withinDeadline } from '../../src/crypto/kms-deadline.ts';

afterEach(() => {
  vi.useRealTimers();
});

describe('withinDeadline', () => {
  it('settles with the call, and at the deadline rejects KmsDeadlineError with the signal aborted', async () => {
    vi.useFakeTimers();
    expect(await withinDeadline(1_000, () => Promise.resolve('answer'))).toBe('answer');
    expect(vi.getTimerCount()).toBe(0);
    let seen: AbortSignal | undefined;
    const late = withinDeadline(1_000, (signal) => {
      seen = signal;
      return new Promise<never>(() => {});
    });
    const outcome = late.catch((err: unknown) => err);
    await vi.advanceTimersByTimeAsync(1_000);
    expect(await outcome).toBeInstanceOf(KmsDeadlineError);
    expect(seen?.aborted).toBe(true);
  });

  it('a call that throws at once rejects with its error and leaves no deadline armed', async () => {
    vi.useFakeTimers();
    const boom = new Error('bad command');
    let outcome: unknown;
    try {
      outcome = await withinDeadline(1_000, () => {
        throw boom;
      }).catch((err: unknown) => ({ rejected: err }));
    } catch (err) {
      outcome = { thrown: err };
    }
    expect(outcome).toEqual({ rejected: boom });
    expect(vi.getTimerCount()).toBe(0);
  });
});
