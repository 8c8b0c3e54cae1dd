// Data requests on a forwarder's one-shot path (Forwarder.exchangeData): the session's side of it — replies,
// failures, its response timeout, cancellation when the session closes, and the fall-back to connect().
import http from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { Duplex } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { NsmSimulator } from '../../src/attestation/simulator.ts';
import { createHttpForwarder } from '../../src/http/forwarder.ts';
import { createMemoryLogSink } from '../../src/http/log-sink.ts';
import type { ForwardContext, Forwarder, OneShotData, OneShotResult } from '../../src/responder/forwarder.ts';
import { utf8 } from '../../src/util/bytes.ts';
import type { ServerMessage } from '../../src/wire/messages.ts';
import { closedWithin, connectClient, startTestAgent, testSimulator, waitFor } from './helpers.ts';
import pino from 'pino';

let sim: NsmSimulator;
beforeAll(async () => {
  sim = await testSimulator();
});

/** A one-shot request the test settles by hand. */
class HeldRequest implements OneShotData {
  readonly done: Promise<OneShotResult>;
  settle!: (r: OneShotResult) => void;
  cancelled = 0;
  constructor(readonly payload: string) {
    this.done = new Promise((r) => (this.settle = r));
  }
  cancel(): void {
    this.cancelled++;
    this.settle({ failed: 'closed' });
  }
}

/** A forwarder whose Data requests are all one-shot (held), except payloads starting with "connect". */
function heldForwarder(): Forwarder & { held: HeldRequest[]; connects: number } {
  const fw = {
    held: [] as HeldRequest[],
    connects: 0,
    exchangeData(_ctx: ForwardContext, payload: Uint8Array): OneShotData | null {
      const text = utf8.decode(payload);
      if (text.startsWith('connect')) return null;
      if (text === 'throw') throw new Error('forwarder broke');
      const h = new HeldRequest(text);
      fw.held.push(h);
      return h;
    },
    connect(): Promise<Duplex> {
      fw.connects++;
      // Echoes what it is given, upper-cased, at EOF.
      let got = '';
      const d: Duplex = new Duplex({
        write(chunk: Buffer, _e, cb) {
          got += chunk.toString();
          cb();
        },
        final(cb) {
          d.push(Buffer.from(got.toUpperCase()));
          d.push(null);
          cb();
        },
        read() {},
      });
      return Promise.resolve(d);
    },
  };
  return fw;
}

const reply = (m: ServerMessage): string => (m.type === 'Data' ? `Data ${m.id} ${utf8.decode(m.payload)}` : m.type === 'Error' ? `Error ${m.id} ${m.message}` : m.type);

describe('one-shot Data requests (session side)', () => {
  it('answers with the bytes, or an Error naming why there are none, in completion order, and keeps the session', async () => {
    const fw = heldForwarder();
    const agent = await startTestAgent({ nsm: sim, channel: 'public', forwarder: fw });
    const client = await connectClient(agent.port);
    client.send({ type: 'Data', id: 1, payload: utf8.encode('a') });
    client.send({ type: 'Data', id: 2, payload: utf8.encode('b') });
    client.send({ type: 'Data', id: 3, payload: utf8.encode('c') });
    await waitFor(() => fw.held.length === 3);
    fw.held[2]!.settle({ bytes: utf8.encode('third') });
    expect(reply((await client.next()).message)).toBe('Data 3 third');
    fw.held[0]!.settle({ failed: 'too-large' });
    expect(reply((await client.next()).message)).toBe('Error 1 response too large for one frame (more than 65519 bytes; max 65519)');
    fw.held[1]!.settle({ failed: 'closed' });
    expect(reply((await client.next()).message)).toBe('Error 2 the app closed the connection before the end of its response');
    // The session goes on; a request the forwarder declines takes connect().
    client.send({ type: 'Data', id: 4, payload: utf8.encode('connect me') });
    expect(reply((await client.next()).message)).toBe('Data 4 CONNECT ME');
    expect(fw.connects).toBe(1);
    // A forwarder that throws costs that request only.
    client.send({ type: 'Data', id: 5, payload: utf8.encode('throw') });
    expect(reply((await client.next()).message)).toMatch(/^Error 5 /);
    client.send({ type: 'Data', id: 6, payload: utf8.encode('connect again') });
    expect(reply((await client.next()).message)).toBe('Data 6 CONNECT AGAIN');
    client.close();
    await agent.close();
  });

  it('answers Error when the response timeout passes, and cancels the request', async () => {
    const fw = heldForwarder();
    const agent = await startTestAgent({ nsm: sim, channel: 'public', forwarder: fw, limits: { dataResponseTimeoutMs: 150 } });
    const client = await connectClient(agent.port);
    client.send({ type: 'Data', id: 5, payload: utf8.encode('slow') });
    const m = (await client.next()).message;
    expect(m.type === 'Error' && m.id).toBe(5);
    expect(m.type === 'Error' && m.message).toMatch(/^the app did not finish its response within \d+ s$/);
    expect(fw.held[0]!.cancelled).toBe(1);
    client.close();
    await agent.close();
  });

  it('cancels every request in flight when the session closes', async () => {
    const fw = heldForwarder();
    const agent = await startTestAgent({ nsm: sim, channel: 'public', forwarder: fw });
    const client = await connectClient(agent.port);
    for (let id = 1; id <= 5; id++) client.send({ type: 'Data', id, payload: utf8.encode(`r${id}`) });
    await waitFor(() => fw.held.length === 5);
    client.close();
    await waitFor(() => fw.held.every((h) => h.cancelled === 1), 5000, 'every request cancelled');
    await agent.close();
  });
});

describe('one-shot Data requests through the HTTP forwarder', () => {
  let app: http.Server;
  let port = 0;
  /** The app's side of the connection a /never request came on. */
  let neverSocket: Socket | null = null;
  beforeAll(async () => {
    app = http.createServer((req, res) => {
      if (req.url === '/huge') res.end(Buffer.alloc(70_000, 0x61));
      else if (req.url === '/never') neverSocket = req.socket;
      else res.end(`hello ${req.url}`);
    });
    await new Promise<void>((r) => app.listen(0, '127.0.0.1', r));
    port = (app.address() as AddressInfo).port;
  });
  afterAll(async () => {
    app.closeAllConnections();
    await new Promise((r) => app.close(r));
  });

  const get = (path: string): Uint8Array => utf8.encode(`GET ${path} HTTP/1.1\r\nHost: app\r\n\r\n`);

  it('answers simple requests without a connection per request, a too-large answer with Error, and stops a request of a closed session', async () => {
    const forwarder = createHttpForwarder({ appPort: port, logger: pino({ level: 'silent' }), logSink: createMemoryLogSink() });
    const agent = await startTestAgent({ nsm: sim, channel: 'public', forwarder });
    const client = await connectClient(agent.port);
    for (let id = 1; id <= 20; id++) client.send({ type: 'Data', id, payload: get(`/r${id}`) });
    const seen = new Set<number>();
    for (let i = 0; i < 20; i++) {
      const m = (await client.next()).message;
      expect(m.type).toBe('Data');
      if (m.type !== 'Data') continue;
      const text = utf8.decode(m.payload);
      expect(text.startsWith('HTTP/1.1 200 OK\r\n')).toBe(true);
      expect(text.endsWith(`hello /r${m.id}`)).toBe(true);
      seen.add(m.id);
    }
    expect(seen.size).toBe(20);
    expect(forwarder.fastPathRequests).toBe(20);
    expect(forwarder.connectionCount).toBe(0);

    client.send({ type: 'Data', id: 30, payload: get('/huge') });
    const big = (await client.next()).message;
    expect(big.type === 'Error' && big.message).toBe('response too large for one frame (more than 65519 bytes; max 65519)');

    client.send({ type: 'Data', id: 31, payload: get('/never') });
    await waitFor(() => neverSocket !== null, 5000, 'the request reached the app');
    expect(forwarder.connectionCount).toBe(1);
    client.close();
    await closedWithin(client);
    // The session's cancel aborts the app request: its connection closes, nothing stays open.
    await waitFor(() => forwarder.connectionCount === 0, 5000, 'the one-shot answer released');
    await waitFor(() => neverSocket!.destroyed, 5000, 'the app connection of the aborted request closed');
    await agent.close();
    await forwarder.close();
  });
});
