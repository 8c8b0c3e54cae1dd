// `run` refuses to start a sandboxed app while the agent runs with a node option that would hand the app its
// memory: the inspector on the loopback they share, a heap snapshot or report the app can trigger with a signal.
// Before: the app was started, and a root app could `kill -USR2` the agent and read the snapshot's keys.
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { unsafeNodeOptions } from '../../src/runtime/unsafe-node-options.ts';
import { settledLeftovers, startRun, type RunningAgent } from './harness.ts';

describe('unsafeNodeOptions', () => {
  it('finds the inspector, heap snapshot and report options in either source, whatever their spelling', () => {
    expect(unsafeNodeOptions(['--inspect'], undefined)).toEqual(['--inspect']);
    expect(unsafeNodeOptions(['--inspect-brk=127.0.0.1:9230', '--max-old-space-size=512'], '')).toEqual(['--inspect-brk']);
    expect(unsafeNodeOptions([], '--enable-source-maps --heapsnapshot_signal=SIGUSR2 "--report-on-signal"')).toEqual(['--heapsnapshot-signal', '--report-on-signal']);
    expect(unsafeNodeOptions(['--heapsnapshot-near-heap-limit=1'], '--inspect-wait')).toEqual(['--heapsnapshot-near-heap-limit', '--inspect-wait']);
    expect(unsafeNodeOptions(['--report-uncaught-exception'], '--report_on_fatalerror')).toEqual(['--report-uncaught-exception', '--report-on-fatalerror']);
    // Node's own undocumented spelling (command line only): it opens the inspector on the loopback as --inspect does.
    expect(unsafeNodeOptions(['--inspect-brk-node=0'], '')).toEqual(['--inspect-brk-node']);
  });

  it('leaves the harmless ones alone', () => {
    expect(unsafeNodeOptions(['--enable-source-maps', '--inspect-port=0', '--max-semi-space-size=8'], '--cpu-prof --report-signal=SIGUSR2')).toEqual([]);
  });
});

const running: RunningAgent[] = [];
afterEach(async () => {
  for (const a of running.splice(0)) await a.dispose();
});
afterAll(async () => expect(await settledLeftovers()).toEqual([]));

it('run does not start the app under --heapsnapshot-signal, and says which option and why', async () => {
  const a = await startRun({ env: { NODE_OPTIONS: `${process.env.NODE_OPTIONS ?? ''} --heapsnapshot-signal=SIGUSR2`.trim() } });
  running.push(a);
  // before: the app started (healthy) and the agent ran on
  const outcome = await Promise.race([a.exited.then((e) => `exited ${e.code}`), a.waitForLog('app healthy').then(() => 'app started', () => 'no log')]);
  expect(outcome).toBe('exited 1');
  expect(a.stderr()).toMatch(/^enclave-agent run: RUNTIME_UNSAFE_NODE_OPTIONS: the agent runs with --heapsnapshot-signal, which would let the app reach the agent's memory/m);
  expect(a.events()).toEqual([]); // the app never ran
}, 60_000);
