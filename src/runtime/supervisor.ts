// The app as a supervised child: spawned in its own process group (setsid) with the agent's stdio, signals
// forwarded to that group, exits reaped by Node (libuv waits for every child it spawned), restarts by policy
// with exponential backoff and a cap on the restart rate, and "healthy" only once the app's port answers.
//
// Restart policy (enclave.toml [app] restart):
//   never       the first exit ends supervision; the agent exits with the app's code
//   on-failure  restart after a non-zero exit, a signal death or a failed spawn; exit 0 ends supervision
//   always      restart after every exit
// More than `maxRestarts` restarts within `restartWindowMs` ends supervision with the last exit's code.
// The backoff (restartBackoffMs, doubling up to restartBackoffMaxMs) starts over once a run lasted at least
// restartWindowMs. After each exit, whatever is left of the app's process group is SIGKILLed, so a crashed
// app's workers do not outlive it.
//
// The app dies with the agent even when the agent is SIGKILLed: it is exec'd through the addon's
// die-with-parent wrapper (PR_SET_PDEATHSIG = SIGKILL, see die-with-agent.ts). Without the wrapper the app is
// spawned directly and a warning says that it would outlive a SIGKILLed agent. PR_SET_PDEATHSIG covers the
// app's main process; its own children are the app's to manage (the agent SIGKILLs the group on every exit
// it sees).
import { spawn, type ChildProcess, type StdioOptions } from 'node:child_process';
import { constants as osConstants } from 'node:os';
import type { Readable } from 'node:stream';
import pino, { type Logger } from 'pino';
import type { RestartPolicy } from '../config.ts';
import { agentReadOnlyDirs } from './agent-read-only-dirs.ts';
import { execErrorName, locateDieWithAgent, sealedWrapper, wrapCommand, EXEC_ERROR_FD, MAX_READ_ONLY_DIRS, type DieWithAgent } from './die-with-agent.ts';
import { RuntimeError, SandboxDirsError } from './errors.ts';
import { waitForPort } from './wait-for-port.ts';

export interface AppExit {
  /** The exit status, or null when a signal ended the app (or it never started). */
  code: number | null;
  signal: NodeJS.Signals | null;
  /** What the agent propagates: the code, 128 + the signal number, or 127 when the command could not be started. */
  exitCode: number;
  /** Why the spawn failed (ENOENT, EACCES, ...), when it did. */
  spawnError?: string;
  /** How long this run lasted. */
  uptimeMs: number;
}

export type SupervisorState = 'starting' | 'healthy' | 'backoff' | 'stopping' | 'stopped';

export interface SupervisorResult {
  /** exited: the policy did not restart; restart-limit: too many restarts; stopped: stop() was called. */
  reason: 'exited' | 'restart-limit' | 'stopped';
  /** The app's last exit (null when stop() came before any start). */
  last: AppExit | null;
  /** The exit code the agent should use: the app's (exited, restart-limit) or 0 (stopped). */
  exitCode: number;
  /** stop() had to SIGKILL the app after its stop timeout. */
  killed: boolean;
}

export interface SupervisorOptions {
  /** [file, ...args]. Spawned without a shell. */
  command: readonly string[];
  env?: NodeJS.ProcessEnv;
  cwd?: string;
  restart: RestartPolicy;
  /** Default 500 ms. */
  restartBackoffMs?: number;
  /** Default 30 000 ms. */
  restartBackoffMaxMs?: number;
  /** Default 5. */
  maxRestarts?: number;
  /** Default 60 000 ms. */
  restartWindowMs?: number;
  /** The app's port: "healthy" means 127.0.0.1:<appPort> accepts a connection. */
  appPort: number;
  /** Default 127.0.0.1. */
  appHost?: string;
  /** Log a warning when the port has not answered after this long (default 30 000 ms); waiting goes on. */
  readyWarnAfterMs?: number;
  /** Interval of the readiness probe (default 100 ms). */
  readyIntervalMs?: number;
  /** Forwarded signals go to the app's whole process group (default) or to its main process only. */
  signalGroup?: boolean;
  /** Default 'inherit': the app writes to the agent's stdout/stderr. */
  stdio?: 'inherit' | 'ignore';
  /** The die-with-parent wrapper (default: built next to the addon). When it is unusable the app is spawned directly, with a warning. */
  dieWithAgentWrapper?: string;
  /**
   * The wrapper's sandbox for the app and all it starts (die-with-agent.ts): 'required' never starts the app
   * without it (startSupervisor throws RUNTIME_NO_SANDBOX when the wrapper is unusable); 'if-available' starts the
   * app unsandboxed, with a warning, when the wrapper is unusable; 'off' (default) asks for none.
   */
  sandbox?: 'required' | 'if-available' | 'off';
  /** In the sandbox the app may open vsock sockets ([egress] app_vsock); otherwise the filter refuses them. */
  allowVsock?: boolean;
  /**
   * In the sandbox: directories the app cannot write nor rename (a root agent; the wrapper's --read-only).
   * Default: every directory the agent's worker threads load code from, its own, its dependencies' and its
   * native addon's (agentReadOnlyDirs), found once here, before the app first runs. At most MAX_READ_ONLY_DIRS.
   */
  readOnlyDirs?: readonly string[];
  logger?: Logger;
  /** Every state change (tests, health reporting). */
  onState?: (state: SupervisorState, pid: number | undefined) => void;
}

export interface Supervisor {
  readonly state: SupervisorState;
  /** The running app's pid (undefined between runs). */
  readonly pid: number | undefined;
  /** Restarts so far. */
  readonly restarts: number;
  /** Resolves when the current (or next) run's port answers; rejects if supervision ends first. */
  whenHealthy(): Promise<void>;
  /** Sends `signal` to the running app (its process group by default). False when no app is running. */
  signal(signal: NodeJS.Signals): boolean;
  /**
   * Ends supervision: no more restarts; sends `signal` (default SIGTERM) to the app, SIGKILLs its process
   * group after `timeoutMs` (default 10 000 ms), resolves when it has exited. Idempotent.
   */
  stop(signal?: NodeJS.Signals, timeoutMs?: number): Promise<SupervisorResult>;
  /** Resolves once supervision has ended for good (policy, restart limit or stop()). */
  readonly done: Promise<SupervisorResult>;
}

const SPAWN_FAILED_EXIT = 127;

/** 128 + the signal's number (the shell convention), 1 for an unknown signal. */
export function signalExitCode(signal: NodeJS.Signals): number {
  const n = (osConstants.signals as Record<string, number | undefined>)[signal];
  return n === undefined ? 1 : 128 + n;
}

export function startSupervisor(opts: SupervisorOptions): Supervisor {
  if (!Array.isArray(opts.command) || opts.command.length === 0 || opts.command.some((a) => typeof a !== 'string') || opts.command[0] === '') {
    throw new RuntimeError('RUNTIME_NO_COMMAND', `app command: expected a non-empty array of strings, found ${JSON.stringify(opts.command)}`);
  }
  if (!Number.isInteger(opts.appPort) || opts.appPort < 1 || opts.appPort > 0xffff) {
    throw new RuntimeError('RUNTIME_BAD_OPTIONS', `appPort: expected an integer in 1..65535, found ${String(opts.appPort)}`);
  }
  const logger = opts.logger ?? pino({ enabled: false });
  const backoffBase = opts.restartBackoffMs ?? 500;
  const backoffMax = Math.max(opts.restartBackoffMaxMs ?? 30_000, backoffBase);
  const maxRestarts = opts.maxRestarts ?? 5;
  const windowMs = opts.restartWindowMs ?? 60_000;
  const appHost = opts.appHost ?? '127.0.0.1';
  const warnAfterMs = opts.readyWarnAfterMs ?? 30_000;
  const group = opts.signalGroup !== false;
  const [file, ...args] = opts.command as [string, ...string[]];
  const wantSandbox = opts.sandbox === 'required' || opts.sandbox === 'if-available';
  let dieWithAgent: DieWithAgent = locateDieWithAgent(opts.dieWithAgentWrapper);
  let releaseWrapper = (): void => {};
  if ('wrapper' in dieWithAgent) {
    // Launched from a sealed copy: an app running as root cannot rewrite what its next launch runs.
    const sealed = sealedWrapper(dieWithAgent.wrapper);
    if ('wrapper' in sealed) {
      dieWithAgent = { wrapper: sealed.wrapper };
      releaseWrapper = sealed.close;
    } else if (wantSandbox) dieWithAgent = sealed;
    else logger.warn({ reason: sealed.unavailable }, 'the app is launched through the wrapper file itself');
  }
  if ('unavailable' in dieWithAgent && opts.sandbox === 'required') {
    throw new RuntimeError('RUNTIME_NO_SANDBOX', dieWithAgent.unavailable);
  }
  if ('unavailable' in dieWithAgent && wantSandbox) {
    logger.warn({ reason: dieWithAgent.unavailable }, 'the app runs without its sandbox (no usable wrapper)');
  }
  if ('unavailable' in dieWithAgent) {
    logger.warn({ reason: dieWithAgent.unavailable }, 'the app will outlive the agent if the agent is SIGKILLed (no PR_SET_PDEATHSIG wrapper)');
  }
  const sandboxed = wantSandbox && 'wrapper' in dieWithAgent;
  let readOnly: readonly string[];
  try {
    readOnly = sandboxed ? (opts.readOnlyDirs ?? agentReadOnlyDirs()) : [];
  } catch (err) {
    releaseWrapper(); // SandboxDirsError: a node_modules the app could create or replace
    throw err;
  }
  if (readOnly.length > MAX_READ_ONLY_DIRS) {
    releaseWrapper();
    throw new SandboxDirsError(`the app's sandbox can make ${MAX_READ_ONLY_DIRS} directories read-only, and the agent's code and dependencies lie in ${readOnly.length}: ${readOnly.join(', ')}`);
  }

  let state: SupervisorState = 'starting';
  let child: ChildProcess | undefined;
  let runStarted = 0;
  let readyAbort: AbortController | undefined;
  let backoffTimer: NodeJS.Timeout | undefined;
  let restarts = 0;
  let consecutive = 0;
  const restartTimes: number[] = [];
  let last: AppExit | null = null;
  let stopping: { killTimer?: NodeJS.Timeout; killed: boolean } | undefined;
  let healthyWaiters: { resolve: () => void; reject: (e: Error) => void }[] = [];
  let finish!: (r: SupervisorResult) => void;
  let finished = false;
  const done = new Promise<SupervisorResult>((resolve) => (finish = resolve));

  const setState = (s: SupervisorState): void => {
    state = s;
    try {
      opts.onState?.(s, child?.pid);
    } catch {
      // an observer must not break supervision
    }
  };

  const end = (reason: SupervisorResult['reason'], exitCode: number): void => {
    if (finished) return;
    finished = true;
    releaseWrapper();
    clearTimeout(backoffTimer);
    readyAbort?.abort();
    setState('stopped');
    const waiters = healthyWaiters;
    healthyWaiters = [];
    for (const w of waiters) w.reject(new RuntimeError('RUNTIME_ABORTED', `supervision ended (${reason}) before the app answered on port ${opts.appPort}`));
    finish({ reason, last, exitCode, killed: stopping?.killed ?? false });
  };

  const killGroup = (pid: number, signal: NodeJS.Signals): boolean => {
    try {
      process.kill(group ? -pid : pid, signal);
      return true;
    } catch {
      return false; // ESRCH: already gone
    }
  };

  const watchReadiness = (proc: ChildProcess): void => {
    readyAbort = new AbortController();
    const signal = readyAbort.signal;
    const warn = setTimeout(() => logger.warn({ pid: proc.pid, port: opts.appPort, waitedMs: warnAfterMs }, 'app has not opened its port yet'), warnAfterMs);
    warn.unref();
    waitForPort(appHost, opts.appPort, { signal, intervalMs: opts.readyIntervalMs ?? 100 }).then(
      () => {
        clearTimeout(warn);
        if (child !== proc || state !== 'starting') return;
        logger.info({ pid: proc.pid, port: opts.appPort, startupMs: Date.now() - runStarted }, 'app healthy');
        setState('healthy');
        const waiters = healthyWaiters;
        healthyWaiters = [];
        for (const w of waiters) w.resolve();
      },
      () => clearTimeout(warn),
    );
  };

  const launch = (): void => {
    backoffTimer = undefined;
    if (finished || stopping) return;
    runStarted = Date.now();
    setState('starting');
    let proc: ChildProcess;
    const io = opts.stdio ?? 'inherit';
    const wrapper = 'wrapper' in dieWithAgent ? dieWithAgent.wrapper : undefined;
    try {
      // detached: setsid() in the child, so the app leads its own process group and session.
      const common = { detached: true, env: opts.env ?? process.env, cwd: opts.cwd };
      if (wrapper === undefined) {
        proc = spawn(file, args, { ...common, stdio: io });
      } else {
        // fd 3: the wrapper's exec errno (close-on-exec: the app never sees it; EOF alone means the exec worked)
        const stdio: StdioOptions = [io, io, io];
        stdio[EXEC_ERROR_FD] = 'pipe';
        const [wfile, wargs] = wrapCommand(wrapper, file, args, { sandbox: sandboxed, allowVsock: opts.allowVsock === true, readOnly });
        proc = spawn(wfile, wargs, { ...common, stdio });
      }
    } catch (err) {
      onExit(undefined, null, null, (err as NodeJS.ErrnoException).code ?? 'ESPAWN');
      return;
    }
    child = proc;
    let exited = false;
    proc.on('error', (err: NodeJS.ErrnoException) => {
      // Spawn failure (ENOENT, EACCES): no 'exit' follows. A failed kill() also lands here; ignore that.
      if (proc.pid === undefined && !exited) {
        exited = true;
        onExit(proc, null, null, err.code ?? 'ESPAWN');
      }
    });
    let execError = '';
    // an extra 'pipe' fd is a duplex socket; the agent only reads from it
    const errPipe = wrapper === undefined ? null : ((proc.stdio[EXEC_ERROR_FD] ?? null) as Readable | null);
    if (errPipe) {
      errPipe.setEncoding('utf8');
      errPipe.on('data', (d: string) => (execError += d));
      errPipe.on('error', () => {}); // the wrapper's end closes with it; nothing to report
    }
    // Through the wrapper: 'close' (after 'exit' and the errno pipe's EOF) so a failed exec is known in time.
    proc.once(errPipe ? 'close' : 'exit', (code: number | null, signal: NodeJS.Signals | null) => {
      if (exited) return;
      exited = true;
      const failedExec = errPipe && code === SPAWN_FAILED_EXIT ? execErrorName(execError) : undefined;
      if (failedExec !== undefined) onExit(proc, null, null, failedExec);
      else onExit(proc, code, signal);
    });
    if (proc.pid !== undefined) {
      logger.info({ pid: proc.pid, command: file, args: args.length, restarts }, 'app started');
      watchReadiness(proc);
    }
  };

  const onExit = (proc: ChildProcess | undefined, code: number | null, signal: NodeJS.Signals | null, spawnError?: string): void => {
    readyAbort?.abort();
    const uptimeMs = Date.now() - runStarted;
    if (proc?.pid !== undefined) killGroup(proc.pid, 'SIGKILL'); // leftovers of the app's group
    child = undefined;
    const exitCode = spawnError !== undefined ? SPAWN_FAILED_EXIT : code ?? (signal ? signalExitCode(signal) : 1);
    last = { code, signal, exitCode, uptimeMs, ...(spawnError === undefined ? {} : { spawnError }) };
    const level = exitCode === 0 || stopping ? 'info' : 'warn';
    logger[level]({ pid: proc?.pid, code, signal, spawnError, exitCode, uptimeMs }, spawnError ? `app could not be started (${spawnError})` : 'app exited');

    if (stopping) {
      clearTimeout(stopping.killTimer);
      end('stopped', 0);
      return;
    }
    const restart = opts.restart === 'always' || (opts.restart === 'on-failure' && exitCode !== 0);
    if (!restart) {
      end('exited', exitCode);
      return;
    }
    const now = Date.now();
    while (restartTimes.length > 0 && now - restartTimes[0]! > windowMs) restartTimes.shift();
    if (restartTimes.length >= maxRestarts) {
      logger.error({ restarts: restartTimes.length, windowMs, exitCode }, 'app restarted too often; giving up');
      end('restart-limit', exitCode);
      return;
    }
    consecutive = uptimeMs >= windowMs ? 1 : consecutive + 1;
    const delay = Math.min(backoffMax, backoffBase * 2 ** Math.min(consecutive - 1, 30));
    restartTimes.push(now);
    restarts++;
    setState('backoff');
    logger.info({ delayMs: delay, restart: restarts }, 'restarting app');
    backoffTimer = setTimeout(launch, delay);
  };

  launch();

  return {
    get state() {
      return state;
    },
    get pid() {
      return child?.pid;
    },
    get restarts() {
      return restarts;
    },
    done,
    whenHealthy() {
      if (state === 'healthy') return Promise.resolve();
      if (finished) return Promise.reject(new RuntimeError('RUNTIME_ABORTED', 'supervision has ended'));
      return new Promise((resolve, reject) => healthyWaiters.push({ resolve, reject }));
    },
    signal(signal) {
      const pid = child?.pid;
      if (pid === undefined) return false;
      logger.info({ pid, signal }, 'signal forwarded to the app');
      return killGroup(pid, signal);
    },
    stop(signal = 'SIGTERM', timeoutMs = 10_000) {
      if (stopping || finished) return done;
      stopping = { killed: false };
      clearTimeout(backoffTimer);
      const pid = child?.pid;
      if (pid === undefined) {
        end('stopped', 0);
        return done;
      }
      setState('stopping');
      logger.info({ pid, signal, timeoutMs }, 'stopping the app');
      killGroup(pid, signal);
      const s = stopping;
      s.killTimer = setTimeout(() => {
        s.killed = true;
        logger.warn({ pid, timeoutMs }, 'app did not exit in time; SIGKILL');
        killGroup(pid, 'SIGKILL');
      }, timeoutMs);
      return done;
    },
  };
}
