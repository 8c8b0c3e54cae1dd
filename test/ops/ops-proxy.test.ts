// The bridge's ops port on the parent: re-serves the agent's /health and /metrics (read over its ops port),
// answers the agent's time requests over the clock channel, and says 503 agent-unreachable when it cannot
// reach the agent.
import { spawnSync } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startBridge, type Bridge } from '../../src/host/bridge.ts';
import { startAgentStack, startAppProcess, type AgentStack, type AppProcess } from '../faults/stack.ts';

const HOST_AHEAD_MS = 4_000;
let app: AppProcess;
let stack: AgentStack;
let bridge: Bridge;

beforeAll(async () => {
  app = await startAppProcess();
  stack = await startAgentStack({ appPort: app.port });
  bridge = await startBridge({
    listen: { host: '127.0.0.1', port: 0 },
    target: { kind: 'tcp', host: '127.0.0.1', port: stack.port },
    // A host clock 4 s ahead of this machine's: the agent must see itself 4 s behind.
    ops: { listen: { host: '127.0.0.1', port: 0 }, target: { kind: 'tcp', host: '127.0.0.1', port: stack.runtime.opsPort! }, now: () => Date.now() + HOST_AHEAD_MS, clockRetryMs: 50 },
  });
}, 30_000);

afterAll(async () => {
  await bridge?.close();
  await stack?.close();
  await app?.kill();
});

const metricValue = (text: string, series: string): number | undefined => {
  const line = text.split('\n').find((l) => l.startsWith(`${series} `));
  return line === undefined ? undefined : Number(line.slice(series.length + 1));
};

describe('bridge --ops-listen', () => {
  it('re-serves /health (200, the agent\'s JSON) and /metrics (promtool-clean)', async () => {
    const health = await fetch(`${bridge.opsUrl!}/health`);
    expect(health.status).toBe(200);
    expect(await health.json()).toMatchObject({ status: 'ok', agent: { phase: 'ready' }, app: { status: 'up' } });
    const metrics = await fetch(`${bridge.opsUrl!}/metrics`);
    expect(metrics.status).toBe(200);
    const text = await metrics.text();
    expect(text).toContain('enclave_agent_build_info');
    const r = spawnSync('/usr/bin/promtool', ['check', 'metrics'], { input: text, encoding: 'utf8' });
    expect(r.stdout + r.stderr).toBe('');
    expect((await fetch(`${bridge.opsUrl!}/other`)).status).toBe(404);
  });

  it('answers the agent\'s time requests: the agent measures its drift against the host clock', async () => {
    let drift: number | undefined;
    const end = Date.now() + 10_000;
    while (drift === undefined && Date.now() < end) {
      drift = metricValue(await stack.runtime.metrics.metrics(), 'enclave_agent_clock_drift_seconds');
      if (drift === undefined) await new Promise((r) => setTimeout(r, 50));
    }
    expect(drift!).toBeLessThan(-(HOST_AHEAD_MS - 200) / 1000);
    expect(drift!).toBeGreaterThan(-(HOST_AHEAD_MS + 200) / 1000);
    expect(stack.log.text()).toContain('clock: enclave clock drifts from the host clock');
  });

  it('503 agent-unreachable once the agent is gone', async () => {
    await stack.runtime.close();
    const health = await fetch(`${bridge.opsUrl!}/health`);
    expect(health.status).toBe(503);
    expect(await health.json()).toMatchObject({ status: 'unhealthy', reason: 'agent-unreachable' });
    expect((await fetch(`${bridge.opsUrl!}/metrics`)).status).toBe(503);
  });
});
