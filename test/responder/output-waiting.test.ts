// A session whose output waits for room in the shared budget (other sessions hold it) must stop taking bytes
// from its apps meanwhile: what it defers is bounded by what was already read, not by how fast an app writes.
import { Duplex } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { NsmSimulator } from '../../src/attestation/simulator.ts';
import type { Forwarder } from '../../src/responder/forwarder.ts';
import { OutputBudget } from '../../src/responder/output-budget.ts';
import { bytesOf, connectClient, startTestAgent, testSimulator, waitFor, type Agent } from './helpers.ts';

const LIMIT = 1 << 20;
const CHUNK = 16 * 1024;

let sim: NsmSimulator;
beforeAll(async () => {
  sim = await testSimulator();
});

/** An in-process app: the test pushes its bytes; `apps` holds one Duplex per stream. */
function pushApp(): Forwarder & { apps: Duplex[] } {
  const apps: Duplex[] = [];
  return {
    apps,
    connect() {
      const app = new Duplex({ read() {}, write(_c, _e, cb) { cb(); } });
      apps.push(app);
      return Promise.resolve(app);
    },
  };
}

let agent: Agent | undefined;
afterAll(async () => {
  await agent?.close();
});

describe('output waiting for room in the shared budget', () => {
  it('pauses the apps of a session whose output is deferred, then delivers every byte once room comes', async () => {
    const budget = new OutputBudget(LIMIT);
    const forwarder = pushApp();
    agent = await startTestAgent({ nsm: sim, channel: 'public', forwarder, outputBudget: budget });
    const client = await connectClient(agent.port);
    client.send({ type: 'OpenStream', id: 1, payload: new Uint8Array(0) }, 'bstr');
    await waitFor(() => forwarder.apps.length === 1 && forwarder.apps[0]!.listenerCount('data') > 0, 5000, 'the stream to attach');
    const app = forwarder.apps[0]!;

    budget.adjust(LIMIT); // other sessions hold the whole budget: nothing of this session fits
    // The app writes 4 MiB (4 × the whole budget), one chunk per turn.
    const total = 256;
    for (let i = 0; i < total; i++) {
      app.push(bytesOf(CHUNK, (j) => (i + j) & 0xff));
      await new Promise((r) => setImmediate(r));
    }
    // The session stopped reading its app: the rest waits in the app's own buffer (a socket: the kernel's).
    expect(app.isPaused()).toBe(true);
    expect(app.readableLength).toBeGreaterThan(total * CHUNK - LIMIT);

    budget.adjust(-LIMIT); // room again
    const got: Uint8Array[] = [];
    let bytes = 0;
    while (bytes < total * CHUNK) {
      const { message } = await client.next();
      if (message.type !== 'StreamData') throw new Error(`expected StreamData, got ${message.type}`);
      got.push(message.payload);
      bytes += message.payload.length;
    }
    const all = Buffer.concat(got);
    for (let i = 0; i < total; i++) {
      expect(all.subarray(i * CHUNK, (i + 1) * CHUNK).equals(Buffer.from(bytesOf(CHUNK, (j) => (i + j) & 0xff)))).toBe(true);
    }
    expect(agent.closedSessions).toEqual([]);
    client.close();
  });
});
