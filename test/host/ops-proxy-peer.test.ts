// The bridge's ops port against an ops peer that misbehaves (a wrong --ops-agent target, a broken agent): its
// answers are re-served with writeHead, which throws on some of them; one bad answer must cost that exchange
// only, never the bridge process (an uncaught throw there takes every client's WebSocket down with it).
import net from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startOpsProxy, type OpsProxy } from '../../src/host/ops-proxy.ts';

/** What the fake agent answers next, as raw HTTP/1.1 bytes. */
let answer = '';
let agent: net.Server;
let proxy: OpsProxy;

beforeAll(async () => {
  agent = net.createServer((s) => {
    s.on('error', () => {});
    s.once('data', () => s.end(answer));
  });
  await new Promise<void>((resolve) => agent.listen(0, '127.0.0.1', resolve));
  const port = (agent.address() as net.AddressInfo).port;
  // The clock channel's first try meets the same fake; its retry is pushed past the test.
  proxy = await startOpsProxy({ listen: { host: '127.0.0.1', port: 0 }, target: { kind: 'tcp', host: '127.0.0.1', port }, clockRetryMs: 600_000 });
});

afterAll(async () => {
  await proxy?.close();
  await new Promise<void>((resolve) => agent?.close(() => resolve()));
});

const http = (status: string, body = 'ok'): string => `HTTP/1.1 ${status}\r\ncontent-type: text/plain\r\ncontent-length: ${body.length}\r\nconnection: close\r\n\r\n${body}`;

describe('ops proxy: a misbehaving ops peer', () => {
  it('a status writeHead refuses (099) is a 503 naming BRIDGE_OPS_FAILED, and the port keeps serving', async () => {
    answer = http('099 Odd');
    const health = await fetch(`${proxy.url}/health`);
    expect(health.status).toBe(503);
    expect(await health.json()).toMatchObject({ status: 'unhealthy', error: 'BRIDGE_OPS_FAILED' });
    const metrics = await fetch(`${proxy.url}/metrics`);
    expect(metrics.status).toBe(503);
    expect(await metrics.text()).toContain('BRIDGE_OPS_FAILED');

    answer = http('200 OK', 'fine');
    const ok = await fetch(`${proxy.url}/metrics`);
    expect(ok.status).toBe(200);
    expect(await ok.text()).toBe('fine');
  });
});
