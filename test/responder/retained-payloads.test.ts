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
import { connectClient, startTestAgent, testSimulator, type Agent } from './helpers.ts';

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
