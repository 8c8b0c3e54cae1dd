// A bulk bstr stream reuses the session's 64 KB message buffers instead of allocating one per frame (each fresh one
// is external memory to V8, a full GC every ~64 MB of it): a received frame that spanned socket reads comes back
// once the app's socket has taken its bytes, and app reads joined into one message come back once it is written.
// Reuse must never show: every byte arrives intact, in order.
import { createHash, randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { NsmSimulator } from '../../src/attestation/simulator.ts';
import { freshMessageBuffers } from '../../src/responder/message-buffers.ts';
import { createRawForwarder } from '../../src/responder/raw-forwarder.ts';
import { closedWithin, connectTcp, handshake, startEchoApp, startTestAgent, tcpPipe, testSimulator, type TestApp } from './helpers.ts';

let sim: NsmSimulator;
let echoApp: TestApp;

beforeAll(async () => {
  sim = await testSimulator();
  echoApp = await startEchoApp();
});

afterAll(async () => {
  await echoApp.close();
});

const sha256 = (parts: Uint8Array[]): string => {
  const h = createHash('sha256');
  for (const p of parts) h.update(p);
  return h.digest('hex');
};

describe('bulk bstr stream through a raw forwarder', () => {
  it('echoes 8 MiB byte for byte while allocating a bounded number of message buffers', async () => {
    const agent = await startTestAgent({ nsm: sim, channel: 'public', forwarder: createRawForwarder({ appPort: echoApp.port }) });
    try {
      const client = await handshake(tcpPipe(await connectTcp(agent.port)));
      client.send({ type: 'OpenStream', id: 1, payload: new Uint8Array(0) }, 'bstr');
      const sent: Uint8Array[] = [];
      const total = 8 * 1024 * 1024;
      const before = freshMessageBuffers();
      // 64,000-byte messages: most frames span the agent's 64 KiB socket reads and are copied into a reused buffer.
      for (let n = 0; n < total; n += 64_000) {
        const block = new Uint8Array(randomBytes(Math.min(64_000, total - n)));
        sent.push(block);
        client.send({ type: 'StreamData', id: 1, payload: block }, 'bstr');
      }
      client.send({ type: 'StreamClose', id: 1, half: 'Write' });
      const got: Uint8Array[] = [];
      let bytes = 0;
      for (;;) {
        const { message } = await client.next(20_000);
        if (message.type === 'StreamData') {
          got.push(message.payload);
          bytes += message.payload.length;
        } else if (message.type === 'StreamClose') break;
        else throw new Error(`unexpected ${message.type}`);
      }
      expect(bytes).toBe(total);
      expect(sha256(got)).toBe(sha256(sent));
      // One per received frame before (127 of the 132); now only what is in flight at once (19–32 seen), well under
      // the 64 the pool keeps.
      expect(freshMessageBuffers() - before).toBeLessThanOrEqual(64);
      client.close();
      await closedWithin(client);
    } finally {
      await agent.close();
    }
  }, 60_000);
});
