// RequestAttestation at a per-session pace (src/responder/attestation-pace.ts): a session's burst reaches the NSM
// at once; past it a request waits its turn — answered later, never refused — while the session's Data goes on;
// a session that ends while requests wait makes no NSM call for them.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Nsm } from '../../src/attestation/nsm.ts';
import type { NsmSimulator } from '../../src/attestation/simulator.ts';
import { createRawForwarder } from '../../src/responder/raw-forwarder.ts';
import { utf8 } from '../../src/util/bytes.ts';
import type { ServerMessage } from '../../src/wire/messages.ts';
import { closedWithin, connectClient, startEchoApp, startTestAgent, testSimulator, waitFor, type TestApp } from './helpers.ts';

let sim: NsmSimulator;
let echoApp: TestApp;

beforeAll(async () => {
  sim = await testSimulator();
  echoApp = await startEchoApp();
});

afterAll(async () => {
  await echoApp.close();
});

/** The simulator, counting the attestations asked of it. */
function countingNsm(inner: Nsm): Nsm & { readonly calls: number } {
  let calls = 0;
  return {
    get calls() {
      return calls;
    },
    attest: (req) => {
      calls++;
      return inner.attest(req);
    },
    random: (n) => inner.random(n),
  };
}

const isData = (id: number) => (m: ServerMessage) => m.type === 'Data' && m.id === id;

describe('RequestAttestation pace', () => {
  it('past the burst, one more waits its turn while Data is answered; a session gone makes no NSM call for it', async () => {
    const nsm = countingNsm(sim);
    const agent = await startTestAgent({
      nsm,
      channel: 'public',
      forwarder: createRawForwarder({ appPort: echoApp.port, halfCloseData: true }),
      // A turn that never comes within the test: the third request must still be waiting at the end.
      limits: { attestationBurst: 2, attestationIntervalMs: 600_000 },
    });
    try {
      const client = await connectClient(agent.port);
      for (let i = 0; i < 3; i++) client.send({ type: 'RequestAttestation' });
      client.send({ type: 'Data', id: 1, payload: utf8.encode('one') });
      const got: ServerMessage[] = [];
      while (got.filter((m) => m.type === 'Attestation').length < 2 || !got.some(isData(1))) got.push((await client.next()).message);
      // Before the fix the third request went to the NSM as soon as it was decoded (before the Data).
      expect(nsm.calls).toBe(2);
      // The session keeps serving while the third waits.
      client.send({ type: 'Data', id: 2, payload: utf8.encode('two') });
      got.push(...(await client.until(isData(2))).map((r) => r.message));
      expect(got.filter((m) => m.type === 'Attestation')).toHaveLength(2);
      expect(got.filter((m) => m.type === 'Error' || m.type === 'ControlResult')).toEqual([]);
      expect(nsm.calls).toBe(2);
      client.close();
      await closedWithin(client);
      await waitFor(() => agent.closedSessions.length === 1, 5000, 'the session closed');
      expect(agent.closedSessions[0]!.reason).not.toBe('attestation-failed');
      expect(agent.closedSessions[0]!.stats.attestations).toBe(2);
      expect(nsm.calls).toBe(2);
    } finally {
      await agent.close();
    }
  });

  it('answers every request over the pace, later, and keeps the session', async () => {
    const nsm = countingNsm(sim);
    const agent = await startTestAgent({
      nsm,
      channel: 'public',
      forwarder: createRawForwarder({ appPort: echoApp.port, halfCloseData: true }),
      limits: { attestationBurst: 1, attestationIntervalMs: 20 },
    });
    try {
      const client = await connectClient(agent.port);
      // More than maxPendingSessionRequests (4): the session stops reading for a while, then reads on.
      for (let i = 0; i < 6; i++) client.send({ type: 'RequestAttestation' });
      client.send({ type: 'Data', id: 1, payload: utf8.encode('after') });
      const got: ServerMessage[] = [];
      while (got.filter((m) => m.type === 'Attestation').length < 6 || !got.some(isData(1))) got.push((await client.next()).message);
      expect(got.map((m) => m.type).sort()).toEqual(['Attestation', 'Attestation', 'Attestation', 'Attestation', 'Attestation', 'Attestation', 'Data']);
      expect(nsm.calls).toBe(6);
      expect(client.isClosed).toBe(false);
      client.close();
    } finally {
      await agent.close();
    }
  });
});
