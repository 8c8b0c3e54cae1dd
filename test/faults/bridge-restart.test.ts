// Fault suite: the host bridge is restarted (on the same port) while SDK clients keep requests in flight.
// Requests caught by the restart fail with a retryable error (never a wrong or corrupt answer), the agent
// closes the orphaned sessions, and every client reconnects (handshake + attestation again) and is served.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ClientError, connect, type Client } from '../../src/client/node.ts';
import { startBridge, type Bridge } from '../../src/host/bridge.ts';
import { settledLeftovers } from '../runtime/harness.ts';
import { memoryLog, sleep, startAgentStack, startAppProcess, waitUntil, type AgentStack, type AppProcess } from './stack.ts';

let app: AppProcess;
let stack: AgentStack;
beforeAll(async () => {
  app = await startAppProcess();
  stack = await startAgentStack({ appPort: app.port });
});
afterAll(async () => {
  await stack.close();
  await app.kill();
  expect(await settledLeftovers()).toEqual([]);
});

const CLIENTS = 8;

interface Tally {
  ok: number;
  okAfterRestart: number;
  errors: Map<string, number>;
  wrong: string[];
}

async function loop(client: Client, i: number, stop: () => boolean, restarted: () => boolean, t: Tally): Promise<void> {
  let n = 0;
  while (!stop()) {
    n++;
    try {
      if (n % 2 === 0) {
        const res = await client.fetch('/', { timeoutMs: 10_000 });
        const text = await res.text();
        if (res.status !== 200 || !text.startsWith('ok ')) t.wrong.push(`GET / → ${res.status} ${text.slice(0, 40)}`);
      } else {
        const body = JSON.stringify({ client: i, n });
        const res = await client.fetch('/echo', { method: 'POST', body, headers: { 'content-type': 'application/json' } });
        const text = await res.text();
        if (res.status !== 200 || text !== body) t.wrong.push(`POST /echo → ${res.status} ${text.slice(0, 40)}`);
      }
      t.ok++;
      if (restarted()) t.okAfterRestart++;
    } catch (err) {
      const code = err instanceof ClientError ? err.code : `other: ${String(err)}`;
      t.errors.set(code, (t.errors.get(code) ?? 0) + 1);
      await sleep(20);
    }
  }
}

describe('the bridge restarted under load', () => {
  it('fails only the requests caught in flight, retryably, and every client reconnects and is served', async () => {
    const log = memoryLog('info');
    let bridge: Bridge = await startBridge({ listen: { host: '127.0.0.1', port: 0 }, target: { kind: 'tcp', host: '127.0.0.1', port: stack.port }, logger: log.logger });
    const port = bridge.port;
    const clients = await Promise.all(
      Array.from({ length: CLIENTS }, () => connect(bridge.url, { pcrs: stack.pins, roots: [stack.sim.rootPem], connectTimeoutMs: 10_000, requestTimeoutMs: 10_000 })),
    );
    try {
      await waitUntil(() => stack.runtime.sessionCount() === CLIENTS, 5_000, 'one agent session per client');
      let stop = false;
      let restarted = false;
      const tallies: Tally[] = clients.map(() => ({ ok: 0, okAfterRestart: 0, errors: new Map(), wrong: [] }));
      const loops = clients.map((c, i) => loop(c, i, () => stop, () => restarted, tallies[i]!));

      await sleep(1_000);
      await bridge.close();
      await sleep(300);
      bridge = await startBridge({ listen: { host: '127.0.0.1', port }, target: { kind: 'tcp', host: '127.0.0.1', port: stack.port }, logger: log.logger });
      restarted = true;
      await waitUntil(() => tallies.every((t) => t.okAfterRestart >= 5), 20_000, 'every client to be served again after the restart');
      stop = true;
      await Promise.all(loops);

      const ok = tallies.reduce((a, t) => a + t.ok, 0);
      const errors = new Map<string, number>();
      for (const t of tallies) for (const [k, v] of t.errors) errors.set(k, (errors.get(k) ?? 0) + v);
      expect(tallies.flatMap((t) => t.wrong)).toEqual([]);
      expect(ok).toBeGreaterThan(CLIENTS * 5);
      // Only "the session died under this request" or "could not reconnect yet" — both retryable.
      expect([...errors.keys()].filter((k) => k !== 'CLIENT_RETRYABLE' && k !== 'CLIENT_CONNECT_FAILED')).toEqual([]);
      // The agent closed the sessions of the old bridge connections: one live session per client.
      await waitUntil(() => stack.runtime.sessionCount() === CLIENTS, 10_000, 'the orphaned sessions to close');
      // With session workers a summary reaches the main thread's hook at the end of its worker's turn.
      await waitUntil(() => stack.sessions.length >= CLIENTS, 5_000, 'the orphaned sessions’ summaries');
    } finally {
      await Promise.all(clients.map((c) => c.close()));
      await bridge.close();
    }
  }, 60_000);
});
