// No process started by the runtime and fault suites outlives them: the processes are listed from /proc before
// and after, the way the suites start and end them (an agent SIGKILLed with an app that has a child of its own;
// the fault suite's app process). Every run of the suite used to leave two fixtures/app.mjs behind.
import { readdirSync } from 'node:fs';
import { expect, it } from 'vitest';
import { startAppProcess } from '../faults/stack.ts';
import { alive, leftovers, settledLeftovers, startRun } from './harness.ts';

const pids = (): Set<number> => new Set(readdirSync('/proc').filter((e) => /^\d+$/.test(e)).map(Number));

it('leaves no agent, app or app child running once the suites have ended them', async () => {
  const before = pids();
  expect(leftovers()).toEqual([]);

  const agent = await startRun({ env: { APP_CHILD: '1' } });
  await agent.waitForLog('app healthy');
  const childLine = await agent.waitForEvent((l) => l.startsWith('child '));
  const app = await startAppProcess();
  // the listing sees them while they run: the agent, its app, the app's `sleep` child and the fault app
  const running = leftovers().map((p) => p.pid);
  for (const pid of [agent.pid, Number(childLine.slice('child '.length)), app.child.pid!]) expect(running).toContain(pid);
  expect(running.length).toBeGreaterThanOrEqual(4);

  await agent.dispose();
  await app.kill();

  expect(await settledLeftovers()).toEqual([]);
  // (a zombie is not running: whoever inherited it has yet to reap it)
  const left = [...pids()].filter((p) => !before.has(p) && running.includes(p) && alive(p));
  expect(left).toEqual([]);
});
