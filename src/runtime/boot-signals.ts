// Signals while `run` boots (the KMS keyring, [secrets], egress set-up, the listeners): without handlers, Node's
// default action would kill the agent mid-set-up, nothing closed, no log line, no exit code. Here a stop signal
// aborts the boot instead: the steps see the AbortSignal, close what they started, and the agent exits with
// 128 + the signal number. A second stop signal exits at once. Forwarded signals have no app to go to yet.
import { FORWARDED_SIGNALS, STOP_SIGNALS } from './drain.ts';
import { RuntimeError } from './errors.ts';
import { signalExitCode } from './supervisor.ts';

export interface BootSignals {
  /** Aborted on the first stop signal (its reason: the signal's name). */
  readonly signal: AbortSignal;
  /** The stop signal received, if any. */
  received(): NodeJS.Signals | undefined;
  /**
   * Removes the handlers (idempotent). Install the running agent's (drain.ts) first, in the same tick: with no
   * listener left for a moment, Node closes the signal's handle and drops a signal caught meanwhile.
   */
  stop(): void;
}

export function watchBootSignals(forceExit: (code: number) => void = (code) => process.exit(code)): BootSignals {
  const controller = new AbortController();
  let received: NodeJS.Signals | undefined;
  const onStop = (signal: NodeJS.Signals): void => {
    if (received !== undefined) return forceExit(signalExitCode(signal));
    received = signal;
    controller.abort(signal);
  };
  // No app to forward them to yet; without a handler SIGHUP and SIGUSR2 would kill the agent.
  const onForward = (): void => {};
  for (const s of STOP_SIGNALS) process.on(s, onStop);
  for (const s of FORWARDED_SIGNALS) process.on(s, onForward);
  return {
    signal: controller.signal,
    received: () => received,
    stop() {
      for (const s of STOP_SIGNALS) process.off(s, onStop);
      for (const s of FORWARDED_SIGNALS) process.off(s, onForward);
    },
  };
}

function bootAborted(signal: AbortSignal): RuntimeError {
  return new RuntimeError('RUNTIME_ABORTED', `boot aborted by ${String(signal.reason)}`);
}

/** Throws RUNTIME_ABORTED once `signal` is aborted (between boot steps). */
export function throwIfBootAborted(signal: AbortSignal | undefined): void {
  if (signal?.aborted === true) throw bootAborted(signal);
}

/**
 * `step`, or RUNTIME_ABORTED as soon as `signal` aborts: for steps that may wait long on the outside (KMS). The
 * step itself is left to finish or fail on its own; the agent is on its way out.
 */
export function unlessBootAborted<T>(step: Promise<T>, signal: AbortSignal | undefined): Promise<T> {
  if (signal === undefined) return step;
  if (signal.aborted) return Promise.reject(bootAborted(signal));
  return new Promise<T>((resolve, reject) => {
    const onAbort = (): void => reject(bootAborted(signal));
    signal.addEventListener('abort', onAbort, { once: true });
    step.then(resolve, reject).finally(() => signal.removeEventListener('abort', onAbort));
  });
}
