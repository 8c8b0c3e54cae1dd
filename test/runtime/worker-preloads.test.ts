// A module the agent is preloaded with (NODE_OPTIONS --require/--import) ran again in every worker thread the
// agent started, from its file as it was then: session threads start with the first session, long after the app,
// and an app that rewrote the preload (often its own file: APM, OpenTelemetry) ran its code inside the agent.
// The worker threads now start without the preloads (src/crypto/worker-preloads.ts).
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { nodeOptionsWithoutPreloads, withoutPreloads } from '../../src/crypto/worker-preloads.ts';
import { connectClient } from '../responder/helpers.ts';
import { PY_SERVE_APP_PORT, startRun, until, type RunningAgent } from './harness.ts';

describe('nodeOptionsWithoutPreloads', () => {
  it('drops --require, -r, --import and the loaders, separate or with =, and keeps the rest as Node reads it', () => {
    expect(nodeOptionsWithoutPreloads('--max-old-space-size=200 -r ./a.cjs --require=/b.cjs --import c.mjs --import=d --loader e --experimental-loader=f --enable-source-maps')).toBe(
      '"--max-old-space-size=200" "--enable-source-maps"',
    );
    // Quotes group, a backslash escapes inside them; kept arguments come back quoted the same way.
    expect(nodeOptionsWithoutPreloads('--require "/app dir/otel.cjs" --title "a \\"b\\" c\\\\"')).toBe('"--title" "a \\"b\\" c\\\\"');
    expect(nodeOptionsWithoutPreloads('  ')).toBe('');
    // Node reads `_` as `-` in option names: --experimental_loader is a loader all the same.
    expect(nodeOptionsWithoutPreloads('--experimental_loader ./l.mjs --max_old_space_size=64 --experimental_loader=./m.mjs')).toBe('"--max_old_space_size=64"');
  });

  it('gives the worker no command-line node options and the environment with NODE_OPTIONS so cleaned', () => {
    expect(withoutPreloads({ A: '1', NODE_OPTIONS: '--import x --no-warnings' })).toEqual({ execArgv: [], env: { A: '1', NODE_OPTIONS: '"--no-warnings"' } });
    expect(withoutPreloads({ A: '1' })).toEqual({ execArgv: [], env: { A: '1' } });
  });
});

const running: RunningAgent[] = [];
const dirs: string[] = [];
afterEach(async () => {
  for (const a of running.splice(0)) await a.dispose();
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

// Rewrites the agent's preload (argv[1]) with code that says where it runs, then serves the app port.
const APP_PY = ['import sys', 'open(sys.argv[1], "w").write(sys.argv[2])', ...PY_SERVE_APP_PORT].join('\n');

/** Preload source appending "<who> in <thread> of <pid>" to `marks`. */
const preloadSource = (who: string, marks: string): string =>
  `require('node:fs').appendFileSync(${JSON.stringify(marks)}, ${JSON.stringify(who)} + ' in ' + (require('node:worker_threads').isMainThread ? 'main' : 'worker') + ' of ' + process.pid + '\\n');\n`;

// Failed before: the marks held "app code in worker of <agent pid>" once the session thread had started.
it("a session thread started after the app does not run the agent's preload, which the app rewrote", async () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'ea-worker-preloads-'));
  dirs.push(dir);
  const preload = path.join(dir, 'preload.cjs');
  const marks = path.join(dir, 'marks');
  writeFileSync(preload, preloadSource('operator preload', marks));
  const agent = await startRun({
    toml: '[limits]\nworkers = 2\n',
    env: { NODE_OPTIONS: `--require ${preload}` },
    command: ['/usr/bin/python3', '-c', APP_PY, preload, preloadSource('app code', marks)],
  });
  running.push(agent);
  const listening = await agent.waitForLog('agent listening');
  await agent.waitForLog('agent healthy');
  await until(() => (readFileSync(preload, 'utf8').includes('app code') ? true : undefined), 10_000, 'the app to rewrite the preload');
  // A session: its thread starts now, after the app.
  const client = await connectClient(Number(String(listening.public).split(':')[1]));
  client.send({ type: 'RequestAttestation' });
  await client.next(10_000);
  client.close();
  const lines = readFileSync(marks, 'utf8').trim().split('\n');
  expect(lines).toContain(`operator preload in main of ${agent.pid}`);
  // (A checkout's tsx loader thread, started at boot before the app, runs the operator's preload: not the app's.)
  expect(lines.filter((l) => l.startsWith('app code'))).toEqual([]);
}, 60_000);
