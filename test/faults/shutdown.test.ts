// Fault suite: SIGTERM to `enclave-agent run` (a real child process: TCP for vsock, the NSM simulator) while
// 200 requests are in flight over 4 sessions. Every request gets exactly one answer — its response when it
// finishes within the drain timeout, a clean Error frame otherwise — before its session closes; none is
// lost silently.
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import type { ServerMessage } from '../../src/wire/messages.ts';
import { connectTcp, handshake, tcpPipe, type TestClient } from '../responder/helpers.ts';
import { settledLeftovers, startRun, until, type RunningAgent } from '../runtime/harness.ts';
import { httpRequest, statusOf } from './stack.ts';

const running: RunningAgent[] = [];
const clients: TestClient[] = [];
afterEach(async () => {
  for (const c of clients.splice(0)) c.close();
  for (const a of running.splice(0)) await a.dispose();
});
afterAll(async () => expect(await settledLeftovers()).toEqual([]));

const SESSIONS = 4;
const PER_SESSION = 50;

type Reply = Extract<ServerMessage, { type: 'Data' | 'Error' }>;

/** Collects every Data/Error per id until the connection closes. */
function collect(c: TestClient): Promise<Map<number, Reply[]>> {
  const out = new Map<number, Reply[]>();
  return (async () => {
    for (;;) {
      let m: ServerMessage;
      try {
        m = (await c.next(60_000)).message;
      } catch {
        return out; // closed
      }
      if (m.type === 'Data' || m.type === 'Error') out.set(m.id, [...(out.get(m.id) ?? []), m]);
    }
  })();
}

async function loaded(drainTimeoutMs: number, slowMs: number): Promise<{ agent: RunningAgent; sessions: TestClient[]; results: Promise<Map<number, Reply[]>>[] }> {
  const agent = await startRun({ toml: `[listen]\ndrain_timeout_ms = ${drainTimeoutMs}` });
  running.push(agent);
  const healthy = await agent.waitForLog('agent healthy');
  const sessions: TestClient[] = [];
  for (let i = 0; i < SESSIONS; i++) {
    const c = await handshake(tcpPipe(await connectTcp(healthy.publicPort as number)));
    clients.push(c);
    sessions.push(c);
  }
  const results = sessions.map(collect);
  sessions.forEach((c, i) => {
    for (let j = 0; j < PER_SESSION; j++) c.send({ type: 'Data', id: i * 1000 + j, payload: httpRequest('GET', `/slow?ms=${slowMs}`) });
  });
  await until(() => (agent.events().filter((e) => e === 'begin /slow').length >= SESSIONS * PER_SESSION ? true : undefined), 30_000, 'all 200 requests to reach the app');
  return { agent, sessions, results };
}

describe('SIGTERM during 200 in-flight requests', () => {
  it('finishes all of them within the drain timeout, refuses new ones cleanly, then exits 0', async () => {
    const { agent, sessions, results } = await loaded(30_000, 2_000);
    agent.kill('SIGTERM');
    await agent.waitForLog('draining: no new connections, finishing in-flight requests');
    // A request sent after the signal on an open session: a clean refusal, not silence.
    sessions[0]!.send({ type: 'Data', id: 999, payload: httpRequest('GET', '/') });
    expect(await agent.exited).toEqual({ code: 0, signal: null });

    const all = await Promise.all(results);
    for (const [i, m] of all.entries()) {
      for (let j = 0; j < PER_SESSION; j++) {
        const got = m.get(i * 1000 + j);
        expect(got, `request ${i * 1000 + j}`).toHaveLength(1);
        expect(got![0]!.type === 'Data' ? statusOf(got![0]!.payload) : got![0]!.message).toBe(200);
      }
    }
    expect(all[0]!.get(999)).toEqual([{ type: 'Error', id: 999, message: 'agent is shutting down' }]);
    expect(agent.events().filter((e) => e === 'end /slow')).toHaveLength(SESSIONS * PER_SESSION);
  }, 90_000);

  it('answers the requests still running at the drain timeout with an Error frame before closing (none lost silently)', async () => {
    const { agent, results } = await loaded(1_000, 20_000);
    agent.kill('SIGTERM');
    expect(await agent.exited).toEqual({ code: 0, signal: null });
    // It exited without waiting for the app to finish them (each holds the app for 20 s).
    expect(agent.events().filter((e) => e === 'end /slow')).toHaveLength(0);
    const all = await Promise.all(results);
    for (const [i, m] of all.entries()) {
      for (let j = 0; j < PER_SESSION; j++) {
        const got = m.get(i * 1000 + j);
        expect(got, `request ${i * 1000 + j}`).toHaveLength(1);
        expect(got![0]).toMatchObject({ type: 'Error', id: i * 1000 + j });
        expect((got![0] as { message: string }).message).toMatch(/shutting down/);
      }
    }
  }, 90_000);
});

