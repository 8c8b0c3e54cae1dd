// limits.max_sessions_per_client on the TLS ingress of the runtime, with one thread and with [limits] workers = 2:
// there the main thread hands each connection to a session thread before its PROXY v2 header is read, so the
// count per client address lives in shared memory (SharedAdmission.tlsClients) and holds exactly whichever
// thread serves each connection. The ingress alone: test/ingress/per-client-limit.test.ts.
import http from 'node:http';
import { mkdtempSync, rmSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import type tls from 'node:tls';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { createNsmSimulator } from '../../src/attestation/simulator.ts';
import { configFromObject } from '../../src/config.ts';
import { startAgentRuntime, type AgentRuntime } from '../../src/runtime/agent.ts';
import { nativeAvailable } from '../../src/transport/native.ts';
import { tlsFromClient } from '../ingress/helpers.ts';

let app: http.Server;
let runtime: AgentRuntime | undefined;
let stateDir: string | undefined;
const open: tls.TLSSocket[] = [];

async function stop(): Promise<void> {
  for (const t of open.splice(0)) t.destroy();
  await runtime?.close();
  runtime = undefined;
  if (stateDir !== undefined) rmSync(stateDir, { recursive: true, force: true });
  stateDir = undefined;
}

beforeAll(async () => {
  app = http.createServer((req, res) => res.end(`ok ${req.url}`));
  await new Promise<void>((resolve) => app.listen(0, '127.0.0.1', resolve));
});

afterEach(stop);

afterAll(async () => {
  app.closeAllConnections();
  await new Promise<void>((resolve) => app.close(() => resolve()));
});

/** A TLS connection from `source` as the bridge's PROXY v2 header says, with one request answered on it. */
async function from(port: number, source: string): Promise<tls.TLSSocket> {
  const t = await tlsFromClient(port, source, 40000 + open.length);
  open.push(t);
  const answer = await new Promise<string>((resolve) => {
    t.once('data', (d: Buffer) => resolve(d.toString('latin1')));
    t.write('GET /x HTTP/1.1\r\nHost: localhost\r\n\r\n');
  });
  expect(answer).toMatch(/^HTTP\/1\.1 200/);
  return t;
}

describe.each(nativeAvailable() ? [1, 2] : [1])('TLS ingress with [limits] workers = %i: connections per client', (workers) => {
  it('one more than max_sessions_per_client from one address is refused, whichever threads serve the others', async () => {
    stateDir = mkdtempSync(path.join(os.tmpdir(), 'tls-per-client-'));
    const sim = await createNsmSimulator({ stateDir: path.join(stateDir, 'nsm'), identity: { agentVersion: 'test', app: 'tls-per-client', config: '' } });
    const appPort = (app.address() as AddressInfo).port;
    const config = configFromObject({
      mode: 'http',
      tls_termination: true,
      accept_proxy_protocol: true,
      app: { port: appPort, startup_grace_ms: 0 },
      api: { enabled: false },
      limits: { workers, max_sessions_per_client: 2 },
    });
    runtime = await startAgentRuntime({ config, listen: { kind: 'tcp', host: '127.0.0.1', publicPort: 0, controlPort: 0 }, nsm: sim, stateDir, processMetrics: false });
    const port = runtime.tlsPort!;
    // Held connections from one address, each on whichever thread the main thread hands it to.
    const first = await from(port, '198.51.100.7');
    await from(port, '198.51.100.7');
    await expect(from(port, '198.51.100.7')).rejects.toThrow();
    await from(port, '203.0.113.9');
    first.destroy();
    await expect.poll(async () => from(port, '198.51.100.7').then(() => true, () => false), { timeout: 10_000 }).toBe(true);
  }, 60_000);
});
