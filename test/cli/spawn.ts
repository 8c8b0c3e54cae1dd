// Runs bin/enclave-agent.js as a child process, bounded in time; collects its output. In this checkout the bin
// always runs the current TypeScript sources (src/cli.ts through tsx), never a dist/ from an earlier build
// (test/cli/bin.test.ts holds that); the compiled package is tested as shipped by test/package/pack-install.test.ts.
import { spawn, type ChildProcess } from 'node:child_process';
import path from 'node:path';

export const BIN = path.resolve('bin/enclave-agent.js');

export interface CliResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/** Runs `enclave-agent <args>` to completion (SIGKILL after `timeoutMs`). */
export function runBin(args: string[], opts: { timeoutMs?: number; env?: NodeJS.ProcessEnv; cwd?: string } = {}): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [BIN, ...args], { cwd: opts.cwd ?? process.cwd(), env: { ...process.env, ...opts.env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (c: Buffer) => (stdout += c.toString()));
    child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs ?? 45_000);
    child.on('error', reject);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr });
    });
  });
}

export interface Running {
  child: ChildProcess;
  stdout: () => string;
  stderr: () => string;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** Resolves with the first stdout line (rejects if the process ends first or after `timeoutMs`). */
  firstLine(timeoutMs?: number): Promise<string>;
  /** SIGKILLs it unless it has already ended, and waits for the exit. */
  kill(): Promise<void>;
}

/** Starts a long-running `enclave-agent <args>`; the caller must kill it. */
export function startBin(args: string[], opts: { env?: NodeJS.ProcessEnv; cwd?: string } = {}): Running {
  const child = spawn(process.execPath, [BIN, ...args], { cwd: opts.cwd ?? process.cwd(), env: { ...process.env, ...opts.env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout!.on('data', (c: Buffer) => (stdout += c.toString()));
  child.stderr!.on('data', (c: Buffer) => (stderr += c.toString()));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => child.on('exit', (code, signal) => resolve({ code, signal })));
  return {
    child,
    stdout: () => stdout,
    stderr: () => stderr,
    exited,
    firstLine(timeoutMs = 45_000) {
      return new Promise((resolve, reject) => {
        const check = (): boolean => {
          const i = stdout.indexOf('\n');
          if (i < 0) return false;
          cleanup();
          resolve(stdout.slice(0, i));
          return true;
        };
        const onData = (): void => void check();
        const onExit = (): void => {
          cleanup();
          reject(new Error(`enclave-agent exited before printing a line; stderr: ${stderr.slice(-2000)}`));
        };
        const timer = setTimeout(() => {
          cleanup();
          reject(new Error(`no line within ${timeoutMs} ms; stderr: ${stderr.slice(-2000)}`));
        }, timeoutMs);
        const cleanup = (): void => {
          clearTimeout(timer);
          child.stdout!.off('data', onData);
          child.off('exit', onExit);
        };
        if (check()) return;
        child.stdout!.on('data', onData);
        child.once('exit', onExit);
      });
    },
    async kill() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.kill('SIGKILL');
      await exited;
    },
  };
}
