// Memory is bounded by configuration, not by clients: 200 sessions that send requests and never read. The
// agent runs in a child process (its memory is the agent's alone); the assertions are on its own accounting
// of queued output and on what happens to the sessions, never on timings.
import { afterAll, describe, expect, it } from 'vitest';
import { openNonReaders, settle, startChildAgent, type ChildAgent, type NonReader } from './fixtures/non-reading-clients.ts';

const BUDGET = 16 * 1024 * 1024;
const SESSIONS = 200;

let agent: ChildAgent | undefined;
let clients: NonReader[] = [];

afterAll(async () => {
  for (const c of clients) c.socket.destroy();
  await agent?.stop();
});

describe('200 sessions that never read', () => {
  it('keep queued output within max_queued_bytes and are closed by the write-stall timeout', async () => {
    agent = await startChildAgent({ maxQueuedBytes: BUDGET, writeStallTimeoutMs: 3000, maxSessions: 1024 });
    const before = await agent.stats();
    clients = await openNonReaders(agent.path, SESSIONS, 32);
    // Every request answered or refused, the queue as full as it gets.
    const held = await settle(() => agent!.stats(), (a, b) => b.appOpen === 0 && a.peakQueuedBytes === b.peakQueuedBytes && a.overBudget === b.overBudget, 300);
    expect(held.overBudget).toBeGreaterThan(0); // without the budget, up to 200 × 32 replies of 60 KB would be queued
    expect(held.peakQueuedBytes).toBeGreaterThan(BUDGET / 2);
    expect(held.peakQueuedBytes).toBeLessThanOrEqual(BUDGET);
    console.log(
      `agent with ${SESSIONS} non-reading sessions (budget ${BUDGET >> 20} MiB): rss ${(before.rss / 2 ** 20).toFixed(0)} → ${(held.rss / 2 ** 20).toFixed(0)} MiB, ` +
        `queued ${(held.queuedBytes / 2 ** 20).toFixed(1)} MiB (peak ${(held.peakQueuedBytes / 2 ** 20).toFixed(1)} MiB)`,
    );

    // Sessions still holding output are closed by the write-stall timeout; the budget is whole again.
    const after = await settle(() => agent!.stats(), (a, b) => a.queuedBytes === 0 && a.sessions === b.sessions && a.writeStalls === b.writeStalls, 1000);
    expect(after.queuedBytes).toBe(0);
    expect(after.writeStalls).toBeGreaterThan(0);
    expect(after.closed).toEqual({ 'write-stall': after.writeStalls });
    expect(after.peakQueuedBytes).toBeLessThanOrEqual(BUDGET);
    // What stays open holds no output of its own (its replies became Errors its socket buffer took); the idle
    // timeout ends those.
    expect(after.sessions).toBe(SESSIONS - after.writeStalls);
  }, 120_000);
});
