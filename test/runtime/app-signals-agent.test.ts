// A sandboxed app signalling its agent. Same user, so kill() works and the filter does not stop it; the one that
// mattered is SIGUSR1: to a Node process with no SIGUSR1 listener it opens the inspector on 127.0.0.1:9229,
// where any local process can run code inside the agent (keys, vsock). The agent listens for SIGUSR1 from boot
// to exit (forwarded to the app, boot-signals.ts and drain.ts), which replaces Node's handler: this pins that.
import { afterEach, expect, it } from 'vitest';
import { available } from '../native/helpers.ts';
import { PY_SERVE_APP_PORT, startRun, type RunningAgent } from './harness.ts';

const running: RunningAgent[] = [];
afterEach(async () => {
  for (const a of running.splice(0)) await a.dispose();
});

// Ignores the forwarded copy, signals its parent (the agent) once, then serves the app port until killed.
const APP_PY = ['import os, signal', 'signal.signal(signal.SIGUSR1, signal.SIG_IGN)', 'os.kill(os.getppid(), signal.SIGUSR1)', ...PY_SERVE_APP_PORT].join('\n');

it.skipIf(!available)("SIGUSR1 from the sandboxed app is forwarded back to it and never opens the agent's inspector", async () => {
  const a = await startRun({ toml: '[egress]\nenabled = true\ndestinations = []\n', command: ['/usr/bin/python3', '-c', APP_PY] });
  running.push(a);
  const forwarded = await a.waitForLog('signal forwarded to the app');
  expect(forwarded).toMatchObject({ signal: 'SIGUSR1' });
  await a.waitForLog('agent healthy');
  expect(a.stderr()).not.toMatch(/Debugger listening/);
  expect(a.child.exitCode).toBe(null);
});
