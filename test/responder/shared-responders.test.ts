// Two responders in one thread sharing one SharedAdmission stand in for two session workers: the per-client
// limit, the counters and the control nonce are the process's, not each responder's; `sessionsLimit: false`
// leaves maxSessions to whoever handed the connection over (the main thread's sessions.tryOpen()).
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { NsmSimulator } from '../../src/attestation/simulator.ts';
import { createRawForwarder } from '../../src/responder/raw-forwarder.ts';
import type { ResponderOptions } from '../../src/responder/server.ts';
import { SharedAdmission } from '../../src/responder/shared-admission.ts';
import { resolveLimits } from '../../src/responder/limits.ts';
import { encodeProxyV2 } from '../../src/transport/proxy-v2.ts';
import { connectTcp, handshake, startEchoApp, startTestAgent, tcpPipe, testSimulator, waitFor, type Agent, type TestApp } from './helpers.ts';

let sim: NsmSimulator;
let app: TestApp;

beforeAll(async () => {
  sim = await testSimulator();
  app = await startEchoApp();
});

afterAll(async () => {
  await app.close();
});

const proxyFrom = (address: string, port: number): Uint8Array => encodeProxyV2({ source: { address, port }, destination: { address: '10.0.0.1', port: 443 } });

/** A responder as a worker thread would build it: index `i`'s counters, the shared pieces, no maxSessions. */
function workerLike(shared: SharedAdmission, i: number, limits: ResponderOptions['limits']): Promise<Agent> {
  return startTestAgent({
    nsm: sim,
    channel: 'public',
    forwarder: createRawForwarder({ appPort: app.port, halfCloseData: true }),
    acceptProxyProtocol: true,
    limits,
    controlNonce: shared.controlNonce,
    outputBudget: shared.budget,
    clients: shared.clients,
    counters: shared.counters(i),
    handshakeQueue: shared.handshakeQueue,
    sessionsLimit: false,
  });
}

describe('responders sharing one SharedAdmission', () => {
  it('hold maxSessionsPerClient across responders, count refusals in the refusing one’s region, share the nonce', async () => {
    const limits = { maxSessionsPerClient: 3, maxSessions: 1 };
    const shared = SharedAdmission.create({ limits: resolveLimits(limits), workers: 2, maxConcurrentDecrypts: 4 });
    const a = await workerLike(shared, 1, limits);
    const b = await workerLike(shared, 2, limits);
    try {
      const open = async (agent: Agent, port: number) => handshake(tcpPipe(await connectTcp(agent.port)), { preamble: proxyFrom('198.51.100.7', port) });
      // maxSessions 1 is not applied here (sessionsLimit: false): two sessions on `a`.
      const held = [await open(a, 40001), await open(a, 40002), await open(b, 40003)];
      expect([a.responder.sessionCount, b.responder.sessionCount]).toEqual([2, 1]);
      // The fourth from the same address, on either responder, is closed after its PROXY header.
      await expect(open(b, 40004)).rejects.toThrow(/connection closed/);
      await expect(open(a, 40005)).rejects.toThrow(/connection closed/);
      expect([a.responder.counters.refusedPerClient, b.responder.counters.refusedPerClient]).toEqual([1, 1]);
      expect([a.responder.refusedCount, b.responder.refusedCount]).toEqual([1, 1]);
      expect(shared.totals()).toMatchObject({ refused: 2, counters: { refusedPerClient: 2 } });
      expect(shared.clients.count('198.51.100.7')).toBe(3);
      // A session closing on `a` frees a slot that `b` can take.
      held[0]!.close();
      await waitFor(() => a.responder.sessionCount === 1, 5000, 'the first session to close');
      const again = await open(b, 40006);
      again.send({ type: 'RequestAttestation' });
      const att = (await again.next()).message as { type: string; control_nonce?: Uint8Array };
      expect(att.type).toBe('Attestation');
      expect(Buffer.from(att.control_nonce!)).toEqual(Buffer.from(shared.controlNonce.current()));
      for (const c of [...held, again]) c.close();
      await waitFor(() => a.responder.sessionCount + b.responder.sessionCount === 0, 5000, 'every session to close');
      expect(shared.clients.count('198.51.100.7')).toBe(0);
      expect(shared.budget.queuedBytes).toBe(0);
    } finally {
      await a.close();
      await b.close();
    }
  });
});
