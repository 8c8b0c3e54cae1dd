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
import { createHttpForwarder } from '../../src/http/forwarder.ts';
import pino from 'pino';
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

describe('HTTP-mode Data responses being read (the one-shot path)', () => {
  it('count against the shared output budget too: past it a request is answered Error instead of held', async () => {
    // The app sends a head announcing 100 kB and 60 kB of it, then stalls: each answer waits, collected, until
    // the app's body timeout. Failed before the one-shot answer reserved what it holds (no message in 10 s).
    let answered = 0;
    const app = await startApp((s) => {
      s.once('data', () => {
        answered++;
        s.write(Buffer.concat([Buffer.from('HTTP/1.1 200 OK\r\ncontent-length: 100000\r\n\r\n'), bytesOf(60_000, 1)]));
      });
    });
    const budget = new OutputBudget(1 << 20);
    await agent?.close();
    const forwarder = createHttpForwarder({ appPort: app.port, logger: pino({ level: 'silent' }), upstreamTimeoutMs: 600_000, trxLogging: false });
    agent = await startTestAgent({ nsm: sim, channel: 'public', forwarder, outputBudget: budget, limits: { dataResponseTimeoutMs: 600_000 } });
    try {
      const client = await connectClient(agent.port);
      const request = new TextEncoder().encode('GET / HTTP/1.1\r\nhost: app\r\n\r\n');
      for (let id = 1; id <= 40; id++) client.send({ type: 'Data', id, payload: request }, 'bstr');
      await waitFor(() => answered === 40, 10_000, 'the app to answer every request');
      const { message } = await client.next(10_000);
      expect(message).toMatchObject({ type: 'Error', message: OVER_BUDGET_TEXT });
      expect(budget.queuedBytes).toBeLessThanOrEqual(1 << 20);
      expect(agent.responder.counters.overBudget).toBeGreaterThan(0);
      client.close();
      await waitFor(() => agent!.responder.sessionCount === 0, 5000, 'the session to close');
      await waitFor(() => budget.queuedBytes === 0, 5000, 'the reserved bytes to be given back');
    } finally {
      await forwarder.close?.();
      await app.close();
    }
  });
});
