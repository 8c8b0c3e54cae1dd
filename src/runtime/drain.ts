// Graceful shutdown of the runtime. On the first SIGTERM (or SIGINT):
//   1. drain   — the listeners stop accepting; sessions finish what is in flight, up to drainTimeoutMs,
//                then whatever remains is closed (the app and the 9999 API keep running meanwhile, so
//                in-flight requests can complete even if the app would die on the signal at once);
//   2. stop    — the same signal is forwarded to the app's process group; SIGKILL after stopTimeoutMs;
//   3. close   — the API server, log sinks and anything else left;
//   4. exit 0.
// A second SIGTERM/SIGINT while this runs forces: SIGKILL to the app, exit 128 + signal number.
// SIGHUP, SIGUSR1 and SIGUSR2 are forwarded to the app as they come and change nothing else.
// When the app ends supervision by itself (restart policy), the same sequence runs with the app's exit code.
import type { Logger } from 'pino';
import { signalExitCode, type SupervisorResult } from './supervisor.ts';

export interface DrainTarget {
  /** Stop accepting; let in-flight work finish for up to `timeoutMs`. */
  drain(timeoutMs: number): Promise<void>;
  /** Release everything. */
  close(): Promise<void>;
}

export interface AppControl {
  stop(signal: NodeJS.Signals, timeoutMs: number): Promise<SupervisorResult>;
  signal(signal: NodeJS.Signals): boolean;
}

export type ShutdownPhase = 'running' | 'draining' | 'stopping-app' | 'closing' | 'done';

export interface ShutdownCause {
  /** For the log: 'SIGTERM', 'app exited', 'restart limit', ... */
  reason: string;
  /** The signal to stop the app with (default SIGTERM). */
  signal?: NodeJS.Signals;
  /** The agent's exit code once done. */
  exitCode: number;
}

export interface ShutdownOptions {
  runtime: DrainTarget;
  app: AppControl;
  drainTimeoutMs: number;
  stopTimeoutMs: number;
  /** Bound on step 3 (default 5 000 ms). */
  closeTimeoutMs?: number;
  logger: Logger;
  /** Called exactly once with the exit code (the CLI flushes logs and exits). */
  exit: (code: number) => void;
}

export interface Shutdown {
  readonly phase: ShutdownPhase;
  /** Runs the graceful sequence once; later calls return the same promise. */
  begin(cause: ShutdownCause): Promise<void>;
  /** Immediate exit: SIGKILL to the app, close without waiting. */
  force(signal: NodeJS.Signals): void;
}

function bounded(p: Promise<unknown>, ms: number): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([
    p.then(
      () => undefined,
      () => undefined,
    ),
    new Promise<void>((resolve) => (timer = setTimeout(resolve, ms))),
  ]).finally(() => clearTimeout(timer));
}

export function createShutdown(opts: ShutdownOptions): Shutdown {
  const { logger } = opts;
  let phase: ShutdownPhase = 'running';
  let running: Promise<void> | undefined;
  let exited = false;
  const exit = (code: number): void => {
    if (exited) return;
    exited = true;
    phase = 'done';
    opts.exit(code);
  };

  const sequence = async (cause: ShutdownCause): Promise<void> => {
    const started = Date.now();
    phase = 'draining';
    logger.info({ reason: cause.reason, drainTimeoutMs: opts.drainTimeoutMs }, 'draining: no new connections, finishing in-flight requests');
    try {
      await opts.runtime.drain(opts.drainTimeoutMs);
    } catch (err) {
      logger.warn({ err: (err as { code?: string }).code ?? String(err) }, 'drain failed; closing');
    }
    if (exited) return;
    phase = 'stopping-app';
    const result = await opts.app.stop(cause.signal ?? 'SIGTERM', opts.stopTimeoutMs);
    if (exited) return;
    phase = 'closing';
    await bounded(opts.runtime.close(), opts.closeTimeoutMs ?? 5_000);
    logger.info({ reason: cause.reason, exitCode: cause.exitCode, appKilled: result.killed, ms: Date.now() - started }, 'agent stopped');
    exit(cause.exitCode);
  };

  return {
    get phase() {
      return phase;
    },
    begin(cause) {
      running ??= sequence(cause);
      return running;
    },
    force(signal) {
      if (exited) return;
      logger.warn({ signal, phase }, 'second stop signal: forcing exit');
      opts.app.signal('SIGKILL');
      void opts.runtime.close().catch(() => {});
      exit(signalExitCode(signal));
    },
  };
}

export const STOP_SIGNALS: readonly NodeJS.Signals[] = ['SIGTERM', 'SIGINT'];
// SIGUSR1 must keep a listener while the app runs: without one Node opens its inspector on 127.0.0.1:9229, and
// the app (same user) could send it and run code in the agent (test/runtime/app-signals-agent.test.ts).
export const FORWARDED_SIGNALS: readonly NodeJS.Signals[] = ['SIGHUP', 'SIGUSR1', 'SIGUSR2'];

/**
 * Binds process signals: STOP_SIGNALS start the shutdown (the second one forces), FORWARDED_SIGNALS go to
 * the app. Returns a function that removes the handlers.
 */
export function installSignalHandlers(shutdown: Shutdown, app: AppControl, logger: Logger): () => void {
  const onStop = (signal: NodeJS.Signals): void => {
    if (shutdown.phase === 'running') {
      logger.info({ signal }, 'stop signal received');
      void shutdown.begin({ reason: signal, signal, exitCode: 0 });
    } else {
      shutdown.force(signal);
    }
  };
  const onForward = (signal: NodeJS.Signals): void => {
    if (!app.signal(signal)) logger.info({ signal }, 'signal not forwarded: no app running');
  };
  for (const s of STOP_SIGNALS) process.on(s, onStop);
  for (const s of FORWARDED_SIGNALS) process.on(s, onForward);
  return () => {
    for (const s of STOP_SIGNALS) process.off(s, onStop);
    for (const s of FORWARDED_SIGNALS) process.off(s, onForward);
  };
}
