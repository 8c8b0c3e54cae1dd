// The ops server on the addon's sockets (AF_UNIX here: the same NativeStream code path as vsock, which this
// machine cannot loop back), read by the bridge's ops proxy through the addon too: several keep-alive-free
// requests and the clock channel's upgrade work on a NativeStream (no setTimeout, no setEncoding).
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startOpsProxy, type OpsProxy } from '../../src/host/ops-proxy.ts';
import { ClockChannelHub } from '../../src/ops/clock-channel.ts';
import { AgentMetrics } from '../../src/ops/metrics.ts';
import { startOpsServer, type OpsServer } from '../../src/ops/ops-server.ts';
import { listenUnixNative } from '../../src/transport/unix-native.ts';
import { available } from '../native/helpers.ts';

describe.runIf(available)('ops port over the addon (AF_UNIX for vsock)', () => {
  let dir: string;
  let server: OpsServer;
  let proxy: OpsProxy;
  const hub = new ClockChannelHub();

  beforeAll(async () => {
    dir = mkdtempSync(path.join(os.tmpdir(), 'ea-ops-native-'));
    const sock = path.join(dir, 'ops.sock');
    const metrics = new AgentMetrics({ mode: 'http', version: 'test', processMetrics: false });
    server = await startOpsServer({
      listen: (o) => listenUnixNative(sock, o),
      metrics,
      health: { phase: () => 'ready', startedAt: Date.now(), probe: { check: () => Promise.resolve({ status: 'up' as const, checked_at: null, probe: 'test' }) } },
      clock: hub,
      logger: pino({ enabled: false }),
    });
    proxy = await startOpsProxy({ listen: { host: '127.0.0.1', port: 0 }, target: { kind: 'unix', path: sock }, clockRetryMs: 50 });
  });

  afterAll(async () => {
    await proxy?.close();
    await server?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('serves /health and /metrics, repeatedly', async () => {
    for (let i = 0; i < 3; i++) {
      expect((await fetch(`${proxy.url}/health`)).status).toBe(200);
      expect(await (await fetch(`${proxy.url}/metrics`)).text()).toContain('enclave_agent_build_info');
    }
  });

  it('carries the clock channel: the agent side gets the host time', async () => {
    for (const end = Date.now() + 5_000; !hub.attached && Date.now() < end; ) await new Promise((r) => setTimeout(r, 20));
    const sample = await hub.request(2_000);
    expect(Math.abs(sample.hostMs - Date.now())).toBeLessThan(1_000);
  });
});
