// The CLI's policy for errors nothing handled: one line naming the code, exit 70 — never silent, never running
// on. Proved on a real long-running command: a preload (--import) makes the process reject a promise nobody
// awaits, or throw from a timer, while `enclave-agent logs` listens.
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FATAL_EXIT_CODE, fatalLine } from '../../src/cli/fatal.ts';
import { BIN } from './spawn.ts';

let dir: string;

function runWithPreload(body: string): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const preload = path.join(dir, `preload-${Math.random().toString(36).slice(2)}.mjs`);
  writeFileSync(preload, body);
  return new Promise((resolve) => {
    const child = spawn(process.execPath, ['--import', pathToFileURL(preload).href, BIN, 'logs', '--listen', `unix:${path.join(dir, `s-${Math.random().toString(36).slice(2)}.sock`)}`], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (c: Buffer) => (stdout += c.toString()));
    child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), 30_000);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

// The preload fires once the CLI has installed its handlers (it polls for them), then 200 ms later.
const whenCliReady = `const ready = () => process.listenerCount('unhandledRejection') > 0;
const wait = (fn) => { const t = setInterval(() => { if (ready()) { clearInterval(t); setTimeout(fn, 200); } }, 20); };`;

beforeAll(() => {
  dir = mkdtempSync(path.join(os.tmpdir(), 'enclave-agent-fatal-'));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('unhandled errors in the CLI', () => {
  it('an unhandled rejection: one line with its code, exit 70', async () => {
    const r = await runWithPreload(`${whenCliReady}\nwait(() => { Promise.reject(Object.assign(new Error('nobody awaited this'), { code: 'TEST_LOST_PROMISE' })); });\n`);
    expect(r.code).toBe(FATAL_EXIT_CODE);
    expect(r.stderr).toMatch(/^enclave-agent: fatal: unhandled promise rejection: TEST_LOST_PROMISE: nobody awaited this$/m);
  });

  it('an uncaught exception: the same, exit 70', async () => {
    const r = await runWithPreload(`${whenCliReady}\nwait(() => { throw new TypeError('thrown from a timer'); });\n`);
    expect(r.code).toBe(FATAL_EXIT_CODE);
    expect(r.stderr).toMatch(/^enclave-agent: fatal: uncaught exception: UNEXPECTED: thrown from a timer$/m);
  });

  it('a rejection with a non-Error value still names it', () => {
    expect(fatalLine('unhandled promise rejection', 'just a string')).toBe('enclave-agent: fatal: unhandled promise rejection: UNEXPECTED: just a string');
    expect(fatalLine('uncaught exception', undefined)).toBe('enclave-agent: fatal: uncaught exception: UNEXPECTED: undefined');
  });
});
