// The enclave side of [clock] correct = true: steps CLOCK_REALTIME through the addon (native/src/clock.c).
// Only `enclave-agent run` passes this to the runtime; the local stack never changes the machine's clock.
import { loadNative, toNativeError } from '../transport/native.ts';
import type { ClockStepper } from './clock.ts';

interface ClockBinding {
  clockStep?: (deltaMs: number) => void;
}

/** Moves the clock by `deltaMs` (a non-zero integer within ±1 h, else RangeError before any syscall). */
export const nativeClockStep: ClockStepper = (deltaMs) => {
  const step = (loadNative() as unknown as ClockBinding).clockStep;
  if (step === undefined) throw toNativeError(Object.assign(new Error('the native addon has no clockStep (rebuild it)'), { code: 'NATIVE_NO_CLOCK' }));
  try {
    step(deltaMs);
  } catch (err) {
    throw toNativeError(err);
  }
};
