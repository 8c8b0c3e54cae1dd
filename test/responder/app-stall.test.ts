// A stream whose app does not read: once the bytes queued toward it stop the session from reading its client, the
// stream is reset after writeStallTimeoutMs without progress (the stall watch, session-streams.ts), so the session
// reads on — a client that stayed keeps its session, one that left is noticed. An app that reads slowly is not cut.
import net from 'node:net';
import { beforeAll, describe, expect, it } from 'vitest';
import type { NsmSimulator } from '../../src/attestation/simulator.ts';
import type { Forwarder } from '../../src/responder/forwarder.ts';
import type { Limits } from '../../src/responder/limits.ts';
import { createRawForwarder } from '../../src/responder/raw-forwarder.ts';
import { appStallText } from '../../src/responder/session-streams.ts';
import { utf8 } from '../../src/util/bytes.ts';
import type { ServerMessage } from '../../src/wire/messages.ts';
import { available } from '../native/helpers.ts';
import { bytesOf, connectClient, recording, startApp, startTestAgent, testSimulator, waitFor, type Agent, type TestClient } from './helpers.ts';

let sim: NsmSimulator;

beforeAll(async () => {
  sim = await testSimulator();
});

const BLOCK = bytesOf(32 * 1024, (i) => i & 0xff);

/** Sends at least `total` bytes on stream `id`, in 32 KiB StreamData. */
function sendBytes(client: TestClient, id: number, total: number): void {
  for (let sent = 0; sent < total; sent += BLOCK.length) client.send({ type: 'StreamData', id, payload: BLOCK }, 'bstr');
}

/** The session stopped reading its client (its socket paused) with more than the stream limit queued toward `app`. */
function waitingOnApp(agent: Agent, app: () => net.Socket | undefined, limits: Partial<Limits>): Promise<void> {
  return waitFor(() => (app()?.writableLength ?? 0) > limits.maxStreamQueuedBytes! && agent.sockets[0]!.isPaused(), 20_000, 'the session to stop reading');
}

describe('a stream whose app does not read', () => {
  // 16 MB: more than the loopback buffers toward the app take, so the queue builds in the agent.
  const TOTAL = 16 * 1024 * 1024;
  const LIMITS = { maxStreamQueuedBytes: 64 * 1024, maxSessionQueuedBytes: 256 * 1024, writeStallTimeoutMs: 500 };

  /** An app whose first connection is accepted and never read; the others echo (and end after the peer's EOF). */
  async function setup(): Promise<{ agent: Agent; fw: ReturnType<typeof recording>; close(): Promise<void> }> {
    let connections = 0;
    const app = await startApp((s) => {
      if (connections++ === 0) s.pause();
      else s.pipe(s);
    });
    const fw = recording(createRawForwarder({ appPort: app.port, halfCloseData: true }));
    const agent = await startTestAgent({ nsm: sim, channel: 'public', forwarder: fw, limits: LIMITS });
    return {
      agent,
      fw,
      async close() {
        await agent.close();
        await app.close();
      },
    };
  }

  it('is reset after writeStallTimeoutMs without progress; the session reads on and serves its other requests', async () => {
    const { agent, fw, close } = await setup();
    const client = await connectClient(agent.port);
    try {
      client.send({ type: 'OpenStream', id: 1, payload: new Uint8Array(0) }, 'bstr');
      sendBytes(client, 1, TOTAL);
      await waitingOnApp(agent, () => fw.sockets[0], LIMITS);

      const seen = await client.until((m) => m.type === 'Error' && m.id === 1, 10_000);
      expect(seen.at(-1)!.message).toEqual({ type: 'Error', id: 1, message: appStallText(LIMITS.writeStallTimeoutMs) });
      expect(agent.responder.counters.streamStalls).toBe(1);
      await waitFor(() => fw.sockets[0]!.destroyed, 5000, 'the app connection destroyed');

      // The session reads on: the rest of stream 1's bytes are refused (unknown stream), a new stream and a Data
      // request on the same session are served.
      client.send({ type: 'OpenStream', id: 2, payload: utf8.encode('second stream') }, 'bstr');
      client.send({ type: 'StreamClose', id: 2, half: 'Write' });
      client.send({ type: 'Data', id: 3, payload: utf8.encode('a data request') }, 'bstr');
      const streamed: Uint8Array[] = [];
      let data: ServerMessage | undefined;
      let streamClosed = false;
      while (data === undefined || !streamClosed) {
        const { message } = await client.next(10_000);
        if (message.type === 'StreamData' && message.id === 2) streamed.push(message.payload);
        else if (message.type === 'StreamClose' && message.id === 2) streamClosed = true;
        else if (message.type === 'Data') data = message;
        else expect(message).toEqual({ type: 'Error', id: 1, message: 'unknown stream id' });
      }
      expect(utf8.decode(Buffer.concat(streamed))).toBe('second stream');
      expect(data).toEqual({ type: 'Data', id: 3, payload: utf8.encode('a data request') });
      expect(agent.closedSessions).toEqual([]);
      expect(agent.responder.counters.streamStalls).toBe(1);
    } finally {
      client.close();
      await close();
    }
  }, 60_000);

  it('lets the session notice a client that left: it closes and gives back what it held', async () => {
    const { agent, fw, close } = await setup();
    const client = await connectClient(agent.port);
    try {
      client.send({ type: 'OpenStream', id: 1, payload: new Uint8Array(0) }, 'bstr');
      sendBytes(client, 1, TOTAL);
      await waitingOnApp(agent, () => fw.sockets[0], LIMITS);
      client.close();

      await waitFor(() => agent.closedSessions.length === 1, 10_000, 'the session to close');
      await waitFor(() => agent.responder.sessionCount === 0, 5_000, 'its slot released (the socket closed)');
      expect(agent.responder.counters.queuedBytes).toBe(0);
      expect(agent.responder.counters.streamStalls).toBe(1);
      await waitFor(() => fw.sockets[0]!.destroyed, 5000, 'the app connection destroyed');
    } finally {
      await close();
    }
  }, 60_000);
});

describe('streams whose apps do not read, none over its own limit', () => {
  it('are each reset when their sum stopped the session, which then reads on', async () => {
    const limits = { maxStreamQueuedBytes: 4 << 20, maxSessionQueuedBytes: 256 * 1024, writeStallTimeoutMs: 500 };
    let connections = 0;
    const app = await startApp((s) => {
      if (connections++ < 2) s.pause();
      else s.pipe(s);
    });
    const fw = recording(createRawForwarder({ appPort: app.port, halfCloseData: true }));
    const agent = await startTestAgent({ nsm: sim, channel: 'public', forwarder: fw, limits });
    const client = await connectClient(agent.port);
    try {
      client.send({ type: 'OpenStream', id: 1, payload: new Uint8Array(0) }, 'bstr');
      client.send({ type: 'OpenStream', id: 2, payload: new Uint8Array(0) }, 'bstr');
      for (let sent = 0; sent < 16 << 20; sent += BLOCK.length) {
        client.send({ type: 'StreamData', id: 1, payload: BLOCK }, 'bstr');
        client.send({ type: 'StreamData', id: 2, payload: BLOCK }, 'bstr');
      }
      const queued = (i: number): number => fw.sockets[i]?.writableLength ?? 0;
      await waitFor(() => queued(0) + queued(1) > limits.maxSessionQueuedBytes && agent.sockets[0]!.isPaused(), 20_000, 'the session to stop reading');
      expect(Math.max(queued(0), queued(1))).toBeLessThan(limits.maxStreamQueuedBytes);

      const errors = new Map<number, string>();
      while (errors.size < 2) {
        const { message } = await client.next(10_000);
        if (message.type === 'Error' && !errors.has(message.id)) errors.set(message.id, message.message);
      }
      expect(Object.fromEntries(errors)).toEqual({ 1: appStallText(500), 2: appStallText(500) });
      expect(agent.responder.counters.streamStalls).toBe(2);
      client.send({ type: 'Data', id: 3, payload: utf8.encode('still served') }, 'bstr');
      const seen = await client.until((m) => m.type === 'Data', 10_000);
      expect(seen.at(-1)!.message).toEqual({ type: 'Data', id: 3, payload: utf8.encode('still served') });
    } finally {
      client.close();
      await agent.close();
      await app.close();
    }
  }, 60_000);
});

describe('a stream whose app reads slowly but steadily', () => {
  /** Reads about `perTick` bytes every `tickMs`, then ends its side after the peer's EOF. */
  function slowReader(s: net.Socket, perTick: number, tickMs: number, onBytes: (n: number) => void): void {
    s.pause();
    let allowance = 0;
    s.on('data', (c: Buffer) => {
      onBytes(c.length);
      allowance -= c.length;
      if (allowance <= 0) s.pause();
    });
    const ticker = setInterval(() => {
      allowance = perTick;
      s.resume();
    }, tickMs);
    s.on('end', () => {
      clearInterval(ticker);
      s.end();
    });
    s.on('close', () => clearInterval(ticker));
  }

  // Small queues: each write to the app completes soon after the app reads. Large ones: after a pause the whole queue
  // goes out as one write of megabytes, which completes only once the app has read all of it — meanwhile only the
  // socket's handle shows that the app takes bytes.
  it.each([
    { queue: 'small queues', total: 24 << 20, limits: { maxStreamQueuedBytes: 64 * 1024, maxSessionQueuedBytes: 256 * 1024 } },
    { queue: 'large queues', total: 40 << 20, limits: { maxStreamQueuedBytes: 8 << 20, maxSessionQueuedBytes: 16 << 20 } },
  ])('is not cut while its app takes bytes ($queue), though draining takes several stall timeouts', async ({ total, limits }) => {
    // The app takes at most 128 KiB per 20 ms (~6.5 MB/s): draining takes ≥ 3.7 s, several times stallMs.
    const stallMs = 1000;
    let received = 0;
    const app = await startApp((s) => slowReader(s, 128 * 1024, 20, (n) => (received += n)));
    const fw = recording(createRawForwarder({ appPort: app.port }));
    const agent = await startTestAgent({ nsm: sim, channel: 'public', forwarder: fw, limits: { ...limits, writeStallTimeoutMs: stallMs } });
    const client = await connectClient(agent.port);
    try {
      client.send({ type: 'OpenStream', id: 1, payload: new Uint8Array(0) }, 'bstr');
      sendBytes(client, 1, total);
      client.send({ type: 'StreamClose', id: 1, half: 'Write' });
      // The premise: the session does wait on this app (its queue goes over the stream limit).
      await waitingOnApp(agent, () => fw.sockets[0], limits);
      const seen = await client.until((m) => m.type !== 'StreamData', 60_000);
      expect(seen.at(-1)!.message).toEqual({ type: 'StreamClose', id: 1 });
      expect(received).toBe(total);
      expect(agent.responder.counters.streamStalls).toBe(0);
    } finally {
      client.close();
      await agent.close();
      await app.close();
    }
  }, 90_000);
});

/**
 * A forwarder whose app reads `perTick` bytes every `tickMs`, each read taking at most `perTick` bytes from its
 * socket (the app is the connecting side here, so that `onread` can give it a small buffer): the app's kernel socket
 * really empties at that pace, not 64 KiB at a time. `sockets`: the agent's ends.
 */
async function trickleAppForwarder(perTick: number, tickMs: number): Promise<Forwarder & { sockets: net.Socket[]; received(): number; close(): Promise<void> }> {
  const server = net.createServer({ allowHalfOpen: true });
  await new Promise<void>((resolve) => server.listen({ host: '127.0.0.1', port: 0 }, resolve));
  const { port } = server.address() as net.AddressInfo;
  const sockets: net.Socket[] = [];
  const apps: net.Socket[] = [];
  let received = 0;
  return {
    sockets,
    received: () => received,
    async connect() {
      const accepted = new Promise<net.Socket>((resolve) => server.once('connection', resolve));
      let allowance = perTick;
      const app = net.connect({
        host: '127.0.0.1',
        port,
        onread: {
          buffer: Buffer.alloc(perTick),
          callback: (n: number) => {
            received += n;
            allowance -= n;
            return allowance > 0; // false pauses the app until its next tick
          },
        },
      });
      app.on('error', () => {});
      const ticker = setInterval(() => {
        allowance = perTick;
        app.resume();
      }, tickMs);
      app.on('close', () => clearInterval(ticker));
      apps.push(app);
      const s = await accepted;
      sockets.push(s);
      return s;
    },
    close() {
      for (const a of apps) a.destroy();
      return new Promise<void>((resolve) => server.close(() => resolve())); // called twice (the agent closes it too): fine
    },
  };
}

// Exact progress needs the addon (app-progress.ts): without it the watch sees a trickling app's progress only when the
// kernel takes more of the queue, in steps of the loopback buffers (~1.4 MB), and such an app looks stalled.
describe.skipIf(!available)('a stream whose app reads a trickle, steadily', () => {
  it('is not reset while its app takes bytes, over several stall timeouts', async () => {
    // ~8 KB/s, 800 bytes a read; the session stops reading at 64 KiB queued and stays stopped (the kernel's buffers
    // toward the app take more only after ~1.4 MB were read).
    const limits = { maxStreamQueuedBytes: 64 * 1024, maxSessionQueuedBytes: 256 * 1024, writeStallTimeoutMs: 1000 };
    const fw = await trickleAppForwarder(800, 100);
    const agent = await startTestAgent({ nsm: sim, channel: 'public', forwarder: fw, limits });
    const client = await connectClient(agent.port);
    try {
      client.send({ type: 'OpenStream', id: 1, payload: new Uint8Array(0) }, 'bstr');
      sendBytes(client, 1, 16 << 20);
      await waitingOnApp(agent, () => fw.sockets[0], limits);
      // 32 KB more read by the app: about 4 s, four stall timeouts; a reset ends the wait early (and the test).
      const target = fw.received() + 32 * 1024;
      await waitFor(() => fw.received() >= target || agent.responder.counters.streamStalls > 0, 30_000, 'the app to read 32 KB');
      expect(agent.responder.counters.streamStalls).toBe(0);
      expect(fw.sockets[0]!.destroyed).toBe(false);
      expect(agent.sockets[0]!.isPaused()).toBe(true); // the premise: the session waited on this app all along
    } finally {
      client.close();
      await agent.close();
      await fw.close();
    }
  }, 60_000);
});
