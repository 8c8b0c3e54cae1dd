// A session whose output waits for room in the shared budget (other sessions hold it) must stop taking bytes
// from its apps meanwhile: what it defers is bounded by what was already read, not by how fast an app writes.
import net from 'node:net';
import { Duplex } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { NsmSimulator } from '../../src/attestation/simulator.ts';
import type { Forwarder } from '../../src/responder/forwarder.ts';
import { OutputBudget } from '../../src/responder/output-budget.ts';
import { createResponder } from '../../src/responder/server.ts';
import { bytesOf, closedWithin, connectClient, connectTcp, handshake, startTestAgent, tcpPipe, testSimulator, waitFor, type Agent } from './helpers.ts';

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

describe('a client that half-closes while its session does not read', () => {
  it('still answers the requests it sent before its EOF, then closes', async () => {
    const budget = new OutputBudget(LIMIT);
    const reasons: string[] = [];
    const forwarder: Forwarder = {
      connect() {
        // An app that answers each Data with "ok" once the request is in.
        const app = new Duplex({
          read() {},
          write(_c, _e, cb) {
            cb();
            this.push(Uint8Array.of(0x6f, 0x6b));
            this.push(null);
          },
        });
        return Promise.resolve(app);
      },
    };
    const responder = createResponder({ nsm: sim, channel: 'public', forwarder, outputBudget: budget, onSessionClosed: (s) => reasons.push(s.reason) });
    // Half-open, like the vsock transport: the client's FIN leaves the agent's side writable.
    const server = net.createServer({ allowHalfOpen: true }, (s) => responder.handle(s, { remote: 'test', transport: 'tcp' }));
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    try {
      const socket = await connectTcp((server.address() as net.AddressInfo).port);
      const client = await handshake(tcpPipe(socket));
      budget.adjust(LIMIT); // other sessions hold the whole budget: this session's first reply must wait
      client.send({ type: 'StreamData', id: 9, payload: Uint8Array.of(1) }); // answered Error: deferred
      client.send({ type: 'Data', id: 1, payload: Uint8Array.of(2) }); // buffered behind it
      socket.end();
      await waitFor(() => socket.writableFinished, 5000, 'the FIN to go out');
      budget.adjust(-LIMIT);
      expect((await client.next()).message).toEqual({ type: 'Error', id: 9, message: 'unknown stream id' });
      expect((await client.next()).message).toEqual({ type: 'Data', id: 1, payload: Uint8Array.of(0x6f, 0x6b) });
      await closedWithin(client);
      expect(reasons).toEqual(['client-closed']);
    } finally {
      await responder.close();
      server.close();
    }
  });
});
