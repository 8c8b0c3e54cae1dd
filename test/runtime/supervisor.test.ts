// The supervisor and the shutdown sequence in-process, with small `node -e` apps and fakes.
import { copyFileSync, mkdtempSync, readFileSync, realpathSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import pino from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { agentCodeDir, defaultWrapperPath } from '../../src/runtime/die-with-agent.ts';
import { createShutdown } from '../../src/runtime/drain.ts';
import { SandboxDirsError } from '../../src/runtime/errors.ts';
import { signalExitCode, startSupervisor, type Supervisor, type SupervisorResult } from '../../src/runtime/supervisor.ts';
import { available } from '../native/helpers.ts';
import { freePort, zombieChildren } from './harness.ts';

const node = process.execPath;
const live: Supervisor[] = [];
afterEach(async () => {
  for (const s of live.splice(0)) await s.stop('SIGKILL', 0);
});

function memoryLogger(): { logger: pino.Logger; records: Record<string, unknown>[] } {
  const records: Record<string, unknown>[] = [];
  return { logger: pino({ level: 'debug' }, { write: (l: string) => void records.push(JSON.parse(l) as Record<string, unknown>) }), records };
}

function supervise(opts: Partial<Parameters<typeof startSupervisor>[0]> & { command: string[] }): Supervisor {
  const s = startSupervisor({ restart: 'never', appPort: 1, stdio: 'ignore', restartBackoffMs: 10, ...opts });
  live.push(s);
  return s;
}

describe('supervisor', () => {
  it('refuses to start an app that must not open vsock when the wrapper that denies it is missing', () => {
    expect(() => startSupervisor({ command: [node, '-e', ''], restart: 'never', appPort: 1, sandbox: 'required', dieWithAgentWrapper: '/nonexistent/enclave_die_with_parent' })).toThrow(
      expect.objectContaining({ code: 'RUNTIME_NO_SANDBOX', message: expect.stringMatching(/\/nonexistent\/enclave_die_with_parent is not usable/) }),
    );
  });

  // The wrapper takes 8 --read-only directories and refuses a 9th with a usage error: the app exited 2 on every
  // launch, the cause only on stderr. Failed before: startSupervisor did not throw.
  it.skipIf(!available)('refuses more read-only directories than the wrapper takes, naming them', () => {
    const dirs = Array.from({ length: 9 }, (_, i) => `/opt/dir${i}`);
    expect(() => startSupervisor({ command: [node, '-e', ''], restart: 'never', appPort: 1, sandbox: 'required', readOnlyDirs: dirs })).toThrow(
      expect.objectContaining({ code: 'RUNTIME_NO_SANDBOX', message: expect.stringMatching(/can make 8 directories read-only, .* lie in 9: \/opt\/dir0, .*\/opt\/dir8$/) }),
    );
    // Its own class: `run` tells the operator to install into one node_modules, not to build the wrapper.
    expect(() => startSupervisor({ command: [node, '-e', ''], restart: 'never', appPort: 1, sandbox: 'required', readOnlyDirs: dirs })).toThrow(SandboxDirsError);
  });

  it('reports a command that cannot be started as exit code 127', async () => {
    const s = supervise({ command: ['/nonexistent/app'], restart: 'never' });
    const r = await s.done;
    expect(r).toMatchObject({ reason: 'exited', exitCode: 127, last: { code: null, spawnError: 'ENOENT' } });
  });

  it('on-failure does not restart an app that exited 0 and propagates the 0', async () => {
    const s = supervise({ command: [node, '-e', 'process.exit(0)'], restart: 'on-failure' });
    expect(await s.done).toMatchObject({ reason: 'exited', exitCode: 0 });
    expect(s.restarts).toBe(0);
  });

  it('propagates death by signal as 128 + the signal number', async () => {
    const s = supervise({ command: [node, '-e', 'process.kill(process.pid, "SIGKILL")'], restart: 'never' });
    expect(await s.done).toMatchObject({ exitCode: 137, last: { signal: 'SIGKILL', code: null } });
    expect(signalExitCode('SIGTERM')).toBe(143);
  });

  it('doubles the restart delay per consecutive failure up to the ceiling, then gives up at the rate limit', async () => {
    const { logger, records } = memoryLogger();
    const s = supervise({ command: [node, '-e', 'process.exit(5)'], restart: 'on-failure', restartBackoffMs: 10, restartBackoffMaxMs: 40, maxRestarts: 4, logger });
    const r = await s.done;
    expect(r).toMatchObject({ reason: 'restart-limit', exitCode: 5 });
    expect(records.filter((x) => x.msg === 'restarting app').map((x) => x.delayMs)).toEqual([10, 20, 40, 40]);
    expect(s.restarts).toBe(4);
    expect(zombieChildren(process.pid)).toEqual([]);
  });

  it('is healthy only once the app port accepts connections', async () => {
    const port = await freePort();
    const app = `setTimeout(() => require('net').createServer().listen(${port}, '127.0.0.1'), 400); setInterval(() => {}, 1000)`;
    const states: string[] = [];
    const s = supervise({ command: [node, '-e', app], appPort: port, readyIntervalMs: 20, onState: (st) => states.push(st) });
    expect(s.state).toBe('starting');
    await s.whenHealthy();
    expect(s.state).toBe('healthy');
    expect(states).toEqual(['starting', 'healthy']);
    expect(await s.stop('SIGTERM', 5_000)).toMatchObject({ reason: 'stopped', exitCode: 0, killed: false });
  });

  it('SIGKILLs an app that ignores the stop signal after the stop timeout', async () => {
    const port = await freePort();
    const app = `process.on('SIGTERM', () => {}); require('net').createServer().listen(${port}, '127.0.0.1')`;
    const s = startSupervisor({ command: [node, '-e', app], restart: 'always', appPort: port, readyIntervalMs: 20, stdio: 'ignore' });
    await s.whenHealthy(); // the handler is installed before the port opens
    const r = await s.stop('SIGTERM', 200);
    expect(r).toMatchObject({ reason: 'stopped', exitCode: 0, killed: true, last: { signal: 'SIGKILL' } });
    expect(s.restarts).toBe(0);
  });

  it('rejects whenHealthy when supervision ends first', async () => {
    const s = supervise({ command: [node, '-e', 'process.exit(2)'], appPort: 1 });
    await expect(s.whenHealthy()).rejects.toMatchObject({ code: 'RUNTIME_ABORTED' });
  });
});

describe('shutdown sequence', () => {
  function fakes(): { calls: string[]; runtime: { drain(ms: number): Promise<void>; close(): Promise<void> }; app: { stop(s: NodeJS.Signals, ms: number): Promise<SupervisorResult>; signal(s: NodeJS.Signals): boolean }; release: () => void } {
    const calls: string[] = [];
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    return {
      calls,
      release,
      runtime: {
        async drain(ms) {
          calls.push(`drain ${ms}`);
          await gate;
        },
        close() {
          calls.push('close');
          return Promise.resolve();
        },
      },
      app: {
        stop(sig, ms) {
          calls.push(`stop ${sig} ${ms}`);
          return Promise.resolve({ reason: 'stopped' as const, last: null, exitCode: 0, killed: false });
        },
        signal(sig) {
          calls.push(`signal ${sig}`);
          return true;
        },
      },
    };
  }

  it('drains first, then stops the app with the same signal, closes and exits with the cause\'s code', async () => {
    const f = fakes();
    const exits: number[] = [];
    const sd = createShutdown({ runtime: f.runtime, app: f.app, drainTimeoutMs: 1234, stopTimeoutMs: 99, logger: pino({ enabled: false }), exit: (c) => exits.push(c) });
    const p = sd.begin({ reason: 'SIGINT', signal: 'SIGINT', exitCode: 0 });
    expect(sd.phase).toBe('draining');
    expect(sd.begin({ reason: 'again', exitCode: 9 })).toBe(p);
    f.release();
    await p;
    expect(f.calls).toEqual(['drain 1234', 'stop SIGINT 99', 'close']);
    expect(exits).toEqual([0]);
    expect(sd.phase).toBe('done');
  });

  it('forces while draining: SIGKILL to the app, exit 128 + signal, nothing after', async () => {
    const f = fakes();
    const exits: number[] = [];
    const sd = createShutdown({ runtime: f.runtime, app: f.app, drainTimeoutMs: 60_000, stopTimeoutMs: 10, logger: pino({ enabled: false }), exit: (c) => exits.push(c) });
    const p = sd.begin({ reason: 'SIGTERM', signal: 'SIGTERM', exitCode: 0 });
    sd.force('SIGTERM');
    expect(exits).toEqual([143]);
    f.release();
    await p;
    expect(f.calls).toEqual(['drain 60000', 'signal SIGKILL', 'close']);
    expect(exits).toEqual([143]);
  });
});

describe('supervisor: the app dies with the agent', () => {
  // The app exits with its own PR_GET_PDEATHSIG (prctl option 2): 9 when SIGKILL is armed, 0 when not.
  const pdeathsigApp = ['/usr/bin/python3', '-c', 'import ctypes; s = ctypes.c_int(); ctypes.CDLL(None).prctl(2, ctypes.byref(s)); raise SystemExit(s.value)'];

  it.skipIf(!available)('spawns the app through the wrapper: PR_SET_PDEATHSIG = SIGKILL is set in the app, nothing is logged', async () => {
    const { logger, records } = memoryLogger();
    const s = supervise({ command: pdeathsigApp, logger });
    expect(await s.done).toMatchObject({ reason: 'exited', exitCode: 9 });
    expect(records.filter((r) => /outlive/.test(String(r.msg)))).toEqual([]);
  });

  it.skipIf(!available)('an app running as root cannot rewrite the sandboxing wrapper its next launch goes through', async () => {
    // The app records whether it may make a vsock socket, then (first launch only) replaces the wrapper's file with
    // a script that execs the app without any sandbox, and exits 1 to be restarted. Failed before the launch
    // went through a sealed copy: the second launch ran the script and made its vsock socket.
    const dir = mkdtempSync(path.join(os.tmpdir(), 'sealed-wrapper-'));
    try {
      const file = path.join(dir, 'enclave_die_with_parent');
      copyFileSync(defaultWrapperPath(), file);
      const seen = path.join(dir, 'seen');
      const app = [
        'import errno, os, socket, sys',
        'try:',
        '    socket.socket(40, socket.SOCK_STREAM).close(); r = "ok"',
        'except OSError as e:',
        '    r = errno.errorcode[e.errno]',
        `open(${JSON.stringify(seen)}, "a").write(r + "\\n")`,
        `w = ${JSON.stringify(file)}`,
        'if open(w, "rb").read(2) != b"#!":',
        '    open(w, "w").write("#!/bin/sh\\nshift 3\\nexec \\"$@\\"\\n")',
        '    sys.exit(1)',
      ].join('\n');
      const s = supervise({ command: ['/usr/bin/python3', '-c', app], sandbox: 'required', dieWithAgentWrapper: file, restart: 'on-failure', maxRestarts: 3 });
      expect(await s.done).toMatchObject({ reason: 'exited', exitCode: 0 });
      expect(readFileSync(file, 'utf8')).toMatch(/^#!\/bin\/sh/); // the app did rewrite the file
      expect(readFileSync(seen, 'utf8').trim().split('\n')).toEqual(['EACCES', 'EACCES']);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  // The agent starts worker threads (the decrypt pool, handed the keys; session workers) from its code directory
  // after the app has started: a sandboxed root app must not be able to rewrite them. The probe opens one of the
  // agent's files for writing and closes it, writing nothing. Failed before: "opened".
  it.skipIf(!available || process.getuid?.() !== 0)("a sandboxed root app cannot write the agent's code", async () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'agent-code-'));
    try {
      const seen = path.join(dir, 'seen');
      const target = path.join(agentCodeDir(), 'package.json');
      expect(agentCodeDir()).toBe(realpathSync(path.join(import.meta.dirname, '../..')));
      const app = [
        'import errno, os',
        'try:',
        `    os.close(os.open(${JSON.stringify(target)}, os.O_WRONLY)); r = "opened"`,
        'except OSError as e:',
        '    r = errno.errorcode[e.errno]',
        `open(${JSON.stringify(seen)}, "w").write(r)`,
      ].join('\n');
      const s = supervise({ command: ['/usr/bin/python3', '-c', app], sandbox: 'required' });
      expect(await s.done).toMatchObject({ reason: 'exited', exitCode: 0 });
      expect(readFileSync(seen, 'utf8')).toBe('EROFS');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('without a usable wrapper spawns the app directly and warns that it would outlive a SIGKILLed agent', async () => {
    const { logger, records } = memoryLogger();
    const s = supervise({ command: pdeathsigApp, logger, dieWithAgentWrapper: '/nonexistent/enclave_die_with_parent' });
    expect(await s.done).toMatchObject({ reason: 'exited', exitCode: 0 });
    expect(records.find((r) => /outlive/.test(String(r.msg)))).toMatchObject({
      level: 40,
      msg: 'the app will outlive the agent if the agent is SIGKILLed (no PR_SET_PDEATHSIG wrapper)',
      reason: expect.stringMatching(/^\/nonexistent\/enclave_die_with_parent is not usable \(ENOENT\)/),
    });
  });
});
