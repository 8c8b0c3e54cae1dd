// /health on the ops port of a real `enclave-agent run` (TCP for vsock, the NSM simulator): 503 "draining" from
// the SIGTERM until the process ends (the public listener is already closed, the ops port still answers), and
// 503 "app-starting" while a crashed app is restarted and not listening yet.
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { utf8 } from '../../src/util/bytes.ts';
import { connectTcp, handshake, tcpPipe, type TestClient } from '../responder/helpers.ts';
import { settledLeftovers, startRun, type RunningAgent } from '../runtime/harness.ts';

const running: RunningAgent[] = [];
const clients: TestClient[] = [];

afterEach(async () => {
  for (const c of clients.splice(0)) c.close();
  for (const a of running.splice(0)) await a.dispose();
});
afterAll(async () => expect(await settledLeftovers()).toEqual([]));

async function health(ops: string): Promise<{ status: number; body: { status: string; reason?: string; agent: { phase: string } } }> {
  const res = await fetch(`http://${ops}/health`);
  return { status: res.status, body: (await res.json()) as { status: string; reason?: string; agent: { phase: string } } };
}

describe('enclave-agent run: /health for a load balancer', () => {
  it('answers 503 draining during the SIGTERM drain, while the in-flight request finishes', async () => {
    const a = await startRun({ toml: '[listen]\ndrain_timeout_ms = 20000' });
    running.push(a);
    const healthy = await a.waitForLog('agent healthy');
    const ops = healthy.ops as string;
    expect(await health(ops)).toMatchObject({ status: 200, body: { status: 'ok', agent: { phase: 'ready' } } });

    const c = await handshake(tcpPipe(await connectTcp(healthy.publicPort as number)));
    clients.push(c);
    c.send({ type: 'Data', id: 1, payload: utf8.encode('GET /slow?ms=3000 HTTP/1.1\r\nHost: app\r\nConnection: close\r\n\r\n') });
    await a.waitForEvent((e) => e === 'begin /slow');

    a.kill('SIGTERM');
    await a.waitForLog('draining: no new connections, finishing in-flight requests');
    const draining = await health(ops);
    expect(draining).toMatchObject({ status: 503, body: { status: 'unhealthy', reason: 'draining', agent: { phase: 'draining' } } });
    const metrics = await (await fetch(`http://${ops}/metrics`)).text();
    expect(metrics).toMatch(/^enclave_agent_draining 1$/m);
    // The request in flight still completes, then the agent exits 0.
    await c.until((m) => m.type === 'Data' && m.id === 1, 20_000);
    expect(await a.exited).toEqual({ code: 0, signal: null });
  }, 60_000);

  it('answers 503 app-starting while a crashed app is restarted and not listening yet, and counts the restart', async () => {
    const a = await startRun({ env: { APP_EXIT_AFTER_MS: '2500', APP_EXIT_CODE: '3', APP_CRASH_ONCE: '1', APP_START_DELAY_MS: '1500' } });
    running.push(a);
    const healthy = await a.waitForLog('agent healthy');
    const ops = healthy.ops as string;
    await a.waitForEvent((e) => e === 'exit 3');
    let r = await health(ops);
    for (const end = Date.now() + 3_000; r.body.reason !== 'app-starting' && Date.now() < end; ) r = await health(ops);
    expect(r).toMatchObject({ status: 503, body: { status: 'unhealthy', reason: 'app-starting' } });
    await a.waitForLog('agent healthy', 30_000, 2);
    expect((await health(ops)).status).toBe(200);
    const metrics = await (await fetch(`http://${ops}/metrics`)).text();
    expect(metrics).toMatch(/^enclave_agent_app_restarts_total 1$/m);
  }, 60_000);
});
