// What a queued client payload holds in memory. A byte-string payload is decoded as a view into the bytes it came
// in (a socket read of up to 64 KiB, or a frame buffer): queued toward an app, a 1-byte payload padded to a full
// frame must not keep the whole frame alive while the stream budgets count one byte.
import { Duplex } from 'node:stream';
import v8 from 'node:v8';
import vm from 'node:vm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { NsmSimulator } from '../../src/attestation/simulator.ts';
import type { Forwarder } from '../../src/responder/forwarder.ts';
import { fromHex } from '../../src/util/bytes.ts';
import { bs, map, t, u } from '../wire/cbor-helpers.ts';
import { OutputBudget } from '../../src/responder/output-budget.ts';
import { OVER_BUDGET_TEXT } from '../../src/responder/session-output.ts';
import { createRawForwarder } from '../../src/responder/raw-forwarder.ts';
import { bytesOf, connectClient, startApp, startTestAgent, testSimulator, waitFor, type Agent } from './helpers.ts';

v8.setFlagsFromString('--expose-gc');
const gc = vm.runInNewContext('gc') as () => void;

let sim: NsmSimulator;
let agent: Agent | undefined;
beforeAll(async () => {
  sim = await testSimulator();
});
afterAll(async () => {
  await agent?.close();
});

const FRAMES = 1500;
const PAD = 60_000;

const forwarders: Record<string, Forwarder> = {
  // connecting (e.g. during the app's start-up grace): stream bytes wait in the session
  'an app not connected yet': { connect: () => new Promise(() => {}) },
  // connected, but takes nothing: stream bytes wait in its write buffer
  'an app that does not read': { connect: () => Promise.resolve(new Duplex({ read() {}, write() {} })) },
};

function arrayBuffersAfterGc(): number {
  gc();
  gc();
  return process.memoryUsage().arrayBuffers;
}

describe('queued stream payloads', () => {
  it.each(Object.keys(forwarders))('hold about their own bytes, not the frames they were padded into: %s', async (name) => {
    await agent?.close();
    agent = await startTestAgent({ nsm: sim, channel: 'public', forwarder: forwarders[name]! });
    const client = await connectClient(agent.port);
    client.send({ type: 'OpenStream', id: 1, payload: new Uint8Array(0) }, 'bstr');
    // StreamData{id 1, payload: h'01'} with an ignored key carrying 60 kB: one byte for the budgets, a full frame on the wire.
    const padded = fromHex(map(t('type'), t('StreamData'), t('id'), u(1), t('payload'), bs('01'), t('pad'), bs('00'.repeat(PAD))));
    const before = arrayBuffersAfterGc();
    for (let i = 0; i < FRAMES; i++) client.sendPlaintext(padded);
    // Frames are decoded in order: the answer to this one means every StreamData before it was taken.
    client.send({ type: 'RequestAttestation' }, 'bstr');
    expect((await client.next(30_000)).message.type).toBe('Attestation');
    const held = arrayBuffersAfterGc() - before;
    // 1,500 payloads of one byte each; the frames they came in total 90 MB.
    expect(held).toBeLessThan((FRAMES * PAD) / 10);
    client.close();
  });
});

describe('Data responses being read', () => {
  it('count against the shared output budget: past it a request is answered Error instead of held to its timeout', async () => {
    // An app that answers 60 kB and keeps the connection open (a keep-alive server to a request without
    // `Connection: close`): the session holds each response until dataResponseTimeoutMs.
    let answered = 0;
    const app = await startApp((s) => {
      s.once('data', () => {
        answered++;
        s.write(bytesOf(60_000, 1));
      });
    });
    const budget = new OutputBudget(1 << 20);
    await agent?.close();
    agent = await startTestAgent({
      nsm: sim,
      channel: 'public',
      forwarder: createRawForwarder({ appPort: app.port }),
      outputBudget: budget,
      limits: { dataResponseTimeoutMs: 600_000 },
    });
    try {
      const client = await connectClient(agent.port);
      for (let id = 1; id <= 40; id++) client.send({ type: 'Data', id, payload: Uint8Array.of(0x47) }, 'bstr');
      await waitFor(() => answered === 40, 10_000, 'the app to answer every request');
      // 40 × 60 kB = 2.4 MB would be held for 10 minutes; the budget is 1 MiB: the requests past it fail now.
      const { message } = await client.next(10_000);
      expect(message).toMatchObject({ type: 'Error', message: OVER_BUDGET_TEXT });
      expect(budget.queuedBytes).toBeLessThanOrEqual(1 << 20);
      client.close();
      await waitFor(() => agent!.responder.sessionCount === 0, 5000, 'the session to close');
      expect(budget.queuedBytes).toBe(0);
    } finally {
      await app.close();
    }
  });
});
